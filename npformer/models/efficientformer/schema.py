"""EfficientFormer (V1)'s checkpoint contract: which tensors a model has, what each block is
called, which BatchNorms fold, and how the three foreign key schemas name the same tensors.

npformer's canonical names are timm's. The same tensors in the other two schemas:

    canonical / timm                      transformers (…WithTeacher)                                original (snap-research)
    stem.conv1                            efficientformer.patch_embed.convolution1                   patch_embed.0
    stages.1.downsample.conv              efficientformer.encoder.intermediate_stages.1.projection   network.1.proj
    stages.0.blocks.2.mlp.fc1             ….intermediate_stages.0.meta4D_layers.blocks.2.mlp.convolution1  network.0.2.mlp.fc1
    stages.3.blocks.4.token_mixer.proj    ….last_stage.meta3D_layers.blocks.0.token_mixer.projection network.6.4.token_mixer.proj
    stages.3.blocks.4.ls1.gamma           ….last_stage.meta3D_layers.blocks.0.layer_scale_1          network.6.4.layer_scale_1
    norm / head / head_dist               efficientformer.layernorm / classifier / distillation_classifier  norm / head / dist_head

The forward that uses these names is `model.py`.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from ...errors import CheckpointMismatchError, ConfigError
from ...fuse import AFTER
from ...layers import attention_bias_index
from ..schema import Stage, block_indices, bn_schema, classifier_names, conv_schema, linear_schema, stage_level_names
from .config import EfficientFormerConfig

# the model class a checkpoint becomes, by its number of classifier heads
ARCHITECTURES = {0: "EfficientFormerModel", 1: "EfficientFormerForImageClassification",
                 2: "EfficientFormerForImageClassificationWithTeacher"}
BLOCK_LABELS = {"meta4d": "Meta4D (pool)", "flat": "Flat", "meta3d": "Meta3D (attention)"}
SIGNATURE = "stem.conv1.weight"  # a canonical tensor name only this family has


def block_names(cfg: EfficientFormerConfig, stage: int) -> list[tuple[str, str]]:
    """(kind, name) of each block of a stage, kind in {"meta4d", "flat", "meta3d"}.

    As in timm, the flatten step takes a block index of its own in the last stage, so for L1 the
    attention block is `stages.3.blocks.4` (blocks 0–2 pool, block 3 flattens).
    """
    prefix = f"stages.{stage}.blocks"
    if stage < 3:
        return [("meta4d", f"{prefix}.{i}") for i in range(cfg.depths[stage])]
    n4d = cfg.num_meta4d_last_stage
    blocks = [("meta4d", f"{prefix}.{i}") for i in range(n4d)] + [("flat", f"{prefix}.{n4d}")]
    return blocks + [("meta3d", f"{prefix}.{n4d + 1 + j}") for j in range(cfg.num_meta3d_blocks)]


def stages(cfg: EfficientFormerConfig) -> list[Stage]:
    """The four stages: the downsample leading into each (none into stage 0) and its blocks."""
    return [Stage(s, f"stages.{s}.downsample" if s > 0 and cfg.has_downsample(s) else None, block_names(cfg, s))
            for s in range(4)]


def weight_schema(cfg: EfficientFormerConfig, num_heads: int = 2) -> dict[str, tuple]:
    """{name: shape} of every tensor of a model with `num_heads` classifier heads (0, 1 or 2)."""
    C, hidden = cfg.hidden_sizes, cfg.mlp_expansion_ratio
    s = {}
    s |= conv_schema("stem.conv1", C[0] // 2, cfg.num_channels, 3) | bn_schema("stem.norm1", C[0] // 2)
    s |= conv_schema("stem.conv2", C[0], C[0] // 2, 3) | bn_schema("stem.norm2", C[0])
    for stage in stages(cfg):
        c = C[stage.index]
        if stage.downsample:
            down = stage.downsample
            s |= conv_schema(f"{down}.conv", c, C[stage.index - 1], cfg.downsample_patch_size) | bn_schema(f"{down}.norm", c)
        for kind, name in stage.blocks:
            if kind == "meta4d":
                s |= conv_schema(f"{name}.mlp.fc1", hidden * c, c, 1) | bn_schema(f"{name}.mlp.norm1", hidden * c)
                s |= conv_schema(f"{name}.mlp.fc2", c, hidden * c, 1) | bn_schema(f"{name}.mlp.norm2", c)
            elif kind == "meta3d":
                h, dk = cfg.num_attention_heads, cfg.key_dim
                dv = cfg.attention_ratio * dk
                s |= {f"{name}.norm1.weight": (c,), f"{name}.norm1.bias": (c,)}
                s |= linear_schema(f"{name}.token_mixer.qkv", h * (2 * dk + dv), c)
                s |= linear_schema(f"{name}.token_mixer.proj", c, h * dv)
                s[f"{name}.token_mixer.attention_biases"] = (h, cfg.resolution**2)
                s |= {f"{name}.norm2.weight": (c,), f"{name}.norm2.bias": (c,)}
                s |= linear_schema(f"{name}.mlp.fc1", hidden * c, c) | linear_schema(f"{name}.mlp.fc2", c, hidden * c)
            if kind != "flat" and cfg.use_layer_scale:
                s |= {f"{name}.ls1.gamma": (c,), f"{name}.ls2.gamma": (c,)}
    s |= {"norm.weight": (cfg.width,), "norm.bias": (cfg.width,)}
    if cfg.num_labels > 0:
        for head in ("head", "head_dist")[:num_heads]:
            s |= linear_schema(head, cfg.num_labels, cfg.width)
    return s


def batch_norm_folds(cfg: EfficientFormerConfig) -> list[tuple[str, str, str]]:
    """(conv, norm, where) of every BatchNorm that `model.fuse()` folds: all of them, each after its conv."""
    folds = [("stem.conv1", "stem.norm1", AFTER), ("stem.conv2", "stem.norm2", AFTER)]
    for stage in stages(cfg):
        if stage.downsample:
            folds.append((f"{stage.downsample}.conv", f"{stage.downsample}.norm", AFTER))
        for kind, name in stage.blocks:
            if kind == "meta4d":
                folds += [(f"{name}.mlp.fc1", f"{name}.mlp.norm1", AFTER), (f"{name}.mlp.fc2", f"{name}.mlp.norm2", AFTER)]
    return folds


def traced_names(cfg: EfficientFormerConfig, architecture: str) -> dict[str, str]:
    """{name: what it is} of every stage-level output a forward of `architecture` traces, in forward order."""
    names = stage_level_names(stages(cfg), BLOCK_LABELS)
    heads = {arch: n for n, arch in ARCHITECTURES.items()}[architecture]
    return names | {"norm": "LayerNorm"} | classifier_names(heads, "mean over tokens")


def attention_blocks(cfg: EfficientFormerConfig) -> list[str]:
    """Names of the blocks that attend (the Meta3D blocks of the last stage)."""
    return [name for stage in stages(cfg) for kind, name in stage.blocks if kind == "meta3d"]


def attention_bias_grids(cfg: EfficientFormerConfig, image_size=None) -> dict[str, tuple[int, int]]:
    """{table name: (H, W) of the token grid it is laid over} for `image_size` inputs (default:
    the grid the config is built for, resolution × resolution)."""
    grid = (cfg.resolution,) * 2 if image_size is None else tuple(cfg.last_stage_side(s) for s in image_size)
    return {f"{name}.token_mixer.attention_biases": grid for name in attention_blocks(cfg)}


def config_at_size(cfg: EfficientFormerConfig, image_size) -> EfficientFormerConfig:
    """The config of the same model built for `image_size` inputs: transformers' `resolution` is
    the side of the last stage's square grid, so the two sides must give the same one."""
    H, W = (cfg.last_stage_side(s) for s in image_size)
    if H != W:
        raise ConfigError(
            f"a {image_size[0]}×{image_size[1]} input gives a {H}×{W} last stage; EfficientFormer's bias tables are "
            "square (transformers' `resolution`), so the 'table' strategy needs a square grid: use "
            "attention_bias_resize='pairwise' for this size, or a size whose sides give the same grid")
    return dataclasses.replace(cfg, resolution=H)


