"""Converters: foreign checkpoints → npformer's canonical weights, for every family.

Each family's `schema.py` says how its three key schemas (transformers, original, timm) name the
same tensors; npformer's canonical names are timm's. Converting is a lookup in the inverse of
that map. Derived buffers are checked, then dropped (e.g. EfficientFormer's `attention_bias_idxs`
must equal the |Δrow|·R + |Δcol| table npformer computes); `num_batches_tracked` is unused at
inference.

A SwiftFormer's attention generation (v1 or v2: the same tensors, different weights) is never
guessed: transformers checkpoints are v1, timm checkpoints v2, and for an original `.pth` the
caller must say which.

Nothing here imports model code: a checkpoint needs its family's config and schema only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..arguments import source_path
from ..errors import CheckpointMismatchError, ConfigError, WeightFileError
from ..jsonfile import read_json_object
from ..models import registry
from ..models.registry import Family, family_of, variant_name
from .keys import foreign_names
from .weights import check_tensors, make_metadata, metadata_config, read_safetensors, save_weights, validate_metadata


def to_canonical(state: dict, cfg, num_heads: int, schema: str, source: str) -> dict:
    """Rename a foreign state dict to canonical names; check and drop the derived buffers.

    Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.
    """
    contract = family_of(cfg).schema
    names = foreign_names(cfg, num_heads, schema)
    inverse = {foreign: canon for canon, foreign in names.items()}
    expected = contract.weight_schema(cfg, num_heads)
    tensors, unexpected = {}, []
    for key, value in state.items():
        if key in inverse:
            if value.dtype.kind != "f":  # casting would hide it: an int / bool / complex weight is not a float weight
                raise CheckpointMismatchError(f"{source}: {key} is a {value.dtype} tensor; weights must be floating-point")
            canon = inverse[key]
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused by check_values
                value = np.asarray(value, dtype=np.float32)
            shape = expected[canon]
            if value.shape != shape and value.shape == contract.foreign_shape(canon, shape, schema):
                value = value.reshape(shape)  # e.g. V2's original layer scales, (C, 1, 1) where timm has (C,)
            tensors[canon] = value
        elif key.endswith(".num_batches_tracked"):
            continue
        elif not contract.check_derived_buffer(key, value, cfg, source):
            unexpected.append(key)
    check_tensors({**tensors, **{k: np.zeros(0) for k in unexpected}}, expected, source)
    return tensors


# ---------------------------------------------------------------------------------------------
# reading whole checkpoints


def _read_state_dict(path: Path) -> dict:
    """A flat {name: array} from a .safetensors, .bin, .pth or .pt file (no torch, no code run)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    from .torchfile import flatten_state_dict, load_torch_file

    return flatten_state_dict(load_torch_file(path), path)


def _resolve_generation(fam: Family, schema: str, requested: str | None, source: str) -> str | None:
    """A SwiftFormer checkpoint's attention generation: known from its schema, else the caller's."""
    generations = fam.attention_generations
    if generations is None:
        if requested is not None:
            raise ConfigError(f"{source}: attention_generation applies to SwiftFormer only, this is {fam.article} "
                              f"{fam.name}")
        return None
    known = fam.schema.SOURCE_GENERATION.get(schema)
    if known and requested not in (None, known):
        raise ConfigError(
            f"{source}: {schema} SwiftFormer checkpoints use attention generation {known} "
            f"({generations[known]}); {requested} would give plausible but wrong logits"
        )
    if known is None and requested is None:
        raise ConfigError(
            f"{source}: an original SwiftFormer checkpoint does not say which attention it was trained with; "
            "pass attention_generation='v1' (checkpoints of the first release, before 2023-07-26: "
            f"{generations['v1']}) or 'v2' ({generations['v2']}); "
            "on the command line: --attention v1 or --attention v2"
        )
    return known or requested


def _out_channels(state: dict, fam: Family, schema: str, source: str):
    """`out_channels(key)`: the [OUT, ...] size of a weight in `state`, or an error saying it is missing."""
    def out_channels(key):
        if key not in state:
            raise CheckpointMismatchError(f"{source}: not a {schema} {fam.name} checkpoint (no {key})")
        if state[key].ndim < 1:
            raise CheckpointMismatchError(f"{source}: {key} has shape (), not a weight's [out, ...] shape")
        return int(state[key].shape[0])

    return out_channels


