"""Multiply-accumulates (MACs) and parameters of a model, per stage and in total, at any input size.

    >>> import npformer.macs
    >>> result = npformer.macs.count(model, image_size=(224, 224))   # runs one forward on zeros
    >>> result.macs, result.params, result["stages.3"].macs
    >>> print(result)                                                 # the table

The count is what the forward computes, not a second description of the architecture: the layer
functions that multiply (`layers.conv2d`, `layers.linear`, the attention products in
`layers.multi_head_attention` and `layers.talking_heads_attention`, SwiftFormer's q·w_g) report
their products to the counter that `counting()` makes active, once per call; with no counter
active `count_macs` is one ContextVar lookup (~0.1 µs; an L1 forward makes 41 such calls). A
counter belongs to its thread (and asyncio task), so a count never sees another thread's forward.

What counts is what `torch.utils.flop_counter.FlopCounterMode` counts on the reference models
(torch 2.13.0's counting rules): convolutions (aten.convolution: B·OC·OH·OW·(IC/groups)·KH·KW) and matrix products
(aten.mm, addmm, bmm: the product of the output's size and the summed dimension), MACs = FLOPs / 2.
Not counted, there or here: biases, BatchNorm and LayerNorm, pooling, GELU and softmax, the ×2
upsample and the "pairwise" bias resize (torch's interpolate), residual adds and layer scales. A fused model (BatchNorms folded into the convolutions)
counts the same as the unfused one.

Stages: `stem`, `stages.0` … `stages.3` (each with the downsample that leads into it, as timm's
modules hold it) and `head` (the final norm and the classifier heads), attributed by reading the
running count when the forward traces each stage's output (`trace.py`). Parameters per stage come
from the weight names of the model's checkpoint contract (`weight_schema`), as PyTorch counts
them: BatchNorm running means and variances are buffers, not parameters; so are the derived
`attention_bias_idxs`, which npformer does not store. The learned attention-bias tables are
parameters. So a fused model reports its unfused checkpoint's parameters.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, InputError

STAGES = ("stem", "stages.0", "stages.1", "stages.2", "stages.3")  # the traced outputs that end each part
PARTS = STAGES + ("head",)
BUFFERS = ("running_mean", "running_var")  # what a weight file holds that PyTorch calls a buffer


# ---------------------------------------------------------------------------------------------
# the counter the layers report to


class MacCounter:
    """A running count of multiply-accumulates, what `counting()` yields.

    Parameters
    ----------
    outer : MacCounter, optional
        The count this one runs inside: it sees every product too.

    Attributes
    ----------
    total : int
        MACs counted so far.
    by_op : dict of str to int
        The split by kind of product: "conv" (as aten.convolution) and "matmul" (as aten.mm,
        addmm, bmm).
    """

    def __init__(self, outer: "MacCounter | None" = None):
        self.total = 0
        self.by_op = {"conv": 0, "matmul": 0}
        self.outer = outer  # the count this one runs inside: it sees every product too

    def add(self, n: int, op: str) -> None:
        self.total += n
        self.by_op[op] += n
        if self.outer is not None:
            self.outer.add(n, op)


_ACTIVE: ContextVar[MacCounter | None] = ContextVar("npformer_mac_counter", default=None)


@contextmanager
def counting():
    """Count the MACs of every layer call inside the `with` block, on this thread only.

    A count started inside another one adds to both.

    Yields
    ------
    MacCounter
        The running count.

    Examples
    --------
    >>> with counting() as counter:
    ...     model(pixel_values)
    >>> counter.total
    """
    counter = MacCounter(_ACTIVE.get())
    token = _ACTIVE.set(counter)
    try:
        yield counter
    finally:
        _ACTIVE.reset(token)


def is_counting() -> bool:
    """True inside a `counting()` block of this thread."""
    return _ACTIVE.get() is not None


def count_macs(n: int, op: str = "matmul") -> None:
    """Add `n` multiply-accumulates of kind `op` ("conv" or "matmul") to the active counter
    (nothing when none is active)."""
    counter = _ACTIVE.get()
    if counter is not None:
        counter.add(int(n), op)


def count_matmul(a, b) -> None:  # a [..., n, k], b [..., k, m]
    """Count np.matmul(a, b): (batch dims broadcast)·n·k·m, as FlopCounterMode counts bmm and mm."""
    counter = _ACTIVE.get()
    if counter is not None:
        batch = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        counter.add(batch * a.shape[-2] * a.shape[-1] * b.shape[-1], "matmul")


# ---------------------------------------------------------------------------------------------
# a model's count, per stage


@dataclass(frozen=True)
class PartCount:
    """One row of a `MacCount`: a part of the model, its MACs per image and its parameters.

    Attributes
    ----------
    name : str
        `stem`, `stages.0` … `stages.3` (each with the downsample that leads into it) or `head`
        (the final norm and the classifier heads).
    macs : int
        Multiply-accumulates per image.
    params : int
        Parameters, as PyTorch counts them (BatchNorm running statistics are buffers).
    """

    name: str
    macs: int
    params: int


@dataclass(frozen=True)
class MacCount:
    """MACs per image and parameters of a model at one input size, per part and in total.

    `str(count)` is the table `npformer shapes` prints; `count["stages.2"]` is a part's row.

    Attributes
    ----------
    model : str
        The model's class name.
    image_size : tuple of int
        (H, W).
    parts : tuple of PartCount
        `stem`, `stages.0` … `stages.3`, `head`.
    by_op : dict of str to int
        The total split into convolutions ("conv") and matrix products ("matmul").
    fused : bool
        Whether the model was fused (it counts the same).
    """

    model: str  # the model class
    image_size: tuple[int, int]  # (H, W)
    parts: tuple[PartCount, ...]
    by_op: dict  # {"conv": MACs, "matmul": MACs}: convolutions and matrix products, in total
    fused: bool = False

    @property
    def macs(self) -> int:
        """MACs per image, in total."""
        return sum(p.macs for p in self.parts)

    @property
    def params(self) -> int:
        """Parameters, in total."""
        return sum(p.params for p in self.parts)

    def __getitem__(self, name: str) -> PartCount:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"{name!r}: the parts are {', '.join(p.name for p in self.parts)}")

    def as_dict(self) -> dict:
        """The counts as plain ints, for JSON.

        Returns
        -------
        dict
            `{part: {"macs": …, "params": …}}` for every part, and "total".
        """
        rows = {p.name: {"macs": p.macs, "params": p.params} for p in self.parts}
        return {**rows, "total": {"macs": self.macs, "params": self.params}}

    def __str__(self) -> str:
        H, W = self.image_size
        total = max(self.macs, 1)
        rows = [("part", "MACs", "GMACs", "share", "params")]
        rows += [(p.name, f"{p.macs:,}", f"{p.macs / 1e9:.3f}", f"{100 * p.macs / total:.1f}%", f"{p.params:,}")
                 for p in self.parts]
        rows.append(("total", f"{self.macs:,}", f"{self.macs / 1e9:.3f}", "100.0%", f"{self.params:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        lines = ["  " + "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "  " + "-" * (len(lines[0]) - 2))
        lines.insert(-1, lines[1])
        head = f"MACs per image at {H}×{W} (convolutions and matrix products, as torch's FlopCounterMode) and parameters"
        return "\n".join([head, *lines])


def part_of(name: str) -> str:
    """The part a weight belongs to: `stem`, `stages.i` (its downsample included) or `head` (final norm, heads)."""
    top = name.split(".")[0]
    if top == "stem":
        return "stem"
    if top == "stages":
        return ".".join(name.split(".")[:2])
    return "head"


def params_per_part(model) -> dict[str, int]:
    """{part: parameters} from the model's weight schema (the unfused checkpoint's tensors), buffers excluded."""
    params = dict.fromkeys(PARTS, 0)
    for name, shape in type(model).weight_schema(model.config, model.num_heads).items():
        if not name.endswith(BUFFERS):
            params[part_of(name)] += math.prod(shape)
    return params


def _image_hw(image_size) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if not (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise InputError(f"image_size must be one side or (height, width) in pixels, got {image_size!r}")
    return int(size[0]), int(size[1])


def count(model, image_size=224) -> MacCount:
    """MACs per image and parameters of a model, per part and in total, at one input size.

    Runs one forward on a zero image of batch 1 with a counter active, so the count is what the
    forward computes: convolutions and matrix products, as torch's `FlopCounterMode` counts
    them on the references (MACs = FLOPs / 2); not norms, pooling, activations, softmax or
    resampling.

    Parameters
    ----------
    model : PreTrainedModel
        Any npformer model, fused or not.
    image_size : int or tuple of int, default 224
        One side, or (H, W): any size the model accepts.

    Returns
    -------
    MacCount
        The counts per part and in total; `print(...)` shows the table.

    Raises
    ------
    InputError
        A malformed `image_size`, or one the model refuses (the model's own error).
    """
    H, W = _image_hw(image_size)
    pixels = np.zeros((1, model.config.num_channels, H, W), dtype=model.dtype)
    marks = {}

    def mark_stages(name, x):  # a trace that reads the running count as each stage's output goes by
        if name in STAGES:
            marks[name] = counter.total
        return x

    with counting() as counter:
        model(pixels, trace=mark_stages)
    missing = [s for s in STAGES if s not in marks]
    if missing:
        raise ConfigError(f"{type(model).__name__}'s forward did not trace {missing}: its MACs cannot be split by stage")
    ends = [marks[s] for s in STAGES] + [counter.total]
    macs = [ends[0]] + [b - a for a, b in zip(ends, ends[1:])]
    params = params_per_part(model)
    return MacCount(type(model).__name__, (H, W), tuple(PartCount(n, m, params[n]) for n, m in zip(PARTS, macs)),
                    dict(counter.by_op), fused=model.fused)
