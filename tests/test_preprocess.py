"""Tests for npformer.preprocess.

Tiers:
  * golden (always runs, no torch/transformers): compares against HF outputs committed in
    tests/fixtures/preprocess/golden.npz (made by make_golden.py there; a lossless encoding of the
    full float32 3x224x224 arrays), with negative checks proving the comparison catches a wrong
    filter, a 1-pixel crop shift, torchvision's rounding, etc.;
  * unit / API / mode / error tests (no torch);
  * oracle (marker `oracle`, skipped without transformers): live comparison with
    transformers.EfficientFormerImageProcessor on the fixtures and many resized variants.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npformer.errors import ConfigError, ImageError, InputError, NpformerError
from npformer.preprocess import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    EfficientFormerImageProcessor,
    center_crop,
    center_crop_offsets,
    get_resize_output_size,
    load_image,
    normalize,
    rescale,
    resize,
    resize_shortest_edge,
    to_rgb,
)

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES_DIR = FIXTURES / "images"
GOLDEN_PATH = FIXTURES / "preprocess" / "golden.npz"
TOL = 1e-6

FIXTURE_IMAGES = [
    "two_cats.png",
    "chelsea_451x300.jpg",
    "rocket_640x427.jpg",
    "astronaut_225x225.png",
    "coffee_1000x180.jpg",
    "camera_183x275_gray.png",
]

with np.load(GOLDEN_PATH) as _g:
    GOLDEN_META = json.loads(str(_g["meta"]))
GOLDEN_CASES = [(cfg, name) for cfg, spec in GOLDEN_META["configs"].items() for name in spec["images"]]


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_PATH) as g:
        return {k: g[k] for k in g.files}


def golden_expected(golden, cfg: str, name: str) -> np.ndarray:
    """HF's float32 [3, 224, 224] output, decoded bit-exactly from the committed file."""
    lut, codes = golden[f"lut__{cfg}"], golden[f"codes__{cfg}__{name}"]
    return np.stack([lut[c][codes[c]] for c in range(3)])


def golden_processor(cfg: str, **overrides) -> EfficientFormerImageProcessor:
    kwargs = dict(GOLDEN_META["configs"][cfg]["kwargs"])
    kwargs.update(overrides)
    return EfficientFormerImageProcessor(**kwargs)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def fixture_rgb(name: str) -> np.ndarray:
    with Image.open(IMAGES_DIR / name) as im:
        return np.asarray(im.convert("RGB"))


