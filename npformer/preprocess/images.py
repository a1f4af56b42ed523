"""Image loading and mode conversion: any accepted input -> an 8-bit RGB image.

Where this deliberately differs from transformers' image processors (HF raises, or silently
misreads the input):

* Every Pillow mode is converted to RGB first (`load_image`); HF raises on grayscale
  ("Unsupported number of image dimensions: 2"), on RGBA/LA/CMYK ("Unable to infer channel
  dimension format") and on P/1/I;16/F images, and silently treats a YCbCr image's planes as RGB.
* A numpy image is always taken as [H, W, C] (C in 1, 3, 4) or [H, W]; HF guesses the channel axis
  and reads an image of height 1 or 3 as channels-first.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, InputError

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray

_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to a new 8-bit RGB image.

    Policy (measured on Pillow 13; stable since Pillow 9):

    * Alpha (LA, La, PA, RGBA, RGBa, P with a transparency entry) is **dropped**, exactly as
      `Image.convert("RGB")` does: the colour stored under a transparent pixel is used as is, not
      composited onto a background. This is what a transformers user gets from the usual
      `Image.open(path).convert("RGB")` + processor, so outputs stay comparable with HF.
    * 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX, F: `Image.convert("RGB")` (grey replicated to 3
      channels; CMYK and YCbCr via Pillow's plain formulas, no ICC profile). For F (32-bit float)
      that means Pillow's rule: values taken on the 0..255 scale, clipped, truncated toward zero.
    * I;16 / I;16L / I;16B / I;16N (16-bit grey, e.g. a 16-bit grayscale PNG or TIFF): **v >> 8**
      (the high byte). Pillow's own `convert` would clip (every value > 255 -> 255, so a normal
      16-bit photograph turns almost white); the high byte is what Pillow's decoder itself keeps
      for 16-bit RGB/RGBA PNGs, so a 16-bit grey PNG and the same picture as 16-bit RGB PNG give
      the same pixels, and 8-bit data stored as v * 257 maps back exactly.
    * I (32-bit signed int; Pillow decodes 16-bit PGM/PPM this way): treated as 16-bit data,
      clipped to 0..65535, then v >> 8 as above.

    EXIF orientation is not applied here (see `load_image`).

    Parameters
    ----------
    image : PIL.Image.Image
        An image of any mode.

    Returns
    -------
    PIL.Image.Image
        A new 8-bit RGB image.
    """
    mode = image.mode
    if mode in _MODES_16BIT or mode == "I":
        values = np.asarray(image)
        if mode == "I":
            values = np.clip(values, 0, 65535)
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "La":  # premultiplied grey+alpha: Pillow has no direct La -> RGB conversion
        image = image.convert("LA")
    return image.convert("RGB")


# Pillow only *warns* (DecompressionBombWarning) for images between MAX_IMAGE_PIXELS and twice
# that, and decodes them; npformer turns the warning into an ImageError. warnings.catch_warnings
# changes process-wide state, so npformer's own threads take turns (see load_image).
_PILLOW_WARNINGS = threading.Lock()


def _bomb_error(path: str, err: BaseException) -> ImageError:
    return ImageError(
        f"{path}: refused as a possible decompression bomb: {err} (the limit is PIL.Image.MAX_IMAGE_PIXELS = "
        f"{Image.MAX_IMAGE_PIXELS}; raise it, or set it to None, only for files you trust)"
    )


def load_image(image: str | os.PathLike[str] | Image.Image, *, exif_orientation: bool = False) -> Image.Image:
    """Open `image` (a path or a PIL image) and return a fully decoded 8-bit RGB PIL image.

    Every Pillow mode is converted as described in `to_rgb`. A multi-frame file (GIF, APNG, TIFF)
    gives its first frame. Raises `ImageError` naming the path and the reason for a missing path, a
    directory, a file Pillow cannot identify, one that fails to decode (truncated or corrupt), and
    one of more than `PIL.Image.MAX_IMAGE_PIXELS` pixels (Pillow's decompression-bomb limit,
    89,478,485 by default; Pillow itself only warns below twice that and decodes the image anyway).
    Truncated files are only caught while `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is False (the
    default).

    EXIF orientation is ignored by default, as transformers' image processors ignore it on a PIL
    image (measured with transformers 4.40.2: `EfficientFormerImageProcessor` gives the same
    pixel values for `Image.open(p)` and `Image.open(p).convert("RGB")` of an orientation-6 JPEG),
    and as `Image.open(p).convert("RGB")`, torchvision's / timm's loaders and the original repos'
    evaluation do. `exif_orientation=True` applies it first (`PIL.ImageOps.exif_transpose`), which
    is what `transformers.image_utils.load_image` -- used by transformers' pipelines -- does.

    Parameters
    ----------
    image : str, os.PathLike or PIL.Image.Image
        A path, or an opened image.
    exif_orientation : bool, default False
        Apply the EXIF orientation first, as transformers' pipelines do.

    Returns
    -------
    PIL.Image.Image
        A fully decoded 8-bit RGB image.

    Raises
    ------
    ImageError
        A missing path, a directory, a file Pillow cannot identify or decode, a decompression
        bomb.
    InputError
        Something that is neither a path nor a PIL image.
    """
    if isinstance(image, Image.Image):
        try:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image) if exif_orientation else image)
        except Exception as err:  # noqa: BLE001 - any decoder failure is reported the same way
            raise ImageError(f"cannot decode PIL image (mode {image.mode!r}): {type(err).__name__}: {err}") from err
    try:
        path = os.fspath(image)
    except TypeError:
        raise InputError(
            f"expected a path or a PIL.Image.Image, got {type(image).__name__}"
        ) from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        with _PILLOW_WARNINGS, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                rgb = to_rgb(ImageOps.exif_transpose(opened) if exif_orientation else opened)
                rgb.load()
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not an image file Pillow can identify") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _bomb_error(path, err) from err
    except Exception as err:  # noqa: BLE001 - OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageError(f"{path}: cannot decode image (truncated or corrupt?): {type(err).__name__}: {err}") from err
    return rgb


def _as_rgb_array(image: ImageLike) -> np.ndarray:
    """Any accepted image input -> [H, W, 3] uint8 (C-contiguous)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputError(
                f"numpy image must be uint8 (0..255), got dtype {image.dtype}; convert it to uint8 "
                "or pass a PIL image"
            )
        if image.ndim == 3 and image.shape[2] == 3:
            array = image
        elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
            squeezed = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
            array = np.asarray(to_rgb(Image.fromarray(np.ascontiguousarray(squeezed))))
        else:
            raise InputError(
                f"numpy image must have shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {list(image.shape)}"
            )
    elif isinstance(image, (Image.Image, str, bytes, os.PathLike)):
        array = np.asarray(load_image(image))
    else:
        raise InputError(
            f"unsupported image type {type(image).__name__}: expected a PIL image, a path or a uint8 numpy array"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image is empty: shape {list(array.shape)}")
    return np.ascontiguousarray(array)
