"""Resampling to any size, as torch's F.interpolate does it (bilinear, bicubic; align_corners=False;
antialias off or on): what preprocessing and the "pairwise" attention-bias resize use, not a layer
of the network.

Both modes are separable, so a resize is one small weight matrix per axis: out = Wy · x · Wxᵀ.
Read the loop twin first (`interpolate_naive`: every weight straight from its formula, in
float64); then `interpolate`, whose weight helpers reproduce torch's float32 roundings step by step
so that its float32 weights equal torch's bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError

INTERPOLATION_MODES = ("bilinear", "bicubic")
CUBIC_A = -0.75  # Keys' cubic kernel parameter of torch's plain bicubic (as OpenCV)
CUBIC_A_ANTIALIAS = -0.5  # ... of torch's antialiased bicubic (as PIL)


# ---------------------------------------------------------------------------------------------
# the formulas, as loops


def interpolate_naive(x, size, mode="bilinear", antialias=False):  # [..., H, W] -> [..., OH, OW]
    """Loop twin of `interpolate`: every output pixel summed over its row taps and column taps.

    Each weight comes straight from the formula in float64 (`resampling_taps_naive`). Without
    torch's float32 roundings, in float32 it misses torch by up to 1e-4 on non-dyadic ratios
    (224 → 97): that is the gap `interpolate`'s roundings close. Same parameters and result as
    `interpolate`.
    """
    x, (OH, OW) = check_interpolation(x, size, mode, antialias, "interpolate_naive")
    H, W = x.shape[-2:]
    row_taps = [resampling_taps_naive(H, OH, oy, mode, antialias) for oy in range(OH)]
    col_taps = [resampling_taps_naive(W, OW, ox, mode, antialias) for ox in range(OW)]
    x64 = x.astype(np.float64)
    out = np.zeros(x.shape[:-2] + (OH, OW))
    for oy in range(OH):
        for ox in range(OW):
            for iy, wy in row_taps[oy]:
                for ix, wx in col_taps[ox]:
                    out[..., oy, ox] += wy * wx * x64[..., iy, ix]
    return out.astype(x.dtype)


def resampling_taps_naive(in_size, out_size, o, mode, antialias):  # -> [(input index, weight), ...]
    """The input pixels output index o reads along one axis, and their weights, from the formulas.

    Plain: src = s·(o + ½) − ½ (s = in/out); the taps j around src (⌊src⌋, ⌊src⌋+1 for bilinear,
    ⌊src⌋−1 … ⌊src⌋+2 for bicubic) weigh kernel(src − j), the triangle or Keys' cubic with
    a = −0.75, and read pixel j clamped into the image. Antialias: the pixels j whose centres lie
    within support = (1 or 2)·max(s, 1) of c = s·(o + ½) weigh filter((j + ½ − c)/max(s, 1))
    (cubic a = −0.5), normalised to sum 1.
    """
    s = in_size / out_size
    if antialias:
        stretch = max(s, 1.0)
        support = (1.0 if mode == "bilinear" else 2.0) * stretch
        centre = s * (o + 0.5)
        first, stop = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        taps = [(j, _filter_naive((j + 0.5 - centre) / stretch, mode, CUBIC_A_ANTIALIAS)) for j in range(first, stop)]
        total = sum(w for _, w in taps)
        return [(j, w / total) for j, w in taps]
    src = s * (o + 0.5) - 0.5
    base = math.floor(src)
    offsets = (0, 1) if mode == "bilinear" else (-1, 0, 1, 2)
    return [(min(max(base + k, 0), in_size - 1), _filter_naive(src - (base + k), mode, CUBIC_A)) for k in offsets]


def _filter_naive(x, mode, a):  # distance -> weight
    """The triangle max(0, 1 − |x|) (bilinear) or Keys' cubic kernel with parameter a (bicubic)."""
    x = abs(x)
    if mode == "bilinear":
        return max(0.0, 1.0 - x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0

# ---------------------------------------------------------------------------------------------
# torch-exact: the same weights with torch's roundings, one matrix per axis


def rounding(dtype):  # -> function: float64 array -> float64 array
    """The weight helpers below compute in float64 and call this where torch's kernel rounds to
    the input's dtype: a round trip through float32 for float32 inputs, nothing for float64.

    Note: torch's compiled CPU kernels fuse some multiply-adds (one FMA, one rounding); an
    expression inside one `rnd(...)` below is such a fused step: float32 operands, computed in
    float64 (exactly, for the coordinates) and rounded once. Which steps torch fuses was
    measured (torch 2.13.0 CPU wheel, AVX2 and AVX512 kernels alike): with these roundings the
    float32 weights equal torch's bit for bit. torch's DEFAULT kernels (CPUs without AVX2) fuse
    nothing and differ by up to 1e-5. In float64 the fused steps round twice here (weights
    ≤ 2e-14 from torch's)."""
    if np.dtype(dtype) == np.float32:
        return lambda v: np.asarray(v, np.float64).astype(np.float32).astype(np.float64)
    return lambda v: np.asarray(v, np.float64)


def source_coordinate(in_size, out_size, dtype):  # -> [out_size] float64 (values of dtype)
    """Where output index o samples the input along one axis (align_corners=False):
    src = s·(o + ½) − ½ with s = in/out, both in the input's dtype, s·(o + ½) − ½ fused (see
    `rounding`). How much this matters in float32 (49 → 70, 196 → 256, 224 → 97, max |Δ| from
    torch's output): 4.8e-7 so, 4.6e-5 rounding the product before subtracting ½, 9.8e-5 with
    float64 coordinates."""
    rnd = rounding(dtype)
    scale = rnd(np.float64(in_size) / out_size)
    return rnd(scale * (np.arange(out_size) + 0.5) - 0.5)


def floor_and_fraction(src, in_size, dtype):  # [out] -> ([out] int64, [out] float64)
    """torch's split of a source coordinate: i = min(⌊src⌋, in − 1), the floor taken in float32
    whatever the dtype (torch calls floorf), and λ = src − i in dtype (it rounds when src < 0),
    clamped to [0, 1]."""
    i = np.minimum(np.floor(src.astype(np.float32)), in_size - 1).astype(np.int64)
    return i, np.clip(rounding(dtype)(src - i), 0.0, 1.0)


def cubic_kernel(x, a, dtype=np.float64, fused_last=False):  # [...] -> [...]
    """Keys' cubic convolution kernel at distance x:
    (a+2)|x|³ − (a+3)|x|² + 1 for |x| ≤ 1, a|x|³ − 5a|x|² + 8a|x| − 4a for 1 < |x| < 2, else 0,
    in torch's Horner form and roundings (`rounding`). torch's plain bicubic rounds the last
    product before the last addition; its antialias filter fuses that step too (`fused_last`)."""
    rnd = rounding(dtype)
    x = np.abs(x)
    near = rnd(rnd((a + 2) * x - (a + 3)) * x)  # ((a+2)|x| − (a+3))·|x|, then ·|x| + 1
    far = rnd(rnd(a * x - 5 * a) * x + 8 * a)  # ((a|x| − 5a)·|x| + 8a), then ·|x| − 4a
    if fused_last:
        near, far = rnd(near * x + 1), rnd(far * x - 4 * a)
    else:
        near, far = rnd(rnd(near * x) + 1), rnd(rnd(far * x) - 4 * a)
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def linear_taps(in_size, out_size, dtype):  # -> ([out, 2] int64, [out, 2] float64)
    """Bilinear along one axis, antialias off: src clamped to ≥ 0, i = ⌊src⌋, λ = src − i;
    out[o] = (1 − λ)·in[i] + λ·in[min(i + 1, in − 1)]."""
    rnd = rounding(dtype)
    i, lam = floor_and_fraction(np.maximum(source_coordinate(in_size, out_size, dtype), 0.0), in_size, dtype)
    return np.stack([i, np.minimum(i + 1, in_size - 1)], 1), np.stack([rnd(1 - lam), lam], 1)


def cubic_taps(in_size, out_size, dtype):  # -> ([out, 4] int64, [out, 4] float64)
    """Bicubic along one axis, antialias off: src not clamped, i = ⌊src⌋, t = src − i; taps
    i−1 … i+2 with indices clamped to [0, in − 1] (the edge pixel repeats), weighted by the
    cubic kernel (a = −0.75) at their distances t+1, t, 1−t, 2−t from src."""
    rnd = rounding(dtype)
    i, t = floor_and_fraction(source_coordinate(in_size, out_size, dtype), in_size, dtype)
    s = rnd(1 - t)
    index = np.clip(i[:, None] + np.arange(-1, 3), 0, in_size - 1)  # [out, 4]
    distance = np.stack([rnd(t + 1), t, s, rnd(s + 1)], 1)  # [out, 4]
    return index, cubic_kernel(distance, CUBIC_A, dtype)


def antialias_taps(in_size, out_size, mode, dtype):  # -> ([out, K] int64, [out, K] float64)
    """Antialiased resampling along one axis (torch's `_upsample_*_aa`, as PIL): output o is a
    normalised sum over the input pixels j whose centres lie within `support` of its centre
    c = s·(o + ½), weighted by the filter at (j + ½ − c)/max(s, 1): the triangle 1 − |x|
    (bilinear) or the cubic kernel with a = −0.5 (bicubic). support = 1 or 2, times s when
    downsampling (s > 1): the filter widens so that every input pixel counts. Unlike the plain
    modes, taps outside the image are dropped and the rest renormalised; the edge never repeats.
    K = 2⌈support⌉ + 1 taps per output, unused ones with weight 0."""
    rnd = rounding(dtype)
    scale = rnd(np.float64(in_size) / out_size)
    half_width = 1.0 if mode == "bilinear" else 2.0
    support = rnd(half_width * scale) if scale >= 1 else half_width
    inv_scale = rnd(1 / scale) if scale >= 1 else 1.0
    K = int(np.ceil(support)) * 2 + 1
    centre = rnd(scale * (np.arange(out_size) + 0.5))  # [out]
    # the window [first, stop) of input pixels within support of the centre, clipped to the image
    first = np.maximum(np.floor(rnd(centre - support) + 0.5), 0).astype(np.int64)  # [out]
    stop = np.minimum(np.floor(rnd(centre + support) + 0.5).astype(np.int64), in_size)  # [out]
    j = first[:, None] + np.arange(K)  # [out, K] input pixels
    x = rnd((rnd(j - centre[:, None]) + 0.5) * inv_scale)  # [out, K] filter arguments
    if mode == "bilinear":
        w = np.where(np.abs(x) < 1, rnd(1 - np.abs(x)), 0.0)
    else:
        w = cubic_kernel(x, CUBIC_A_ANTIALIAS, dtype, fused_last=True)
    w = np.where(j < np.minimum(stop, first + K)[:, None], w, 0.0)  # taps past the window weigh 0
    total = np.zeros(out_size)
    for k in range(K):  # torch adds the taps up one by one, in dtype
        total = rnd(total + w[:, k])
    w = np.divide(w, total[:, None], out=w, where=total[:, None] != 0)
    return np.minimum(j, in_size - 1), rnd(w)


def resampling_weights(in_size, out_size, mode="bilinear", antialias=False, dtype=np.float32):  # -> [out, in]
    """The matrix M that resamples one axis as torch's F.interpolate does: out = M @ in.

    Each row holds the weights of one output index: 2 (bilinear) or 4 (bicubic) taps, or up to
    2⌈support⌉ + 1 with antialias (`linear_taps`, `cubic_taps`, `antialias_taps`). Taps clamped
    onto the same edge pixel add up, one by one in dtype, as torch's sum does. Equal sizes give
    the identity (torch copies). In float32 the matrix equals torch's weights bit for bit.

    Parameters
    ----------
    in_size : int
        The input axis' length.
    out_size : int
        The output axis' length.
    mode : str, default "bilinear"
        "bilinear" or "bicubic".
    antialias : bool, default False
        torch's antialias filter (it widens the support by the ratio when downsampling).
    dtype : numpy dtype, default np.float32
        The matrix's dtype.

    Returns
    -------
    ndarray of shape [out_size, in_size]
        M.
    """
    if in_size == out_size:
        return np.eye(out_size, dtype=dtype)
    if antialias:
        index, weight = antialias_taps(in_size, out_size, mode, dtype)
    elif mode == "bilinear":
        index, weight = linear_taps(in_size, out_size, dtype)
    else:
        index, weight = cubic_taps(in_size, out_size, dtype)
    M = np.zeros((out_size, in_size), dtype=dtype)
    rows = np.arange(out_size)
    for k in range(index.shape[1]):  # tap by tap, in torch's order
        np.add.at(M, (rows, index[:, k]), weight[:, k].astype(dtype))
    return M


def interpolate(x, size, mode="bilinear", antialias=False):  # [..., H, W] -> [..., OH, OW]
    """Resample the last two axes as torch.nn.functional.interpolate(x, size, mode, align_corners=False, antialias).

    Upsampling or downsampling by any ratio, in x's dtype (float32 or float64). Both modes are
    separable: out = Wy · x · Wxᵀ with one `resampling_weights` matrix per axis, columns first
    (torch's order). Measured against torch 2.13.0: ≤ 1e-6 in float32 (float32 weights
    bit-identical; what remains is summation order) and ≤ 1e-13 in float64
    (tests/test_interpolate.py).

    torch's antialias path gives every output row the weights of row 0 when the output is one
    column wide and the height changes (OW = 1, H ≠ OH); npformer keeps the formula there.

    Parameters
    ----------
    x : ndarray of shape [..., H, W]
        float32 or float64 values, H, W ≥ 1 (e.g. [C, H, W] or [B, C, H, W]).
    size : int or tuple of int
        (OH, OW), or one int for both.
    mode : str, default "bilinear"
        "bilinear" or "bicubic" (Keys' cubic, a = −0.75; −0.5 with antialias).
    antialias : bool, default False
        torch's antialias filter: the support widens by the ratio when downsampling and taps
        beyond the edge are dropped rather than repeated.

    Returns
    -------
    ndarray of shape [..., OH, OW]
        In x's dtype.

    Raises
    ------
    InputError
        An unknown mode, a non-bool antialias, a size that is not a positive int or pair, an
        array with fewer than two axes or an empty one, a dtype other than float32/float64.
    """
    x, (OH, OW) = check_interpolation(x, size, mode, antialias, "interpolate")
    H, W = x.shape[-2:]
    rows = resampling_weights(H, OH, mode, antialias, x.dtype)  # [OH, H]
    cols = resampling_weights(W, OW, mode, antialias, x.dtype)  # [OW, W]
    return np.matmul(rows, np.matmul(x, cols.T))  # [..., H, W] -> [..., H, OW] -> [..., OH, OW]


def check_interpolation(x, size, mode, antialias, name):  # -> (x, (OH, OW))
    """An InputError naming what is wrong with the arguments of `interpolate`, else them, cleaned."""
    if not isinstance(mode, str) or mode not in INTERPOLATION_MODES:
        raise InputError(f"{name}: mode={mode!r} is not one of {', '.join(map(repr, INTERPOLATION_MODES))}")
    if not isinstance(antialias, (bool, np.bool_)):
        raise InputError(f"{name}: antialias must be True or False, got {antialias!r}")
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n > 0 for n in pair)):
        raise InputError(f"{name}: size must be a positive int or a pair (OH, OW) of positive ints, got {size!r}")
    x = np.asarray(x)
    if x.ndim < 2 or 0 in x.shape[-2:]:
        raise InputError(f"{name}: expected an array [..., H, W] with H, W ≥ 1 (e.g. [C, H, W] or "
                         f"[B, C, H, W]), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise InputError(f"{name}: expected float32 or float64 values, got {x.dtype}")
    return x, (int(pair[0]), int(pair[1]))
