"""Bad and odd images: every recipe gives float32 [1, 3, 224, 224] pixel values or an ImageError
naming the file and the reason, never a Pillow exception or warning.

Modes (1, L, LA, P, PA, RGBA, CMYK, I;16, I, F, ...) from files and in memory, truncated
JPEG/PNG at fixed cut points and never-an-image files are in tests/test_preprocess.py; random
sizes, modes and byte mutations in tests/test_fuzz_preprocess.py. Here: decompression bombs,
extreme sizes and aspect ratios, EXIF orientation, animated images, and the CLI's answer.
Every image is built in tmp_path.
"""

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from npformer import cli
from npformer.errors import ImageError, InputError
from npformer.preprocess import RECIPES, load_image, recipe

ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "tests" / "fixtures" / "images" / "chelsea_451x300.jpg"
SQUASH = ("efficientformer-hf-default", "swiftformer-hf")  # resize straight to 224 x 224
SHORTEST_EDGE = ("efficientformer-hf", "timm", "original")  # resize the short side, then crop


def png_header_only(path, width, height):
    """A PNG that declares width x height (8-bit grey) but holds only a few bytes of pixel data:
    Pillow learns the size from IHDR when opening, before decoding anything."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def no_warnings(function, *args, **kwargs):
    """Call function; any warning (e.g. Pillow's DecompressionBombWarning) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


def check_pixels(out):
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32 and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# decompression bombs: Pillow warns between MAX_IMAGE_PIXELS and twice that, raises above

@pytest.mark.parametrize("width,height,pillow_says", [
    (20000, 20000, "raises DecompressionBombError"),  # 400,000,000 px > 2 x 89,478,485
    (10000, 9000, "warns and decodes"),  # 90,000,000 px: just above the limit
])
def test_decompression_bombs_are_image_errors(tmp_path, width, height, pillow_says):
    path = png_header_only(tmp_path / "bomb.png", width, height)
    filters = list(warnings.filters)
    with pytest.raises(ImageError) as info:
        no_warnings(load_image, path)
    message = str(info.value)
    assert str(path) in message and "decompression bomb" in message
    assert f"{width * height} pixels" in message and "PIL.Image.MAX_IMAGE_PIXELS = 89478485" in message
    assert warnings.filters == filters  # npformer's warning filter did not leak out
    with pytest.raises(ImageError, match="decompression bomb"):
        no_warnings(recipe("efficientformer-hf"), path)


def test_the_limit_is_pillows_own_setting(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 60), (200, 10, 10)).save(path)  # 6,000 px
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # warning range: 5,000 < 6,000 <= 10,000
    with pytest.raises(ImageError, match="6000 pixels.*MAX_IMAGE_PIXELS = 5000"):
        no_warnings(load_image, path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2999)  # error range
    with pytest.raises(ImageError, match="decompression bomb"):
        no_warnings(load_image, path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # at the limit: fine
    assert no_warnings(load_image, path).size == (100, 60)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user lifted it
    assert no_warnings(load_image, path).size == (100, 60)


def test_cli_answers_a_bomb_with_exit_8(tmp_path, capsys):
    path = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert cli.main(["predict", str(path)]) == 8
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and str(path) in err and "decompression bomb" in err


# ---------------------------------------------------------------------------------------------
# tiny images and extreme aspect ratios

@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("width,height", [(1, 1), (2, 1), (1, 3), (7, 5), (1, 100), (100, 1)])
def test_tiny_and_elongated_images(tmp_path, name, width, height):
    image = Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8))
    path = tmp_path / "image.png"
    image.save(path)
    check_pixels(recipe(name)(path)["pixel_values"])


@pytest.mark.parametrize("width,height", [(4000, 1), (1, 4000), (2, 4000)])
def test_aspect_ratios_too_extreme_for_a_shortest_edge_resize(tmp_path, width, height):
    path = tmp_path / "strip.png"
    Image.new("L", (width, height), 128).save(path)
    for name in SQUASH:  # a squash to 224 x 224 is always possible
        check_pixels(recipe(name)(path)["pixel_values"])
    short = min(width, height)
    for name, side in (("efficientformer-hf", 256), ("original", 256), ("timm", 235)):
        long_side = int(side * max(width, height) / short)
        target = f"{long_side}×{side}" if width < height else f"{side}×{long_side}"  # height×width
        with pytest.raises(ImageError) as info:
            recipe(name)(path)
        message = str(info.value)
        assert f"resizing a {height}×{width} image to {target}" in message and "MAX_IMAGE_PIXELS" in message


def test_empty_images_from_memory():
    for image in (Image.new("RGB", (0, 5)), np.zeros((0, 4, 3), np.uint8), np.zeros((4, 0), np.uint8)):
        with pytest.raises(InputError, match="empty"):
            recipe("efficientformer-hf")(image)


# ---------------------------------------------------------------------------------------------
# EXIF orientation: ignored by default (as transformers' processors), applied on request

