"""Image loading and EfficientFormer / SwiftFormer preprocessing, reproducing the reference pipelines.

`recipe(name)` builds a processor; `processor(images)["pixel_values"]` is float32 [N, 3, 224, 224]:

| recipe                       | what it reproduces                                                          |
|------------------------------|-----------------------------------------------------------------------------|
| `efficientformer-hf`         | transformers' EfficientFormerImageProcessor, published snap-research config |
| `efficientformer-hf-default` | transformers' EfficientFormerImageProcessor() code defaults                 |
| `swiftformer-hf`             | transformers' ViTImageProcessor, published MBZUAI/swiftformer-* config      |
| `timm`                       | timm's eval transform: Resize(235) -> CenterCrop(224), bicubic              |
| `original`                   | the original repos' eval transform: Resize(256) -> CenterCrop(224), bicubic |

All normalise with the ImageNet-default mean/std.

Modules:

* `selection`: `make_processor`, which preprocessing a checkpoint gets (its own config, its
  metadata, or its family's recipe for its source).
* `recipes`: `RECIPES`, `recipe()` and the full table with each recipe's source.
* `processors`: the transformers twins `EfficientFormerImageProcessor` and `ViTImageProcessor`
  (their step-by-step pipeline, the pitfalls they get right, where they differ from HF).
* `torchvision`: `TorchvisionEvalTransform`, torchvision's Resize -> CenterCrop -> ToTensor -> Normalize.
* `steps`: the pure array steps (resize, center crop, rescale, normalize and torchvision's variants).
* `images`: `load_image` and `to_rgb`: any input and Pillow mode -> 8-bit RGB, decompression bombs refused.
* `fields`: config-field parsing and validation, `BatchFeature` and batching.
* `constants`: ImageNet mean/std, Pillow's filter codes, `PREPROCESSOR_CONFIG_NAME`.
"""

from __future__ import annotations

from .constants import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    PIL_RESAMPLE_NAMES,
    PREPROCESSOR_CONFIG_NAME,
)
from .fields import BatchFeature
from .images import ImageLike, load_image, to_rgb
from .processors import EfficientFormerImageProcessor, ViTImageProcessor
from .recipes import RECIPES, Preprocessor, RecipeInfo, recipe
from .selection import make_processor
from .steps import (
    center_crop,
    center_crop_offsets,
    get_resize_output_size,
    normalize,
    rescale,
    resize,
    resize_shortest_edge,
    timm_scale_size,
    to_tensor,
    torchvision_center_crop,
    torchvision_center_crop_offsets,
)
from .torchvision import TorchvisionEvalTransform

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
    "PIL_RESAMPLE_NAMES",
    "PREPROCESSOR_CONFIG_NAME",
    "ImageLike",
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
    "Preprocessor",
    "recipe",
    "make_processor",
]
