"""The PyTorch references, driven from npformer's weights (needs `pip install npformer[oracle]`).

Used by the live test tier and by `npformer parity`: build the transformers 4.40.2 model for a
config, load npformer's canonical weights into it under transformers' names, and run it.
Nothing here is imported by the model code; torch is imported only when a function runs.
"""

from __future__ import annotations

import numpy as np

from .convert import ARCHITECTURE_FOR_HEADS, foreign_names
from .errors import ConfigError
from .layers import attention_bias_index

# the model classes compared, with the head count each uses
HEADS = {"model": 0, "classification": 1, "teacher": 2}


def _load_into(model, config, weights: dict, num_heads: int, schema: str, strip_prefix: str = ""):
    """Copy canonical weights into a torch module under the `schema`'s names; every parameter
    must be covered (derived buffers aside)."""
    import torch

    state = {foreign.removeprefix(strip_prefix): torch.from_numpy(np.array(weights[canon]))
             for canon, foreign in foreign_names(config, num_heads, schema).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    leftovers = [k for k in missing if not k.endswith(("num_batches_tracked", "attention_bias_idxs"))]
    if leftovers or unexpected:
        raise RuntimeError(f"{type(model).__name__} did not take the weights: missing {leftovers}, unexpected {unexpected}")


def _finish(model, dtype):
    import torch

    model = model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    model.eval()  # also refreshes transformers' cached attention bias (`ab`) from the loaded table
    return model


def hf_model(config, weights: dict, num_heads: int, dtype=np.float32):
    """The transformers 4.40.2 model (EfficientFormer or SwiftFormer) holding `weights` (canonical names)."""
    import transformers

    if config.model_type == "swiftformer" and config.attention_generation != "v1":
        raise ConfigError("transformers' SwiftFormer implements attention generation v1 only")
    config_cls = {"efficientformer": transformers.EfficientFormerConfig, "swiftformer": transformers.SwiftFormerConfig}
    fields = {k: v for k, v in config.to_dict().items() if k != "attention_generation"}  # npformer's, not transformers'
    hf_config = config_cls[config.model_type](**fields)
    if config.model_type == "efficientformer":
        hf_config.hidden_size = config.width  # WithTeacher sizes its heads with it (spec §6.1)
    model = getattr(transformers, ARCHITECTURE_FOR_HEADS[config.model_type][num_heads])(hf_config)
    # the bare backbone classes have no `efficientformer.` / `swiftformer.` prefix
    _load_into(model, config, weights, num_heads, "transformers", "" if num_heads else f"{config.model_type}.")
    if config.model_type == "efficientformer":
        for name, buf in model.named_buffers():
            if name.endswith("attention_bias_idxs"):
                assert np.array_equal(buf.numpy(), attention_bias_index(config.resolution))
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
    """timm's EfficientFormer or SwiftFormer in eval mode holding `weights` (canonical names are
    timm's), and timm's own original→timm `checkpoint_filter_fn` for that family.

    timm's EfficientFormer LayerNorm eps is fixed at 1e-5; its SwiftFormer attention is v2."""
    import_timm()
    from timm.models import efficientformer as timm_ef
    from timm.models import swiftformer as timm_sf

    if config.model_type == "efficientformer":
        if config.layer_norm_eps != 1e-5:
            raise ConfigError(f"timm's EfficientFormer uses LayerNorm eps 1e-5, the config says {config.layer_norm_eps}")
        model = timm_ef.EfficientFormer(depths=tuple(config.depths), embed_dims=tuple(config.hidden_sizes),
                                        num_vit=config.num_meta3d_blocks, num_classes=config.num_labels)
        filter_fn = timm_ef.checkpoint_filter_fn
    else:
        if config.attention_generation != "v2":
            raise ConfigError("timm's SwiftFormer implements attention generation v2 only")
        model = timm_sf.SwiftFormer(layers=list(config.depths), embed_dims=list(config.embed_dims),
                                    num_classes=config.num_labels)
        filter_fn = timm_sf.checkpoint_filter_fn
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
