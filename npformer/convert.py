"""Converters: foreign EfficientFormer and SwiftFormer checkpoints → npformer's canonical weights.

Three key schemas describe the same tensors of each family (spec §7.1, §7.3); npformer's
canonical names are timm's. EfficientFormer:

    canonical / timm                      transformers (…WithTeacher)                                original (snap-research)
    stem.conv1                            efficientformer.patch_embed.convolution1                   patch_embed.0
    stages.1.downsample.conv              efficientformer.encoder.intermediate_stages.1.projection   network.1.proj
    stages.0.blocks.2.mlp.fc1             ….intermediate_stages.0.meta4D_layers.blocks.2.mlp.convolution1  network.0.2.mlp.fc1
    stages.3.blocks.4.token_mixer.proj    ….last_stage.meta3D_layers.blocks.0.token_mixer.projection network.6.4.token_mixer.proj
    stages.3.blocks.4.ls1.gamma           ….last_stage.meta3D_layers.blocks.0.layer_scale_1          network.6.4.layer_scale_1
    norm / head / head_dist               efficientformer.layernorm / classifier / distillation_classifier  norm / head / dist_head

SwiftFormer:

    canonical / timm                      transformers                                               original (Amshaker)
    stem.0                                swiftformer.patch_embed.patch_embedding.0                  patch_embed.0
    stages.1.downsample.proj              swiftformer.encoder.network.1.proj                         network.1.proj
    stages.0.blocks.0.dwconv              swiftformer.encoder.network.0.blocks.0.depth_wise_conv     network.0.0.dwconv
    stages.0.blocks.0.layer_scale.gamma   swiftformer.encoder.network.0.blocks.0.layer_scale         network.0.0.layer_scale
    stages.0.blocks.2.attn.proj           swiftformer.encoder.network.0.blocks.2.attn.proj           network.0.2.attn.Proj
    norm / head / head_dist               norm / head / dist_head                                    norm / head / dist_head

Each schema is written once, as a map from canonical module names to foreign ones built from the
config; converting is a lookup in its inverse. Derived buffers are checked, then dropped:
`attention_bias_idxs` must equal the |Δrow|·R + |Δcol| table npformer computes, and
`num_batches_tracked` is unused at inference.

SwiftFormer's attention generation (spec §4.2) is never guessed: transformers checkpoints are v1,
timm checkpoints v2, and for an original `.pth` the caller must say which.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import efficientformer, swiftformer
from .config import ATTENTION_GENERATIONS, SWIFTFORMER_VARIANTS, VARIANTS, EfficientFormerConfig, SwiftFormerConfig
from .errors import CheckpointMismatchError, ConfigError, WeightFileError
from .layers import attention_bias_index
from .weights import check_tensors, make_metadata, metadata_config, read_safetensors, save_weights, validate_metadata

FAMILIES = {
    "efficientformer": (EfficientFormerConfig, efficientformer),
    "swiftformer": (SwiftFormerConfig, swiftformer),
}
# the class a checkpoint becomes, by family and number of classifier heads
ARCHITECTURE_FOR_HEADS = {
    "efficientformer": {0: "EfficientFormerModel", 1: "EfficientFormerForImageClassification",
                        2: "EfficientFormerForImageClassificationWithTeacher"},
    "swiftformer": {0: "SwiftFormerModel", 2: "SwiftFormerForImageClassification"},
}
HEAD_COUNT = {arch: n for family in ARCHITECTURE_FOR_HEADS.values() for n, arch in family.items()}
SOURCE_GENERATION = {"transformers": "v1", "timm": "v2"}  # SwiftFormer attention, by checkpoint schema


# ---------------------------------------------------------------------------------------------
# EfficientFormer key maps: canonical module -> (foreign module, renames below it)

_EF_HF_META4D = [("mlp.fc1", "mlp.convolution1"), ("mlp.norm1", "mlp.batchnorm_before"), ("mlp.fc2", "mlp.convolution2"),
                 ("mlp.norm2", "mlp.batchnorm_after"), ("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")]
_EF_HF_META3D = [("norm1", "layernorm1"), ("norm2", "layernorm2"), ("token_mixer.proj", "token_mixer.projection"),
                 ("mlp.fc1", "mlp.linear_in"), ("mlp.fc2", "mlp.linear_out"), ("ls1.gamma", "layer_scale_1"),
                 ("ls2.gamma", "layer_scale_2")]
_EF_ORIGINAL_BLOCK = [("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")]


def _ef_transformers(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
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
    for stage in range(4):
        if stage > 0 and cfg.has_downsample(stage):
            m[f"stages.{stage}.downsample"] = (f"{enc}.intermediate_stages.{idx}", [("conv", "projection")])
            idx += 1
        meta4d = meta3d = 0
        for kind, name in efficientformer.block_names(cfg, stage):
            if kind == "meta4d":
                where = f"intermediate_stages.{idx}" if stage < 3 else "last_stage"
                m[name] = (f"{enc}.{where}.meta4D_layers.blocks.{meta4d}", _EF_HF_META4D)
                meta4d += 1
            elif kind == "meta3d":
                m[name] = (f"{enc}.last_stage.meta3D_layers.blocks.{meta3d}", _EF_HF_META3D)
                meta3d += 1
        idx += stage < 3
    return m


def _ef_original(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
    m = {
        "stem.conv1": ("patch_embed.0", []), "stem.norm1": ("patch_embed.1", []),
        "stem.conv2": ("patch_embed.3", []), "stem.norm2": ("patch_embed.4", []),
        "norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", []),
    }
    for stage in range(4):
        if stage > 0:
            m[f"stages.{stage}.downsample"] = (f"network.{2 * stage - 1}", [("conv", "proj")])
        for kind, name in efficientformer.block_names(cfg, stage):
            if kind != "flat":
                m[name] = (f"network.{2 * stage}.{name.rsplit('.', 1)[1]}", _EF_ORIGINAL_BLOCK)
    return m


# ---------------------------------------------------------------------------------------------
# SwiftFormer key maps

_SF_HF_CONV = [("dwconv", "depth_wise_conv"), ("pwconv1", "point_wise_conv1"), ("pwconv2", "point_wise_conv2"),
               ("layer_scale.gamma", "layer_scale")]
_SF_SCALES = [("layer_scale_1.gamma", "layer_scale_1"), ("layer_scale_2.gamma", "layer_scale_2")]


def _sf_blocks(cfg: SwiftFormerConfig, stage_module, conv_renames, block_renames) -> dict[str, tuple[str, list]]:
    """Blocks of every stage; `stage_module(stage, index_in_transformers_list)` names a stage."""
    m = {}
    idx = 0
    for stage in range(4):
        if stage > 0 and cfg.has_downsample(stage):
            m[f"stages.{stage}.downsample"] = (stage_module(stage, idx, downsample=True), [])
            idx += 1
        for kind, name in swiftformer.block_names(cfg, stage):
            foreign = f"{stage_module(stage, idx)}.{name.rsplit('.', 1)[1]}"
            if kind == "conv_encoder":
                m[name] = (foreign, conv_renames)
            else:
                m[name] = (foreign, block_renames)
                m[f"{name}.local_representation"] = (f"{foreign}.local_representation", conv_renames)
        idx += 1
    return m


def _sf_transformers(cfg: SwiftFormerConfig) -> dict[str, tuple[str, list]]:
    def stage_module(stage, idx, downsample=False):
        return f"swiftformer.encoder.network.{idx}" + ("" if downsample else ".blocks")

    m = {f"stem.{i}": (f"swiftformer.patch_embed.patch_embedding.{i}", []) for i in (0, 1, 3, 4)}
    m |= {"norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", [])}
    return m | _sf_blocks(cfg, stage_module, _SF_HF_CONV, _SF_SCALES)


def _sf_original(cfg: SwiftFormerConfig) -> dict[str, tuple[str, list]]:
    def stage_module(stage, idx, downsample=False):
        return f"network.{2 * stage - 1}" if downsample else f"network.{2 * stage}"

    m = {f"stem.{i}": (f"patch_embed.{i}", []) for i in (0, 1, 3, 4)}
    m |= {"norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", [])}
    conv = [("layer_scale.gamma", "layer_scale")]
    return m | _sf_blocks(cfg, stage_module, conv, _SF_SCALES + [("attn.proj", "attn.Proj")])


def _identity(cfg) -> dict[str, tuple[str, list]]:
    """timm's names are the canonical names."""
    return {"": ("", [])}


