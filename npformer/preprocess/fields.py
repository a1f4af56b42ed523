"""Config fields and batching shared by every processor: parsing and validating
`preprocessor_config.json` values with HF's semantics, and stacking per-image outputs into a
`BatchFeature`.

Invalid values raise `ConfigError` when a processor is built (HF raises late or not at all).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .constants import PIL_RESAMPLE_NAMES
from .images import ImageLike

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


def _size_dict(value: Any, what: str, strict: bool) -> dict[str, int]:
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


def _crop_dict(value: Any, strict: bool) -> dict[str, int]:
    size = _size_dict(value, "crop_size", strict)
    if "height" not in size:
        raise ConfigError(f"crop_size must be an int, [height, width] or {{height, width}}, got {value!r}")
    return size


def _height_width_dict(value: Any, what: str) -> dict[str, int]:
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


def _mean_std(value: Any, what: str, nonzero: bool = False) -> float | list[float]:
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ConfigError(f"{what} must be a number or a list of 3 numbers (RGB), got {value!r}")
        items = [_real(v, what) for v in value]
    else:
        items = [_real(value, what)]
    if nonzero and any(v == 0 for v in items):
        raise ConfigError(f"{what} must not contain 0, got {value!r}")
    return list(value) if isinstance(value, (list, tuple)) else value


class BatchFeature(dict):
    """A dict with the key "pixel_values" that also allows attribute access, like HF's BatchFeature.

    `batch["pixel_values"]` and `batch.pixel_values` are the same array; `model(**batch)` passes
    it to a model.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _as_batch(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """One image or a list/tuple of images -> a non-empty list."""
    batch = list(images) if isinstance(images, (list, tuple)) else [images]
    if not batch:
        raise InputError("no images given (empty list)")
    return batch


def _batch_feature(outputs: list[np.ndarray], return_tensors: str | None, data_format: str) -> BatchFeature:
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
