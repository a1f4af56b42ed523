"""The building blocks every family's weight schema (`<family>/schema.py`) is written with.

A weight schema is a {tensor name: shape} dict in checkpoint order; these give the tensors of one
PyTorch module each, with PyTorch's layouts.
"""

from __future__ import annotations

import re
from typing import NamedTuple


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
