"""timm's surface (npformer/timm/): `create_model` for every timm name of the three families,
`resolve_data_config` / `resolve_model_data_config` / `create_transform` equal to timm's eval
transform, and timm's usage pattern run with only its imports changed.

Torch-free: the names and their classes; `create_transform(**resolve_data_config(...))` on the
test photographs against timm's own outputs stored in tests/fixtures/preprocess/recipes.npz
(bit for bit); overrides resolved as timm resolves them; every refusal.
Live (oracle): for every name, timm's pretrained_cfg, data config, parameter count and
`forward_features` against npformer's; timm's transform on every test photograph and with other
crop / size / interpolation settings; `num_classes=0`; and timm's documented pattern (its README's
`resolve_data_config` + `create_transform`, its model cards' `resolve_model_data_config`) run in a
fresh offline process on an HF cache holding timm-written weights, once with timm and once with
the imports changed to npformer's (`.unsqueeze(0)` becomes `[None]`: NumPy arrays), same logits.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import npformer
from npformer import timm as nptimm
from npformer.checkpoints.weights import count_parameters
from npformer.errors import CheckpointMismatchError, ConfigError, InputError
from npformer.preprocess import recipe
from npformer.tools.parity import seeded_pixels
from tiers import tiered

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = sorted((FIXTURES / "images").glob("*.[pj][np]g"))
# timm 1.0.31 `timm.list_models(pattern, pretrained=True)` for the three families
TIMM_PRETRAINED = {
    "efficientformer*": ["efficientformer_l1.snap_dist_in1k", "efficientformer_l3.snap_dist_in1k",
                         "efficientformer_l7.snap_dist_in1k", "efficientformerv2_l.snap_dist_in1k",
                         "efficientformerv2_s0.snap_dist_in1k", "efficientformerv2_s1.snap_dist_in1k",
                         "efficientformerv2_s2.snap_dist_in1k"],
    "swiftformer*": ["swiftformer_l1.dist_in1k", "swiftformer_l3.dist_in1k", "swiftformer_s.dist_in1k",
                     "swiftformer_xs.dist_in1k"],
}
ALL_NAMES = [n for f in npformer.models.registry.FAMILIES.values() for n in f.timm_names.values()]
TIMM_FAMILY_VARIANT = {name: (family.name, variant) for name, (family, variant) in npformer.models.registry.timm_models().items()}
# what timm 1.0.31 says of every name: pretrained_cfg, data config, hub config.json, parameter count
# (tests/fixtures/timm_hub/make_fixtures.py)
TIMM = json.loads((FIXTURES / "timm_hub" / "timm_configs.json").read_text())["names"]


def as_json(value):
    """`value` as JSON gives it back (tuples become lists), to compare with the stored configs."""
    return json.loads(json.dumps(value))


def timm_golden(image: Path) -> np.ndarray:
    """timm's own eval transform output for `image` (tests/fixtures/preprocess/make_golden_recipes.py)."""
    stored = np.load(FIXTURES / "preprocess" / "recipes.npz")
    lut, codes = stored["lut__timm"], stored[f"codes__timm__{image.name}"]
    return np.stack([lut[c][codes[c]] for c in range(3)])  # [3, 224, 224]


# ---------------------------------------------------------------------------------------------
# names and models


@pytest.mark.parametrize("pattern", sorted(TIMM_PRETRAINED))
def test_list_models_is_timms(pattern):
    assert nptimm.list_models(pattern, pretrained=True) == TIMM_PRETRAINED[pattern]
    assert nptimm.list_models(pattern) == sorted({n.split(".")[0] for n in TIMM_PRETRAINED[pattern]})


@pytest.mark.parametrize("name", tiered(ALL_NAMES, lambda name: TIMM_FAMILY_VARIANT[name]))
def test_every_timm_name_builds_its_variant(name):
    model = npformer.create_model(name)
    fam, variant = nptimm.factory.lookup(name)
    assert npformer.models.registry.variant_name(model.config) == variant and model.config.model_type == fam.name
    assert type(model.model).__name__ == fam.architecture(2) and model.num_classes == 1000
    assert model.pretrained_cfg["architecture"] == name and model.pretrained_cfg["hf_hub_id"] == f"timm/{name}.{fam.timm_tag}"
    assert model.eval() is model and model.num_features == model.config.width
    assert count_parameters(model.weights) == TIMM[name]["param_count"]
    assert npformer.create_model(name, num_classes=10).num_classes == 10
    # timm's own pretrained_cfg and data config for the name
    theirs, ours = TIMM[name]["pretrained_cfg"], as_json(model.pretrained_cfg)
    assert set(ours) <= set(theirs) and {k: theirs[k] for k in ours} == ours
    assert set(theirs) - set(ours) <= {"origin_url", "paper_name", "paper_ids"}  # what npformer leaves out: references
    assert as_json(nptimm.data.resolve_model_data_config(model)) == TIMM[name]["data_config"]


