"""Exercises on the pooling token mixer, erf, the exact GELU and LayerNorm."""

from __future__ import annotations

import math

import numpy as np

from .. import layers
from ..erf import erf, gelu, gelu_tanh
from .spec import Case, Exercise, Mistake, positive, random

# ---------------------------------------------------------------------------------------------
# the pooling token mixer


def pool_cases() -> list[Case]:
    rng = np.random.default_rng(1704)

    def case(label, shape, k=3, dtype=np.float32):
        return Case(f"{label}, {np.dtype(dtype).name}", (random(rng, shape, dtype) + 1.0, k))

    return [
        case("3×3 window, odd sides 5×7, batch 2", (2, 3, 5, 7)),
        case("a single row, 1×6", (1, 2, 1, 6)),
        case("a 2×2 image", (1, 1, 2, 2)),
        case("5×5 window, 6×7", (1, 2, 6, 7), k=5),
        case("3×3 window, 4×3, batch 2", (2, 2, 4, 3), dtype=np.float64),
    ]


def include_pad(x, kernel_size=3):
    """count_include_pad=True: the window sum divided by k² everywhere."""
    H, W = x.shape[2:]
    counts = np.outer(layers.valid_count(H, kernel_size), layers.valid_count(W, kernel_size)).astype(x.dtype)
    return layers.avg_pool2d(x, kernel_size) * (counts / kernel_size**2) - x


def pool_alone(x, kernel_size=3):
    return layers.avg_pool2d(x, kernel_size)


def sign_flipped(x, kernel_size=3):
    return x - layers.avg_pool2d(x, kernel_size)


def always_3x3(x, kernel_size=3):
    return layers.pool_mixer(x, 3)


POOL_MIXER = Exercise(
    name="pool_mixer",
    signature="pool_mixer(x, kernel_size=3)  # [B, C, H, W] -> [B, C, H, W]",
    summary="EfficientFormer's token mixer avgpool(x) − x, stride 1, padding k//2, count_include_pad=False",
    reference=layers.pool_mixer,
    cases=pool_cases,
    mistakes=(
        Mistake("count_include_pad", "your border divides by the full window, k² (9 for 3×3): that is "
                "count_include_pad=True. EfficientFormer averages only the real pixels under the window "
                "(4 at a corner, 6 on an edge for 3×3).", include_pad),
        Mistake("x not subtracted", "this is the average pooling alone: the mixer is avgpool(x) − x (the block adds x "
                "back).", pool_alone),
        Mistake("sign flipped", "the sign is flipped: x − avgpool(x); the mixer is avgpool(x) − x.", sign_flipped),
        Mistake("kernel_size ignored", "kernel_size is ignored (always 3×3): use the argument, the window is "
                "kernel_size × kernel_size with padding kernel_size // 2.", always_3x3),
    ),
)

# ---------------------------------------------------------------------------------------------
# erf


def grid(lo, hi, n, dtype):
    return np.linspace(lo, hi, n).astype(dtype)


def erf_cases() -> list[Case]:
    rng = np.random.default_rng(1705)
    special = np.array([0.0, 1e-30, -1e-30, 0.5, -0.5, 3.0, -3.0, 10.0, -10.0, 30.0, -30.0])
    return [
        Case("1001 points over [−5, 5], float32", (grid(-5, 5, 1001, np.float32),)),
        Case("1201 points over [−6, 6], float64", (grid(-6, 6, 1201, np.float64),)),
        Case("a [3, 4, 5] array, float32", (random(rng, (3, 4, 5), np.float32, 2.0),)),
        Case("0, ±1e-30, ±0.5, ±3, ±10, ±30, float64", (special,)),
    ]


def normal_cdf(x):
    return (0.5 * (1 + erf(x / x.dtype.type(math.sqrt(2))))).astype(x.dtype)


def even_erf(x):
    return erf(np.abs(x))


def erf_of_scaled(x):
    return erf(x / x.dtype.type(math.sqrt(2)))


ERF_TOLERANCE = {"float32": (1e-6, 0.0), "float64": (1e-6, 0.0)}  # Abramowitz & Stegun 7.1.26 is within 1.5e-7

ERF = Exercise(
    name="erf",
    signature="erf(x)  # [...] -> [...], the same dtype",
    summary="the error function from a polynomial approximation (within 1e-6)",
    reference=erf,
    cases=erf_cases,
    tolerance=ERF_TOLERANCE,
    mistakes=(
        Mistake("normal CDF", "this is the normal CDF Φ(x) = ½·(1 + erf(x/√2)), not erf(x).", normal_cdf),
        Mistake("not odd", "right for x ≥ 0 but not below: erf is odd, erf(−x) = −erf(x) (the Abramowitz–Stegun "
                "formula holds for x ≥ 0 only; apply it to |x| and put the sign back).", even_erf),
        Mistake("erf of x/√2", "this is erf(x/√2), the argument GELU passes to erf, not erf(x).", erf_of_scaled),
    ),
)

# ---------------------------------------------------------------------------------------------
# the exact GELU


