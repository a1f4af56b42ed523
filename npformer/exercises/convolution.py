"""Exercises on convolution and BatchNorm: conv2d as loops, conv2d vectorised, eval-mode
BatchNorm, and folding a BatchNorm into the convolution before it.

Each mistake is a function with the reference's arguments, built from npformer's own layers with
one thing changed, so that it is obviously the mistake its sentence names.
"""

from __future__ import annotations

import numpy as np

from .. import fuse, layers
from .spec import Case, Exercise, Mistake, positive, random

CONV_SIGNATURE = "(x, weight, bias=None, stride=1, padding=0, groups=1)  # [B, IC, H, W] -> [B, OC, OH, OW]"

# ---------------------------------------------------------------------------------------------
# conv2d


def conv_case(rng, label, x_shape, w_shape, bias=True, stride=1, padding=0, groups=1, dtype=np.float32) -> Case:
    """Random x [B, IC, H, W] and weight [OC, IC/groups, KH, KW] (variance 1/fan-in), bias [OC] or None."""
    fan_in = int(np.prod(w_shape[1:]))
    x = random(rng, x_shape, dtype)
    w = random(rng, w_shape, dtype, fan_in**-0.5)
    b = random(rng, (w_shape[0],), dtype, 0.5) if bias else None
    return Case(f"{label}, {np.dtype(dtype).name}", (x, w, b, stride, padding, groups))


def conv_cases(groups: bool) -> list[Case]:
    """Odd and even sides, strides 1 and 2, padding 0–1, a 1×1 and a non-square kernel, batch 2,
    float32 and float64; with `groups`, a depthwise and a grouped convolution too."""
    rng = np.random.default_rng(1701)
    cases = [
        conv_case(rng, "3×3 kernel, stride 1, padding 1, odd sides 5×7, batch 2", (2, 3, 5, 7), (4, 3, 3, 3), True, 1, 1),
        conv_case(rng, "3×3 kernel, stride 2, padding 1, sides 7×6", (1, 3, 7, 6), (2, 3, 3, 3), True, 2, 1),
        conv_case(rng, "1×1 kernel, no bias, batch 2", (2, 4, 3, 3), (5, 4, 1, 1), False),
        conv_case(rng, "2×3 kernel, stride 2, no padding", (1, 2, 6, 9), (3, 2, 2, 3), True, 2, 0),
        conv_case(rng, "3×3 kernel, padding 1, a 3×5 image", (1, 2, 3, 5), (2, 2, 3, 3), True, 1, 1),
        conv_case(rng, "3×3 kernel, stride 2, padding 1, batch 2", (2, 3, 5, 5), (3, 3, 3, 3), True, 2, 1, dtype=np.float64),
    ]
    if groups:
        cases += [
            conv_case(rng, "depthwise 3×3 (groups = channels = 4), padding 1", (2, 4, 5, 5), (4, 1, 3, 3), True, 1, 1, 4),
            conv_case(rng, "2 groups, stride 2, padding 1", (1, 4, 5, 6), (6, 2, 3, 3), True, 2, 1, 2),
            conv_case(rng, "depthwise 3×3, stride 2, padding 1", (1, 3, 6, 7), (3, 1, 3, 3), True, 2, 1, 3, dtype=np.float64),
        ]
    return cases


def conv_timing_case() -> Case:
    """A feature map on which six nested Python loops take over a second (1.2M multiply-adds), a
    loop over output pixels with NumPy inside ~0.05 s and npformer's conv2d ~0.1 ms (measured here)."""
    return conv_case(np.random.default_rng(7), "timing", (1, 8, 32, 32), (16, 8, 3, 3), True, 1, 1)


def flipped_kernel(x, weight, bias=None, stride=1, padding=0, groups=1):
    return layers.conv2d(x, np.ascontiguousarray(weight[:, :, ::-1, ::-1]), bias, stride, padding, groups)


def without_bias(x, weight, bias=None, stride=1, padding=0, groups=1):
    return layers.conv2d(x, weight, None, stride, padding, groups)


def transposed_kernel(x, weight, bias=None, stride=1, padding=0, groups=1):
    return layers.conv2d(x, np.ascontiguousarray(weight.transpose(0, 1, 3, 2)), bias, stride, padding, groups)


def padding_ignored(x, weight, bias=None, stride=1, padding=0, groups=1):
    return layers.conv2d(x, weight, bias, stride, 0, groups)


