"""EfficientFormer L1/L3/L7 against timm (timm's names are npformer's canonical names; LayerNorm eps 1e-5).

Golden tier (no torch): the seeded weights and pixels are regenerated from their seeds and
npformer's logits and its Trace records `stem`, `stages.0`…`stages.3`, `norm` are compared to
timm's, stored in tests/fixtures/golden_timm (make_golden.py there; only timm's outputs).
Mutation: transformers' LayerNorm eps (1e-12) must fail the timm golden.
Live tier (oracle): the same comparison against timm directly at batch 1 and 4; timm's own
state_dict written as `.pth` and `.safetensors` goes through npformer's loader and converter;
transformers and timm agree on the same weights once the eps is aligned.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer
from npformer import EfficientFormerConfig
from npformer.checkpoints.convert import load_any
from npformer import EfficientFormerForImageClassificationWithTeacher
from npformer.tools.parity import abs_diff, checksum, scaled_diff, seeded_pixels
from npformer.checkpoints.seeded import seeded_weights
from npformer.trace import Trace
from tiers import variants

GOLDEN = Path(__file__).parent / "fixtures" / "golden_timm"
HF_GOLDEN = Path(__file__).parent / "fixtures" / "golden"
VARIANTS = variants("efficientformer", ["l1", "l3", "l7"])
# logits: max abs diff; features: max abs diff / max(1, max |timm|)
TOL = {"float32": 1e-4, "float64": 1e-9}

_spec = importlib.util.spec_from_file_location("golden_timm_make", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)  # torch-free at import: FEATURES, golden_entries, timm_outputs


def timm_config(variant, **overrides):
    return EfficientFormerConfig.variant(variant, **{"layer_norm_eps": 1e-5, **overrides})


def read_golden(path):
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def npformer_outputs(cfg, weights, pixels, dtype, fuse=False) -> dict:
    """npformer's logits and the Trace records named like timm's modules (full arrays)."""
    trace = Trace(list(make_golden.FEATURES))
    model = EfficientFormerForImageClassificationWithTeacher(cfg, weights, dtype=dtype)
    logits = (model.fuse() if fuse else model)(pixels, trace=trace).logits
    assert list(trace) == list(make_golden.FEATURES)
    return {"logits": logits, **trace.records}


def diffs(ours: dict, ref: dict) -> dict:
    """{name: difference}: absolute for logits, scaled for the features (the residual stream grows)."""
    assert ours.keys() == ref.keys()
    return {k: (abs_diff if k.endswith("logits") else scaled_diff)(ours[k], ref[k]) for k in ref}


def golden_diffs(variant, dtype, cfg=None, fuse=False):
    golden, meta = read_golden(GOLDEN / f"efficientformer_{variant}.safetensors")
    pixels = seeded_pixels(make_golden.BATCH)
    assert checksum({"pixels": pixels}) == meta["pixels_checksum"], "seeded pixels drifted: regenerate fixtures"
    cfg = cfg or timm_config(variant)
    name = np.dtype(dtype).name
    ours = make_golden.golden_entries(npformer_outputs(cfg, seeded_weights(cfg, num_heads=2, seed=0), pixels, dtype, fuse), name)
    return diffs(ours, {k: v for k, v in golden.items() if k.startswith(f"{name}/")})


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_weights_are_what_the_fixtures_were_made_from(variant):
    _, meta = read_golden(GOLDEN / f"efficientformer_{variant}.safetensors")
    assert meta["layer_norm_eps"] == "1e-05"
    assert checksum(seeded_weights(timm_config(variant), num_heads=2, seed=0)) == meta["weights_checksum"]


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_timm_golden(variant, dtype, fuse):
    found = golden_diffs(variant, dtype, fuse=fuse)
    tol = TOL[np.dtype(dtype).name]
    bad = {k: v for k, v in found.items() if v > tol}
    assert not bad, f"beyond {tol}: {bad}"


def test_timm_golden_fails_with_transformers_layer_norm_eps():
    # eps only enters the Meta3D blocks' and the final LayerNorms: everything before stage 3 still
    # matches, everything from stage 3 on must not
    found = golden_diffs("l1", np.float64, cfg=EfficientFormerConfig.variant("l1"))  # eps 1e-12
    early = [f"float64/{k}" for k in ("stem", "stages.0", "stages.1", "stages.2")]
    assert max(found[k] for k in early) <= TOL["float64"]
    late = {k: v for k, v in found.items() if k not in early}
    assert min(late.values()) > TOL["float64"], late


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_timm_and_transformers_goldens_differ_by_the_eps_alone(variant):
    # same seeded weights and pixels; timm (eps 1e-5) vs transformers (eps 1e-12), float64 logits
    timm_golden, timm_meta = read_golden(GOLDEN / f"efficientformer_{variant}.safetensors")
    hf_golden, hf_meta = read_golden(HF_GOLDEN / f"efficientformer_{variant}.safetensors")
    assert timm_meta["weights_checksum"] == hf_meta["weights_checksum"]
    assert timm_meta["pixels_checksum"] == hf_meta["pixels_checksum"]
    gap = abs_diff(timm_golden["float64/logits"], hf_golden["WithTeacher/float64/logits"])
    assert TOL["float64"] < gap < 1e-4, gap


# ---------------------------------------------------------------------------------------------
# live tier


@pytest.fixture(scope="module")
def timm_models():
    """timm_models(variant, dtype) -> timm's model holding the seeded weights (built once per module)."""
    pytest.importorskip("torch")
    from npformer.tools.oracle import import_timm, timm_model

    try:
        import_timm()  # not importorskip: timm needs oracle.import_timm's torchvision workaround here
    except ImportError as err:
        pytest.skip(f"could not import 'timm': {err}")

    cache = {}

    def get(variant, dtype):
        key = (variant, np.dtype(dtype).name)
        if key not in cache:
            cfg = timm_config(variant)
            cache[key] = timm_model(cfg, seeded_weights(cfg, num_heads=2, seed=0), dtype)[0]
        return cache[key]

    yield get
    cache.clear()


