"""Class names for a model's outputs.

    >>> imagenet_labels()[281]
    'tabby, tabby cat'
    >>> imagenet_labels("simple")[281]
    'tabby cat'

`label_names(config)` picks the names `npformer predict` shows: the config's `id2label` when it
holds real names, the ImageNet-1k names for a 1000-class model without them, else "class N".
The ImageNet files ship in `npformer/data/` (provenance and licences in its README.md).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from .errors import ConfigError

LABEL_FILES = {
    "classic": "imagenet-1k-id2label.derived.json",  # {"0": "tench, Tinca tinca", ...}
    "simple": "imagenet-simple-labels.json",  # ["tench", ...]
}
IMAGENET_NUM_CLASSES = 1000
_PLACEHOLDER = re.compile(r"LABEL_(\d+)")


@lru_cache(maxsize=None)
def _read(style: str) -> tuple[str, ...]:
    text = resources.files("npformer").joinpath("data", LABEL_FILES[style]).read_text(encoding="utf-8")
    data = json.loads(text)
    names = [data[str(i)] for i in range(len(data))] if isinstance(data, dict) else list(data)
    if len(names) != IMAGENET_NUM_CLASSES:  # a packaging accident, not a user error
        raise RuntimeError(f"npformer/data/{LABEL_FILES[style]} has {len(names)} names, expected 1000")
    return tuple(names)


def imagenet_labels(style: str = "classic") -> list[str]:
    """The 1000 ImageNet-1k class names by index.

    style "classic": the ILSVRC-2012 lemma strings ("tabby, tabby cat"), as in Hugging Face
    ImageNet configs; "simple": short names ("tabby cat").
    """
    if style not in LABEL_FILES:
        raise ConfigError(f"unknown label style {style!r}; known: {', '.join(LABEL_FILES)}")
    return list(_read(style))


SYNSETS_FILE = "imagenet-1k-synsets.txt"  # n01440764 ... n15075141, one per line


@lru_cache(maxsize=None)
def _read_synsets() -> tuple[str, ...]:
    text = resources.files("npformer").joinpath("data", SYNSETS_FILE).read_text(encoding="ascii")
    synsets = tuple(text.split())
    if len(synsets) != IMAGENET_NUM_CLASSES or list(synsets) != sorted(synsets):  # a packaging accident
        raise RuntimeError(f"npformer/data/{SYNSETS_FILE} must hold 1000 sorted WordNet ids, got {len(synsets)}")
    return synsets


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids by class index ("n01440764" is class 0, tench): the
    ILSVRC-2012 class order is the sorted wnids, the order both label files follow."""
    return list(_read_synsets())


def is_placeholder(index: int, name: str) -> bool:
    """transformers' generated names: "LABEL_0", "LABEL_1", ... (no real class names)."""
    match = _PLACEHOLDER.fullmatch(str(name))
    return match is not None and int(match.group(1)) == index


def label_names(config) -> list[str]:
    """One display name per output of a classifier with this config (`config.num_labels` names).

    1. the config's `id2label`, if it has any real names (not all transformers' "LABEL_i"
       placeholders); indices it lacks become "class N";
    2. else, for 1000 labels, the classic ImageNet-1k names;
    3. else "class 0", "class 1", ...
    """
    n = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if any(0 <= i < n and not is_placeholder(i, name) for i, name in id2label.items()):
        return [id2label.get(i, f"class {i}") for i in range(n)]
    if n == IMAGENET_NUM_CLASSES:
        return imagenet_labels("classic")
    return [f"class {i}" for i in range(n)]
