"""Loading and saving models: the one place where checkpoints and model classes meet.

`load` is what `npformer.from_pretrained`, the CLI, the teaching helpers and the notebooks use;
`Model.from_pretrained` (on a model class) loads into that class instead (`load_into`), and
`model.save_pretrained` writes through `save`. This module sits above both the model code and the
checkpoint code: model classes reach it only through `models.base.CHECKPOINT_IO`, which it fills
below, so model code never imports checkpoint code.
"""

from __future__ import annotations

import json

import numpy as np

from .checkpoints.convert import load_any
from .arguments import model_dtype
from .checkpoints.weights import make_metadata, save_weights
from .errors import ConfigError, InputError
from .hub import MODEL_FILES, resolve
from .models import base
from .models.attention_bias import at_image_size, check_strategy, with_strategy
from .models.classes import model_class


def load(path, dtype=np.float32, attention_generation=None, fuse=False, image_size=None, attention_bias_resize=None,
         *, revision=None, cache_dir=None, local_files_only=False, token=None):
    """(model, metadata) of the checkpoint at `path`.

    `path`: an npformer weight file, a transformers model directory (config.json +
    model.safetensors or pytorch_model.bin), an original / timm checkpoint file, a timm hub
    directory, or a Hugging Face hub id (`revision`, `cache_dir`, `local_files_only`, `token`: passed
    to huggingface_hub, the `hub` extra; see npformer/hub.py).
    `dtype`: np.float32 (default) or np.float64 (every intermediate in float64).
    `attention_generation`: SwiftFormer only, "v1" or "v2"; needed for original checkpoints,
    which do not say which attention they were trained with (see npformer.checkpoints.convert).
    `fuse`: fold each BatchNorm into its convolution (the fast path; see `PreTrainedModel.fuse`).
    `image_size` (H, W) or one side: the input size to run at. Where it gives another attention grid
    than the checkpoint's (EfficientFormer, EfficientFormerV2), `attention_bias_resize` must name
    how the biases follow: "table" or "pairwise" (see npformer/models/attention_bias.py); None
    raises an error saying so. "pairwise" without an image size gives a model that takes any size.
    `metadata` is the weight file's (strings; for other sources, what a conversion would record).
    """
    dtype = model_dtype(dtype)  # refused before anything is read
    path = resolve(path, MODEL_FILES, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                   token=token)
    config, tensors, metadata = load_at_size(path, attention_generation, image_size, attention_bias_resize, dtype)
    model = model_class(metadata["architecture"])(config, tensors, dtype=dtype)
    return (model.fuse() if fuse else model), metadata


def from_pretrained(path, dtype=np.float32, attention_generation=None, fuse=False, image_size=None,
                    attention_bias_resize=None, **hub_options):
    """The model a checkpoint holds, with the class its heads call for (`load` without the metadata);
    `hub_options`: revision, cache_dir, local_files_only, token (for a hub id)."""
    return load(path, dtype, attention_generation, fuse, image_size, attention_bias_resize, **hub_options)[0]


def load_at_size(path, attention_generation=None, image_size=None, attention_bias_resize=None, dtype=np.float32):
    """(config, tensors, metadata) of the checkpoint at `path`, for a model that runs `image_size`
    inputs under `attention_bias_resize` (see `models.attention_bias.at_image_size`; without an
    image size, "pairwise" makes a model that takes any size, and "table" has nothing to resize to)."""
    strategy = check_strategy(attention_bias_resize)
    config, tensors, metadata = load_any(path, attention_generation, image_size=image_size)
    if image_size is not None:
        config, tensors = at_image_size(config, tensors, image_size, strategy, dtype, source=str(path))
    elif strategy == "table":
        raise ConfigError("attention_bias_resize='table' resamples the bias tables to the grid of an image_size: "
                          "give image_size=(H, W) too")
    elif strategy == "pairwise" and hasattr(config, "attention_bias_resize"):
        config = with_strategy(config, "pairwise")
    if "config" in metadata:
        metadata = {**metadata, "config": json.dumps(config.to_dict(), sort_keys=True)}
    return config, tensors, metadata


def load_into(cls, path, dtype=np.float32, attention_generation=None, fuse=False, image_size=None,
              attention_bias_resize=None, *, revision=None, cache_dir=None, local_files_only=False, token=None):
    """The checkpoint at `path` as a `cls` model (`cls.from_pretrained`): heads the checkpoint has
    beyond the class's are dropped, as transformers does; a checkpoint of another family is refused."""
    dtype = model_dtype(dtype)  # refused before anything is read
    path = resolve(path, MODEL_FILES, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                   token=token)
    config, tensors, _ = load_at_size(path, attention_generation, image_size, attention_bias_resize, dtype)
    if config.model_type != cls.family:
        raise InputError(f"{path} holds a {config.model_type} model; {cls.__name__} is a {cls.family}")
    # what the two-head classifier has beyond this class (heads; SwiftFormer's head norm) is dropped
    unused = set(cls.weight_schema(config, 2)) - set(cls.weight_schema(config, cls.num_heads))
    model = cls(config, {k: v for k, v in tensors.items() if k not in unused}, dtype=dtype)
    return model.fuse() if fuse else model


def save(model, path, source="npformer", checkpoint="", format="npformer", **options) -> None:
    """`model.save_pretrained`: an npformer weight file (float32) at `path`, or with
    `format="transformers"`, `"timm"` or `"tf"` a directory those libraries load
    (npformer/checkpoints/export.py). npformer's own format is one `.safetensors` file, never a
    directory: loading reads any directory as a transformers or timm folder, so a directory
    (or a name without the suffix) is refused before anything is written (`save_weights`)."""
    if model.fused:
        raise InputError("a fused model has no BatchNorm weights to save: save the model before .fuse()")
    if format != "npformer" or options:
        from .checkpoints.export import export

        export(path, format, model.config, model.weights, type(model).__name__, **options)
        return
    meta = make_metadata(model.family, type(model).__name__, model.config.to_dict(), source, checkpoint)
    save_weights(path, {k: v.astype(np.float32) for k, v in model.weights.items()}, meta)


base.CHECKPOINT_IO.update(load_into=load_into, save=save)
