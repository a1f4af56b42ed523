"""transformers' Auto classes for npformer's families: the code of transformers' documentation runs
with `from transformers import` changed to `from npformer import` and `return_tensors="pt"` to "np".

    >>> from npformer import AutoImageProcessor, AutoModelForImageClassification
    >>> processor = AutoImageProcessor.from_pretrained("snap-research/efficientformer-l1-300")
    >>> model = AutoModelForImageClassification.from_pretrained("snap-research/efficientformer-l1-300")
    >>> logits = model(**processor(image, return_tensors="np")).logits
    >>> model.config.id2label[logits.argmax(-1).item()]

Each `from_pretrained` takes a hub id (resolved by `npformer.hub`: `revision=`, `cache_dir=`,
`local_files_only=`, `token=` pass through to huggingface_hub), a transformers model directory, a
timm hub directory, an npformer weight file or an original / timm checkpoint. What it returns is
decided as transformers 4.40.2 decides it, from the files themselves:

* `AutoConfig`: the family's config, named by config.json's `model_type`, an npformer file's
  metadata, or a timm repo's `architecture` (the model as timm builds it);
* `AutoModel`: the family's backbone (EfficientFormerModel, SwiftFormerModel, EfficientFormerV2Model);
* `AutoModelForImageClassification`: the family's classifier that config.json's `architectures`
  (else an npformer file's `architecture`, else the checkpoint's heads) names, else the family's
  first — transformers' rule for EfficientFormer's two (class head only, and WithTeacher);
* `AutoImageProcessor`: preprocessor_config.json's `image_processor_type`, else the family's
  (EfficientFormerImageProcessor; ViTImageProcessor for SwiftFormer, as transformers maps it); a
  timm repo's eval transform from its `pretrained_cfg`; the preprocessing a weight file records.

Models are built by the class's own `from_pretrained` (unused heads dropped, as transformers
does). transformers options that mean nothing without torch (`torch_dtype`, `device_map`, ...) are
refused by name with what to use instead.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from .checkpoints.convert import load_any, read_transformers_config, timm_directory_weights
from .checkpoints.export import timm_variant_config
from .arguments import flag, model_dtype
from .errors import ConfigError
from .hub import CONFIG_FILES, MODEL_FILES, PROCESSOR_FILES, resolve
from .jsonfile import read_json_object
from .models.classes import model_class
from .models.registry import FAMILIES, Family, family, family_of
from .preprocess.constants import PREPROCESSOR_CONFIG_NAME
from .preprocess.selection import PROCESSOR_CLASSES, make_processor

HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token")
# transformers' from_pretrained options that have no meaning in npformer, and what to do instead
_TORCH_OPTIONS = {
    "torch_dtype": "pass dtype=np.float32 or dtype=np.float64",
    "device_map": "npformer runs on the CPU, in NumPy: drop it",
    "low_cpu_mem_usage": "drop it",
    "trust_remote_code": "npformer never runs code from a repo: drop it",
    "use_safetensors": "npformer reads model.safetensors when there is one, else pytorch_model.bin without unpickling code",
    "attn_implementation": "drop it",
    "ignore_mismatched_sizes": "npformer loads checkpoints whole, never with freshly initialised layers",
    "num_labels": "npformer loads checkpoints whole, never with freshly initialised layers",
}


def _refuse(what: str, options: dict, takes) -> None:
    """A ConfigError naming each option `what` does not take, with what to do instead."""
    if options:
        hints = "; ".join(f"{k}: {_TORCH_OPTIONS[k]}" for k in sorted(options) if k in _TORCH_OPTIONS)
        raise ConfigError(f"{what} does not take {', '.join(sorted(options))}" + (f" ({hints})" if hints else "")
                          + f"; it takes {', '.join(takes)}")


def _hub_options(options: dict) -> dict:
    return {k: options.pop(k) for k in HUB_OPTIONS if k in options}


def _timm_config(path: Path, config: dict):
    """The config of a timm hub config.json: the model its `architecture` names (as timm builds it)."""
    from .timm.factory import lookup

    try:
        fam, variant = lookup(config["architecture"])
    except KeyError:
        raise ConfigError(f"{path}: a timm hub config without 'architecture'") from None
    return timm_variant_config(fam, variant, config.get("num_classes", 1000))


def _is_timm_config(config: dict) -> bool:
    return "model_type" not in config and bool({"architecture", "pretrained_cfg"} & set(config))


def _checkpoint_classes(local: Path, attention_generation) -> tuple[Family, list[str]]:
    """(family, the class names the checkpoint asks for, in order) without reading its tensors
    where it says so itself: config.json's `architectures`, an npformer file's `architecture`."""
    if local.is_dir() and (local / "config.json").is_file() and timm_directory_weights(local) is None:
        fam, config = read_transformers_config(local, attention_generation)
        return fam, list(config.extra.get("architectures") or [])
    if local.suffix == ".safetensors" and local.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(local), framework="numpy") as f:
                metadata = f.metadata() or {}
        except Exception:  # load_any reports what is wrong with the file
            metadata = {}
        if metadata.get("format") == "npformer" and metadata.get("family") in FAMILIES:
            return family(metadata["family"]), [metadata.get("architecture", "")]
    config, _, metadata = load_any(local, attention_generation)
    return family_of(config), [metadata["architecture"]]


class AutoConfig:
    """transformers' `AutoConfig`: the config of any checkpoint, of the family it names."""

    @classmethod
    def from_pretrained(cls, path, attention_generation=None, **options):
        """Read the config of a checkpoint.

        The family is what config.json's `model_type` names, an npformer file's metadata, or a
        timm repo's `architecture` (the model as timm builds it); a checkpoint without a config
        gives the config its tensor shapes describe.

        Parameters
        ----------
        path : str or os.PathLike
            A hub id, a model directory or its config.json, a timm hub directory, an npformer
            weight file, or an original or timm checkpoint.
        attention_generation : str, optional
            SwiftFormer's attention generation, "v1" or "v2"; required for original SwiftFormer checkpoints.
        **options
            `revision`, `cache_dir`, `local_files_only`, `token` for a hub id (passed to
            huggingface_hub); transformers' torch-only options (`torch_dtype`, `device_map`,
            ...) are refused by name with what to do instead.

        Returns
        -------
        ClassifierConfig
            An `EfficientFormerConfig`, `SwiftFormerConfig` or `EfficientFormerV2Config`.

        Raises
        ------
        ConfigError
            An option it does not take, or a config npformer cannot honour.
        NpformerError
            The subclasses `npformer.load` raises for unreadable or mismatched checkpoints.
        """
        hub = _hub_options(options)
        _refuse("AutoConfig.from_pretrained", options, ["attention_generation", *HUB_OPTIONS])
        local = resolve(path, CONFIG_FILES, **hub)
        file = local / "config.json" if local.is_dir() else local
        if file.suffix == ".json":
            config = read_json_object(file)
            if _is_timm_config(config):
                return _timm_config(file, config)
            return read_transformers_config(file.parent, attention_generation)[1]
        return load_any(local, attention_generation)[0]


