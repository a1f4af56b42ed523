"""torchvision's eval transform in NumPy/Pillow: the "timm" and "original" recipes
(Resize -> CenterCrop -> ToTensor -> Normalize, as timm and the original repos evaluate)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .fields import BatchFeature, _as_batch, _batch_feature, _height_width_dict, _mean_std, _positive_int, _resample
from .images import ImageLike, _as_rgb_array
from .steps import normalize, resize_shortest_edge, timm_scale_size, to_tensor, torchvision_center_crop


class TorchvisionEvalTransform:
    """torchvision `Compose([Resize(resize_short, resample), CenterCrop(crop), ToTensor(),
    Normalize(mean, std)])` applied to a PIL RGB image, in NumPy/Pillow.

    [H, W, 3] uint8 -> resize_shortest_edge   short side -> resize_short, long side ->
                                              int(resize_short * long / short) (PIL resize, uint8)
                    -> torchvision_center_crop  -> [ch, cw, 3] uint8, offsets round half to even
                    -> to_tensor                float32(x) / 255
                    -> normalize                float32 (x - mean) / std
                    -> [3, ch, cw] float32

    `TorchvisionEvalTransform.timm()` builds timm's `transforms_imagenet_eval` for crop_mode
    "center" (recipe "timm"); `TorchvisionEvalTransform(256, 224)` is the original repos' eval
    transform (recipe "original").

    Parameters
    ----------
    resize_short : int
        The short side after the resize.
    crop : int or tuple of int
        The center crop: an int (square) or (height, width).
    resample : int, default 3
        A PIL filter code (3 = bicubic; torchvision maps InterpolationMode.BICUBIC to it for PIL
        images).
    mean : sequence of float, default ImageNet's
        Normalize's mean, per channel.
    std : sequence of float, default ImageNet's
        Normalize's std, per channel.

    Raises
    ------
    ConfigError
        An invalid value, at construction.
    """

    def __init__(
        self,
        resize_short: int,
        crop: int | Sequence[int],
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
    ) -> TorchvisionEvalTransform:
        """timm's eval transform (crop_mode "center", square img_size).

        Resize(floor(img_size / crop_pct)) -> CenterCrop(img_size) -> ToTensor -> Normalize. The
        defaults are the pretrained cfgs of timm's efficientformer_l{1,3,7}.snap_dist_in1k,
        swiftformer_*.dist_in1k and efficientformerv2_*.snap_dist_in1k.

        Parameters
        ----------
        img_size : int, default 224
            The crop's side.
        crop_pct : float, default 0.95
            The crop's share of the resized short side.
        resample : int, default 3
            A PIL filter code (3 = bicubic).
        mean : sequence of float, default ImageNet's
            Normalize's mean.
        std : sequence of float, default ImageNet's
            Normalize's std.

        Returns
        -------
        TorchvisionEvalTransform
            The transform (recipe "timm" at the defaults).
        """
        return cls(timm_scale_size(img_size, crop_pct), img_size, resample, mean, std)

    def to_dict(self) -> dict[str, Any]:
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
        images: ImageLike | Sequence[ImageLike],
        return_tensors: str | None = "np",
        data_format: str = "channels_first",
    ) -> BatchFeature:
        """Preprocess images (also available as `preprocess`).

        Parameters
        ----------
        images : str, os.PathLike, PIL.Image.Image, ndarray, or a list of these
            Paths, PIL images (any mode, converted to RGB) or uint8 arrays [H, W, 3] (also
            [H, W], [H, W, 1], [H, W, 4]).
        return_tensors : str or None, default "np"
            "np" stacks the images into one array; None returns a list of per-image arrays.
        data_format : str, default "channels_first"
            "channels_first" (NCHW) or "channels_last" (NHWC).

        Returns
        -------
        BatchFeature
            `{"pixel_values": float32 [N, 3, ch, cw]}`.

        Raises
        ------
        ImageError
            An image that cannot be opened or decoded.
        """
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
