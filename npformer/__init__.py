"""npformer: EfficientFormer, SwiftFormer and EfficientFormerV2 in pure NumPy.

    >>> import npformer
    >>> model = npformer.from_pretrained("efficientformer-l1.safetensors")   # or a transformers directory
    >>> out = model(pixel_values)                                             # [B, 3, 224, 224] float32
    >>> out.logits.shape
    (1, 1000)

transformers' and timm's names work too (`npformer.AutoModelForImageClassification`,
`npformer.create_model`, `from npformer import timm`): see npformer/auto.py and npformer/timm/.
"""

from ._version import __version__
from . import timm
from .auto import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification
from .checkpoints.convert import convert_checkpoint
from .errors import NpformerError
from .loading import from_pretrained, load
from .models.efficientformer.config import EfficientFormerConfig
from .models.efficientformer.model import (
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
)
from .models.efficientformerv2.config import EfficientFormerV2Config
from .models.efficientformerv2.model import (
    EfficientFormerV2ForImageClassification,
    EfficientFormerV2ForImageClassificationWithTeacher,
    EfficientFormerV2Model,
)
from .models.classes import architectures
from .models.swiftformer.config import SwiftFormerConfig
from .models.swiftformer.model import SwiftFormerForImageClassification, SwiftFormerModel
from .preprocess.processors import EfficientFormerImageProcessor, ViTImageProcessor
from .timm import create_model
from .tf_classes import (
    TFEfficientFormerForImageClassification,
    TFEfficientFormerForImageClassificationWithTeacher,
    TFEfficientFormerModel,
    TFSwiftFormerForImageClassification,
    TFSwiftFormerModel,
)
from .trace import Trace

__all__ = [
    "EfficientFormerConfig", "EfficientFormerModel", "EfficientFormerForImageClassification",
    "EfficientFormerForImageClassificationWithTeacher", "SwiftFormerConfig", "SwiftFormerModel",
    "SwiftFormerForImageClassification", "EfficientFormerV2Config", "EfficientFormerV2Model",
    "EfficientFormerV2ForImageClassification", "EfficientFormerV2ForImageClassificationWithTeacher", "NpformerError", "Trace", "convert_checkpoint", "from_pretrained", "load",
    "architectures", "__version__",
    "AutoConfig", "AutoImageProcessor", "AutoModel", "AutoModelForImageClassification", "EfficientFormerImageProcessor",
    "ViTImageProcessor", "create_model", "timm",
    # transformers' TensorFlow class names (npformer/tf_classes.py)
    "TFEfficientFormerModel", "TFEfficientFormerForImageClassification", "TFEfficientFormerForImageClassificationWithTeacher",
    "TFSwiftFormerModel", "TFSwiftFormerForImageClassification",
]
