"""SwiftFormer at 256, 320, 384 and 224×320 px: attention v1 against transformers 4.40.2, v2 against timm.

SwiftFormer has no position-dependent weights, so a model runs at any input size; these tests
prove that what it computes there is what the references compute, for both attention
generations, on seeded weights (both classifier heads) and one seeded image (batch 1).
Compared: the logits (max |Δ|) and the four stage outputs `stages.0` … `stages.3` (max |Δ| /
max(1, max |reference|), as in test_swiftformer.py), float32 ≤ 1e-4 and float64 ≤ 1e-9.

Golden tier (no torch): XS at every size and S, L1, L3 at 224×320, against
tests/fixtures/golden_sizes/swiftformer_sizes.safetensors (make_golden.py there), fused and unfused.
Live tier (oracle): every variant at every size against the references directly.
"""

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer.models.swiftformer.model as sf
from npformer.checkpoints.seeded import seeded_weights
from npformer.tools.parity import abs_diff, checksum, scaled_diff
from npformer.trace import Trace
from tiers import tiered, variants

GOLDEN = Path(__file__).parent / "fixtures" / "golden_sizes"
TOL = {"float32": 1e-4, "float64": 1e-9}
DTYPES = [np.float32, np.float64]
VARIANTS = ["xs", "s", "l1", "l3"]

_spec = importlib.util.spec_from_file_location("golden_sizes_make", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)  # torch-free at import: SIZES, CASES, GENERATIONS, STAGES, case_pixels, ...


@functools.cache
def read_golden():
    with safe_open(str(make_golden.FIXTURE), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@functools.cache
def weights_of(variant: str) -> dict:
    """The seeded weights (seed 0, both heads) the fixture was made from; the same for v1 and v2."""
    return seeded_weights(make_golden.config(variant, "v1"), num_heads=2, seed=0)


def npformer_outputs(variant, generation, pixels, dtype, fuse=False) -> dict:
    """npformer's logits and its Trace records `stages.0` … `stages.3` (full arrays)."""
    trace = Trace(list(make_golden.STAGES))
    model = sf.SwiftFormerForImageClassification(make_golden.config(variant, generation), weights_of(variant), dtype=dtype)
    logits = (model.fuse() if fuse else model)(pixels, trace=trace).logits
    assert list(trace) == list(make_golden.STAGES)
    return {"logits": logits, **trace.records}


def diffs(ours: dict, ref: dict) -> dict:
    """{name: difference}: absolute for the logits, scaled for the stage outputs (the residual stream grows)."""
    assert ours.keys() == ref.keys()
    return {k: (abs_diff if k.endswith("logits") else scaled_diff)(ours[k], ref[k]) for k in ref}


def golden_diffs(variant, size, generation, dtype, fuse=False, run_as=None) -> dict:
    """npformer (attention `run_as`, default `generation`) against the fixture's `generation` entries."""
    golden, _ = read_golden()
    prefix = f"{variant}/{size}/{generation}/{np.dtype(dtype).name}"
    outputs = npformer_outputs(variant, run_as or generation, make_golden.case_pixels(size), dtype, fuse)
    ours = make_golden.golden_entries(outputs, prefix)  # the logits, and the stage outputs at the fixture's positions
    d = diffs(ours, {k: v for k, v in golden.items() if k.startswith(prefix + "/")})
    return {k.removeprefix(prefix + "/"): v for k, v in d.items()}  # {"logits": ..., "stages.0": ...}


def test_fixture_holds_every_case_and_nothing_else():
    golden, meta = read_golden()
    expected = {f"{variant}/{size}/{generation}/{np.dtype(dtype).name}/{name}"
                for variant, size in make_golden.CASES for generation in make_golden.GENERATIONS for dtype in DTYPES
                for name in ("logits", *make_golden.STAGES)}
    assert golden.keys() == expected
    assert {v for v, _ in make_golden.CASES} == set(VARIANTS)  # every variant at a non-224 size
    assert meta["transformers"] == "4.40.2" and meta["batch"] == "1"
    assert golden["xs/224x320/v1/float32/logits"].shape == (1, 1000)
    assert golden["xs/224x320/v1/float64/logits"].dtype == np.float64


@pytest.mark.parametrize("variant", variants("swiftformer", VARIANTS))
def test_seeded_weights_are_what_the_fixture_was_made_from(variant):
    _, meta = read_golden()
    assert checksum(weights_of(variant)) == meta[f"weights_checksum/{variant}"], "seeded weights drifted"


@pytest.mark.parametrize("size", list(make_golden.SIZES))
def test_seeded_pixels_are_what_the_fixture_was_made_from(size):
    _, meta = read_golden()
    pixels = make_golden.case_pixels(size)
    assert pixels.shape == (1, 3, *make_golden.SIZES[size]) and pixels.dtype == np.float32
    assert checksum({"pixels": pixels}) == meta[f"pixels_checksum/{size}"], "seeded pixels drifted"


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("generation", list(make_golden.GENERATIONS))
@pytest.mark.parametrize("variant,size", tiered(make_golden.CASES, lambda case: ("swiftformer", case[0]), unpack=True),
                         ids=[f"{v}-{s}" for v, s in make_golden.CASES])
def test_matches_reference_golden(variant, size, generation, dtype, fuse):
    d = golden_diffs(variant, size, generation, dtype, fuse)
    tol = TOL[np.dtype(dtype).name]
    assert d.keys() == {"logits", *make_golden.STAGES}
    assert max(d.values()) <= tol, f"beyond {tol}: { {k: f'{v:.2e}' for k, v in d.items() if v > tol} }"


@pytest.mark.parametrize("size", list(make_golden.SIZES))
@pytest.mark.parametrize("generation,run_as", [("v1", "v2"), ("v2", "v1")])
def test_the_other_generation_misses_the_fixture_at_every_size(size, generation, run_as):
    # the same weights under the other attention run, and are wrong by far more than any tolerance:
    # the fixture tells the generations apart at every size (measured: logits 3.6–9.5 apart, stage 0
    # 0.85–5.9 scaled; bench/swiftformer_drift.py)
    d = golden_diffs("xs", size, generation, np.float64, run_as=run_as)
    assert d["stages.0"] > 0.5 and d["logits"] > 3, d


def test_v1_and_v2_drift_apart_as_the_token_count_grows():
    # bench/swiftformer_drift.py on XS: v1's global query sums N unit queries (‖G‖ ≤ N, here ≈ 0.72·N),
    # v2's weights have unit norm over the tokens (‖G‖ ≤ √N, here ≈ 0.68·√N), so the two part like √N
    spec = importlib.util.spec_from_file_location("swiftformer_drift", GOLDEN.parents[2] / "bench" / "swiftformer_drift.py")
    drift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drift)
    small, large = drift.drift_rows("xs", [(224, 224), (384, 384)], printer=lambda line: None)
    for row in (small, large):
        assert row["G_v1"] <= row["N"] and row["G_v2"] <= row["N"] ** 0.5
        assert 0.7 < row["G_v1"] / row["N"] < 0.75 and 0.65 < row["G_v2"] / row["N"] ** 0.5 < 0.7
    assert (small["N"], large["N"]) == (56 * 56, 96 * 96)  # stage 0 works at 1/4 of the input side
    ratio = (large["G_v1"] / large["G_v2"]) / (small["G_v1"] / small["G_v2"])
    assert abs(ratio / (384 / 224) - 1) < 0.05  # ‖G_v1‖ / ‖G_v2‖ ∝ √N
    assert large["d_attn"] > 2.5 * small["d_attn"] > 400 and large["d_logits"] > 2.5 * small["d_logits"] > 6


