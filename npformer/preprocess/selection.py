"""Which preprocessing a checkpoint gets: `make_processor`, used by `npformer predict`, `trace`
and the teaching helpers.

    >>> processor, description = make_processor(None, weights_path, family, metadata)

`family` is the checkpoint's registry entry (`npformer.models.registry.FAMILIES[...]`): it names
the family's transformers processor class, its recipe for each checkpoint source and its code
defaults. Nothing here compares family names.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import ConfigError, WeightFileError
from ..jsonfile import parse_json_object, read_json_object
from .constants import PREPROCESSOR_CONFIG_NAME
from .processors import EfficientFormerImageProcessor, ViTImageProcessor
from .recipes import RECIPES, recipe
from .torchvision import TorchvisionEvalTransform

PROCESSOR_CLASSES = {cls.__name__: cls for cls in (EfficientFormerImageProcessor, ViTImageProcessor)}


def processor_class(named: str | None, family):
    """The processor class a config names in `image_processor_type`, else the family's (as
    transformers' AutoImageProcessor decides): EfficientFormerImageProcessor, ViTImageProcessor."""
    return PROCESSOR_CLASSES.get(named) or PROCESSOR_CLASSES[family.processor or "EfficientFormerImageProcessor"]


def processor_from_config(path: Path, family):
    """(processor, description) from a preprocessor_config.json (or a directory holding one)."""
    file = path / PREPROCESSOR_CONFIG_NAME if path.is_dir() else path
    try:
        named = read_json_object(file).get("image_processor_type")
    except ConfigError:  # from_pretrained says what is wrong
        named = None
    cls = processor_class(named, family)
    return cls.from_pretrained(file), f"{file} ({cls.__name__})"


def processor_from_metadata(weights: Path, text: str, family):
    """(processor, description) from a weight file's `preprocessor` metadata (a processor's to_dict())."""
    try:
        config = parse_json_object(text, "metadata 'preprocessor'")
    except ConfigError as err:
        raise WeightFileError(f"{weights}: {err}") from None
    cls = processor_class(config.get("image_processor_type"), family)
    return cls.from_dict(config), f"the weight file's own ({cls.__name__})"


def make_processor(spec: str | None, weights: Path, family, metadata: dict):
    """The preprocessing a checkpoint gets: what `npformer predict` and `evaluate` use.

    Without `spec`, the first of: the weights directory's preprocessor_config.json; the weight
    file's own processor (metadata `preprocessor`, as the demo weights carry); the recipe it
    records (metadata `recipe`, written at conversion); the family's recipe for the weights'
    source (metadata `source`: transformers, timm, original); for any other source (npformer,
    seeded) the family's own (its published checkpoints' recipe).

    Parameters
    ----------
    spec : str, optional
        A recipe name (`RECIPES`), "published" or "default" (the family's transformers settings:
        the published checkpoints' or the processor's code defaults), or a
        preprocessor_config.json file or a directory holding one.
    weights : str or os.PathLike
        The checkpoint's path (a directory is searched for preprocessor_config.json).
    family : Family
        The checkpoint's registry entry (`npformer.models.registry.FAMILIES[name]`).
    metadata : dict of str to str
        The checkpoint's metadata, as `npformer.load` returns it.

    Returns
    -------
    processor : EfficientFormerImageProcessor or ViTImageProcessor or TorchvisionEvalTransform
        The processor.
    description : str
        Where its settings come from, in words.

    Raises
    ------
    ConfigError
        An unknown recipe, a malformed preprocessor config, "default" for a family with no
        transformers processor.
    WeightFileError
        A weight file whose `preprocessor` metadata is malformed.
    """
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


def processor_at_size(processor, size):
    """(a copy of `processor` whose output is size = (H, W) pixels, a note saying how): a center crop
    becomes H×W and the resize before it grows with it, keeping the crop's share of the image
    (floor(resize · max(H, W) / crop); timm's recipe at a square size: timm's floor(H / 0.95)); a
    squash squashes to H×W."""
    H, W = size
    if processor == TorchvisionEvalTransform.timm() and H == W:  # timm's own rule: floor(size / crop_pct 0.95)
        processor = TorchvisionEvalTransform.timm(H)
        return processor, f"timm's at {H}: shortest edge {processor.resize_short}, crop {H}×{W}"
    if isinstance(processor, TorchvisionEvalTransform):
        short = math.floor(processor.resize_short * max(H, W) / max(processor.crop))
        return TorchvisionEvalTransform(short, (H, W), processor.resample, processor.mean, processor.std), \
            f"shortest edge {short}, crop {H}×{W}"
    config = processor.to_dict()
    if config.get("do_center_crop"):
        crop = config["crop_size"]
        scale = max(H, W) / max(crop["height"], crop["width"])
        resize = config["size"]
        config["size"] = ({"shortest_edge": math.floor(resize["shortest_edge"] * scale)} if "shortest_edge" in resize
                          else {"height": math.floor(resize["height"] * scale), "width": math.floor(resize["width"] * scale)})
        config["crop_size"] = {"height": H, "width": W}
        how = f"resize {config['size']}, crop {H}×{W}"
    else:
        config["size"] = {"height": H, "width": W}
        how = f"squash to {H}×{W}"
    return type(processor).from_dict(config), how
