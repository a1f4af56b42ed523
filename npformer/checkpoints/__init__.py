"""Checkpoints: reading them without torch or pickled code (`torchfile.py`), converting every
family's foreign key schemas to npformer's canonical names (`convert.py`), the npformer weight
file (`weights.py`) and seeded weights that exercise every path (`seeded.py`).

Imports configs and schemas only, never model code (model code imports this to load).
"""
