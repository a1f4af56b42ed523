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
    """Load the model a checkpoint holds, with the checkpoint's metadata.

    The class is the one the checkpoint's heads call for (its `architecture`): a two-head
    checkpoint gives a `...WithTeacher` classifier (`SwiftFormerForImageClassification` for
    SwiftFormer), a one-head checkpoint a `...ForImageClassification`, a headless one a `...Model`.

    Parameters
    ----------
    path : str or os.PathLike
        An npformer weight file (`.safetensors`), a transformers model directory (`config.json`
        with `model.safetensors`, `pytorch_model.bin` or `tf_model.h5`), an original or timm
        checkpoint file (`.pth`, `.pt`, `.bin`, `.safetensors`), a timm hub directory, or a
        Hugging Face hub id such as `"snap-research/efficientformer-l1-300"` (the `hub` extra).
    dtype : numpy dtype, default np.float32
        `np.float32` or `np.float64`; with float64 every intermediate is float64.
    attention_generation : str, optional
        SwiftFormer only, "v1" or "v2". Required for original SwiftFormer checkpoints, which do
        not record which attention they were trained with; checked against what every other
        source says.
    fuse : bool, default False
        Fold each BatchNorm into its convolution: the fast path (see `PreTrainedModel.fuse`).
    image_size : int or tuple of int, optional
        One side or `(H, W)`: the input size to run at. Where it gives another attention grid
        than the checkpoint's (EfficientFormer, EfficientFormerV2), `attention_bias_resize`
        must say how the biases follow.
    attention_bias_resize : str, optional
        `"table"` resamples each bias table once, to the grid of `image_size`; `"pairwise"`
        resizes the gathered bias matrix in every forward, and without `image_size` gives a
        model that takes any input size.
    revision : str, optional
        Hub ids only: the branch, tag or commit (passed to huggingface_hub, as are the next three).
    cache_dir : str or os.PathLike, optional
        Hub ids only: the Hugging Face cache to read and download into.
    local_files_only : bool, default False
        Hub ids only: read the cache, never download.
    token : str or bool, optional
        Hub ids only: a Hugging Face token for a private repo (True: the stored login).

    Returns
    -------
    model : PreTrainedModel
        The model, in `dtype`, fused when `fuse` is True.
    metadata : dict of str to str
        The weight file's metadata; for other sources, what a conversion would record
        (`format`, `family`, `architecture`, `config`, `source`, `recipe`, ...).

    Raises
    ------
    ConfigError
        A bad argument (a `dtype` other than float32/float64, an empty or `None` path, an
        unknown strategy, `attention_generation` for a family that has none or missing for an
        original SwiftFormer checkpoint), or a config.json npformer cannot honour.
    WeightFileError
        A missing, truncated or corrupt file, a directory without `config.json`, NaN or inf
        weights, a hub repo or file that cannot be found.
    UnsafePickleError
        A `.pth` / `.bin` pickle that references code (refused before anything runs).
    CheckpointMismatchError
        Missing, unexpected or mis-shaped tensors, or metadata contradicting itself or the tensors.
    InputError
        An `image_size` that changes the attention grid without `attention_bias_resize`.
    MissingExtraError
        A hub id without huggingface_hub installed.
    """
    dtype = model_dtype(dtype)  # refused before anything is read
    path = resolve(path, MODEL_FILES, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                   token=token)
    config, tensors, metadata = load_at_size(path, attention_generation, image_size, attention_bias_resize, dtype)
    model = model_class(metadata["architecture"])(config, tensors, dtype=dtype)
    return (model.fuse() if fuse else model), metadata


def from_pretrained(path, dtype=np.float32, attention_generation=None, fuse=False, image_size=None,
                    attention_bias_resize=None, **hub_options):
    """Load the model a checkpoint holds: `npformer.load` without the metadata.

    Parameters
    ----------
    path : str or os.PathLike
        An npformer weight file, a transformers or timm model directory, an original or timm
        checkpoint file, or a Hugging Face hub id (see `npformer.load`).
    dtype : numpy dtype, default np.float32
        `np.float32` or `np.float64`.
    attention_generation : str, optional
        SwiftFormer's attention generation, "v1" or "v2"; required for original SwiftFormer checkpoints.
    fuse : bool, default False
        Fold each BatchNorm into its convolution (the fast path).
    image_size : int or tuple of int, optional
        The input size to run at, one side or `(H, W)`.
    attention_bias_resize : str, optional
        How the attention biases follow another grid, "table" or "pairwise" (see `npformer.load`).
    **hub_options
        `revision`, `cache_dir`, `local_files_only`, `token`, for a hub id.

    Returns
    -------
    PreTrainedModel
        The model, of the class the checkpoint's heads call for.

    Raises
    ------
    NpformerError
        The subclasses `npformer.load` raises, for the same reasons.
    """
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