def test_create_model_options_and_refusals(tmp_path):
    model = npformer.create_model("efficientformer_l1", drop_path_rate=0.1, drop_rate=0.2, in_chans=3, global_pool="avg")
    x = seeded_pixels(1)
    np.testing.assert_array_equal(model(x), npformer.create_model("efficientformer_l1")(x))  # training-only: no effect
    refusals = [
        (dict(model_name="resnet50"), "unknown model 'resnet50'"),
        (dict(model_name="efficientformer_l1.in1k"), "tagged 'snap_dist_in1k' only"),
        (dict(model_name="efficientformer_l1", in_chans=1), "in_chans=1"),
        (dict(model_name="efficientformer_l1", img_size=256), r"npformer.load\(path, image_size="),
        (dict(model_name="efficientformer_l1", global_pool="max"), "global_pool"),
        (dict(model_name="efficientformer_l1", device="cuda"), "CPU"),
        (dict(model_name="efficientformer_l1", dtype="float16"), "float32 or np.float64|dtype must be"),
        (dict(model_name="efficientformer_l1", bogus=1), "does not take: bogus"),
    ]
    for kwargs, match in refusals:
        with pytest.raises((ConfigError, InputError), match=match):
            npformer.create_model(**kwargs)
    with pytest.raises(InputError, match="inference only"):
        model.train()
    assert model.train(False) is model
    # a checkpoint that is not the named model, and a head size the checkpoint does not have
    tiny = FIXTURES / "checkpoints" / "timm.pth"
    with pytest.raises(CheckpointMismatchError, match="not timm's efficientformer_l1.snap_dist_in1k"):
        npformer.create_model("efficientformer_l1", pretrained=True, checkpoint_path=tiny)
    model.model.save_pretrained(tmp_path, format="timm", strict=True)
    path = tmp_path / "model.safetensors"
    with pytest.raises(ConfigError, match="randomly initialised head"):
        npformer.create_model("efficientformer_l1", pretrained=True, checkpoint_path=path, num_classes=10)
    pooled = npformer.create_model("efficientformer_l1", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                   num_classes=0)
    assert pooled.num_classes == 0 and pooled(x).shape == (1, 448)
    np.testing.assert_allclose(pooled(x), model.forward_features(x).mean(axis=1), atol=1e-6, rtol=0)
    assert model.forward_features(x).shape == (1, 49, 448)


# ---------------------------------------------------------------------------------------------
# data config and transform


