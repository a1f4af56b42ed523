"""Hugging Face hub ids (npformer/hub.py), read from a real hub cache built here with huggingface_hub's
own layout (tests/hub_cache.py), offline, every socket blocked.

Torch-free (these need huggingface_hub, the `hub` extra, and skip without it; CI's live step
installs it): the tiny transformers-written fixtures (tests/fixtures/checkpoints*) and the
seeded weights of the golden fixtures, exported with npformer's transformers / timm writers, are
put in the cache under the published repo ids and loaded by id — by `npformer.from_pretrained`,
the model classes, the Auto classes and `create_model` — giving the references' stored logits
(transformers' in tests/fixtures/golden, timm's in golden_timm, golden_v2). Revisions, commit
hashes, `cache_dir=`, `local_files_only=` and snapshots holding only pytorch_model.bin (as the
snap-research repos do) are exercised, and so is every error a user meets.

Without huggingface_hub (the torch-free CI step): a hub id gets a MissingExtraError saying what to
install and where files may be put by hand, while local paths keep working.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer
from npformer.errors import MissingExtraError, WeightFileError
from npformer.hub import MODEL_FILES, is_hub_id, resolve
from npformer.preprocess import EfficientFormerImageProcessor, ViTImageProcessor, recipe
from npformer.tools.parity import sample, seeded_pixels

from hub_cache import add_directory, add_repo, offline_hub, scanned

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "checkpoints"
SWIFT = FIXTURES / "checkpoints_swiftformer"
L1_REPO = "snap-research/efficientformer-l1-300"
XS_REPO = "MBZUAI/swiftformer-xs"
ATOL = 1e-4  # float32 logits against the references' (as the golden tiers)
# transformers' published preprocessor configs (tests/test_preprocess.py, test_cli.py)
SNAP_PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
                     "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                     "image_processor_type": "EfficientFormerImageProcessor", "image_std": [0.229, 0.224, 0.225],
                     "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}
MBZUAI_PREPROCESSOR = {"do_normalize": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                       "image_std": [0.229, 0.224, 0.225], "size": 224}


def stored(path, key=None):
    with safe_open(str(path), "np") as f:
        return f.get_tensor(key) if key else {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub uses by default, offline, with no network."""
    pytest.importorskip("huggingface_hub")
    return offline_hub(monkeypatch, tmp_path / "hf")


# ---------------------------------------------------------------------------------------------
# what a hub id is


@pytest.mark.parametrize("text,expected", [
    ("snap-research/efficientformer-l1-300", True), ("MBZUAI/swiftformer-xs", True),
    ("timm/efficientformerv2_s0.snap_dist_in1k", True), ("timm/efficientformer_l1.snap_dist_in1k", True),
    ("efficientformer-l1.safetensors", False), ("weights/missing.safetensors", False), ("dir/model.pth", False),
    ("a/b/c", False), ("/abs/path", False), ("./rel/x", False), ("org/na--me", False), ("org/..", False),
    ("gpt2", False), ("", False),
])
def test_is_hub_id(text, expected):
    assert is_hub_id(text) is expected


def test_an_existing_local_path_is_never_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("org/name") and resolve("org/name", MODEL_FILES) == Path("org/name")


