"""Image loading and EfficientFormer preprocessing, reproducing Hugging Face transformers 4.40.2.

`EfficientFormerImageProcessor` here mirrors `transformers.EfficientFormerImageProcessor` (4.40.2)
step by step, with the same dtypes at every step, so its `pixel_values` are bit-identical to HF's
for every RGB image HF accepts (checked by `tests/test_preprocess.py` against live HF and against
committed golden outputs):

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
  crop_pct 0.95 (short side 235) instead: a different pipeline, not reproduced here.
* An int `size` in a config means a *square* (224 -> 224 x 224), not a shortest edge.
  `longest_edge` next to `shortest_edge` is silently ignored by HF's EfficientFormer processor.
* The transformers model docs suggest `ViTImageProcessor`; for EfficientFormer that is wrong
  (no crop, bilinear by default, mean/std 0.5).
* torchvision's `CenterCrop` computes the offset as `int(round((H - ch) / 2))` (round half to even)
  while HF floors: when H - ch is odd and (H - ch) // 2 is odd, torchvision's crop sits one pixel
  lower/righter (e.g. a 640 x 427 photo -> 383 x 256 -> HF left 79, torchvision 80). The original
  repos evaluate with torchvision, so their numbers can differ slightly from HF's.

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
import os
import numbers
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from npformer.errors import ConfigError, ImageError, InputError

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
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
    "BatchFeature",
    "EfficientFormerImageProcessor",
]

IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]

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

    EXIF orientation is not applied (neither HF nor `convert("RGB")` applies it).
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


def load_image(image: Union[str, "os.PathLike[str]", Image.Image]) -> Image.Image:
    """Open `image` (a path or a PIL image) and return a fully decoded 8-bit RGB PIL image.

    Every Pillow mode is converted as described in `to_rgb`. A multi-frame file (GIF, TIFF) gives
    its first frame. Raises `ImageError` naming the path and the reason for a missing path, a
    directory, a file Pillow cannot identify, or one that fails to decode (truncated or corrupt).
    Truncated files are only caught while `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is False (the
    default).
    """
    if isinstance(image, Image.Image):
        try:
            image.load()
            return to_rgb(image)
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
        with Image.open(path) as opened:
            opened.load()
            rgb = to_rgb(opened)
            rgb.load()
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not an image file Pillow can identify") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: refused as a decompression bomb: {err}") from err
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
    """[H, W, 3] uint8 -> [height, width, 3] uint8, with PIL `Image.resize` (as HF does)."""
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
# Config parsing (HF semantics, with validation)
# --------------------------------------------------------------------------------------------------

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
# Metadata keys HF writes into preprocessor_config.json; they do not affect the output.
_METADATA_KEYS = (
    "image_processor_type",
    "processor_class",
    "feature_extractor_type",
    "_processor_class",
    "_valid_processor_keys",
)
_THIS_TYPE = "EfficientFormerImageProcessor"


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
# Processor
# --------------------------------------------------------------------------------------------------


class BatchFeature(dict):
    """A dict (key "pixel_values") that also allows attribute access, like HF's BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class EfficientFormerImageProcessor:
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

    model_input_names = ["pixel_values"]

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
        self.do_rescale = _bool(do_rescale, "do_rescale")
        self.rescale_factor = _real(rescale_factor, "rescale_factor")
        self.do_normalize = _bool(do_normalize, "do_normalize")
        self.image_mean = _mean_std(image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN, "image_mean")
        self.image_std = _mean_std(
            image_std if image_std is not None else IMAGENET_DEFAULT_STD, "image_std", nonzero=True
        )
        self.strict = strict

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def published(cls) -> "EfficientFormerImageProcessor":
        """Settings of the published snap-research/efficientformer-l{1,3,7}-300 checkpoints:
        resize shortest edge to 256 (bicubic), center crop 224, rescale 1/255, ImageNet-default
        mean/std (the hub's `preprocessor_config.json`, = the original repos' eval transform)."""
        return cls(
            size={"shortest_edge": 256},
            resample=3,
            crop_size={"height": 224, "width": 224},
            rescale_factor=1 / 255,
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
        )

    @classmethod
    def from_dict(cls, config: Dict[str, Any], *, strict: bool = True) -> "EfficientFormerImageProcessor":
        """Build from a `preprocessor_config.json` dict, honouring every field HF honours.

        Missing fields take the code defaults (as in HF). The metadata keys `image_processor_type`,
        `processor_class`, `feature_extractor_type` (and `_processor_class`,
        `_valid_processor_keys` that some transformers versions save) are ignored.

        With `strict=True` (default) a `ConfigError` is raised for anything HF would *silently
        ignore* although it signals different intended preprocessing: unknown keys (e.g.
        `crop_pct`, `do_convert_rgb`, `max_size`), `longest_edge` in `size`, and an
        `image_processor_type` other than EfficientFormerImageProcessor (e.g. a
        ViTImageProcessor config, which AutoImageProcessor would run without a crop).
        `strict=False` ignores those exactly as HF's EfficientFormerImageProcessor.from_dict does.
        """
        if not isinstance(config, dict):
            raise ConfigError(f"preprocessor config must be a JSON object, got {type(config).__name__}")
        unknown = sorted(k for k in config if k not in _FIELDS and k not in _METADATA_KEYS)
        proc_type = config.get("image_processor_type")
        if strict:
            if unknown:
                raise ConfigError(
                    f"preprocessor config has fields transformers' EfficientFormerImageProcessor would silently "
                    f"ignore: {unknown}; remove them, or pass strict=False to ignore them like HF"
                )
            if proc_type is not None and proc_type != _THIS_TYPE:
                raise ConfigError(
                    f"preprocessor config is for image_processor_type={proc_type!r}, not {_THIS_TYPE!r}; "
                    "its defaults and steps differ (pass strict=False to read it as an EfficientFormer config like "
                    "EfficientFormerImageProcessor.from_dict in HF does)"
                )
        kwargs = {k: config[k] for k in _FIELDS if k in config and config[k] is not None}
        return cls(**kwargs, strict=strict)

    @classmethod
    def from_pretrained(
        cls, path: Union[str, "os.PathLike[str]"], *, strict: bool = True
    ) -> "EfficientFormerImageProcessor":
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
        return {
            "do_resize": self.do_resize,
            "size": dict(self.size),
            "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": dict(self.crop_size),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean) if isinstance(self.image_mean, list) else self.image_mean,
            "image_std": list(self.image_std) if isinstance(self.image_std, list) else self.image_std,
            "image_processor_type": _THIS_TYPE,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EfficientFormerImageProcessor) and self.to_dict() == other.to_dict()

    # ---- processing ---------------------------------------------------------------------------

    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]], **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

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
        settings = EfficientFormerImageProcessor(
            do_resize=self.do_resize if do_resize is None else do_resize,
            size=self.size if size is None else size,
            resample=self.resample if resample is None else resample,
            do_center_crop=self.do_center_crop if do_center_crop is None else do_center_crop,
            crop_size=self.crop_size if crop_size is None else crop_size,
            do_rescale=self.do_rescale if do_rescale is None else do_rescale,
            rescale_factor=self.rescale_factor if rescale_factor is None else rescale_factor,
            do_normalize=self.do_normalize if do_normalize is None else do_normalize,
            image_mean=self.image_mean if image_mean is None else image_mean,
            image_std=self.image_std if image_std is None else image_std,
            strict=self.strict,
        )
        if return_tensors not in ("np", None):
            raise ConfigError(f"return_tensors must be 'np' or None (npformer is NumPy-only), got {return_tensors!r}")
        if data_format not in ("channels_first", "channels_last"):
            raise ConfigError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")

        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        if not batch:
            raise InputError("no images given (empty list)")
        outputs = [settings._process_one(image) for image in batch]
        if data_format == "channels_first":
            outputs = [out.transpose(2, 0, 1) for out in outputs]
        if return_tensors is None:
            return BatchFeature(pixel_values=[np.ascontiguousarray(out) for out in outputs])
        shapes = {out.shape for out in outputs}
        if len(shapes) != 1:
            raise InputError(
                f"images have different output shapes {sorted(shapes)} (no center crop?); "
                "cannot stack them: use return_tensors=None"
            )
        return BatchFeature(pixel_values=np.ascontiguousarray(np.stack(outputs)))

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
        if self.do_rescale:
            array = rescale(array, self.rescale_factor)  # -> float32
        if self.do_normalize:
            array = normalize(array, self.image_mean, self.image_std)  # -> float32
        return array.astype(np.float32, copy=False)
