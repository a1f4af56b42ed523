"""Converters: foreign EfficientFormer checkpoints → npformer's canonical weights.

Three key schemas describe the same tensors (spec §7.1); npformer's canonical names are timm's.

    canonical / timm                      transformers (…WithTeacher)                                original (snap-research)
    stem.conv1                            efficientformer.patch_embed.convolution1                   patch_embed.0
    stages.1.downsample.conv              efficientformer.encoder.intermediate_stages.1.projection   network.1.proj
    stages.0.blocks.2.mlp.fc1             ….intermediate_stages.0.meta4D_layers.blocks.2.mlp.convolution1  network.0.2.mlp.fc1
    stages.3.blocks.4.token_mixer.proj    ….last_stage.meta3D_layers.blocks.0.token_mixer.projection network.6.4.token_mixer.proj
    stages.3.blocks.4.ls1.gamma           ….last_stage.meta3D_layers.blocks.0.layer_scale_1          network.6.4.layer_scale_1
    norm / head / head_dist               efficientformer.layernorm / classifier / distillation_classifier  norm / head / dist_head

Each schema is written once, as a map from canonical tensor names to foreign names built from the
config; converting is a lookup in its inverse. Derived buffers are checked, then dropped:
`attention_bias_idxs` must equal the |Δrow|·R + |Δcol| table npformer computes, and
`num_batches_tracked` is unused at inference.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .config import VARIANTS, EfficientFormerConfig
from .efficientformer import ARCHITECTURES, block_names, weight_schema
from .errors import CheckpointMismatchError, ConfigError, WeightFileError
from .layers import attention_bias_index
from .weights import check_tensors, load_weights, make_metadata, metadata_config, read_safetensors, save_weights

HEAD_COUNT = {
    "EfficientFormerModel": 0,
    "EfficientFormerForImageClassification": 1,
    "EfficientFormerForImageClassificationWithTeacher": 2,
}
ARCHITECTURE_FOR_HEADS = {n: a for a, n in HEAD_COUNT.items()}

# per-module renames of the tensor names below a module (canonical -> foreign), first match wins
_HF_META4D = [("mlp.fc1", "mlp.convolution1"), ("mlp.norm1", "mlp.batchnorm_before"), ("mlp.fc2", "mlp.convolution2"),
              ("mlp.norm2", "mlp.batchnorm_after"), ("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")]
_HF_META3D = [("norm1", "layernorm1"), ("norm2", "layernorm2"), ("token_mixer.proj", "token_mixer.projection"),
              ("mlp.fc1", "mlp.linear_in"), ("mlp.fc2", "mlp.linear_out"), ("ls1.gamma", "layer_scale_1"),
              ("ls2.gamma", "layer_scale_2")]
_HF_DOWN = [("conv", "projection")]
_ORIGINAL_BLOCK = [("ls1.gamma", "layer_scale_1"), ("ls2.gamma", "layer_scale_2")]


def _hf_modules(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
    """canonical module -> (transformers module, renames below it)."""
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
            m[f"stages.{stage}.downsample"] = (f"{enc}.intermediate_stages.{idx}", _HF_DOWN)
            idx += 1
        meta4d = meta3d = 0
        for kind, name in block_names(cfg, stage):
            if kind == "meta4d":
                where = f"intermediate_stages.{idx}" if stage < 3 else "last_stage"
                m[name] = (f"{enc}.{where}.meta4D_layers.blocks.{meta4d}", _HF_META4D)
                meta4d += 1
            elif kind == "meta3d":
                m[name] = (f"{enc}.last_stage.meta3D_layers.blocks.{meta3d}", _HF_META3D)
                meta3d += 1
        idx += stage < 3
    return m


def _original_modules(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
    """canonical module -> (snap-research module, renames below it)."""
    m = {
        "stem.conv1": ("patch_embed.0", []), "stem.norm1": ("patch_embed.1", []),
        "stem.conv2": ("patch_embed.3", []), "stem.norm2": ("patch_embed.4", []),
        "norm": ("norm", []), "head": ("head", []), "head_dist": ("dist_head", []),
    }
    for stage in range(4):
        if stage > 0:
            m[f"stages.{stage}.downsample"] = (f"network.{2 * stage - 1}", [("conv", "proj")])
        for kind, name in block_names(cfg, stage):
            if kind != "flat":
                m[name] = (f"network.{2 * stage}.{name.rsplit('.', 1)[1]}", _ORIGINAL_BLOCK)
    return m


def _timm_modules(cfg: EfficientFormerConfig) -> dict[str, tuple[str, list]]:
    """timm's names are the canonical names."""
    return {"": ("", [])}