def test_resolve_data_config_reads_pretrained_cfg_then_overrides():
    model = npformer.create_model("swiftformer_xs")
    expected = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225), "crop_pct": 0.95, "crop_mode": "center"}
    assert nptimm.data.resolve_data_config({}, model=model) == expected
    assert nptimm.data.resolve_model_data_config(model) == expected
    assert nptimm.data.resolve_data_config(pretrained_cfg=model.pretrained_cfg) == expected
    overridden = nptimm.data.resolve_data_config({"img_size": 256, "crop_pct": 0.875, "interpolation": "bilinear",
                                                  "mean": [0.5], "std": (0.5, 0.5, 0.5)}, model=model)
    assert overridden == dict(expected, input_size=(3, 256, 256), crop_pct=0.875, interpolation="bilinear",
                              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    # a model without a pretrained_cfg (an npformer class) gets timm's defaults
    plain = npformer.EfficientFormerModel(npformer.EfficientFormerConfig.variant("l1"))
    assert nptimm.data.resolve_data_config({}, model=plain) == dict(expected, crop_pct=0.875)
    with pytest.raises(ConfigError, match="at least one of args, pretrained_cfg or model"):
        nptimm.data.resolve_data_config()


@pytest.mark.parametrize("image", IMAGES, ids=[p.name for p in IMAGES])
def test_create_transform_is_timms_eval_transform(image):
    """timm's own outputs (stored) for every family's data config, bit for bit."""
    for name in ("efficientformer_l1", "swiftformer_xs", "efficientformerv2_s0"):
        config = nptimm.data.resolve_model_data_config(npformer.create_model(name))
        transform = nptimm.data.create_transform(**config, is_training=False)
        pixels = transform(Image.open(image).convert("RGB"))
        assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
        np.testing.assert_array_equal(pixels, timm_golden(image))
        assert transform.processor == recipe("timm")


def test_create_transform_refusals_and_defaults():
    from npformer.timm.data.transforms_factory import create_transform

    default = create_transform()  # timm's defaults: bilinear, crop_pct 0.875
    assert (default.processor.resize_short, default.processor.crop, default.processor.resample) == (256, (224, 224), 2)
    assert create_transform(224, hflip=0.5, color_jitter=0.4).processor == default.processor  # training-only: ignored
    assert repr(create_transform(**nptimm.data.resolve_model_data_config(npformer.create_model("efficientformer_l1")))) == (
        "EvalTransform(Resize(235, interpolation=bicubic), CenterCrop((224, 224)), ToTensor(), "
        "Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))")
    for kwargs, match in [(dict(is_training=True), "inference only"), (dict(crop_mode="squash"), "'squash'"),
                          (dict(input_size=(3, 224, 256)), "not square"), (dict(interpolation="random"), "for training"),
                          (dict(use_prefetcher=True), "use_prefetcher"), (dict(normalize=False), "normalize"),
                          (dict(wat=1), "unexpected argument 'wat'")]:
        with pytest.raises(ConfigError, match=match):
            create_transform(**kwargs)


# ---------------------------------------------------------------------------------------------
# live: against timm


@pytest.fixture(scope="module")
def timm():
    pytest.importorskip("torch")
    from npformer.tools.oracle import import_timm

    return import_timm()


@pytest.mark.oracle
def test_list_models_live(timm):
    for pattern, names in TIMM_PRETRAINED.items():
        assert timm.list_models(pattern, pretrained=True) == names == nptimm.list_models(pattern, pretrained=True)


@pytest.mark.oracle
@pytest.mark.parametrize("name", tiered(ALL_NAMES, lambda name: TIMM_FAMILY_VARIANT[name]))
def test_against_timm_for_every_name(timm, name):
    import torch

    reference = timm.create_model(name).eval()
    ours = npformer.create_model(name)
    shared = {k: v for k, v in reference.pretrained_cfg.items() if k in ours.pretrained_cfg}
    assert shared == {k: ours.pretrained_cfg[k] for k in shared}
    assert set(ours.pretrained_cfg) - set(shared) == set()  # nothing npformer made up
    assert timm.data.resolve_model_data_config(reference) == nptimm.data.resolve_model_data_config(ours)
    assert sum(p.numel() for p in reference.parameters()) == count_parameters(ours.weights)
    assert reference.num_features == ours.num_features
    assert reference.pretrained_cfg["first_conv"] == ours.pretrained_cfg["first_conv"]
    # the same weights in both: forward and forward_features
    from npformer.tools.oracle import timm_model

    torch_model, _ = timm_model(ours.config, dict(ours.weights))
    x = seeded_pixels(1)
    with torch.no_grad():
        logits = torch_model(torch.from_numpy(x)).numpy()
        features = torch_model.forward_features(torch.from_numpy(x)).numpy()
    assert np.abs(ours(x) - logits).max() < 1e-4
    assert np.abs(ours.forward_features(x) - features).max() / max(1.0, np.abs(features).max()) < 1e-4


@pytest.mark.oracle
def test_create_transform_live(timm):
    settings = [{}, {"crop_pct": 0.875}, {"interpolation": "bilinear"}, {"input_size": (3, 256, 256)},
                {"img_size": 192, "crop_pct": 1.0}, {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}]
    for args in settings:
        pretrained_cfg = timm.create_model("efficientformer_l1").pretrained_cfg
        config = timm.data.resolve_data_config(args, pretrained_cfg=pretrained_cfg)
        ours_cfg = npformer.create_model("efficientformer_l1").pretrained_cfg
        assert config == nptimm.data.resolve_data_config(args, pretrained_cfg=ours_cfg)
        theirs, ours = timm.data.create_transform(**config), nptimm.data.create_transform(**config)
        for image in IMAGES:
            rgb = Image.open(image).convert("RGB")
            np.testing.assert_array_equal(ours(rgb), theirs(rgb).numpy(), err_msg=f"{args} {image.name}")


@pytest.mark.oracle
def test_num_classes_0_live(timm, tmp_path):
    import torch

    ours = npformer.create_model("swiftformer_xs")
    ours.model.save_pretrained(tmp_path, format="timm")
    file = str(tmp_path / "model.safetensors")
    reference = timm.create_model("swiftformer_xs", pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=file))
    pooled = npformer.create_model("swiftformer_xs", pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=file))
    x = seeded_pixels(2)
    with torch.no_grad():
        theirs = reference.eval()(torch.from_numpy(x)).numpy()
    assert theirs.shape == pooled(x).shape == (2, 220) and np.abs(pooled(x) - theirs).max() < 1e-4


