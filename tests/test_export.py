"""Writing transformers and timm checkpoints without torch (npformer/checkpoints/export.py,
`save_pretrained(directory, format="transformers" | "timm")`).

Torch-free: the writers give what the references' own writers gave for the same weights — the
tiny fixtures written by transformers' save_pretrained (tests/fixtures/checkpoints*/hf_safetensors:
same keys, dtypes, values, config.json) and by `torch.save(timm_model.state_dict())` (timm.pth);
npformer → transformers / timm → npformer round trips are exact; an original .pth becomes a
transformers checkpoint whose logits are timm's on the original file (the fixture's expected
values); what a format cannot hold is refused by name.
Live (oracle): transformers 4.40.2 `from_pretrained` and timm `create_model(..., pretrained=True)`
load what npformer wrote to the same logits (≤ 1e-5), and transformers reads the written
preprocessor_config.json into the processor npformer uses.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer
from npformer.checkpoints.convert import load_any
from npformer.checkpoints.export import export_checkpoint, reference_state_dict
from npformer.checkpoints.torchfile import flatten_state_dict, load_torch_file
from npformer.errors import ConfigError, InputError, NpformerError
from npformer.preprocess import EfficientFormerImageProcessor, recipe
from npformer.tools.parity import seeded_pixels

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "checkpoints"
SWIFT = FIXTURES / "checkpoints_swiftformer"
ROUND_TRIP = 1e-5  # logits after a reference loads npformer's files (the bar)


def read(path):
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def seeded_classes():
    """One seeded model of every class the transformers format has."""
    l1, xs = npformer.EfficientFormerConfig.variant("l1"), npformer.SwiftFormerConfig.variant("xs")
    return [npformer.EfficientFormerForImageClassificationWithTeacher(l1), npformer.EfficientFormerForImageClassification(l1),
            npformer.EfficientFormerModel(l1), npformer.SwiftFormerForImageClassification(xs), npformer.SwiftFormerModel(xs)]


def output(out):
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


# ---------------------------------------------------------------------------------------------
# the same files the references write


@pytest.mark.parametrize("fixture", [TINY, SWIFT], ids=["efficientformer", "swiftformer"])
def test_transformers_writer_matches_save_pretrained(tmp_path, fixture):
    config, tensors, metadata = load_any(fixture / "hf_safetensors")
    npformer.checkpoints.export.save_transformers(tmp_path, config, tensors, metadata["architecture"])
    ours, ours_meta = read(tmp_path / "model.safetensors")
    theirs, theirs_meta = read(fixture / "hf_safetensors" / "model.safetensors")
    assert ours_meta == theirs_meta == {"format": "pt"}
    assert sorted(ours) == sorted(theirs)  # every buffer too (num_batches_tracked, attention_bias_idxs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape, key
        if not key.endswith("num_batches_tracked"):  # counters: transformers' seeded model ran no batch either
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    theirs_config = json.loads((fixture / "hf_safetensors" / "config.json").read_text())
    assert json.loads((tmp_path / "config.json").read_text()) == theirs_config
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    family = npformer.models.registry.family_of(config)
    assert processor == recipe(family.own_recipe).to_dict()


@pytest.mark.parametrize("fixture", [TINY, SWIFT], ids=["efficientformer", "swiftformer"])
def test_timm_state_dict_matches_timms(fixture):
    """The tiny fixtures are no timm model name (so save_timm refuses them), but the state dict it
    writes is `reference_state_dict(..., "timm")`: equal to timm's own, buffers included."""
    theirs = flatten_state_dict(load_torch_file(fixture / "timm.pth"), fixture / "timm.pth")
    config, tensors, _ = load_any(fixture / "timm.pth", attention_generation=None)
    ours = reference_state_dict(config, tensors, 2, "timm")
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == tuple(theirs[key].shape), key
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# round trips, torch-free


def test_npformer_to_transformers_to_npformer_is_exact(tmp_path):
    pixels = seeded_pixels(1)
    for model in seeded_classes():
        directory = tmp_path / type(model).__name__
        model.save_pretrained(directory, format="transformers")
        assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
        back = npformer.from_pretrained(directory)
        assert type(back) is type(model)
        assert back.weights.keys() == model.weights.keys()
        for key in model.weights:
            np.testing.assert_array_equal(back.weights[key], model.weights[key])
        np.testing.assert_array_equal(output(back(pixels)), output(model(pixels)))
        assert json.loads((directory / "config.json").read_text())["architectures"] == [type(model).__name__]


@pytest.mark.parametrize("name", ["efficientformer_l1", "swiftformer_xs", "efficientformerv2_s0"])
def test_npformer_to_timm_to_npformer_is_exact(tmp_path, name):
    model = npformer.create_model(name)
    model.model.save_pretrained(tmp_path, format="timm")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == name and config["num_classes"] == 1000
    assert config["pretrained_cfg"]["crop_pct"] == 0.95 and config["pretrained_cfg"]["interpolation"] == "bicubic"
    back = npformer.create_model(name, pretrained=True, checkpoint_path=tmp_path / "model.safetensors")
    pixels = seeded_pixels(1)
    np.testing.assert_array_equal(back(pixels), model(pixels))
    assert type(npformer.from_pretrained(tmp_path)) is type(model.model)  # the directory loads as a timm checkpoint