SCHEMAS = {"transformers": _hf_modules, "original": _original_modules, "timm": _timm_modules}


def foreign_names(cfg: EfficientFormerConfig, num_heads: int, schema: str) -> dict[str, str]:
    """{canonical tensor name: its name in `schema`} for every tensor of the model."""
    modules = SCHEMAS[schema](cfg)
    prefixes = sorted(modules, key=len, reverse=True)
    out = {}
    for name in weight_schema(cfg, num_heads):
        prefix = next(p for p in prefixes if p == "" or name.startswith(p + "."))
        target, renames = modules[prefix]
        rest = name[len(prefix) + 1 :] if prefix else name
        for canon, foreign in renames:
            if rest == canon or rest.startswith(canon + "."):
                rest = foreign + rest[len(canon) :]
                break
        out[name] = f"{target}.{rest}" if target else rest
    return out


def to_canonical(state: dict, cfg: EfficientFormerConfig, num_heads: int, schema: str, source: str) -> dict:
    """Rename a foreign state dict to canonical names; check and drop the derived buffers.

    Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.
    """
    names = foreign_names(cfg, num_heads, schema)
    inverse = {foreign: canon for canon, foreign in names.items()}
    idx = attention_bias_index(cfg.resolution)
    tensors, unexpected = {}, []
    for key, value in state.items():
        if key in inverse:
            tensors[inverse[key]] = np.asarray(value, dtype=np.float32)
        elif key.endswith(".num_batches_tracked"):
            continue
        elif key.endswith(".attention_bias_idxs"):
            if tuple(value.shape) != idx.shape or not np.array_equal(value, idx):
                raise CheckpointMismatchError(
                    f"{source}: {key} is not the |Δrow|·{cfg.resolution} + |Δcol| index table npformer uses "
                    f"(shape {tuple(value.shape)}); the attention biases would be scrambled"
                )
        else:
            unexpected.append(key)
    check_tensors({**tensors, **{k: np.zeros(0) for k in unexpected}}, weight_schema(cfg, num_heads), source)
    return tensors


# ---------------------------------------------------------------------------------------------
# reading whole checkpoints


def _config_from_tensors(state: dict, schema: str, source: str) -> EfficientFormerConfig:
    """Infer an original / timm checkpoint's config from its tensor shapes (they carry no config).

    Both use PyTorch's LayerNorm eps 1e-5 (transformers uses 1e-12)."""
    stem, down, block = {
        "original": ("patch_embed.3.weight", "network.{}.proj.weight", r"network\.{}\.(\d+)\."),
        "timm": ("stem.conv2.weight", "stages.{}.downsample.conv.weight", r"stages\.{}\.blocks\.(\d+)\."),
    }[schema]
    down_key = (lambda s: down.format(2 * s - 1)) if schema == "original" else (lambda s: down.format(s))
    block_stage = (lambda s: 2 * s) if schema == "original" else (lambda s: s)
    try:
        widths = [int(state[stem].shape[0])] + [int(state[down_key(s)].shape[0]) for s in (1, 2, 3)]
    except KeyError as err:
        raise CheckpointMismatchError(f"{source}: not a {schema} EfficientFormer checkpoint (no {err.args[0]})") from None
    depths, meta3d = [], 0
    for s in range(4):
        pattern = re.compile(block.format(block_stage(s)))
        indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        if s == 3:
            meta3d = len({int(m.group(1)) for k in state if (m := pattern.match(k)) and ".token_mixer.qkv." in k})
        depths.append(len(indices))
    head = state.get("head.weight")
    cfg = dict(hidden_sizes=widths, depths=depths, num_meta3d_blocks=meta3d, dim=widths[-1], hidden_size=widths[-1],
               layer_norm_eps=1e-5, num_labels=int(head.shape[0]) if head is not None else 1000)
    return EfficientFormerConfig(**cfg)


def variant_name(cfg: EfficientFormerConfig) -> str | None:
    for name, spec in VARIANTS.items():
        if all(getattr(cfg, k) == v for k, v in spec.items()):
            return name
    return None


