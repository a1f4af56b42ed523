"""The families npformer implements: the one table every tool reads.

A family is one folder, `models/<name>/`, of three modules:

    config.py   its config class (transformers' fields) and the published variants
    schema.py   its checkpoint contract: the tensors a model has, what its blocks are called and
                how foreign checkpoints name them (the typed list: `models/contract.py`)
    model.py    the forward pass a learner reads top to bottom, and the model classes

and one `Family` entry below. Loading, conversion, seeded weights, the CLI, parity and the
teaching helpers ask this table and never compare family names.

This table is the families' contract (configs and schemas), below both the model code and the
checkpoint code, and it imports neither: the model classes by name are in `models/classes.py`,
the PyTorch references of the oracle tier in `npformer/tools/references/`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from ..errors import CheckpointMismatchError, ConfigError
from .efficientformer import config as efficientformer_config
from .efficientformer import schema as efficientformer_schema
from .efficientformerv2 import config as efficientformerv2_config
from .efficientformerv2 import schema as efficientformerv2_schema
from .schema import detect_schema
from .swiftformer import config as swiftformer_config
from .swiftformer import schema as swiftformer_schema


@dataclass(frozen=True)
class Family:
    """Everything a tool needs to know about one family, by name."""

    name: str  # the config's model_type and an npformer file's `family`
    display: str  # "EfficientFormer"
    article: str  # "an" EfficientFormer, "a" SwiftFormer
    config: type  # its ClassifierConfig subclass
    schema: ModuleType  # its checkpoint contract (schema.py)
    processor: str | None  # the transformers image processor class its checkpoints use (None: no transformers port)
    recipes: dict  # preprocessing recipe by checkpoint source ("transformers", "timm", "original")
    own_recipe: str  # the published checkpoints' recipe: `--processor published`, and weights of any other source
    default_recipe: str | None  # recipe of the transformers processor's code defaults (None: the class's own defaults)
    seeded_variant: str  # the variant teaching helpers build when no weights are given
    demo_weights: str  # the file in weights/ trained by weights/train_demo.py
    source_kinds: dict  # what a checkpoint of each source is called in messages
    timm_names: dict = field(default_factory=dict)  # variant -> timm model name
    timm_tag: str = ""  # the pretrained tag of timm's weights: repo `timm/<name>.<tag>` on the hub
    hub_ids: dict = field(default_factory=dict)  # variant -> the published transformers checkpoint
    attention_generations: dict | None = None  # SwiftFormer: its two attention generations (config.py)

    @property
    def variants(self) -> dict:
        """The published variants: {name: config fields}."""
        return importlib.import_module(self.config.__module__).VARIANTS

    def architecture(self, num_heads: int) -> str:
        """The model class a checkpoint with `num_heads` classifier heads becomes."""
        return self.schema.ARCHITECTURES[num_heads]


FAMILIES = {
    "efficientformer": Family(
        name="efficientformer", display="EfficientFormer", article="an",
        config=efficientformer_config.EfficientFormerConfig, schema=efficientformer_schema,
        processor="EfficientFormerImageProcessor",
        recipes={"transformers": "efficientformer-hf", "timm": "timm", "original": "original"},
        own_recipe="efficientformer-hf", default_recipe="efficientformer-hf-default",
        seeded_variant="l1", demo_weights="efficientformer-digits.safetensors",
        source_kinds={"transformers": "transformers model directory", "original": "original snap-research checkpoint",
                      "timm": "timm checkpoint"},
        timm_names={v: f"efficientformer_{v}" for v in ("l1", "l3", "l7")}, timm_tag="snap_dist_in1k",
        hub_ids={v: f"snap-research/efficientformer-{v}-300" for v in ("l1", "l3", "l7")},
    ),
    "swiftformer": Family(
        name="swiftformer", display="SwiftFormer", article="a",
        config=swiftformer_config.SwiftFormerConfig, schema=swiftformer_schema,
        processor="ViTImageProcessor",
        recipes={"transformers": "swiftformer-hf", "timm": "timm", "original": "original"},
        own_recipe="swiftformer-hf", default_recipe=None,
        seeded_variant="xs", demo_weights="swiftformer-digits.safetensors",
        source_kinds={"transformers": "transformers model directory", "original": "original Amshaker/SwiftFormer checkpoint",
                      "timm": "timm checkpoint"},
        timm_names={v: f"swiftformer_{v}" for v in ("xs", "s", "l1", "l3")}, timm_tag="dist_in1k",
        hub_ids={v: f"MBZUAI/swiftformer-{v}" for v in ("xs", "s", "l1", "l3")},
        attention_generations=swiftformer_config.ATTENTION_GENERATIONS,
    ),
    "efficientformerv2": Family(
        name="efficientformerv2", display="EfficientFormerV2", article="an",
        config=efficientformerv2_config.EfficientFormerV2Config, schema=efficientformerv2_schema,
        processor=None,  # no transformers port: timm's eval transform (crop 0.95, bicubic) is the published one
        recipes={"timm": "timm", "original": "original"},
        own_recipe="timm", default_recipe=None,
        seeded_variant="s0", demo_weights="efficientformerv2-digits.safetensors",
        source_kinds={"original": "original snap-research checkpoint", "timm": "timm checkpoint"},
        timm_names={v: f"efficientformerv2_{v}" for v in ("s0", "s1", "s2", "l")}, timm_tag="snap_dist_in1k",
    ),
}


def family(name: str) -> Family:
    """The family called `name` (a config's model_type), or a ConfigError listing the known ones."""
    if name not in FAMILIES:
        raise ConfigError(f"model_type {name!r} is not one npformer implements ({', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of(config) -> Family:
    """The family a config belongs to."""
    return family(config.model_type)


def detect(keys, source: str) -> tuple[Family, str]:
    """(family, schema) of a state dict, from its key names: the one family whose schema claims them."""
    keys = set(keys)
    claims = [(f, schema) for f in FAMILIES.values() if (schema := detect_schema(keys, f.schema.FINGERPRINTS))]
    if len(claims) == 1:
        return claims[0]
    if claims:
        raise CheckpointMismatchError(f"{source}: its keys fit more than one family: "
                                      + ", ".join(f"{f.display} ({schema})" for f, schema in claims))
    raise CheckpointMismatchError(
        f"{source}: not a checkpoint npformer knows: expected transformers keys (efficientformer.…, swiftformer.…), "
        "original keys (patch_embed.0.…, network.…) or timm keys (stem.conv1.… / stem.0.… / stem.conv1.conv.…)"
    )


def timm_models() -> dict[str, tuple[Family, str]]:
    """{timm model name: (family, variant)} of every family ("efficientformer_l1": (EfficientFormer, "l1"))."""
    return {name: (fam, variant) for fam in FAMILIES.values() for variant, name in fam.timm_names.items()}


def family_of_tensors(tensors) -> Family | None:
    """The family whose signature tensor a canonical weight dict holds (None if no family's)."""
    return next((f for f in FAMILIES.values() if f.schema.SIGNATURE in tensors), None)


def variant_name(config) -> str | None:
    """"l1", "xs", ... when the config is a published variant's architecture."""
    for name, spec in family_of(config).variants.items():
        if all(getattr(config, k) == v for k, v in spec.items()):
            return name
    return None


# the class a checkpoint becomes, by family and number of classifier heads
ARCHITECTURE_FOR_HEADS = {name: f.schema.ARCHITECTURES for name, f in FAMILIES.items()}
