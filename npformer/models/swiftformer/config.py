"""SwiftFormer's config: transformers 4.40.2's `SwiftFormerConfig`, field for field, plus the
attention generation the weights were trained with, which transformers does not have.

    >>> SwiftFormerConfig.variant("xs", attention_generation="v2").embed_dims
    [48, 56, 112, 220]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...errors import ConfigError
from ..configuration import SUPPORTED_ACTIVATIONS, ClassifierConfig

# SwiftFormer variants (Shaker et al. 2023, Table 1; checkpoints MBZUAI/swiftformer-*, timm swiftformer_*).
VARIANTS = {
    "xs": dict(embed_dims=[48, 56, 112, 220], depths=[3, 3, 6, 4]),
    "s": dict(embed_dims=[48, 64, 168, 224], depths=[3, 3, 9, 6]),
    "l1": dict(embed_dims=[48, 96, 192, 384], depths=[4, 3, 10, 5]),
    "l3": dict(embed_dims=[64, 128, 320, 512], depths=[4, 4, 12, 6]),
}

# SwiftFormer's two attention generations: they need different weights.
ATTENTION_GENERATIONS = {
    "v1": "softmax over a size-1 axis, so every weight is 1 (transformers; original release, March 2023)",
    "v2": "L2 normalisation over tokens (timm; original repo from 2023-07-26, retrained checkpoints)",
}


@dataclass
class SwiftFormerConfig(ClassifierConfig):
    """The architecture of a SwiftFormer model: transformers 4.40.2's fields and defaults, plus its attention generation.

    The defaults are XS's sizes with transformers' 2 labels; `SwiftFormerConfig.variant` gives the
    published variants with 1000. SwiftFormer takes any input size.

    Parameters
    ----------
    num_channels : int, default 3
        Input channels.
    depths : list of int, default [3, 3, 6, 4]
        Blocks per stage; each stage ends with one encoder (additive attention) block.
    embed_dims : list of int, default [48, 56, 112, 220]
        Channels per stage.
    mlp_ratio : int, default 4
        Hidden width of the MLPs, in multiples of the block's width.
    downsamples : list of bool, default [True, True, True, True]
        Whether a downsampling convolution leads into stages 1–3 (also when the widths differ).
    hidden_act : str, default "gelu"
        The MLPs' activation ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh"); the
        ConvEncoders always use GELU, as in transformers.
    down_patch_size : int, default 3
        Kernel of the downsampling convolutions.
    down_stride : int, default 2
        Stride of the downsampling convolutions.
    down_pad : int, default 1
        Padding of the downsampling convolutions.
    use_layer_scale : bool, default True
        Whether the encoder blocks scale their branches by learned per-channel factors.
    batch_norm_eps : float, default 1e-5
        The BatchNorms' eps.
    attention_generation : {"v1", "v2"}, default "v1"
        npformer's own field: which additive attention the weights were trained with. "v1"
        (transformers, the first original release) takes a softmax over a size-1 axis, so every
        weight is 1; "v2" (timm, the original repository from 2023-07-26) L2-normalises over the
        tokens. The two need different weights.
    drop_path_rate : float, default 0.0
        Training only.
    layer_scale_init_value : float, default 1e-5
        Initialisation only.
    image_size : int, optional
        Written by transformers 4.41 and later; stored, unused.
    drop_mlp_rate : float, optional
        Written by transformers 4.41 and later; training only.
    drop_conv_encoder_rate : float, optional
        Written by transformers 4.41 and later; training only.
    num_labels : int, default 2
        Classes (see `ClassifierConfig`).
    id2label : dict of int to str, optional
        Class names by index.
    problem_type : str, optional
        The loss `labels` get (see `ClassifierConfig`).
    extra : dict, optional
        Other config.json fields, kept for round-trips.

    Raises
    ------
    ConfigError
        A field of the wrong type or a value npformer cannot run, named with the reason.

    Examples
    --------
    >>> SwiftFormerConfig.variant("xs", attention_generation="v2").embed_dims
    [48, 56, 112, 220]
    """

    model_type: ClassVar[str] = "swiftformer"
    list_fields: ClassVar[dict] = {"depths": "int", "embed_dims": "positive", "downsamples": "bool"}
    positive_fields: ClassVar[tuple] = ("mlp_ratio", "num_channels", "down_patch_size", "down_stride")
    non_negative_fields: ClassVar[tuple] = ("down_pad",)

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
    # written by transformers 4.41 and later (TFSwiftFormer's release; None: not in the file, as 4.40.2
    # writes it); accepted because none of them changes inference
    image_size: int | None = None  # stored, unused (transformers: 224)
    drop_mlp_rate: float | None = None  # the MLPs' dropout: training only (transformers: 0.0)
    drop_conv_encoder_rate: float | None = None  # the ConvEncoders' dropout: training only (transformers: 0.0)

    LATER_FIELDS: ClassVar[tuple] = ("image_size", "drop_mlp_rate", "drop_conv_encoder_rate")

    @classmethod
    def variant(cls, name: str, attention_generation: str = "v1", **overrides) -> "SwiftFormerConfig":
        """The config of a published variant, with 1000 labels.

        Parameters
        ----------
        name : str
            "xs", "s", "l1" or "l3" (also "swiftformer-xs", any case).
        attention_generation : {"v1", "v2"}, default "v1"
            Which attention the weights need: "v1" for transformers' checkpoints, "v2" for timm's.
        **overrides
            Fields to set besides the variant's.

        Returns
        -------
        SwiftFormerConfig
            The variant's config.

        Raises
        ------
        ConfigError
            An unknown variant name, or overrides the config refuses.
        """
        key = name.lower().removeprefix("swiftformer-").removeprefix("swiftformer_")
        if key not in VARIANTS:
            raise ConfigError(f"unknown SwiftFormer variant {name!r}; known: {', '.join(VARIANTS)}")
        spec = dict(VARIANTS[key], num_labels=1000, attention_generation=attention_generation)
        return cls(**{**spec, **overrides})

    def to_dict(self) -> dict:
        """config.json's fields; those of later transformers only when the config has them."""
        return {k: v for k, v in super().to_dict().items() if not (k in self.LATER_FIELDS and v is None)}

    @property
    def width(self) -> int:
        """Channels of the last stage (the width the heads see)."""
        return self.embed_dims[-1]

    def summary(self) -> str:
        """The sizes that make this architecture what it is (for a config that is no published variant)."""
        return f"embed_dims {self.embed_dims}, depths {self.depths}"

    @property
    def stage_widths(self) -> list[int]:
        """Channels of each stage."""
        return self.embed_dims

    @property
    def downsample_conv(self) -> tuple[int, int, int]:
        """(kernel, stride, padding) of the downsampling convolutions between stages."""
        return self.down_patch_size, self.down_stride, self.down_pad

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
