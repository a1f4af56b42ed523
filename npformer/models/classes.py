"""Every npformer model class by its transformers name: the model code's side of the registry.

The registry (`registry.py`) is the families' contract, which checkpoint code reads too, so it
never imports model code; the classes are looked up here, above it.
"""

from __future__ import annotations

from ..errors import ConfigError
from .efficientformer import model as efficientformer
from .efficientformerv2 import model as efficientformerv2
from .registry import FAMILIES
from .swiftformer import model as swiftformer

MODEL_MODULES = {"efficientformer": efficientformer, "swiftformer": swiftformer, "efficientformerv2": efficientformerv2}


def architectures() -> dict[str, type]:
    """Every model class by its transformers name."""
    return {name: getattr(MODEL_MODULES[f.name], name) for f in FAMILIES.values() for name in f.schema.ARCHITECTURES.values()}


def model_class(architecture: str) -> type:
    """The npformer model class named `architecture` (transformers' class name)."""
    classes = architectures()
    if architecture not in classes:
        raise ConfigError(f"architecture {architecture!r} is not an npformer model class; known: " + ", ".join(classes))
    return classes[architecture]
