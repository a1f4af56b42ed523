"""Which preprocessing a checkpoint gets: `make_processor`, used by `npformer predict`, `trace`
and the teaching helpers.

    >>> processor, description = make_processor(None, weights_path, family, metadata)

`family` is the checkpoint's registry entry (`npformer.models.registry.FAMILIES[...]`): it names
the family's transformers processor class, its recipe for each checkpoint source and its code
defaults. Nothing here compares family names.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, WeightFileError
from .constants import PREPROCESSOR_CONFIG_NAME
from .processors import EfficientFormerImageProcessor, ViTImageProcessor
from .recipes import RECIPES, recipe

PROCESSOR_CLASSES = {cls.__name__: cls for cls in (EfficientFormerImageProcessor, ViTImageProcessor)}


def processor_class(named: str | None, family):
    """The processor class a config names in `image_processor_type`, else the family's (as
    transformers' AutoImageProcessor decides): EfficientFormerImageProcessor, ViTImageProcessor."""
    return PROCESSOR_CLASSES.get(named) or PROCESSOR_CLASSES[family.processor or "EfficientFormerImageProcessor"]


def processor_from_config(path: Path, family):
    """(processor, description) from a preprocessor_config.json (or a directory holding one)."""
    file = path / PREPROCESSOR_CONFIG_NAME if path.is_dir() else path
    try:
        named = json.loads(file.read_text()).get("image_processor_type")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):  # from_pretrained says what is wrong
        named = None
    cls = processor_class(named, family)
    return cls.from_pretrained(file), f"{file} ({cls.__name__})"


def processor_from_metadata(weights: Path, text: str, family):
    """(processor, description) from a weight file's `preprocessor` metadata (a processor's to_dict())."""
    try:
        config = json.loads(text)
        cls = processor_class(config.get("image_processor_type"), family)
    except (ValueError, AttributeError) as err:
        raise WeightFileError(f"{weights}: metadata 'preprocessor' is not a JSON object ({err})") from None
    return cls.from_dict(config), f"the weight file's own ({cls.__name__})"


def make_processor(spec: str | None, weights: Path, family, metadata: dict):
    """(processor, description) for a checkpoint.

    `spec` if given: a recipe name (RECIPES), 'published' / 'default' (the family's transformers
    settings: published checkpoints' / code defaults), or a preprocessor_config.json file or a
    directory holding one. Without it: the weights directory's preprocessor_config.json, else the
    weight file's own (metadata `preprocessor`, as the demo weights carry), else the recipe it
    records (metadata `recipe`, written at conversion), else the family's recipe for the weights'
    source (metadata `source`: transformers, timm, original), and for any other source
    (npformer, seeded) the family's own (its published checkpoints' recipe)."""
    weights = Path(weights)
    if spec is None:
        if weights.is_dir() and (weights / PREPROCESSOR_CONFIG_NAME).is_file():
            return processor_from_config(weights / PREPROCESSOR_CONFIG_NAME, family)
        if "preprocessor" in metadata:
            return processor_from_metadata(weights, metadata["preprocessor"], family)
        spec = metadata.get("recipe") or family.recipes.get(metadata.get("source"), family.own_recipe)
    if spec == "published":
        spec = family.own_recipe
    if spec == "default":
        if family.default_recipe is None and family.processor is None:
            raise ConfigError(f"{family.display} has no transformers image processor whose code defaults 'default' "
                              f"could mean; name a recipe ({', '.join(RECIPES)}) or 'published' ({family.own_recipe})")
        if family.default_recipe is None:
            cls = PROCESSOR_CLASSES[family.processor]
            return cls(), f"default ({cls.__name__} code defaults)"
        spec = family.default_recipe
    if spec in RECIPES:
        return recipe(spec), spec
    return processor_from_config(Path(spec), family)