@pytest.mark.parametrize("name", [n for f in npformer.models.registry.FAMILIES.values() for n in f.timm_names.values()])
def test_timm_config_json_is_what_timm_writes(tmp_path, name):
    """config.json against the one timm's own save_for_hf writes (tests/fixtures/timm_hub); timm's
    informational paper fields aside."""
    theirs = json.loads((FIXTURES / "timm_hub" / "timm_configs.json").read_text())["names"][name]["hub_config"]
    fam, variant = npformer.timm.factory.lookup(name)
    config = npformer.checkpoints.export.timm_variant_config(fam, variant)
    ours = json.loads(json.dumps(npformer.checkpoints.export.timm_hub_config(fam, variant, config)))
    informational = {"origin_url", "paper_name", "paper_ids"}
    assert {k: v for k, v in theirs["pretrained_cfg"].items() if k not in informational} == ours.pop("pretrained_cfg")
    assert {k: v for k, v in theirs.items() if k != "pretrained_cfg"} == ours


def test_an_original_checkpoint_becomes_a_transformers_one_without_torch(tmp_path):
    """The snap-research layout (tiny fixture) written as a transformers directory: npformer reads it
    back to timm's logits on the original file (expected.safetensors, timm through its own filter)."""
    export_checkpoint(TINY / "original.pth", tmp_path, "transformers")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["layer_norm_eps"] == 1e-5 and config["architectures"] == ["EfficientFormerForImageClassificationWithTeacher"]
    logits = npformer.from_pretrained(tmp_path)(seeded_pixels(1)).logits
    expected, _ = read(TINY / "expected.safetensors")
    np.testing.assert_allclose(logits, expected["original"], atol=1e-4, rtol=0)


