"""EfficientFormerV2 (S0, S1, S2, L): `config.py` (config, variants), `schema.py` (checkpoint contract), `model.py` (forward)."""
