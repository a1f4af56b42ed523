"""Record any module's output by name during a forward pass.

Every block of an npformer model passes its output through `trace(name, x)`, where `name` is
the block's weight prefix (`stem`, `stages.0.blocks.1.mlp`, `stages.3.blocks.4.token_mixer`,
`norm`, `head`, ...). A `Trace` keeps the ones whose names match its glob patterns:

    >>> t = Trace(["stages.3.*"])
    >>> out = model(pixel_values, trace=t)
    >>> list(t.records)[:2]
    ['stages.3.downsample.conv', 'stages.3.downsample.norm']
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import numpy as np


class Trace:
    """Record named activations during a forward pass, in forward order.

    Pass it to a model call, `model(x, trace=t)`: every block reports its output under its
    weight prefix (`stem`, `stages.0.blocks.1.mlp`, `stages.3.blocks.4.token_mixer.attn_probs`,
    `norm`, `logits`, ...) and the trace keeps a copy of those whose names match one of its
    patterns. `t[name]`, `name in t`, `len(t)` and iteration read `t.records`.

    Parameters
    ----------
    patterns : str or sequence of str, default ("*",)
        Shell-style glob patterns (`fnmatch`, case-sensitive): `"stages.3.*"`, `"*.attn_probs"`.

    Attributes
    ----------
    records : dict of str to ndarray
        The recorded arrays by name, in forward order (copies: later changes to the model's
        arrays do not reach them).

    Examples
    --------
    >>> t = Trace(["stem", "stages.?"])
    >>> out = model(pixel_values, trace=t)
    >>> list(t)
    ['stem', 'stages.0', 'stages.1', 'stages.2', 'stages.3']
    """

    def __init__(self, patterns=("*",)):
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.records: dict[str, np.ndarray] = {}

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        """Record a copy of `x` under `name` when a pattern matches; return `x` unchanged.

        Parameters
        ----------
        name : str
            The activation's name (a weight prefix).
        x : ndarray
            The activation.

        Returns
        -------
        ndarray
            `x` itself.
        """
        if any(fnmatchcase(name, p) for p in self.patterns):
            self.records[name] = np.array(x, copy=True)
        return x

    def __getitem__(self, name: str) -> np.ndarray:
        return self.records[name]

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def no_trace(name: str, x: np.ndarray) -> np.ndarray:
    """The trace used when nobody is looking: records nothing."""
    return x
