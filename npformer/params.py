"""`Params`: how a model's blocks see its weights.

A model holds one flat {name: array} dict with the checkpoint's dotted names
(`stages.0.blocks.1.mlp.fc1.weight`); a block reads its own tensors through a view scoped to its
prefix, so the code names a weight the way the checkpoint does.
"""

from __future__ import annotations

import numpy as np


class Params:
    """A read-only view of a flat {name: array} dict under a dotted prefix.

    Parameters
    ----------
    tensors : dict of str to ndarray
        The model's weights, under their checkpoint names.
    prefix : str, default ""
        What `p[key]` puts before `key` (ends in "." unless empty).

    Examples
    --------
    >>> p = Params({"stem.conv1.weight": w})
    >>> p.scope("stem.conv1")["weight"] is w
    True
    """

    def __init__(self, tensors: dict, prefix: str = ""):
        self.tensors = tensors
        self.prefix = prefix

    def __getitem__(self, key: str) -> np.ndarray:
        return self.tensors[self.prefix + key]

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.tensors

    def scope(self, name: str) -> Params:
        """The view of the tensors under `name`.

        Parameters
        ----------
        name : str
            A block's name (`stages.0.blocks.1.mlp`), relative to this view's prefix.

        Returns
        -------
        Params
            A view whose `["fc1.weight"]` reads `<prefix><name>.fc1.weight`.
        """
        return Params(self.tensors, self.prefix + name + ".")
