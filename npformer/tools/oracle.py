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
from . import references
from .timm_import import import_timm  # noqa: F401 (npformer.tools.oracle.import_timm, as the fixture scripts use it)


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


def _in_dtype(model, dtype):
    """The model in `dtype` before it takes weights, so float64 weights are not rounded through float32."""
    import torch

    return model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)


def _finish(model, dtype):
    import torch

    model = model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    model.eval()  # also refreshes the references' cached attention biases from the loaded tables
    return model


def hf_model(config, weights: dict, num_heads: int, dtype=np.float32):
    """The transformers 4.40.2 model holding `weights` (canonical names), for `num_heads` classifier heads."""
    model = _in_dtype(references.of(family_of(config)).transformers_model(config, num_heads), dtype)
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


def timm_model(config, weights: dict, dtype=np.float32):
    """timm's model for `config` in eval mode holding `weights` (canonical names are timm's), and
    timm's own original→timm `checkpoint_filter_fn` for that family (None where timm has none)."""
    model, filter_fn = references.of(family_of(config)).timm_model(config)
    _load_into(_in_dtype(model, dtype), config, weights, 2, "timm")
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


# ---------------------------------------------------------------------------------------------
# the "pairwise" bias strategy's reference (npformer.models.attention_bias): timm's attentions,
# each resizing its gathered bias to the forward's token counts as the original repo's detection
# and segmentation backbones do (detection/backbone.py, */backbonev2.py)


def pairwise_bias(bias, num_queries: int, num_keys: int):  # [h, Nq0, Nk0] -> [h, Nq, Nk]
    """The original backbones' line: `F.interpolate(bias.unsqueeze(0), size=(N, N), mode='bicubic')`
    (align_corners False, antialias False), applied at every size as they do."""
    import torch.nn.functional as F

    return F.interpolate(bias.unsqueeze(0), size=(num_queries, num_keys), mode="bicubic")[0]


def _v1_attention_pairwise(self, x):  # timm efficientformer.Attention, [B, N, C] -> [B, N, C]
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
    q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
    attn = (q @ k.transpose(-2, -1)) * self.scale + pairwise_bias(self.get_attention_biases(x.device), N, N)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
    return self.proj(x)


def _v2_attention_pairwise(self, x):  # timm efficientformer_v2.Attention2d, [B, C, H, W] -> [B, C, H, W]
    B = x.shape[0]
    if self.stride_conv is not None:
        x = self.stride_conv(x)
    H, W = x.shape[2:]
    N = H * W
    q = self.q(x).reshape(B, self.num_heads, -1, N).permute(0, 1, 3, 2)
    k = self.k(x).reshape(B, self.num_heads, -1, N)
    v = self.v(x)
    v_local = self.v_local(v)
    v = v.reshape(B, self.num_heads, -1, N).permute(0, 1, 3, 2)
    attn = (q @ k) * self.scale + pairwise_bias(self.get_attention_biases(x.device), N, N)
    attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
    x = (attn @ v).transpose(2, 3).reshape(B, self.dh, H, W) + v_local
    if self.upsample is not None:
        x = self.upsample(x)
    return self.proj(self.act(x))


def _v2_attention_downsample_pairwise(self, x):  # timm efficientformer_v2.Attention2dDownsample
    B, C, H, W = x.shape
    q = self.q(x)
    H2, W2 = q.shape[2:]
    q = q.reshape(B, self.num_heads, -1, H2 * W2).permute(0, 1, 3, 2)
    k = self.k(x).reshape(B, self.num_heads, -1, H * W)
    v = self.v(x)
    v_local = self.v_local(v)
    v = v.reshape(B, self.num_heads, -1, H * W).permute(0, 1, 3, 2)
    attn = (q @ k) * self.scale + pairwise_bias(self.get_attention_biases(x.device), H2 * W2, H * W)
    x = (attn.softmax(dim=-1) @ v).transpose(2, 3).reshape(B, self.dh, H2, W2) + v_local
    return self.proj(self.act(x))


def with_pairwise_bias(model):
    """`model` (a timm EfficientFormer or EfficientFormerV2) with every attention's forward replaced
    by one that takes any token count and resizes its gathered bias pairwise (`pairwise_bias`)."""
    import types

    import_timm()
    from timm.models import efficientformer, efficientformer_v2

    forwards = {efficientformer.Attention: _v1_attention_pairwise, efficientformer_v2.Attention2d: _v2_attention_pairwise,
                efficientformer_v2.Attention2dDownsample: _v2_attention_downsample_pairwise}
    patched = 0
    for module in model.modules():
        if type(module) in forwards:
            module.forward = types.MethodType(forwards[type(module)], module)
            patched += 1
    if not patched:
        raise TypeError(f"{type(model).__name__} has no timm EfficientFormer / EfficientFormerV2 attention to patch")
    return model


def resize_table_reference(table: np.ndarray, trained, grid) -> np.ndarray:
    """The "table" strategy done by torch, on an npformer-layout table [h, Ht·Wt] -> [h, H·W]:
    timm's `resize_rel_pos_bias_table_levit` (timm.layers) for a float32 square table to a square
    grid (it works on [S², h], square only, and rounds through float32), otherwise the same
    `F.interpolate(..., mode="bicubic", antialias=True)` in the table's own dtype."""
    import torch
    import torch.nn.functional as F

    import_timm()
    from timm.layers import resize_rel_pos_bias_table_levit

    h = table.shape[0]
    t = torch.from_numpy(np.ascontiguousarray(table))
    if table.dtype == np.float32 and trained[0] == trained[1] and grid[0] == grid[1]:
        return resize_rel_pos_bias_table_levit(t.T.contiguous(), (grid[0] * grid[1], h)).T.contiguous().numpy()
    image = t.reshape(1, h, *trained)
    return F.interpolate(image, size=tuple(grid), mode="bicubic", antialias=True).reshape(h, -1).numpy()
