"""Tests for the named preprocessing recipes of npformer.preprocess (`RECIPES`, `recipe`), the
`ViTImageProcessor` twin and `TorchvisionEvalTransform`.

Tiers:
  * golden (always runs, no torch/transformers/timm): compares every recipe with its reference's
    outputs committed in tests/fixtures/preprocess/ -- recipes.npz (transformers ViTImageProcessor
    with the MBZUAI SwiftFormer settings, timm's eval transform, the original repos' torchvision
    eval transform; made by make_golden_recipes.py) and golden.npz (transformers
    EfficientFormerImageProcessor; made by make_golden.py) -- with negative checks proving the
    comparison catches HF's floor crop instead of torchvision's rounding, resize 256 instead of 235,
    bilinear instead of bicubic, and 0.5 instead of ImageNet-default normalisation;
  * unit / API tests (no torch);
  * oracle (marker `oracle`, skipped without transformers / timm / torchvision): live comparison with
    the references on the fixture images and on a spread of image sizes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npformer.errors import ConfigError
from npformer.preprocess import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    RECIPES,
    EfficientFormerImageProcessor,
    RecipeInfo,
    TorchvisionEvalTransform,
    ViTImageProcessor,
    center_crop,
    center_crop_offsets,
    load_image,
    normalize,
    recipe,
    rescale,
    resize_shortest_edge,
    timm_scale_size,
    to_tensor,
    torchvision_center_crop,
    torchvision_center_crop_offsets,
)

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES_DIR = FIXTURES / "images"
RECIPES_GOLDEN_PATH = FIXTURES / "preprocess" / "recipes.npz"
HF_GOLDEN_PATH = FIXTURES / "preprocess" / "golden.npz"
TOL = 1e-6

FIXTURE_IMAGES = [
    "two_cats.png",
    "chelsea_451x300.jpg",
    "rocket_640x427.jpg",
    "astronaut_225x225.png",
    "coffee_1000x180.jpg",
    "camera_183x275_gray.png",
]

# recipe -> (golden file, config in it)
GOLDEN_FOR_RECIPE = {
    "efficientformer-hf": ("hf", "published"),
    "efficientformer-hf-default": ("hf", "code_defaults"),
    "swiftformer-hf": ("recipes", "swiftformer_hf"),
    "timm": ("recipes", "timm"),
    "original": ("recipes", "original"),
}

with np.load(RECIPES_GOLDEN_PATH) as _g:
    RECIPES_META = json.loads(str(_g["meta"]))


@pytest.fixture(scope="module")
def golden():
    """{"hf": arrays of golden.npz, "recipes": arrays of recipes.npz}."""
    out = {}
    for key, path in (("hf", HF_GOLDEN_PATH), ("recipes", RECIPES_GOLDEN_PATH)):
        with np.load(path) as g:
            out[key] = {k: g[k] for k in g.files}
    return out


def golden_expected(golden, file: str, cfg: str, name: str) -> np.ndarray:
    """The reference's float32 [3, 224, 224] output, decoded bit-exactly from the committed file."""
    arrays = golden[file]
    codes_from = RECIPES_META["configs"][cfg]["codes_from"] if file == "recipes" else cfg
    lut, codes = arrays[f"lut__{cfg}"], arrays[f"codes__{codes_from}__{name}"]
    return np.stack([lut[c][codes[c]] for c in range(3)])


def recipe_golden(golden, name_of_recipe: str, image: str) -> np.ndarray:
    return golden_expected(golden, *GOLDEN_FOR_RECIPE[name_of_recipe], image)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def fixture_rgb(name: str) -> np.ndarray:
    return np.asarray(load_image(IMAGES_DIR / name))  # [H, W, 3] uint8


