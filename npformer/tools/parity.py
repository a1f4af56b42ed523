"""Parity of npformer against the PyTorch references on seeded weights (`npformer parity`).

Each row runs npformer and one reference on the same seeded weights (see seeded.py) and the same
seeded pixels, in float32 and in float64, and reports the largest absolute difference of the
logits, with feature maps (hidden states, a backbone's last_hidden_state) and attentions compared
relative to their scale (see `entry_diff`). The references:

    EfficientFormer L1/L3/L7       transformers 4.40.2, all three classes (LayerNorm eps 1e-12)
                                   timm, from timm-format weights (LayerNorm eps 1e-5)
    SwiftFormer XS/S/L1/L3         transformers 4.40.2, attention v1, classifier and backbone
                                   timm, attention v2
    EfficientFormerV2 S0/S1/S2/L   timm (transformers never ported V2)

Each family lists its rows in `npformer.tools.references.<family>.PARITY_CASES`.

Against timm the hidden states are the outputs of `stem`, `stages.0`…`stages.3` and `norm`
(timm's module names are npformer's trace names). Needs the oracle extra (torch, transformers, timm).
"""

from __future__ import annotations

import zlib

import numpy as np

from ..models.seeded import seeded_weights
from ..models.registry import FAMILIES
from ..models.registry import family as family_named
from ..models.classes import model_class
from . import references
from ..trace import Trace

HEAD_KINDS = {0: "Model", 1: "ForImageClassification", 2: "WithTeacher"}  # fixture prefixes, by classifier heads
TIMM_STAGES = ("stem", "stages.0", "stages.1", "stages.2", "stages.3", "norm")

# (family, variant, reference, heads) of every parity row, from each family's reference.py
CASES = [(name, *case) for name, f in FAMILIES.items() for case in references.of(f).PARITY_CASES]


def reference_config(family: str, variant: str, reference: str):
    """The config a reference implements (e.g. timm's EfficientFormer has LayerNorm eps 1e-5,
    transformers' SwiftFormer attention v1 and timm's v2)."""
    return references.of(family_named(family)).reference_config(variant, reference)


def outputs_compared(family: str, num_heads: int) -> tuple:
    """The output fields a parity check compares whole, for a family's class with `num_heads` heads."""
    return references.of(family_named(family)).OUTPUTS[num_heads]


def seeded_pixels(batch: int, size: int = 224, seed: int = 1) -> np.ndarray:
    """Pixel values like a normalised image batch: [B, 3, size, size] float32 from N(0, 1)."""
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def npformer_outputs(cfg, weights, num_heads, pixels, dtype, reference="transformers", fuse=False) -> dict:
    """npformer's outputs as a dict; against timm, `hidden_states` are the TIMM_STAGES outputs.
    `fuse`: run the fused fast path (BatchNorms folded into convolutions)."""
    fam = family_named(cfg.model_type)
    model = model_class(fam.architecture(num_heads))(cfg, weights, dtype=dtype)
    model = model.fuse() if fuse else model
    trace = Trace(TIMM_STAGES)
    out = model(pixels, output_hidden_states=True, trace=trace, **references.of(fam).FORWARD_OPTIONS)
    result = {k: getattr(out, k) for k in out.keys()}
    if reference == "timm":
        result["hidden_states"] = tuple(trace[name] for name in TIMM_STAGES)
        result.pop("attentions", None)
    return result


def reference_outputs(cfg, weights, num_heads, pixels, dtype, reference) -> dict:
    """The reference's outputs as a dict of NumPy arrays."""
    from .oracle import hf_forward, hf_model, timm_forward, timm_model

    if reference == "transformers":
        options = references.of(family_named(cfg.model_type)).FORWARD_OPTIONS
        return hf_forward(hf_model(cfg, weights, num_heads, dtype), pixels, output_hidden_states=True, **options)
    model, _ = timm_model(cfg, weights, dtype)
    return timm_forward(model, pixels, TIMM_STAGES)


