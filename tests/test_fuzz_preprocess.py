"""Property-based fuzzing of image loading and preprocessing (hypothesis).

* Random images of every Pillow mode and random sizes (1 to 64 px a side, and strips up to 2 x 3000):
  every recipe gives float32 [1, 3, 224, 224] finite pixel values, or an ImageError when the
  aspect ratio is too extreme for a shortest-edge resize -- exactly when the resize target
  exceeds PIL.Image.MAX_IMAGE_PIXELS.
* Random files: such an image written as PNG, JPEG, GIF, BMP, TIFF or WebP, then bytes
  overwritten, inserted, deleted or cut: valid pixel values or an ImageError naming the file,
  never another exception.

Bounded for CI (25 examples per mode, 150 mutated files; no deadline).
"""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from npformer.errors import ImageError
from npformer.preprocess import RECIPES, get_resize_output_size, recipe

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I;16", "I;16B", "I", "F"]
SHORT_SIDE = {"efficientformer-hf": 256, "original": 256, "timm": 235}  # the other recipes squash to 224 x 224
PROCESSORS = {name: recipe(name) for name in RECIPES}
_SCRATCH = tempfile.TemporaryDirectory(prefix="npformer-fuzz-images-")
OUTCOMES = {}  # test id -> outcome counts of its examples (read by reports; each test asserts on its own)


@st.composite
def images(draw, mode):
    """A PIL image of `mode` and a random size, with random pixel values (floats include huge and negative)."""
    if draw(st.integers(0, 4)) == 0:  # a strip: refused by the shortest-edge recipes (1 x 1400 -> 256 x 358400) or cheap
        width, height = draw(st.sampled_from([(1, 1400), (1400, 1), (2, 3000), (1, 20), (20, 1), (2, 60), (1, 2)]))
    else:
        width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode == "F":
        return Image.fromarray((rng.standard_normal((height, width)) * 10.0 ** rng.integers(0, 30)).astype(np.float32))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (height, width), dtype=np.int32))
    if mode.startswith("I;16"):
        data = rng.integers(0, 2**16, (height, width), dtype=np.uint16).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombuffer(mode, (width, height), data.tobytes(), "raw", mode, 0, 1)
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "PA":
        pa = rgba.convert("P").convert("PA")
        pa.putalpha(rgba.getchannel("A"))
        return pa
    if mode == "La":
        return rgba.convert("LA").convert("La")
    if mode in ("LA", "RGBA", "RGBa"):
        return rgba.convert(mode)
    return rgba.convert("RGB").convert(mode)


def refusal_expected(name, width, height):
    """Whether `name`'s resize target for a width x height image exceeds Pillow's pixel limit."""
    if name not in SHORT_SIDE:
        return False
    new_height, new_width = get_resize_output_size(height, width, SHORT_SIDE[name])
    return new_height * new_width > Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("mode", MODES)
def test_fuzz_modes_and_sizes(mode):
    seen = OUTCOMES[f"mode-{mode}"] = {"pixels": 0, "refused": 0}

    @settings(FUZZ, max_examples=25)
    @given(images(mode), st.sampled_from(list(RECIPES)))
    def check(image, name):
        assert image.mode == mode
        try:
            out = PROCESSORS[name](image)["pixel_values"]
        except ImageError as err:
            assert refusal_expected(name, *image.size), err
            assert f"{image.size[1]}×{image.size[0]}" in str(err)
            seen["refused"] += 1
            return
        assert not refusal_expected(name, *image.size)
        assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32 and np.isfinite(out).all()
        seen["pixels"] += 1

    check()
    assert seen["pixels"] > 0, seen


FORMATS = {"PNG": {}, "JPEG": {"quality": 90}, "GIF": {}, "BMP": {}, "TIFF": {}, "WEBP": {"quality": 80}}


def encoded(fmt, seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **FORMATS[fmt])
    return buffer.getvalue()


@st.composite
def mutated_files(draw):
    fmt = draw(st.sampled_from(list(FORMATS)))
    data = bytearray(encoded(fmt, draw(st.integers(0, 20))))
    kind = draw(st.sampled_from(["overwrite", "truncate", "insert", "delete"]))
    head = st.integers(0, min(len(data), 64) - 1)  # headers and the first chunks
    position = draw(st.one_of(head, st.integers(0, len(data) - 1)))
    if kind == "overwrite":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.one_of(head, st.integers(0, len(data) - 1)))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del data[position:]
    elif kind == "insert":
        data[position:position] = draw(st.binary(min_size=1, max_size=16))
    else:
        del data[position : position + draw(st.integers(1, 16))]
    return fmt, bytes(data)


def test_fuzz_corrupt_image_files():
    outcomes = OUTCOMES["files"] = {"pixels": 0, "ImageError": 0}

    @FUZZ
    @given(mutated_files(), st.sampled_from(list(RECIPES)))
    def check(file, name):
        fmt, data = file
        path = Path(_SCRATCH.name) / f"mutated.{fmt.lower()}"
        path.write_bytes(data)
        try:
            out = PROCESSORS[name](path)["pixel_values"]
        except ImageError as err:
            assert str(path) in str(err)
            outcomes["ImageError"] += 1
            return
        outcomes["pixels"] += 1
        assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32 and np.isfinite(out).all()

    check()
    assert outcomes["pixels"] > 0 and outcomes["ImageError"] > 0, outcomes  # both branches were exercised
