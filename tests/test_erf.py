"""Tests for npformer.erf: erf, gelu, gelu_tanh.

The first tier uses only the standard library's math.erf (the C library's) as reference;
the oracle tier compares gelu with torch.nn.functional.gelu and is skipped without torch.
"""

import math
import warnings

import numpy as np
import pytest

from npformer import erf as erf_module
from npformer.erf import erf, gelu, gelu_tanh

_math_erf = np.frompyfunc(math.erf, 1, 1)

# Bars (measured value in brackets, on this suite's points):
ERF64_ABS = 3e-16  # float64 erf vs libm, absolute [1.1e-16]
ERF64_REL_SMALL = 5e-16  # float64 erf vs libm, relative, 0 < |x| < 1 [2.2e-16]
ERF32_ABS = 1.2e-7  # float32 erf, absolute: the module's stated bound [7.7e-8; 8.6e-8 exhaustive]
ERF32_REL = 1.5e-7  # float32 erf, relative, normal results below |x| = 0.9 [1.04e-7 exhaustive]
GELU64_ABS = 1e-15  # float64 gelu vs 0.5x(1+erf(x/sqrt2)) on [-10, 10] [8.9e-16]
GELU32_SCALED = 1.5e-7  # float32 gelu error / max(1, |x|): the stated bound [1.27e-7, table path]
TORCH32_ULPS = 8  # float32 gelu vs torch, in ulps of max(1, |x|) [5.0; torch's own error is 4.6]

SPECIAL64 = np.array(
    [
        0.0, -0.0, 1e-300, -1e-300, 5e-324, -5e-324, 1e-310, -2.2e-308, 2**-28, 2**-29,
        0.84375, np.nextafter(0.84375, 0), 1.25, np.nextafter(1.25, 0),
        1 / 0.35, np.nextafter(1 / 0.35, 0), 5.85, -5.85, 5.9, -5.9, 6.0, -6.0,
        np.nextafter(6.0, 0), 27.0, 28.0, 1e10, -1e10, 1e300, -1e300,
        np.finfo(np.float64).max, -np.finfo(np.float64).max,
    ]
)  # fmt: skip


def _ref64(x):
    return _math_erf(np.asarray(x, dtype=np.float64)).astype(np.float64)


def _grid64():
    rng = np.random.default_rng(20240601)
    return np.concatenate(
        [
            np.linspace(-10.0, 10.0, 200_001),
            rng.uniform(-10.0, 10.0, 100_000),
            rng.uniform(0.8, 1.3, 20_000),  # around the fdlibm region edges
            np.exp(rng.uniform(np.log(1e-12), 0.0, 20_000)),  # small |x|: relative error
            SPECIAL64,
        ]
    )


def _grid32():
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            np.linspace(-10.0, 10.0, 200_001),
            rng.uniform(-5.0, 5.0, 100_000),
            rng.uniform(0.85, 1.2, 50_000),  # the float32 path's worst region
            [1.0836632, 0.9, np.nextafter(np.float32(0.9), np.float32(0)), 4.0, 3.9, 3.83],
        ]
    )
    return x.astype(np.float32)


def _no_fp_warnings():
    """Context: any NumPy floating-point event (incl. underflow) or any warning raises."""

    class _Ctx:
        def __enter__(self):
            self._w = warnings.catch_warnings()
            self._w.__enter__()
            warnings.simplefilter("error")
            self._e = np.errstate(all="raise")
            self._e.__enter__()

        def __exit__(self, *exc):
            self._e.__exit__(*exc)
            return self._w.__exit__(*exc)

    return _Ctx()


# ----------------------------------------------------------------------------- erf, float64


def test_erf_float64_matches_libm_on_grid():
    x = _grid64()
    with _no_fp_warnings():
        y = erf(x)
    assert y.dtype == np.float64 and y.shape == x.shape
    ref = _ref64(x)
    assert np.max(np.abs(y - ref)) <= ERF64_ABS
    small = (np.abs(x) < 1) & (x != 0)
    rel = np.abs(y[small] - ref[small]) / np.abs(ref[small])
    assert np.max(rel) <= ERF64_REL_SMALL


