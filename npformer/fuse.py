"""Folding BatchNorm into the neighbouring convolution: an explicit load-time step.

In eval mode a BatchNorm is a per-channel affine map, y = α·x + β′ with α = γ/√(var + eps) and
β′ = β − mean·α (`layers.batch_norm_affine`). Next to a convolution, which is linear, that affine
map can be folded into the convolution's weight and bias, and the forward pass skips one full
pass over the feature map:

    BN after a conv:   BN(W∗x + b)  = (α·W)∗x + (α·b + β′)           scale W's output channels
    BN before a 1×1:   W·BN(x) + b  = (W·α)·x + (W·β′ + b)           scale W's input channels

Folding is done in float64 and rounded to the model's dtype once, so a fused model equals the
unfused one to float32 rounding (tested within 1e-5). `model.fuse()` returns the fused model;
its trace has the folded BatchNorm's output under the BatchNorm's name (after a conv) or not at
all (before a conv), and no separate entry for the bare convolution.
"""

from __future__ import annotations

import numpy as np

from .layers import batch_norm_affine
from .params import Params

AFTER, BEFORE = "after", "before"  # where the BatchNorm sits relative to its convolution


def is_folded(p: Params, norm: str) -> bool:
    """True when the BatchNorm `norm` has been folded into its convolution (its weights are gone)."""
    return f"{norm}.running_var" not in p


def fold_after(conv_weight, conv_bias, alpha, shift):  # [OC, IC/g, KH, KW], [OC] -> the same
    """The convolution that equals conv → BN: W′ = α·W (per output channel), b′ = α·b + β′."""
    return conv_weight * alpha[:, None, None, None], conv_bias * alpha + shift


def fold_before(conv_weight, conv_bias, alpha, shift):  # [OC, IC, 1, 1], [OC] -> the same
    """The 1×1 convolution that equals BN → conv: W′ = W·α (per input channel), b′ = b + W·β′."""
    return conv_weight * alpha[None, :, None, None], conv_bias + conv_weight[:, :, 0, 0] @ shift


def fold_batch_norms(tensors: dict, folds, eps: float, dtype) -> dict:
    """A new weight dict with each (conv, norm, where) of `folds` folded and the norm's tensors dropped.
    Computed in float64, rounded to `dtype` once."""
    out = dict(tensors)
    for conv, norm, where in folds:
        bn = (np.asarray(tensors[f"{norm}.{k}"], np.float64) for k in ("running_mean", "running_var", "weight", "bias"))
        alpha, shift = batch_norm_affine(*bn, eps)
        fold = fold_after if where == AFTER else fold_before
        w, b = fold(np.asarray(tensors[f"{conv}.weight"], np.float64), np.asarray(tensors[f"{conv}.bias"], np.float64),
                    alpha, shift)
        out[f"{conv}.weight"], out[f"{conv}.bias"] = w.astype(dtype), b.astype(dtype)
        for k in ("weight", "bias", "running_mean", "running_var"):
            del out[f"{norm}.{k}"]
    return out
