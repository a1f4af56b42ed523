"""The error function erf, and the GELU activations built on it, in pure NumPy.

Why: EfficientFormer's MLPs use the *exact* GELU, ``gelu(x) = x * Phi(x)`` where
``Phi(x) = 0.5 * (1 + erf(x / sqrt(2)))`` is the standard normal CDF. NumPy has no erf
(``math.erf`` is scalar-only and SciPy is not a run-time dependency), so it is built here
from rational/polynomial approximations, the way C math libraries do it.

How, per dtype (the float32 path never touches float64):

* float64 -- the piecewise rational approximations of Sun's fdlibm ``s_erf.c`` (1993; the
  code FreeBSD msun, glibc and Bionic ship): ``x + x*P(x^2)/Q(x^2)`` near 0,
  ``erx + P(s)/Q(s)`` around 1, ``1 - exp(-x^2 - 0.5625 + R(1/x^2)/S(1/x^2))/|x|`` in the
  tail, exactly +-1 beyond |x| = 6. Measured max error vs mpmath (550k points over
  [-7, 7] plus region edges): 1.1e-16 absolute, 2.2e-16 relative, i.e. <= 1 ulp, like libm.
* float32 -- two short polynomials fitted for this module (minimax, rounded to float32):
  ``x + x*A(x^2)`` for |x| < 0.9 and ``1 - exp(B(|x|))`` for 0.9 <= |x| <= 4, where B
  approximates log(erfc); beyond 4 erf is exactly +-1 in float32. Measured over *every*
  float32 input: max error 8.6e-8 absolute (1.45 ulp), 1.04e-7 relative (normal results).
  The stated (tested) bound is 1.2e-7 absolute, leaving room for float32 ``np.exp``
  implementations that differ between CPUs.
* other dtypes: bool/integers are computed as float64 (as NumPy ufuncs do), float16 via
  the float32 path; complex and longdouble raise TypeError.

``gelu`` is the exact GELU. In float64 it is built on the erf above; in float32 it reads
Phi(x) = 0.5 * (1 + erf(x / sqrt(2))) from a table (1/1024 steps, linear interpolation),
which is as accurate as the float32 polynomial and 1.7x faster (see ``_gelu_f32``).
``gelu_tanh`` is the tanh approximation, kept only for teaching and for Hugging Face
configs that ask for it by name.
"""

from __future__ import annotations

import numpy as np

from . import kernels

__all__ = ["erf", "gelu", "gelu_tanh"]


def _horner(t: np.ndarray, coeffs) -> np.ndarray:
    """Evaluate sum(coeffs[k] * t**k) (lowest order first) in t's dtype, in place on one buffer.

    The coefficients must already be scalars of t's dtype (or Python floats for float64).
    """
    r = t * coeffs[-1]
    r += coeffs[-2]
    for c in coeffs[-3::-1]:
        r *= t
        r += c
    return r


# ---------------------------------------------------------------------------------------
# float64: coefficients from Sun Microsystems' fdlibm s_erf.c (1993; "Developed at SunPro",
# freely redistributable), as shipped in FreeBSD lib/msun/src/s_erf.c. The decimal values
# below were checked bit-for-bit against the hex words given in that file. The approach
# (piecewise rational minimax fits, an exp(-x^2) factor in the tail) is that of W. J. Cody,
# "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969); the
# fits are fdlibm's. The error bounds quoted are fdlibm's, for each fit alone.
# ---------------------------------------------------------------------------------------

# erf(x) = x + x*PP(z)/QQ(z), z = x^2, on |x| < 0.84375;  |PP/QQ - (erf(x)-x)/x| < 2**-57.90
_PP = (
    1.28379167095512558561e-01,
    -3.25042107247001499370e-01,
    -2.84817495755985104766e-02,
    -5.77027029648944159157e-03,
    -2.37630166566501626084e-05,
)
_QQ = (
    1.0,
    3.97917223959155352819e-01,
    6.50222499887672944485e-02,
    5.08130628187576562776e-03,
    1.32494738004321644526e-04,
    -3.96022827877536812320e-06,
)