class _AutoModel:
    """What the two Auto model classes share: resolve, pick the class, let it load."""

    @classmethod
    def choose(cls, fam: Family, asked: list[str]) -> str:  # -> a class name of `fam`
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, attention_generation=None, fuse=False, **options):
        """Load a checkpoint into the class this Auto class picks for it.

        Parameters
        ----------
        path : str or os.PathLike
            A hub id, a transformers or timm model directory, an npformer weight file, or an
            original or timm checkpoint.
        dtype : numpy dtype, default np.float32
            `np.float32` or `np.float64`.
        attention_generation : str, optional
            SwiftFormer's attention generation, "v1" or "v2"; required for original SwiftFormer checkpoints.
        fuse : bool, default False
            Return the fused fast path.
        **options
            `revision`, `cache_dir`, `local_files_only`, `token` for a hub id (passed to
            huggingface_hub); transformers' torch-only options (`torch_dtype`, `device_map`,
            ...) are refused by name with what to do instead. The class's own options (`image_size`,
            `attention_bias_resize`) are passed on.

        Returns
        -------
        PreTrainedModel
            A model of the chosen class.

        Raises
        ------
        ConfigError
            An option the class does not take.
        NpformerError
            The subclasses `npformer.load` raises, for the same reasons.
        """
        dtype, fuse = model_dtype(dtype), flag(fuse, "fuse")  # refused before anything is read
        hub = _hub_options(options)
        local = resolve(path, MODEL_FILES, **hub)
        fam, asked = _checkpoint_classes(local, attention_generation)
        model_cls = model_class(cls.choose(fam, asked))
        takes = [k for k in inspect.signature(model_cls.from_pretrained).parameters if k not in ("path", *HUB_OPTIONS)]
        _refuse(f"{cls.__name__}.from_pretrained", {k: v for k, v in options.items() if k not in takes},
                [*takes, *HUB_OPTIONS])
        return model_cls.from_pretrained(local, dtype=dtype, attention_generation=attention_generation, fuse=fuse,
                                         **options)

    @classmethod
    def from_config(cls, config, dtype=np.float32):
        """Build a model of the class this Auto class picks for `config`, with seeded weights.

        transformers' `from_config` gives random weights; npformer's are seeded (the same
        every time).

        Parameters
        ----------
        config : ClassifierConfig
            The architecture; `config.extra["architectures"]` names the class where it matters.
        dtype : numpy dtype, default np.float32
            `np.float32` or `np.float64`.

        Returns
        -------
        PreTrainedModel
            The model.
        """
        return model_class(cls.choose(family_of(config), list(config.extra.get("architectures") or [])))(
            config, dtype=dtype)