def _read_state_dict(path: Path) -> dict:
    """A flat {name: array} from a .safetensors, .bin, .pth or .pt file (no torch, no code run)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    from .torchfile import flatten_state_dict, load_torch_file

    return flatten_state_dict(load_torch_file(path), path)


def load_transformers_dir(path: Path):
    """(config, canonical tensors, architecture) from a directory written by `save_pretrained`."""
    cfg = EfficientFormerConfig.from_json_file(path / "config.json")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if (path / filename).is_file():
            state = _read_state_dict(path / filename)
            break
    else:
        raise WeightFileError(f"{path}: has config.json but neither model.safetensors nor pytorch_model.bin")
    if any(k.startswith(("patch_embed.", "encoder.")) for k in state):  # saved from the bare EfficientFormerModel
        state = {f"efficientformer.{k}": v for k, v in state.items()}
    num_heads = ("classifier.weight" in state) + ("distillation_classifier.weight" in state)
    if cfg.num_labels == 0:
        num_heads = {"EfficientFormerForImageClassificationWithTeacher": 2, "EfficientFormerForImageClassification": 1}.get(
            (cfg.extra.get("architectures") or [""])[0], 0)
    if cfg.hidden_size is None and num_heads == 2:
        cfg.hidden_size = cfg.width
    source = str(path)
    return cfg, to_canonical(state, cfg, num_heads, "transformers", source), ARCHITECTURE_FOR_HEADS[num_heads]


def load_original_checkpoint(path: Path, state: dict, schema: str = "original"):
    """(config, canonical tensors, architecture) from a snap-research `.pth` (or a timm checkpoint)."""
    cfg = _config_from_tensors(state, schema, str(path))
    heads = ("head", "dist_head" if schema == "original" else "head_dist")
    num_heads = sum(f"{h}.weight" in state for h in heads)
    return cfg, to_canonical(state, cfg, num_heads, schema, str(path)), ARCHITECTURE_FOR_HEADS[num_heads]


def detect_schema(state_keys) -> str:
    keys = set(state_keys)
    if "patch_embed.0.weight" in keys:
        return "original"
    if "stem.conv1.weight" in keys:
        return "timm"
    if any(k.startswith(("efficientformer.", "patch_embed.convolution1")) for k in keys):
        return "transformers"
    raise CheckpointMismatchError(
        "not an EfficientFormer checkpoint npformer knows: expected transformers keys (efficientformer.…), "
        "original keys (patch_embed.0.…, network.…) or timm keys (stem.conv1.…)"
    )


def load_any(path):
    """(config, canonical tensors, metadata) from any supported source:

    * an npformer weight file (`.safetensors` with npformer metadata),
    * a transformers model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`),
    * an original snap-research or timm checkpoint (`.pth`, `.pt`, `.bin`, `.safetensors`).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightFileError(f"{path}: a directory without config.json is not a transformers model directory")
        cfg, tensors, arch = load_transformers_dir(path)
        return cfg, tensors, make_metadata("efficientformer", arch, cfg.to_dict(), "transformers", path)
    if not path.exists():
        raise WeightFileError(f"{path}: no such file or directory")
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") == "npformer":
            tensors, metadata = load_weights(path)
            cfg = EfficientFormerConfig.from_dict(metadata_config(metadata), source=f"{path} (metadata config)")
            arch = metadata.get("architecture", "")
            if arch not in ARCHITECTURES:
                raise WeightFileError(f"{path}: metadata architecture {arch!r} is not one of {sorted(ARCHITECTURES)}")
            check_tensors(tensors, weight_schema(cfg, HEAD_COUNT[arch]), str(path))
            return cfg, tensors, metadata
    state = _read_state_dict(path)
    schema = detect_schema(state.keys())
    if schema == "transformers":
        raise ConfigError(
            f"{path}: holds transformers-named tensors but no config; point npformer at the model directory "
            "(with config.json) instead of the weight file"
        )
    cfg, tensors, arch = load_original_checkpoint(path, state, schema)
    return cfg, tensors, make_metadata("efficientformer", arch, cfg.to_dict(), schema, path)


def convert_checkpoint(src, dst) -> dict:
    """Convert any supported checkpoint to an npformer weight file at `dst`; returns its metadata."""
    cfg, tensors, metadata = load_any(src)
    if variant_name(cfg):
        metadata["variant"] = variant_name(cfg)
    save_weights(dst, tensors, metadata)
    return metadata
