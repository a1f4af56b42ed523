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
    """Collects named activations in forward order: `records[name] -> array` (copies)."""

    def __init__(self, patterns=("*",)):
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.records: dict[str, np.ndarray] = {}

    def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
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