# erf(x) = sign(x) * (erx + PA(s)/QA(s)), s = |x| - 1, on 0.84375 <= |x| < 1.25;
# erx = erf(1) rounded to float32;  |PA/QA - (erf(1+s) - erx)| < 2**-59.06
_ERX = 8.45062911510467529297e-01
_PA = (
    -2.36211856075265944077e-03,
    4.14856118683748331666e-01,
    -3.72207876035701323847e-01,
    3.18346619901161753674e-01,
    -1.10894694282396677476e-01,
    3.54783043256182359371e-02,
    -2.16637559486879084300e-03,
)
_QA = (
    1.0,
    1.06420880400844228286e-01,
    5.40397917702171048937e-01,
    7.18286544141962662868e-02,
    1.26171219808761642112e-01,
    1.36370839120290507362e-02,
    1.19844998467991074170e-02,
)

# erfc(x) = exp(-x^2 - 0.5625 + R(s)/S(s)) / x, s = 1/x^2, in two pieces:
# RA/SA on [1.25, 1/0.35] (error < 2**-62.57), RB/SB on [1/0.35, 28] (error < 2**-61.52).
_RA = (
    -9.86494403484714822705e-03,
    -6.93858572707181764372e-01,
    -1.05586262253232909814e01,
    -6.23753324503260060396e01,
    -1.62396669462573470355e02,
    -1.84605092906711035994e02,
    -8.12874355063065934246e01,
    -9.81432934416914548592e00,
)
_SA = (
    1.0,
    1.96512716674392571292e01,
    1.37657754143519042600e02,
    4.34565877475229228821e02,
    6.45387271733267880336e02,
    4.29008140027567833386e02,
    1.08635005541779435134e02,
    6.57024977031928170135e00,
    -6.04244152148580987438e-02,
)
_RB = (
    -9.86494292470009928597e-03,
    -7.99283237680523006574e-01,
    -1.77579549177547519889e01,
    -1.60636384855821916062e02,
    -6.37566443368389627722e02,
    -1.02509513161107724954e03,
    -4.83519191608651397019e02,
)
_SB = (
    1.0,
    3.03380607434824582924e01,
    3.25792512996573918826e02,
    1.53672958608443695994e03,
    3.19985821950859553908e03,
    2.55305040643316442583e03,
    4.74528541206955367215e02,
    -2.24409524465858183362e01,
)


def _erf_f64(x: np.ndarray) -> np.ndarray:
    # x is 1-D here (erf() flattens).
    ax = np.abs(x)
    # Start from x itself (so nan stays nan) and fix |x| >= 6 (incl. +-inf): there
    # erfc(x) < 2.2e-17, below half an ulp of 1, so erf is +-1 exactly in float64.
    out = x.copy()
    big = np.flatnonzero(ax >= 6.0)
    out[big] = np.copysign(1.0, x[big])

    # Each region is gathered with an index array, computed, and scattered back, so no
    # element pays for another region's formula (and nothing huge reaches x*x or exp).
    # |x| < 0.84375: x + x*PP/QQ. Underflow is silenced here only: x*x underflows
    # harmlessly for |x| < 1.5e-154 (the ratio is then PP(0)/QQ(0)), and for |x| < ~1e-307
    # the result itself is subnormal, an inherent underflow (C's erf signals it too).
    i = np.flatnonzero(ax < 0.84375)
    if i.size:
        xs = x[i]
        with np.errstate(under="ignore"):
            z = xs * xs
            y = _horner(z, _PP)
            y /= _horner(z, _QQ)
            y *= xs
        y += xs
        out[i] = y

    # 0.84375 <= |x| < 1.25: sign(x) * (erx + PA(s)/QA(s)), s = |x| - 1.
    i = np.flatnonzero((ax >= 0.84375) & (ax < 1.25))
    if i.size:
        s = ax[i] - 1.0
        y = _horner(s, _PA)
        y /= _horner(s, _QA)
        y += _ERX
        out[i] = np.copysign(y, x[i])

    # 1.25 <= |x| < 6: sign(x) * (1 - exp(-x^2 - 0.5625 + R/S) / |x|).
    i = np.flatnonzero((ax >= 1.25) & (ax < 6.0))
    if i.size:
        a = ax[i]
        s = 1.0 / (a * a)
        rs = np.empty_like(a)
        lo = a < 1.0 / 0.35  # fdlibm's split between the RA/SA and RB/SB fits
        sl, sh = s[lo], s[~lo]
        rs[lo] = _horner(sl, _RA) / _horner(sl, _SA)
        rs[~lo] = _horner(sh, _RB) / _horner(sh, _SB)
        # fdlibm splits x = hi + lo to get exp(-x^2) to full *relative* accuracy for erfc;
        # for erf the rounding of x*x costs at most erfc(x)*x^2*2^-53 < 2e-17 absolute
        # here, so a single exp suffices. The exp argument is >= -36.6: no underflow.
        rs -= a * a
        rs -= 0.5625
        r = np.exp(rs)
        r /= a
        y = 1.0 - r
        out[i] = np.copysign(y, x[i])
    return out