def edge_padding(x, weight, bias=None, stride=1, padding=0, groups=1):
    p = padding
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="edge") if p else x
    return layers.conv2d(padded, weight, bias, stride, 0, groups)


def first_group_everywhere(x, weight, bias=None, stride=1, padding=0, groups=1):
    """Every group reads the input channels of group 0 (x[:, :IC/groups])."""
    per_group = weight.shape[1]
    return layers.conv2d(np.concatenate([x[:, :per_group]] * groups, axis=1), weight, bias, stride, padding, groups)


CONV_MISTAKES = (
    Mistake("flipped kernel", "the kernel is flipped: that is the convolution of a signal-processing textbook, but "
            "PyTorch's Conv2d (and npformer's) is a cross-correlation, out[y, x] = Σ w[i, j]·in[s·y + i − p, s·x + j − p], "
            "with w not flipped.", flipped_kernel),
    Mistake("no bias", "the bias is missing: add bias[o] to every output of channel o (when bias is not None).",
            without_bias),
    Mistake("transposed kernel", "the kernel is read transposed, w[o, c, j, i] instead of w[o, c, i, j]: i runs down the "
            "KH rows, j along the KW columns.", transposed_kernel),
    Mistake("padding ignored", "the padding is ignored: pad the input with `padding` zeros on every side first (the "
            "output is then (H + 2p − KH) // s + 1 high).", padding_ignored),
    Mistake("edge padding", "the border is padded by repeating the edge pixels; Conv2d pads with zeros.", edge_padding),
)

GROUPS_MISTAKE = Mistake(
    "first group everywhere", "every group reads the first group's input channels: group g must read input channels "
    "g·IC/groups … (g + 1)·IC/groups − 1 (for a depthwise convolution, output channel c reads input channel c only).",
    first_group_everywhere)


CONV2D_NAIVE = Exercise(
    name="conv2d_naive",
    signature="conv2d_naive" + CONV_SIGNATURE,
    summary="convolution as nested loops, the definition written out (groups = 1)",
    reference=layers.conv2d,
    cases=lambda: conv_cases(groups=False),
    mistakes=CONV_MISTAKES,
)

CONV2D = Exercise(
    name="conv2d",
    signature="conv2d" + CONV_SIGNATURE,
    summary="convolution vectorised (a sum over kernel offsets, or im2col and one matmul), groups included",
    reference=layers.conv2d,
    cases=lambda: conv_cases(groups=True),
    mistakes=CONV_MISTAKES + (GROUPS_MISTAKE,),
    vectorised=True,
    timing_case=conv_timing_case,
)

# ---------------------------------------------------------------------------------------------
# eval-mode BatchNorm


def batch_norm_case(rng, label, shape, dtype=np.float32, eps=1e-5, var=None) -> Case:
    C = shape[1]
    x = random(rng, shape, dtype, 2.0) + 1.0
    mean = random(rng, (C,), dtype, 0.5)
    var = positive(rng, (C,), dtype) if var is None else np.asarray(var, dtype)
    return Case(f"{label}, eps {eps:g}, {np.dtype(dtype).name}",
                (x, mean, var, positive(rng, (C,), dtype, 0.6, 1.4), random(rng, (C,), dtype, 0.3), eps))


def batch_norm_cases() -> list[Case]:
    rng = np.random.default_rng(1702)
    return [
        batch_norm_case(rng, "batch 2, 3 channels, 4×5", (2, 3, 4, 5)),
        batch_norm_case(rng, "one pixel per channel", (1, 4, 1, 1)),
        batch_norm_case(rng, "a channel of variance 0", (2, 3, 3, 3), eps=1e-3, var=[0.0, 0.5, 2.0]),
        batch_norm_case(rng, "small variances", (2, 2, 3, 4), np.float64, var=[1e-4, 3e-4]),
    ]


def per_channel(v):  # [C] -> [1, C, 1, 1]
    return v.reshape(1, -1, 1, 1)


def batch_statistics(x, running_mean, running_var, weight, bias, eps):
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    return (x - per_channel(mean)) / np.sqrt(per_channel(var) + eps) * per_channel(weight) + per_channel(bias)


def no_square_root(x, running_mean, running_var, weight, bias, eps):
    return (x - per_channel(running_mean)) / per_channel(running_var + eps) * per_channel(weight) + per_channel(bias)


def eps_outside_root(x, running_mean, running_var, weight, bias, eps):
    scale = np.sqrt(per_channel(running_var)) + x.dtype.type(eps)
    return (x - per_channel(running_mean)) / scale * per_channel(weight) + per_channel(bias)


