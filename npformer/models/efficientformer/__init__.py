"""EfficientFormer (V1): L1, L3, L7. `config.py` (the config and variants), `schema.py` (the
checkpoint contract), `model.py` (the forward a learner reads top to bottom)."""
