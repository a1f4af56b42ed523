"""Converters and the npformer weight format, on checkpoints written by the references themselves
(tests/fixtures/checkpoints, see make_checkpoints.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npformer
from npformer import EfficientFormerConfig
from npformer.checkpoints.convert import foreign_names
from npformer.errors import CheckpointMismatchError, ConfigError, WeightFileError
from npformer.tools.parity import seeded_pixels
from npformer.checkpoints.weights import FORMAT_VERSION

CKPT = Path(__file__).parent / "fixtures" / "checkpoints"
EXPECTED = load_file(str(CKPT / "expected.safetensors"))


@pytest.mark.parametrize("source,expected", [
    ("hf_safetensors", "hf"), ("hf_bin", "hf"), ("original.pth", "original"), ("timm.pth", "original"),
])
def test_checkpoint_loads_and_reproduces_reference_logits(source, expected):
    model = npformer.from_pretrained(CKPT / source)
    assert type(model).__name__ == "EfficientFormerForImageClassificationWithTeacher"
    np.testing.assert_allclose(model(seeded_pixels(1)).logits, EXPECTED[expected], rtol=0, atol=1e-5)


def test_original_and_timm_checkpoints_get_pytorch_layer_norm_eps():
    assert npformer.from_pretrained(CKPT / "original.pth").config.layer_norm_eps == 1e-5
    assert npformer.from_pretrained(CKPT / "hf_bin").config.layer_norm_eps == 1e-12


@pytest.mark.parametrize("source", ["hf_safetensors", "hf_bin", "original.pth"])
def test_convert_writes_a_self_describing_file(source, tmp_path):
    dst = tmp_path / "model.safetensors"
    meta = npformer.convert_checkpoint(CKPT / source, dst)
    assert meta["format"] == "npformer" and meta["format_version"] == str(FORMAT_VERSION)
    assert meta["checkpoint"] == str(CKPT / source) and meta["converted"].endswith("Z")
    tensors = load_file(str(dst))
    assert not any(k.endswith(("num_batches_tracked", "attention_bias_idxs")) for k in tensors)
    assert all(v.dtype == np.float32 for v in tensors.values())
    original = npformer.from_pretrained(CKPT / source)
    reloaded = npformer.from_pretrained(dst)
    assert reloaded.config == original.config
    np.testing.assert_array_equal(reloaded(seeded_pixels(1)).logits, original(seeded_pixels(1)).logits)


def test_class_loading_drops_unused_heads_like_transformers():
    single = npformer.EfficientFormerForImageClassification.from_pretrained(CKPT / "hf_bin")
    teacher = npformer.from_pretrained(CKPT / "hf_bin")
    base = npformer.EfficientFormerModel.from_pretrained(CKPT / "hf_bin")
    pixels = seeded_pixels(1)
    np.testing.assert_array_equal(single(pixels).logits, teacher(pixels).cls_logits)
    assert base(pixels).last_hidden_state.shape == (1, 49, 32)


def test_float64_loading():
    model = npformer.from_pretrained(CKPT / "hf_safetensors", dtype=np.float64)
    out = model(seeded_pixels(1))
    assert out.logits.dtype == np.float64
    np.testing.assert_allclose(out.logits, EXPECTED["hf"], rtol=0, atol=1e-5)


def _copy_hf_dir(tmp_path, name="hf_safetensors"):
    target = tmp_path / name
    shutil.copytree(CKPT / name, target)
    return target


def test_missing_and_misshaped_tensors_are_named(tmp_path):
    target = _copy_hf_dir(tmp_path)
    tensors = load_file(str(target / "model.safetensors"))
    del tensors["efficientformer.layernorm.bias"]
    tensors["classifier.weight"] = tensors["classifier.weight"][:5]
    tensors["efficientformer.bogus"] = np.zeros(3, np.float32)
    save_file(tensors, str(target / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        npformer.from_pretrained(target)
    message = str(err.value)
    assert str(target) in message
    assert "missing keys (1): norm.bias" in message
    assert "unexpected keys (1): efficientformer.bogus" in message
    assert "head.weight: expected shape (10, 32), got (5, 32)" in message


def test_wrong_attention_bias_index_table_is_refused(tmp_path):
    target = _copy_hf_dir(tmp_path)
    tensors = load_file(str(target / "model.safetensors"))
    key = "efficientformer.encoder.last_stage.meta3D_layers.blocks.0.token_mixer.attention_bias_idxs"
    tensors[key] = tensors[key].T.copy()[::-1].copy()
    save_file(tensors, str(target / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="attention_bias_idxs is not the"):
        npformer.from_pretrained(target)


def test_config_fields_are_honoured_or_rejected(tmp_path):
    target = _copy_hf_dir(tmp_path)
    config = json.loads((target / "config.json").read_text())
    for field, value, message in [("dim", 448, "dim=448 must equal hidden_sizes"),
                                  ("hidden_act", "swish", "hidden_act='swish' is not supported"),
                                  ("mystery_knob", 3, "'mystery_knob' is not one of EfficientFormerConfig's fields")]:
        (target / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(ConfigError, match=message):
            npformer.from_pretrained(target)


def test_unreadable_sources_get_clear_errors(tmp_path):
    with pytest.raises(WeightFileError, match="no such file"):
        npformer.from_pretrained(tmp_path / "nope.safetensors")
    with pytest.raises(WeightFileError, match="without config.json"):
        npformer.from_pretrained(tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(WeightFileError, match="bad.safetensors"):
        npformer.from_pretrained(tmp_path / "bad.safetensors")


def test_future_format_version_is_refused(tmp_path):
    dst = tmp_path / "m.safetensors"
    npformer.convert_checkpoint(CKPT / "hf_bin", dst)
    tensors = load_file(str(dst))
    from safetensors import safe_open

    with safe_open(str(dst), "np") as f:
        meta = f.metadata()
    save_file(tensors, str(dst), metadata={**meta, "format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(WeightFileError, match="newer than this npformer"):
        npformer.from_pretrained(dst)


def test_foreign_name_maps_cover_the_transformers_key_sets():
    # transformers' L1/L3/L7 WithTeacher checkpoints have 281/457/649 keys (spec §7.1), of which
    # num_batches_tracked (one per BatchNorm) and attention_bias_idxs are derived buffers
    for variant, total in (("l1", 281), ("l3", 457), ("l7", 649)):
        cfg = EfficientFormerConfig.variant(variant)
        names = foreign_names(cfg, 2, "transformers")
        batch_norms = sum(k.endswith("running_var") for k in names)
        assert len(names) + batch_norms + cfg.num_meta3d_blocks == total
        assert len(set(names.values())) == len(names)


# ---------------------------------------------------------------------------------------------
# live tier: full-size checkpoints written by transformers' save_pretrained


@pytest.mark.oracle
@pytest.mark.parametrize("safe", [True, False])
def test_save_pretrained_l1_end_to_end(tmp_path, safe):
    pytest.importorskip("transformers")
    from npformer.tools.oracle import hf_forward, hf_model
    from npformer.checkpoints.seeded import seeded_weights

    cfg = EfficientFormerConfig.variant("l1")
    hf = hf_model(cfg, seeded_weights(cfg, 2, seed=5), 2)
    hf.save_pretrained(tmp_path, safe_serialization=safe)
    pixels = seeded_pixels(2)
    ours = npformer.from_pretrained(tmp_path)(pixels).logits
    np.testing.assert_allclose(ours, hf_forward(hf, pixels)["logits"], rtol=0, atol=1e-4)
