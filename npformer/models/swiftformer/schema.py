"""SwiftFormer's checkpoint contract: which tensors a model has, what each block is called,
which BatchNorms fold, and how the three foreign key schemas name the same tensors.

npformer's canonical names are timm's. The same tensors in the other two schemas:

    canonical / timm                      transformers                                               original (Amshaker)
    stem.0                                swiftformer.patch_embed.patch_embedding.0                  patch_embed.0
    stages.1.downsample.proj              swiftformer.encoder.network.1.proj                         network.1.proj
    stages.0.blocks.0.dwconv              swiftformer.encoder.network.0.blocks.0.depth_wise_conv     network.0.0.dwconv
    stages.0.blocks.0.layer_scale.gamma   swiftformer.encoder.network.0.blocks.0.layer_scale         network.0.0.layer_scale
    stages.0.blocks.2.attn.proj           swiftformer.encoder.network.0.blocks.2.attn.proj           network.0.2.attn.Proj
    norm / head / head_dist               norm / head / dist_head                                    norm / head / dist_head

SwiftFormer's attention generation is never guessed: transformers checkpoints are v1,
timm checkpoints v2, and for an original `.pth` the caller must say which (`SOURCE_GENERATION`).
The forward that uses these names is `model.py`.
"""

from __future__ import annotations

from ...fuse import AFTER, BEFORE
from ..schema import Stage, block_indices, bn_schema, classifier_names, conv_schema, linear_schema, stage_level_names
from .config import SwiftFormerConfig

# the model class a checkpoint becomes, by its number of classifier heads (the classifier has two)
ARCHITECTURES = {0: "SwiftFormerModel", 2: "SwiftFormerForImageClassification"}
BLOCK_LABELS = {"conv_encoder": "ConvEncoder", "encoder": "encoder (additive attention)"}
SIGNATURE = "stem.0.weight"  # a canonical tensor name only this family has
SOURCE_GENERATION = {"transformers": "v1", "timm": "v2"}  # attention generation, by checkpoint schema


def block_names(cfg: SwiftFormerConfig, stage: int) -> list[tuple[str, str]]:
    """(kind, name) of each block of a stage: depth−1 "conv_encoder" blocks, then one "encoder"."""
    depth = cfg.depths[stage]
    kinds = ["conv_encoder"] * (depth - 1) + ["encoder"]
    return [(kind, f"stages.{stage}.blocks.{i}") for i, kind in enumerate(kinds)]


def stages(cfg: SwiftFormerConfig) -> list[Stage]:
    """The four stages: the downsample leading into each (none into stage 0) and its blocks."""
    return [Stage(s, f"stages.{s}.downsample" if s > 0 and cfg.has_downsample(s) else None, block_names(cfg, s))
            for s in range(4)]


def conv_encoder_schema(name, c, hidden):
    s = conv_schema(f"{name}.dwconv", c, 1, 3) | bn_schema(f"{name}.norm", c)
    s |= conv_schema(f"{name}.pwconv1", hidden, c, 1) | conv_schema(f"{name}.pwconv2", c, hidden, 1)
    return s | {f"{name}.layer_scale.gamma": (c, 1, 1)}


