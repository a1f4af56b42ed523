"""npformer: EfficientFormer and SwiftFormer in pure NumPy.

    >>> import npformer
    >>> model = npformer.from_pretrained("efficientformer-l1.safetensors")   # or a transformers directory
    >>> out = model(pixel_values)                                             # [B, 3, 224, 224] float32
    >>> out.logits.shape
    (1, 1000)
"""

__version__ = "0.1.0"

import numpy as np

from .config import EfficientFormerConfig
from .convert import convert_checkpoint
from .efficientformer import (
    ARCHITECTURES,
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
)
from .errors import NpformerError
from .trace import Trace


def from_pretrained(path, dtype=np.float32):
    """The model a checkpoint holds, with the class its heads call for.

    `path`: an npformer weight file, a transformers model directory (config.json +
    model.safetensors or pytorch_model.bin), or an original / timm checkpoint file.
    `dtype`: np.float32 (default) or np.float64 (every intermediate in float64).
    """
    from .convert import load_any

    config, tensors, metadata = load_any(path)
    return ARCHITECTURES[metadata["architecture"]](config, tensors, dtype=dtype)


__all__ = [
    "EfficientFormerConfig", "EfficientFormerModel", "EfficientFormerForImageClassification",
    "EfficientFormerForImageClassificationWithTeacher", "NpformerError", "Trace", "convert_checkpoint",
    "from_pretrained",
]