def test_erf_float64_special_values():
    with _no_fp_warnings():
        y = erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan]))
    assert y[0] == 0 and not np.signbit(y[0])
    assert y[1] == 0 and np.signbit(y[1])
    assert y[2] == 1.0 and y[3] == -1.0
    assert np.isnan(y[4])
    with _no_fp_warnings():
        y = erf(SPECIAL64)
    assert np.max(np.abs(y - _ref64(SPECIAL64))) <= ERF64_ABS
    # exactly +-1 from |x| = 6 on (erfc(6) is below half an ulp of 1)
    big = np.abs(SPECIAL64) >= 6
    assert np.array_equal(y[big], np.sign(SPECIAL64[big]))
    # tiny and subnormal inputs: erf(x) = 2/sqrt(pi) * x to within rounding
    tiny = np.array([1e-300, -1e-300, 2**-60])
    assert np.allclose(erf(tiny), tiny * (2 / math.sqrt(math.pi)), rtol=2.3e-16, atol=0)
    sub = np.array([5e-324, 1e-310, -2.2e-308])
    assert np.all(np.abs(erf(sub) - sub * (2 / math.sqrt(math.pi))) <= 5e-324)


def test_erf_float64_is_odd_exactly():
    x = _grid64()
    assert np.array_equal(erf(-x), -erf(x))


# ----------------------------------------------------------------------------- erf, float32


def test_erf_float32_matches_libm_within_stated_bound():
    x = _grid32()
    with _no_fp_warnings():
        y = erf(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    ref = _ref64(x)
    assert np.max(np.abs(y.astype(np.float64) - ref)) <= ERF32_ABS
    # relative accuracy for small |x| (not just absolute), down to the smallest normal
    xs = np.float32(np.geomspace(1.2e-38, 0.899, 50_000))
    rel = np.abs(erf(xs).astype(np.float64) - _ref64(xs)) / _ref64(xs)
    assert np.max(rel) <= ERF32_REL


def test_erf_float32_special_values_and_no_warnings():
    f32 = np.finfo(np.float32)
    x = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, f32.tiny, 1e-20,
         4.0, -4.0, 10.0, f32.max, -f32.max],
        dtype=np.float32,
    )  # fmt: skip
    with _no_fp_warnings():
        y = erf(x)
    assert y.dtype == np.float32
    assert y[0] == 0 and not np.signbit(y[0])
    assert y[1] == 0 and np.signbit(y[1])
    assert y[2] == 1 and y[3] == -1 and np.isnan(y[4])
    assert np.array_equal(y[10:], np.float32([1, -1, 1, 1, -1]))
    ref = _ref64(x[5:10])
    assert np.all(np.abs(y[5:10] - ref) <= np.maximum(ERF32_REL * np.abs(ref), 1e-45))


def test_erf_float32_stays_float32():
    # NumPy 2 promotes float32 arrays with float64 *scalars* to float64: every constant the
    # float32 path uses must therefore itself be float32.
    for c in (*erf_module._A32, *erf_module._B32, erf_module._T32, erf_module._CLAMP32):
        assert type(c) is np.float32
    x = np.linspace(-5, 5, 1001, dtype=np.float32)
    assert erf(x).dtype == np.float32 and gelu(x).dtype == np.float32
    assert gelu_tanh(x).dtype == np.float32
    assert np.array_equal(erf(-x), -erf(x))


# ------------------------------------------------------------------------ dtypes and shapes


def test_erf_shapes_and_other_dtypes():
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    y = erf(x)
    assert y.shape == (2, 3, 4)
    assert np.array_equal(y.ravel(), erf(x.ravel()))
    assert np.array_equal(erf(x[:, ::2, ::-1]), y[:, ::2, ::-1])  # non-contiguous view
    assert erf(np.float64(0.5)).shape == () and erf(0.5) == erf(np.array([0.5]))[0]
    assert erf(np.empty((0, 3))).shape == (0, 3)
    assert erf(np.array([0, 1, -2])).dtype == np.float64  # integers: as NumPy ufuncs do
    h = erf(np.array([0.5, -1.0, 8.0], dtype=np.float16))
    assert h.dtype == np.float16
    assert np.allclose(h, [math.erf(0.5), math.erf(-1.0), 1.0], atol=1e-3)
    with pytest.raises(TypeError):
        erf(np.array([1 + 1j]))


# ------------------------------------------------------------------------------------ gelu


def _gelu_ref(x):
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in np.asarray(x, np.float64)])