# ---------------------------------------------------------------------------------------------
# live tier


@pytest.mark.oracle
@pytest.mark.parametrize("generation", list(make_golden.GENERATIONS))
@pytest.mark.parametrize("variant", variants("swiftformer", VARIANTS))
def test_matches_reference_live(variant, generation):
    """Every variant at every size, float32 (unfused and fused) and float64, batch 1."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    golden, _ = read_golden()
    cfg = make_golden.config(variant, generation)
    for dtype in DTYPES:
        dt = np.dtype(dtype).name
        ref_model = make_golden.reference_model(cfg, weights_of(variant), dtype)
        for size in make_golden.SIZES:
            pixels = make_golden.case_pixels(size)
            ref = make_golden.reference_outputs(ref_model, generation, pixels)
            assert ref["logits"].dtype == dtype and ref["stages.3"].shape[2:] == tuple(-(-s // 32) for s in pixels.shape[2:])
            for fuse in (False, True) if dtype == np.float32 else (False,):
                d = diffs(npformer_outputs(variant, generation, pixels, dtype, fuse), ref)
                assert max(d.values()) <= TOL[dt], (variant, size, generation, dt, fuse, d)
            if (variant, size) in make_golden.CASES:  # the fixture is what the reference gives today
                prefix = f"{variant}/{size}/{generation}/{dt}"
                stored = {k.removeprefix(prefix + "/"): v for k, v in golden.items() if k.startswith(prefix + "/")}
                now = {k.removeprefix(prefix + "/"): v for k, v in make_golden.golden_entries(ref, prefix).items()}
                assert max(diffs(now, stored).values()) <= TOL[dt], (variant, size, generation, dt)