def finish(array_hwc_uint8: np.ndarray, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> np.ndarray:
    """rescale + normalize + CHW for hand-built pipelines."""
    return normalize(rescale(array_hwc_uint8, 1 / 255), mean, std).transpose(2, 0, 1)


# ==================================================================================================
# Golden tier (torch-free)
# ==================================================================================================


def test_golden_file_is_small_and_complete(golden):
    assert GOLDEN_PATH.stat().st_size < 3_000_000
    assert set(GOLDEN_META["images"]) == set(FIXTURE_IMAGES)
    for cfg, name in GOLDEN_CASES:
        assert golden[f"codes__{cfg}__{name}"].shape == (3, 224, 224)


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_golden_source_decoding(golden, name):
    """The decoders give the pixels the golden file was made from (else a JPEG/PNG decoder
    difference, not a preprocessing bug, would make the golden comparisons fail)."""
    digest = hashlib.sha256(np.asarray(load_image(IMAGES_DIR / name)).tobytes()).hexdigest()
    assert digest == str(golden[f"source_sha256__{name}"]), (
        f"{name} decodes to different pixels than when golden.npz was made "
        f"(Pillow {GOLDEN_META['pillow']} then): a decoder difference"
    )


@pytest.mark.parametrize("cfg,name", GOLDEN_CASES)
def test_golden_matches_hf(golden, cfg, name):
    ours = golden_processor(cfg)(IMAGES_DIR / name)["pixel_values"]
    assert ours.dtype == np.float32 and ours.shape == (1, 3, 224, 224)
    expected = golden_expected(golden, cfg, name)
    assert max_diff(ours[0], expected) <= TOL
    # Measured: bit-identical (max diff 0.0) with Pillow 13 / NumPy 2.4.
    sums = ours[0].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(sums, golden[f"sum__{cfg}__{name}"], rtol=0, atol=1e-6)


def test_golden_code_defaults_equal_no_arg_constructor():
    assert GOLDEN_META["configs"]["code_defaults"]["kwargs"] == {}
    assert golden_processor("published") == EfficientFormerImageProcessor.published()


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_golden_detects_wrong_resample(golden, name):
    """Bilinear instead of bicubic is caught on every image."""
    wrong = golden_processor("published", resample=2)(IMAGES_DIR / name)["pixel_values"][0]
    assert max_diff(wrong, golden_expected(golden, "published", name)) > 1e-2


@pytest.mark.parametrize("name", FIXTURE_IMAGES)
@pytest.mark.parametrize("shift", [(1, 0), (0, 1), (-1, 0), (0, -1)])
def test_golden_detects_one_pixel_crop_shift(golden, name, shift):
    resized = resize_shortest_edge(np.asarray(load_image(IMAGES_DIR / name)), 256, 3)
    top, left = center_crop_offsets(resized.shape[0], resized.shape[1], 224, 224)
    top, left = top + shift[0], left + shift[1]
    if top < 0 or left < 0 or top + 224 > resized.shape[0] or left + 224 > resized.shape[1]:
        pytest.skip("no room for this shift (256 side: offset 16 either way is fine, so never here)")
    shifted = finish(resized[top : top + 224, left : left + 224])
    assert max_diff(shifted, golden_expected(golden, "published", name)) > 1e-2


def test_golden_detects_torchvision_rounding(golden):
    """rocket 640x427 -> 383x256: HF floors (159 // 2 = 79), torchvision rounds (round(79.5) = 80)."""
    name = "rocket_640x427.jpg"
    resized = resize_shortest_edge(np.asarray(load_image(IMAGES_DIR / name)), 256, 3)
    assert resized.shape == (256, 383, 3)
    h, w = resized.shape[:2]
    tv_top, tv_left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    assert (tv_top, tv_left) == (16, 80) and center_crop_offsets(h, w, 224, 224) == (16, 79)
    tv = finish(resized[tv_top : tv_top + 224, tv_left : tv_left + 224])
    assert max_diff(tv, golden_expected(golden, "published", name)) > 1e-2


def test_golden_detects_rounded_long_side(golden):
    """Long side int(256*640/427) = int(383.70) = 383; rounding to 384 moves the crop."""
    name = "rocket_640x427.jpg"
    assert get_resize_output_size(427, 640, 256) == (256, 383)
    wrong = center_crop(resize(np.asarray(load_image(IMAGES_DIR / name)), 256, 384, 3), 224, 224)
    assert max_diff(finish(wrong), golden_expected(golden, "published", name)) > 1e-2


def test_golden_detects_docstring_defaults(golden):
    """The docstring's BILINEAR + IMAGENET_STANDARD (0.5) defaults would be caught."""
    name = "two_cats.png"
    wrong = EfficientFormerImageProcessor(resample=2, image_mean=0.5, image_std=0.5)(IMAGES_DIR / name)
    assert max_diff(wrong["pixel_values"][0], golden_expected(golden, "code_defaults", name)) > 1e-2


def test_golden_detects_padding_value_and_offset(golden):
    """pad_bilinear: 256x... images resized to short side 200 then padded to 224 with black."""
    name = "astronaut_225x225.png"
    expected = golden_expected(golden, "pad_bilinear", name)
    proc = golden_processor("pad_bilinear")
    ours = proc(IMAGES_DIR / name)["pixel_values"][0]
    assert max_diff(ours, expected) <= TOL
    # 200x200 centred in 224x224: 12 black (-1.0 after 0.5/0.5 normalisation) rows/cols each side.
    assert np.all(expected[:, :12, :] == -1.0) and np.all(expected[:, :, -12:] == -1.0)
    assert not np.all(expected[:, 12, 12:212] == -1.0)
    # padding with the mean colour (0 after normalisation) or off by one would be caught
    resized = resize_shortest_edge(np.asarray(load_image(IMAGES_DIR / name)), 200, 2)
    canvas = np.zeros((224, 224, 3), np.uint8)
    canvas[13:213, 13:213] = resized
    assert max_diff(finish(canvas, 0.5, 0.5), expected) > 1e-2


# ==================================================================================================
# Unit tests of the steps
# ==================================================================================================


@pytest.mark.parametrize(
    "hw,s,expected",
    [
        ((480, 640), 256, (256, 341)),
        ((427, 640), 256, (256, 383)),
        ((640, 427), 256, (383, 256)),
        ((300, 451), 256, (256, 384)),
        ((180, 1000), 256, (256, 1422)),
        ((225, 225), 256, (256, 256)),
        ((100, 99), 256, (258, 256)),
        ((1, 1), 256, (256, 256)),
    ],
)
def test_get_resize_output_size(hw, s, expected):
    assert get_resize_output_size(*hw, s) == expected


@pytest.mark.parametrize(
    "hw,crop,expected",
    [((256, 341), (224, 224), (16, 58)), ((256, 383), (224, 224), (16, 79)), ((225, 225), (224, 224), (0, 0)),
     ((224, 224), (224, 224), (0, 0)), ((200, 201), (224, 224), (-12, -12)), ((5, 8), (3, 3), (1, 2))],
)
def test_center_crop_offsets_floor(hw, crop, expected):
    assert center_crop_offsets(*hw, *crop) == expected


def test_center_crop_pads_small_image_like_hf():
    image = (np.arange(3 * 5 * 3) % 250 + 1).astype(np.uint8).reshape(3, 5, 3)  # all pixels nonzero
    out = center_crop(image, 6, 4)
    # HF quirk reproduced: canvas 6x5 with the image at rows 1..3 (pad (6-3)//2 = 1), but the crop
    # window starts at (3-6)//2 + 1 = -1 and is clipped to the canvas, so only 5 rows come out.
    assert out.shape == (5, 4, 3) and out.dtype == np.uint8
    expected = np.zeros((5, 4, 3), np.uint8)
    expected[1:4] = image[:, 0:4]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "hw,expected_shape",
    [((223, 223), (223, 223)), ((222, 221), (224, 223)), ((100, 150), (224, 224)), ((3, 5), (223, 223))],
)
def test_center_crop_odd_padding_returns_one_short_like_hf(hw, expected_shape):
    """transformers 4.40.2 center_crop: when crop - side is odd, the padded output is one pixel
    short on that axis (measured with transformers.image_transforms.center_crop)."""
    out = center_crop(np.ones(hw + (3,), np.uint8), 224, 224)
    assert out.shape[:2] == expected_shape
    rows, cols = expected_shape[0] - hw[0], expected_shape[1] - hw[1]
    assert int((out[:, :, 0].sum(axis=1) == 0).sum()) == max(rows, 0)
    assert int((out[:, :, 0].sum(axis=0) == 0).sum()) == max(cols, 0)


