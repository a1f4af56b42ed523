"""The building blocks every family's weight schema (`<family>/schema.py`) is written with, and
the strict check of a weight dict against a schema (`check_tensors`).

A weight schema is a {tensor name: shape} dict in checkpoint order; these give the tensors of one
PyTorch module each, with PyTorch's layouts.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from ..errors import CheckpointMismatchError, WeightFileError


def conv_schema(name, out_ch, in_ch, k, bias=True):
    """A Conv2d: weight [OC, IC/groups, k, k], and bias [OC] unless `bias` is False."""
    return {f"{name}.weight": (out_ch, in_ch, k, k)} | ({f"{name}.bias": (out_ch,)} if bias else {})


def bn_schema(name, ch):
    """A BatchNorm2d in eval mode (num_batches_tracked is not kept)."""
    return {f"{name}.{p}": (ch,) for p in ("weight", "bias", "running_mean", "running_var")}


def linear_schema(name, out_f, in_f):
    """A Linear with bias: weight [OUT, IN], bias [OUT]."""
    return {f"{name}.weight": (out_f, in_f), f"{name}.bias": (out_f,)}


def foreign_names(modules: dict[str, tuple[str, list]], schema: dict) -> dict[str, str]:
    """{canonical tensor name: its foreign name} for every tensor of `schema`.

    `modules` maps a canonical module prefix to (its foreign prefix, [(canonical suffix, foreign
    suffix), ...] renames below it); the longest matching prefix wins, "" matches everything."""
    prefixes = sorted(modules, key=len, reverse=True)
    out = {}
    for name in schema:
        prefix = next(p for p in prefixes if p == "" or name.startswith(p + "."))
        target, renames = modules[prefix]
        rest = name[len(prefix) + 1 :] if prefix else name
        for canon, foreign in renames:
            if rest == canon or rest.startswith(canon + "."):
                rest = foreign + rest[len(canon) :]
                break
        out[name] = f"{target}.{rest}" if target else rest
    return out


class Stage(NamedTuple):
    """One stage of a four-stage network, as a family's `stages(cfg)` lists it: its index, the
    name of the downsampling module that leads into it (None where there is none) and its blocks
    as (kind, name) pairs, in forward order."""

    index: int
    downsample: str | None
    blocks: list[tuple[str, str]]


def block_indices(keys, pattern: str) -> dict[int, set]:
    """{stage-module index: block indices} of the keys matching `pattern` (two groups: stage, block),
    which is how a checkpoint without a config shows its depths."""
    found: dict[int, set] = {}
    for key in keys:
        if m := re.match(pattern, key):
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return found


def stage_level_names(stages: list[Stage], block_labels: dict[str, str]) -> dict[str, str]:
    """{name: what it is} of the stem, each downsample, block and stage output, in forward order:
    the part of a family's `traced_names` every four-stage network shares."""
    names = {"stem": "stem"}
    for stage in stages:
        if stage.downsample:
            names[stage.downsample] = "downsample"
        names |= {name: block_labels[kind] for kind, name in stage.blocks}
        names[f"stages.{stage.index}"] = "stage output"
    return names


def detect_schema(keys: set, fingerprints: dict[str, tuple[str, str]]) -> str | None:
    """The key schema whose fingerprint a state dict's keys show, else None. A fingerprint is
    (a key that must be there, a substring some key must contain); either may be "" (no condition)."""
    for schema, (key, part) in fingerprints.items():
        if (not key or key in keys) and (not part or any(part in k for k in keys)):
            return schema
    return None


def classifier_names(num_heads: int, pooled: str) -> dict[str, str]:
    """{name: what it is} of what a classifier with `num_heads` heads traces after its final norm:
    the pooled features (`pooled` says how they are pooled) and the head(s)."""
    if num_heads == 0:
        return {}
    if num_heads == 1:
        return {"pooled": pooled, "head": "head (= logits)"}
    return {"pooled": pooled, "head": "head", "head_dist": "distillation head", "logits": "(head + head_dist) / 2"}


# ---------------------------------------------------------------------------------------------
# the strict check of tensors against a schema


def _names(keys: list, limit: int = 10) -> str:
    """"a, b, c" — at most `limit` names, then how many more (messages stay one readable line)."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def key_set_problems(expected, found, what: str = "keys") -> list[str]:
    """"missing keys (n): a, b, ..." and "unexpected keys (n): ..." of two name collections ([] when equal)."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    return ([f"missing {what} ({len(missing)}): {_names(missing)}"] if missing else []) + \
        ([f"unexpected {what} ({len(unexpected)}): {_names(unexpected)}"] if unexpected else [])


def check_tensors(tensors: dict, schema: dict, source: str) -> None:
    """Strict check of tensors against a schema {name: shape}; every problem by name.

    Structure (missing / unexpected keys, shapes, non-float dtypes) -> CheckpointMismatchError;
    then values (`check_values`) -> WeightFileError."""
    problems = key_set_problems(schema, tensors)
    for name in sorted(set(schema) & set(tensors)):
        shape = tuple(schema[name])
        got = tensors[name]
        if not isinstance(got, np.ndarray):
            problems.append(f"{name}: expected an array, got {type(got).__name__}")
        elif tuple(got.shape) != shape:
            problems.append(f"{name}: expected shape {shape}, got {tuple(got.shape)}")
        elif got.dtype.kind != "f":
            problems.append(f"{name}: expected a floating-point tensor, got {got.dtype}")
    if problems:
        raise CheckpointMismatchError(f"{source}: " + "; ".join(problems))
    check_values(tensors, source)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_values(tensors: dict, source: str) -> None:
    """Refuse weights that can only give wrong answers: NaN or ±inf anywhere (every logit downstream
    would be NaN, or a silently wrong class), values beyond float32's range (inf in a float32 model
    and in every npformer file), and negative BatchNorm running variances (the normaliser
    sqrt(var + eps) would be NaN). Raises WeightFileError naming each tensor and count."""
    problems = []
    for name in sorted(tensors):
        values = tensors[name]
        if values.dtype.kind != "f" or values.size == 0:
            continue
        finite = np.isfinite(values)
        if not finite.all():
            nan = int(np.isnan(values).sum())
            inf = int(values.size - finite.sum()) - nan
            counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
            problems.append(f"{name} ({counts} of {values.size} values)")
        elif values.dtype.itemsize > 4 and np.abs(values).max() > _FLOAT32_MAX:  # inf once stored as float32
            problems.append(f"{name} ({int((np.abs(values) > _FLOAT32_MAX).sum())} values beyond float32's range)")
        elif name.endswith("running_var") and (values < 0).any():
            problems.append(f"{name} ({int((values < 0).sum())} negative variances, min {float(values.min()):.3g})")
    if problems:
        raise WeightFileError(
            f"{source}: {len(problems)} tensor{'s hold' if len(problems) > 1 else ' holds'} values no trained model has, "
            f"which can only give NaN or wrong logits: {_names(problems, 5)}"
        )