SCHEMAS = {
    ("efficientformer", "transformers"): _ef_transformers,
    ("efficientformer", "original"): _ef_original,
    ("efficientformer", "timm"): _identity,
    ("swiftformer", "transformers"): _sf_transformers,
    ("swiftformer", "original"): _sf_original,
    ("swiftformer", "timm"): _identity,
}


def foreign_names(cfg, num_heads: int, schema: str) -> dict[str, str]:
    """{canonical tensor name: its name in `schema`} for every tensor of the model."""
    modules = SCHEMAS[cfg.model_type, schema](cfg)
    prefixes = sorted(modules, key=len, reverse=True)
    out = {}
    for name in FAMILIES[cfg.model_type][1].weight_schema(cfg, num_heads):
        prefix = next(p for p in prefixes if p == "" or name.startswith(p + "."))
        target, renames = modules[prefix]
        rest = name[len(prefix) + 1 :] if prefix else name
        for canon, foreign in renames:
            if rest == canon or rest.startswith(canon + "."):
                rest = foreign + rest[len(canon) :]
                break
        out[name] = f"{target}.{rest}" if target else rest
    return out


def to_canonical(state: dict, cfg, num_heads: int, schema: str, source: str) -> dict:
    """Rename a foreign state dict to canonical names; check and drop the derived buffers.

    Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.
    """
    names = foreign_names(cfg, num_heads, schema)
    inverse = {foreign: canon for canon, foreign in names.items()}
    tensors, unexpected = {}, []
    for key, value in state.items():
        if key in inverse:
            if value.dtype.kind != "f":  # casting would hide it: an int / bool / complex weight is not a float weight
                raise CheckpointMismatchError(f"{source}: {key} is a {value.dtype} tensor; weights must be floating-point")
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused by check_values
                tensors[inverse[key]] = np.asarray(value, dtype=np.float32)
        elif key.endswith(".num_batches_tracked"):
            continue
        elif key.endswith(".attention_bias_idxs") and cfg.model_type == "efficientformer":
            idx = attention_bias_index(cfg.resolution)
            if tuple(value.shape) != idx.shape or not np.array_equal(value, idx):
                raise CheckpointMismatchError(
                    f"{source}: {key} is not the |Δrow|·{cfg.resolution} + |Δcol| index table npformer uses "
                    f"(shape {tuple(value.shape)}); the attention biases would be scrambled"
                )
        else:
            unexpected.append(key)
    module = FAMILIES[cfg.model_type][1]
    check_tensors({**tensors, **{k: np.zeros(0) for k in unexpected}}, module.weight_schema(cfg, num_heads), source)
    return tensors