def test_an_original_checkpoint_becomes_a_timm_one_without_torch(tmp_path):
    """EfficientFormer-L1 in snap-research's key names (the golden fixtures' seed-0 weights, as
    safetensors: the same reader path as a .pth) written as a timm directory: create_model reads it
    back to timm's stored logits (tests/fixtures/golden_timm)."""
    from safetensors.numpy import save_file

    from npformer.checkpoints.convert import foreign_names

    config = npformer.EfficientFormerConfig.variant("l1", layer_norm_eps=1e-5)
    weights = npformer.checkpoints.seeded.seeded_weights(config, 2)
    original = {foreign: weights[canon] for canon, foreign in foreign_names(config, 2, "original").items()}
    save_file(original, str(tmp_path / "efficientformer_l1_original.safetensors"))
    export_checkpoint(tmp_path / "efficientformer_l1_original.safetensors", tmp_path / "timm", "timm")
    model = npformer.create_model("efficientformer_l1", pretrained=True, checkpoint_path=tmp_path / "timm" / "model.safetensors")
    expected, _ = read(FIXTURES / "golden_timm" / "efficientformer_l1.safetensors")
    np.testing.assert_allclose(model(seeded_pixels(2)), expected["float32/logits"], atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# what a format cannot hold


def test_refusals_name_what_the_format_cannot_hold(tmp_path):
    v2 = npformer.EfficientFormerV2ForImageClassificationWithTeacher(npformer.EfficientFormerV2Config.variant("s0"))
    with pytest.raises(ConfigError, match="EfficientFormerV2 has no transformers port"):
        v2.save_pretrained(tmp_path / "a", format="transformers")
    swift_v2 = npformer.SwiftFormerForImageClassification(npformer.SwiftFormerConfig.variant("xs", attention_generation="v2"))
    with pytest.raises(ConfigError, match="transformers implements SwiftFormer's attention generation v1 only.*format='timm'"):
        swift_v2.save_pretrained(tmp_path / "b", format="transformers")
    swift_v1 = npformer.SwiftFormerForImageClassification(npformer.SwiftFormerConfig.variant("xs"))
    with pytest.raises(ConfigError, match="timm implements SwiftFormer's attention generation v2 only.*format='transformers'"):
        swift_v1.save_pretrained(tmp_path / "c", format="timm")
    tiny = npformer.from_pretrained(TINY / "timm.pth")
    with pytest.raises(ConfigError, match="timm builds EfficientFormer only as its named models .*efficientformer_l1"):
        tiny.save_pretrained(tmp_path / "d", format="timm")
    hf_l1 = npformer.EfficientFormerForImageClassificationWithTeacher(npformer.EfficientFormerConfig.variant("l1"))
    with pytest.raises(ConfigError, match=r"layer_norm_eps=1e-12 \(timm's efficientformer_l1: 1e-05\).*strict=False"):
        hf_l1.save_pretrained(tmp_path / "e", format="timm")
    hf_l1.save_pretrained(tmp_path / "e", format="timm", strict=False)  # timm's eps, on request
    assert (tmp_path / "e" / "model.safetensors").is_file()
    one_head = npformer.EfficientFormerForImageClassification(npformer.EfficientFormerConfig.variant("l1", layer_norm_eps=1e-5))
    with pytest.raises(ConfigError, match="two-head classifiers"):
        one_head.save_pretrained(tmp_path / "f", format="timm")
    with pytest.raises(InputError, match="fused"):
        hf_l1.fuse().save_pretrained(tmp_path / "g", format="transformers")
    with pytest.raises(ConfigError, match="format must be one of npformer, transformers, tf, timm"):
        hf_l1.save_pretrained(tmp_path / "h", format="onnx")
    with pytest.raises(ConfigError, match="format='npformer' .* takes no options"):
        hf_l1.save_pretrained(tmp_path / "k.safetensors", strict=False)
    with pytest.raises(ConfigError, match=r"takes the options \['image_processor'\], not \['strict'\]"):
        hf_l1.save_pretrained(tmp_path / "i", format="transformers", strict=False)
    with pytest.raises(ConfigError, match="TorchvisionEvalTransform has no transformers counterpart"):
        hf_l1.save_pretrained(tmp_path / "j", format="transformers", image_processor=recipe("timm"))
    (tmp_path / "file").write_text("")
    with pytest.raises(NpformerError, match="exists and is not a directory"):
        hf_l1.save_pretrained(tmp_path / "file", format="transformers")
    assert not any((tmp_path / d).exists() for d in "abcdfghij")


def test_an_image_processor_can_be_given(tmp_path):
    model = npformer.EfficientFormerModel(npformer.EfficientFormerConfig.variant("l1"))
    processor = EfficientFormerImageProcessor(size={"shortest_edge": 235})
    model.save_pretrained(tmp_path, format="transformers", image_processor=processor)
    assert EfficientFormerImageProcessor.from_pretrained(tmp_path) == processor
    assert npformer.AutoImageProcessor.from_pretrained(tmp_path) == processor


# ---------------------------------------------------------------------------------------------
# live: the references load what npformer wrote


@pytest.mark.oracle
def test_transformers_loads_what_npformer_wrote(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pixels = seeded_pixels(2)
    for model in seeded_classes():
        directory = tmp_path / type(model).__name__
        model.save_pretrained(directory, format="transformers")
        auto = transformers.AutoModel if type(model).__name__.endswith("Model") else transformers.AutoModelForImageClassification
        reference, info = auto.from_pretrained(directory, output_loading_info=True)
        assert type(reference).__name__ == type(model).__name__
        assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        with torch.no_grad():
            theirs = output(reference.eval()(torch.from_numpy(pixels))).numpy()
        ours = output(model(pixels))
        scale = 1.0 if getattr(model(pixels), "logits", None) is not None else max(1.0, float(np.abs(theirs).max()))
        assert np.abs(ours - theirs).max() / scale <= ROUND_TRIP, type(model).__name__
        processor = transformers.AutoImageProcessor.from_pretrained(directory)
        family = npformer.models.registry.family_of(model.config)
        assert type(processor).__name__ == family.processor
        cats = FIXTURES / "images" / "two_cats.png"
        from PIL import Image

        theirs_px = processor(Image.open(cats).convert("RGB"), return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(npformer.AutoImageProcessor.from_pretrained(directory)(cats)["pixel_values"], theirs_px)


@pytest.mark.oracle
def test_transformers_loads_an_original_checkpoint_npformer_converted(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    export_checkpoint(TINY / "original.pth", tmp_path, "transformers")
    reference = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        logits = reference(torch.from_numpy(seeded_pixels(1))).logits.numpy()
    expected, _ = read(TINY / "expected.safetensors")
    np.testing.assert_allclose(logits, expected["original"], atol=ROUND_TRIP, rtol=0)


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["efficientformer_l1", "swiftformer_xs", "efficientformerv2_s0"])
def test_timm_loads_what_npformer_wrote(tmp_path, monkeypatch, name):
    torch = pytest.importorskip("torch")
    pytest.importorskip("huggingface_hub")
    from npformer.tools.oracle import import_timm

    from hub_cache import add_directory, offline_hub

    timm = import_timm()
    model = npformer.create_model(name)
    model.model.save_pretrained(tmp_path / "out", format="timm")
    pixels = seeded_pixels(2)
    ours = model(pixels)
    # a local file, as timm documents it; then the hub cache, as timm.create_model(name, pretrained=True) reads it
    local = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "out" / "model.safetensors")))
    cache = offline_hub(monkeypatch, tmp_path / "hf")
    add_directory(cache, f"timm/{name}.{model.pretrained_cfg['tag']}", tmp_path / "out")
    hub_name = f"hf-hub:timm/{name}.{model.pretrained_cfg['tag']}"
    for reference, twin in ((local, model), (timm.create_model(name, pretrained=True), model),
                            (timm.create_model(hub_name, pretrained=True), npformer.create_model(hub_name, pretrained=True))):
        with torch.no_grad():
            theirs = reference.eval()(torch.from_numpy(pixels)).numpy()
        assert np.abs(ours - theirs).max() <= ROUND_TRIP
        assert np.abs(twin(pixels) - theirs).max() <= ROUND_TRIP
        assert timm.data.resolve_model_data_config(reference) == npformer.timm.data.resolve_model_data_config(twin)
