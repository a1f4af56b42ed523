"""The PyTorch references, driven from npformer's weights (needs `pip install npformer[oracle]`).

Used by the live test tier and by `npformer parity`: build a family's reference model for a
config (its `reference.py` says how), load npformer's canonical weights into it under the
reference's names, and run it. Nothing here is imported by the model code; torch is imported
only when a function runs.
"""

from __future__ import annotations

import numpy as np

from ..checkpoints.convert import foreign_names
from ..models.registry import family_of


def _load_into(model, config, weights: dict, num_heads: int, schema: str, strip_prefix: str = ""):
    """Copy canonical weights into a torch module under the `schema`'s names; every parameter
    must be covered (derived buffers aside)."""
    import torch

    names = foreign_names(config, num_heads, schema)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {}
    for canon, foreign in names.items():
        key = foreign.removeprefix(strip_prefix)
        value = np.array(weights[canon])
        state[key] = torch.from_numpy(value.reshape(expected.get(key, value.shape)))  # e.g. (C,) layer scales as (C, 1, 1)
    missing, unexpected = model.load_state_dict(state, strict=False)
    leftovers = [k for k in missing if not k.endswith(("num_batches_tracked", "attention_bias_idxs"))]
    if leftovers or unexpected:
        raise RuntimeError(f"{type(model).__name__} did not take the weights: missing {leftovers}, unexpected {unexpected}")


def _finish(model, dtype):
    import torch

    model = model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    model.eval()  # also refreshes the references' cached attention biases from the loaded tables
    return model


def hf_model(config, weights: dict, num_heads: int, dtype=np.float32):
    """The transformers 4.40.2 model holding `weights` (canonical names), for `num_heads` classifier heads."""
    model = family_of(config).reference.transformers_model(config, num_heads)
    # the bare backbone classes have no `efficientformer.` / `swiftformer.` prefix
    _load_into(model, config, weights, num_heads, "transformers", "" if num_heads else f"{config.model_type}.")
    return _finish(model, dtype)


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


def import_timm():
    """Import timm on a machine whose torchvision wheel cannot load its compiled ops.

    timm imports torchvision, whose import registers fake kernels for `torchvision::nms` and
    `qnms` and fails if those operators were never defined (the CUDA torchvision build next to
    CPU torch). Defining the two schemas first lets the import succeed; no classifier uses them.
    """
    import torch

    try:
        import timm  # noqa: F401
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_timm.library = lib  # keep the definitions alive
        import timm  # noqa: F401
    return timm


def timm_model(config, weights: dict, dtype=np.float32):
    """timm's model for `config` in eval mode holding `weights` (canonical names are timm's), and
    timm's own original→timm `checkpoint_filter_fn` for that family (None where timm has none)."""
    model, filter_fn = family_of(config).reference.timm_model(config)
    _load_into(model, config, weights, 2, "timm")
    return _finish(model, dtype), filter_fn


def timm_forward(model, pixel_values: np.ndarray, stage_names) -> dict:
    """Run a timm model; `logits` and, as `hidden_states`, the outputs of the named modules
    (recorded with forward hooks), all as NumPy."""
    import torch

    recorded = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda module, args, output, name=name: recorded.__setitem__(name, output.detach().numpy().copy()))
        for name in stage_names]
    dtype = next(model.parameters()).dtype
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(pixel_values)).to(dtype)).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return {"logits": logits, "hidden_states": tuple(recorded[name] for name in stage_names)}
