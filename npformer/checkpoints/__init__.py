"""Checkpoints: reading them without torch or pickled code (`torchfile.py`, `h5.py`), converting
every family's foreign key schemas to npformer's canonical names (`convert.py`, `keys.py`), the
npformer weight file (`weights.py`) and the writers of the references' formats (`export.py`).

Imports the families' contract (configs, schemas, seeded weights) only, never model code.
"""

from . import seeded  # noqa: F401 (npformer.checkpoints.seeded: the seeded weights, kept at their old address)
