"""Writing the references' own formats, without torch: a transformers model directory and a timm
hub directory, from npformer's canonical weights.

    transformers  config.json               transformers' config fields, `architectures`, labels
                  model.safetensors         transformers' key names and every buffer its state_dict holds
                                            (BatchNorm's `num_batches_tracked`, EfficientFormer's
                                            `attention_bias_idxs`), metadata format=pt: what save_pretrained writes
                  preprocessor_config.json  the family's transformers image processor (published settings)
    tf            config.json               as for transformers (TF's save_pretrained names the PyTorch class)
                  tf_model.h5               the Keras weights file of transformers' TF class (checkpoints/h5.py; h5py)
                  preprocessor_config.json  as for transformers
    timm          config.json               timm's hub config: architecture, num_classes, model_args, pretrained_cfg
                  model.safetensors         timm's state_dict: what the `timm/<name>.<tag>` repos hold

`transformers.AutoModelForImageClassification.from_pretrained(directory)` and
`timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=directory + "/model.safetensors"))`
(or a hub cache holding the directory as `timm/<name>.<tag>`) load them to the logits npformer gives
(tests/test_export.py). So any checkpoint npformer reads — an original `.pth` too — becomes a
transformers, TensorFlow or timm checkpoint: `export_checkpoint(src, directory, "transformers")`.
transformers' TF classes (`TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(directory)`)
load a "tf" directory with no missing or unexpected weights (tests/test_tf_live.py).

What a format cannot hold is refused by name (ConfigError), never written approximately:
EfficientFormerV2 in transformers and its TF port (never ported); SwiftFormer's attention v2 in
transformers and its TF port (they implement v1), and drop_path_rate > 0 there (TFSwiftFormer
cannot build it) and v1 in timm (v2); in timm, any config its model names do not build and classes
other than its two-head classifiers; npformer's own `attention_bias_resize`. One difference is
allowed on request: timm's EfficientFormer LayerNorm eps is fixed at 1e-5, and weights run by
transformers with 1e-12 export to timm only with `strict=False` (float32 logits move by ~4e-6).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np

from ..arguments import output_directory
from ..errors import ConfigError
from ..models.registry import Family, family_of, variant_name
from ..preprocess.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PREPROCESSOR_CONFIG_NAME
from .convert import foreign_names

FORMATS = ("npformer", "transformers", "tf", "timm")
TRANSFORMERS_VERSION = "4.40.2"  # the release these files are checked against (the last with EfficientFormer)
SAFETENSORS_METADATA = {"format": "pt"}  # transformers refuses safetensors files without it
NPFORMER_ONLY_FIELDS = ("attention_bias_resize",)  # config fields no reference has


# ---------------------------------------------------------------------------------------------
# state dicts


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0]


def reference_state_dict(config, weights: dict, num_heads: int, schema: str) -> dict:
    """{key: array} as the reference's `state_dict()` holds it in `schema` ("transformers", "timm"):
    the weights under the schema's names (float32), each BatchNorm's `num_batches_tracked` (int64 0)
    and the family's derived buffers (`derived_buffers`)."""
    fam = family_of(config)
    names = foreign_names(config, num_heads, schema)  # {canonical: foreign}
    foreign_module = {_module(canon): _module(foreign) for canon, foreign in names.items()}
    state = {names[k]: np.asarray(weights[k], dtype=np.float32) for k in names}
    for canon in names:
        if canon.endswith(".running_mean"):  # PyTorch's BatchNorm counter, unused at inference
            state[f"{foreign_module[_module(canon)]}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    for canon, value in fam.schema.derived_buffers(config, schema).items():
        state[f"{foreign_module[_module(canon)]}.{canon.rsplit('.', 1)[1]}"] = np.asarray(value, dtype=np.int64)
    return state


def _num_heads(fam: Family, architecture: str) -> int:
    heads = {name: n for n, name in fam.schema.ARCHITECTURES.items()}
    if architecture not in heads:
        raise ConfigError(f"architecture {architecture!r} is not {fam.article} {fam.display} class; known: {sorted(heads)}")
    return heads[architecture]


def _check_no_npformer_fields(config, target: str) -> None:
    for name in NPFORMER_ONLY_FIELDS:
        if getattr(config, name, None) is not None:
            raise ConfigError(f"{name}={getattr(config, name)!r} is npformer's own; {target} has no such setting, so "
                              f"its model would not compute what this one does: save with format='npformer'")


def _check_generation(fam: Family, config, schema: str, target: str) -> None:
    """A SwiftFormer's attention generation must be the one the target implements."""
    if fam.attention_generations is None:
        return
    known = fam.schema.SOURCE_GENERATION[schema]
    if config.attention_generation != known:
        other = next(s for s, g in fam.schema.SOURCE_GENERATION.items() if g == config.attention_generation)
        raise ConfigError(
            f"{target} implements {fam.display}'s attention generation {known} only ({fam.attention_generations[known]}); "
            f"these weights need {config.attention_generation} and would give plausible but wrong logits there: save "
            f"them with format='{other}' or 'npformer'"
        )


# ---------------------------------------------------------------------------------------------
# transformers


def transformers_config(config, architecture: str, state: dict) -> dict:
    """The `config.json` transformers' save_pretrained writes for `config` and class `architecture`
    (`state`: the transformers state dict, whose heads size EfficientFormer's teacher head)."""
    fam = family_of(config)
    config = dataclasses.replace(config)  # a copy: the family's hook may fill a field in
    fam.schema.transformers_heads(state, config)  # e.g. EfficientFormer's hidden_size for WithTeacher
    d = config.to_dict()
    del d["num_labels"]  # transformers derives it from id2label
    if d.get("problem_type") is None:
        d.pop("problem_type", None)  # written only when set, as transformers does
    if fam.attention_generations is not None:
        d.pop("attention_generation", None)  # npformer's field; transformers' SwiftFormer is v1 (checked)
    d["architectures"] = [architecture]
    if "id2label" not in d:  # transformers' defaults, written out as save_pretrained does
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
    d["label2id"] = {label: int(i) for i, label in d["id2label"].items()}
    d["torch_dtype"] = "float32"
    d["transformers_version"] = TRANSFORMERS_VERSION
    return d


def _processor_config(fam: Family, image_processor) -> dict:
    """preprocessor_config.json: `image_processor`'s settings, else the family's published ones."""
    from ..preprocess.recipes import recipe

    processor = image_processor if image_processor is not None else recipe(fam.own_recipe)
    if not hasattr(processor, "_TYPE") or not processor._TYPE:
        raise ConfigError(f"{type(processor).__name__} has no transformers counterpart: pass an "
                          "EfficientFormerImageProcessor or a ViTImageProcessor as image_processor")
    return processor.to_dict()


def _save_state_dict(path: Path, state: dict) -> None:
    """A state dict as safetensors with the metadata torch's writers give it (0-d counters stay 0-d)."""
    from safetensors.numpy import save_file

    save_file({k: np.require(v, requirements="C") for k, v in state.items()}, str(path), metadata=SAFETENSORS_METADATA)


def _write_json(path: Path, d: dict) -> None:
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def _directory(path) -> Path:
    """The directory to write, created with its parents (npformer/arguments.py's `output_directory`:
    None, "" (the current directory), an existing file, a name like `x.safetensors` are refused)."""
    return output_directory(path, "directory", f"the {', '.join(FORMATS[1:])} formats")


def _check_transformers_port(fam: Family, config, target: str, format: str) -> None:
    """What transformers (PyTorch or TensorFlow, `target`) cannot hold, refused by name."""
    if "transformers" not in fam.schema.KEY_MAPS:
        raise ConfigError(f"{fam.display} has no {target} port (transformers never added it), so there is no "
                          f"{format} format to write: save with format='timm' or format='npformer'")
    _check_generation(fam, config, "transformers", target)
    _check_no_npformer_fields(config, target)


def save_transformers(directory, config, weights: dict, architecture: str, image_processor=None) -> Path:
    """Write a transformers model directory: config.json, model.safetensors, preprocessor_config.json."""
    fam = family_of(config)
    _check_transformers_port(fam, config, "transformers", "transformers")
    num_heads = _num_heads(fam, architecture)
    state = reference_state_dict(config, weights, num_heads, "transformers")
    if num_heads == 0:  # transformers saves a bare backbone without its base-model prefix
        state = {k.removeprefix(f"{config.model_type}."): v for k, v in state.items()}
    d = transformers_config(config, architecture, state)
    processor = _processor_config(fam, image_processor)
    directory = _directory(directory)
    _save_state_dict(directory / "model.safetensors", state)
    _write_json(directory / "config.json", d)
    _write_json(directory / PREPROCESSOR_CONFIG_NAME, processor)
    return directory


def save_tf(directory, config, weights: dict, architecture: str, image_processor=None) -> Path:
    """Write a transformers TensorFlow model directory: config.json (as `save_transformers`: TF's
    save_pretrained names the PyTorch class too), tf_model.h5 (the Keras weights file of
    `TF<architecture>`, written with h5py: the h5 extra; see checkpoints/h5.py) and
    preprocessor_config.json. transformers' TF classes (4.40+; TFSwiftFormer 4.41+) load it."""
    from .h5 import TF_WEIGHTS_NAME, import_h5py, keras_model_name, write_tf_weights

    fam = family_of(config)
    _check_transformers_port(fam, config, "transformers' TensorFlow", "tf")
    num_heads = _num_heads(fam, architecture)
    if fam.attention_generations is not None and config.drop_path_rate > 0:
        raise ConfigError(f"drop_path_rate={config.drop_path_rate}: transformers' TFSwiftFormer cannot be built with "
                          "drop path (NotImplementedError); it is training-only, so set config.drop_path_rate = 0.0 "
                          "before saving")
    import_h5py("format='tf' (writing tf_model.h5)")
    d = transformers_config(config, architecture, reference_state_dict(config, weights, num_heads, "transformers"))
    processor = _processor_config(fam, image_processor)
    directory = _directory(directory)
    write_tf_weights(directory / TF_WEIGHTS_NAME, config, weights, num_heads, keras_model_name(f"TF{architecture}"))
    _write_json(directory / "config.json", d)
    _write_json(directory / PREPROCESSOR_CONFIG_NAME, processor)
    return directory


# ---------------------------------------------------------------------------------------------
# timm


# timm's eval preprocessing for every family npformer implements (the `_cfg` of timm's
# efficientformer.py, swiftformer.py, efficientformer_v2.py; npformer's "timm" recipe)
TIMM_DATA_CONFIG = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.95, "crop_mode": "center",
                    "mean": tuple(IMAGENET_DEFAULT_MEAN), "std": tuple(IMAGENET_DEFAULT_STD)}


