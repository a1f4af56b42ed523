"""layers.interpolate against torch.nn.functional.interpolate (align_corners=False).

Torch-free tier: the loop twin against the vectorised form; torch's outputs and float32 weights
stored in tests/fixtures/interpolate/golden.npz (made by make_golden.py there). Live tier: torch
itself on the same grid, on random sizes, and its weights along random axes.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from npformer import layers
from npformer.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "interpolate"
_spec = importlib.util.spec_from_file_location("interpolate_golden", FIXTURES / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

ATOL = {"float32": 1e-6, "float64": 1e-12}  # the targets of issue 13
MODES = [(mode, antialias) for mode in golden.MODES for antialias in (False, True)]
MODE_IDS = [f"{mode}-{'antialias' if aa else 'plain'}" for mode, aa in MODES]
CASE_IDS = [golden.case_name(c) for c in golden.CASES]
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def fixture():
    with np.load(golden.FIXTURE) as g:
        return {key: g[key] for key in g.files}


# --- torch-free tier ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("case", golden.CASES, ids=CASE_IDS)
def test_naive_twin_matches_vectorised(case, mode, antialias):
    (H, W), size, C = case
    x = RNG.standard_normal((2, C, H, W))
    fast = layers.interpolate(x, size, mode, antialias)
    naive = layers.interpolate_naive(x, size, mode, antialias)
    assert fast.shape == naive.shape == (2, C, *size)
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("case", golden.CASES, ids=CASE_IDS)
def test_matches_torch_golden(fixture, case, mode, antialias, dtype):
    x = fixture[golden.input_key(case)].astype(dtype)
    ref = fixture[golden.output_key(case, mode, antialias, dtype)]
    out = layers.interpolate(x, case[1], mode, antialias)
    assert out.dtype == ref.dtype == np.dtype(dtype) and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("pair", golden.AXIS_PAIRS, ids=[f"{a}-{b}" for a, b in golden.AXIS_PAIRS])
def test_float32_weights_equal_torch_bit_for_bit(fixture, pair, mode, antialias):
    ref = fixture[golden.weights_key(*pair, mode, antialias)]
    got = layers.resampling_weights(*pair, mode, antialias, np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_fixture_was_made_with_fused_kernels(fixture):
    meta = json.loads(str(fixture["meta"]))
    assert meta["cpu_capability"] in ("AVX2", "AVX512") and meta["torch"].startswith("2.13.0")


@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
def test_float32_source_rounding_is_what_matches_torch(fixture, mode, antialias):
    """The loop twin computes in float64, without torch's float32 roundings: on 49 -> 70 and
    224 -> 97 it misses torch's float32 output by more than 1e-6, where `interpolate` does not."""
    for case in (golden.CASES[1], golden.CASES[5]):  # 49x3 -> 70x4, 224x7 -> 97x3
        x = fixture[golden.input_key(case)].astype(np.float32)
        ref = fixture[golden.output_key(case, mode, antialias, "float32")]
        naive = layers.interpolate_naive(x, case[1], mode, antialias)
        assert np.abs(naive - ref).max() > 2e-6
        assert np.abs(layers.interpolate(x, case[1], mode, antialias) - ref).max() <= 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bilinear_doubling_equals_upsample_bilinear_2x(dtype):
    x = RNG.standard_normal((2, 3, 7, 5)).astype(dtype)
    out = layers.interpolate(x, (14, 10), "bilinear")
    np.testing.assert_allclose(out, layers.upsample_bilinear_2x(x), rtol=0, atol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("shape", [(5, 6), (3, 5, 6), (2, 3, 5, 6), (2, 1, 3, 5, 6)])
def test_any_leading_axes(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    out = layers.interpolate(x, (9, 4), "bicubic", antialias=True)
    assert out.shape == shape[:-2] + (9, 4) and out.dtype == np.float32
    flat = layers.interpolate(x.reshape(1, -1, 5, 6), (9, 4), "bicubic", antialias=True)
    np.testing.assert_array_equal(out.reshape(flat.shape), flat)


def test_int_size_and_strided_input():
    x = RNG.standard_normal((2, 3, 8, 8))
    view = x[:, :, ::-1, ::2]  # [2, 3, 8, 4], not contiguous
    out = layers.interpolate(view, 6, "bilinear")
    assert out.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(out, layers.interpolate(np.ascontiguousarray(view), (6, 6), "bilinear"))


@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
def test_same_size_is_a_copy(mode, antialias):
    x = RNG.standard_normal((3, 7, 9)).astype(np.float32)
    np.testing.assert_array_equal(layers.interpolate(x, (7, 9), mode, antialias), x)
    np.testing.assert_array_equal(layers.interpolate_naive(x, (7, 9), mode, antialias), x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "nearest"}, "mode='nearest' is not one of 'bilinear', 'bicubic'"),
        ({"mode": None}, "mode=None"),
        ({"antialias": "yes"}, "antialias must be True or False"),
        ({"size": 0}, "size must be a positive int or a pair"),
        ({"size": (7, -1)}, r"got \(7, -1\)"),
        ({"size": (7,)}, "size must be"),
        ({"size": (7.0, 7)}, "size must be"),
        ({"size": (True, 7)}, "size must be"),
        ({"size": "7"}, "size must be"),
        ({"x": np.zeros(5, np.float32)}, r"expected an array \[..., H, W\].*got shape \(5,\)"),
        ({"x": np.zeros((2, 0, 4), np.float32)}, r"H, W ≥ 1.*got shape \(2, 0, 4\)"),
        ({"x": np.zeros((2, 4, 4), np.int64)}, "expected float32 or float64 values, got int64"),
        ({"x": np.zeros((2, 4, 4), np.float16)}, "got float16"),
    ],
)
@pytest.mark.parametrize("fn", [layers.interpolate, layers.interpolate_naive], ids=["fast", "naive"])
def test_bad_arguments_raise_input_error(fn, kwargs, match):
    args = {"x": np.zeros((1, 3, 4, 4), np.float32), "size": (5, 5), "mode": "bilinear", "antialias": False}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        fn(args.pop("x"), args.pop("size"), **args)