def test_center_crop_exact_and_larger():
    image = np.random.default_rng(0).integers(0, 256, (230, 227, 3), dtype=np.uint8)
    np.testing.assert_array_equal(center_crop(image, 224, 224), image[3:227, 1:225])
    np.testing.assert_array_equal(center_crop(image[:224, :224], 224, 224), image[:224, :224])


def test_rescale_and_normalize_dtypes():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    r = rescale(x, 1 / 255)
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, (x.astype(np.float64) * (1 / 255)).astype(np.float32))
    n = normalize(r, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert n.dtype == np.float32
    mean32, std32 = np.float32(IMAGENET_DEFAULT_MEAN), np.float32(IMAGENET_DEFAULT_STD)
    np.testing.assert_array_equal(n, (r - mean32) / std32)
    assert normalize(x, 0.5, 0.5).dtype == np.float32  # uint8 input is cast to float32 first


def test_resize_uses_pil_on_uint8():
    image = fixture_rgb("chelsea_451x300.jpg")
    out = resize(image, 100, 150, 3)
    assert out.dtype == np.uint8 and out.shape == (100, 150, 3)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(image).resize((150, 100), Image.Resampling.BICUBIC)))


# ==================================================================================================
# Processor API
# ==================================================================================================


def test_code_defaults():
    d = EfficientFormerImageProcessor().to_dict()
    assert d == {
        "do_resize": True,
        "size": {"height": 224, "width": 224},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "image_processor_type": "EfficientFormerImageProcessor",
    }


def test_published_settings():
    d = EfficientFormerImageProcessor.published().to_dict()
    assert d["size"] == {"shortest_edge": 256} and d["crop_size"] == {"height": 224, "width": 224}
    assert d["resample"] == 3 and d["do_center_crop"] and d["rescale_factor"] == 0.00392156862745098
    assert d["image_mean"] == IMAGENET_DEFAULT_MEAN and d["image_std"] == IMAGENET_DEFAULT_STD