def weight_schema(cfg: SwiftFormerConfig, num_heads: int = 2) -> dict[str, tuple]:
    """{name: shape} of every tensor; `num_heads` is 2 (classifier: norm, head, head_dist) or 0 (backbone)."""
    C = cfg.embed_dims
    s = conv_schema("stem.0", C[0] // 2, cfg.num_channels, 3) | bn_schema("stem.1", C[0] // 2)
    s |= conv_schema("stem.3", C[0], C[0] // 2, 3) | bn_schema("stem.4", C[0])
    for stage in stages(cfg):
        c = C[stage.index]
        if stage.downsample:
            down = stage.downsample
            s |= conv_schema(f"{down}.proj", c, C[stage.index - 1], cfg.down_patch_size) | bn_schema(f"{down}.norm", c)
        for kind, name in stage.blocks:
            if kind == "conv_encoder":
                s |= conv_encoder_schema(name, c, cfg.mlp_ratio * c)
                continue
            s |= conv_encoder_schema(f"{name}.local_representation", c, c)
            for linear_name in ("to_query", "to_key", "proj", "final"):
                s |= linear_schema(f"{name}.attn.{linear_name}", c, c)
            s[f"{name}.attn.w_g"] = (c, 1)
            hidden = cfg.mlp_ratio * c
            s |= bn_schema(f"{name}.linear.norm1", c)
            s |= conv_schema(f"{name}.linear.fc1", hidden, c, 1) | conv_schema(f"{name}.linear.fc2", c, hidden, 1)
            if cfg.use_layer_scale:
                s |= {f"{name}.layer_scale_{i}.gamma": (c, 1, 1) for i in (1, 2)}
    if num_heads:
        s |= bn_schema("norm", cfg.width)
        if cfg.num_labels > 0:
            s |= linear_schema("head", cfg.num_labels, cfg.width) | linear_schema("head_dist", cfg.num_labels, cfg.width)
    return s


def batch_norm_folds(cfg: SwiftFormerConfig) -> list[tuple[str, str, str]]:
    """(conv, norm, where) of every BatchNorm `model.fuse()` folds: all but the classifier's `norm`,
    which is next to no convolution (it works on the last 7×7 map and costs next to nothing)."""
    folds = [("stem.0", "stem.1", AFTER), ("stem.3", "stem.4", AFTER)]
    for stage in stages(cfg):
        if stage.downsample:
            folds.append((f"{stage.downsample}.proj", f"{stage.downsample}.norm", AFTER))
        for kind, name in stage.blocks:
            local = name if kind == "conv_encoder" else f"{name}.local_representation"
            folds.append((f"{local}.dwconv", f"{local}.norm", AFTER))
            if kind == "encoder":
                folds.append((f"{name}.linear.fc1", f"{name}.linear.norm1", BEFORE))
    return folds


def traced_names(cfg: SwiftFormerConfig, architecture: str) -> dict[str, str]:
    """{name: what it is} of every stage-level output a forward of `architecture` traces, in forward order."""
    names = stage_level_names(stages(cfg), BLOCK_LABELS)
    if architecture == ARCHITECTURES[2]:  # the backbone has no final norm
        names |= {"norm": "BatchNorm"} | classifier_names(2, "mean over positions")
    return names


def attention_blocks(cfg: SwiftFormerConfig) -> list[str]:
    """Names of the blocks that attend (the encoder block ending each stage)."""
    return [name for stage in stages(cfg) for kind, name in stage.blocks if kind == "encoder"]


def attention_bias_grids(cfg: SwiftFormerConfig, image_size=None) -> dict:
    """None: SwiftFormer's additive attention has no positional bias, so every input size runs as built."""
    return {}


def config_at_size(cfg: SwiftFormerConfig, image_size) -> SwiftFormerConfig:
    """The config itself: nothing in a SwiftFormer depends on the input size."""
    return cfg


# ---------------------------------------------------------------------------------------------
# foreign key schemas: canonical module -> (foreign module, renames below it)

_HF_CONV = [("dwconv", "depth_wise_conv"), ("pwconv1", "point_wise_conv1"), ("pwconv2", "point_wise_conv2"),
            ("layer_scale.gamma", "layer_scale")]
_SCALES = [("layer_scale_1.gamma", "layer_scale_1"), ("layer_scale_2.gamma", "layer_scale_2")]


def _blocks(cfg: SwiftFormerConfig, stage_module, conv_renames, block_renames) -> dict[str, tuple[str, list]]:
    """Blocks of every stage; `stage_module(index_in_transformers_list, stage, downsample)` names a stage."""
    m = {}
    idx = 0
    for stage in stages(cfg):
        if stage.downsample:
            m[stage.downsample] = (stage_module(idx, stage.index, downsample=True), [])
            idx += 1
        for kind, name in stage.blocks:
            foreign = f"{stage_module(idx, stage.index)}.{name.rsplit('.', 1)[1]}"
            if kind == "conv_encoder":
                m[name] = (foreign, conv_renames)
            else:
                m[name] = (foreign, block_renames)
                m[f"{name}.local_representation"] = (f"{foreign}.local_representation", conv_renames)
        idx += 1
    return m


def transformers_modules(cfg: SwiftFormerConfig) -> dict[str, tuple[str, list]]:
    def stage_module(idx, stage, downsample=False):
        return f"swiftformer.encoder.network.{idx}" + ("" if downsample else ".blocks")

    m = {f"stem.{i}": (f"swiftformer.patch_embed.patch_embedding.{i}", []) for i in (0, 1, 3, 4)}
    m |= {"norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", [])}
    return m | _blocks(cfg, stage_module, _HF_CONV, _SCALES)


def original_modules(cfg: SwiftFormerConfig) -> dict[str, tuple[str, list]]:
    def stage_module(idx, stage, downsample=False):
        return f"network.{2 * stage - 1}" if downsample else f"network.{2 * stage}"

    m = {f"stem.{i}": (f"patch_embed.{i}", []) for i in (0, 1, 3, 4)}
    m |= {"norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", [])}
    conv = [("layer_scale.gamma", "layer_scale")]
    return m | _blocks(cfg, stage_module, conv, _SCALES + [("attn.proj", "attn.Proj")])


