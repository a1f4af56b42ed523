"""Model configurations: transformers' `config.json`, read and written.

`EfficientFormerConfig` and `SwiftFormerConfig` carry every field of transformers 4.40.2's
classes of the same names, with the same code defaults, plus the generic `PretrainedConfig`
fields that matter to a classifier (`num_labels`, `id2label`, `problem_type`, ...). Each
architecture field is either honoured by npformer's forward pass or rejected with a message
saying why; training-only fields (dropout, drop-path, init) are kept so that a config round-trips.

    >>> cfg = EfficientFormerConfig.variant("l3")
    >>> cfg.hidden_sizes, cfg.depths, cfg.num_meta3d_blocks
    ([64, 128, 320, 512], [4, 4, 12, 6], 4)
"""

from __future__ import annotations

import copy
import functools
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar
from pathlib import Path

from .errors import ConfigError

# The published variants (paper Table 1; snap-research checkpoints `efficientformer-{l1,l3,l7}-300`).
VARIANTS = {
    "l1": dict(hidden_sizes=[48, 96, 224, 448], depths=[3, 2, 6, 4], num_meta3d_blocks=1),
    "l3": dict(hidden_sizes=[64, 128, 320, 512], depths=[4, 4, 12, 6], num_meta3d_blocks=4),
    "l7": dict(hidden_sizes=[96, 192, 384, 768], depths=[6, 6, 18, 8], num_meta3d_blocks=8),
}

# SwiftFormer variants (Shaker et al. 2023, Table 1; checkpoints MBZUAI/swiftformer-*, timm swiftformer_*).
SWIFTFORMER_VARIANTS = {
    "xs": dict(embed_dims=[48, 56, 112, 220], depths=[3, 3, 6, 4]),
    "s": dict(embed_dims=[48, 64, 168, 224], depths=[3, 3, 9, 6]),
    "l1": dict(embed_dims=[48, 96, 192, 384], depths=[4, 3, 10, 5]),
    "l3": dict(embed_dims=[64, 128, 320, 512], depths=[4, 4, 12, 6]),
}

# SwiftFormer's two attention generations (spec §4.2): they need different weights.
ATTENTION_GENERATIONS = {
    "v1": "softmax over a size-1 axis, so every weight is 1 (transformers; original release, March 2023)",
    "v2": "L2 normalisation over tokens (timm; original repo from 2023-07-26, retrained checkpoints)",
}

# Activations transformers' ACT2FN offers that npformer implements (see layers.py).
SUPPORTED_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")

# Generic PretrainedConfig fields that do not change an image classifier's numbers: kept verbatim.
_PASSTHROUGH = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "_name_or_path",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "finetuning_task", "tokenizer_class", "prefix", "bos_token_id",
    "pad_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id",
    "task_specific_params", "label2id", "_commit_hash", "_attn_implementation_internal",
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(value, hint) -> str | None:
    """Why `value` (from JSON or a caller) does not fit a field annotated `hint`; None if it does."""
    if isinstance(hint, types.UnionType):  # X | None
        return None if any(_type_problem(value, h) is None for h in hint.__args__) else f"expected {hint}"
    if hint is type(None):
        return None if value is None else "expected None"
    if hint is int:
        return None if _is_int(value) else "expected an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "expected a number"
    if hint in (bool, str, list, dict):
        return None if isinstance(value, hint) else f"expected a {hint.__name__}"
    return None


# list fields: what each entry must be
_LIST_ENTRIES = {"depths": "int", "hidden_sizes": "positive", "embed_dims": "positive", "downsamples": "bool"}
# integer fields that must be >= 1 (sizes, counts, strides) or >= 0 (paddings)
_POSITIVE = ("key_dim", "attention_ratio", "num_attention_heads", "mlp_expansion_ratio", "mlp_ratio", "num_channels",
             "downsample_patch_size", "downsample_stride", "down_patch_size", "down_stride", "resolution")
_NON_NEGATIVE = ("downsample_pad", "down_pad")
MAX_RESOLUTION = 1024  # EfficientFormer's last-stage grid side; published models use 7


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _conv_out(side: int, kernel: int, stride: int, pad: int) -> int:
    """Output side of a convolution (or pooling) along one axis."""
    return (side + 2 * pad - kernel) // stride + 1


