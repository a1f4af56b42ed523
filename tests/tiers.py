"""The suite's two tiers: what `python -m pytest` runs, and what only `python -m pytest --heavy` adds.

The default tier is representative: every layer, every family at one variant (the smallest, below), the
hardening, CLI and docs tests. The heavy tier adds what repeats a default-tier check at more cost: the larger
variants' golden cases, float64 without BatchNorm folding (tests/conftest.py marks every case parametrized
with dtype=float64 and fuse=False), the notebooks, whole-dataset runs and a few cases that repeat a default
one on another path (marked where they are parametrized). CI runs both.
"""

import pytest

heavy = pytest.mark.heavy

REPRESENTATIVE = {"efficientformer": "l1", "swiftformer": "xs", "efficientformerv2": "s0"}


def tiered(values, family_variant, unpack=False):
    """`values` as parametrize values: those whose `family_variant(value)` is a representative variant in the
    default tier, the rest heavy. `unpack`: each value is a tuple of several argnames' values."""
    def param(value):
        family, variant = family_variant(value)
        if REPRESENTATIVE[family] == variant:
            return value
        return pytest.param(*value, marks=heavy) if unpack else pytest.param(value, marks=heavy)
    return [param(value) for value in values]


def variants(family, names):
    """One family's variant names ("l1", "l3", ...) as parametrize values, tiered."""
    return tiered(names, lambda name: (family, name))


def named_variants(names):
    """"family-variant" names (efficientformer-l1, ...) as parametrize values, tiered."""
    return tiered(names, lambda name: name.rsplit("-", 1))