def timm_pretrained_cfg(fam: Family, variant: str, num_classes: int = 1000) -> dict:
    """The `pretrained_cfg` timm attaches to `<timm name>.<tag>` (its preprocessing and heads)."""
    name = fam.timm_names[variant]
    return {"url": "", "hf_hub_id": f"timm/{name}.{fam.timm_tag}", "architecture": name, "tag": fam.timm_tag,
            "custom_load": False, "input_size": TIMM_DATA_CONFIG["input_size"], "fixed_input_size": True,
            "interpolation": TIMM_DATA_CONFIG["interpolation"], "crop_pct": TIMM_DATA_CONFIG["crop_pct"],
            "crop_mode": TIMM_DATA_CONFIG["crop_mode"], "mean": TIMM_DATA_CONFIG["mean"], "std": TIMM_DATA_CONFIG["std"],
            "num_classes": num_classes, "pool_size": None, "first_conv": fam.schema.SIGNATURE.removesuffix(".weight"),
            "classifier": ("head", "head_dist"), "license": "apache-2.0"}


def timm_variant_config(fam: Family, variant: str, num_labels: int | None = None):
    """The config of timm's model `fam.timm_names[variant]`, as npformer reads a timm checkpoint of
    it (e.g. EfficientFormer's LayerNorm eps 1e-5, SwiftFormer's attention v2): the family's
    `config_from_tensors` on the variant's tensor shapes (zero-size views, nothing allocated)."""
    shapes = fam.schema.weight_schema(fam.config.variant(variant), 2)
    state = {name: np.broadcast_to(np.float32(0), shape) for name, shape in shapes.items()}
    generation = (fam.schema.SOURCE_GENERATION["timm"] if fam.attention_generations is not None else None)
    cfg = fam.schema.config_from_tensors(state, "timm", lambda key: int(state[key].shape[0]),
                                         attention_generation=generation)
    return cfg if num_labels is None else dataclasses.replace(cfg, num_labels=num_labels, id2label=None)