PUBLISHED_JSON = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "EfficientFormerImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}


def test_from_pretrained_dir_and_file(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(PUBLISHED_JSON))
    a = EfficientFormerImageProcessor.from_pretrained(tmp_path)
    b = EfficientFormerImageProcessor.from_pretrained(str(tmp_path / "preprocessor_config.json"))
    assert a == b == EfficientFormerImageProcessor.published()
    assert EfficientFormerImageProcessor.from_dict(a.to_dict()) == a


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        EfficientFormerImageProcessor.from_pretrained(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json.*not valid JSON"):
        EfficientFormerImageProcessor.from_pretrained(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        EfficientFormerImageProcessor.from_pretrained(bad)


@pytest.mark.parametrize(
    "size,expected",
    [
        (224, {"height": 224, "width": 224}),  # HF: int -> square, NOT shortest edge
        ([200, 300], {"height": 200, "width": 300}),
        ({"shortest_edge": 256}, {"shortest_edge": 256}),
        ({"height": 1, "width": 2}, {"height": 1, "width": 2}),
    ],
)
def test_size_forms(size, expected):
    assert EfficientFormerImageProcessor.from_dict({"size": size}).size == expected


def test_metadata_keys_ignored():
    d = dict(PUBLISHED_JSON, processor_class="X", feature_extractor_type="EfficientFormerFeatureExtractor")
    d["_valid_processor_keys"] = ["images"]
    assert EfficientFormerImageProcessor.from_dict(d) == EfficientFormerImageProcessor.published()


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"crop_pct": 0.95}, "crop_pct"),
        ({"do_convert_rgb": True}, "do_convert_rgb"),
        ({"size": {"shortest_edge": 256, "longest_edge": 300}}, "longest_edge"),
        ({"image_processor_type": "ViTImageProcessor"}, "ViTImageProcessor"),
    ],
)
def test_strict_rejects_what_hf_silently_ignores(patch, match):
    d = dict(PUBLISHED_JSON, **patch)
    with pytest.raises(ConfigError, match=match):
        EfficientFormerImageProcessor.from_dict(d)
    # strict=False behaves like HF: ignore it
    assert EfficientFormerImageProcessor.from_dict(d, strict=False) == EfficientFormerImageProcessor.published()


@pytest.mark.parametrize(
    "patch",
    [
        {"size": {"longest_edge": 300}},
        {"size": {"shortest_edge": 0}},
        {"size": {"h": 1}},
        {"size": [224]},
        {"size": 224.0},
        {"crop_size": {"shortest_edge": 224}},
        {"resample": 7},
        {"resample": "bicubic"},
        {"do_resize": "false"},
        {"rescale_factor": "1/255"},
        {"rescale_factor": float("nan")},
        {"image_mean": [0.5, 0.5]},
        {"image_std": [0.2, 0.0, 0.2]},
    ],
)
def test_invalid_config_values(patch):
    with pytest.raises(ConfigError):
        EfficientFormerImageProcessor.from_dict(dict(PUBLISHED_JSON, **patch), strict=False)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        EfficientFormerImageProcessor(resample=9)
    assert issubclass(ConfigError, NpformerError)


def test_input_types_agree():
    path = IMAGES_DIR / "chelsea_451x300.jpg"
    proc = EfficientFormerImageProcessor.published()
    pil = Image.open(path)
    arr = np.asarray(pil.convert("RGB"))
    outs = [proc(x)["pixel_values"] for x in (path, str(path), pil, arr, arr[:, :, ::-1][:, :, ::-1])]
    for out in outs:
        assert out.dtype == np.float32 and out.shape == (1, 3, 224, 224) and out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, outs[0])
    batch = proc([path, pil, arr])
    assert batch.pixel_values.shape == (3, 3, 224, 224)
    np.testing.assert_array_equal(batch["pixel_values"][2], outs[0][0])
    np.testing.assert_array_equal(proc((path,))["pixel_values"], outs[0])


def test_numpy_grey_and_alpha_arrays():
    rgb = fixture_rgb("chelsea_451x300.jpg")
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    proc = EfficientFormerImageProcessor.published()
    expected_grey = proc(np.repeat(grey[:, :, None], 3, axis=2))["pixel_values"]
    np.testing.assert_array_equal(proc(grey)["pixel_values"], expected_grey)
    np.testing.assert_array_equal(proc(grey[:, :, None])["pixel_values"], expected_grey)
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    np.testing.assert_array_equal(proc(rgba)["pixel_values"], proc(rgb)["pixel_values"])


