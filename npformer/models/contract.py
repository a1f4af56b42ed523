"""What a family provides: its `schema.py` as a typed contract, and the check of a family against it.

A family is one folder, `models/<name>/`: `config.py` (its config class and VARIANTS), `schema.py`
(the contract below) and `model.py` (the forward and the model classes). Loading, conversion,
seeded weights, the CLI, parity and the teaching helpers use a family only through these names.
tests/test_family_contract.py runs `contract_problems` over every registered family.

A fourth family adds its folder, one `Family` entry in `registry.py` and, for the oracle tier,
`tools/references/<name>.py`; nothing else names families.
"""

from __future__ import annotations

import inspect
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from .schema import Stage


@runtime_checkable
class FamilySchema(Protocol):
    """A family's `schema.py`: the tensors its models have and how every checkpoint names them."""

    # which model class a checkpoint becomes, by its number of classifier heads: {0: "...Model", 2: "...WithTeacher"}
    ARCHITECTURES: dict[int, str]
    BLOCK_LABELS: dict[str, str]  # block kind -> what it is called in tables ("meta4d": "Meta4D (pool)")
    SIGNATURE: str  # a canonical tensor name only this family has
    KEY_MAPS: dict[str, Callable]  # foreign schema -> cfg -> {canonical prefix: (foreign prefix, renames)}
    HEAD_KEYS: dict[str, tuple[str, str]]  # foreign schema -> (classifier head key, distillation head key)
    FINGERPRINTS: dict[str, tuple[str, str]]  # foreign schema -> (a key it has, a substring some key has)

    def stages(self, cfg) -> list[Stage]:
        """The four stages: the downsample leading into each and its (kind, name) blocks, in forward order."""

    def weight_schema(self, cfg, num_heads: int = 2) -> dict[str, tuple]:
        """{canonical tensor name: shape} of a model with `num_heads` classifier heads."""

    def batch_norm_folds(self, cfg) -> list[tuple[str, str, str]]:
        """(convolution, BatchNorm, "after" | "before") of every BatchNorm `fuse` folds."""

    def traced_names(self, cfg, architecture: str) -> dict[str, str]:
        """{traced name: what it is} of a forward, in forward order."""

    def attention_blocks(self, cfg) -> list[str]:
        """The names of the blocks whose token mixer is an attention."""

    def attention_bias_grids(self, cfg, image_size=None) -> dict[str, tuple[int, int]]:
        """{bias table name: (H, W) key grid} at the config's size or at `image_size` ({} without biases)."""

    def config_at_size(self, cfg, image_size):
        """The config of the same model built for `image_size` inputs."""

    def foreign_shape(self, name: str, shape: tuple, schema: str) -> tuple:
        """The shape a canonical tensor has in a foreign schema (e.g. a layer scale's [C, 1, 1])."""

    def check_derived_buffer(self, key: str, value: np.ndarray, cfg, source: str) -> bool:
        """True if `key` is a derived buffer (e.g. attention_bias_idxs), after checking it against its closed form."""

    def config_from_tensors(self, state: dict, schema: str, out_channels, **options):
        """The config a state dict without config.json implies (depths and widths from its shapes)."""

    def derived_buffers(self, cfg, schema: str) -> dict[str, np.ndarray]:
        """The buffers a foreign state dict holds beyond the canonical tensors."""


@runtime_checkable
class TransformersSchema(FamilySchema, Protocol):
    """A family with a transformers port: one more hook."""

    def transformers_heads(self, state, cfg) -> int:
        """How many classifier heads a transformers checkpoint's keys hold."""


HOOKS = [name for name, value in vars(FamilySchema).items() if inspect.isfunction(value) and not name.startswith("_")]
CONSTANTS = list(FamilySchema.__annotations__)


def contract_problems(family) -> list[str]:
    """What a registered `Family` lacks or mistypes against the contract ([] when it conforms)."""
    schema, problems = family.schema, []
    protocol = TransformersSchema if "transformers" in family.recipes else FamilySchema
    for name in CONSTANTS:
        if not hasattr(schema, name):
            problems.append(f"{family.name}: schema.{name} is missing")
    for name in HOOKS + (["transformers_heads"] if protocol is TransformersSchema else []):
        hook = getattr(schema, name, None)
        if not callable(hook):
            problems.append(f"{family.name}: schema.{name} is missing or not a function")
            continue
        wanted = [p for p in inspect.signature(getattr(protocol, name)).parameters.values()
                  if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
        got = list(inspect.signature(hook).parameters.values())
        if len(got) < len(wanted) and not any(p.kind is p.VAR_POSITIONAL for p in got):
            problems.append(f"{family.name}: schema.{name} takes {[p.name for p in got]}, the contract passes "
                            f"{[p.name for p in wanted]}")
    heads = getattr(schema, "ARCHITECTURES", {})
    if not heads or not set(heads) <= {0, 1, 2}:
        problems.append(f"{family.name}: schema.ARCHITECTURES must map 0, 1 or 2 heads to class names, got {heads}")
    if not set(getattr(schema, "FINGERPRINTS", {})) <= set(getattr(schema, "KEY_MAPS", {})):
        problems.append(f"{family.name}: a schema has a fingerprint but no key map")
    if not hasattr(family.config, "variant") or not family.variants:
        problems.append(f"{family.name}: its config class has no published variants")
    if family.seeded_variant not in family.variants:
        problems.append(f"{family.name}: seeded_variant {family.seeded_variant!r} is not a variant")
    return problems
