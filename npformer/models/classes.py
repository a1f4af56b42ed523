"""Every npformer model class by its transformers name: the model code's side of the registry.

The registry (`registry.py`) is the families' contract, which checkpoint code reads too, so it
never imports model code; the classes are looked up here, above it. A family is one folder,
`models/<name>/`, so its model module is `models/<name>/model.py`: the registry stays the only
list of families.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .registry import FAMILIES

MODEL_MODULES = {name: importlib.import_module(f"{__package__}.{name}.model") for name in FAMILIES}  # models/<name>/model.py


def architectures() -> dict[str, type]:
    """Every npformer model class, by its transformers class name.

    Returns
    -------
    dict of str to type
        `{"EfficientFormerModel": EfficientFormerModel, ...}`: the eight classes of the three
        families, in family order.
    """
    return {name: getattr(MODEL_MODULES[f.name], name) for f in FAMILIES.values() for name in f.schema.ARCHITECTURES.values()}


def model_class(architecture: str) -> type:
    """The npformer model class named `architecture` (transformers' class name)."""
    classes = architectures()
    if architecture not in classes:
        raise ConfigError(f"architecture {architecture!r} is not an npformer model class; known: " + ", ".join(classes))
    return classes[architecture]
