"""The one public loader: a checkpoint in, the model its heads call for out.

`load` is what `npformer.from_pretrained`, the CLI, the teaching helpers and the notebooks use;
`Model.from_pretrained` (on a model class) loads into that class instead.
"""

from __future__ import annotations

import numpy as np

from .checkpoints.convert import load_any
from .models.registry import model_class


def load(path, dtype=np.float32, attention_generation=None, fuse=False):
    """(model, metadata) of the checkpoint at `path`.

    `path`: an npformer weight file, a transformers model directory (config.json +
    model.safetensors or pytorch_model.bin), or an original / timm checkpoint file.
    `dtype`: np.float32 (default) or np.float64 (every intermediate in float64).
    `attention_generation`: SwiftFormer only, "v1" or "v2"; needed for original checkpoints,
    which do not say which attention they were trained with (see npformer.checkpoints.convert).
    `fuse`: fold each BatchNorm into its convolution (the fast path; see `PreTrainedModel.fuse`).
    `metadata` is the weight file's (strings; for other sources, what a conversion would record).
    """
    config, tensors, metadata = load_any(path, attention_generation)
    model = model_class(metadata["architecture"])(config, tensors, dtype=dtype)
    return (model.fuse() if fuse else model), metadata


def from_pretrained(path, dtype=np.float32, attention_generation=None, fuse=False):
    """The model a checkpoint holds, with the class its heads call for (`load` without the metadata)."""
    return load(path, dtype, attention_generation, fuse)[0]
