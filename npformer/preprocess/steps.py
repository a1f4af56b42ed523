"""The preprocessing steps, each a pure function on numpy arrays: transformers' four (resize,
center crop, rescale, normalize) and torchvision's eval steps where their arithmetic differs.

torchvision `Resize(S)` on a PIL image needs no function of its own: its output size
(`_compute_resized_output_size`: short side -> S, long side -> int(S * long / short)) is exactly
`get_resize_output_size`, and it then calls `img.resize((w, h), filter)`, i.e. PIL with the default
reducing_gap=None, exactly as `resize` does. So `resize_shortest_edge` is torchvision's Resize.

torchvision's `CenterCrop` computes the offset as `int(round((H - ch) / 2))` (round half to even)
while HF floors: when H - ch is odd and (H - ch) // 2 is odd, torchvision's crop sits one pixel
lower/righter (e.g. a 640 x 427 photo -> 383 x 256 -> HF left 79, torchvision 80). The original
repos evaluate with torchvision, so their numbers can differ slightly from HF's
(`torchvision_center_crop_offsets` vs `center_crop_offsets`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError, ImageError


def get_resize_output_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
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


def center_crop_offsets(height: int, width: int, crop_height: int, crop_width: int) -> tuple[int, int]:
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


def normalize(image: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float]) -> np.ndarray:
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


def timm_scale_size(img_size: int, crop_pct: float) -> int:
    """timm's `transforms_imagenet_eval` resize target: math.floor(img_size / crop_pct).

    224 / 0.95 = 235.789... -> 235 (timm's EfficientFormer / SwiftFormer cfgs); 224 / 0.875 -> 256.
    A crop_pct that is not a finite number > 0, or that leaves no pixel to resize to, is a ConfigError.
    """
    if isinstance(img_size, bool) or not isinstance(img_size, numbers.Integral) or img_size < 1:
        raise ConfigError(f"img_size={img_size!r}: expected a positive integer (the side of the square input)")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, numbers.Real) or not 0 < crop_pct < math.inf:
        raise ConfigError(f"crop_pct={crop_pct!r}: expected a finite number > 0 (the crop's share of the resized "
                          "image, e.g. 0.95)")
    side = math.floor(img_size / crop_pct)
    if side < 1:
        raise ConfigError(f"crop_pct={crop_pct!r}: resizes a {img_size}-pixel side to {side} pixels")
    return side


def torchvision_center_crop_offsets(height: int, width: int, crop_height: int, crop_width: int) -> tuple[int, int]:
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