# --- live tier: torch itself -------------------------------------------------------------------------


def _torch_with_fused_kernels():
    torch = pytest.importorskip("torch")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch runs its DEFAULT kernels on this CPU (no FMA): its float32 weights differ by up to 1e-5")
    return torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
def test_matches_torch_live_on_the_grid(fixture, mode, antialias, dtype):
    _torch_with_fused_kernels()
    for case in golden.CASES:
        x = fixture[golden.input_key(case)].astype(dtype)
        ref = golden.torch_interpolate(x, case[1], mode, antialias)
        np.testing.assert_allclose(layers.interpolate(x, case[1], mode, antialias), ref, rtol=0, atol=ATOL[dtype],
                                   err_msg=golden.case_name(case))


def _random_cases(n, seed):
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(1, 80, size=4)) for _ in range(n)]  # (H, W, OH, OW)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
def test_matches_torch_live_on_random_sizes(mode, antialias, dtype):
    _torch_with_fused_kernels()
    rng = np.random.default_rng(1)
    for H, W, OH, OW in _random_cases(12, seed=2) + [(43, 3, 75, 120), (78, 71, 77, 2), (114, 2, 95, 1)]:
        if antialias and torch_repeats_the_first_row(H, OH, OW):
            continue  # test_torch_antialias_bug_at_output_width_1
        x = (rng.standard_normal((2, 3, H, W)) * 3).astype(dtype)
        ref = golden.torch_interpolate(x, (OH, OW), mode, antialias)
        out = layers.interpolate(x, (OH, OW), mode, antialias)
        assert out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref, rtol=0, atol=3 * ATOL[dtype], err_msg=f"{H}x{W} -> {OH}x{OW}")


@pytest.mark.parametrize("mode,antialias", MODES, ids=MODE_IDS)
def test_float32_weights_equal_torch_live(mode, antialias):
    _torch_with_fused_kernels()
    for in_size, _, out_size, _ in _random_cases(40, seed=3) + [(300, 0, 1024, 0), (1024, 0, 49, 0)]:
        np.testing.assert_array_equal(layers.resampling_weights(in_size, out_size, mode, antialias, np.float32),
                                      golden.torch_weights(in_size, out_size, mode, antialias),
                                      err_msg=f"{in_size} -> {out_size}")


def torch_repeats_the_first_row(H, OH, OW):
    """torch 2.13.0's antialiased resampling, for an output one column wide whose height changes,
    gives every output row the weights of output row 0 (measured: every such shape, both modes)."""
    return OW == 1 and H > 1 and OH > 1 and H != OH


@pytest.mark.parametrize("mode", golden.MODES)
def test_torch_antialias_bug_at_output_width_1(mode):
    """Where torch's antialias path is wrong npformer keeps the formula; this pins down torch's
    deviation exactly, so a torch that fixes it fails here and the exclusion above can go."""
    _torch_with_fused_kernels()
    x = RNG.standard_normal((2, 3, 9, 5))
    ref = golden.torch_interpolate(x, (4, 1), mode, True)  # [2, 3, 4, 1]
    assert torch_repeats_the_first_row(9, 4, 1)
    rows = layers.resampling_weights(9, 4, mode, True, np.float64)  # [4, 9]
    cols = layers.resampling_weights(5, 1, mode, True, np.float64)  # [1, 5]
    first_row_everywhere = np.repeat(rows[:1], 4, axis=0) @ x @ cols.T
    np.testing.assert_allclose(ref, first_row_everywhere, rtol=0, atol=1e-12)
    out = layers.interpolate(x, (4, 1), mode, True)
    np.testing.assert_allclose(out, rows @ x @ cols.T, rtol=0, atol=1e-15)
    assert np.abs(out - ref).max() > 0.1
    # one column more and torch agrees with the formula again
    np.testing.assert_allclose(layers.interpolate(x, (4, 2), mode, True), golden.torch_interpolate(x, (4, 2), mode, True),
                               rtol=0, atol=1e-12)
