"""EfficientFormerV2's checkpoint contract: which tensors a model has, what each block is called,
which BatchNorms fold, and how the original repo names the same tensors.

npformer's canonical names are timm's (there is no transformers port). The same tensors in the
original snap-research schema:

    canonical / timm                              original (snap-research)
    stem.conv1.conv / stem.conv1.bn               patch_embed.0 / patch_embed.1   (2: GELU, then .3 / .4)
    stages.1.downsample.conv.conv / .conv.bn      network.1.proj / network.1.norm
    stages.3.downsample.conv.conv / .conv.bn      network.5.conv / network.5.bn
    stages.3.downsample.attn.q.local              network.5.attn.q.local.0
    stages.3.downsample.attn.k.conv / .k.bn       network.5.attn.k.0 / network.5.attn.k.1
    stages.3.downsample.attn.proj.conv / .bn      network.5.attn.proj.1 / .proj.2  (proj.0 is the GELU)
    stages.0.blocks.1.mlp.fc1.conv / .fc1.bn      network.0.1.mlp.fc1 / network.0.1.mlp.norm1
    stages.0.blocks.1.mlp.mid.conv / .mid.bn      network.0.1.mlp.mid / network.0.1.mlp.mid_norm
    stages.2.blocks.5.token_mixer.q.conv / .q.bn  network.4.5.token_mixer.q.0 / .q.1
    stages.2.blocks.5.ls1.gamma   (C,)            network.4.5.layer_scale_1   (C, 1, 1)
    norm / head / head_dist                       norm / head / dist_head

The original also saves each attention's `attention_bias_idxs` (checked, then dropped); timm does
not. The forward that uses these names is `model.py`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ...errors import CheckpointMismatchError
from ...fuse import AFTER
from ...layers import attention_bias_index_grid
from ..schema import Stage, block_indices, bn_schema, classifier_names, conv_schema, linear_schema, stage_level_names
from .config import EfficientFormerV2Config, halve

# the model class a checkpoint becomes, by its number of classifier heads
ARCHITECTURES = {0: "EfficientFormerV2Model", 1: "EfficientFormerV2ForImageClassification",
                 2: "EfficientFormerV2ForImageClassificationWithTeacher"}
BLOCK_LABELS = {"ffn": "FFN (MLP)", "attn_ffn": "AttnFFN (attention + MLP)"}
SIGNATURE = "stem.conv1.conv.weight"  # a canonical tensor name only this family has


def block_names(cfg: EfficientFormerV2Config, stage: int) -> list[tuple[str, str]]:
    """(kind, name) of each block of a stage, kind "ffn" or "attn_ffn": the last `num_vit` blocks
    of stages 2 and 3 attend (timm: stage ≥ 2 and block index > depth − 1 − num_vit)."""
    depth = cfg.depths[stage]
    first_attending = depth - cfg.num_vit if stage >= 2 else depth
    return [("attn_ffn" if i >= first_attending else "ffn", f"stages.{stage}.blocks.{i}") for i in range(depth)]


def stages(cfg: EfficientFormerV2Config) -> list[Stage]:
    """The four stages: the downsample leading into each (none into stage 0; stage 3's attends) and its blocks."""
    return [Stage(s, f"stages.{s}.downsample" if s > 0 else None, block_names(cfg, s)) for s in range(4)]


def attention_grid(cfg: EfficientFormerV2Config, stage: int) -> tuple[int, int]:
    """(H, W) of the token grid the attention blocks of `stage` attend on: stage 2's attend after a
    stride-2 convolution (7×7 inside the 14×14 stage at 224), stage 3's at the stage's own grid."""
    return tuple(halve(s) for s in cfg.grid(2)) if stage == 2 else cfg.grid(3)


def attention_bias_grids(cfg: EfficientFormerV2Config, image_size=None) -> dict[str, tuple[int, int]]:
    """{table name: (H, W) of the key grid it is laid over} for `image_size` inputs (default: the
    built size): stage 2's blocks attend at half the stage-2 grid, stage 3's at its own, and the
    downsampling attention's keys are the whole stage-2 grid (7×7, 7×7, 14×14 at 224)."""
    stage2, stage3 = cfg.grid(2, image_size), cfg.grid(3, image_size)
    grids = {}
    for stage in stages(cfg):
        if stage.index == 3:
            grids["stages.3.downsample.attn.attention_biases"] = stage2
        for kind, name in stage.blocks:
            if kind == "attn_ffn":
                grids[f"{name}.token_mixer.attention_biases"] = (tuple(halve(s) for s in stage2) if stage.index == 2
                                                                 else stage3)
    return grids


def config_at_size(cfg: EfficientFormerV2Config, image_size) -> EfficientFormerV2Config:
    """The config of the same model built for `image_size` inputs (timm's `img_size=`)."""
    H, W = image_size
    return dataclasses.replace(cfg, image_size=H if H == W else [H, W])


def conv_norm_schema(name, out_ch, in_ch, k, groups=1):
    """timm's ConvNorm / ConvNormAct: a convolution `{name}.conv` and its BatchNorm `{name}.bn`."""
    return conv_schema(f"{name}.conv", out_ch, in_ch // groups, k) | bn_schema(f"{name}.bn", out_ch)


def attention_schema(cfg: EfficientFormerV2Config, name, c, stage) -> dict[str, tuple]:
    """Attention4D of a block (`{name}` = its token_mixer), in timm's state_dict order."""
    h, dk = cfg.num_heads, cfg.key_dim
    dh = h * cfg.attn_ratio * dk  # value channels, all heads
    s = {f"{name}.attention_biases": (h, math.prod(attention_grid(cfg, stage)))}
    if stage == 2:
        s |= conv_norm_schema(f"{name}.stride_conv", c, c, 3, groups=c)
    s |= conv_norm_schema(f"{name}.q", h * dk, c, 1) | conv_norm_schema(f"{name}.k", h * dk, c, 1)
    s |= conv_norm_schema(f"{name}.v", dh, c, 1) | conv_norm_schema(f"{name}.v_local", dh, dh, 3, groups=dh)
    s |= conv_schema(f"{name}.talking_head1", h, h, 1) | conv_schema(f"{name}.talking_head2", h, h, 1)
    return s | conv_norm_schema(f"{name}.proj", c, dh, 1)


def attention_downsample_schema(cfg: EfficientFormerV2Config, name, c_in, c_out) -> dict[str, tuple]:
    """Attention2dDownsample (`{name}` = stages.3.downsample.attn): 196 keys, 49 queries at 224."""
    h, dk = cfg.num_heads, cfg.downsample_key_dim
    dh = h * cfg.attn_ratio * dk
    s = {f"{name}.attention_biases": (h, math.prod(cfg.grid(2)))}
    s |= conv_schema(f"{name}.q.local", c_in, 1, 3) | conv_norm_schema(f"{name}.q.proj", h * dk, c_in, 1)
    s |= conv_norm_schema(f"{name}.k", h * dk, c_in, 1) | conv_norm_schema(f"{name}.v", dh, c_in, 1)
    s |= conv_norm_schema(f"{name}.v_local", dh, dh, 3, groups=dh)
    return s | conv_norm_schema(f"{name}.proj", c_out, dh, 1)


def weight_schema(cfg: EfficientFormerV2Config, num_heads: int = 2) -> dict[str, tuple]:
    """{name: shape} of every tensor of a model with `num_heads` classifier heads (0, 1 or 2), in
    timm's state_dict order (timm's attention_bias_idxs are not saved; npformer derives them)."""
    C = cfg.widths
    s = conv_norm_schema("stem.conv1", C[0] // 2, cfg.num_channels, 3) | conv_norm_schema("stem.conv2", C[0], C[0] // 2, 3)
    for stage in stages(cfg):
        c = C[stage.index]
        if stage.downsample:
            s |= conv_norm_schema(f"{stage.downsample}.conv", c, C[stage.index - 1], 3)
            if stage.index == 3:
                s |= attention_downsample_schema(cfg, f"{stage.downsample}.attn", C[2], c)
        for i, (kind, name) in enumerate(stage.blocks):
            hidden = int(c * cfg.mlp_ratios[stage.index][i])
            if kind == "attn_ffn":
                s |= attention_schema(cfg, f"{name}.token_mixer", c, stage.index) | {f"{name}.ls1.gamma": (c,)}
            s |= conv_norm_schema(f"{name}.mlp.fc1", hidden, c, 1) | conv_norm_schema(f"{name}.mlp.mid", hidden, hidden, 3, hidden)
            s |= conv_norm_schema(f"{name}.mlp.fc2", c, hidden, 1) | {f"{name}.ls2.gamma": (c,)}
    s |= bn_schema("norm", cfg.width)
    if cfg.num_labels > 0:
        for head in ("head", "head_dist")[:num_heads]:
            s |= linear_schema(head, cfg.num_labels, cfg.width)
    return s


def batch_norm_folds(cfg: EfficientFormerV2Config) -> list[tuple[str, str, str]]:
    """(conv, norm, where) of every BatchNorm `model.fuse()` folds: each ConvNorm's, after its conv.
    Not folded: the final `norm`, which follows a residual sum (and is the backbone's output).
    The local-global query's `q.local` convolution has no BatchNorm of its own."""
    norms = [name.removesuffix(".running_var") for name in weight_schema(cfg, 0) if name.endswith(".bn.running_var")]
    return [(norm.removesuffix(".bn") + ".conv", norm, AFTER) for norm in norms]


def traced_names(cfg: EfficientFormerV2Config, architecture: str) -> dict[str, str]:
    """{name: what it is} of every stage-level output a forward of `architecture` traces, in forward order."""
    names = stage_level_names(stages(cfg), BLOCK_LABELS)
    heads = {arch: n for n, arch in ARCHITECTURES.items()}[architecture]
    return names | {"norm": "BatchNorm"} | classifier_names(heads, "mean over positions")


def attention_blocks(cfg: EfficientFormerV2Config) -> list[str]:
    """Names of the blocks that attend (the AttnFFN blocks closing stages 2 and 3), in forward order;
    stage 3's downsampling attention is not a block (its probabilities are traced, see model.py)."""
    return [name for stage in stages(cfg) for kind, name in stage.blocks if kind == "attn_ffn"]


# ---------------------------------------------------------------------------------------------
# the original schema: canonical module -> (foreign module, renames below it)

_CONV_NORM = [("conv", "0"), ("bn", "1")]  # nn.Sequential(Conv2d, BatchNorm2d)
_ACT_CONV_NORM = [("conv", "1"), ("bn", "2")]  # nn.Sequential(GELU, Conv2d, BatchNorm2d)
_MLP = [("fc1.conv", "fc1"), ("fc1.bn", "norm1"), ("mid.conv", "mid"), ("mid.bn", "mid_norm"),
        ("fc2.conv", "fc2"), ("fc2.bn", "norm2")]


def original_modules(cfg: EfficientFormerV2Config) -> dict[str, tuple[str, list]]:
    m = {"stem.conv1.conv": ("patch_embed.0", []), "stem.conv1.bn": ("patch_embed.1", []),
         "stem.conv2.conv": ("patch_embed.3", []), "stem.conv2.bn": ("patch_embed.4", []),
         "norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", [])}
    for stage in stages(cfg):
        network = f"network.{2 * stage.index - 1}"
        if stage.index in (1, 2):
            m[f"{stage.downsample}.conv"] = (network, [("conv", "proj"), ("bn", "norm")])
        elif stage.index == 3:
            m[f"{stage.downsample}.conv"] = (network, [])
            attn = f"{stage.downsample}.attn"
            m[attn] = (f"{network}.attn", [("q.local", "q.local.0")])
            m |= {f"{attn}.{part}": (f"{network}.attn.{part}", _CONV_NORM) for part in ("q.proj", "k", "v", "v_local")}
            m[f"{attn}.proj"] = (f"{network}.attn.proj", _ACT_CONV_NORM)
        for kind, name in stage.blocks:
            block = f"network.{2 * stage.index}.{name.rsplit('.', 1)[1]}"
            m[name] = (block, [("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")])
            m[f"{name}.mlp"] = (f"{block}.mlp", _MLP)
            if kind == "attn_ffn":
                mixer = f"{name}.token_mixer"
                m |= {f"{mixer}.{part}": (f"{block}.token_mixer.{part}", _CONV_NORM)
                      for part in ("stride_conv", "q", "k", "v", "v_local")}
                m[f"{mixer}.proj"] = (f"{block}.token_mixer.proj", _ACT_CONV_NORM)
    return m


KEY_MAPS = {"timm": lambda cfg: {"": ("", [])}, "original": original_modules}
# the classifier heads' weights in each schema, (head, distillation head): how many a checkpoint has
HEAD_KEYS = {"original": ("head.weight", "dist_head.weight"), "timm": ("head.weight", "head_dist.weight")}


def foreign_shape(name: str, shape: tuple, schema: str) -> tuple:
    """The shape canonical tensor `name` (of canonical `shape`) has in `schema`: the original
    repo's layer scales are (C, 1, 1) where timm's are (C,); every other tensor is the same."""
    if schema == "original" and name.endswith((".ls1.gamma", ".ls2.gamma")):
        return (*shape, 1, 1)
    return shape


# how each schema's keys show it: (a key that must be there, a substring some key must contain)
FINGERPRINTS = {"original": ("patch_embed.0.weight", ".mlp.mid."), "timm": ("stem.conv1.conv.weight", "")}


def check_derived_buffer(key: str, value: np.ndarray, cfg: EfficientFormerV2Config, source: str) -> bool:
    """True for a buffer a checkpoint may carry that npformer derives itself (after checking it):
    the original's `attention_bias_idxs`, [N, N] in the blocks and [N2, N] in the downsampling attention."""
    if not key.endswith(".attention_bias_idxs"):
        return False
    if key.startswith(("network.5.attn.", "stages.3.downsample.attn.")):
        grid, stride, what = cfg.grid(2), 2, "|2·q_row − k_row|·W + |2·q_col − k_col|"
    else:
        grid, stride, what = attention_grid(cfg, 3), 1, "|Δrow|·W + |Δcol|"
    idx = attention_bias_index_grid(*grid, query_stride=stride)
    if tuple(value.shape) != idx.shape or not np.array_equal(value, idx):
        raise CheckpointMismatchError(
            f"{source}: {key} (shape {tuple(value.shape)}) is not the {idx.shape[0]}×{idx.shape[1]} index table "
            f"{what} on the {grid[0]}×{grid[1]} key grid that npformer uses; the attention biases would be scrambled"
        )
    return True


def config_from_tensors(state: dict, schema: str, out_channels, image_size=None, **_) -> EfficientFormerV2Config:
    """The config of an original / timm checkpoint, from its tensor shapes (`out_channels(key)`:
    a weight's [OUT, ...] size, or a clear error). The built image size comes from the downsampling
    attention's bias table ([h, S²] for an S×S stage-2 grid → 16·S px); a non-square grid cannot be
    read from a table's length, so for such a checkpoint `image_size` (H, W) must say it."""
    original = schema == "original"
    widths = [out_channels("patch_embed.3.weight" if original else "stem.conv2.conv.weight")]
    widths += [out_channels(f"network.{2 * s - 1}.proj.weight" if original else f"stages.{s}.downsample.conv.conv.weight")
               for s in (1, 2)]
    widths.append(out_channels("network.5.conv.weight" if original else "stages.3.downsample.conv.conv.weight"))
    block = r"network\.(\d+)\.(\d+)\." if original else r"stages\.(\d+)\.blocks\.(\d+)\."
    blocks = block_indices(state, block)
    depths = [len(blocks.get(2 * s if original else s, ())) for s in range(4)]

    def prefix(s, i):
        return f"network.{2 * s}.{i}" if original else f"stages.{s}.blocks.{i}"

    fc1 = "mlp.fc1.weight" if original else "mlp.fc1.conv.weight"
    mlp_ratios = [[_ratio(out_channels(f"{prefix(s, i)}.{fc1}"), widths[s]) for i in range(depths[s])] for s in range(4)]
    vit = [sum(f"{prefix(s, i)}.token_mixer.attention_biases" in state for i in range(depths[s])) for s in (2, 3)]
    if vit[0] != vit[1]:
        raise CheckpointMismatchError(f"{schema} checkpoint: stage 2 ends with {vit[0]} attention blocks and stage 3 "
                                      f"with {vit[1]}; EfficientFormerV2 has the same number (num_vit) in both")
    table = "network.5.attn.attention_biases" if original else "stages.3.downsample.attn.attention_biases"
    keys = state[table].shape[-1] if table in state else 196
    side = math.isqrt(keys)
    num_labels = out_channels("head.weight") if "head.weight" in state else 1000
    cfg = EfficientFormerV2Config(widths=widths, depths=depths, mlp_ratios=mlp_ratios, num_vit=vit[0],
                                  image_size=16 * side if side * side == keys else 224, num_labels=num_labels,
                                  distillation=HEAD_KEYS[schema][1] in state)
    if side * side == keys:
        return cfg
    built = image_size and config_at_size(cfg, tuple(image_size))
    if built and built.grid(2)[0] * built.grid(2)[1] == keys:
        return built
    given = f"image_size={tuple(image_size)} gives {'×'.join(map(str, built.grid(2)))}; " if built else ""
    raise CheckpointMismatchError(f"{table} has {keys} offsets, not a square stage-2 grid's S²: the model was built "
                                  f"for a non-square input, which a table's length does not tell; {given}load it with "
                                  "the image_size=(H, W) it was built for (timm's img_size)")


def _ratio(hidden: int, width: int) -> int | float:
    """An MLP ratio r with int(width·r) == hidden, as an integer when it is one."""
    if hidden % width == 0:
        return hidden // width
    r = hidden / width
    return r if int(width * r) == hidden else math.nextafter(r, math.inf)


def derived_buffers(cfg: EfficientFormerV2Config, schema: str) -> dict:
    """timm's EfficientFormerV2 keeps its bias indices as non-persistent buffers: its state_dict has
    no derived buffers beyond BatchNorm's counters (the original's `attention_bias_idxs` are only read)."""
    return {}