@pytest.mark.parametrize("height", [1, 3])
def test_numpy_height_1_or_3_is_channels_last(height):
    """HF would read a [3, W, 3] array as channels-first; we always read [H, W, C]."""
    image = np.random.default_rng(height).integers(0, 256, (height, 300, 3), dtype=np.uint8)
    ours = EfficientFormerImageProcessor.published()(image)["pixel_values"][0]
    manual = finish(center_crop(resize_shortest_edge(image, 256, 3), 224, 224))
    np.testing.assert_array_equal(ours, manual)


def test_bad_inputs():
    proc = EfficientFormerImageProcessor()
    with pytest.raises(InputError, match="uint8"):
        proc(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        proc(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(InputError, match="shape"):
        proc(np.zeros((2, 10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="empty"):
        proc(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(InputError, match="no images"):
        proc([])
    with pytest.raises(InputError, match="int"):
        proc(42)
    with pytest.raises(ConfigError, match="return_tensors"):
        proc(np.zeros((10, 10, 3), np.uint8), return_tensors="pt")


def test_return_tensors_none_and_ragged_batches():
    proc = EfficientFormerImageProcessor(size={"shortest_edge": 64}, do_center_crop=False)
    a, b = np.zeros((100, 50, 3), np.uint8), np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(InputError, match="return_tensors=None"):
        proc([a, b])
    out = proc([a, b], return_tensors=None)["pixel_values"]
    assert [o.shape for o in out] == [(3, 128, 64), (3, 64, 64)]


def test_overrides_and_channels_last():
    path = IMAGES_DIR / "two_cats.png"
    default = EfficientFormerImageProcessor()
    published = EfficientFormerImageProcessor.published()
    overridden = default(path, size={"shortest_edge": 256})["pixel_values"]
    np.testing.assert_array_equal(overridden, published(path)["pixel_values"])
    cl = published(path, data_format="channels_last")["pixel_values"]
    np.testing.assert_array_equal(cl.transpose(0, 3, 1, 2), published(path)["pixel_values"])
    raw = published(path, do_rescale=False, do_normalize=False)["pixel_values"]
    assert raw.dtype == np.float32 and raw.max() == 255.0 and np.all(raw == np.round(raw))


# ==================================================================================================
# Modes
# ==================================================================================================


def _photo() -> Image.Image:
    return Image.open(IMAGES_DIR / "chelsea_451x300.jpg").convert("RGB")


def _with_alpha(image: Image.Image) -> Image.Image:
    """Alpha ramp 0..255 across the width (fully transparent at the left edge)."""
    w, h = image.size
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1)))
    out = image.copy()
    out.putalpha(alpha)
    return out


def _grey16(photo: Image.Image) -> np.ndarray:
    return np.asarray(photo.convert("L")).astype(np.uint16) * 257


def make_mode_file(mode: str, tmp_path: Path) -> tuple[Path, Image.Image]:
    """Write a file whose decoded mode is `mode`; return it and the RGB image we expect."""
    photo = _photo()
    grey = photo.convert("L")
    if mode == "1":
        im, fmt = photo.convert("1"), "png"
    elif mode == "L":
        im, fmt = grey, "png"
    elif mode == "LA":
        im, fmt = _with_alpha(grey.convert("LA")), "png"
    elif mode == "P":
        im, fmt = photo.convert("P"), "png"
    elif mode == "P-transparency":
        im, fmt = photo.convert("P"), "png"
        im.info["transparency"] = 0
    elif mode == "PA":
        im, fmt = photo.convert("P").convert("PA"), "tiff"
        im.putalpha(Image.fromarray(np.asarray(_with_alpha(photo))[:, :, 3]))
    elif mode == "RGBA":
        im, fmt = _with_alpha(photo), "png"
    elif mode == "CMYK":
        im, fmt = photo.convert("CMYK"), "jpeg"
    elif mode == "CMYK-tiff":
        im, fmt = photo.convert("CMYK"), "tiff"
    elif mode == "YCbCr":
        im, fmt = photo.convert("YCbCr"), "tiff"
    elif mode == "LAB":
        im, fmt = photo.convert("LAB"), "tiff"
    elif mode == "F":
        im, fmt = Image.fromarray(np.asarray(grey).astype(np.float32) + 0.75), "tiff"
    elif mode == "I;16":
        im, fmt = Image.fromarray(_grey16(photo)), "png"
    elif mode == "I":  # 16-bit PPM (PGM) decodes as mode I
        im, fmt = Image.fromarray(_grey16(photo)), "ppm"
    else:
        raise AssertionError(mode)
    path = tmp_path / f"photo_{mode.replace(';', '_')}.{fmt}"
    im.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode.split("-")[0], (mode, reopened.mode)
        if mode in ("I;16", "I"):
            expected = grey.convert("RGB")  # 16-bit data v*257 maps back exactly via v >> 8
        else:
            expected = reopened.convert("RGB")
    return path, expected


FILE_MODES = [
    "1", "L", "LA", "P", "P-transparency", "PA", "RGBA", "CMYK", "CMYK-tiff", "YCbCr", "LAB", "F", "I;16", "I",
]


@pytest.mark.parametrize("mode", FILE_MODES)
def test_every_file_mode_loads_as_rgb(mode, tmp_path):
    path, expected = make_mode_file(mode, tmp_path)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (451, 300)
    np.testing.assert_array_equal(np.asarray(rgb), np.asarray(expected))
    out = EfficientFormerImageProcessor.published()(path)["pixel_values"]
    np.testing.assert_array_equal(out, EfficientFormerImageProcessor.published()(expected)["pixel_values"])


@pytest.mark.parametrize("mode", ["La", "RGBa", "RGBX", "HSV", "I;16B", "I;16L"])
def test_in_memory_modes(mode):
    photo = _photo()
    if mode == "La":
        im, expected = _with_alpha(photo.convert("L")).convert("LA").convert("La"), photo.convert("L").convert("RGB")
    elif mode == "RGBa":
        im, expected = photo.convert("RGBA").convert("RGBa"), photo
    elif mode.startswith("I;16"):
        dtype = ">u2" if mode == "I;16B" else "<u2"
        data = _grey16(photo).astype(dtype)
        im = Image.frombuffer(mode, photo.size, data.tobytes(), "raw", mode, 0, 1)
        expected = photo.convert("L").convert("RGB")
    else:
        im = photo.convert(mode)
        expected = im.convert("RGB")
    assert im.mode == mode
    rgb = load_image(im)
    assert rgb.mode == "RGB"
    if mode == "La":  # premultiplied: grey is darkened where alpha < 255; opaque column is exact
        np.testing.assert_array_equal(np.asarray(rgb)[:, -1], np.asarray(expected)[:, -1])
    else:
        np.testing.assert_array_equal(np.asarray(rgb), np.asarray(expected))


def test_alpha_is_dropped_not_composited():
    rgba = _with_alpha(_photo())  # left column fully transparent
    rgb = np.asarray(load_image(rgba))
    np.testing.assert_array_equal(rgb, np.asarray(_photo()))
    np.testing.assert_array_equal(rgb, np.asarray(rgba.convert("RGB")))


def test_16bit_grey_uses_high_byte_like_pillow_does_for_16bit_rgb_png(tmp_path):
    values = np.array([[0, 127, 128, 255, 256, 0x1234, 32768, 65280, 65535]], dtype=np.uint16)
    grey_png = tmp_path / "grey16.png"
    Image.fromarray(values).save(grey_png)
    # A 16-bit RGB PNG with the same values (Pillow cannot write one: build it by hand).
    raw = b"\x00" + np.repeat(values[0].astype(">u2")[:, None], 3, axis=1).tobytes()

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rgb_png = tmp_path / "rgb48.png"
    rgb_png.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", values.shape[1], 1, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    ours = np.asarray(load_image(grey_png))[0, :, 0]
    np.testing.assert_array_equal(ours, values[0] >> 8)
    np.testing.assert_array_equal(ours, np.asarray(load_image(rgb_png))[0, :, 0])
    # Measured Pillow behaviour we deliberately do not copy: convert("RGB") clips 16-bit values.
    with Image.open(grey_png) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB"))[0, :, 0], np.minimum(values[0], 255))


def test_mode_I_clips_to_16bit_range():
    im = Image.fromarray(np.array([[-5, 0, 255, 256, 65535, 70000]], dtype=np.int32))
    assert im.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(im))[0, :, 0], [0, 0, 0, 1, 255, 255])