# ---------------------------------------------------------------------------------------
# float32: coefficients fitted for npformer by a weighted minimax (Lawson) fit in float64
# against scipy.special.erf/erfc, then rounded to float32. Every float32 input was then
# checked against float64 erf: max error 8.6e-8 absolute (1.45 ulp), at x = 1.0836632.
# ---------------------------------------------------------------------------------------
_F32 = np.float32
_T32 = _F32(0.9)  # switch point between the two pieces
_ONE32 = _F32(1.0)
_CLAMP32 = _F32(4.0)  # 1 - erf(4) = 1.5e-8 < 2**-25: erf rounds to exactly 1 from here on

# erf(x) = x + x*A(x^2) on |x| < 0.9 (A fits erf(x)/x - 1; relative fit error 1.2e-8).
_A32 = tuple(
    _F32(c)
    for c in (
        "0.12837915",
        "-0.37612525",
        "0.11282141",
        "-0.026778914",
        "0.005011968",
        "-0.00060903816",
    )
)
# erf(t) = 1 - exp(B(t)) on 0.9 <= t <= 4 (B fits log(erfc(t)), weighted by erfc(t) so
# the fit error in erf is < 1.7e-9 absolute).
_B32 = tuple(
    _F32(c)
    for c in (
        "-0.0001774932",
        "-1.1277496",
        "-0.63705975",
        "-0.10403737",
        "0.02227709",
        "-0.0030556084",
        "0.00019718181",
    )
)