def test_gelu_float64_matches_exact_formula():
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-10, 10, 200_001), rng.normal(0, 2, 50_000)])
    with _no_fp_warnings():
        g = gelu(x)
    assert g.dtype == np.float64
    assert np.max(np.abs(g - _gelu_ref(x))) <= GELU64_ABS


def test_gelu_float32_within_stated_bound():
    rng = np.random.default_rng(4)
    x = np.concatenate([np.linspace(-10, 10, 100_001), rng.normal(0, 2, 50_000)])
    x = x.astype(np.float32)
    with _no_fp_warnings():
        g = gelu(x)
    assert g.dtype == np.float32
    err = np.abs(g.astype(np.float64) - _gelu_ref(x))
    assert np.max(err / np.maximum(1.0, np.abs(x.astype(np.float64)))) <= GELU32_SCALED


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_special_values(dtype):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, -1e30, 1e30], dtype=dtype)
    for f in (gelu, gelu_tanh):
        with _no_fp_warnings():
            g = f(x)
        assert g.dtype == dtype
        assert g[0] == np.inf
        assert g[1] == 0 and np.signbit(g[1])  # the limit, not nan
        assert np.isnan(g[2])
        assert g[3] == 0 and g[4] == 0 and g[5] == 0 and g[6] == dtype(1e30)
    assert gelu(np.float32(1.0)).shape == ()
    assert gelu_tanh(np.float64(1.0)).shape == ()


def test_gelu_and_gelu_tanh_are_distinguishable():
    # What lets a parity test detect a tanh GELU where the exact one is expected.
    x = np.linspace(-4, 4, 8001)
    diff = np.max(np.abs(gelu(x) - gelu_tanh(x)))
    assert 1e-4 < diff < 1e-3
    x32 = x.astype(np.float32)
    assert np.max(np.abs(gelu(x32) - gelu_tanh(x32))) > 1e-4


def test_gelu_tanh_formula():
    x = np.linspace(-10, 10, 20_001)
    ref = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert np.max(np.abs(gelu_tanh(x) - ref)) <= 2e-15


# --------------------------------------------------------------------- oracle: PyTorch


@pytest.mark.oracle
def test_gelu_matches_torch_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = np.concatenate([np.linspace(-10, 10, 200_001), rng.normal(0, 2, 100_000)])
    t = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(gelu(x) - t)) <= 1e-15
    tt = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    assert np.max(np.abs(gelu_tanh(x) - tt)) <= 2e-15


@pytest.mark.oracle
def test_gelu_matches_torch_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = np.concatenate([np.linspace(-10, 10, 200_001), rng.normal(0, 2, 100_000)])
    x = x.astype(np.float32)
    ulp = np.spacing(np.maximum(np.float32(1), np.abs(x))).astype(np.float64)
    t = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(gelu(x).astype(np.float64) - t) / ulp) <= TORCH32_ULPS
    tt = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    assert np.max(np.abs(gelu_tanh(x).astype(np.float64) - tt) / ulp) <= 4


def test_gelu_float32_reads_phi_from_the_table_and_float64_uses_erf():
    from npformer.erf import _PHI, _gelu_erf, _gelu_f32

    x = np.random.default_rng(7).normal(0, 3, 5000)
    assert np.array_equal(gelu(x), _gelu_erf(x))
    x32 = x.astype(np.float32)
    assert np.array_equal(gelu(x32), _gelu_f32(x32)) and gelu(x32).dtype == np.float32
    assert _PHI.dtype == np.float32 and _PHI.size == 16 * 1024
    # the two float32 paths agree to the stated bound; a coarser table (or a tanh GELU) would not
    ref = _gelu_erf(x32.astype(np.float64))
    assert np.max(np.abs(_gelu_f32(x32) - ref) / np.maximum(1, np.abs(x))) <= GELU32_SCALED


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_in_blocks_is_bit_identical(dtype):
    from npformer.erf import _gelu_erf, _gelu_f32
    from npformer.kernels import ELEMENTWISE_BLOCK as _GELU_BLOCK

    x = np.random.default_rng(8).normal(0, 3, (3, 2 * _GELU_BLOCK // 3 + 7)).astype(dtype)  # not a multiple of the block
    kernel = _gelu_f32 if dtype == np.float32 else _gelu_erf
    assert np.array_equal(gelu(x), kernel(x.reshape(-1)).reshape(x.shape))
    assert np.array_equal(gelu(x.T), kernel(np.ascontiguousarray(x.T).reshape(-1)).reshape(x.T.shape))