# ---------------------------------------------------------------------------------------------
# configs of checkpoints that carry none (original, timm): inferred from tensor shapes


def _block_indices(state, pattern) -> dict[int, set]:
    """{stage-module index: block indices} for keys matching `pattern` (two groups: stage, block)."""
    found: dict[int, set] = {}
    for key in state:
        if m := re.match(pattern, key):
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return found


def _config_from_tensors(state: dict, family: str, schema: str, source: str, attention_generation=None):
    """Infer the config of an original / timm checkpoint from its tensor shapes.

    EfficientFormer: both use PyTorch's LayerNorm eps 1e-5 (transformers uses 1e-12)."""
    original = schema == "original"
    stem = {("efficientformer", True): "patch_embed.3.weight", ("efficientformer", False): "stem.conv2.weight",
            ("swiftformer", True): "patch_embed.3.weight", ("swiftformer", False): "stem.3.weight"}[family, original]
    down_conv = {"efficientformer": "conv", "swiftformer": "proj"}[family]
    down = (lambda s: f"network.{2 * s - 1}.proj.weight") if original else (lambda s: f"stages.{s}.downsample.{down_conv}.weight")
    def out_channels(key):  # [OC, ...] of a convolution / linear weight
        if key not in state:
            raise CheckpointMismatchError(f"{source}: not a {schema} {family} checkpoint (no {key})")
        if state[key].ndim < 1:
            raise CheckpointMismatchError(f"{source}: {key} has shape (), not a weight's [out, ...] shape")
        return int(state[key].shape[0])

    widths = [out_channels(stem)] + [out_channels(down(s)) for s in (1, 2, 3)]
    blocks = _block_indices(state, r"network\.(\d+)\.(\d+)\." if original else r"stages\.(\d+)\.blocks\.(\d+)\.")
    depths = [len(blocks.get(2 * s if original else s, ())) for s in range(4)]
    num_labels = out_channels("head.weight") if "head.weight" in state else 1000
    if family == "swiftformer":
        return SwiftFormerConfig(embed_dims=widths, depths=depths, num_labels=num_labels,
                                 attention_generation=attention_generation)
    last = r"network\.6\.(\d+)\.token_mixer\.qkv\." if original else r"stages\.3\.blocks\.(\d+)\.token_mixer\.qkv\."
    meta3d = len({m.group(1) for k in state if (m := re.match(last, k))})
    return EfficientFormerConfig(hidden_sizes=widths, depths=depths, num_meta3d_blocks=meta3d, dim=widths[-1],
                                 hidden_size=widths[-1], layer_norm_eps=1e-5, num_labels=num_labels)


