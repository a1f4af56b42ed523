"""SwiftFormer: XS, S, L1, L3. `config.py` (the config and variants), `schema.py` (the checkpoint
contract), `model.py` (the forward a learner reads top to bottom)."""
