"""npformer: EfficientFormer and SwiftFormer in pure NumPy.

    >>> import npformer
    >>> model = npformer.from_pretrained("efficientformer-l1.safetensors")   # or a transformers directory
    >>> out = model(pixel_values)                                             # [B, 3, 224, 224] float32
    >>> out.logits.shape
    (1, 1000)
"""

__version__ = "0.1.0"

import numpy as np

from .config import EfficientFormerConfig, SwiftFormerConfig
from .convert import convert_checkpoint
from .efficientformer import (
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
)
from .errors import NpformerError
from .swiftformer import SwiftFormerForImageClassification, SwiftFormerModel
from .trace import Trace


def architectures() -> dict:
    """Every model class by its transformers name."""
    from . import efficientformer, swiftformer

    return {**efficientformer.ARCHITECTURES, **swiftformer.ARCHITECTURES}


def from_pretrained(path, dtype=np.float32, attention_generation=None, fuse=False):
    """The model a checkpoint holds, with the class its heads call for.

    `path`: an npformer weight file, a transformers model directory (config.json +
    model.safetensors or pytorch_model.bin), or an original / timm checkpoint file.
    `dtype`: np.float32 (default) or np.float64 (every intermediate in float64).
    `attention_generation`: SwiftFormer only, "v1" or "v2"; needed for original checkpoints,
    which do not say which attention they were trained with (see npformer.convert).
    `fuse`: fold each BatchNorm into its convolution (the fast path; see `PreTrainedModel.fuse`).
    """
    from .convert import load_any

    config, tensors, metadata = load_any(path, attention_generation)
    model = architectures()[metadata["architecture"]](config, tensors, dtype=dtype)
    return model.fuse() if fuse else model


__all__ = [
    "EfficientFormerConfig", "EfficientFormerModel", "EfficientFormerForImageClassification",
    "EfficientFormerForImageClassificationWithTeacher", "SwiftFormerConfig", "SwiftFormerModel",
    "SwiftFormerForImageClassification", "NpformerError", "Trace", "convert_checkpoint", "from_pretrained",
]