def gelu_cases() -> list[Case]:
    rng = np.random.default_rng(1706)
    return [
        Case("1201 points over [−6, 6], float32", (grid(-6, 6, 1201, np.float32),)),
        Case("1201 points over [−6, 6], float64", (grid(-6, 6, 1201, np.float64),)),
        Case("a [2, 3, 4, 5] feature map, float32", (random(rng, (2, 3, 4, 5), np.float32, 3.0),)),
        Case("±20 and 0, float32", (np.array([-20.0, -8.0, 0.0, 8.0, 20.0], np.float32),)),
    ]


def sigmoid_gelu(x):
    return (x / (1 + np.exp(-1.702 * x.astype(np.float64)))).astype(x.dtype)


def gelu_erf_of_x(x):
    return (0.5 * x * (1 + erf(x))).astype(x.dtype)


def cdf_only(x):
    return normal_cdf(x)


GELU_TOLERANCE = {"float32": (1e-6, 1e-6), "float64": (1e-6, 1e-6)}  # an erf within 1e-6 is good enough

GELU = Exercise(
    name="gelu",
    signature="gelu(x)  # [...] -> [...], the same dtype",
    summary="the exact GELU x·Φ(x) = ½·x·(1 + erf(x/√2)) from an erf",
    reference=gelu,
    cases=gelu_cases,
    tolerance=GELU_TOLERANCE,
    mistakes=(
        Mistake("tanh approximation", "this is the tanh approximation of GELU, ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), "
                "up to 5e-4 off; EfficientFormer uses the exact GELU, ½·x·(1 + erf(x/√2)).", gelu_tanh),
        Mistake("sigmoid approximation", "this is the sigmoid approximation x·σ(1.702·x); the exact GELU is "
                "½·x·(1 + erf(x/√2)).", sigmoid_gelu),
        Mistake("erf of x", "erf's argument must be x/√2, not x: Φ(x) = ½·(1 + erf(x/√2)).", gelu_erf_of_x),
        Mistake("Φ without x", "this is Φ(x), the normal CDF, alone; GELU is x·Φ(x).", cdf_only),
        Mistake("ReLU", "this is ReLU, max(x, 0); GELU is smooth: x·Φ(x).", layers.relu),
    ),
)

# ---------------------------------------------------------------------------------------------
# LayerNorm


def layer_norm_case(rng, label, shape, eps, dtype=np.float32, scale=1.0) -> Case:
    C = shape[-1]
    return Case(f"{label}, eps {eps:g}, {np.dtype(dtype).name}",
                (random(rng, shape, dtype, scale), positive(rng, (C,), dtype, 0.6, 1.4), random(rng, (C,), dtype, 0.2),
                 eps))


def layer_norm_cases() -> list[Case]:
    rng = np.random.default_rng(1707)
    return [
        layer_norm_case(rng, "tokens [2, 5, 8]", (2, 5, 8), 1e-12),
        layer_norm_case(rng, "a [3, 16] matrix", (3, 16), 1e-12, np.float64),
        layer_norm_case(rng, "small values (std 1e-3)", (1, 4, 6), 1e-12, scale=1e-3),
        layer_norm_case(rng, "a large eps", (2, 3, 4), 0.1),
        layer_norm_case(rng, "a [1, 2, 3, 5] array", (1, 2, 3, 5), 1e-6, np.float64),
    ]


def normalise(x, weight, bias, eps, axis=-1, ddof=0, eps_inside=True):
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof)
    scale = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + x.dtype.type(eps)
    return ((x - mean) / scale * weight + bias).astype(x.dtype)


def unbiased_variance(x, weight, bias, eps):
    return normalise(x, weight, bias, eps, ddof=1)


def tokens_axis(x, weight, bias, eps):
    return normalise(x, weight, bias, eps, axis=-2)


def default_eps(x, weight, bias, eps):
    return normalise(x, weight, bias, 1e-5)


def eps_outside(x, weight, bias, eps):
    return normalise(x, weight, bias, eps, eps_inside=False)


LAYER_NORM = Exercise(
    name="layer_norm",
    signature="layer_norm(x, weight, bias, eps)  # [..., C] -> [..., C]",
    summary="LayerNorm over the last axis with the biased variance, as torch.nn.LayerNorm",
    reference=layers.layer_norm,
    cases=layer_norm_cases,
    mistakes=(
        Mistake("unbiased variance", "you used the unbiased variance (dividing by C − 1, as torch.var and "
                "np.var(ddof=1) do); LayerNorm divides by C.", unbiased_variance),
        Mistake("wrong axis", "you normalised over the tokens (axis −2) instead of the channels (the last axis).",
                tokens_axis),
        Mistake("eps 1e-5", "you used eps = 1e-5 (PyTorch's default) instead of the eps passed in (EfficientFormer's "
                "is 1e-12): see the case with small values.", default_eps),
        Mistake("eps outside the root", "eps is added outside the square root, √var + eps; it belongs inside, "
                "√(var + eps) (see the case with a large eps).", eps_outside),
    ),
)