def read_transformers_config(path: Path, attention_generation=None):
    """(family, config) of a transformers model directory's config.json (SwiftFormer's: attention v1)."""
    model_type = read_json_object(path / "config.json").get("model_type")  # picks the family
    if model_type not in registry.FAMILIES or "transformers" not in registry.FAMILIES[model_type].schema.KEY_MAPS:
        known = ", ".join(n for n, f in registry.FAMILIES.items() if "transformers" in f.schema.KEY_MAPS)
        raise ConfigError(f"{path / 'config.json'}: model_type {model_type!r} is not one npformer implements ({known})")
    fam = registry.FAMILIES[model_type]
    cfg = fam.config.from_json_file(path / "config.json")
    generation = _resolve_generation(fam, "transformers", attention_generation, str(path))
    if generation is not None:
        cfg.attention_generation = generation
    return fam, cfg


# a transformers model directory's weight files, in the order npformer prefers them when it holds
# several (they hold the same weights): PyTorch's two, as transformers' PyTorch classes read them,
# then the TensorFlow classes' tf_model.h5 (read with h5py, the h5 extra; see checkpoints/h5.py)
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5")


def _transformers_heads(fam: Family, cfg, keys) -> int:
    """Classifier heads of a transformers state dict with these keys (config.json's class when
    num_labels is 0: Identity heads hold no tensors)."""
    num_heads = fam.schema.transformers_heads(keys, cfg)
    if cfg.num_labels == 0:
        architecture = (cfg.extra.get("architectures") or [""])[0]
        num_heads = next((n for n, name in fam.schema.ARCHITECTURES.items() if name == architecture), 0)
    return num_heads


