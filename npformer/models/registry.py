"""The families npformer implements: the one table every tool reads.

A family is one folder, `models/<name>/`, of three modules:

    config.py   its config class (transformers' fields) and the published variants
    schema.py   its checkpoint contract: the tensors a model has and what its blocks are called
                (`stages`, `weight_schema`, `batch_norm_folds`, `traced_names`, `attention_blocks`,
                `attention_bias_grids` and `config_at_size`: what another input size changes),
                and how foreign checkpoints name them (`KEY_MAPS`, `HEAD_KEYS`, `FINGERPRINTS`, `foreign_shape`,
                `config_from_tensors`, `check_derived_buffer`, `derived_buffers`, `transformers_heads`,
                `ARCHITECTURES`, `SIGNATURE`)
    model.py    the forward pass a learner reads top to bottom, and the model classes

and one `Family` entry below. Loading, conversion, seeded weights, the CLI, parity and the
teaching helpers ask this table and never compare family names. The model module is named here,
not imported: checkpoint code needs configs and schemas only, and model code needs checkpoint
code (to load), so importing it here would close a cycle; `model_class` imports it on demand.
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
    model_module: str  # where its model classes live (imported on demand by `model_class`)
    reference_module: str  # how the oracle tier builds its PyTorch references (imports torch when used)
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
    attention_generations: dict | None = None  # SwiftFormer: the two attention generations (spec §4.2)

    @property
    def variants(self) -> dict:
        """The published variants: {name: config fields}."""
        return importlib.import_module(self.config.__module__).VARIANTS

    def architecture(self, num_heads: int) -> str:
        """The model class a checkpoint with `num_heads` classifier heads becomes."""
        return self.schema.ARCHITECTURES[num_heads]

    @property
    def reference(self) -> ModuleType:
        """The family's reference module (`reference.py`: PyTorch reference builders, parity cases)."""
        return importlib.import_module(self.reference_module)


FAMILIES = {
    "efficientformer": Family(
        name="efficientformer", display="EfficientFormer", article="an",
        config=efficientformer_config.EfficientFormerConfig, schema=efficientformer_schema,
        model_module="npformer.models.efficientformer.model", reference_module="npformer.models.efficientformer.reference",
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
        model_module="npformer.models.swiftformer.model", reference_module="npformer.models.swiftformer.reference",
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
        model_module="npformer.models.efficientformerv2.model", reference_module="npformer.models.efficientformerv2.reference",
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


def family_of_tensors(tensors) -> Family | None:
    """The family whose signature tensor a canonical weight dict holds (None if no family's)."""
    return next((f for f in FAMILIES.values() if f.schema.SIGNATURE in tensors), None)


def variant_name(config) -> str | None:
    """"l1", "xs", ... when the config is a published variant's architecture."""
    for name, spec in family_of(config).variants.items():
        if all(getattr(config, k) == v for k, v in spec.items()):
            return name
    return None


def model_class(architecture: str) -> type:
    """The npformer model class named `architecture` (transformers' class name)."""
    for f in FAMILIES.values():
        if architecture in f.schema.ARCHITECTURES.values():
            return getattr(importlib.import_module(f.model_module), architecture)
    raise ConfigError(f"architecture {architecture!r} is not an npformer model class; known: "
                      + ", ".join(name for f in FAMILIES.values() for name in f.schema.ARCHITECTURES.values()))


def architectures() -> dict[str, type]:
    """Every model class by its transformers name."""
    return {name: model_class(name) for f in FAMILIES.values() for name in f.schema.ARCHITECTURES.values()}


# the class a checkpoint becomes, by family and number of classifier heads
ARCHITECTURE_FOR_HEADS = {name: f.schema.ARCHITECTURES for name, f in FAMILIES.items()}