def torchvision_finish(crop_hwc_uint8: np.ndarray, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> np.ndarray:
    """ToTensor + Normalize + CHW for hand-built (deliberately wrong) pipelines."""
    return normalize(to_tensor(crop_hwc_uint8), mean, std).transpose(2, 0, 1)


# ==================================================================================================
# Registry and API
# ==================================================================================================


def test_recipe_table():
    assert list(RECIPES) == ["efficientformer-hf", "efficientformer-hf-default", "swiftformer-hf", "timm", "original"]
    for name, info in RECIPES.items():
        assert isinstance(info, RecipeInfo) and info.description and info.source, name
    assert "235" in RECIPES["timm"].description and "0.95" in RECIPES["timm"].source
    assert "MBZUAI" in RECIPES["swiftformer-hf"].source


def test_recipe_objects():
    assert recipe("efficientformer-hf") == EfficientFormerImageProcessor.published()
    assert recipe("efficientformer-hf-default") == EfficientFormerImageProcessor()
    assert recipe("swiftformer-hf") == ViTImageProcessor.published_swiftformer()
    assert recipe("timm") == TorchvisionEvalTransform(235, 224, 3, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert recipe("original") == TorchvisionEvalTransform(256, (224, 224))
    assert recipe("timm") is not recipe("timm")  # a fresh object each time
    assert recipe("timm") != recipe("original")


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_output_contract(name):
    proc = recipe(name)
    one = proc(IMAGES_DIR / "chelsea_451x300.jpg")["pixel_values"]
    assert one.dtype == np.float32 and one.shape == (1, 3, 224, 224) and one.flags["C_CONTIGUOUS"]
    batch = proc([IMAGES_DIR / n for n in FIXTURE_IMAGES[:3]])
    assert batch.pixel_values.shape == (3, 3, 224, 224)
    np.testing.assert_array_equal(batch["pixel_values"][1], one[0])


@pytest.mark.parametrize("bad", ["nope", "EfficientFormer-HF", "", None, 3])
def test_unknown_recipe(bad):
    with pytest.raises(ConfigError, match="efficientformer-hf, efficientformer-hf-default, swiftformer-hf, timm, original"):
        recipe(bad)


def test_recipes_differ_pairwise():
    """Every recipe is a different pipeline: no two agree on the rocket image (the one fixture where
    "efficientformer-hf" and "original" differ: only their crop offset rounding separates them)."""
    outs = {name: recipe(name)(IMAGES_DIR / "rocket_640x427.jpg")["pixel_values"][0] for name in RECIPES}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert max_diff(outs[a], outs[b]) > 1e-2, (a, b)


# ==================================================================================================
# Golden tier (torch-free)
# ==================================================================================================


def test_golden_file_is_small_and_complete(golden):
    assert RECIPES_GOLDEN_PATH.stat().st_size < 2_100_000
    assert RECIPES_META["images"] == FIXTURE_IMAGES
    for cfg, spec in RECIPES_META["configs"].items():
        assert spec["images"] == FIXTURE_IMAGES
        assert golden["recipes"][f"lut__{cfg}"].shape == (3, 256)
        for name in spec["images"]:
            assert golden["recipes"][f"codes__{spec['codes_from']}__{name}"].shape == (3, 224, 224)
    assert set(RECIPES_META["timm_models_with_identical_transform"]) >= {"efficientformer_l1", "swiftformer_xs"}
    assert "Resize(size=235, interpolation=bicubic" in RECIPES_META["timm_transform"]


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_golden_source_decoding(golden, name):
    """The decoders give the pixels the golden file was made from (else a JPEG/PNG decoder
    difference, not a preprocessing bug, would make the golden comparisons fail)."""
    digest = hashlib.sha256(fixture_rgb(name).tobytes()).hexdigest()
    assert digest == str(golden["recipes"][f"source_sha256__{name}"])


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_golden_recipe_matches_reference(golden, recipe_name, name):
    ours = recipe(recipe_name)(IMAGES_DIR / name)["pixel_values"]
    assert ours.dtype == np.float32 and ours.shape == (1, 3, 224, 224)
    assert max_diff(ours[0], recipe_golden(golden, recipe_name, name)) <= TOL
    # Measured: bit-identical (max diff 0.0) for every recipe and image (Pillow 13 / NumPy 2.4).
    if GOLDEN_FOR_RECIPE[recipe_name][0] == "recipes":
        cfg = GOLDEN_FOR_RECIPE[recipe_name][1]
        sums = ours[0].astype(np.float64).sum(axis=(1, 2))
        np.testing.assert_allclose(sums, golden["recipes"][f"sum__{cfg}__{name}"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_golden_vit_code_defaults(golden, name):
    """ViTImageProcessor() (bilinear squash, mean/std 0.5) = transformers.ViTImageProcessor()."""
    ours = ViTImageProcessor()(IMAGES_DIR / name)["pixel_values"][0]
    assert max_diff(ours, golden_expected(golden, "recipes", "vit_code_defaults", name)) <= TOL


def test_golden_original_equals_hf_published_except_where_rounding_differs(golden):
    """The original repos' transform and HF's published processor differ only by the crop offset
    rounding: equal on every fixture except rocket (640x427 -> 383x256: left 79 in HF, 80 in
    torchvision)."""
    for name in FIXTURE_IMAGES:
        original, hf = recipe_golden(golden, "original", name), recipe_golden(golden, "efficientformer-hf", name)
        if name == "rocket_640x427.jpg":
            assert max_diff(original, hf) > 1e-2
        else:
            np.testing.assert_array_equal(original, hf)


# ---- negative checks: the golden comparison catches each plausible mistake ------------------------


@pytest.mark.parametrize("recipe_name,resize_short", [("timm", 235), ("original", 256)])
def test_golden_detects_hf_floor_crop(golden, recipe_name, resize_short):
    """HF's floor offsets instead of torchvision's round-half-even. For timm the short side is
    always 235 (margin 11: floor 5, torchvision 6), so every image catches it; for "original" only
    rocket does (long side 383, margin 159: 79 vs 80); elsewhere the offsets agree."""
    caught = []
    for name in FIXTURE_IMAGES:
        resized = resize_shortest_edge(fixture_rgb(name), resize_short, 3)  # [H', W', 3] uint8
        hf_floor = torchvision_finish(center_crop(resized, 224, 224))  # HF's offsets
        diff = max_diff(hf_floor, recipe_golden(golden, recipe_name, name))
        offsets_agree = center_crop_offsets(*resized.shape[:2], 224, 224) == torchvision_center_crop_offsets(
            *resized.shape[:2], 224, 224
        )
        assert (diff == 0.0) == offsets_agree, (name, diff)
        if diff > 1e-2:
            caught.append(name)
    assert caught == (FIXTURE_IMAGES if recipe_name == "timm" else ["rocket_640x427.jpg"])


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
@pytest.mark.parametrize(
    "recipe_name,wrong",
    [
        # wrong resize size
        ("timm", TorchvisionEvalTransform(256, 224)),
        ("original", TorchvisionEvalTransform.timm()),
        ("timm", TorchvisionEvalTransform.timm(crop_pct=0.9)),  # the model functions' unused crop_pct
        # bilinear instead of bicubic
        ("timm", TorchvisionEvalTransform.timm(resample=2)),
        ("original", TorchvisionEvalTransform(256, 224, resample=2)),
        ("swiftformer-hf", ViTImageProcessor(size=224, resample=3, image_mean=IMAGENET_DEFAULT_MEAN,
                                             image_std=IMAGENET_DEFAULT_STD)),
        # 0.5 instead of ImageNet-default mean/std
        ("timm", TorchvisionEvalTransform.timm(mean=IMAGENET_STANDARD_MEAN, std=IMAGENET_STANDARD_STD)),
        ("original", TorchvisionEvalTransform(256, 224, mean=IMAGENET_STANDARD_MEAN, std=IMAGENET_STANDARD_STD)),
        ("swiftformer-hf", ViTImageProcessor(size=224)),
        # SwiftFormer via HF's EfficientFormer pipeline (aspect kept + crop) instead of the squash
        ("swiftformer-hf", EfficientFormerImageProcessor(size={"shortest_edge": 224}, resample=2)),
    ],
    ids=[
        "timm-resize256", "original-resize235", "timm-crop_pct0.9", "timm-bilinear", "original-bilinear",
        "swiftformer-bicubic", "timm-mean0.5", "original-mean0.5", "swiftformer-mean0.5", "swiftformer-crop",
    ],
)  # fmt: skip
def test_golden_detects_wrong_settings(golden, recipe_name, wrong, name):
    out = wrong(IMAGES_DIR / name)["pixel_values"][0]
    if name == "astronaut_225x225.png" and isinstance(wrong, EfficientFormerImageProcessor):
        # a square image: shortest edge 224 + crop 224 is the same bilinear squash
        np.testing.assert_array_equal(out, recipe_golden(golden, recipe_name, name))
        return
    assert max_diff(out, recipe_golden(golden, recipe_name, name)) > 1e-2


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_golden_detects_one_pixel_shift_timm(golden, name):
    resized = resize_shortest_edge(fixture_rgb(name), 235, 3)  # [H', W', 3] uint8
    top, left = torchvision_center_crop_offsets(*resized.shape[:2], 224, 224)
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = resized[top + dy : top + dy + 224, left + dx : left + dx + 224]
        assert max_diff(torchvision_finish(shifted), recipe_golden(golden, "timm", name)) > 1e-2


# ==================================================================================================
# Step functions
# ==================================================================================================


def test_timm_scale_size():
    assert timm_scale_size(224, 0.95) == 235  # 235.789...
    assert timm_scale_size(224, 0.875) == 256  # timm's DEFAULT_CROP_PCT
    assert timm_scale_size(224, 0.9) == 248
    assert timm_scale_size(224, 1.0) == 224


@pytest.mark.parametrize(
    "hw,expected_tv,expected_hf",
    [
        ((383, 256), (80, 16), (79, 16)),  # rocket under resize 256: 159 / 2 = 79.5 -> 80 (even)
        ((341, 256), (58, 16), (58, 16)),  # cats: 117 / 2 = 58.5 -> 58 (even)
        ((235, 313), (6, 44), (5, 44)),  # timm short side: 5.5 -> 6; 44.5 -> 44
        ((224, 224), (0, 0), (0, 0)),
        ((225, 227), (0, 2), (0, 1)),  # 0.5 -> 0, 1.5 -> 2
    ],
)
def test_crop_offset_rounding(hw, expected_tv, expected_hf):
    assert torchvision_center_crop_offsets(*hw, 224, 224) == expected_tv
    assert center_crop_offsets(*hw, 224, 224) == expected_hf


def test_torchvision_center_crop_pads_symmetrically_to_full_size():
    image = np.arange(3 * 4 * 1, dtype=np.uint8).reshape(3, 4, 1) + 1  # [3, 4, 1], no zeros
    out = torchvision_center_crop(image, 6, 7)  # pad rows 1 before / 2 after, cols 1 / 2 (= (7 - 4) // 2, (7 - 4 + 1) // 2)
    assert out.shape == (6, 7, 1)
    expected = np.zeros((6, 7, 1), np.uint8)
    expected[1:4, 1:5] = image
    np.testing.assert_array_equal(out, expected)
    # height 2 -> 3 pads 0 rows before, 1 after; width 9 -> 4 crops at round(2.5) = 2 (half to even)
    wide = np.arange(2 * 9, dtype=np.uint8).reshape(2, 9, 1)
    np.testing.assert_array_equal(torchvision_center_crop(wide, 3, 4)[:, :, 0], [[2, 3, 4, 5], [11, 12, 13, 14], [0, 0, 0, 0]])


def test_to_tensor_equals_hf_rescale_for_every_uint8():
    """float32(x) / 255 (torchvision) and float32(x * (1/255) in float64) (HF) agree exactly."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    tv, hf = to_tensor(values), rescale(values, 1 / 255)
    assert tv.dtype == hf.dtype == np.float32
    np.testing.assert_array_equal(tv, hf)


# ==================================================================================================
# ViTImageProcessor and TorchvisionEvalTransform API
# ==================================================================================================

MBZUAI_JSON = {
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "size": 224,
}


def test_vit_code_defaults():
    proc = ViTImageProcessor()
    assert proc.to_dict() == {
        "do_resize": True,
        "size": {"height": 224, "width": 224},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
    }


def test_vit_published_swiftformer_is_the_mbzuai_config(tmp_path):
    published = ViTImageProcessor.published_swiftformer()
    assert ViTImageProcessor.from_dict(MBZUAI_JSON) == published
    assert published.size == {"height": 224, "width": 224} and published.resample == 2
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(MBZUAI_JSON))
    assert ViTImageProcessor.from_pretrained(tmp_path) == published
    assert ViTImageProcessor.from_pretrained(tmp_path / "preprocessor_config.json") == published
    assert ViTImageProcessor.from_dict(published.to_dict()) == published
    assert published != EfficientFormerImageProcessor.published()


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"crop_size": 224}, "crop_size"),
        ({"do_center_crop": True}, "do_center_crop"),
        ({"image_processor_type": "EfficientFormerImageProcessor"}, "EfficientFormerImageProcessor"),
    ],
)
def test_vit_strict_rejects_what_hf_silently_ignores(patch, match):
    d = dict(MBZUAI_JSON, **patch)
    with pytest.raises(ConfigError, match=match):
        ViTImageProcessor.from_dict(d)
    assert ViTImageProcessor.from_dict(d, strict=False) == ViTImageProcessor.published_swiftformer()


@pytest.mark.parametrize("size", [{"shortest_edge": 224}, {"shortest_edge": 224, "longest_edge": 300}, [224], 0])
def test_vit_rejects_non_exact_sizes(size):
    with pytest.raises(ConfigError):
        ViTImageProcessor(size=size, strict=False)


def test_efficientformer_rejects_vit_config_naming_the_right_class():
    with pytest.raises(ConfigError, match="ViTImageProcessor"):
        EfficientFormerImageProcessor.from_dict(dict(MBZUAI_JSON, image_processor_type="ViTImageProcessor"))


def test_vit_overrides_and_list_output():
    proc = ViTImageProcessor.published_swiftformer()
    out = proc(IMAGES_DIR / "two_cats.png", size=[100, 150], return_tensors=None)["pixel_values"]
    assert isinstance(out, list) and out[0].shape == (3, 100, 150) and out[0].dtype == np.float32
    np.testing.assert_array_equal(
        out[0], ViTImageProcessor(size={"height": 100, "width": 150}, image_mean=IMAGENET_DEFAULT_MEAN,
                                  image_std=IMAGENET_DEFAULT_STD)(IMAGES_DIR / "two_cats.png")["pixel_values"][0]
    )  # fmt: skip
    assert proc.size == {"height": 224, "width": 224}  # the override did not stick


def test_torchvision_transform_api():
    t = TorchvisionEvalTransform(256, (224, 200))
    assert t.crop == (224, 200) and t.to_dict()["crop"] == [224, 200]
    assert "TorchvisionEvalTransform" in repr(t)
    out = t([IMAGES_DIR / "two_cats.png", IMAGES_DIR / "camera_183x275_gray.png"], data_format="channels_last")
    assert out["pixel_values"].shape == (2, 224, 200, 3)
    for bad in (dict(resize_short=0, crop=224), dict(resize_short=256, crop={"shortest_edge": 224}),
                dict(resize_short=256, crop=224, resample=9), dict(resize_short=256, crop=224, std=[1, 0, 1])):  # fmt: skip
        with pytest.raises(ConfigError):
            TorchvisionEvalTransform(**bad)


# ==================================================================================================
# Oracle tier: live references
# ==================================================================================================


@pytest.fixture(scope="module")
def references():
    """recipe name -> callable(PIL RGB image) -> float32 [3, h, w], the live reference."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from npformer.tools.oracle import import_timm

    timm = import_timm()
    import transformers
    from timm.data import create_transform, resolve_data_config
    from torchvision import transforms

    transformers.utils.logging.set_verbosity_error()

    def hf(processor):
        return lambda im: processor(im, return_tensors="np")["pixel_values"][0]

    def tv(compose):
        return lambda im: compose(im).numpy()

    timm_transform = create_transform(**resolve_data_config({}, model=timm.create_model("swiftformer_xs")))
    original = transforms.Compose(
        [
            transforms.Resize(int((256 / 224) * 224), interpolation=3),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )
    return {
        "efficientformer-hf": hf(transformers.EfficientFormerImageProcessor(
            size={"shortest_edge": 256}, resample=3, crop_size={"height": 224, "width": 224})),
        "efficientformer-hf-default": hf(transformers.EfficientFormerImageProcessor()),
        "swiftformer-hf": hf(transformers.ViTImageProcessor(**MBZUAI_JSON)),
        "timm": tv(timm_transform),
        "original": tv(original),
    }  # fmt: skip


@pytest.mark.oracle
def test_oracle_timm_transform_same_for_both_families():
    pytest.importorskip("torch")
    from npformer.tools.oracle import import_timm

    timm = import_timm()
    from timm.data import create_transform, resolve_data_config

    models = ["efficientformer_l1", "efficientformer_l3", "efficientformer_l7", "swiftformer_xs", "swiftformer_s",
              "swiftformer_l1", "swiftformer_l3"]  # fmt: skip
    configs = {m: resolve_data_config({}, model=timm.create_model(m)) for m in models}
    for m, cfg in configs.items():
        assert cfg == {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                       "std": (0.229, 0.224, 0.225), "crop_pct": 0.95, "crop_mode": "center"}, m  # fmt: skip
    reprs = {repr(create_transform(**cfg)) for cfg in configs.values()}
    assert len(reprs) == 1 and "Resize(size=235, interpolation=bicubic" in reprs.pop()


@pytest.mark.oracle
@pytest.mark.parametrize("name", FIXTURE_IMAGES)
@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_oracle_fixture_images(references, recipe_name, name):
    expected = references[recipe_name](Image.open(IMAGES_DIR / name).convert("RGB"))
    ours = recipe(recipe_name)(IMAGES_DIR / name)["pixel_values"][0]
    assert max_diff(ours, expected) <= TOL  # measured: 0.0 everywhere


@pytest.mark.oracle
@pytest.mark.parametrize("cfg", list(RECIPES_META["configs"]))
def test_oracle_golden_file_is_reference_output(references, golden, cfg):
    """The committed recipes.npz holds what the installed references produce."""
    if cfg == "vit_code_defaults":
        import transformers

        reference = lambda im: transformers.ViTImageProcessor()(im, return_tensors="np")["pixel_values"][0]  # noqa: E731
    else:
        reference = references[{v[1]: k for k, v in GOLDEN_FOR_RECIPE.items()}[cfg]]
    for name in RECIPES_META["configs"][cfg]["images"]:
        expected = reference(Image.open(IMAGES_DIR / name).convert("RGB"))
        np.testing.assert_array_equal(golden_expected(golden, "recipes", cfg, name), expected)


# (height, width): odd sizes where floor and round-half-even crop offsets differ under resize 235
# (short side always: margin 11) and 256 (e.g. long side 383), squares at and around 224/235/256,
# extreme aspect ratios, and tiny images (2x2 -> a 235 x 235 / 256 x 256 upsample). Heights 1 and 3
# are compared with the torchvision references only: transformers reads such an array as
# channels-first (see tests/test_preprocess.py).
ORACLE_SIZES = [
    (480, 640), (427, 640), (640, 427), (300, 451), (225, 225), (224, 224), (223, 223), (234, 234),
    (235, 235), (236, 236), (255, 257), (257, 383), (383, 257), (237, 301), (301, 237), (299, 449),
    (513, 511), (180, 1000), (1000, 180), (100, 150), (150, 100), (50, 50), (7, 3), (2, 5), (5, 2),
    (2, 2), (1, 1), (3, 100), (1, 7), (100, 3),
]  # fmt: skip


@pytest.mark.oracle
@pytest.mark.parametrize("hw", ORACLE_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_oracle_sizes(references, hw):
    src = Image.open(IMAGES_DIR / "chelsea_451x300.jpg").convert("RGB")
    image = src.resize((hw[1], hw[0]), Image.Resampling.LANCZOS)
    worst = {}
    for recipe_name, reference in references.items():
        if hw[0] in (1, 3) and recipe_name not in ("timm", "original"):
            continue  # transformers misreads [1 or 3, W, 3] as channels-first
        expected = reference(image)
        ours = recipe(recipe_name)(np.asarray(image))["pixel_values"][0]
        worst[recipe_name] = max_diff(ours, expected)
    assert max(worst.values()) <= TOL, worst  # measured: 0.0 for every size and recipe


@pytest.mark.oracle
@pytest.mark.parametrize(
    "resize_short,crop", [(200, 224), (221, (224, 230)), (224, 225), (233, (201, 223)), (300, 1)]
)
def test_oracle_torchvision_transform_padding_and_odd_crops(resize_short, crop):
    """TorchvisionEvalTransform = torchvision Compose also when the crop exceeds the resized image
    (torchvision zero-pads) and for odd / rectangular crops."""
    pytest.importorskip("torch")
    from npformer.tools.oracle import import_timm

    import_timm()
    from torchvision import transforms

    compose = transforms.Compose([
        transforms.Resize(resize_short, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])  # fmt: skip
    ours_t = TorchvisionEvalTransform(resize_short, crop)
    for name in ("rocket_640x427.jpg", "coffee_1000x180.jpg", "camera_183x275_gray.png"):
        expected = compose(Image.open(IMAGES_DIR / name).convert("RGB")).numpy()
        ours = ours_t(IMAGES_DIR / name)["pixel_values"][0]
        assert max_diff(ours, expected) <= TOL, name


@pytest.mark.oracle
@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_oracle_batch(references, recipe_name):
    images = [Image.open(IMAGES_DIR / n).convert("RGB") for n in FIXTURE_IMAGES]
    expected = np.stack([references[recipe_name](im) for im in images])
    ours = recipe(recipe_name)(images)["pixel_values"]
    assert ours.shape == expected.shape == (6, 3, 224, 224)
    assert max_diff(ours, expected) <= TOL
