"""Deliberately broken ports for the golden-oracle workflow: a swapped activation, changed weights
or config, traced and compared against the reference."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from ... import layers
from ...erf import gelu_tanh
from ...errors import InputError


@contextmanager
def swapped_activation(name: str, fn=gelu_tanh):
    """Within the block, every npformer model looks up activation `name` as `fn` (default: the
    tanh GELU in place of the exact one) — a port with the wrong GELU, made by monkeypatching
    `npformer.layers.ACTIVATIONS` at run time. Restored on exit."""
    original = layers.ACTIVATIONS[name]
    layers.ACTIVATIONS[name] = fn
    try:
        yield
    finally:
        layers.ACTIVATIONS[name] = original


MISTAKES = {
    "no attention bias": "the port forgets the learned attention bias (EfficientFormer)",
    "qkv as q|k|v blocks": "the port splits the qkv projection into a q block, a k block and a v block "
                           "instead of per head [q | k | v] (EfficientFormer)",
    "LayerNorm eps 1e-5": "the port uses LayerNorm eps 1e-5 where the config says 1e-12 (EfficientFormer)",
    "other attention generation": "the port runs SwiftFormer's other additive attention (v1 ↔ v2)",
}


def simulated_port(model, mistake: str):
    """A model of the same class that makes one of `MISTAKES`, built from a changed copy of the
    weights or config (the code stays npformer's):

    * "no attention bias": every `attention_biases` table zeroed;
    * "qkv as q|k|v blocks": the qkv rows permuted so that npformer's per-head reading of the new
      weights gives what a block-wise reading of the original weights gives;
    * "LayerNorm eps 1e-5": the config's layer_norm_eps set to 1e-5;
    * "other attention generation": SwiftFormer's attention_generation flipped."""
    import dataclasses

    config, weights = model.config, dict(model.weights)
    if mistake == "no attention bias":
        weights = {k: np.zeros_like(v) if k.endswith("attention_biases") else v for k, v in weights.items()}
    elif mistake == "qkv as q|k|v blocks":
        h, dk, dv = config.num_attention_heads, config.key_dim, config.attention_ratio * config.key_dim
        blocks = np.arange(h * (2 * dk + dv))  # row r of the block layout: [q of all heads | k ... | v ...]
        q, k, v = np.split(blocks, [h * dk, 2 * h * dk])
        order = np.concatenate([np.concatenate([q[i * dk:(i + 1) * dk], k[i * dk:(i + 1) * dk], v[i * dv:(i + 1) * dv]])
                                for i in range(h)])  # the rows a block-wise port uses, in per-head order
        weights = {key: val[order] if ".qkv." in key else val for key, val in weights.items()}
    elif mistake == "LayerNorm eps 1e-5":
        config = dataclasses.replace(config, layer_norm_eps=1e-5)
    elif mistake == "other attention generation":
        other = {"v1": "v2", "v2": "v1"}[config.attention_generation]
        config = dataclasses.replace(config, attention_generation=other)
    else:
        raise InputError(f"unknown mistake {mistake!r}; known: {', '.join(MISTAKES)}")
    return type(model)(config, weights, dtype=model.dtype)


def trace_and_compare(reference, port, pixels, directory, atol=1e-4, rtol=1e-4, port_context=nullcontext):
    """Trace `reference` and `port` on the same pixels into `directory`/golden.safetensors and
    `directory`/port.safetensors (`port` runs inside `port_context()`, e.g. `swapped_activation`)
    and compare port against golden (`oracle_tools.compare_fixtures`). Returns the Comparison."""
    from ..golden import compare_fixtures, trace_to_fixture

    directory = Path(directory)
    trace_to_fixture(reference, pixels, directory / "golden.safetensors")
    with port_context():
        trace_to_fixture(port, pixels, directory / "port.safetensors")
    return compare_fixtures(directory / "port.safetensors", directory / "golden.safetensors", atol=atol, rtol=rtol)


def save_port_fixture(path, tensors: dict) -> None:
    """Write a port's own activations ({trace name: array}, in forward order) as a fixture that
    `compare_fixtures` / `npformer compare` accept: the tensors plus metadata format and names."""
    import json

    from safetensors.numpy import save_file

    from ..golden import FIXTURE_FORMAT

    metadata = {"format": FIXTURE_FORMAT, "names": json.dumps([n for n in tensors if n != "input"])}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
