"""The PyTorch references, driven from npformer's weights (needs `pip install npformer[oracle]`).

Used by the live test tier and by `npformer parity`: build the transformers 4.40.2 model for a
config, load npformer's canonical weights into it under transformers' names, and run it.
Nothing here is imported by the model code; torch is imported only when a function runs.
"""

from __future__ import annotations

import numpy as np

from .convert import ARCHITECTURE_FOR_HEADS, foreign_names
from .layers import attention_bias_index

# the model classes compared, with the head count each uses
HEADS = {"model": 0, "classification": 1, "teacher": 2}


def hf_model(config, weights: dict, num_heads: int, dtype=np.float32):
    """A transformers EfficientFormer in eval mode holding `weights` (canonical names)."""
    import torch
    import transformers

    hf_config = transformers.EfficientFormerConfig(**config.to_dict())
    hf_config.hidden_size = config.width  # WithTeacher sizes its heads with it (spec §6.1)
    cls = getattr(transformers, ARCHITECTURE_FOR_HEADS[num_heads])
    model = cls(hf_config)
    state = {foreign: torch.from_numpy(np.array(weights[canon]))
             for canon, foreign in foreign_names(config, num_heads, "transformers").items()}
    if num_heads == 0:  # the bare EfficientFormerModel has no `efficientformer.` prefix
        state = {k.removeprefix("efficientformer."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    leftovers = [k for k in missing if not k.endswith(("num_batches_tracked", "attention_bias_idxs"))]
    if leftovers or unexpected:
        raise RuntimeError(f"transformers model did not take the weights: missing {leftovers}, unexpected {unexpected}")
    for name, buf in model.named_buffers():
        if name.endswith("attention_bias_idxs"):
            assert np.array_equal(buf.numpy(), attention_bias_index(config.resolution))
    model = model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    model.eval()  # also refreshes transformers' cached attention bias (`ab`) from the loaded table
    return model


def hf_forward(model, pixel_values: np.ndarray, **kwargs):
    """Run a transformers model on a NumPy batch; every tensor output comes back as NumPy."""
    import torch

    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(pixel_values)).to(dtype), return_dict=True, **kwargs)
    result = {}
    for key, value in out.items():
        if isinstance(value, tuple):
            result[key] = tuple(v.numpy() for v in value)
        elif value is not None:
            result[key] = value.numpy()
    return result