def test_mode_F_follows_pillow():
    im = Image.fromarray(np.array([[-5.0, 0.6, 1.0, 100.6, 255.5, 300.0]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(load_image(im)), np.asarray(im.convert("RGB")))
    np.testing.assert_array_equal(np.asarray(load_image(im))[0, :, 0], [0, 0, 1, 100, 255, 255])


def test_to_rgb_keeps_rgb():
    photo = _photo()
    out = to_rgb(photo)
    assert out is not photo and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(photo))


# ==================================================================================================
# Errors
# ==================================================================================================


def test_error_nonexistent(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="nope.png.*no such file"):
        load_image(missing)
    with pytest.raises(ImageError, match="nope.png"):
        EfficientFormerImageProcessor()(missing)


def test_error_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("content", [b"hello, this is not an image\n", b""])
def test_error_not_an_image(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="notes.txt.*not an image"):
        load_image(path)


@pytest.mark.parametrize("name", ["two_cats.png", "chelsea_451x300.jpg", "rocket_640x427.jpg"])
@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_error_truncated(tmp_path, name, fraction):
    data = (IMAGES_DIR / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ImageError, match=f"cut_{name}.*cannot decode"):
        load_image(path)


def test_image_error_exit_code():
    assert ImageError.exit_code == 8 and issubclass(ImageError, NpformerError)


# ==================================================================================================
# Oracle tier: live transformers
# ==================================================================================================


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    from transformers import EfficientFormerImageProcessor as HFProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return HFProcessor


def hf_run(hf_cls, kwargs, image, **call_kwargs):
    if isinstance(image, np.ndarray):
        call_kwargs.setdefault("input_data_format", "channels_last")
    return hf_cls(**kwargs)(image, return_tensors="np", **call_kwargs)["pixel_values"]


ORACLE_CONFIGS = {
    "published": dict(GOLDEN_META["configs"]["published"]["kwargs"]),
    "code_defaults": {},
    "pad_bilinear": dict(GOLDEN_META["configs"]["pad_bilinear"]["kwargs"]),
    "nearest_odd_crop": {"size": {"shortest_edge": 233}, "resample": 0, "crop_size": {"height": 201, "width": 223}},
    "lanczos_rect": {"size": {"height": 223, "width": 225}, "resample": 1},
    "box": {"size": {"shortest_edge": 224}, "resample": 4},
    "hamming_int_sizes": {"size": 230, "crop_size": 224, "resample": 5},
    "no_resize": {"do_resize": False},
    "no_rescale": {"size": {"shortest_edge": 256}, "do_rescale": False},
    "rescale_only": {"size": {"shortest_edge": 256}, "do_normalize": False},
    "scalar_mean": {"size": {"shortest_edge": 256}, "image_mean": 0.5, "image_std": 0.25},
}


@pytest.mark.oracle
@pytest.mark.parametrize("cfg", list(ORACLE_CONFIGS))
@pytest.mark.parametrize("name", FIXTURE_IMAGES)
def test_oracle_fixture_images(hf, cfg, name):
    kwargs = ORACLE_CONFIGS[cfg]
    expected = hf_run(hf, kwargs, Image.open(IMAGES_DIR / name).convert("RGB"))
    ours = EfficientFormerImageProcessor(**kwargs)(IMAGES_DIR / name)["pixel_values"]
    assert ours.shape == expected.shape
    assert max_diff(ours, expected) <= TOL  # measured: 0.0 everywhere


ORACLE_SIZES = [
    (224, 224), (225, 225), (223, 223), (224, 300), (300, 224), (257, 383), (383, 257), (255, 257),
    (256, 341), (427, 640), (640, 427), (180, 1000), (1000, 180), (301, 301), (513, 511), (100, 150),
    (150, 100), (50, 50), (1, 1), (2, 5), (3, 500), (500, 3), (10, 224), (224, 10), (199, 431), (431, 199),
]


@pytest.mark.oracle
@pytest.mark.parametrize("hw", ORACLE_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_oracle_resized_variants(hf, hw):
    src = Image.open(IMAGES_DIR / "chelsea_451x300.jpg").convert("RGB")
    image = np.asarray(src.resize((hw[1], hw[0]), Image.Resampling.LANCZOS))
    worst = 0.0
    for cfg in ("published", "code_defaults", "pad_bilinear", "no_resize", "nearest_odd_crop"):
        kwargs = ORACLE_CONFIGS[cfg]
        expected = hf_run(hf, kwargs, image)
        ours = EfficientFormerImageProcessor(**kwargs)(image)["pixel_values"]
        assert ours.shape == expected.shape, cfg
        worst = max(worst, max_diff(ours, expected))
    assert worst <= TOL


@pytest.mark.oracle
def test_oracle_batch(hf):
    images = [Image.open(IMAGES_DIR / n).convert("RGB") for n in FIXTURE_IMAGES]
    kwargs = ORACLE_CONFIGS["published"]
    expected = hf(**kwargs)(images, return_tensors="np")["pixel_values"]
    ours = EfficientFormerImageProcessor(**kwargs)([IMAGES_DIR / n for n in FIXTURE_IMAGES])["pixel_values"]
    assert expected.shape == ours.shape == (6, 3, 224, 224)
    assert max_diff(ours, expected) <= TOL


@pytest.mark.oracle
@pytest.mark.parametrize("cfg,name", GOLDEN_CASES)
def test_oracle_golden_file_is_hf_output(hf, golden, cfg, name):
    """The committed golden arrays are what the installed transformers produces."""
    expected = hf_run(hf, GOLDEN_META["configs"][cfg]["kwargs"], Image.open(IMAGES_DIR / name).convert("RGB"))
    assert max_diff(golden_expected(golden, cfg, name), expected[0]) == 0.0


@pytest.mark.oracle
def test_oracle_from_dict_matches_hf(hf):
    for config in (PUBLISHED_JSON, {}, {"size": 230, "crop_size": 200}, {"size": [200, 300]}):
        theirs = hf.from_dict(dict(config)).to_dict()
        ours = EfficientFormerImageProcessor.from_dict(dict(config)).to_dict()
        for key, value in ours.items():
            assert theirs[key] == value, key


@pytest.mark.oracle
@pytest.mark.parametrize("mode", FILE_MODES)
def test_oracle_modes(hf, mode, tmp_path):
    """Every mode: ours on the file == HF on the RGB-converted image."""
    path, expected_rgb = make_mode_file(mode, tmp_path)
    kwargs = ORACLE_CONFIGS["published"]
    ours = EfficientFormerImageProcessor(**kwargs)(path)["pixel_values"]
    assert max_diff(ours, hf_run(hf, kwargs, expected_rgb)) <= TOL


@pytest.mark.oracle
def test_oracle_hf_rejects_grayscale_we_convert(hf):
    """HF raises on a grayscale image (2-D array); we convert to RGB (grey replicated)."""
    grey_pil = Image.open(IMAGES_DIR / "camera_183x275_gray.png")
    assert grey_pil.mode == "L"
    for grey in (grey_pil, np.asarray(grey_pil)):
        with pytest.raises(ValueError, match="Unsupported number of image dimensions: 2"):
            hf()(grey, return_tensors="np")
    ours = EfficientFormerImageProcessor()(grey_pil)["pixel_values"]
    assert max_diff(ours, hf()(grey_pil.convert("RGB"), return_tensors="np")["pixel_values"]) <= TOL
    # RGBA: HF cannot even guess the channel axis
    rgba = _with_alpha(_photo())
    with pytest.raises(ValueError, match="Unable to infer channel dimension format"):
        hf()(rgba, return_tensors="np")
    theirs = hf()(rgba.convert("RGB"), return_tensors="np")["pixel_values"]
    assert max_diff(EfficientFormerImageProcessor()(rgba)["pixel_values"], theirs) <= TOL


@pytest.mark.oracle
def test_oracle_hf_misreads_height_3_arrays(hf):
    """Measured HF quirk: a [3, W, 3] uint8 array is taken as channels-first unless
    input_data_format is given; we always read [H, W, C]."""
    image = np.random.default_rng(0).integers(0, 256, (3, 300, 3), dtype=np.uint8)
    kwargs = ORACLE_CONFIGS["published"]
    guessed = hf(**kwargs)(image, return_tensors="np")["pixel_values"]
    told = hf(**kwargs)(image, return_tensors="np", input_data_format="channels_last")["pixel_values"]
    ours = EfficientFormerImageProcessor(**kwargs)(image)["pixel_values"]
    assert max_diff(ours, told) <= TOL
    assert max_diff(guessed, told) > 1e-2
