"""EfficientFormerConfig: transformers' config.json read and written, every field honoured or rejected."""

import json

import numpy as np
import pytest

import npformer.models.efficientformer.model as ef
from npformer import EfficientFormerConfig
from npformer.errors import ConfigError
from npformer.tools.parity import seeded_pixels
from npformer.checkpoints.seeded import seeded_weights


def test_variants():
    assert EfficientFormerConfig.variant("l1").hidden_sizes == [48, 96, 224, 448]
    l7 = EfficientFormerConfig.variant("efficientformer-l7")
    assert (l7.depths, l7.num_meta3d_blocks, l7.dim, l7.hidden_size) == ([6, 6, 18, 8], 8, 768, 768)
    with pytest.raises(ConfigError, match="unknown EfficientFormer variant 'l5'"):
        EfficientFormerConfig.variant("l5")


def test_defaults_are_transformers_code_defaults():
    cfg = EfficientFormerConfig()
    assert cfg.layer_norm_eps == 1e-12 and cfg.batch_norm_eps == 1e-5 and cfg.num_labels == 2
    assert cfg.input_side_range() == (193, 224)


def test_json_round_trip(tmp_path):
    cfg = EfficientFormerConfig.variant("l3", id2label={i: f"c{i}" for i in range(1000)})
    cfg.extra["architectures"] = ["EfficientFormerForImageClassificationWithTeacher"]
    cfg.to_json_file(tmp_path / "config.json")
    back = EfficientFormerConfig.from_json_file(tmp_path / "config.json")
    assert back == cfg
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["model_type"] == "efficientformer" and d["id2label"]["7"] == "c7" and d["hidden_size"] == 512


@pytest.mark.parametrize("change,message", [
    (dict(dim=64), "dim=64 must equal hidden_sizes"),
    (dict(hidden_size=64), "hidden_size=64 must equal"),
    (dict(depths=[1, 1, 1]), "4 entries"),
    (dict(num_meta3d_blocks=5), "num_meta3d_blocks=5 must lie in 1..depths"),
    (dict(num_meta3d_blocks=0), "transformers 4.40.2 then returns the first batch item"),
    (dict(hidden_act="swish"), "not supported"),
    (dict(pool_size=4), "pool_size=4 must be odd"),
    (dict(problem_type="ranking"), "problem_type='ranking'"),
    (dict(layer_norm_eps=0), "layer_norm_eps=0 must be > 0"),
    (dict(downsample_stride=4), "no input size gives the 7×7 last stage"),
])
def test_impossible_configs_are_rejected(change, message):
    with pytest.raises(ConfigError, match=message):
        EfficientFormerConfig.variant("l1", **change)


def test_unknown_fields_are_rejected_but_generic_ones_pass_through(tmp_path):
    base = EfficientFormerConfig.variant("l1").to_dict()
    assert EfficientFormerConfig.from_dict({**base, "torch_dtype": "float32"}).extra["torch_dtype"] == "float32"
    with pytest.raises(ConfigError, match="'crop_pct' is not one of EfficientFormerConfig's fields"):
        EfficientFormerConfig.from_dict({**base, "crop_pct": 0.9}, source="x/config.json")
    with pytest.raises(ConfigError, match="model_type is 'swiftformer'"):
        EfficientFormerConfig.from_dict({**base, "model_type": "swiftformer"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a readable JSON config"):
        EfficientFormerConfig.from_json_file(tmp_path / "bad.json")


def test_num_labels_follows_id2label_as_in_transformers():
    cfg = EfficientFormerConfig.from_dict({"id2label": {"0": "a", "1": "b", "2": "c"}, "num_labels": 7})
    assert cfg.num_labels == 3 and cfg.id2label == {0: "a", 1: "b", 2: "c"}


# non-default architectures: each field changes the model the way transformers builds it
ODD_CONFIGS = {
    "no_layer_scale_relu": dict(use_layer_scale=False, hidden_act="relu"),
    "pool5_two_meta3d": dict(pool_size=5, num_meta3d_blocks=2, depths=[1, 1, 2, 3]),
    "heads4_keydim16_ratio2": dict(num_attention_heads=4, key_dim=16, attention_ratio=2),
    "no_downsample_into_stage1": dict(hidden_sizes=[32, 32, 64, 96], dim=96, hidden_size=96,
                                      downsamples=[False, True, True, True], resolution=14),
    "all_attention_last_stage": dict(depths=[1, 1, 1, 2], num_meta3d_blocks=2, mlp_expansion_ratio=2),
}


def odd_config(name):
    base = dict(hidden_sizes=[16, 24, 32, 40], dim=40, hidden_size=40, depths=[1, 1, 1, 2], num_labels=5)
    return EfficientFormerConfig(**{**base, **ODD_CONFIGS[name]})


def test_no_downsample_config_changes_the_grid():
    cfg = odd_config("no_downsample_into_stage1")
    assert cfg.input_side_range() == (209, 224)  # one downsample fewer: 14×14 grid
    model = ef.EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, 2))
    out = model(seeded_pixels(1), output_hidden_states=True)
    assert len(out.hidden_states) == 7 and out.hidden_states[-1].shape == (1, 196, 96)


@pytest.mark.oracle
@pytest.mark.parametrize("name", list(ODD_CONFIGS))
def test_non_default_configs_match_transformers(name):
    pytest.importorskip("transformers")
    from npformer.tools.oracle import hf_forward, hf_model
    from npformer.tools.parity import max_diffs, npformer_outputs

    cfg = odd_config(name)
    weights = seeded_weights(cfg, 2)
    pixels = seeded_pixels(2, size=cfg.input_side_range()[1])
    ours = npformer_outputs(cfg, weights, 2, pixels, np.float64)
    ref = hf_forward(hf_model(cfg, weights, 2, np.float64), pixels, output_hidden_states=True, output_attentions=True)
    assert max(max_diffs(ours, ref, "efficientformer", 2).values()) < 1e-9
