"""Seeded random weights that exercise every path of a model.

A reference's own initialisation hides bugs: layer scales of 1e-5 make every block nearly the
identity, BatchNorm with mean 0 / var 1 is nearly a no-op, and zero attention biases make the
bias indexing irrelevant. These weights are chosen so that each of those details moves the
logits: layer scales of order 0.1–1, BatchNorm statistics far from (0, 1), attention biases of
order 1, and weights scaled by 1/√fan_in so activations stay O(1) through 40 blocks.

Each tensor is drawn from its own generator seeded by (seed, tensor name), so the values of a
tensor do not depend on which other tensors exist, and the same seed gives the same weights on
every machine (NumPy's PCG64 stream, drawn in float64, then rounded to float32).
"""

from __future__ import annotations

import zlib

import numpy as np

from .registry import family_of


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def seeded_tensor(name: str, shape: tuple, seed: int) -> np.ndarray:
    """One tensor, its distribution chosen by what the name says it is."""
    rng = _rng(seed, name)
    leaf = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 2)[-2] if name.count(".") else ""
    if leaf == "running_mean":
        x = rng.normal(0.0, 0.5, shape)
    elif leaf == "running_var":
        x = rng.uniform(0.5, 2.0, shape)
    elif leaf == "attention_biases":
        x = rng.normal(0.0, 1.0, shape)
    elif parent == "layer_scale_1":
        # SwiftFormer's attention branch: with v1 attention its global query is a plain sum of up
        # to 3136 unit vectors, so scales ten times smaller keep the logits O(10), not O(50)
        x = rng.uniform(0.01, 0.06, shape) * rng.choice([-1.0, 1.0], shape)
    elif parent == "talking_head2" and leaf == "bias":
        # EfficientFormerV2 adds this bias to attention probabilities of ~1/49 each, and A·v then
        # sums it over every key: at 0.1 each attention block amplifies the stream and V2-L's
        # logits reach ~700; 0.01 (half a typical probability) keeps them O(10)
        x = rng.normal(0.0, 0.01, shape)
    elif leaf in ("gamma", "w_g") or leaf.startswith("layer_scale"):
        x = rng.uniform(0.1, 0.6, shape) * rng.choice([-1.0, 1.0], shape)
    elif leaf == "weight" and len(shape) == 1:  # BatchNorm / LayerNorm scale
        x = rng.uniform(0.6, 1.4, shape)
    elif leaf == "bias":
        x = rng.normal(0.0, 0.2 if parent.startswith(("norm", "bn")) else 0.1, shape)
    else:  # conv / linear weight: [out, in, ...], variance 1/fan_in keeps activations O(1)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        x = rng.normal(0.0, fan_in**-0.5, shape)
    return x.astype(np.float32)


def seeded_weights(config, num_heads: int = 2, seed: int = 0) -> dict:
    """A full weight dict for `config` (its family's `weight_schema`)."""
    schema = family_of(config).schema.weight_schema(config, num_heads)
    return {name: seeded_tensor(name, shape, seed) for name, shape in schema.items()}
