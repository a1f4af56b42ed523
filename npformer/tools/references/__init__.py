"""How the oracle tier builds each family's PyTorch references (transformers, timm): one module per
family, named as the family (`references/<name>.py`), with its parity cases. torch is imported only
when a builder runs."""

from __future__ import annotations

import importlib

from ...models.registry import FAMILIES

REFERENCES = {name: importlib.import_module(f"{__package__}.{name}") for name in FAMILIES}  # references/<name>.py


def of(family):
    """The references module of a family (a registry `Family`): `references.of(family).timm_model(config)`."""
    return REFERENCES[family.name]
