"""Named preprocessing recipes (`RECIPES`, `recipe(name)` -> a processor;
`processor(images)["pixel_values"]` is float32 [N, 3, 224, 224]). Checked against the live
references and committed golden outputs by `tests/test_preprocess.py` and
`tests/test_preprocess_recipes.py`:

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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..errors import ConfigError
from .processors import EfficientFormerImageProcessor, ViTImageProcessor
from .torchvision import TorchvisionEvalTransform


class RecipeInfo(NamedTuple):
    """What a named preprocessing recipe does, and where its settings come from."""

    description: str
    source: str


#: name -> RecipeInfo; `recipe(name)` builds the processor. The module docstring has the same table.
RECIPES: dict[str, RecipeInfo] = {
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

Preprocessor = EfficientFormerImageProcessor | ViTImageProcessor | TorchvisionEvalTransform

_RECIPE_BUILDERS: dict[str, Callable[[], Preprocessor]] = {
    "efficientformer-hf": EfficientFormerImageProcessor.published,
    "efficientformer-hf-default": EfficientFormerImageProcessor,
    "swiftformer-hf": ViTImageProcessor.published_swiftformer,
    "timm": TorchvisionEvalTransform.timm,
    "original": lambda: TorchvisionEvalTransform(resize_short=256, crop=224, resample=3),
}
assert set(_RECIPE_BUILDERS) == set(RECIPES)


def recipe(name: str) -> Preprocessor:
    """A new processor for a named preprocessing recipe.

    Parameters
    ----------
    name : str
        "efficientformer-hf", "efficientformer-hf-default", "swiftformer-hf", "timm" or
        "original" (`RECIPES` says what each reproduces).

    Returns
    -------
    EfficientFormerImageProcessor or ViTImageProcessor or TorchvisionEvalTransform
        Calling it on images returns `{"pixel_values": float32 [N, 3, 224, 224]}`.

    Raises
    ------
    ConfigError
        An unknown name (the message lists the recipes).
    """
    if not isinstance(name, str) or name not in _RECIPE_BUILDERS:
        raise ConfigError(f"unknown preprocessing recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return _RECIPE_BUILDERS[name]()
