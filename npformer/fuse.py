"""Folding BatchNorm into the neighbouring convolution: an explicit load-time step.

In eval mode a BatchNorm is a per-channel affine map, y = α·x + β′ with α = γ/√(var + eps) and
β′ = β − mean·α (see `layers.batch_norm`). Next to a convolution, which is linear, that affine
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

from .weights import Params

AFTER, BEFORE = "after", "before"  # where the BatchNorm sits relative to its convolution


def is_folded(p: Params, norm: str) -> bool:
    """True when the BatchNorm `norm` has been folded into its convolution (its weights are gone)."""
    return f"{norm}.running_var" not in p


def batch_norm_affine(tensors: dict, norm: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(α, β′) of the BatchNorm `norm`, in float64: BN(x) = α·x + β′ per channel."""
    g = {k: np.asarray(tensors[f"{norm}.{k}"], np.float64) for k in ("weight", "bias", "running_mean", "running_var")}
    alpha = g["weight"] / np.sqrt(g["running_var"] + eps)
    return alpha, g["bias"] - g["running_mean"] * alpha


def fold_batch_norms(tensors: dict, folds, eps: float, dtype) -> dict:
    """A new weight dict with each (conv, norm, where) of `folds` folded and the norm's tensors dropped.

    conv weight [OC, IC/groups, KH, KW]; an AFTER norm has OC channels, a BEFORE norm IC (1×1 only).
    """
    out = dict(tensors)
    for conv, norm, where in folds:
        alpha, shift = batch_norm_affine(tensors, norm, eps)
        w = np.asarray(tensors[f"{conv}.weight"], np.float64)
        b = np.asarray(tensors[f"{conv}.bias"], np.float64)
        if where == AFTER:
            w, b = w * alpha[:, None, None, None], b * alpha + shift
        else:
            w2d = w.reshape(w.shape[0], w.shape[1])  # a 1×1 convolution: [OC, IC]
            w, b = w * alpha[None, :, None, None], b + w2d @ shift
        out[f"{conv}.weight"] = w.astype(dtype)
        out[f"{conv}.bias"] = b.astype(dtype)
        for k in ("weight", "bias", "running_mean", "running_var"):
            del out[f"{norm}.{k}"]
    return out
