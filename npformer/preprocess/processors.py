"""NumPy/Pillow twins of transformers' image processors, following them step by step with the
same dtypes at every step.

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

Pitfalls these twins exist to get right:

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
* torchvision's `CenterCrop` rounds its offsets half to even where HF floors, so the original
  repos' numbers can differ slightly from HF's (see `npformer.preprocess.steps`).

Where these twins deliberately differ from HF, besides converting every input to RGB first
(see `npformer.preprocess.images`):

* `pixel_values` is always float32 (HF returns uint8 if both do_rescale and do_normalize are off).
* `return_tensors` defaults to "np" (HF's `preprocess` defaults to None = a list of arrays; pass
  `return_tensors=None` for that).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..jsonfile import read_json_object
from .constants import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    PREPROCESSOR_CONFIG_NAME,
)
from .fields import (
    _METADATA_KEYS,
    BatchFeature,
    _as_batch,
    _batch_feature,
    _bool,
    _crop_dict,
    _height_width_dict,
    _mean_std,
    _real,
    _resample,
    _size_dict,
)
from .images import ImageLike, _as_rgb_array
from .steps import center_crop, normalize, rescale, resize, resize_shortest_edge


class _HFImageProcessor:
    """What the HF processor twins share: config I/O (`from_dict`, `from_pretrained`, `to_dict`),
    equality, per-call overrides and batching. A subclass sets `_FIELDS` (its constructor
    arguments = its config keys, in HF's `to_dict` order) and `_TYPE` (HF's class name), and
    implements `__init__` (defaults + validation) and `_process_one`."""

    _FIELDS: tuple[str, ...] = ()
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
    def from_dict(cls, config: dict[str, Any], *, strict: bool = True):
        """Build a processor from a `preprocessor_config.json` dict, honouring every field HF honours.

        Missing fields take the code defaults (as in HF). The metadata keys `image_processor_type`,
        `processor_class`, `feature_extractor_type` (and `_processor_class`,
        `_valid_processor_keys` that some transformers versions save) are ignored.

        Parameters
        ----------
        config : dict
            The config's fields.
        strict : bool, default True
            Raise for anything HF would *silently ignore* although it signals different
            intended preprocessing: unknown keys (e.g. `crop_pct`, `do_convert_rgb`, `max_size`;
            for ViT also `crop_size`), `longest_edge` in `size`, and an `image_processor_type`
            naming another processor class (e.g. a ViTImageProcessor config read as
            EfficientFormer: AutoImageProcessor would run it without a crop). `strict=False`
            ignores those exactly as HF's `<Class>.from_dict` does.

        Returns
        -------
        EfficientFormerImageProcessor or ViTImageProcessor
            A processor of this class.

        Raises
        ------
        ConfigError
            Not a dict, an invalid value, or (with `strict`) what HF would silently ignore.
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
    def from_pretrained(cls, path: str | os.PathLike[str], *, strict: bool = True, revision=None, cache_dir=None,
                        local_files_only=False, token=None):
        """Read a `preprocessor_config.json` from a directory, the JSON file itself, or a Hugging Face hub id.

        Parameters
        ----------
        path : str or os.PathLike
            A directory holding `preprocessor_config.json`, the file, or a hub id.
        strict : bool, default True
            As for `from_dict`.
        revision : str, optional
            Hub ids only: the branch, tag or commit.
        cache_dir : str or os.PathLike, optional
            Hub ids only: the Hugging Face cache.
        local_files_only : bool, default False
            Hub ids only: never download.
        token : str or bool, optional
            Hub ids only: a token for a private repo.

        Returns
        -------
        EfficientFormerImageProcessor or ViTImageProcessor
            A processor of this class.

        Raises
        ------
        ConfigError
            A missing file, malformed JSON, or a config `from_dict` refuses; the message names
            the file.
        """
        from ..hub import PREPROCESSOR_CONFIG_FILES, resolve

        path = os.fspath(resolve(path, PREPROCESSOR_CONFIG_FILES, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only, token=token))
        file = os.path.join(path, PREPROCESSOR_CONFIG_NAME) if os.path.isdir(path) else path
        if not os.path.exists(file):
            raise ConfigError(
                f"{file}: no such file (expected a directory containing {PREPROCESSOR_CONFIG_NAME} or the JSON file)"
            )
        config = read_json_object(file)  # strict: UTF-8, an object, no key twice, a few levels deep
        try:
            return cls.from_dict(config, strict=strict)
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """The config as HF writes it: `from_dict(to_dict())` round-trips.

        Returns
        -------
        dict
            Every field and `image_processor_type`.
        """
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

    def __call__(self, images: ImageLike | Sequence[ImageLike], **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def _preprocess(
        self,
        images: ImageLike | Sequence[ImageLike],
        overrides: dict[str, Any],
        return_tensors: str | None,
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
    """NumPy/Pillow twin of `transformers.EfficientFormerImageProcessor` (4.40.2), bit-identical to it.

    Defaults are HF's *code* defaults (not its docstring's): squash-resize to 224 x 224 with
    BICUBIC (3), center crop 224 x 224, rescale 1/255, ImageNet-default mean/std. For the
    settings the published snap-research checkpoints ship with (shortest edge 256, crop 224) use
    `EfficientFormerImageProcessor.published()`. Calling the processor is `preprocess`.

    Parameters
    ----------
    do_resize : bool, default True
        Resize first.
    size : int, list of int or dict, optional
        An int (a square), [height, width], {"height", "width"} (squash, aspect not kept) or
        {"shortest_edge": S} (short side to S, long side int(S · long / short)); default
        {"height": 224, "width": 224}.
    resample : int, default 3
        A PIL filter code (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING).
    do_center_crop : bool, default True
        Crop the center (top and left offsets floored; an image smaller than the crop is
        zero-padded first, as HF does).
    do_rescale : bool, default True
        Multiply by `rescale_factor`.
    rescale_factor : float, default 1/255
        The rescale factor.
    crop_size : int, list of int or dict, optional
        As `size`, without "shortest_edge"; default {"height": 224, "width": 224}.
    do_normalize : bool, default True
        Subtract `image_mean`, divide by `image_std`.
    image_mean : float or list of float, optional
        One value, or one per channel; default ImageNet's (0.485, 0.456, 0.406).
    image_std : float or list of float, optional
        One value, or one per channel; default ImageNet's (0.229, 0.224, 0.225).
    strict : bool, default True
        Refuse a `size` with "longest_edge", which HF silently ignores.

    Raises
    ------
    ConfigError
        An invalid value, at construction (HF raises late or not at all).
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
        size: int | Sequence[int] | dict[str, int] | None = None,
        resample: int = 3,
        do_center_crop: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        crop_size: int | Sequence[int] | dict[str, int] | None = None,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
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
    def published(cls) -> EfficientFormerImageProcessor:
        """The settings of the published snap-research/efficientformer-l{1,3,7}-300 checkpoints.

        Resize the shortest edge to 256 (bicubic), center crop 224, rescale 1/255,
        ImageNet-default mean/std (the hub's `preprocessor_config.json`; the original repos'
        eval transform up to the crop offset rounding, see recipe "original").

        Returns
        -------
        EfficientFormerImageProcessor
            The processor (recipe "efficientformer-hf").
        """
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
        images: ImageLike | Sequence[ImageLike],
        do_resize: bool | None = None,
        size: int | Sequence[int] | dict[str, int] | None = None,
        resample: int | None = None,
        do_center_crop: bool | None = None,
        crop_size: int | Sequence[int] | dict[str, int] | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        return_tensors: str | None = "np",
        data_format: str = "channels_first",
    ) -> BatchFeature:
        """Preprocess images: HF's `preprocess`, with the same per-call overrides.

        Parameters
        ----------
        images : str, os.PathLike, PIL.Image.Image, ndarray, or a list of these
            Paths, PIL images (any mode, converted to RGB) or uint8 arrays [H, W, 3] (also
            [H, W], [H, W, 1], [H, W, 4]).
        do_resize : bool, optional
            Overrides the processor's setting for this call (None: keep); likewise the
            other settings below.
        size : int, list of int or dict, optional
            Overrides `size`.
        resample : int, optional
            Overrides `resample`.
        do_center_crop : bool, optional
            Overrides `do_center_crop`.
        crop_size : int, list of int or dict, optional
            Overrides `crop_size`.
        do_rescale : bool, optional
            Overrides `do_rescale`.
        rescale_factor : float, optional
            Overrides `rescale_factor`.
        do_normalize : bool, optional
            Overrides `do_normalize`.
        image_mean : float or list of float, optional
            Overrides `image_mean`.
        image_std : float or list of float, optional
            Overrides `image_std`.
        return_tensors : str or None, default "np"
            "np" stacks the images into one array; None returns a list of per-image arrays
            (as HF does).
        data_format : str, default "channels_first"
            "channels_first" (NCHW) or "channels_last" (NHWC).

        Returns
        -------
        BatchFeature
            `{"pixel_values": float32 [N, 3, h, w]}`.

        Raises
        ------
        ImageError
            An image that cannot be opened or decoded.
        ConfigError
            An invalid override, `return_tensors` other than "np" or None.
        InputError
            Images of different output sizes with `return_tensors="np"`, or no images.
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
    """NumPy/Pillow twin of `transformers.ViTImageProcessor` (4.40.2), the processor transformers gives SwiftFormer.

    Code defaults (= HF's): squash-resize to exactly 224 x 224 (aspect ratio NOT kept, and there
    is no center crop at all), BILINEAR (2), rescale 1/255, IMAGENET_STANDARD mean/std
    (0.5, 0.5, 0.5). The published MBZUAI/swiftformer-* checkpoints ship a config that only
    changes mean/std to ImageNet-default: `ViTImageProcessor.published_swiftformer()`.

    Steps: [H, W, 3] uint8 -> PIL resize to size (uint8) -> rescale (float64 product, then float32)
    -> normalize (float32) -> CHW; the same step functions as `EfficientFormerImageProcessor`.

    Parameters
    ----------
    do_resize : bool, default True
        Resize first.
    size : int, list of int or dict, optional
        An int (square), [height, width] or {"height", "width"}; default 224 x 224. A
        {"shortest_edge"} size is refused (HF's ViT processor raises on it when processing).
    resample : int, default 2
        A PIL filter code (2 BILINEAR, 3 BICUBIC, ...).
    do_rescale : bool, default True
        Multiply by `rescale_factor`.
    rescale_factor : float, default 1/255
        The rescale factor.
    do_normalize : bool, default True
        Subtract `image_mean`, divide by `image_std`.
    image_mean : float or list of float, optional
        Default (0.5, 0.5, 0.5).
    image_std : float or list of float, optional
        Default (0.5, 0.5, 0.5).
    strict : bool, default True
        Kept for `from_dict`'s strictness.

    Raises
    ------
    ConfigError
        An invalid value, at construction.
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
        size: int | Sequence[int] | dict[str, int] | None = None,
        resample: int = 2,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
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
    def published_swiftformer(cls) -> ViTImageProcessor:
        """The settings of the published MBZUAI/swiftformer-{xs,s,l1,l3} checkpoints.

        Their `preprocessor_config.json` is {do_normalize: true, do_resize: true,
        image_mean/image_std: ImageNet default, size: 224}: squash to 224 x 224 with the default
        BILINEAR, rescale 1/255.

        Returns
        -------
        ViTImageProcessor
            The processor (recipe "swiftformer-hf").
        """
        return cls(size=224, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)

    def preprocess(
        self,
        images: ImageLike | Sequence[ImageLike],
        do_resize: bool | None = None,
        size: int | Sequence[int] | dict[str, int] | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        return_tensors: str | None = "np",
        data_format: str = "channels_first",
    ) -> BatchFeature:
        """Preprocess images: HF's `preprocess`, with the same per-call overrides.

        Parameters
        ----------
        images : str, os.PathLike, PIL.Image.Image, ndarray, or a list of these
            Paths, PIL images (any mode, converted to RGB) or uint8 arrays [H, W, 3] (also
            [H, W], [H, W, 1], [H, W, 4]).
        do_resize : bool, optional
            Overrides the processor's setting for this call (None: keep); likewise the
            other settings below.
        size : int, list of int or dict, optional
            Overrides `size`.
        resample : int, optional
            Overrides `resample`.
        do_rescale : bool, optional
            Overrides `do_rescale`.
        rescale_factor : float, optional
            Overrides `rescale_factor`.
        do_normalize : bool, optional
            Overrides `do_normalize`.
        image_mean : float or list of float, optional
            Overrides `image_mean`.
        image_std : float or list of float, optional
            Overrides `image_std`.
        return_tensors : str or None, default "np"
            "np" stacks the images into one array; None returns a list of per-image arrays.
        data_format : str, default "channels_first"
            "channels_first" (NCHW) or "channels_last" (NHWC).

        Returns
        -------
        BatchFeature
            `{"pixel_values": float32 [N, 3, h, w]}`.

        Raises
        ------
        ImageError
            An image that cannot be opened or decoded.
        ConfigError
            An invalid override, `return_tensors` other than "np" or None.
        """
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
