"""SwiftFormer converters and the attention generation, on checkpoints written by the references
themselves (tests/fixtures/checkpoints_swiftformer, see make_checkpoints.py there).

The three fixture files hold the same seeded weights: a transformers directory (attention v1), a
timm state dict (v2) and an original Amshaker state dict (v1 or v2: the caller must say). The
inputs are two non-square 96×128 images: SwiftFormer takes any size.

The live tier (`-m oracle`) repeats the transformers round trip on a full-size SwiftFormer-XS.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npformer
from npformer import SwiftFormerConfig
from npformer.checkpoints.convert import foreign_names, load_any
from npformer.errors import CheckpointMismatchError, ConfigError
from npformer.checkpoints.seeded import seeded_weights
from npformer.checkpoints.torchfile import flatten_state_dict, load_torch_file
from npformer.checkpoints.weights import load_weights

CKPT = Path(__file__).parent / "fixtures" / "checkpoints_swiftformer"
EXPECTED = load_file(str(CKPT / "expected.safetensors"))
TINY = dict(embed_dims=[4, 6, 8, 10], depths=[2, 1, 1, 2], num_labels=10)


def pixels():
    """make_checkpoints.PIXELS_EXPR: two non-square images."""
    return np.random.default_rng(1).standard_normal((2, 3, 96, 128)).astype(np.float32)


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def assert_close(ours, reference, tol=1e-5):
    """max |ours − reference| ≤ tol · max(1, max |reference|): 1e-5 absolute for O(1) logits, relative
    for larger ones. v1's global query is a plain sum of ~800 unit vectors here, so its logits reach
    ~35, where float32 itself (the reference's rounding) is off by ~1e-5."""
    scale = max(1.0, float(np.abs(reference).max()))
    assert max_diff(ours, reference) <= tol * scale, (max_diff(ours, reference), scale)


def test_the_fixture_says_what_the_tests_assume():
    from safetensors import safe_open

    with safe_open(str(CKPT / "expected.safetensors"), "numpy") as f:
        expr = f.metadata()["pixels"]
    np.testing.assert_array_equal(eval(expr, {"np": np}), pixels())
    assert {k: v.shape for k, v in EXPECTED.items()} == {k: (2, 10) for k in ("hf", "timm", "original_v1", "original_v2")}
    # the generation matters: the same weights give different logits under v1 and v2 (the test can tell)
    assert max_diff(EXPECTED["hf"], EXPECTED["timm"]) > 1e-1
    # the original file is in the original names, as the Amshaker repo writes them
    keys = set(flatten_state_dict(load_torch_file(CKPT / "original.pth"), "original.pth"))
    assert {"patch_embed.0.weight", "network.0.1.attn.Proj.weight", "network.0.1.layer_scale_1", "dist_head.weight",
            "network.1.proj.weight", "network.0.0.layer_scale", "network.0.1.local_representation.dwconv.weight",
            "network.0.0.norm.num_batches_tracked"} <= keys
    hf_config = json.loads((CKPT / "hf_bin" / "config.json").read_text())
    assert "attention_generation" not in hf_config and hf_config["architectures"] == ["SwiftFormerForImageClassification"]


# ---------------------------------------------------------------------------------------------
# every source reproduces its reference


@pytest.mark.parametrize("source,generation,expected", [
    ("hf_safetensors", None, "hf"), ("hf_bin", None, "hf"), ("hf_bin", "v1", "hf"),
    ("timm.pth", None, "timm"), ("timm.pth", "v2", "timm"),
    ("original.pth", "v1", "original_v1"), ("original.pth", "v2", "original_v2"),
])
def test_checkpoint_loads_and_reproduces_reference_logits(source, generation, expected):
    model = npformer.from_pretrained(CKPT / source, attention_generation=generation)
    assert type(model) is npformer.SwiftFormerForImageClassification
    assert model.config.attention_generation == {"hf": "v1", "timm": "v2"}.get(expected, generation)
    assert model.config.embed_dims == TINY["embed_dims"] and model.config.depths == TINY["depths"]
    assert model.config.num_labels == 10
    out = model(pixels())
    assert_close(out.logits, EXPECTED[expected])
    assert max_diff(out.logits, EXPECTED["timm" if expected in ("hf", "original_v1") else "hf"]) > 1e-1


@pytest.mark.parametrize("source,expected", [("hf_bin", "hf"), ("timm.pth", "timm")])
def test_float64_loading(source, expected):
    out = npformer.from_pretrained(CKPT / source, dtype=np.float64)(pixels())
    assert out.logits.dtype == np.float64
    assert_close(out.logits, EXPECTED[expected])


def test_the_sources_hold_the_same_tensors():
    """Same canonical tensors from all three schemas: the converters agree with each other."""
    hf = load_any(CKPT / "hf_safetensors")[1]
    for other in (load_any(CKPT / "hf_bin")[1], load_any(CKPT / "timm.pth")[1],
                  load_any(CKPT / "original.pth", "v1")[1], load_any(CKPT / "original.pth", "v2")[1]):
        assert other.keys() == hf.keys()
        for key in hf:
            np.testing.assert_array_equal(other[key], hf[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# the attention generation is never guessed


def test_original_checkpoint_without_a_generation_is_refused():
    for call in (lambda: npformer.from_pretrained(CKPT / "original.pth"),
                 lambda: npformer.convert_checkpoint(CKPT / "original.pth", CKPT / "never-written.safetensors")):
        with pytest.raises(ConfigError) as err:
            call()
        message = str(err.value)
        assert str(CKPT / "original.pth") in message
        assert "attention_generation='v1'" in message and "'v2'" in message
        assert "--attention v1 or --attention v2" in message
        assert "2023-07-26" in message  # how to tell which one a checkpoint needs
    assert not (CKPT / "never-written.safetensors").exists()


@pytest.mark.parametrize("source,wrong", [("hf_safetensors", "v2"), ("hf_bin", "v2"), ("timm.pth", "v1")])
def test_asking_the_wrong_generation_of_a_schema_that_knows_is_refused(source, wrong):
    with pytest.raises(ConfigError, match=f"use attention generation {'v1' if wrong == 'v2' else 'v2'}.*{wrong}"):
        npformer.from_pretrained(CKPT / source, attention_generation=wrong)


@pytest.mark.parametrize("bad", ["v3", "V1", ""])
def test_unknown_generation_names_are_refused(bad):
    with pytest.raises(ConfigError, match="'v1'.*'v2'"):
        npformer.from_pretrained(CKPT / "original.pth", attention_generation=bad)


def test_generation_for_an_efficientformer_is_refused():
    ef = Path(__file__).parent / "fixtures" / "checkpoints"
    for source in ("hf_bin", "original.pth"):
        with pytest.raises(ConfigError, match="SwiftFormer only"):
            npformer.from_pretrained(ef / source, attention_generation="v1")


def test_the_generation_changes_the_logits():
    """v1 weights run under v2 code (and v2 under v1) give other logits; the generation is the only
    difference between the fixtures' two references."""
    cfg, tensors, _ = load_any(CKPT / "hf_safetensors")
    v1 = npformer.SwiftFormerForImageClassification(cfg, tensors)(pixels()).logits
    cfg_v2 = SwiftFormerConfig.from_dict(cfg.to_dict() | {"attention_generation": "v2"})
    v2 = npformer.SwiftFormerForImageClassification(cfg_v2, tensors)(pixels()).logits
    assert max_diff(v1, v2) > 1e-3
    assert_close(v1, EXPECTED["hf"])
    assert_close(v2, EXPECTED["timm"])
    # and the reverse: timm's weights under v1 are transformers' logits
    cfg_t, tensors_t, _ = load_any(CKPT / "timm.pth")
    cfg_t.attention_generation = "v1"
    assert_close(npformer.SwiftFormerForImageClassification(cfg_t, tensors_t)(pixels()).logits,
                 EXPECTED["hf"])


def test_w_g_is_dead_in_v1_and_live_in_v2():
    """Spec §4.2: v1's softmax over a size-1 axis makes every weight 1, so w_g never matters; in v2 it does."""
    for generation, matters in (("v1", False), ("v2", True)):
        cfg, tensors, _ = load_any(CKPT / "original.pth", generation)
        before = npformer.SwiftFormerForImageClassification(cfg, tensors)(pixels()).logits
        changed = dict(tensors)
        for key in [k for k in tensors if k.endswith(".attn.w_g")]:
            changed[key] = -3 * tensors[key]
        after = npformer.SwiftFormerForImageClassification(cfg, changed)(pixels()).logits
        assert (max_diff(before, after) > 1e-3) == matters, generation


# ---------------------------------------------------------------------------------------------
# npformer weight files remember the generation


@pytest.mark.parametrize("source,generation", [
    ("hf_safetensors", None), ("hf_bin", None), ("timm.pth", None), ("original.pth", "v1"), ("original.pth", "v2"),
])
def test_convert_records_the_generation(source, generation, tmp_path):
    dst = tmp_path / "model.safetensors"
    meta = npformer.convert_checkpoint(CKPT / source, dst, attention_generation=generation)
    want = generation or ("v2" if source == "timm.pth" else "v1")
    assert meta["family"] == "swiftformer" and meta["architecture"] == "SwiftFormerForImageClassification"
    assert meta["source"] == {"timm.pth": "timm", "original.pth": "original"}.get(source, "transformers")
    tensors, stored = load_weights(dst)
    assert stored["attention_generation"] == want
    assert json.loads(stored["config"])["attention_generation"] == want
    assert not any(k.endswith("num_batches_tracked") for k in tensors)
    assert "variant" not in stored  # a custom size

    original = npformer.from_pretrained(CKPT / source, attention_generation=generation)
    for again in (None, want):  # the file says which; repeating it is fine
        reloaded = npformer.from_pretrained(dst, attention_generation=again)
        assert reloaded.config == original.config
        np.testing.assert_array_equal(reloaded(pixels()).logits, original(pixels()).logits)

    other = "v2" if want == "v1" else "v1"
    with pytest.raises(CheckpointMismatchError, match=f"attention {want}.*as {other}"):
        npformer.from_pretrained(dst, attention_generation=other)
    # converting the file again keeps what it says
    again = tmp_path / "again.safetensors"
    assert npformer.convert_checkpoint(dst, again)["attention_generation"] == want


def test_contradicting_metadata_is_refused(tmp_path):
    dst = tmp_path / "model.safetensors"
    npformer.convert_checkpoint(CKPT / "timm.pth", dst)
    tensors, meta = load_weights(dst)
    config = json.loads(meta["config"])
    for metadata_says, config_says in (("v1", "v2"), ("v2", "v1")):
        bad = tmp_path / f"bad-{metadata_says}.safetensors"
        save_file(tensors, str(bad), metadata=meta | {"attention_generation": metadata_says,
                                                     "config": json.dumps(config | {"attention_generation": config_says})})
        with pytest.raises(CheckpointMismatchError, match=f"'{metadata_says}' contradicts its config's '{config_says}'"):
            npformer.from_pretrained(bad)
    missing = tmp_path / "missing.safetensors"
    save_file(tensors, str(missing), metadata={k: v for k, v in meta.items() if k != "attention_generation"})
    with pytest.raises(CheckpointMismatchError, match="None contradicts"):
        npformer.from_pretrained(missing)


def test_variant_is_named(tmp_path):
    cfg = SwiftFormerConfig.variant("xs", attention_generation="v2")
    src = tmp_path / "xs.safetensors"
    npformer.SwiftFormerModel(cfg, seeded_weights(cfg, num_heads=0)).save_pretrained(src)
    meta = npformer.convert_checkpoint(src, tmp_path / "again.safetensors")
    assert meta["variant"] == "xs" and meta["attention_generation"] == "v2" and meta["architecture"] == "SwiftFormerModel"


# ---------------------------------------------------------------------------------------------
# classes and foreign files


def test_backbone_class_drops_the_head_and_returns_nchw():
    base = npformer.SwiftFormerModel.from_pretrained(CKPT / "hf_safetensors")
    assert not any(k == "norm.weight" or k.startswith(("norm.", "head.", "head_dist.")) for k in base.weights)
    full = npformer.SwiftFormerForImageClassification.from_pretrained(CKPT / "hf_safetensors")
    assert set(full.weights) - set(base.weights) == {f"{m}.{p}" for m in ("norm",) for p in
                                                     ("weight", "bias", "running_mean", "running_var")} \
        | {f"{m}.{p}" for m in ("head", "head_dist") for p in ("weight", "bias")}
    out = base(pixels(), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 10, 3, 4)  # [B, C3, 96/32, 128/32]
    assert [h.shape for h in out.hidden_states] == [(2, 4, 24, 32), (2, 4, 24, 32), (2, 6, 12, 16), (2, 6, 12, 16),
                                                    (2, 8, 6, 8), (2, 8, 6, 8), (2, 10, 3, 4), (2, 10, 3, 4)]
    trace = npformer.Trace(["stages.3"])
    full(pixels(), trace=trace)
    np.testing.assert_array_equal(out.last_hidden_state, trace["stages.3"])


def test_a_backbone_directory_loads(tmp_path):
    """A transformers directory saved from SwiftFormerModel: no `swiftformer.` prefix, no heads."""
    target = tmp_path / "backbone"
    target.mkdir()
    config = json.loads((CKPT / "hf_safetensors" / "config.json").read_text()) | {"architectures": ["SwiftFormerModel"]}
    (target / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(CKPT / "hf_safetensors" / "model.safetensors"))
    save_file({k.removeprefix("swiftformer."): v for k, v in tensors.items() if k.startswith("swiftformer.")},
              str(target / "model.safetensors"))
    model = npformer.from_pretrained(target)
    assert type(model) is npformer.SwiftFormerModel and model.config.attention_generation == "v1"
    base = npformer.SwiftFormerModel.from_pretrained(CKPT / "hf_safetensors")
    np.testing.assert_array_equal(model(pixels()).last_hidden_state, base(pixels()).last_hidden_state)


def test_safetensors_state_dicts_and_missing_tensors(tmp_path):
    """timm / original state dicts stored as .safetensors load too; a missing tensor is named."""
    cfg, tensors, _ = load_any(CKPT / "timm.pth")
    timm_file = tmp_path / "timm.safetensors"
    save_file(tensors, str(timm_file))
    assert_close(npformer.from_pretrained(timm_file)(pixels()).logits, EXPECTED["timm"])

    original = {foreign: tensors[canon] for canon, foreign in foreign_names(cfg, 2, "original").items()}
    original_file = tmp_path / "original.safetensors"
    save_file(original, str(original_file))
    with pytest.raises(ConfigError, match="does not say which attention"):
        npformer.from_pretrained(original_file)
    assert_close(npformer.from_pretrained(original_file, attention_generation="v1")(pixels()).logits,
                 EXPECTED["original_v1"])

    del original["network.2.0.attn.Proj.weight"]
    original["network.2.0.attn.bogus"] = np.zeros(3, np.float32)
    save_file(original, str(original_file))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): stages\.1\.blocks\.0\.attn\.proj\.weight"
                                                      r".*unexpected keys \(1\): network\.2\.0\.attn\.bogus"):
        npformer.from_pretrained(original_file, attention_generation="v2")


def test_transformers_directory_ignores_a_config_generation(tmp_path):
    """transformers' SwiftFormer is always v1, whatever a config.json claims."""
    target = tmp_path / "hf"
    shutil.copytree(CKPT / "hf_bin", target)
    config = json.loads((target / "config.json").read_text()) | {"attention_generation": "v2"}
    (target / "config.json").write_text(json.dumps(config))
    model = npformer.from_pretrained(target)
    assert model.config.attention_generation == "v1"
    assert_close(model(pixels()).logits, EXPECTED["hf"])


# ---------------------------------------------------------------------------------------------
# live tier: a full-size SwiftFormer-XS written by transformers and timm


@pytest.mark.oracle
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_live_transformers_xs_round_trip(tmp_path, safe):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from npformer.tools.oracle import hf_forward, hf_model

    torch.set_num_threads(2)
    cfg = SwiftFormerConfig.variant("xs")
    weights = seeded_weights(cfg, 2, seed=7)
    hf = hf_model(cfg, weights, 2)
    hf.save_pretrained(tmp_path / "xs", safe_serialization=safe)
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    model = npformer.from_pretrained(tmp_path / "xs")
    assert model.config.attention_generation == "v1" and model.config.embed_dims == [48, 56, 112, 220]
    assert max_diff(model(x).logits, hf_forward(hf, x)["logits"]) <= 1e-4


@pytest.mark.oracle
def test_live_timm_and_original_xs(tmp_path):
    torch = pytest.importorskip("torch")
    from npformer.tools.oracle import import_timm, timm_model

    try:
        import_timm()
    except ImportError as err:
        pytest.skip(f"could not import timm: {err}")
    torch.set_num_threads(2)
    cfg = SwiftFormerConfig.variant("xs", attention_generation="v2")
    model, filter_fn = timm_model(cfg, seeded_weights(cfg, 2, seed=7))
    state = model.state_dict()
    torch.save(state, tmp_path / "timm.pth")
    names = foreign_names(cfg, 2, "original")
    original = {}
    for key, value in state.items():  # the original names, buffers included
        module, leaf = key.rsplit(".", 1)
        original[names[f"{module}.running_mean"].rsplit(".", 1)[0] + "." + leaf if leaf == "num_batches_tracked"
                 else names[key]] = value
    torch.save({"model": original, "epoch": 299}, tmp_path / "original.pth")  # as the training script saves
    fresh, _ = timm_model(cfg, seeded_weights(cfg, 2, seed=8))
    fresh.load_state_dict(filter_fn({"model": original}, fresh), strict=True)  # timm's filter: our names are right
    x = np.random.default_rng(2).standard_normal((1, 3, 160, 224)).astype(np.float32)
    with torch.no_grad():
        want = fresh.eval()(torch.from_numpy(x)).numpy()
    for path, generation in ((tmp_path / "timm.pth", None), (tmp_path / "original.pth", "v2")):
        ours = npformer.from_pretrained(path, attention_generation=generation)
        assert ours.config.attention_generation == "v2" and ours.config.embed_dims == [48, 56, 112, 220]
        assert max_diff(ours(x).logits, want) <= 1e-4
