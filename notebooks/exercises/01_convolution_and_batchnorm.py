# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises 01 — Convolution and BatchNorm
#
# EfficientFormer starts with two convolutions, each followed by BatchNorm, and every MLP in its
# first three stages is made of 1×1 convolutions and BatchNorms. Here you write both yourself.
#
# **What you'll do**
# - Write a 2-D convolution as nested loops, straight from its definition.
# - Write it again without the loops, so that it is fast enough to run a network on.
# - Write BatchNorm as it runs at inference, with the statistics saved at training time.
# - Fold a BatchNorm into the convolution before it, so that the two become one convolution.
#
# **What you'll learn**
# - Why PyTorch's "convolution" is a cross-correlation, and what `stride`, `padding` and `groups` do.
# - Why a 3×3 convolution is nine matrix products.
# - Why BatchNorm costs nothing at inference once it is folded away.
#
# **What you'll need**
# - numpy, and npformer installed (`pip install -e .` in the repository). No torch. About 20 minutes.
#
# **How the exercises work.** Each exercise is a function with a docstring and a body that says
# `# YOUR CODE HERE`. Replace `raise NotImplementedError()` with your code and run the cell after
# it. That cell calls `check`, which runs your function on several inputs (odd sizes, borders,
# batch > 1, float32 and float64) and compares it with npformer's own. It prints one line: `passed`,
# or what is wrong. When your output matches a mistake people often make, it names the mistake.
#
# Shapes use the letters of `npformer/layers.py`: `B` batch, `C` channels (`OC` out, `IC` in),
# `H×W` spatial size, `KH×KW` kernel size.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

from npformer.exercises import check

# %% [markdown]
# ## 1. Convolution as loops
#
# A convolution layer has a weight `[OC, IC, KH, KW]`: one `IC×KH×KW` filter per output channel.
# Each output value is the filter laid on the zero-padded input and summed:
#
# `out[b, o, y, x] = bias[o] + Σ_{c, i, j} weight[o, c, i, j] · x_pad[b, c, s·y + i, s·x + j]`
#
# where `x_pad` is the input with `padding` rows and columns of zeros on every side and `s` is the
# stride. The output is `OH = (H + 2·padding − KH) // stride + 1` high, and `OW` likewise.
#
# **Note:** there is no flip of the kernel. Signal-processing textbooks flip it and call the
# unflipped version a cross-correlation; PyTorch's `Conv2d`, and every checkpoint trained with it,
# uses the unflipped one.
#
# Write it with loops: over the batch, the output channels, the output rows and columns, and
# inside over the input channels and the kernel. `groups` is always 1 in this exercise. Create
# your arrays with `dtype=x.dtype`, so that float32 stays float32.