def variant_name(cfg) -> str | None:
    """"l1", "xs", ... when the config is a published variant's architecture."""
    variants = VARIANTS if cfg.model_type == "efficientformer" else SWIFTFORMER_VARIANTS
    for name, spec in variants.items():
        if all(getattr(cfg, k) == v for k, v in spec.items()):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# reading whole checkpoints


def _read_state_dict(path: Path) -> dict:
    """A flat {name: array} from a .safetensors, .bin, .pth or .pt file (no torch, no code run)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    from .torchfile import flatten_state_dict, load_torch_file

    return flatten_state_dict(load_torch_file(path), path)


def _resolve_generation(family: str, schema: str, requested: str | None, source: str) -> str | None:
    """SwiftFormer's attention generation for a checkpoint: known from its schema, else the caller's."""
    if family != "swiftformer":
        if requested is not None:
            raise ConfigError(f"{source}: attention_generation applies to SwiftFormer only, this is an {family}")
        return None
    known = SOURCE_GENERATION.get(schema)
    if known and requested not in (None, known):
        raise ConfigError(
            f"{source}: {schema} SwiftFormer checkpoints use attention generation {known} "
            f"({ATTENTION_GENERATIONS[known]}); {requested} would give plausible but wrong logits"
        )
    if known is None and requested is None:
        raise ConfigError(
            f"{source}: an original SwiftFormer checkpoint does not say which attention it was trained with; "
            "pass attention_generation='v1' (checkpoints of the first release, before 2023-07-26: "
            f"{ATTENTION_GENERATIONS['v1']}) or 'v2' ({ATTENTION_GENERATIONS['v2']}); "
            "on the command line: --attention v1 or --attention v2"
        )
    return known or requested


def load_transformers_dir(path: Path, attention_generation=None):
    """(config, canonical tensors, architecture) from a directory written by `save_pretrained`."""
    try:  # model_type picks the family
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"{path / 'config.json'}: not a readable JSON config object ({err})") from None
    if model_type not in FAMILIES:
        raise ConfigError(f"{path / 'config.json'}: model_type {model_type!r} is not one npformer implements "
                          f"({', '.join(FAMILIES)})")
    config_cls = FAMILIES[model_type][0]
    cfg = config_cls.from_json_file(path / "config.json")
    if model_type == "swiftformer":
        cfg.attention_generation = _resolve_generation(model_type, "transformers", attention_generation, str(path))
    else:
        _resolve_generation(model_type, "transformers", attention_generation, str(path))
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if (path / filename).is_file():
            state = _read_state_dict(path / filename)
            break
    else:
        raise WeightFileError(f"{path}: has config.json but neither model.safetensors nor pytorch_model.bin")
    prefix = f"{model_type}."
    if not any(k.startswith(prefix) for k in state):  # saved from the bare backbone class: no prefix
        state = {prefix + k: v for k, v in state.items()}
    heads = {"efficientformer": ("classifier.weight", "distillation_classifier.weight"),
             "swiftformer": ("head.weight", "dist_head.weight")}[model_type]
    num_heads = sum(h in state for h in heads)
    if cfg.num_labels == 0:  # Identity heads hold no tensors: the class name says what it was
        architecture = (cfg.extra.get("architectures") or [""])[0]
        num_heads = HEAD_COUNT.get(architecture, 0)
    if model_type == "swiftformer" and "norm.weight" in state:
        num_heads = 2
    if model_type == "efficientformer" and cfg.hidden_size is None and num_heads == 2:
        cfg.hidden_size = cfg.width
    tensors = to_canonical(state, cfg, num_heads, "transformers", str(path))
    return cfg, tensors, ARCHITECTURE_FOR_HEADS[model_type][num_heads]


def detect_schema(state_keys, source: str) -> tuple[str, str]:
    """(family, schema) of a state dict, from its key names."""
    keys = set(state_keys)
    if "patch_embed.0.weight" in keys:
        return ("swiftformer" if any(".dwconv." in k for k in keys) else "efficientformer"), "original"
    if "stem.conv1.weight" in keys:
        return "efficientformer", "timm"
    if "stem.0.weight" in keys:
        return "swiftformer", "timm"
    for family in FAMILIES:
        if any(k.startswith(f"{family}.") for k in keys):
            return family, "transformers"
    raise CheckpointMismatchError(
        f"{source}: not a checkpoint npformer knows: expected transformers keys (efficientformer.…, swiftformer.…), "
        "original keys (patch_embed.0.…, network.…) or timm keys (stem.conv1.… / stem.0.…)"
    )


def _load_npformer_file(path: Path, tensors: dict, metadata: dict, attention_generation=None):
    validate_metadata(path, metadata)
    family = metadata.get("family")
    if family not in FAMILIES:
        raise WeightFileError(f"{path}: metadata family {family!r} is not one of {sorted(FAMILIES)}")
    config_dict = metadata_config(metadata)
    if config_dict.get("model_type", family) != family:
        raise CheckpointMismatchError(
            f"{path}: metadata family {family!r} contradicts its config's model_type {config_dict['model_type']!r}; "
            "the file is inconsistent, convert it again"
        )
    held = _tensor_family(tensors)
    if held not in (None, family):
        raise CheckpointMismatchError(
            f"{path}: metadata says {family}, but the tensors are {held} tensors "
            f"({'stem.conv1.weight' if held == 'efficientformer' else 'stem.0.weight'}); convert the source again"
        )
    config_cls, module = FAMILIES[family]
    cfg = config_cls.from_dict(config_dict, source=f"{path} (metadata config)")
    stated = metadata.get("variant")
    if stated is not None and stated != variant_name(cfg):
        raise CheckpointMismatchError(
            f"{path}: metadata variant {stated!r} contradicts its config, which is "
            f"{repr(variant_name(cfg)) if variant_name(cfg) else 'no published variant'}"
        )
    arch = metadata.get("architecture", "")
    if arch not in module.ARCHITECTURES:
        raise WeightFileError(f"{path}: metadata architecture {arch!r} is not one of {sorted(module.ARCHITECTURES)}")
    if family == "swiftformer":
        stored = metadata.get("attention_generation")
        if stored != cfg.attention_generation:
            raise CheckpointMismatchError(
                f"{path}: metadata attention_generation {stored!r} contradicts its config's "
                f"{cfg.attention_generation!r}; the file is inconsistent, convert it again"
            )
        if attention_generation not in (None, stored):
            raise CheckpointMismatchError(
                f"{path}: holds SwiftFormer weights trained with attention {stored} ({ATTENTION_GENERATIONS[stored]}); "
                f"running them as {attention_generation} would give plausible but wrong logits"
            )
    elif attention_generation is not None:
        raise ConfigError(f"{path}: attention_generation applies to SwiftFormer only, this is an {family}")
    check_tensors(tensors, module.weight_schema(cfg, HEAD_COUNT[arch]), str(path))
    return cfg, tensors, metadata


def _tensor_family(tensors) -> str | None:
    """The family whose stem canonical tensor names show, None if neither."""
    if "stem.conv1.weight" in tensors:
        return "efficientformer"
    if "stem.0.weight" in tensors:
        return "swiftformer"
    return None


def load_any(path, attention_generation=None):
    """(config, canonical tensors, metadata) from any supported source:

    * an npformer weight file (`.safetensors` with npformer metadata),
    * a transformers model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`),
    * an original (snap-research, Amshaker) or timm checkpoint (`.pth`, `.pt`, `.bin`, `.safetensors`).

    `attention_generation` ("v1" / "v2"): SwiftFormer only; required for original checkpoints,
    checked against what every other source says.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightFileError(f"{path}: a directory without config.json is not a transformers model directory")
        cfg, tensors, arch = load_transformers_dir(path, attention_generation)
        return cfg, tensors, make_metadata(cfg.model_type, arch, cfg.to_dict(), "transformers", path)
    if not path.exists():
        raise WeightFileError(f"{path}: no such file or directory")
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") == "npformer":
            return _load_npformer_file(path, tensors, metadata, attention_generation)
        state = tensors
    else:
        state = _read_state_dict(path)
    family, schema = detect_schema(state.keys(), str(path))
    if schema == "transformers":
        raise ConfigError(
            f"{path}: holds transformers-named tensors but no config; point npformer at the model directory "
            "(with config.json) instead of the weight file"
        )
    generation = _resolve_generation(family, schema, attention_generation, str(path))
    cfg = _config_from_tensors(state, family, schema, str(path), generation)
    heads = ("head.weight", "dist_head.weight" if schema == "original" else "head_dist.weight")
    num_heads = sum(h in state for h in heads)
    tensors = to_canonical(state, cfg, num_heads, schema, str(path))
    arch = ARCHITECTURE_FOR_HEADS[family][num_heads]
    return cfg, tensors, make_metadata(family, arch, cfg.to_dict(), schema, path)


def convert_checkpoint(src, dst, attention_generation=None) -> dict:
    """Convert any supported checkpoint to an npformer weight file at `dst`; returns its metadata.

    `attention_generation`: "v1" or "v2", needed for original SwiftFormer checkpoints only."""
    cfg, tensors, metadata = load_any(src, attention_generation)
    if variant_name(cfg):
        metadata["variant"] = variant_name(cfg)
    save_weights(dst, tensors, metadata)
    return metadata