def _erf_f32(x: np.ndarray) -> np.ndarray:
    # Both pieces are evaluated on every element (each is ~15 cheap float32 ops, and a
    # gather/scatter would cost more than that), on |x| clamped to [0, 4] so nothing can
    # overflow; nan propagates through np.minimum and the arithmetic. Buffers are reused
    # via out= because fresh multi-MB temporaries (page faults) cost as much as the maths.
    a = np.abs(x)
    np.minimum(a, _CLAMP32, out=a)

    # Piece 1, |x| < 0.9: a + a*A(a^2).
    with np.errstate(under="ignore"):  # same inherent/harmless underflow as in float64
        t = a * a
        small = _horner(t, _A32)
        small *= a
    small += a

    # Piece 2, 0.9 <= |x| <= 4: 1 - exp(B(max(a, 0.9))). exp's argument is in [-18, -0.2].
    np.maximum(a, _T32, out=t)
    large = _horner(t, _B32)
    np.exp(large, out=large)
    np.subtract(_ONE32, large, out=large)

    # Branch-free select, exact because both pieces are finite (or both nan):
    # v*1 + w*0 == v. (np.where with a data-dependent mask is several times slower.)
    np.less(a, _T32, out=t)  # 1.0 where piece 1 applies, else 0.0
    small *= t
    np.subtract(_ONE32, t, out=t)
    large *= t
    small += large
    return np.copysign(small, x, out=small)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise.

    Returns an array of x's shape and dtype (float32 in, float32 out; float64 in, float64
    out; bool/int give float64; float16 is computed in float32 and rounded back).
    erf(+-inf) = +-1, erf(nan) = nan, erf(-0.0) = -0.0. Never warns for any input.

    Accuracy (max over the real line, measured): float64 1.1e-16 absolute / <= 1 ulp;
    float32 8.6e-8 absolute / 1.45 ulp (bound: 1.2e-7). See the module docstring.

    Parameters
    ----------
    x : array_like
        float16, float32 or float64 (bool and integer arrays are computed in float64).

    Returns
    -------
    ndarray
        erf(x), x's shape and dtype.

    Raises
    ------
    TypeError
        Another dtype (complex, object, ...).
    """
    x = np.asarray(x)
    dt = x.dtype
    flat = x.reshape(-1)  # the kernels work on 1-D arrays (also makes 0-d inputs arrays)
    if dt == np.float64:
        out = _erf_f64(flat)
    elif dt == np.float32:
        out = _erf_f32(flat)
    elif dt == np.float16:
        out = _erf_f32(flat.astype(np.float32)).astype(np.float16)
    elif dt.kind in "biu":
        out = _erf_f64(flat.astype(np.float64))
    else:
        raise TypeError(f"erf supports float16/32/64 (and bool/integer) arrays, got dtype {dt}")
    return out.reshape(x.shape)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: gelu(x) = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), Φ the standard normal CDF.

    This is PyTorch's ``nn.GELU()`` / ``F.gelu(x)`` (approximate="none"), the activation every
    reference uses. How it is evaluated, per dtype:

    * float64: from `erf` above; 8.9e-16 absolute from the exact value on [-10, 10] (1 ulp).
    * float32: Φ read from a table at every 1/1024 on [-8, 8] and linearly interpolated
      (`_gelu_f32`; 1.7× faster than through the float32 erf); at most 1.5e-7·max(1, |x|) from
      the exact value (measured 1.32e-7·max(1, |x|) over [-12, 12]; within 5 ulps of max(1, |x|)
      of PyTorch's).

    Same dtype rules as `erf`; gelu(-inf) = -0.0 (the limit; PyTorch returns nan there),
    gelu(inf) = inf, never warns. Arrays of over 128k values run in fixed blocks on npformer's
    workers (`kernels.elementwise`): each value gets the same answer either way.

    Parameters
    ----------
    x : array_like
        The input (float32 or float64; others as for `erf`).

    Returns
    -------
    ndarray
        gelu(x), x's shape and dtype.
    """
    x = _float_array(x)
    return kernels.elementwise(_gelu_f32 if x.dtype == np.float32 else _gelu_erf, x)


# ---------------------------------------------------------------------------------------
# float32 GELU: Phi tabulated and linearly interpolated.
#
# The polynomial erf above costs ~30 NumPy passes per value; gelu(x) = x * Phi(x) needs only
# Phi, a smooth function that is 0 below -8 and 1 above 8 to float32 precision. So Phi is
# tabulated in float64 (from the fdlibm erf) at every 1/1024 on [-8, 8] and read back by linear
# interpolation: 12 passes, two of them table reads. Interpolation error <= h^2/8 * max|Phi''|
# = 2.9e-8; measured gelu error 1.32e-7 * max(1, |x|) over [-12, 12] (the float32 polynomial
# path: 1.15e-7). The table indices are intp, the type NumPy's gathers use natively (int32
# indices would be converted inside np.take), and the -inf guard is np.clip with both bounds,
# a cheaper pass than np.maximum with a scalar.
# ---------------------------------------------------------------------------------------

_PHI_STEPS = 1024  # table points per unit of x (a power of two: x * 1024 is exact)
_PHI_RANGE = 8  # Phi(-8) = 6e-16, Phi(8) = 1 - 6e-16: 0 and 1 in float32


