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
# # Exercises 02 — The pooling mixer, GELU and LayerNorm
#
# EfficientFormer's first three stages mix tokens without attention, with a 3×3 average pooling.
# Its MLPs use the exact GELU, and its attention blocks LayerNorm. Each of the three has a detail
# that ports often get wrong, and a golden-value test then fails.
#
# **What you'll do**
# - Write the pooling token mixer `avgpool(x) − x`, with the border handled as EfficientFormer does.
# - Write the error function erf from a polynomial approximation.
# - Build the exact GELU on your erf.
# - Write LayerNorm over the channels.
#
# **What you'll learn**
# - What `count_include_pad=False` means at the border, and why one flag moves every block's output.
# - How close an approximation must be before a test at 1e-4 stops seeing it.
# - Which variance LayerNorm uses, and where eps goes.
#
# **What you'll need**
# - numpy and npformer (`pip install -e .`). No torch. About 20 minutes.
#
# Each exercise: replace `raise NotImplementedError()` with your code, then run the `check` cell
# after it. It prints `passed`, or what is wrong; when your output matches a common mistake it
# names it.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import numpy as np

from npformer.exercises import check

# %% [markdown]
# ## 1. The pooling token mixer
#
# The mixer of a Meta4D block is `avgpool(x) − x`: a `k×k` average pooling (`k = 3` in every
# published model) with stride 1 and padding `k // 2`, so that the output has the input's size,
# minus the input itself. The block then adds `x` back.
#
# The detail is the border. EfficientFormer's pooling has **`count_include_pad=False`**: each
# output is the mean of the *real* pixels under the window, so a 3×3 window averages 4 pixels at a
# corner, 6 on an edge and 9 inside. The padding zeros are not counted.
#
# A way to write it without loops over pixels: sum the `k·k` shifted copies of the zero-padded
# input; count, the same way, how many real pixels each window covers (shift a padded array of
# ones); divide.

# %% nbgrader={"grade": false, "grade_id": "pool_mixer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def pool_mixer(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """avgpool(x) − x: stride 1, padding kernel_size // 2, averaging only the real pixels."""
    ### BEGIN SOLUTION
    B, C, H, W = x.shape
    k, p = kernel_size, kernel_size // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # [B, C, H + 2p, W + 2p]
    real = np.pad(np.ones((H, W), dtype=x.dtype), p)  # 1 on a pixel, 0 on the padding
    total, count = np.zeros_like(x), np.zeros((H, W), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            total += xp[:, :, i:i + H, j:j + W]
            count += real[i:i + H, j:j + W]
    return total / count - x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_pool_mixer", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("pool_mixer", pool_mixer)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 2. erf
#
# NumPy has no vectorised error function `erf(x) = 2/√π · ∫₀ˣ exp(−t²) dt` (`math.erf` takes one
# number at a time). Abramowitz and Stegun's formula 7.1.26 approximates it for `x ≥ 0` to within
# 1.5e-7:
#
# `erf(x) ≈ 1 − (a₁t + a₂t² + a₃t³ + a₄t⁴ + a₅t⁵)·exp(−x²)`, with `t = 1 / (1 + p·x)`,
#
# `p = 0.3275911`, `a₁ = 0.254829592`, `a₂ = −0.284496736`, `a₃ = 1.421413741`,
# `a₄ = −1.453152027`, `a₅ = 1.061405429`.
#
# For negative `x` use that erf is odd: `erf(−x) = −erf(x)`. The check accepts any erf within
# 1e-6. Return the input's dtype (compute in float64 if you like, then `.astype(x.dtype)`).
#
# **Note:** npformer's own `npformer/erf.py` uses longer fits: about one unit in the last place in
# float32, and fdlibm's rational approximations in float64.

# %% nbgrader={"grade": false, "grade_id": "erf", "locked": false, "schema_version": 3, "solution": true, "task": false}
def erf(x):  # [...] -> [...], the same dtype
    """The error function, from Abramowitz & Stegun 7.1.26 (within 1.5e-7)."""
    ### BEGIN SOLUTION
    a1, a2, a3, a4, a5, p = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429, 0.3275911
    ax = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + p * ax)
    poly = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t
    return (np.sign(x) * (1.0 - poly * np.exp(-ax * ax))).astype(x.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_erf", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("erf", erf)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The exact GELU
#
# GELU weights its input by the probability that a standard normal variable lies below it:
# `gelu(x) = x·Φ(x)`, where `Φ(x) = ½·(1 + erf(x/√2))` is the normal CDF. Use your `erf`.
#
# Many frameworks also offer a cheaper tanh approximation, sometimes by default. It is up to 5e-4
# away from the exact GELU, which a golden-value test at 1e-4 sees (notebook
# `../04_golden_oracle.ipynb` catches it). EfficientFormer was trained with the exact one.

# %% nbgrader={"grade": false, "grade_id": "gelu", "locked": false, "schema_version": 3, "solution": true, "task": false}
def gelu(x):  # [...] -> [...], the same dtype
    """The exact GELU, x·Φ(x) = ½·x·(1 + erf(x/√2)), built on your erf."""
    ### BEGIN SOLUTION
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_gelu", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("gelu", gelu)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 4. LayerNorm
#
# LayerNorm normalises each token over its channels (the last axis), then scales and shifts per
# channel:
#
# `LN(x) = (x − mean) / √(var + eps) · weight + bias`, mean and var over the last axis.
#
# The variance is the biased one (divide by `C`, not `C − 1`), as `torch.nn.LayerNorm` computes
# it. Use the `eps` you are given: EfficientFormer's transformers config says 1e-12, PyTorch's
# default is 1e-5, and in float64 the difference shows.

# %% nbgrader={"grade": false, "grade_id": "layer_norm", "locked": false, "schema_version": 3, "solution": true, "task": false}
def layer_norm(x, weight, bias, eps):  # [..., C] -> [..., C]
    """LayerNorm over the last axis with the biased variance."""
    ### BEGIN SOLUTION
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_layer_norm", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("layer_norm", layer_norm)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## What next
#
# Notebook 03 writes attention: EfficientFormer's multi-head attention with its learned bias,
# SwiftFormer's additive attention and EfficientFormerV2's talking heads. The teaching notebook
# `../01_layers_from_scratch.ipynb` draws what `count_include_pad=True` does to a photograph.
