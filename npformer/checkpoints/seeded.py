"""Seeded weights, kept importable here: they live with the model code (`npformer.models.seeded`),
since a model built from a config alone (`Model(config)`) starts from them."""

from ..models.seeded import seeded_tensor, seeded_weights  # noqa: F401