# fields that never change a forward (dropout, drop-path, initialisation), nor the labels
_NOT_COMPARED = {"num_labels", "id2label", "problem_type", "extra", "hidden_dropout_prob", "drop_path_rate",
                 "layer_scale_init_value", "initializer_range"}


def _timm_differences(config, expected) -> dict:
    """{field: (ours, timm's)} where both are set and differ (fields that never change a forward aside)."""
    skip = _NOT_COMPARED
    out = {}
    for f in dataclasses.fields(config):
        ours, theirs = getattr(config, f.name), getattr(expected, f.name, None)
        if f.name not in skip and ours is not None and theirs is not None and ours != theirs:
            out[f.name] = (ours, theirs)
    return out


def timm_hub_config(fam: Family, variant: str, config) -> dict:
    """timm's hub `config.json` (as timm's save_for_hf writes it) for a model of `variant`."""
    pretrained_cfg = timm_pretrained_cfg(fam, variant, config.num_labels)
    name = pretrained_cfg.pop("architecture")
    for key in ("url", "hf_hub_id"):  # timm drops the source fields on export
        pretrained_cfg.pop(key)
    side = pretrained_cfg["input_size"][1:]
    return {"architecture": name, "num_classes": config.num_labels, "num_features": config.width, "global_pool": "avg",
            "model_args": {"in_chans": config.num_channels, "num_classes": config.num_labels, "global_pool": "avg",
                           "img_size": list(side)},
            "pretrained_cfg": pretrained_cfg}


