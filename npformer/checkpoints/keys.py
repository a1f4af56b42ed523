"""How each key schema (transformers, original, timm) names a model's tensors: read from the
family's contract (`KEY_MAPS` in its schema.py), for the readers and writers of every format."""

from __future__ import annotations

from ..models.registry import family_of
from ..models.schema import foreign_names as _foreign_names


def foreign_names(cfg, num_heads: int, schema: str) -> dict[str, str]:
    """{canonical tensor name: its name in `schema`} for every tensor of the model."""
    contract = family_of(cfg).schema
    return _foreign_names(contract.KEY_MAPS[schema](cfg), contract.weight_schema(cfg, num_heads))