# timm's README pattern and its model cards' pattern; IMAGE and NAME are filled in
TIMM_README = """
import timm
from timm.data import resolve_data_config
from timm.data.transforms_factory import create_transform
from PIL import Image
import torch

model = timm.create_model(NAME, pretrained=True)
model.eval()
config = resolve_data_config({}, model=model)
transform = create_transform(**config)
img = Image.open(IMAGE).convert('RGB')
tensor = transform(img).unsqueeze(0)  # transform and add batch dimension
with torch.no_grad():
    out = model(tensor)
"""
TIMM_MODEL_CARD = """
from PIL import Image
import timm

img = Image.open(IMAGE)
model = timm.create_model(NAME, pretrained=True)
model = model.eval()

# get model specific transforms (normalization, resize)
data_config = timm.data.resolve_model_data_config(model)
transforms = timm.data.create_transform(**data_config, is_training=False)

out = model(transforms(img).unsqueeze(0))  # unsqueeze single image into batch of 1
"""


def to_npformer(code: str) -> str:
    """The imports changed to npformer's, and torch's `.unsqueeze(0)` to NumPy's `[None]`."""
    code = code.replace("import timm\n", "from npformer import timm\n").replace("from timm.", "from npformer.timm.")
    return code.replace(".unsqueeze(0)", "[None]")


RUNNER = """
import json, sys
import numpy as np
import torch
from npformer.tools.oracle import import_timm
import_timm()
results = {}
for key, code in json.loads(sys.argv[1]).items():
    scope = {}
    exec(code, scope)
    out = scope["out"]
    results[key] = (out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)).tolist()
print(json.dumps(results))
"""


@pytest.mark.oracle
def test_timms_patterns_run_with_the_imports_changed(timm, tmp_path):
    import torch

    pytest.importorskip("huggingface_hub")
    from hub_cache import BLOCK_NETWORK, add_directory, offline_env, scanned
    from timm.models._hub import save_for_hf

    cache = tmp_path / "hf" / "hub"
    codes = {}
    for name in ("efficientformer_l1", "swiftformer_xs", "efficientformerv2_s0"):
        seeded = npformer.create_model(name)  # npformer's seeded weights, in timm's model, written by timm's save_for_hf
        reference = timm.create_model(name)
        missing, unexpected = reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in seeded.weights.items()},
                                                        strict=False)
        assert not unexpected and all(k.endswith(("num_batches_tracked", "attention_bias_idxs")) for k in missing)
        save_for_hf(reference, tmp_path / name, safe_serialization=True)
        repo = f"timm/{name}.{seeded.pretrained_cfg['tag']}"
        add_directory(cache, repo, tmp_path / name)
        image = repr(str(FIXTURES / "images" / "chelsea_451x300.jpg"))
        codes[f"{name}/readme/timm"] = TIMM_README.replace("NAME", repr(name)).replace("IMAGE", image)
        codes[f"{name}/card/timm"] = TIMM_MODEL_CARD.replace("NAME", repr(f"hf-hub:{repo}")).replace("IMAGE", image)
        for pattern in ("readme", "card"):
            codes[f"{name}/{pattern}/npformer"] = to_npformer(codes[f"{name}/{pattern}/timm"])
    assert len(scanned(cache)) == 3
    env = {**offline_env(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", BLOCK_NETWORK + RUNNER, json.dumps(codes)], capture_output=True,
                         text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {k: np.array(v) for k, v in json.loads(run.stdout.strip().splitlines()[-1]).items()}
    for key in codes:
        if key.endswith("/timm"):
            theirs, ours = results[key], results[key.replace("/timm", "/npformer")]
            assert theirs.shape == ours.shape == (1, 1000), key
            assert np.abs(theirs - ours).max() < 1e-4, key
    assert "from npformer import timm" in codes["swiftformer_xs/readme/npformer"]
    assert "[None]" in codes["swiftformer_xs/card/npformer"] and ".unsqueeze(" not in codes["swiftformer_xs/card/npformer"]