def abs_diff(a, b) -> float:
    """max |a − b|, computed in float64."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def scaled_diff(a, b) -> float:
    """max |a − b| / max(1, max |b|): the absolute difference for O(1) tensors, the relative one
    for the residual stream, whose values grow to O(100) in deep stages (float32 keeps ~7 digits)."""
    return abs_diff(a, b) / max(1.0, float(np.abs(np.asarray(b, np.float64)).max()))


def entry_diff(name: str, a, b) -> float:
    """The difference a parity check uses for a named output: absolute for logits, scaled for
    feature maps and attentions (`last_hidden_state`, `hidden_states.i`, `attentions.i`)."""
    scaled = any(part in name for part in ("last_hidden_state", "hidden_states", "attentions"))
    return scaled_diff(a, b) if scaled else abs_diff(a, b)


def max_diffs(ours: dict, ref: dict, family: str, num_heads: int) -> dict:
    """Largest difference of the outputs, the hidden states (and attentions), as `entry_diff` measures them."""
    keys = [k for k in outputs_compared(family, num_heads) if k in ref]  # timm returns the averaged logits only
    diffs = {"output": max(entry_diff(k, ours[k], ref[k]) for k in keys)}
    for field in ("hidden_states", "attentions"):
        if field in ref:
            diffs[field] = max(scaled_diff(a, b) for a, b in zip(ours[field], ref[field], strict=True))
    return diffs


def compare(family: str, variant: str, reference: str, num_heads: int, batch: int, dtype, seed: int = 0,
            fused: bool = False) -> dict:
    """max_diffs of npformer (`fused`: its fast path) against the reference, on seeded weights and pixels."""
    cfg = reference_config(family, variant, reference)
    weights = seeded_weights(cfg, num_heads=num_heads, seed=seed)
    pixels = seeded_pixels(batch)
    ours = npformer_outputs(cfg, weights, num_heads, pixels, dtype, reference, fuse=fused)
    ref = reference_outputs(cfg, weights, num_heads, pixels, dtype, reference)
    return max_diffs(ours, ref, family, num_heads)


def _class_name(family, num_heads):
    """The model class without the family prefix; a teacher class as "WithTeacher"."""
    fam = family_named(family)
    name = fam.architecture(num_heads).removeprefix(fam.display)
    return "WithTeacher" if name.endswith("WithTeacher") else name


def parity_table(families=tuple(FAMILIES), variants=None, references=("transformers", "timm"),
                 batches=(1, 4), printer=print) -> list[dict]:
    """Print and return one row per case and batch: float32 and float64 max diffs, and float32 of the fused fast path."""
    import torch
    import transformers

    from .timm_import import import_timm

    timm = import_timm()
    torch.set_num_threads(2)
    printer(f"npformer vs transformers {transformers.__version__} and timm {timm.__version__} "
            f"(torch {torch.__version__}), seeded weights")
    printer("output: max |npformer − reference| (logits); feature maps and attentions (hidden, attn, and a "
            "backbone's output): the same divided by max(1, max |reference|)")
    width = max(len(f"{family_named(f).display}-{v.upper()}") for f, v, _, _ in CASES)  # the model column
    head = f"{'model':{width}} {'reference':17} {'class':22} {'batch':>5}"
    printer(f"{head} | {'f32 output':>10} {'f32 hidden':>10} {'f32 attn':>10} | "
            f"{'f64 output':>10} {'f64 hidden':>10} {'f64 attn':>10} | {'fused f32':>10}")
    rows = []
    for family, variant, reference, num_heads in CASES:
        if family not in families or reference not in references or (variants and variant not in variants):
            continue
        for batch in batches:
            r32 = compare(family, variant, reference, num_heads, batch, np.float32)
            r64 = compare(family, variant, reference, num_heads, batch, np.float64)
            r32f = compare(family, variant, reference, num_heads, batch, np.float32, fused=True)
            fam = family_named(family)
            model = f"{fam.display}-{variant.upper()}"
            generation = getattr(reference_config(family, variant, reference), "attention_generation", None)
            ref = f"{reference} ({generation})" if generation else reference
            rows.append(dict(model=model, reference=ref, cls=_class_name(family, num_heads), batch=batch,
                             float32=r32, float64=r64, fused_float32=r32f))
            cells = lambda r: " ".join(f"{r[k]:10.2e}" if k in r else f"{'—':>10}"  # noqa: E731
                                       for k in ("output", "hidden_states", "attentions"))
            printer(f"{model:{width}} {ref:17} {_class_name(family, num_heads):22} {batch:5d} | {cells(r32)} | {cells(r64)} | "
                    f"{max(r32f.values()):10.2e}")
    return rows


def sample(a: np.ndarray, name: str, k: int = 256) -> np.ndarray:
    """k entries of `a` at positions fixed by `name`: small golden fixtures that still see every
    part of a large tensor (a wrong border, channel or token anywhere moves some of them)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    flat = np.asarray(a).reshape(-1)
    return flat[np.sort(rng.choice(flat.size, size=min(k, flat.size), replace=False))]


def golden_entries(outputs: dict, family: str, num_heads: int, prefix: str) -> dict:
    """What a golden fixture keeps of a forward: the heads' outputs whole, the backbone's output
    sampled (4096 values), and 256 sampled values of every hidden state and attention map."""
    entries = {}
    for key in outputs_compared(family, num_heads):
        value = outputs[key]
        entries[f"{prefix}/{key}"] = value if key != "last_hidden_state" else sample(value, f"{prefix}/{key}", 4096)
    for field in ("hidden_states", "attentions"):
        for i, value in enumerate(outputs.get(field, ())):
            name = f"{prefix}/{field}.{i}"
            entries[name] = sample(value, name)
    return entries


def checksum(tensors: dict) -> str:
    """A float64 sum of |values| of all tensors: detects seeded weights or pixels that drifted."""
    return f"{sum(float(np.abs(v.astype(np.float64)).sum()) for v in tensors.values()):.12e}"