def load_transformers_dir(path: Path, attention_generation=None, weights: Path | None = None):
    """(config, canonical tensors, architecture) from a directory written by `save_pretrained`
    (PyTorch or TensorFlow); `weights`: which of its weight files (default: the first of
    TRANSFORMERS_WEIGHT_FILES it holds)."""
    fam, cfg = read_transformers_config(path, attention_generation)
    model_type = fam.name
    if weights is None:
        weights = next((path / name for name in TRANSFORMERS_WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise WeightFileError(f"{path}: has config.json but none of {', '.join(TRANSFORMERS_WEIGHT_FILES)}")
    if weights.suffix == ".h5":
        from .h5 import read_tf_state

        state, num_heads = read_tf_state(weights, cfg, lambda keys: _transformers_heads(fam, cfg, keys))
    else:
        state = _read_state_dict(weights)
        prefix = f"{model_type}."
        if not any(k.startswith(prefix) for k in state):  # saved from the bare backbone class: no prefix
            state = {prefix + k: v for k, v in state.items()}
        num_heads = _transformers_heads(fam, cfg, state)
    tensors = to_canonical(state, cfg, num_heads, "transformers", str(weights if weights.suffix == ".h5" else path))
    return cfg, tensors, fam.architecture(num_heads)


def _load_npformer_file(path: Path, tensors: dict, metadata: dict, attention_generation=None):
    validate_metadata(path, metadata)
    name = metadata.get("family")
    if name not in registry.FAMILIES:
        raise WeightFileError(f"{path}: metadata family {name!r} is not one of {sorted(registry.FAMILIES)}")
    fam = registry.FAMILIES[name]
    config_dict = metadata_config(metadata)
    if config_dict.get("model_type", name) != name:
        raise CheckpointMismatchError(
            f"{path}: metadata family {name!r} contradicts its config's model_type {config_dict['model_type']!r}; "
            "the file is inconsistent, convert it again"
        )
    held = registry.family_of_tensors(tensors)
    if held not in (None, fam):
        raise CheckpointMismatchError(
            f"{path}: metadata says {name}, but the tensors are {held.name} tensors ({held.schema.SIGNATURE}); "
            "convert the source again"
        )
    cfg = fam.config.from_dict(config_dict, source=f"{path} (metadata config)")
    stated = metadata.get("variant")
    if stated is not None and stated != variant_name(cfg):
        raise CheckpointMismatchError(
            f"{path}: metadata variant {stated!r} contradicts its config, which is "
            f"{repr(variant_name(cfg)) if variant_name(cfg) else 'no published variant'}"
        )
    arch = metadata.get("architecture", "")
    heads = {a: n for n, a in fam.schema.ARCHITECTURES.items()}
    if arch not in heads:
        raise WeightFileError(f"{path}: metadata architecture {arch!r} is not one of {sorted(heads)}")
    if fam.attention_generations is not None:
        stored = metadata.get("attention_generation")
        if stored != cfg.attention_generation:
            raise CheckpointMismatchError(
                f"{path}: metadata attention_generation {stored!r} contradicts its config's "
                f"{cfg.attention_generation!r}; the file is inconsistent, convert it again"
            )
        if attention_generation not in (None, stored):
            raise CheckpointMismatchError(
                f"{path}: holds SwiftFormer weights trained with attention {stored} "
                f"({fam.attention_generations[stored]}); running them as {attention_generation} would give "
                "plausible but wrong logits"
            )
    elif attention_generation is not None:
        raise ConfigError(f"{path}: attention_generation applies to SwiftFormer only, this is {fam.article} {name}")
    check_tensors(tensors, fam.schema.weight_schema(cfg, heads[arch]), str(path))
    return cfg, tensors, metadata


def _metadata(fam: Family, architecture: str, cfg, schema: str, path) -> dict:
    """A converted checkpoint's metadata, with the preprocessing recipe its source publishes
    (`recipe`: what `predict` uses for it, and what the file records)."""
    metadata = make_metadata(fam.name, architecture, cfg.to_dict(), schema, path)
    metadata["recipe"] = fam.recipes[schema]
    return metadata


def timm_directory_weights(path: Path) -> Path | None:
    """The weight file of a timm hub directory (what a `timm/<name>` repo holds: a config.json with
    timm's `architecture` / `pretrained_cfg` and no `model_type`, and model.safetensors or
    pytorch_model.bin); None for any other directory."""
    try:
        config = read_json_object(path / "config.json")
    except ConfigError:
        return None  # not timm's; load_transformers_dir says what is wrong with it
    if "model_type" in config or not {"architecture", "pretrained_cfg"} & set(config):
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if (path / filename).is_file():
            return path / filename
    raise WeightFileError(f"{path}: a timm hub directory (its config.json names architecture "
                          f"{config.get('architecture')!r}) without model.safetensors or pytorch_model.bin")


def check_timm_directory(path: Path, weights: Path, cfg) -> None:
    """A timm hub directory's config.json must name the model its weight file holds, as timm reads
    it: timm builds the `architecture` config.json names, with its `num_classes`, and loads the
    weights into that (refusing weights of another model). Raises ConfigError for a config.json
    naming no model npformer has, CheckpointMismatchError for one naming another model."""
    config = read_json_object(path / "config.json")
    timm_models = registry.timm_models()
    architecture = config.get("architecture")
    if architecture not in timm_models:
        raise ConfigError(f"{path / 'config.json'}: architecture {architecture!r} is none of timm's models npformer "
                          f"has ({', '.join(sorted(timm_models))})")
    fam, variant = timm_models[architecture]
    if family_of(cfg) is not fam or variant_name(cfg) != variant:
        held = f"{family_of(cfg).display} {(variant_name(cfg) or '').upper() or cfg.summary()}"
        raise CheckpointMismatchError(f"{path}: config.json names timm's {architecture}, but {weights.name} holds "
                                      f"{held}; timm would refuse to load these weights into {architecture}")
    num_classes = config.get("num_classes", cfg.num_labels)
    if num_classes != cfg.num_labels:
        raise CheckpointMismatchError(f"{path}: config.json says num_classes={num_classes!r}, but {weights.name} has "
                                      f"{cfg.num_labels} classes")


def load_any(path, attention_generation=None, image_size=None):
    """(config, canonical tensors, metadata) from any supported source:

    * an npformer weight file (`.safetensors` with npformer metadata),
    * a transformers model directory (`config.json` + `model.safetensors`, `pytorch_model.bin` or
      TensorFlow's `tf_model.h5`, preferred in that order), or its `tf_model.h5` (the config.json
      beside it gives the config),
    * an original (snap-research, Amshaker) or timm checkpoint (`.pth`, `.pt`, `.bin`, `.safetensors`),
      or a timm hub directory holding one (`timm_directory_weights`).

    `attention_generation` ("v1" / "v2"): SwiftFormer only; required for original checkpoints,
    checked against what every other source says.
    `image_size` (H, W): the input size a checkpoint without a config was built for, when its bias
    tables cannot tell (EfficientFormerV2 built for a non-square size); ignored otherwise.
    """
    path = source_path(path)  # None, "", bytes ... refused (npformer/arguments.py)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightFileError(f"{path}: a directory without config.json is not a transformers model directory")
        if (weights := timm_directory_weights(path)) is not None:  # timm's hub layout: the weight file is the checkpoint
            loaded = load_any(weights, attention_generation, image_size)
            check_timm_directory(path, weights, loaded[0])
            return loaded
        cfg, tensors, arch = load_transformers_dir(path, attention_generation)
        return cfg, tensors, _metadata(registry.FAMILIES[cfg.model_type], arch, cfg, "transformers", path)
    if not path.exists():
        raise WeightFileError(f"{path}: no such file or directory")
    if path.suffix == ".h5":  # a tf_model.h5 holds no config: the config.json beside it says what it is
        if not (path.parent / "config.json").is_file():
            raise ConfigError(f"{path}: a TensorFlow weight file holds no config, and there is no config.json beside "
                              "it; point npformer at the model directory (config.json + tf_model.h5)")
        cfg, tensors, arch = load_transformers_dir(path.parent, attention_generation, weights=path)
        return cfg, tensors, _metadata(registry.FAMILIES[cfg.model_type], arch, cfg, "transformers", path)
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") == "npformer":
            return _load_npformer_file(path, tensors, metadata, attention_generation)
        state = tensors
    else:
        state = _read_state_dict(path)
    fam, schema = registry.detect(state.keys(), str(path))
    if schema == "transformers":
        raise ConfigError(
            f"{path}: holds transformers-named tensors but no config; point npformer at the model directory "
            "(with config.json) instead of the weight file"
        )
    generation = _resolve_generation(fam, schema, attention_generation, str(path))
    cfg = fam.schema.config_from_tensors(state, schema, _out_channels(state, fam, schema, str(path)),
                                         attention_generation=generation, image_size=image_size)
    num_heads = sum(h in state for h in fam.schema.HEAD_KEYS[schema])
    tensors = to_canonical(state, cfg, num_heads, schema, str(path))
    return cfg, tensors, _metadata(fam, fam.architecture(num_heads), cfg, schema, path)


def convert_checkpoint(src, dst, attention_generation=None) -> dict:
    """Convert a checkpoint to an npformer weight file.

    The file holds the tensors under timm's names, without derived buffers, and metadata that
    makes it self-describing (family, architecture, config, source, recipe, variant, ...).

    Parameters
    ----------
    src : str or os.PathLike
        A transformers model directory (or its `tf_model.h5`), an original or timm checkpoint
        file (`.pth`, `.pt`, `.bin`, `.safetensors`), a timm hub directory, or an npformer file.
    dst : str or os.PathLike
        The file to write: its name must end in `.safetensors` and its directory must exist;
        an existing file is replaced.
    attention_generation : str, optional
        "v1" or "v2": needed for original SwiftFormer checkpoints only, which do not record it.

    Returns
    -------
    dict of str to str
        The metadata written.

    Raises
    ------
    ConfigError
        A missing or contradicting `attention_generation`, a config npformer cannot honour, a
        `dst` not ending in `.safetensors`.
    WeightFileError
        A missing, truncated or corrupt source.
    UnsafePickleError
        A pickle that references code.
    CheckpointMismatchError
        Key names of no schema npformer knows, or tensors missing, unexpected or mis-shaped
        for the model they describe.
    NpformerError
        A `dst` that is a directory or whose directory does not exist.
    """
    cfg, tensors, metadata = load_any(src, attention_generation)
    if variant_name(cfg):
        metadata["variant"] = variant_name(cfg)
    save_weights(dst, tensors, metadata)
    return metadata