# ---------------------------------------------------------------------------------------------
# foreign key schemas: canonical module -> (foreign module, renames below it)

_HF_META4D = [("mlp.fc1", "mlp.convolution1"), ("mlp.norm1", "mlp.batchnorm_before"), ("mlp.fc2", "mlp.convolution2"),
              ("mlp.norm2", "mlp.batchnorm_after"), ("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")]
_HF_META3D = [("norm1", "layernorm1"), ("norm2", "layernorm2"), ("token_mixer.proj", "token_mixer.projection"),
              ("mlp.fc1", "mlp.linear_in"), ("mlp.fc2", "mlp.linear_out"), ("ls1.gamma", "layer_scale_1"),
              ("ls2.gamma", "layer_scale_2")]
_ORIGINAL_BLOCK = [("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")]


def transformers_modules(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
    enc = "efficientformer.encoder"
    m = {
        "stem.conv1": ("efficientformer.patch_embed.convolution1", []),
        "stem.norm1": ("efficientformer.patch_embed.batchnorm_before", []),
        "stem.conv2": ("efficientformer.patch_embed.convolution2", []),
        "stem.norm2": ("efficientformer.patch_embed.batchnorm_after", []),
        "norm": ("efficientformer.layernorm", []),
        "head": ("classifier", []),
        "head_dist": ("distillation_classifier", []),
    }
    idx = 0  # transformers' intermediate_stages list: stage 0, down, stage 1, down, stage 2, down
    for stage in stages(cfg):
        if stage.downsample:
            m[stage.downsample] = (f"{enc}.intermediate_stages.{idx}", [("conv", "projection")])
            idx += 1
        meta4d = meta3d = 0
        for kind, name in stage.blocks:
            if kind == "meta4d":
                where = f"intermediate_stages.{idx}" if stage.index < 3 else "last_stage"
                m[name] = (f"{enc}.{where}.meta4D_layers.blocks.{meta4d}", _HF_META4D)
                meta4d += 1
            elif kind == "meta3d":
                m[name] = (f"{enc}.last_stage.meta3D_layers.blocks.{meta3d}", _HF_META3D)
                meta3d += 1
        idx += stage.index < 3
    return m


def original_modules(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
    m = {
        "stem.conv1": ("patch_embed.0", []), "stem.norm1": ("patch_embed.1", []),
        "stem.conv2": ("patch_embed.3", []), "stem.norm2": ("patch_embed.4", []),
        "norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", []),
    }
    for stage in range(4):
        if stage > 0:  # the original always has a downsample module between stages
            m[f"stages.{stage}.downsample"] = (f"network.{2 * stage - 1}", [("conv", "proj")])
        for kind, name in block_names(cfg, stage):
            if kind != "flat":
                m[name] = (f"network.{2 * stage}.{name.rsplit('.', 1)[1]}", _ORIGINAL_BLOCK)
    return m


KEY_MAPS = {"transformers": transformers_modules, "original": original_modules, "timm": lambda cfg: {"": ("", [])}}
# the classifier heads' weights in each schema, (head, distillation head): how many a checkpoint has
HEAD_KEYS = {"transformers": ("classifier.weight", "distillation_classifier.weight"),
             "original": ("head.weight", "dist_head.weight"), "timm": ("head.weight", "head_dist.weight")}


# how each schema's keys show it: (a key that must be there, a substring some key must contain)
FINGERPRINTS = {"original": ("patch_embed.0.weight", ".token_mixer.qkv."), "timm": ("stem.conv1.weight", ""),
                "transformers": ("", "efficientformer.")}


def foreign_shape(name: str, shape: tuple, schema: str) -> tuple:
    """The shape canonical tensor `name` has in `schema`: the same in every schema of this family."""
    return shape


def check_derived_buffer(key: str, value: np.ndarray, cfg: EfficientFormerConfig, source: str) -> bool:
    """True for a buffer a checkpoint may carry that npformer derives itself (after checking it)."""
    if not key.endswith(".attention_bias_idxs"):
        return False
    idx = attention_bias_index(cfg.resolution)
    if tuple(value.shape) != idx.shape or not np.array_equal(value, idx):
        raise CheckpointMismatchError(
            f"{source}: {key} is not the |Δrow|·{cfg.resolution} + |Δcol| index table npformer uses "
            f"(shape {tuple(value.shape)}); the attention biases would be scrambled"
        )
    return True


def config_from_tensors(state: dict, schema: str, out_channels, **_) -> EfficientFormerConfig:
    """The config of an original / timm checkpoint, from its tensor shapes (`out_channels(key)`:
    a weight's [OUT, ...] size, or a clear error). Both use PyTorch's LayerNorm eps 1e-5."""
    original = schema == "original"
    widths = [out_channels("patch_embed.3.weight" if original else "stem.conv2.weight")]
    widths += [out_channels(f"network.{2 * s - 1}.proj.weight" if original else f"stages.{s}.downsample.conv.weight")
               for s in (1, 2, 3)]
    block = r"network\.(\d+)\.(\d+)\." if original else r"stages\.(\d+)\.blocks\.(\d+)\."
    blocks = block_indices(state, block)
    depths = [len(blocks.get(2 * s if original else s, ())) for s in range(4)]
    last = r"network\.6\.(\d+)\.token_mixer\.qkv\." if original else r"stages\.3\.blocks\.(\d+)\.token_mixer\.qkv\."
    meta3d = len({m.group(1) for k in state if (m := re.match(last, k))})
    num_labels = out_channels("head.weight") if "head.weight" in state else 1000
    return EfficientFormerConfig(hidden_sizes=widths, depths=depths, num_meta3d_blocks=meta3d, dim=widths[-1],
                                 hidden_size=widths[-1], layer_norm_eps=1e-5, num_labels=num_labels,
                                 resolution=_table_side(state, schema))


def _table_side(state: dict, schema: str) -> int:
    """The side of the square grid the checkpoint's bias tables are laid over ([h, R²] → R; 7 at 224 px)."""
    table = next((k for k in sorted(state) if k.endswith("attention_biases")), None)
    if table is None:
        return 7
    offsets = state[table].shape[-1]
    side = math.isqrt(offsets)
    if side * side != offsets:
        raise CheckpointMismatchError(f"{schema} checkpoint: {table} has {offsets} offsets, not a square grid's R² "
                                      "(EfficientFormer's tables are square)")
    return side


def transformers_heads(state: dict, cfg: EfficientFormerConfig) -> int:
    """Classifier heads of a transformers state dict (0 for a saved backbone); sizes the teacher's heads."""
    num_heads = sum(h in state for h in HEAD_KEYS["transformers"])
    if cfg.hidden_size is None and num_heads == 2:
        cfg.hidden_size = cfg.width
    return num_heads


def derived_buffers(cfg: EfficientFormerConfig, schema: str) -> dict[str, np.ndarray]:
    """{canonical name: value} of the buffers transformers' and timm's state_dicts carry that npformer
    derives itself: each attention block's `token_mixer.attention_bias_idxs`, the table
    `check_derived_buffer` checks on reading. The exporters (checkpoints/export.py) write them, so
    that the references load the files strictly."""
    index = attention_bias_index(cfg.resolution)  # [N, N] int64
    return {f"{name}.token_mixer.attention_bias_idxs": index for name in attention_blocks(cfg)}
