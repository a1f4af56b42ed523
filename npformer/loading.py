"""The one public loader: a checkpoint in, the model its heads call for out.

`load` is what `npformer.from_pretrained`, the CLI, the teaching helpers and the notebooks use;
`Model.from_pretrained` (on a model class) loads into that class instead.
"""

from __future__ import annotations

import numpy as np

from .hub import MODEL_FILES, resolve
from .models.attention_bias import load_at_size
from .models.registry import model_class


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
