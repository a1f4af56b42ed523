"""Image loading and EfficientFormer / SwiftFormer preprocessing, reproducing the reference pipelines.

Named recipes (`RECIPES`, `recipe(name)` -> a processor; `processor(images)["pixel_values"]` is
float32 [N, 3, 224, 224]). Checked against the live references and committed golden outputs by
`tests/test_preprocess.py` and `tests/test_preprocess_recipes.py`:

| recipe                       | resize (PIL, on uint8)                      | crop 224, offsets  | values                 |
|------------------------------|---------------------------------------------|--------------------|------------------------|
| `efficientformer-hf`         | short side 256, bicubic                     | floor (HF)         | HF rescale + normalize |
| `efficientformer-hf-default` | squash to 224 x 224, bicubic                | (no-op)            | HF rescale + normalize |
| `swiftformer-hf`             | squash to 224 x 224, bilinear               | none               | HF rescale + normalize |
| `timm`                       | short side floor(224 / 0.95) = 235, bicubic | round half to even | ToTensor + Normalize   |
| `original`                   | short side 256, bicubic                     | round half to even | ToTensor + Normalize   |

All normalise with the ImageNet-default mean/std. Sources (what each is checked against):

* `efficientformer-hf`: transformers 4.40.2 `EfficientFormerImageProcessor` with the published
  snap-research/efficientformer-l{1,3,7}-300 `preprocessor_config.json`
  (`EfficientFormerImageProcessor.published()`).
* `efficientformer-hf-default`: `EfficientFormerImageProcessor()`, transformers' code defaults.
* `swiftformer-hf`: transformers 4.40.2 `ViTImageProcessor` (the auto mapping for swiftformer) with
  the published MBZUAI/swiftformer-* `preprocessor_config.json` (`ViTImageProcessor.published_swiftformer()`).
* `timm`: timm 1.0 `create_transform(**resolve_data_config({}, model=m))` for
  `efficientformer_l{1,3,7}.snap_dist_in1k` and `swiftformer_{xs,s,l1,l3}.dist_in1k` -- the same
  transform for both families (crop_pct 0.95, bicubic, crop_mode center), i.e. torchvision
  Resize(235) -> CenterCrop(224) -> ToTensor -> Normalize (`TorchvisionEvalTransform.timm()`).
* `original`: the eval transform in `util/datasets.py` of snap-research/EfficientFormer and
  Amshaker/SwiftFormer: torchvision Resize(int(256 / 224 * 224) = 256, interpolation=3 bicubic) ->
  CenterCrop(224) -> ToTensor -> Normalize(IMAGENET_DEFAULT) (`TorchvisionEvalTransform(256, 224)`).

ImageNet default = mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225). `efficientformer-hf`
and `original` differ only in the crop offset rounding: identical output unless a margin
H' - 224 is odd with an odd floor half, e.g. 640 x 427 -> 383 x 256 (left 79 vs 80). The torchvision
steps (`to_tensor`: float32(x) / 255) and HF's (`rescale`: float64 x * (1/255), then float32) give
the same float32 value for every uint8 input, so nothing else separates them.

The HF twins below follow transformers step by step, with the same dtypes at every step:

`EfficientFormerImageProcessor` mirrors `transformers.EfficientFormerImageProcessor` (4.40.2) so its
`pixel_values` are bit-identical to HF's for every RGB image HF accepts (`ViTImageProcessor`
likewise mirrors `transformers.ViTImageProcessor`: the same steps without the center crop, and
`size` always an exact height x width):

    image --load_image--> PIL RGB --np.asarray--> [H, W, 3] uint8
      -> resize          PIL `Image.resize` on the uint8 image (PIL's antialiased filters; output
                         uint8). `{"shortest_edge": S}`: short side -> S, long side ->
                         int(S * long / short) (floor, computed exactly in that float order);
                         `{"height": h, "width": w}`: squash to h x w, aspect not kept.
      -> center_crop     top = (H - ch) // 2, left = (W - cw) // 2 (floor); an image smaller than
                         the crop is first zero-padded (uint8 0, i.e. black), exactly like
                         `transformers.image_transforms.center_crop` -- including its quirk of
                         returning one pixel less than the crop size on an axis where the
                         shortfall is odd (see `center_crop`).
      -> rescale         `image * rescale_factor` (uint8 * Python float -> float64), then float32.
      -> normalize       float32: (x - mean) / std with mean/std cast to float32 first.
      -> CHW, stacked to float32 [N, 3, h, w].

Pitfalls this module exists to get right (see spec numerics.md section 5.1):

* The class *docstring* in transformers says resample defaults to BILINEAR and mean/std to
  IMAGENET_STANDARD (0.5, 0.5, 0.5); the *code* defaults are BICUBIC and IMAGENET_DEFAULT
  (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225). This module uses the code defaults.
* The code default size is {"height": 224, "width": 224}: a squash to 224 x 224 (aspect ratio
  lost), so the crop is a no-op. The published snap-research checkpoints instead ship
  `preprocessor_config.json` with {"shortest_edge": 256} + center crop 224 + bicubic
  (`EfficientFormerImageProcessor.published()`), i.e. crop ratio 0.875. timm evaluates with
  crop_pct 0.95 (short side 235) instead: a different pipeline, recipe "timm".
* An int `size` in a config means a *square* (224 -> 224 x 224), not a shortest edge.
  `longest_edge` next to `shortest_edge` is silently ignored by HF's EfficientFormer processor.
* The transformers model docs suggest `ViTImageProcessor`; for EfficientFormer that is wrong
  (no crop, bilinear by default, mean/std 0.5). For SwiftFormer it is what transformers uses, and
  its published configs squash the whole image to 224 x 224 (no aspect keep, no crop), unlike
  the original repo's and timm's resize + center crop.
* torchvision's `CenterCrop` computes the offset as `int(round((H - ch) / 2))` (round half to even)
  while HF floors: when H - ch is odd and (H - ch) // 2 is odd, torchvision's crop sits one pixel
  lower/righter (e.g. a 640 x 427 photo -> 383 x 256 -> HF left 79, torchvision 80). The original
  repos evaluate with torchvision, so their numbers can differ slightly from HF's
  (`torchvision_center_crop_offsets` vs `center_crop_offsets`).

Where this module deliberately differs from HF (HF raises, or silently misreads the input):

* Every Pillow mode is converted to RGB first (`load_image`); HF raises on grayscale
  ("Unsupported number of image dimensions: 2"), on RGBA/LA/CMYK ("Unable to infer channel
  dimension format") and on P/1/I;16/F images, and silently treats a YCbCr image's planes as RGB.
* A numpy image is always taken as [H, W, C] (C in 1, 3, 4) or [H, W]; HF guesses the channel axis
  and reads an image of height 1 or 3 as channels-first.
* `pixel_values` is always float32 (HF returns uint8 if both do_rescale and do_normalize are off).
* `return_tensors` defaults to "np" (HF's `preprocess` defaults to None = a list of arrays; pass
  `return_tensors=None` for that).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import threading
import warnings
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from npformer.errors import ConfigError, ImageError, InputError

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
    "PIL_RESAMPLE_NAMES",
    "load_image",
    "to_rgb",
    "get_resize_output_size",
    "resize",
    "resize_shortest_edge",
    "center_crop_offsets",
    "center_crop",
    "rescale",
    "normalize",
    "timm_scale_size",
    "torchvision_center_crop_offsets",
    "torchvision_center_crop",
    "to_tensor",
    "BatchFeature",
    "EfficientFormerImageProcessor",
    "ViTImageProcessor",
    "TorchvisionEvalTransform",
    "RecipeInfo",
    "RECIPES",
    "recipe",
]

IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]

#: Pillow's resampling filter codes (`PIL.Image.Resampling`), as stored in HF configs.
PIL_RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


# --------------------------------------------------------------------------------------------------
# Loading and mode conversion
# --------------------------------------------------------------------------------------------------

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


def load_image(image: Union[str, "os.PathLike[str]", Image.Image], *, exif_orientation: bool = False) -> Image.Image:
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


# --------------------------------------------------------------------------------------------------
# The four steps (each a pure function on numpy arrays)
# --------------------------------------------------------------------------------------------------


def get_resize_output_size(height: int, width: int, shortest_edge: int) -> Tuple[int, int]:
    """HF's `get_resize_output_image_size(default_to_square=False)`: (new_height, new_width).

    Short side -> `shortest_edge`; long side -> int(shortest_edge * long / short), i.e. floored,
    evaluated in exactly this float order. A square image is treated as "width is short".
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [height, width, 3] uint8, with PIL `Image.resize` (as HF does).

    An output of more than `PIL.Image.MAX_IMAGE_PIXELS` pixels raises `ImageError`: a shortest-edge
    resize of an extreme aspect ratio (1 x 4000 -> 256 x 1,024,000) would take gigabytes to make
    pixels the center crop then throws away."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > limit:
        raise ImageError(
            f"resizing a {image.shape[0]}×{image.shape[1]} image to {height}×{width} would make {height * width:,} "
            f"pixels, more than PIL.Image.MAX_IMAGE_PIXELS = {limit:,}: its aspect ratio is too extreme for this "
            "resize; crop it first"
        )
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((width, height), resample=resample, reducing_gap=None))


