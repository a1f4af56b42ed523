"""Parity of npformer against transformers 4.40.2 on seeded weights (`npformer parity`).

For each variant and each of the three model classes, npformer and transformers run the same
seeded weights (see seeded.py) on the same seeded pixels, in float32 and in float64, and the
largest absolute differences of the outputs (logits, or last_hidden_state for the bare model)
are reported, with the hidden states and attentions compared relative to their scale (see
`scaled_diff`).
Needs the oracle extra (torch, transformers).
"""

from __future__ import annotations

import numpy as np

from .config import EfficientFormerConfig
from .convert import ARCHITECTURE_FOR_HEADS
from .seeded import seeded_weights

HEAD_KINDS = {0: "Model", 1: "ForImageClassification", 2: "WithTeacher"}
OUTPUTS = {0: ("last_hidden_state",), 1: ("logits",), 2: ("logits", "cls_logits", "distillation_logits")}


def seeded_pixels(batch: int, size: int = 224, seed: int = 1) -> np.ndarray:
    """Pixel values like a normalised image batch: [B, 3, size, size] float32 from N(0, 1)."""
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def npformer_outputs(cfg, weights, num_heads, pixels, dtype) -> dict:
    from . import architectures

    model = architectures()[ARCHITECTURE_FOR_HEADS[cfg.model_type][num_heads]](cfg, weights, dtype=dtype)
    out = model(pixels, output_hidden_states=True, output_attentions=True)
    return {k: getattr(out, k) for k in out.keys()}


def abs_diff(a, b) -> float:
    """max |a − b|, computed in float64."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def scaled_diff(a, b) -> float:
    """max |a − b| / max(1, max |b|): the absolute difference for O(1) tensors, the relative one
    for the residual stream, whose values grow to O(100) in deep stages (float32 keeps ~7 digits)."""
    return abs_diff(a, b) / max(1.0, float(np.abs(np.asarray(b, np.float64)).max()))


def max_diffs(ours: dict, ref: dict, num_heads: int) -> dict:
    """Largest |ours − ref| of the outputs; largest scaled difference of the hidden states and attentions."""
    return {
        "output": max(abs_diff(ours[k], ref[k]) for k in OUTPUTS[num_heads]),
        "hidden_states": max(scaled_diff(a, b) for a, b in zip(ours["hidden_states"], ref["hidden_states"], strict=True)),
        "attentions": max(scaled_diff(a, b) for a, b in zip(ours["attentions"], ref["attentions"], strict=True)),
    }


def compare(variant: str, num_heads: int, batch: int, dtype, seed: int = 0) -> dict:
    from .oracle import hf_forward, hf_model

    cfg = EfficientFormerConfig.variant(variant)
    weights = seeded_weights(cfg, num_heads=num_heads, seed=seed)
    pixels = seeded_pixels(batch)
    ours = npformer_outputs(cfg, weights, num_heads, pixels, dtype)
    ref = hf_forward(hf_model(cfg, weights, num_heads, dtype), pixels, output_hidden_states=True, output_attentions=True)
    return max_diffs(ours, ref, num_heads)


def parity_table(variants=("l1", "l3", "l7"), batches=(1, 4), printer=print) -> list[dict]:
    """Print and return one row per (variant, head, batch): float32 and float64 max abs diffs."""
    import torch
    import transformers

    torch.set_num_threads(2)
    printer(f"npformer vs transformers {transformers.__version__} (torch {torch.__version__}), seeded weights, "
            "max |npformer − transformers| (hidden, attn: relative to max(1, max |transformers|))")
    printer(f"{'variant':8} {'class':24} {'batch':>5} | {'f32 logits':>10} {'f32 hidden':>10} {'f32 attn':>10} | "
            f"{'f64 logits':>10} {'f64 hidden':>10} {'f64 attn':>10}")
    rows = []
    for variant in variants:
        for num_heads in (2, 1, 0):
            for batch in batches:
                r32 = compare(variant, num_heads, batch, np.float32)
                r64 = compare(variant, num_heads, batch, np.float64)
                rows.append(dict(variant=variant, model=HEAD_KINDS[num_heads], batch=batch, float32=r32, float64=r64))
                printer(f"{variant:8} {HEAD_KINDS[num_heads]:24} {batch:5d} | {r32['output']:10.2e} "
                        f"{r32['hidden_states']:10.2e} {r32['attentions']:10.2e} | {r64['output']:10.2e} "
                        f"{r64['hidden_states']:10.2e} {r64['attentions']:10.2e}")
    return rows


def sample(a: np.ndarray, name: str, k: int = 256) -> np.ndarray:
    """k entries of `a` at positions fixed by `name`: small golden fixtures that still see every
    part of a large tensor (a wrong border, channel or token anywhere moves some of them)."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(name.encode()))
    flat = np.asarray(a).reshape(-1)
    return flat[np.sort(rng.choice(flat.size, size=min(k, flat.size), replace=False))]


def golden_entries(outputs: dict, num_heads: int, prefix: str) -> dict:
    """What a golden fixture keeps of a forward: the outputs whole (heads) or sampled (backbone),
    and 256 sampled values of every hidden state and attention map."""
    entries = {}
    for key in OUTPUTS[num_heads]:
        value = outputs[key]
        entries[f"{prefix}/{key}"] = value if key != "last_hidden_state" else sample(value, f"{prefix}/{key}", 4096)
    for field in ("hidden_states", "attentions"):
        for i, value in enumerate(outputs[field]):
            name = f"{prefix}/{field}.{i}"
            entries[name] = sample(value, name)
    return entries


def checksum(tensors: dict) -> str:
    """A float64 sum of |values| of all tensors: detects seeded weights or pixels that drifted."""
    return f"{sum(float(np.abs(v.astype(np.float64)).sum()) for v in tensors.values()):.12e}"
