"""A batch runs one image at a time, so that an image's outputs never depend on its batch.

Why: a product's summation order can depend on its shapes, so a batched product could give an
image other bits than the same image alone (and the split of work over workers would depend on
the batch size). Run as B forwards of one image each, on npformer's workers, and joined along the
batch axis, an image's outputs are bit-identical alone or at any place in any batch, with any
worker count (tests/test_parallel.py).

`PreTrainedModel.__call__` calls `per_image` for B ≥ 2; a forward of one image goes straight to
the model's own `_forward`.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from ..losses import classification_loss
from ..macs import is_counting
from ..parallel import parallel_for
from ..trace import no_trace


class Recorder:
    """A trace that keeps every (name, array) it is called with, in order (copies)."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, x):
        self.calls.append((name, np.array(x, copy=True)))
        return x


def concatenate(values):  # [a [1, ...], b [1, ...], ...] -> [B, ...]; tuples field by field; None stays None
    """The per-image values of one output field joined along the batch axis."""
    if values[0] is None:
        return None
    if isinstance(values[0], tuple):
        return tuple(concatenate(list(column)) for column in zip(*values))
    return np.concatenate(values, axis=0)


def batch_size(pixel_values) -> int:
    """B of a [B, C, H, W] input; 0 when it is not one (the forward then says why)."""
    try:
        shape = np.shape(pixel_values)
    except ValueError:  # ragged nested lists
        return 0
    return shape[0] if len(shape) == 4 else 0


def per_image(model, x, *args, **kwargs):
    """model._forward(x, ...) for a checked batch x [B, C, H, W], one image at a time, on the workers.

    The outputs' fields are joined along the batch axis. A loss (`labels=`) is computed once, on
    the joined logits; a `trace` sees each recorded name once, after the images have run, with
    the joined array, in forward order."""
    options = dict(inspect.signature(model._forward).bind(x, *args, **kwargs).arguments)
    del options["pixel_values"]
    labels = options.pop("labels", None)
    trace = options.pop("trace", None)
    traced = trace is not None and trace is not no_trace
    B = x.shape[0]
    outputs, recorders = [None] * B, [Recorder() for _ in range(B)] if traced else None

    def one_image(b):
        extra = {"trace": recorders[b]} if traced else {}
        outputs[b] = model._forward(x[b : b + 1], **options, **extra)

    if is_counting():  # a MAC count belongs to the calling thread (npformer.macs): run the images here
        for b in range(B):
            one_image(b)
    else:
        parallel_for(B, one_image)
    fields = {f.name: concatenate([getattr(o, f.name) for o in outputs]) for f in dataclasses.fields(outputs[0])}
    if labels is not None:
        fields["loss"] = classification_loss(fields["logits"], labels, model.config)
    if traced:
        for k, (name, _) in enumerate(recorders[0].calls):
            trace(name, np.concatenate([r.calls[k][1] for r in recorders], axis=0))
    return type(outputs[0])(**fields)