def save_timm(directory, config, weights: dict, architecture: str, strict: bool = True) -> Path:
    """Write a timm hub directory: config.json and model.safetensors (timm's state_dict).

    timm builds models by name, so the config must be the one a timm name builds (any num_labels);
    `strict=False` lets a LayerNorm eps differ (EfficientFormer from transformers: 1e-12, timm: 1e-5)."""
    fam = family_of(config)
    _check_generation(fam, config, "timm", "timm")
    _check_no_npformer_fields(config, "timm")
    num_heads = _num_heads(fam, architecture)
    if num_heads != 2:
        raise ConfigError(f"timm's {fam.display} models are two-head classifiers (head and head_dist, averaged), "
                          f"not {architecture}: save the {fam.architecture(2)} (or with format='transformers'/'npformer')")
    variant = variant_name(config)
    if variant is None or variant not in fam.timm_names:
        raise ConfigError(f"timm builds {fam.display} only as its named models ({', '.join(fam.timm_names.values())}); "
                          f"this config ({config.summary()}) is none of them: save with format='npformer'")
    differences = _timm_differences(config, timm_variant_config(fam, variant))
    allowed = {"layer_norm_eps"} if not strict else set()
    refused = {k: v for k, v in differences.items() if k not in allowed}
    if refused:
        listed = "; ".join(f"{k}={ours!r} (timm's {fam.timm_names[variant]}: {theirs!r})" for k, (ours, theirs) in refused.items())
        hint = " (strict=False accepts timm's LayerNorm eps, moving float32 logits by ~4e-6)" if "layer_norm_eps" in refused else ""
        raise ConfigError(f"timm's model would compute something else: {listed}{hint}")
    directory = _directory(directory)
    _save_state_dict(directory / "model.safetensors", reference_state_dict(config, weights, 2, "timm"))
    _write_json(directory / "config.json", timm_hub_config(fam, variant, config))
    return directory


# ---------------------------------------------------------------------------------------------
# entry points


def export(directory, format: str, config, weights: dict, architecture: str, **options) -> Path:
    """Write `weights` in `format` ("transformers", "tf" or "timm") to `directory`; options go to
    `save_transformers` / `save_tf` (image_processor) or `save_timm` (strict)."""
    writers = {"transformers": save_transformers, "tf": save_tf, "timm": save_timm}
    if format == "npformer":
        raise ConfigError(f"format='npformer' (npformer's own weight file) takes no options, got {sorted(options)}")
    if not isinstance(format, str) or format not in writers:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    output_directory(directory, "directory", f"the {', '.join(FORMATS[1:])} formats", create=False)  # before any other check
    writer = writers[format]
    takes = [name for name in inspect.signature(writer).parameters if name not in ("directory", "config", "weights",
                                                                                     "architecture")]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ConfigError(f"format={format!r} takes the options {takes}, not {unknown}")
    return writer(directory, config, weights, architecture, **options)


def export_checkpoint(src, directory, format: str, attention_generation=None, **options) -> Path:
    """Write any checkpoint npformer reads as a directory transformers or timm loads.

    No torch and no TensorFlow are needed: an original `.pth` becomes a transformers, TensorFlow
    or timm checkpoint. `model.save_pretrained(directory, format=...)` does the same for a model.

    Parameters
    ----------
    src : str or os.PathLike
        An npformer file, a transformers model directory (PyTorch or TensorFlow), an original or
        timm checkpoint.
    directory : str or os.PathLike
        The directory to write, created when missing.
    format : str
        `"transformers"`: `config.json`, `model.safetensors`, `preprocessor_config.json`;
        `"tf"`: `config.json`, `tf_model.h5` (needs h5py), `preprocessor_config.json`;
        `"timm"`: timm's hub `config.json` and `model.safetensors`.
    attention_generation : str, optional
        "v1" or "v2": needed for original SwiftFormer checkpoints only.
    **options
        `image_processor=` for "transformers" and "tf", `strict=False` for "timm" (see
        `PreTrainedModel.save_pretrained`).

    Returns
    -------
    pathlib.Path
        The directory written.

    Raises
    ------
    ConfigError
        A format that cannot hold the model (EfficientFormerV2 in transformers, SwiftFormer
        attention v2 in transformers or v1 in timm, a config timm builds under no name), an
        unknown format or option.
    NpformerError
        The subclasses `npformer.load` raises for the source; a `directory` that is a file.
    """
    from .convert import load_any

    config, tensors, metadata = load_any(src, attention_generation)
    return export(directory, format, config, tensors, metadata["architecture"], **options)