# %% nbgrader={"grade": false, "grade_id": "conv2d_naive", "locked": false, "schema_version": 3, "solution": true, "task": false}
def conv2d_naive(x, weight, bias=None, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """2-D convolution written as loops (groups is 1 here)."""
    ### BEGIN SOLUTION
    B, IC, H, W = x.shape
    OC, _, KH, KW = weight.shape
    OH, OW = (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1
    xp = np.zeros((B, IC, H + 2 * padding, W + 2 * padding), dtype=x.dtype)  # the zero-padded input
    xp[:, :, padding:padding + H, padding:padding + W] = x
    out = np.zeros((B, OC, OH, OW), dtype=x.dtype)
    for b in range(B):
        for o in range(OC):
            for y in range(OH):
                for xx in range(OW):
                    acc = 0.0
                    for c in range(IC):
                        for i in range(KH):
                            for j in range(KW):
                                acc += weight[o, c, i, j] * xp[b, c, stride * y + i, stride * xx + j]
                    out[b, o, y, xx] = acc if bias is None else acc + bias[o]
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_conv2d_naive", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("conv2d_naive", conv2d_naive)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Convolution without the loops
#
# Six nested loops in Python take about a second for one small feature map; a network has dozens.
# The trick: fix one kernel offset `(i, j)`. Every output pixel then reads the input at
# `(s·y + i, s·x + j)`, which is one strided slice of the padded input,
# `x_pad[:, :, i : i + s·(OH − 1) + 1 : s, j : j + s·(OW − 1) + 1 : s]`, of shape `[B, IC, OH, OW]`.
# Multiplying that slice by the `[OC, IC]` matrix `weight[:, :, i, j]` (a matmul over the channels,
# e.g. `np.einsum`) and adding up the `KH·KW` products gives the convolution: a 3×3 convolution is
# nine matrix products. (Stacking the nine slices into one matrix first is "im2col".)
#
# This time `groups` counts: the input channels are split into `groups` consecutive blocks of
# `IC / groups`, the output channels likewise, and output block `g` reads only input block `g`.
# The weight is then `[OC, IC / groups, KH, KW]`. With `groups = IC = OC` (depthwise), each output
# channel reads exactly one input channel; SwiftFormer and EfficientFormerV2 use those.
#
# The check also times your function: loops over every multiply-add fail it.

# %% nbgrader={"grade": false, "grade_id": "conv2d", "locked": false, "schema_version": 3, "solution": true, "task": false}
def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """2-D convolution as a sum over kernel offsets, with groups."""
    ### BEGIN SOLUTION
    B, IC, H, W = x.shape
    OC, ICg, KH, KW = weight.shape
    OH, OW = (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    xg = xp.reshape(B, groups, ICg, *xp.shape[2:])  # [B, g, IC/g, H + 2p, W + 2p]
    wg = weight.reshape(groups, OC // groups, ICg, KH, KW)  # [g, OC/g, IC/g, KH, KW]
    out = np.zeros((B, groups, OC // groups, OH, OW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            window = xg[..., i:i + stride * (OH - 1) + 1:stride, j:j + stride * (OW - 1) + 1:stride]  # [B, g, IC/g, OH, OW]
            out += np.einsum("goc,bgcyx->bgoyx", wg[..., i, j], window)
    out = out.reshape(B, OC, OH, OW)
    return out if bias is None else out + bias.reshape(1, OC, 1, 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_conv2d", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("conv2d", conv2d)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 3. BatchNorm at inference
#
# During training BatchNorm normalises each channel with the statistics of the current batch and
# keeps running averages of them. At inference it uses those saved averages instead, so it is a
# fixed affine map per channel `c`:
#
# `BN(x)[b, c, y, x] = (x[b, c, y, x] − running_mean[c]) / √(running_var[c] + eps) · weight[c] + bias[c]`
#
# (`weight` is the paper's γ and `bias` its β). The statistics are `[C]` vectors: reshape them to
# `[1, C, 1, 1]` so that they broadcast over the batch and the pixels.

# %% nbgrader={"grade": false, "grade_id": "batch_norm", "locked": false, "schema_version": 3, "solution": true, "task": false}
def batch_norm(x, running_mean, running_var, weight, bias, eps):  # [B, C, H, W] -> [B, C, H, W]
    """Eval-mode BatchNorm with the running statistics."""
    ### BEGIN SOLUTION
    C = x.shape[1]
    scale = weight / np.sqrt(running_var + eps)  # [C]
    return (x - running_mean.reshape(1, C, 1, 1)) * scale.reshape(1, C, 1, 1) + bias.reshape(1, C, 1, 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_batch_norm", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("batch_norm", batch_norm)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Folding BatchNorm into the convolution
#
# Write the BatchNorm as `BN(x) = α·x + β′` per channel, with `α = γ / √(var + eps)` and
# `β′ = β − mean·α` (`npformer.layers.batch_norm_affine` computes the pair). A convolution is
# linear, so a BatchNorm right after it can be moved into its weights:
#
# `BN(W∗x + b) = α·(W∗x) + α·b + β′ = (α·W)∗x + (α·b + β′)`
#
# where `α·W` scales output channel `o` of the weight by `α[o]`. One convolution with weight `W′`
# and bias `b′` now does the work of two layers; `model.fuse()` does this to every BatchNorm of a
# model (`npformer/fuse.py`). Return the folded weight and bias, in the dtype of the inputs.

# %% nbgrader={"grade": false, "grade_id": "fold_after", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fold_after(conv_weight, conv_bias, alpha, shift):  # [OC, IC/g, KH, KW], [OC], [OC], [OC] -> ([OC, IC/g, KH, KW], [OC])
    """The convolution equal to conv → BN, where BN(y) = alpha·y + shift per output channel."""
    ### BEGIN SOLUTION
    return conv_weight * alpha[:, None, None, None], alpha * conv_bias + shift
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_fold_after", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("fold_after", fold_after)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## What next
#
# Notebook 02 writes the pooling token mixer, the exact GELU and LayerNorm. To see your
# convolution at work on a real photograph, and three more ways to write it, read the teaching
# notebook `../01_layers_from_scratch.ipynb`.