@pytest.mark.oracle
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_timm_live(variant, batch, timm_models):
    cfg = timm_config(variant)
    weights = seeded_weights(cfg, num_heads=2, seed=0)
    pixels = seeded_pixels(batch)
    dtypes = (np.float32, np.float64) if batch == 1 else (np.float32,)
    for dtype in dtypes:
        ref = make_golden.timm_outputs(timm_models(variant, dtype), pixels)
        for fuse in (False, True):
            found = diffs(npformer_outputs(cfg, weights, pixels, dtype, fuse), ref)
            tol = TOL[np.dtype(dtype).name]
            assert max(found.values()) <= tol, (np.dtype(dtype).name, fuse, found)


@pytest.mark.oracle
@pytest.mark.parametrize("variant", VARIANTS)
def test_timm_state_dict_files_load_convert_and_match_timm(variant, timm_models, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    model = timm_models(variant, np.float32)
    state = model.state_dict()
    # the derived buffers npformer checks and drops are really in timm's state_dict
    assert any(k.endswith(".attention_bias_idxs") for k in state)
    assert any(k.endswith(".num_batches_tracked") for k in state)
    pth = tmp_path / f"efficientformer_{variant}.pth"
    torch.save(state, pth)
    hub = tmp_path / "model.safetensors"  # how timm's hub weights are distributed
    save_file(state, str(hub), metadata={"format": "pt"})

    expected_cfg = timm_config(variant)
    seeded = seeded_weights(expected_cfg, num_heads=2, seed=0)
    pixels = seeded_pixels(1)
    ref = make_golden.timm_outputs(model, pixels)["logits"]
    logits = {}
    for path in (pth, hub):
        cfg, tensors, meta = load_any(path)
        assert meta["source"] == "timm" and meta["architecture"] == "EfficientFormerForImageClassificationWithTeacher"
        assert cfg.layer_norm_eps == 1e-5
        assert (cfg.hidden_sizes, cfg.depths, cfg.num_meta3d_blocks) == (
            expected_cfg.hidden_sizes, expected_cfg.depths, expected_cfg.num_meta3d_blocks)
        assert cfg == expected_cfg
        assert tensors.keys() == seeded.keys()
        assert all(np.array_equal(tensors[k], seeded[k]) for k in seeded)
        loaded = npformer.from_pretrained(path)
        assert type(loaded) is EfficientFormerForImageClassificationWithTeacher
        logits[path.suffix] = loaded(pixels).logits
        assert abs_diff(logits[path.suffix], ref) <= TOL["float32"], path.name

    converted = tmp_path / "x.safetensors"
    meta = npformer.convert_checkpoint(pth, converted)
    assert meta["variant"] == variant and meta["source"] == "timm"
    reloaded = npformer.from_pretrained(converted)
    assert reloaded.config == expected_cfg
    np.testing.assert_array_equal(reloaded(pixels).logits, logits[".pth"])
    np.testing.assert_array_equal(logits[".safetensors"], logits[".pth"])
    for path in (pth, hub, converted):  # up to 330 MB each (L7): do not leave them in pytest's tmp dirs
        path.unlink()


@pytest.mark.oracle
@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_and_timm_give_identical_logits_with_eps_aligned(variant, timm_models):
    pytest.importorskip("transformers")
    from npformer.tools.oracle import hf_forward, hf_model

    cfg = timm_config(variant)
    weights = seeded_weights(cfg, num_heads=2, seed=0)
    pixels = seeded_pixels(1)
    for dtype in (np.float32, np.float64):
        hf = hf_forward(hf_model(cfg, weights, 2, dtype), pixels)["logits"]
        timm = make_golden.timm_outputs(timm_models(variant, dtype), pixels)["logits"]
        # measured bit-identical (torch 2.13.0, transformers 4.40.2, timm 1.0.31)
        np.testing.assert_array_equal(hf, timm, err_msg=np.dtype(dtype).name)