def test_without_the_hub_extra_a_hub_id_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now fails
    for load in (npformer.from_pretrained, npformer.EfficientFormerModel.from_pretrained,
                 npformer.AutoModelForImageClassification.from_pretrained, npformer.AutoImageProcessor.from_pretrained,
                 npformer.AutoConfig.from_pretrained, EfficientFormerImageProcessor.from_pretrained,
                 npformer.EfficientFormerConfig.from_pretrained):
        with pytest.raises(MissingExtraError) as err:
            load(L1_REPO)
        message = str(err.value)
        assert "pip install 'npformer[hub]'" in message and "huggingface_hub" in message, message
        assert "by hand" in message and f"https://huggingface.co/{L1_REPO}" in message, message
    assert err.value.exit_code == 2
    with pytest.raises(MissingExtraError, match="config.json and model.safetensors or pytorch_model.bin"):
        npformer.from_pretrained(L1_REPO)
    with pytest.raises(MissingExtraError, match=r"pip install.*timm/efficientformer_l1.snap_dist_in1k/tree/main.*"
                                                r"checkpoint_path="):
        npformer.create_model("efficientformer_l1.snap_dist_in1k", pretrained=True)
    # local paths never need it
    logits = npformer.from_pretrained(TINY / "hf_safetensors")(seeded_pixels(1)).logits
    np.testing.assert_allclose(logits, stored(TINY / "expected.safetensors", "hf"), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# the cache, offline


def test_a_cached_repo_loads_by_id_like_its_directory(hub):
    add_directory(hub, L1_REPO, TINY / "hf_safetensors")
    assert scanned(hub) == {L1_REPO: {"main": {"config.json", "model.safetensors"}}}
    pixels = seeded_pixels(1)
    expected = stored(TINY / "expected.safetensors", "hf")
    for load in (npformer.from_pretrained, npformer.EfficientFormerForImageClassificationWithTeacher.from_pretrained,
                 npformer.AutoModelForImageClassification.from_pretrained, lambda p: npformer.load(p)[0]):
        model = load(L1_REPO)
        assert type(model).__name__ == "EfficientFormerForImageClassificationWithTeacher"
        np.testing.assert_allclose(model(pixels).logits, expected, atol=ATOL, rtol=0)
    _, metadata = npformer.load(L1_REPO)
    assert Path(metadata["checkpoint"]).parent.name == "snapshots"  # the snapshot directory, snapshots/<commit>
    assert npformer.AutoConfig.from_pretrained(L1_REPO) == npformer.AutoConfig.from_pretrained(TINY / "hf_safetensors")
    assert npformer.EfficientFormerConfig.from_pretrained(L1_REPO) == npformer.AutoConfig.from_pretrained(L1_REPO)


def test_a_snapshot_with_only_pytorch_model_bin_loads(hub):
    """The published snap-research repos hold pytorch_model.bin (read without unpickling code)."""
    add_directory(hub, L1_REPO, TINY / "hf_bin")
    logits = npformer.from_pretrained(L1_REPO)(seeded_pixels(1)).logits
    np.testing.assert_allclose(logits, stored(TINY / "expected.safetensors", "hf"), atol=ATOL, rtol=0)


def other_weights(tmp_path):
    """The tiny fixture's architecture with seed-4 weights, written by npformer's transformers writer."""
    cfg = npformer.AutoConfig.from_pretrained(TINY / "hf_safetensors")
    weights = npformer.checkpoints.seeded.seeded_weights(cfg, 2, seed=4)
    model = npformer.EfficientFormerForImageClassificationWithTeacher(cfg, weights)
    model.save_pretrained(tmp_path / "seed4", format="transformers")
    return model, tmp_path / "seed4"


def test_revision_branch_tag_and_commit_pass_through(hub, tmp_path):
    main = add_directory(hub, L1_REPO, TINY / "hf_safetensors")
    model_b, directory_b = other_weights(tmp_path)
    commit_b = add_directory(hub, L1_REPO, directory_b, revision="v2").name
    assert scanned(hub)[L1_REPO].keys() == {"main", "v2"}
    pixels = seeded_pixels(1)
    expected_a = stored(TINY / "expected.safetensors", "hf")
    expected_b = model_b(pixels).logits
    assert np.abs(expected_a - expected_b).max() > 0.01  # two different checkpoints
    np.testing.assert_array_equal(npformer.from_pretrained(L1_REPO, revision="v2")(pixels).logits, expected_b)
    np.testing.assert_array_equal(npformer.AutoModelForImageClassification.from_pretrained(
        L1_REPO, revision=commit_b)(pixels).logits, expected_b)
    np.testing.assert_allclose(npformer.from_pretrained(L1_REPO, revision=main.name)(pixels).logits, expected_a,
                               atol=ATOL, rtol=0)
    with pytest.raises(WeightFileError, match=r"revision nope\).*not found in the hub cache"):
        npformer.from_pretrained(L1_REPO, revision="nope")


def test_cache_dir_passes_through(hub, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    add_directory(elsewhere, L1_REPO, TINY / "hf_safetensors")
    with pytest.raises(WeightFileError, match=f"not found in the hub cache {hub}"):
        npformer.from_pretrained(L1_REPO)
    model = npformer.EfficientFormerModel.from_pretrained(L1_REPO, cache_dir=elsewhere)
    assert type(model).__name__ == "EfficientFormerModel"
    assert npformer.AutoModel.from_pretrained(L1_REPO, cache_dir=str(elsewhere)).config == model.config


def test_a_repo_not_in_the_cache_offline_says_where_it_looked_and_what_to_do(hub):
    with pytest.raises(WeightFileError) as err:
        npformer.from_pretrained(L1_REPO)
    message = str(err.value)
    assert message.startswith(f"{L1_REPO} (revision main): config.json not found in the hub cache {hub}"), message
    assert "offline mode (HF_HUB_OFFLINE=1)" in message and "by hand" in message, message
    assert err.value.exit_code == 4


def test_local_files_only_passes_through(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, but only the cache allowed
    with pytest.raises(WeightFileError, match=r"local_files_only=True forbids downloading"):
        npformer.from_pretrained(L1_REPO, local_files_only=True)
    add_directory(hub, L1_REPO, TINY / "hf_safetensors")
    model = npformer.from_pretrained(L1_REPO, local_files_only=True)
    np.testing.assert_allclose(model(seeded_pixels(1)).logits, stored(TINY / "expected.safetensors", "hf"),
                               atol=ATOL, rtol=0)


def test_a_snapshot_without_weights_is_refused_by_name(hub):
    add_repo(hub, L1_REPO, {"config.json": TINY / "hf_safetensors" / "config.json"})
    with pytest.raises(WeightFileError, match="model.safetensors or pytorch_model.bin or tf_model.h5 not found in the hub cache"):
        npformer.from_pretrained(L1_REPO)
    assert type(npformer.AutoConfig.from_pretrained(L1_REPO)).__name__ == "EfficientFormerConfig"  # needs config.json only


def test_image_processors_by_hub_id(hub, tmp_path):
    (tmp_path / "snap.json").write_text(json.dumps(SNAP_PREPROCESSOR))
    (tmp_path / "mbzuai.json").write_text(json.dumps(MBZUAI_PREPROCESSOR))
    add_repo(hub, L1_REPO, {"config.json": TINY / "hf_safetensors" / "config.json",
                            "preprocessor_config.json": tmp_path / "snap.json"})
    add_repo(hub, XS_REPO, {"config.json": SWIFT / "hf_safetensors" / "config.json",
                            "preprocessor_config.json": tmp_path / "mbzuai.json"})
    published = EfficientFormerImageProcessor.published()
    assert npformer.AutoImageProcessor.from_pretrained(L1_REPO) == published
    assert npformer.EfficientFormerImageProcessor.from_pretrained(L1_REPO) == published
    # no image_processor_type: the model type decides, as in transformers (SwiftFormer -> ViTImageProcessor)
    swift = npformer.AutoImageProcessor.from_pretrained(XS_REPO)
    assert type(swift) is ViTImageProcessor and swift == ViTImageProcessor.published_swiftformer()
    assert npformer.ViTImageProcessor.from_pretrained(XS_REPO) == swift


# ---------------------------------------------------------------------------------------------
# the golden fixtures' weights under the published ids: the references' logits, without torch


@pytest.fixture
def l1_repo(hub, tmp_path):
    """snap-research/efficientformer-l1-300 holding the golden fixtures' seeded L1 (seed 0), with
    both heads, written by npformer's transformers writer."""
    model = npformer.EfficientFormerForImageClassificationWithTeacher(npformer.EfficientFormerConfig.variant("l1"))
    model.save_pretrained(tmp_path / "l1", format="transformers")
    add_directory(hub, L1_REPO, tmp_path / "l1")
    return FIXTURES / "golden" / "efficientformer_l1.safetensors"


def test_efficientformer_by_id_gives_transformers_logits(l1_repo):
    golden, pixels = stored(l1_repo), seeded_pixels(2)
    teacher = npformer.AutoModelForImageClassification.from_pretrained(L1_REPO)
    assert type(teacher).__name__ == "EfficientFormerForImageClassificationWithTeacher"
    out = teacher(pixels)
    for key in ("logits", "cls_logits", "distillation_logits"):
        np.testing.assert_allclose(getattr(out, key), golden[f"WithTeacher/float32/{key}"], atol=ATOL, rtol=0)
    # the class head alone, as transformers loads a teacher checkpoint into the one-head class
    single = npformer.EfficientFormerForImageClassification.from_pretrained(L1_REPO)(pixels).logits
    np.testing.assert_allclose(single, golden["WithTeacher/float32/cls_logits"], atol=ATOL, rtol=0)
    hidden = npformer.AutoModel.from_pretrained(L1_REPO)(pixels).last_hidden_state
    reference = golden["Model/float32/last_hidden_state"]
    assert np.abs(sample(hidden, "Model/float32/last_hidden_state", 4096) - reference).max() / \
        max(1.0, np.abs(reference).max()) < ATOL


def test_swiftformer_by_id_gives_transformers_logits(hub, tmp_path):
    golden, pixels = stored(FIXTURES / "golden" / "swiftformer_xs.safetensors"), seeded_pixels(2)
    npformer.SwiftFormerForImageClassification(npformer.SwiftFormerConfig.variant("xs")).save_pretrained(
        tmp_path / "xs", format="transformers")
    add_directory(hub, XS_REPO, tmp_path / "xs")
    model = npformer.AutoModelForImageClassification.from_pretrained(XS_REPO)
    assert type(model).__name__ == "SwiftFormerForImageClassification" and model.config.attention_generation == "v1"
    np.testing.assert_allclose(model(pixels).logits, golden["transformers/2/float32/logits"], atol=ATOL, rtol=0)
    hidden = npformer.SwiftFormerModel.from_pretrained(XS_REPO)(pixels).last_hidden_state
    reference = golden["transformers/0/float32/last_hidden_state"]
    assert np.abs(sample(hidden, "transformers/0/float32/last_hidden_state", 4096) - reference).max() / \
        max(1.0, np.abs(reference).max()) < ATOL
    assert npformer.AutoImageProcessor.from_pretrained(XS_REPO) == ViTImageProcessor.published_swiftformer()


@pytest.mark.parametrize("name,golden,key", [
    ("efficientformer_l1", "golden_timm/efficientformer_l1.safetensors", "float32/logits"),
    ("swiftformer_xs", "golden/swiftformer_xs.safetensors", "timm/2/float32/logits"),
    ("efficientformerv2_s0", "golden_v2/efficientformerv2_s0.safetensors", "float32/logits"),
])
def test_timm_names_by_id_give_timm_logits(hub, tmp_path, name, golden, key):
    """timm's repo `timm/<name>.<tag>` holding the golden fixtures' seeded weights (seed 0: what
    create_model(name) builds), written by npformer's timm writer and read back by create_model
    and by the loaders, gives timm's stored logits."""
    seeded = npformer.create_model(name)
    seeded.model.save_pretrained(tmp_path / name, format="timm")
    tag = seeded.pretrained_cfg["tag"]
    add_directory(hub, f"timm/{name}.{tag}", tmp_path / name)
    expected, pixels = stored(FIXTURES / golden, key), seeded_pixels(2)
    for model_name in (name, f"{name}.{tag}", f"hf-hub:timm/{name}.{tag}"):
        model = npformer.create_model(model_name, pretrained=True)
        np.testing.assert_allclose(model(pixels), expected, atol=ATOL, rtol=0)
    for load in (npformer.from_pretrained, npformer.AutoModelForImageClassification.from_pretrained):
        model = load(f"timm/{name}.{tag}")
        assert type(model).__name__ == type(seeded.model).__name__
        np.testing.assert_allclose(model(pixels).logits, expected, atol=ATOL, rtol=0)
    assert npformer.AutoImageProcessor.from_pretrained(f"timm/{name}.{tag}") == recipe("timm")
    assert npformer.AutoConfig.from_pretrained(f"timm/{name}.{tag}") == seeded.model.config