def resize_shortest_edge(image: np.ndarray, shortest_edge: int, resample: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [H', W', 3] uint8 with min(H', W') = shortest_edge (HF's size rule)."""
    new_height, new_width = get_resize_output_size(image.shape[0], image.shape[1], shortest_edge)
    return resize(image, new_height, new_width, resample)


def center_crop_offsets(height: int, width: int, crop_height: int, crop_width: int) -> Tuple[int, int]:
    """(top, left) of HF's center crop: floor((H - ch) / 2), floor((W - cw) / 2).

    Negative when the image is smaller than the crop (it is then padded, see `center_crop`).
    torchvision's CenterCrop uses int(round((H - ch) / 2)) instead.
    """
    return (height - crop_height) // 2, (width - crop_width) // 2


def center_crop(image: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """[H, W, C] -> [crop_height, crop_width, C], same dtype; `transformers.image_transforms.center_crop`.

    If the image is smaller than the crop in either dimension it is first placed on a zero canvas of
    size max(H, ch) x max(W, cw) at offset ((newH - H) // 2, (newW - W) // 2) and then cropped, so
    the padding is 0 in the input dtype (black for uint8, before rescale/normalize).

    HF quirk, reproduced on purpose: the crop window keeps the unpadded floor offset
    (H - ch) // 2 (rounded toward -inf) plus the pad (newH - H) // 2 (rounded toward 0) and is then
    clipped to the canvas. When ch - H is odd the window starts at -1, so the result is one pixel
    SHORT on that axis: a 223 x 223 image "cropped" to 224 x 224 comes back 223 x 223 unpadded,
    222 x 221 comes back 224 x 223. Only reachable with do_resize=False, a shortest_edge or
    height/width below the crop size; never with the published or default settings.
    """
    height, width = image.shape[:2]
    top, left = center_crop_offsets(height, width, crop_height, crop_width)
    bottom, right = top + crop_height, left + crop_width
    if top >= 0 and left >= 0 and bottom <= height and right <= width:
        return image[top:bottom, left:right]
    new_height, new_width = max(crop_height, height), max(crop_width, width)
    canvas = np.zeros((new_height, new_width) + image.shape[2:], dtype=image.dtype)
    top_pad, left_pad = (new_height - height) // 2, (new_width - width) // 2
    canvas[top_pad : top_pad + height, left_pad : left_pad + width] = image
    top, bottom, left, right = top + top_pad, bottom + top_pad, left + left_pad, right + left_pad
    return canvas[max(0, top) : min(new_height, bottom), max(0, left) : min(new_width, right)]


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W, 3] float32: (image * scale) in float64, then cast (as HF)."""
    return (image * scale).astype(np.float32)


def normalize(image: np.ndarray, mean: Union[float, Sequence[float]], std: Union[float, Sequence[float]]) -> np.ndarray:
    """[H, W, C] float32 (or integer, cast to float32 first) -> [H, W, C]: (x - mean) / std.

    As HF: a non-float image is cast to float32; mean and std are cast to the image dtype before
    the arithmetic, so everything happens in float32 for float32 input.
    """
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    channels = image.shape[-1]
    mean_list = list(mean) if isinstance(mean, Iterable) else [mean] * channels
    std_list = list(std) if isinstance(std, Iterable) else [std] * channels
    if len(mean_list) != channels or len(std_list) != channels:
        raise ConfigError(f"image_mean/image_std must have {channels} elements, got {mean!r} / {std!r}")
    mean_arr = np.array(mean_list, dtype=image.dtype)
    std_arr = np.array(std_list, dtype=image.dtype)
    return (image - mean_arr) / std_arr


# --------------------------------------------------------------------------------------------------
# torchvision's eval steps where their arithmetic differs from HF's (the "timm" / "original" recipes)
# --------------------------------------------------------------------------------------------------
#
# torchvision `Resize(S)` on a PIL image needs no function of its own: its output size
# (`_compute_resized_output_size`: short side -> S, long side -> int(S * long / short)) is exactly
# `get_resize_output_size`, and it then calls `img.resize((w, h), filter)`, i.e. PIL with the default
# reducing_gap=None, exactly as `resize` does. So `resize_shortest_edge` is torchvision's Resize.


def timm_scale_size(img_size: int, crop_pct: float) -> int:
    """timm's `transforms_imagenet_eval` resize target: math.floor(img_size / crop_pct).

    224 / 0.95 = 235.789... -> 235 (timm's EfficientFormer / SwiftFormer cfgs); 224 / 0.875 -> 256.
    """
    return math.floor(img_size / crop_pct)


def torchvision_center_crop_offsets(height: int, width: int, crop_height: int, crop_width: int) -> Tuple[int, int]:
    """(top, left) of torchvision's `CenterCrop`: int(round((H - ch) / 2.0)), same for the width.

    Python's round() rounds half to EVEN, so for an odd H - ch the offset is the floor when
    (H - ch) // 2 is even and floor + 1 when it is odd: 383 -> 224 gives 80 (HF's
    `center_crop_offsets` floors to 79); 235 -> 224 gives 6 (HF: 5); 341 -> 224 gives 58 (both).
    Only meaningful for H >= ch, W >= cw (`torchvision_center_crop` pads smaller images first).
    """
    return int(round((height - crop_height) / 2.0)), int(round((width - crop_width) / 2.0))


def torchvision_center_crop(image: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """[H, W, C] -> [crop_height, crop_width, C], same dtype: `torchvision.transforms.functional.center_crop`.

    An axis shorter than the crop is first zero-padded (0 = black for uint8) with
    (crop - size) // 2 before and (crop - size + 1) // 2 after, so it comes out exactly crop long
    (unlike HF's `center_crop`, never one pixel short). Then the window starts at
    `torchvision_center_crop_offsets` (round half to even).
    """
    height, width = image.shape[:2]
    pad_h, pad_w = max(crop_height - height, 0), max(crop_width - width, 0)
    if pad_h or pad_w:
        pads = ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, pads, mode="constant", constant_values=0)  # -> [max(H, ch), max(W, cw), C]
        height, width = image.shape[:2]
    top, left = torchvision_center_crop_offsets(height, width, crop_height, crop_width)
    return image[top : top + crop_height, left : left + crop_width]


def to_tensor(image: np.ndarray) -> np.ndarray:
    """[H, W, C] uint8 -> [H, W, C] float32: torchvision `ToTensor`'s float32(x) / 255 (not HF's
    float64 x * (1/255) then float32; for all 256 uint8 values both give the same float32, measured).
    The layout stays channels-last here; the processors transpose to CHW at the end."""
    return image.astype(np.float32) / np.float32(255)


# --------------------------------------------------------------------------------------------------
# Config parsing (HF semantics, with validation)
# --------------------------------------------------------------------------------------------------

# Metadata keys HF writes into preprocessor_config.json; they do not affect the output.
_METADATA_KEYS = (
    "image_processor_type",
    "processor_class",
    "feature_extractor_type",
    "_processor_class",
    "_valid_processor_keys",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value: Any, what: str) -> int:
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _size_dict(value: Any, what: str, strict: bool) -> Dict[str, int]:
    """HF `get_size_dict(value, default_to_square=True)`: int -> square, (h, w) -> dict, dict as is."""
    if _is_int(value):
        side = _positive_int(value, what)
        return {"height": side, "width": side}
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{what} as a sequence must be [height, width], got {value!r}")
        return {"height": _positive_int(value[0], what), "width": _positive_int(value[1], what)}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be an int, [height, width] or a dict, got {value!r}")
    keys = set(value)
    if keys == {"height", "width"}:
        return {
            "height": _positive_int(value["height"], f"{what}.height"),
            "width": _positive_int(value["width"], f"{what}.width"),
        }
    if keys == {"shortest_edge"}:
        return {"shortest_edge": _positive_int(value["shortest_edge"], f"{what}.shortest_edge")}
    if keys == {"shortest_edge", "longest_edge"}:
        if strict:
            raise ConfigError(
                f"{what} {value!r}: transformers' EfficientFormerImageProcessor ignores 'longest_edge' "
                "(only the shortest edge is used); drop it, or load with strict=False to ignore it like HF"
            )
        return {"shortest_edge": _positive_int(value["shortest_edge"], f"{what}.shortest_edge")}
    raise ConfigError(
        f"{what} must have keys {{height, width}} or {{shortest_edge}}, got {sorted(keys)} "
        "(HF's EfficientFormer processor cannot resize with these either)"
    )


def _crop_dict(value: Any, strict: bool) -> Dict[str, int]:
    size = _size_dict(value, "crop_size", strict)
    if "height" not in size:
        raise ConfigError(f"crop_size must be an int, [height, width] or {{height, width}}, got {value!r}")
    return size


def _height_width_dict(value: Any, what: str) -> Dict[str, int]:
    """An exact output size: int (square), [height, width] or {"height", "width"} (ViT's `size`)."""
    if isinstance(value, dict) and set(value) != {"height", "width"}:
        raise ConfigError(
            f"{what} must be an int, [height, width] or {{height, width}}, got {value!r} "
            "(transformers' ViTImageProcessor resizes to an exact height x width; it raises on this too)"
        )
    return _size_dict(value, what, strict=True)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    return bool(value)


def _resample(value: Any) -> int:
    if not _is_int(value) or int(value) not in PIL_RESAMPLE_NAMES:
        raise ConfigError(
            f"resample must be a PIL filter code {sorted(PIL_RESAMPLE_NAMES)} "
            f"({', '.join(f'{k}={v}' for k, v in PIL_RESAMPLE_NAMES.items())}), got {value!r}"
        )
    return int(value)


def _real(value: Any, what: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return value


def _mean_std(value: Any, what: str, nonzero: bool = False) -> Union[float, List[float]]:
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ConfigError(f"{what} must be a number or a list of 3 numbers (RGB), got {value!r}")
        items = [_real(v, what) for v in value]
    else:
        items = [_real(value, what)]
    if nonzero and any(v == 0 for v in items):
        raise ConfigError(f"{what} must not contain 0, got {value!r}")
    return list(value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------------------
# Batching (shared by every processor)
# --------------------------------------------------------------------------------------------------


class BatchFeature(dict):
    """A dict (key "pixel_values") that also allows attribute access, like HF's BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _as_batch(images: Union[ImageLike, Sequence[ImageLike]]) -> List[ImageLike]:
    """One image or a list/tuple of images -> a non-empty list."""
    batch = list(images) if isinstance(images, (list, tuple)) else [images]
    if not batch:
        raise InputError("no images given (empty list)")
    return batch


def _batch_feature(outputs: List[np.ndarray], return_tensors: Optional[str], data_format: str) -> BatchFeature:
    """Per-image [h, w, 3] float32 arrays -> {"pixel_values": [N, 3, h, w]} (or a list / channels-last)."""
    if return_tensors not in ("np", None):
        raise ConfigError(f"return_tensors must be 'np' or None (npformer is NumPy-only), got {return_tensors!r}")
    if data_format not in ("channels_first", "channels_last"):
        raise ConfigError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
    if data_format == "channels_first":
        outputs = [out.transpose(2, 0, 1) for out in outputs]  # [h, w, 3] -> [3, h, w]
    if return_tensors is None:
        return BatchFeature(pixel_values=[np.ascontiguousarray(out) for out in outputs])
    shapes = {out.shape for out in outputs}
    if len(shapes) != 1:
        raise InputError(
            f"images have different output shapes {sorted(shapes)} (no center crop?); "
            "cannot stack them: use return_tensors=None"
        )
    return BatchFeature(pixel_values=np.ascontiguousarray(np.stack(outputs)))  # [N, 3, h, w]


# --------------------------------------------------------------------------------------------------
# HF image processor twins
# --------------------------------------------------------------------------------------------------


class _HFImageProcessor:
    """What the HF processor twins share: config I/O (`from_dict`, `from_pretrained`, `to_dict`),
    equality, per-call overrides and batching. A subclass sets `_FIELDS` (its constructor
    arguments = its config keys, in HF's `to_dict` order) and `_TYPE` (HF's class name), and
    implements `__init__` (defaults + validation) and `_process_one`."""

    _FIELDS: Tuple[str, ...] = ()
    _TYPE = ""
    model_input_names = ["pixel_values"]
    strict: bool

    def _set_rescale_normalize(self, do_rescale, rescale_factor, do_normalize, image_mean, image_std,
                               default_mean, default_std) -> None:
        """Validate and store the rescale / normalize settings both HF classes share."""
        self.do_rescale = _bool(do_rescale, "do_rescale")
        self.rescale_factor = _real(rescale_factor, "rescale_factor")
        self.do_normalize = _bool(do_normalize, "do_normalize")
        self.image_mean = _mean_std(image_mean if image_mean is not None else default_mean, "image_mean")
        self.image_std = _mean_std(image_std if image_std is not None else default_std, "image_std", nonzero=True)

    def _rescale_and_normalize(self, array: np.ndarray) -> np.ndarray:
        """[h, w, 3] uint8 -> [h, w, 3] float32: the last two steps of both HF pipelines."""
        if self.do_rescale:
            array = rescale(array, self.rescale_factor)  # -> float32
        if self.do_normalize:
            array = normalize(array, self.image_mean, self.image_std)  # -> float32
        return array.astype(np.float32, copy=False)

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, config: Dict[str, Any], *, strict: bool = True):
        """Build from a `preprocessor_config.json` dict, honouring every field HF honours.

        Missing fields take the code defaults (as in HF). The metadata keys `image_processor_type`,
        `processor_class`, `feature_extractor_type` (and `_processor_class`,
        `_valid_processor_keys` that some transformers versions save) are ignored.

        With `strict=True` (default) a `ConfigError` is raised for anything HF would *silently
        ignore* although it signals different intended preprocessing: unknown keys (e.g.
        `crop_pct`, `do_convert_rgb`, `max_size`; for ViT also `crop_size`), `longest_edge` in
        `size`, and an `image_processor_type` naming another processor class (e.g. a
        ViTImageProcessor config read as EfficientFormer: AutoImageProcessor would run it without a
        crop). `strict=False` ignores those exactly as HF's `<Class>.from_dict` does.
        """
        if not isinstance(config, dict):
            raise ConfigError(f"preprocessor config must be a JSON object, got {type(config).__name__}")
        unknown = sorted(k for k in config if k not in cls._FIELDS and k not in _METADATA_KEYS)
        proc_type = config.get("image_processor_type")
        if strict:
            if unknown:
                raise ConfigError(
                    f"preprocessor config has fields transformers' {cls._TYPE} would silently "
                    f"ignore: {unknown}; remove them, or pass strict=False to ignore them like HF"
                )
            if proc_type is not None and proc_type != cls._TYPE:
                raise ConfigError(
                    f"preprocessor config is for image_processor_type={proc_type!r}, not {cls._TYPE!r}; "
                    f"its defaults and steps differ (pass strict=False to read it as a {cls._TYPE} config like "
                    f"{cls._TYPE}.from_dict in HF does)"
                )
        kwargs = {k: config[k] for k in cls._FIELDS if k in config and config[k] is not None}
        return cls(**kwargs, strict=strict)

    @classmethod
    def from_pretrained(cls, path: Union[str, "os.PathLike[str]"], *, strict: bool = True):
        """Read `preprocessor_config.json` from a directory, or a JSON file given directly."""
        path = os.fspath(path)
        file = os.path.join(path, PREPROCESSOR_CONFIG_NAME) if os.path.isdir(path) else path
        try:
            with open(file, "r", encoding="utf-8") as handle:
                config = json.load(handle)
        except FileNotFoundError:
            raise ConfigError(
                f"{file}: no such file (expected a directory containing {PREPROCESSOR_CONFIG_NAME} or the JSON file)"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{file}: cannot read: {err}") from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file}: not valid JSON: {err}") from err
        try:
            return cls.from_dict(config, strict=strict)
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from err

    def to_dict(self) -> Dict[str, Any]:
        """The config as HF writes it (`from_dict(to_dict())` round-trips)."""
        config = {}
        for field in self._FIELDS:
            value = getattr(self, field)
            config[field] = type(value)(value) if isinstance(value, (dict, list)) else value  # a copy
        config["image_processor_type"] = self._TYPE
        return config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HFImageProcessor) and self.to_dict() == other.to_dict()

    # ---- processing ---------------------------------------------------------------------------

    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]], **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def _preprocess(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        overrides: Dict[str, Any],
        return_tensors: Optional[str],
        data_format: str,
    ) -> BatchFeature:
        """`preprocess` with `overrides` (field -> value or None = keep) applied for this call only."""
        settings = {field: getattr(self, field) for field in self._FIELDS}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        processor = type(self)(**settings, strict=self.strict)
        outputs = [processor._process_one(image) for image in _as_batch(images)]
        return _batch_feature(outputs, return_tensors, data_format)

    def _process_one(self, image: ImageLike) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class EfficientFormerImageProcessor(_HFImageProcessor):
    """NumPy/Pillow twin of `transformers.EfficientFormerImageProcessor` (4.40.2).

    Constructor arguments and defaults are HF's *code* defaults (not its docstring's): squash-resize
    to 224 x 224 with BICUBIC (3), center crop 224 x 224, rescale 1/255, ImageNet-default
    mean/std. For the settings the published snap-research checkpoints ship with
    (shortest edge 256, crop 224) use `EfficientFormerImageProcessor.published()`.

    `size` / `crop_size` accept what HF accepts: an int (a square), [height, width], or a dict
    {"height", "width"}; `size` also {"shortest_edge": S}. `resample` is a PIL filter code
    (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING). Invalid values raise
    `ConfigError` at construction (HF raises late or not at all).
    """

    _FIELDS = (
        "do_resize",
        "size",
        "resample",
        "do_center_crop",
        "crop_size",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
    )
    _TYPE = "EfficientFormerImageProcessor"

    def __init__(
        self,
        do_resize: bool = True,
        size: Optional[Union[int, Sequence[int], Dict[str, int]]] = None,
        resample: int = 3,
        do_center_crop: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        crop_size: Optional[Union[int, Sequence[int], Dict[str, int]]] = None,
        do_normalize: bool = True,
        image_mean: Optional[Union[float, Sequence[float]]] = None,
        image_std: Optional[Union[float, Sequence[float]]] = None,
        *,
        strict: bool = True,
    ) -> None:
        self.do_resize = _bool(do_resize, "do_resize")
        self.size = _size_dict(size if size is not None else {"height": 224, "width": 224}, "size", strict)
        self.resample = _resample(resample)
        self.do_center_crop = _bool(do_center_crop, "do_center_crop")
        self.crop_size = _crop_dict(crop_size if crop_size is not None else {"height": 224, "width": 224}, strict)
        self._set_rescale_normalize(do_rescale, rescale_factor, do_normalize, image_mean, image_std,
                                    IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
        self.strict = strict

    @classmethod
    def published(cls) -> "EfficientFormerImageProcessor":
        """Settings of the published snap-research/efficientformer-l{1,3,7}-300 checkpoints:
        resize shortest edge to 256 (bicubic), center crop 224, rescale 1/255, ImageNet-default
        mean/std (the hub's `preprocessor_config.json`; the original repos' eval transform up to
        the crop offset rounding, see recipe "original")."""
        return cls(
            size={"shortest_edge": 256},
            resample=3,
            crop_size={"height": 224, "width": 224},
            rescale_factor=1 / 255,
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
        )

    def preprocess(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        do_resize: Optional[bool] = None,
        size: Optional[Union[int, Sequence[int], Dict[str, int]]] = None,
        resample: Optional[int] = None,
        do_center_crop: Optional[bool] = None,
        crop_size: Optional[Union[int, Sequence[int], Dict[str, int]]] = None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean: Optional[Union[float, Sequence[float]]] = None,
        image_std: Optional[Union[float, Sequence[float]]] = None,
        return_tensors: Optional[str] = "np",
        data_format: str = "channels_first",
    ) -> BatchFeature:
        """Images -> {"pixel_values": float32 [N, 3, h, w]} (HF's `preprocess`, same overrides).

        `images`: a PIL image, a path, a uint8 numpy image ([H, W, 3]; also [H, W], [H, W, 1],
        [H, W, 4], converted to RGB), or a list/tuple of these. `return_tensors="np"` stacks into
        one array; None returns a list of per-image arrays (like HF). `data_format`
        "channels_first" (NCHW, default) or "channels_last".
        """
        overrides = dict(
            do_resize=do_resize, size=size, resample=resample, do_center_crop=do_center_crop,
            crop_size=crop_size, do_rescale=do_rescale, rescale_factor=rescale_factor,
            do_normalize=do_normalize, image_mean=image_mean, image_std=image_std,
        )  # fmt: skip
        return self._preprocess(images, overrides, return_tensors, data_format)

    def _process_one(self, image: ImageLike) -> np.ndarray:
        """One image -> [h, w, 3] float32 (channels last, as HF computes it)."""
        array = _as_rgb_array(image)  # [H, W, 3] uint8
        if self.do_resize:
            if "shortest_edge" in self.size:
                array = resize_shortest_edge(array, self.size["shortest_edge"], self.resample)  # -> [H', W', 3] uint8
            else:
                array = resize(array, self.size["height"], self.size["width"], self.resample)  # -> [h, w, 3] uint8
        if self.do_center_crop:
            array = center_crop(array, self.crop_size["height"], self.crop_size["width"])  # -> [ch, cw, 3] uint8
        return self._rescale_and_normalize(array)


class ViTImageProcessor(_HFImageProcessor):
    """NumPy/Pillow twin of `transformers.ViTImageProcessor` (4.40.2), the processor transformers'
    auto mapping assigns to SwiftFormer.

    Code defaults (= HF's): squash-resize to exactly 224 x 224 (aspect ratio NOT kept, and there
    is no center crop at all), BILINEAR (2), rescale 1/255, IMAGENET_STANDARD mean/std
    (0.5, 0.5, 0.5). The published MBZUAI/swiftformer-* checkpoints ship a config that only
    changes mean/std to ImageNet-default: `ViTImageProcessor.published_swiftformer()`.

    Steps: [H, W, 3] uint8 -> PIL resize to size (uint8) -> rescale (float64 product, then float32)
    -> normalize (float32) -> CHW; the same step functions as `EfficientFormerImageProcessor`.
    `size` is an int (square), [height, width] or {"height", "width"}; a {"shortest_edge"} size
    raises `ConfigError` (HF's ViT processor raises ValueError on it when processing).
    """

    _FIELDS = (
        "do_resize",
        "size",
        "resample",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
    )
    _TYPE = "ViTImageProcessor"

    def __init__(
        self,
        do_resize: bool = True,
        size: Optional[Union[int, Sequence[int], Dict[str, int]]] = None,
        resample: int = 2,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Optional[Union[float, Sequence[float]]] = None,
        image_std: Optional[Union[float, Sequence[float]]] = None,
        *,
        strict: bool = True,
    ) -> None:
        self.do_resize = _bool(do_resize, "do_resize")
        self.size = _height_width_dict(size if size is not None else {"height": 224, "width": 224}, "size")
        self.resample = _resample(resample)
        self._set_rescale_normalize(do_rescale, rescale_factor, do_normalize, image_mean, image_std,
                                    IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)
        self.strict = strict

    @classmethod
    def published_swiftformer(cls) -> "ViTImageProcessor":
        """Settings of the published MBZUAI/swiftformer-{xs,s,l1,l3} checkpoints. Their
        `preprocessor_config.json` is {do_normalize: true, do_resize: true, image_mean/image_std:
        ImageNet default, size: 224}: squash to 224 x 224 with the default BILINEAR, rescale 1/255."""
        return cls(size=224, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)

    def preprocess(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        do_resize: Optional[bool] = None,
        size: Optional[Union[int, Sequence[int], Dict[str, int]]] = None,
        resample: Optional[int] = None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean: Optional[Union[float, Sequence[float]]] = None,
        image_std: Optional[Union[float, Sequence[float]]] = None,
        return_tensors: Optional[str] = "np",
        data_format: str = "channels_first",
    ) -> BatchFeature:
        """Images -> {"pixel_values": float32 [N, 3, h, w]} (HF's `preprocess`, same overrides);
        inputs and `return_tensors` / `data_format` as in `EfficientFormerImageProcessor.preprocess`."""
        overrides = dict(
            do_resize=do_resize, size=size, resample=resample, do_rescale=do_rescale,
            rescale_factor=rescale_factor, do_normalize=do_normalize, image_mean=image_mean, image_std=image_std,
        )  # fmt: skip
        return self._preprocess(images, overrides, return_tensors, data_format)

    def _process_one(self, image: ImageLike) -> np.ndarray:
        """One image -> [h, w, 3] float32 (channels last, as HF computes it)."""
        array = _as_rgb_array(image)  # [H, W, 3] uint8
        if self.do_resize:
            array = resize(array, self.size["height"], self.size["width"], self.resample)  # -> [h, w, 3] uint8
        return self._rescale_and_normalize(array)


# --------------------------------------------------------------------------------------------------
# torchvision eval transform (timm and the original repos)
# --------------------------------------------------------------------------------------------------


class TorchvisionEvalTransform:
    """torchvision `Compose([Resize(resize_short, resample), CenterCrop(crop), ToTensor(),
    Normalize(mean, std)])` applied to a PIL RGB image, in NumPy/Pillow.

    [H, W, 3] uint8 -> resize_shortest_edge   short side -> resize_short, long side ->
                                              int(resize_short * long / short) (PIL resize, uint8)
                    -> torchvision_center_crop  -> [ch, cw, 3] uint8, offsets round half to even
                    -> to_tensor                float32(x) / 255
                    -> normalize                float32 (x - mean) / std
                    -> [3, ch, cw] float32

    `crop` is an int (square) or (height, width). `resample` is a PIL filter code (3 = bicubic;
    torchvision maps InterpolationMode.BICUBIC to it for PIL images). `TorchvisionEvalTransform.timm()`
    builds timm's `transforms_imagenet_eval` for crop_mode "center".
    """

    def __init__(
        self,
        resize_short: int,
        crop: Union[int, Sequence[int]],
        resample: int = 3,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ) -> None:
        self.resize_short = _positive_int(resize_short, "resize_short")
        crop_hw = _height_width_dict(crop, "crop")
        self.crop = (crop_hw["height"], crop_hw["width"])
        self.resample = _resample(resample)
        self.mean = _mean_std(mean, "mean")
        self.std = _mean_std(std, "std", nonzero=True)

    @classmethod
    def timm(
        cls,
        img_size: int = 224,
        crop_pct: float = 0.95,
        resample: int = 3,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ) -> "TorchvisionEvalTransform":
        """timm's eval transform (crop_mode "center", square img_size): Resize(floor(img_size /
        crop_pct)) -> CenterCrop(img_size) -> ToTensor -> Normalize. The defaults are the pretrained
        cfgs of timm's efficientformer_l{1,3,7}.snap_dist_in1k and swiftformer_*.dist_in1k."""
        return cls(timm_scale_size(img_size, crop_pct), img_size, resample, mean, std)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "resize_short": self.resize_short,
            "crop": list(self.crop),
            "resample": self.resample,
            "mean": list(self.mean) if isinstance(self.mean, list) else self.mean,
            "std": list(self.std) if isinstance(self.std, list) else self.std,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TorchvisionEvalTransform) and self.to_dict() == other.to_dict()

    def __call__(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        return_tensors: Optional[str] = "np",
        data_format: str = "channels_first",
    ) -> BatchFeature:
        """Images (as for `EfficientFormerImageProcessor`) -> {"pixel_values": float32 [N, 3, ch, cw]}."""
        outputs = [self._process_one(image) for image in _as_batch(images)]
        return _batch_feature(outputs, return_tensors, data_format)

    preprocess = __call__

    def _process_one(self, image: ImageLike) -> np.ndarray:
        """One image -> [ch, cw, 3] float32 (channels last)."""
        array = _as_rgb_array(image)  # [H, W, 3] uint8
        array = resize_shortest_edge(array, self.resize_short, self.resample)  # -> [H', W', 3] uint8
        array = torchvision_center_crop(array, *self.crop)  # -> [ch, cw, 3] uint8
        array = to_tensor(array)  # -> [ch, cw, 3] float32 in [0, 1]
        return normalize(array, self.mean, self.std)  # -> [ch, cw, 3] float32


# --------------------------------------------------------------------------------------------------
# Named recipes
# --------------------------------------------------------------------------------------------------


class RecipeInfo(NamedTuple):
    """What a named preprocessing recipe does, and where its settings come from."""

    description: str
    source: str


#: name -> RecipeInfo; `recipe(name)` builds the processor. The module docstring has the same table.
RECIPES: Dict[str, RecipeInfo] = {
    "efficientformer-hf": RecipeInfo(
        "shortest edge 256 (bicubic, floor long side), center crop 224 (floor offsets), ImageNet-default mean/std",
        "transformers 4.40.2 EfficientFormerImageProcessor with the published snap-research/efficientformer-"
        "l{1,3,7}-300 preprocessor_config.json",
    ),
    "efficientformer-hf-default": RecipeInfo(
        "squash to 224 x 224 (bicubic), crop no-op, ImageNet-default mean/std",
        "transformers 4.40.2 EfficientFormerImageProcessor() code defaults (not its docstring's)",
    ),
    "swiftformer-hf": RecipeInfo(
        "squash to 224 x 224 (bilinear, aspect not kept, no crop), ImageNet-default mean/std",
        "transformers 4.40.2 ViTImageProcessor with the published MBZUAI/swiftformer-* preprocessor_config.json",
    ),
    "timm": RecipeInfo(
        "shortest edge floor(224 / 0.95) = 235 (bicubic), center crop 224 (round-half-even offsets), "
        "ToTensor, ImageNet-default mean/std",
        "timm 1.0 create_transform(**resolve_data_config({}, model=...)) for efficientformer_l{1,3,7}."
        "snap_dist_in1k and swiftformer_*.dist_in1k (identical transforms; crop_pct 0.95, crop_mode center)",
    ),
    "original": RecipeInfo(
        "shortest edge 256 (bicubic), center crop 224 (round-half-even offsets), ToTensor, ImageNet-default mean/std",
        "eval transform of snap-research/EfficientFormer and Amshaker/SwiftFormer util/datasets.py: torchvision "
        "Resize(256, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize(IMAGENET_DEFAULT)",
    ),
}

Preprocessor = Union[EfficientFormerImageProcessor, ViTImageProcessor, TorchvisionEvalTransform]

_RECIPE_BUILDERS: Dict[str, Callable[[], Preprocessor]] = {
    "efficientformer-hf": EfficientFormerImageProcessor.published,
    "efficientformer-hf-default": EfficientFormerImageProcessor,
    "swiftformer-hf": ViTImageProcessor.published_swiftformer,
    "timm": TorchvisionEvalTransform.timm,
    "original": lambda: TorchvisionEvalTransform(resize_short=256, crop=224, resample=3),
}
assert set(_RECIPE_BUILDERS) == set(RECIPES)


def recipe(name: str) -> Preprocessor:
    """A new processor for the named recipe (see `RECIPES`); calling it on images returns
    {"pixel_values": float32 [N, 3, 224, 224]}. Unknown name -> `ConfigError` listing the names."""
    if not isinstance(name, str) or name not in _RECIPE_BUILDERS:
        raise ConfigError(f"unknown preprocessing recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return _RECIPE_BUILDERS[name]()
