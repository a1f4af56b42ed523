"""The model families, one folder each (`efficientformer/`, `swiftformer/`), the code they share
(`base.py`: the model class plumbing; `configuration.py`: config.json handling; `schema.py`: the
helpers weight schemas are written with) and `registry.py`, the one table of families.

Kept free of imports: `checkpoints` imports configs and schemas from here, and model code imports
`checkpoints`, so this package's own initialisation must not pull model code in.
"""