def affine_swapped(x, running_mean, running_var, weight, bias, eps):
    return layers.batch_norm(x, running_mean, running_var, bias, weight, eps)


def mean_not_subtracted(x, running_mean, running_var, weight, bias, eps):
    return x / np.sqrt(per_channel(running_var) + eps) * per_channel(weight) + per_channel(bias)


BATCH_NORM = Exercise(
    name="batch_norm",
    signature="batch_norm(x, running_mean, running_var, weight, bias, eps)  # [B, C, H, W] -> [B, C, H, W]",
    summary="eval-mode BatchNorm: (x − μ) / √(σ² + ε) · γ + β with the running statistics",
    reference=layers.batch_norm,
    cases=batch_norm_cases,
    mistakes=(
        Mistake("batch statistics", "you normalised with the batch's own mean and variance (training mode); at inference "
                "BatchNorm uses running_mean and running_var.", batch_statistics),
        Mistake("no square root", "you divided by var + eps; divide by its square root, √(var + eps).", no_square_root),
        Mistake("eps outside the root", "eps is added outside the square root, √var + eps; it belongs inside, "
                "√(var + eps) (see the channel of variance 0).", eps_outside_root),
        Mistake("weight and bias swapped", "weight (γ) and bias (β) are swapped: γ multiplies, β is added.",
                affine_swapped),
        Mistake("mean not subtracted", "the running mean is not subtracted: (x − running_mean) / √(var + eps).",
                mean_not_subtracted),
    ),
)

# ---------------------------------------------------------------------------------------------
# folding a BatchNorm into the convolution before it


def fold_case(rng, label, w_shape, dtype=np.float32) -> Case:
    OC = w_shape[0]
    var, gamma = positive(rng, (OC,), np.float64), positive(rng, (OC,), np.float64, 0.6, 1.4)
    mean, beta = rng.normal(0, 0.5, OC), rng.normal(0, 0.3, OC)
    alpha, shift = layers.batch_norm_affine(mean, var, gamma, beta, 1e-5)
    return Case(f"{label}, {np.dtype(dtype).name}", (random(rng, w_shape, dtype, 0.3), random(rng, (OC,), dtype, 0.5),
                                                     alpha.astype(dtype), shift.astype(dtype)))


def fold_cases() -> list[Case]:
    rng = np.random.default_rng(1703)
    return [
        fold_case(rng, "3×3 conv, 4 out and 3 in channels", (4, 3, 3, 3)),
        fold_case(rng, "depthwise 3×3, 6 channels", (6, 1, 3, 3)),
        fold_case(rng, "1×1 conv, 5 channels", (5, 5, 1, 1), np.float64),
    ]


def bias_not_scaled(conv_weight, conv_bias, alpha, shift):
    return conv_weight * alpha[:, None, None, None], conv_bias + shift


def conv_bias_dropped(conv_weight, conv_bias, alpha, shift):
    return conv_weight * alpha[:, None, None, None], shift.copy()


def weight_not_scaled(conv_weight, conv_bias, alpha, shift):
    return conv_weight.copy(), conv_bias * alpha + shift


def shift_scaled(conv_weight, conv_bias, alpha, shift):
    return conv_weight * alpha[:, None, None, None], (conv_bias + shift) * alpha


FOLD_AFTER = Exercise(
    name="fold_after",
    signature="fold_after(conv_weight, conv_bias, alpha, shift)  # [OC, IC/g, KH, KW], [OC], [OC], [OC] -> (weight, bias)",
    summary="fold conv → BN into one conv: W′ = α·W per output channel, b′ = α·b + β′",
    reference=fuse.fold_after,
    cases=fold_cases,
    outputs=("weight", "bias"),
    mistakes=(
        Mistake("bias not scaled", "the conv bias is not scaled: BN(W∗x + b) = α·(W∗x) + α·b + β′, so b′ = α·b + β′.",
                bias_not_scaled),
        Mistake("conv bias dropped", "the convolution's own bias is dropped: b′ = α·b + β′, not β′.", conv_bias_dropped),
        Mistake("weight not scaled", "the weight is not scaled: each output channel o of W is multiplied by α[o].",
                weight_not_scaled),
        Mistake("shift scaled", "β′ is scaled by α too: β′ = β − μ·α already has α in it, so b′ = α·b + β′, not "
                "α·(b + β′).", shift_scaled),
    ),
)