def exif_jpeg(path, orientation):
    """A 40 x 24 JPEG whose EXIF orientation tag is `orientation` (1..8)."""
    rng = np.random.default_rng(orientation)
    pixels = np.repeat(np.repeat(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), 4, axis=0), 4, axis=1)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_ignored_by_default_and_applied_on_request(tmp_path, orientation):
    path = exif_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    with Image.open(path) as opened:
        assert opened.getexif()[0x0112] == orientation
        stored = np.asarray(opened.convert("RGB"))
        upright = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(path)), stored)
    np.testing.assert_array_equal(np.asarray(load_image(path, exif_orientation=True)), upright)
    with Image.open(path) as opened:  # the same choice for an image the caller opened
        np.testing.assert_array_equal(np.asarray(load_image(opened, exif_orientation=True)), upright)
    assert upright.shape == ((40, 24, 3) if orientation >= 5 else (24, 40, 3))
    if orientation != 1:
        assert not np.array_equal(stored, upright)


@pytest.mark.oracle
def test_exif_choices_match_transformers(tmp_path):
    pytest.importorskip("transformers")
    from transformers import EfficientFormerImageProcessor as HFProcessor
    from transformers.image_utils import load_image as hf_load_image

    path = exif_jpeg(tmp_path / "o6.jpg", 6)
    hf = HFProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224})
    ours = recipe("efficientformer-hf")
    # a PIL image straight into the processor: EXIF ignored, like npformer's default
    with Image.open(path) as opened:
        expected = hf(opened, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours(path)["pixel_values"], expected)
    # transformers.image_utils.load_image (what the pipelines use) applies it: exif_orientation=True
    expected = hf(hf_load_image(str(path)), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours(load_image(path, exif_orientation=True))["pixel_values"], expected)
    assert not np.array_equal(ours(path)["pixel_values"], expected)


# ---------------------------------------------------------------------------------------------
# animated images: the first frame

FRAMES = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.mark.parametrize("fmt", ["gif", "png", "webp", "tiff"])
def test_animated_images_give_their_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (32, 20), colour) for colour in FRAMES]
    path = tmp_path / f"animated.{fmt}"
    options = {"lossless": True} if fmt == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    with Image.open(path) as opened:
        assert getattr(opened, "n_frames", 1) == 3
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(frames[0]))
    first = recipe("efficientformer-hf")(frames[0])["pixel_values"]
    np.testing.assert_array_equal(recipe("efficientformer-hf")(path)["pixel_values"], first)


def test_an_animated_image_the_caller_moved_to_another_frame(tmp_path):
    path = tmp_path / "animated.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in FRAMES]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as opened:
        opened.seek(2)  # a PIL image is taken as it is: the frame the caller chose
        np.testing.assert_array_equal(np.asarray(load_image(opened))[0, 0], FRAMES[2])


# ---------------------------------------------------------------------------------------------
# files that are not images, and paths that are not files

NOT_IMAGES = {
    "zero bytes": b"",
    "text": b"a cat, honestly\n",
    "HTML saved as .jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
    "JPEG magic only": b"\xff\xd8\xff\xe0",
    "PNG signature only": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("case", list(NOT_IMAGES))
def test_files_that_are_not_images(tmp_path, case):
    path = tmp_path / "photo.jpg"
    path.write_bytes(NOT_IMAGES[case])
    with pytest.raises(ImageError) as info:
        recipe("efficientformer-hf")(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [8, 33, 100, 1000, 0.5])
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_at_structural_points(tmp_path, fmt, cut):
    full = tmp_path / f"full.{fmt}"
    Image.open(CHELSEA).convert("RGB").save(full)
    data = full.read_bytes()
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(ImageError, match=r"cut\.(png|jpeg): (not an image|cannot decode)"):
        no_warnings(load_image, path)


def test_truncated_trailers(tmp_path):
    """Measured (Pillow 13): a PNG missing up to its last 21 bytes (IEND, the last IDAT's CRC and
    zlib's Adler-32) still holds every scanline and decodes to identical pixels; one byte more is an
    error. A JPEG without its 2-byte end-of-image marker is an error."""
    image = Image.open(CHELSEA).convert("RGB")
    for fmt, cut, same in (("png", 21, True), ("png", 22, False), ("jpeg", 2, False)):
        full = tmp_path / f"full.{fmt}"
        image.save(full)
        path = tmp_path / f"cut{cut}.{fmt}"
        path.write_bytes(full.read_bytes()[:-cut])
        if same:
            np.testing.assert_array_equal(np.asarray(no_warnings(load_image, path)), np.asarray(image))
        else:
            with pytest.raises(ImageError, match="cannot decode"):
                no_warnings(load_image, path)


def test_paths_that_are_not_files_through_the_cli(tmp_path, capsys):
    for path, reason in ((tmp_path / "missing.png", "no such file"), (tmp_path, "is a directory")):
        assert cli.main(["predict", str(path)]) == 8
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and str(path) in err and reason in err