KEY_MAPS = {"transformers": transformers_modules, "original": original_modules, "timm": lambda cfg: {"": ("", [])}}
# the classifier heads' weights in each schema, (head, distillation head): how many a checkpoint has
HEAD_KEYS = {"transformers": ("head.weight", "dist_head.weight"), "original": ("head.weight", "dist_head.weight"),
             "timm": ("head.weight", "head_dist.weight")}


# how each schema's keys show it: (a key that must be there, a substring some key must contain)
FINGERPRINTS = {"original": ("patch_embed.0.weight", ".dwconv."), "timm": ("stem.0.weight", ""),
                "transformers": ("", "swiftformer.")}


def foreign_shape(name: str, shape: tuple, schema: str) -> tuple:
    """The shape canonical tensor `name` has in `schema`: the same in every schema of this family."""
    return shape


def check_derived_buffer(key, value, cfg, source) -> bool:
    """SwiftFormer checkpoints carry no derived buffers beyond BatchNorm's counters."""
    return False


def config_from_tensors(state: dict, schema: str, out_channels, attention_generation=None, **_) -> SwiftFormerConfig:
    """The config of an original / timm checkpoint, from its tensor shapes (`out_channels(key)`:
    a weight's [OUT, ...] size, or a clear error)."""
    original = schema == "original"
    widths = [out_channels("patch_embed.3.weight" if original else "stem.3.weight")]
    widths += [out_channels(f"network.{2 * s - 1}.proj.weight" if original else f"stages.{s}.downsample.proj.weight")
               for s in (1, 2, 3)]
    blocks = block_indices(state, r"network\.(\d+)\.(\d+)\." if original else r"stages\.(\d+)\.blocks\.(\d+)\.")
    depths = [len(blocks.get(2 * s if original else s, ())) for s in range(4)]
    num_labels = out_channels("head.weight") if "head.weight" in state else 1000
    return SwiftFormerConfig(embed_dims=widths, depths=depths, num_labels=num_labels,
                             attention_generation=attention_generation)


def transformers_heads(state: dict, cfg: SwiftFormerConfig) -> int:
    """Classifier heads of a transformers state dict: 2 for the classifier (its head norm is there
    even when num_labels is 0), 0 for a saved backbone."""
    return 2 if "norm.weight" in state else sum(h in state for h in HEAD_KEYS["transformers"])


def derived_buffers(cfg: SwiftFormerConfig, schema: str) -> dict:
    """SwiftFormer's state_dicts carry no derived buffers beyond BatchNorm's counters."""
    return {}