class AutoModel(_AutoModel):
    """transformers' `AutoModel`: the family's backbone class, without heads.

    `EfficientFormerModel`, `SwiftFormerModel` or `EfficientFormerV2Model`; heads the
    checkpoint holds are dropped.
    """

    @classmethod
    def choose(cls, fam: Family, asked: list[str]) -> str:
        return fam.schema.ARCHITECTURES[0]


class AutoModelForImageClassification(_AutoModel):
    """transformers' `AutoModelForImageClassification`: the classifier the checkpoint names.

    config.json's `architectures` (else an npformer file's `architecture`, else the
    checkpoint's heads) picks among the family's classifiers; without a name, the family's
    first: `EfficientFormerForImageClassification` (class head only, transformers' rule),
    `SwiftFormerForImageClassification`, `EfficientFormerV2ForImageClassification`.
    """

    @classmethod
    def choose(cls, fam: Family, asked: list[str]) -> str:
        classifiers = [name for heads, name in sorted(fam.schema.ARCHITECTURES.items()) if heads > 0]
        return next((name for name in asked if name in classifiers), classifiers[0])


def _processor_class(named: str | None, fam: Family | None, where: Path):
    """The processor class `image_processor_type` names, else the family's (transformers' rule)."""
    if named is not None:
        if named not in PROCESSOR_CLASSES:
            raise ConfigError(f"{where}: image_processor_type {named!r} is not one npformer has ({', '.join(PROCESSOR_CLASSES)})")
        return PROCESSOR_CLASSES[named]
    if fam is None:
        raise ConfigError(f"{where}: names no image_processor_type, and no config.json next to it says the model type")
    if fam.processor is None:
        raise ConfigError(f"{where}: names no image_processor_type, and {fam.display} has no transformers image processor")
    return PROCESSOR_CLASSES[fam.processor]


class AutoImageProcessor:
    """transformers' `AutoImageProcessor`, which also reads timm repos and npformer weight files."""

    @classmethod
    def from_pretrained(cls, path, strict=True, **options):
        """Read the image processor of a checkpoint.

        Parameters
        ----------
        path : str or os.PathLike
            A hub id or a model directory (its `preprocessor_config.json`, whose
            `image_processor_type` names the class; a timm repo's `pretrained_cfg`), a
            `preprocessor_config.json`, or a weight file (the preprocessing it records, else
            its source's recipe).
        strict : bool, default True
            Refuse configs with fields transformers would silently ignore (see
            `EfficientFormerImageProcessor.from_dict`).
        **options
            `revision`, `cache_dir`, `local_files_only`, `token`, for a hub id.

        Returns
        -------
        EfficientFormerImageProcessor or ViTImageProcessor or TorchvisionEvalTransform
            The processor; `processor(images)["pixel_values"]` is float32 [N, 3, H, W].

        Raises
        ------
        ConfigError
            A missing or malformed `preprocessor_config.json`, an `image_processor_type`
            npformer does not have, an option it does not take.
        """
        hub = _hub_options(options)
        _refuse("AutoImageProcessor.from_pretrained", options, ["strict", *HUB_OPTIONS])
        strict = flag(strict, "strict")
        local = resolve(path, PROCESSOR_FILES, **hub)
        directory = local if local.is_dir() else None
        if directory is None and local.suffix != ".json":  # a weight file: what it records, else its source's recipe
            config, _, metadata = load_any(local)
            return make_processor(None, local, family_of(config), metadata)[0]
        file = directory / PREPROCESSOR_CONFIG_NAME if directory is not None else local
        model_config = read_json_object(file.parent / "config.json") if (file.parent / "config.json").is_file() else {}
        if not file.is_file() and _is_timm_config(model_config):  # timm's repos: the eval transform of pretrained_cfg
            from .timm.data import eval_transform, resolve_data_config

            return eval_transform(**resolve_data_config(pretrained_cfg=model_config.get("pretrained_cfg") or {}))
        if not file.is_file():
            raise ConfigError(f"{file}: no such file (a model directory's image processor is its {PREPROCESSOR_CONFIG_NAME})")
        settings = read_json_object(file)
        named = settings.get("image_processor_type")
        if named is None and settings.get("feature_extractor_type"):  # older configs, read as transformers reads them
            named = settings["feature_extractor_type"].replace("FeatureExtractor", "ImageProcessor")
        fam = family(model_config["model_type"]) if "model_type" in model_config else None
        return _processor_class(named, fam, file).from_pretrained(file, strict=strict)