def _phi_table() -> tuple[np.ndarray, np.ndarray]:
    """Phi at x_i = i/1024 - 8 (i = 0 .. 16383) and the step to the next point, both float32."""
    grid = np.arange(-_PHI_RANGE * _PHI_STEPS, _PHI_RANGE * _PHI_STEPS + 1) / _PHI_STEPS  # float64
    phi = 0.5 * (1.0 + _erf_f64(grid * 0.7071067811865476))
    phi[0] = 0.0  # so gelu(x <= -8) is exactly -0.0, including x = -inf (see _no_neg_inf)
    return phi[:-1].astype(np.float32), np.diff(phi).astype(np.float32)


_PHI, _PHI_SLOPE = _phi_table()
_PHI_LO = _F32(-_PHI_RANGE)
_PHI_HI = _F32(_PHI_RANGE - 1.0 / _PHI_STEPS)  # last grid point: Phi = 1 - 6e-16, 1.0 in float32


def _gelu_f32(x: np.ndarray) -> np.ndarray:
    """x * Phi(x) with Phi from the table; float32 in and out, never a float64 temporary."""
    u = np.clip(x, _PHI_LO, _PHI_HI)
    u *= _F32(_PHI_STEPS)  # position on the grid, in steps from x = 0 (exact)
    i = np.floor(u)
    u -= i  # fraction of a step, in [0, 1) (exact)
    with np.errstate(invalid="ignore"):  # nan -> some index (clipped below); the result stays nan
        i = i.astype(np.intp)  # the index type NumPy's gathers use natively: no conversion inside take
    i += _PHI_RANGE * _PHI_STEPS  # table index
    phi = np.take(_PHI_SLOPE, i, mode="clip")
    phi *= u
    phi += np.take(_PHI, i, mode="clip")
    phi *= _no_neg_inf(x)
    return phi


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    """0.5 * x * (1 + erf(x / sqrt 2)): the float64 (and float16) path."""
    dt = x.dtype.type
    # Underflow (only for |x| < ~1e-307 / 1e-37, where the result is itself subnormal) is
    # inherent and harmless; silenced so the function is clean even under all="raise".
    with np.errstate(under="ignore"):
        y = erf(x * dt(0.7071067811865476))  # 1/sqrt(2), cast to x's dtype
        y += dt(1.0)
        y *= dt(0.5)
        y *= _no_neg_inf(x)
    return y


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """Tanh approximation of GELU: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))).

    NOT what EfficientFormer uses. It exists only for teaching (a "GELU" that fails a parity
    test against the exact one is usually this: they differ by up to ~5e-4 on [-4, 4]) and
    for Hugging Face configs with hidden_act "gelu_new" / "gelu_pytorch_tanh". Computed in
    x's dtype; never warns.

    Parameters
    ----------
    x : array_like
        The input.

    Returns
    -------
    ndarray
        x's shape and dtype.
    """
    x = _float_array(x)
    dt = x.dtype.type
    # tanh is +-1 to working precision once |inner| > 20, i.e. for |x| > ~10, so clipping
    # x there changes nothing and keeps x^3 from overflowing.
    xc = np.clip(x, dt(-10.0), dt(10.0))
    with np.errstate(under="ignore"):  # see gelu
        inner = xc * xc
        inner *= dt(0.044715)
        inner += dt(1.0)
        inner *= xc
        inner *= dt(0.7978845608028654)  # sqrt(2/pi)
        y = np.tanh(inner)
        y += dt(1.0)
        y *= dt(0.5)
        y *= _no_neg_inf(x)
    return np.asarray(y)  # a 0-d input gives a 0-d array, not a NumPy scalar


def _float_array(x) -> np.ndarray:
    """np.asarray(x), with bool/integer arrays converted to float64 (as NumPy ufuncs do)."""
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        return x.astype(np.float64)
    return x


def _no_neg_inf(x: np.ndarray) -> np.ndarray:
    """x with -inf replaced by the most negative finite value.

    GELU's factor (1 + erf) or (1 + tanh) is exactly 0 long before that, so the product is
    the correct limit -0.0 instead of (-inf * 0) = nan with an "invalid value" warning.
    (np.clip with both bounds, +inf above: a third of np.maximum's time; nan stays nan.)
    """
    return np.clip(x, np.finfo(x.dtype).min, np.inf)
