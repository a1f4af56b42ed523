"""How the oracle tier builds each family's PyTorch references (transformers, timm): one module per
family, with its parity cases. torch is imported only when a builder runs."""

from __future__ import annotations

from . import efficientformer, efficientformerv2, swiftformer

REFERENCES = {"efficientformer": efficientformer, "swiftformer": swiftformer, "efficientformerv2": efficientformerv2}


def of(family):
    """The references module of a family (a registry `Family`): `references.of(family).timm_model(config)`."""
    return REFERENCES[family.name]