@dataclass
class ClassifierConfig:
    """Fields and plumbing shared by the families: labels, problem type, and config.json I/O."""

    model_type: ClassVar[str] = ""
    num_labels: int = 2
    id2label: dict | None = None
    problem_type: str | None = None
    extra: dict = field(default_factory=dict)  # everything else from config.json, round-tripped

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        """Build from a transformers-style dict; `source` names the file in error messages."""
        d = copy.deepcopy(d)
        model_type = d.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        known = {f.name for f in fields(cls)} - {"extra", "num_labels", "id2label"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        # transformers: id2label decides num_labels; without it num_labels defaults to 2
        id2label = d.pop("id2label", None)
        num_labels = d.pop("num_labels", None)
        if id2label is not None:
            try:
                kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(f"{source}: id2label must map class indices to names, got {id2label!r:.80}") from None
            kwargs["num_labels"] = len(id2label)
        elif num_labels is not None:
            kwargs["num_labels"] = num_labels
        for key in list(d):
            if key not in _PASSTHROUGH:
                raise ConfigError(
                    f"{source}: field {key!r} is not one of {cls.__name__}'s fields, and npformer "
                    "cannot tell whether it changes the model; remove it or report it"
                )
        try:
            return cls(**kwargs, extra=d)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        except TypeError as err:  # a field of the wrong type
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_json_file(cls, path):
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not a readable JSON config ({err})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        """A transformers-compatible `config.json` dict."""
        d = asdict(self)
        extra = d.pop("extra")
        if d["id2label"] is not None:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
        else:
            del d["id2label"]
        d = {k: v for k, v in d.items() if not (k == "hidden_size" and v is None)}
        d.update(extra)
        d["model_type"] = self.model_type
        return d

    def to_json_file(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def check_types(self) -> None:
        """Every field of the type its annotation says, list entries and sizes in range: what the
        checks below and the weight schema take for granted (a config.json can hold anything)."""
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            hint = int | None if f.name == "pool_size" else hints[f.name]  # transformers: pool_size None means 3
            problem = _type_problem(value, hint)
            if problem:
                raise ConfigError(f"{f.name}={value!r}: {problem}")
            entries = _LIST_ENTRIES.get(f.name)
            if entries == "bool" and not all(isinstance(v, bool) or v in (0, 1) for v in value):
                raise ConfigError(f"{f.name}={value!r}: expected true/false entries")
            if entries in ("int", "positive") and not all(_is_int(v) and v >= (entries == "positive") for v in value):
                raise ConfigError(f"{f.name}={value!r}: expected {'positive' if entries == 'positive' else 'non-negative'} "
                                  "integer entries")
            if f.name in _POSITIVE and value is not None and value < 1:
                raise ConfigError(f"{f.name}={value!r} must be >= 1")
            if f.name in _NON_NEGATIVE and value < 0:
                raise ConfigError(f"{f.name}={value!r} must be >= 0")
        if getattr(self, "resolution", 1) > MAX_RESOLUTION:
            raise ConfigError(f"resolution={self.resolution}: a last-stage grid of more than {MAX_RESOLUTION} per side "
                              "is not an EfficientFormer npformer can check (published models use 7)")
        if self.id2label is not None and not all(_is_int(k) for k in self.id2label):
            raise ConfigError(f"id2label keys must be class indices, got {sorted(map(repr, self.id2label))[:5]}")

    def validate(self) -> None:
        self.check_types()
        if self.num_labels < 0:
            raise ConfigError(f"num_labels={self.num_labels} must be >= 0")
        if self.problem_type not in (None, "regression", "single_label_classification", "multi_label_classification"):
            raise ConfigError(f"problem_type={self.problem_type!r} is not one transformers understands")
        if not 0 < self.batch_norm_eps < float("inf"):
            raise ConfigError(f"batch_norm_eps={self.batch_norm_eps} must be > 0 and finite")


@dataclass
class EfficientFormerConfig(ClassifierConfig):
    """Architecture of an EfficientFormer (V1) model; field names and defaults as transformers 4.40.2."""

    model_type: ClassVar[str] = "efficientformer"

    depths: list = field(default_factory=lambda: [3, 2, 6, 4])
    hidden_sizes: list = field(default_factory=lambda: [48, 96, 224, 448])
    downsamples: list = field(default_factory=lambda: [True, True, True, True])
    dim: int = 448  # width of the Meta3D attention; must equal hidden_sizes[-1]
    key_dim: int = 32
    attention_ratio: int = 4  # value dim = attention_ratio * key_dim
    resolution: int = 7  # side of the last stage's token grid; fixes the attention-bias table
    num_hidden_layers: int = 5  # stored, unused (as in transformers)
    num_attention_heads: int = 8
    mlp_expansion_ratio: int = 4
    hidden_dropout_prob: float = 0.0  # training only
    patch_size: int = 16  # stored, unused (as in transformers)
    num_channels: int = 3
    pool_size: int = 3
    downsample_patch_size: int = 3
    downsample_stride: int = 2
    downsample_pad: int = 1
    drop_path_rate: float = 0.0  # training only
    num_meta3d_blocks: int = 1
    distillation: bool = True  # stored, unused (as in transformers)
    use_layer_scale: bool = True
    layer_scale_init_value: float = 1e-5  # initialisation only
    hidden_act: str = "gelu"
    initializer_range: float = 0.02  # initialisation only
    layer_norm_eps: float = 1e-12  # transformers' value; the original repo and timm use 1e-5
    image_size: int = 224  # stored, unused (as in transformers)
    batch_norm_eps: float = 1e-5
    hidden_size: int | None = None  # WithTeacher sizes its heads with it; must equal hidden_sizes[-1]

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def variant(cls, name: str, **overrides) -> "EfficientFormerConfig":
        """A named published variant: "l1", "l3" or "l7" (transformers' layer-norm eps 1e-12)."""
        key = name.lower().removeprefix("efficientformer-").removeprefix("efficientformer_")
        if key not in VARIANTS:
            raise ConfigError(f"unknown EfficientFormer variant {name!r}; known: {', '.join(VARIANTS)}")
        spec = dict(VARIANTS[key])
        width = spec["hidden_sizes"][-1]
        spec.update(dim=width, hidden_size=width, num_labels=1000)
        spec.update(overrides)
        return cls(**spec)

    # -- derived quantities -------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Channels of the last stage (the width the heads see)."""
        return self.hidden_sizes[-1]

    @property
    def num_meta4d_last_stage(self) -> int:
        """Pooling (Meta4D) blocks that precede the attention blocks in the last stage."""
        return self.depths[-1] - self.num_meta3d_blocks

    def has_downsample(self, stage: int) -> bool:
        """Whether a downsampling embedding leads into `stage` (1..3), as transformers decides."""
        return bool(self.downsamples[stage - 1]) or self.hidden_sizes[stage - 1] != self.hidden_sizes[stage]

    def validate(self) -> None:
        """Reject configs npformer (or transformers itself) cannot run, saying which field and why."""
        super().validate()
        if len(self.depths) != 4 or len(self.hidden_sizes) != 4:
            raise ConfigError(
                f"depths and hidden_sizes must have 4 entries (4 stages), got {self.depths} and {self.hidden_sizes}"
            )
        if len(self.downsamples) < 3:
            raise ConfigError(f"downsamples needs an entry per stage transition, got {self.downsamples}")
        if any(int(d) < 1 for d in self.depths[:3]) or self.depths[-1] < 0:
            raise ConfigError(f"depths must be positive, got {self.depths}")
        if self.num_meta3d_blocks == 0:
            raise ConfigError(
                "num_meta3d_blocks=0 has no reference to match: transformers 4.40.2 then returns the first "
                "batch item's tokens as the last stage's output (its encoder indexes a tensor it expects to "
                "be a tuple), so npformer refuses rather than guess"
            )
        if not 1 <= self.num_meta3d_blocks <= self.depths[-1]:
            raise ConfigError(
                f"num_meta3d_blocks={self.num_meta3d_blocks} must lie in 1..depths[-1]={self.depths[-1]}"
            )
        if self.dim != self.width:
            raise ConfigError(
                f"dim={self.dim} must equal hidden_sizes[-1]={self.width}: transformers builds the "
                "attention with `dim` and the blocks around it with hidden_sizes[-1]"
            )
        if self.hidden_size is not None and self.hidden_size != self.width:
            raise ConfigError(f"hidden_size={self.hidden_size} must equal hidden_sizes[-1]={self.width}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act={self.hidden_act!r} is not supported; npformer implements {SUPPORTED_ACTIVATIONS}"
            )
        if self.pool_size is not None and (self.pool_size < 1 or self.pool_size % 2 == 0):
            raise ConfigError(f"pool_size={self.pool_size} must be odd (the pooling keeps the spatial size)")
        if not 0 < self.layer_norm_eps < float("inf"):
            raise ConfigError(f"layer_norm_eps={self.layer_norm_eps} must be > 0 and finite")
        if self.input_side_range() is None:
            raise ConfigError(
                f"no input size gives the {self.resolution}×{self.resolution} last stage that "
                f"resolution={self.resolution} asks for (check the downsample_* fields)"
            )

    # -- input size ---------------------------------------------------------------------------

    def last_stage_side(self, side: int) -> int:
        """Side of the last stage's feature map for an input side (stem /4, then three downsamples)."""
        side = _conv_out(_conv_out(side, 3, 2, 1), 3, 2, 1)
        for stage in (1, 2, 3):
            if self.has_downsample(stage):
                side = _conv_out(side, self.downsample_patch_size, self.downsample_stride, self.downsample_pad)
        return side

    def input_side_range(self) -> tuple[int, int] | None:
        """(smallest, largest) input side whose last stage is resolution×resolution (None: no such side)."""
        ok = [s for s in range(1, 64 * self.resolution + 64) if self.last_stage_side(s) == self.resolution]
        return (min(ok), max(ok)) if ok else None


@dataclass
class SwiftFormerConfig(ClassifierConfig):
    """Architecture of a SwiftFormer model; field names and defaults as transformers 4.40.2, plus
    `attention_generation` ("v1" or "v2"), which transformers does not have (it is always v1)."""

    model_type: ClassVar[str] = "swiftformer"

    num_channels: int = 3
    depths: list = field(default_factory=lambda: [3, 3, 6, 4])
    embed_dims: list = field(default_factory=lambda: [48, 56, 112, 220])
    mlp_ratio: int = 4
    downsamples: list = field(default_factory=lambda: [True, True, True, True])
    hidden_act: str = "gelu"  # the MLP's activation; ConvEncoders always use GELU (as transformers)
    down_patch_size: int = 3
    down_stride: int = 2
    down_pad: int = 1
    drop_path_rate: float = 0.0  # training only
    use_layer_scale: bool = True  # transformers: only the encoder block's two scales depend on it
    layer_scale_init_value: float = 1e-5  # initialisation only
    batch_norm_eps: float = 1e-5
    attention_generation: str = "v1"  # npformer's: which additive attention the weights were trained with

    @classmethod
    def variant(cls, name: str, attention_generation: str = "v1", **overrides) -> "SwiftFormerConfig":
        """A named variant: "xs", "s", "l1" or "l3"; 1000 classes."""
        key = name.lower().removeprefix("swiftformer-").removeprefix("swiftformer_")
        if key not in SWIFTFORMER_VARIANTS:
            raise ConfigError(f"unknown SwiftFormer variant {name!r}; known: {', '.join(SWIFTFORMER_VARIANTS)}")
        spec = dict(SWIFTFORMER_VARIANTS[key], num_labels=1000, attention_generation=attention_generation)
        return cls(**{**spec, **overrides})

    @property
    def width(self) -> int:
        return self.embed_dims[-1]

    def has_downsample(self, stage: int) -> bool:
        """Whether a downsampling embedding leads into `stage` (1..3), as transformers decides."""
        return bool(self.downsamples[stage - 1]) or self.embed_dims[stage - 1] != self.embed_dims[stage]

    def validate(self) -> None:
        super().validate()
        if len(self.depths) != 4 or len(self.embed_dims) != 4:
            raise ConfigError(f"depths and embed_dims must have 4 entries, got {self.depths} and {self.embed_dims}")
        if len(self.downsamples) < 3:
            raise ConfigError(f"downsamples needs an entry per stage transition, got {self.downsamples}")
        if any(int(d) < 1 for d in self.depths):
            raise ConfigError(f"every stage needs at least its attention block: depths={self.depths}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act={self.hidden_act!r} is not supported; npformer implements {SUPPORTED_ACTIVATIONS}"
            )
        if self.attention_generation not in ATTENTION_GENERATIONS:
            raise ConfigError(
                f"attention_generation={self.attention_generation!r}; it must be 'v1' "
                f"({ATTENTION_GENERATIONS['v1']}) or 'v2' ({ATTENTION_GENERATIONS['v2']})"
            )
