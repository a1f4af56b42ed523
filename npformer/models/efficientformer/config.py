"""EfficientFormer (V1)'s config: transformers 4.40.2's `EfficientFormerConfig`, field for field.

    >>> cfg = EfficientFormerConfig.variant("l3")
    >>> cfg.hidden_sizes, cfg.depths, cfg.num_meta3d_blocks
    ([64, 128, 320, 512], [4, 4, 12, 6], 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...errors import ConfigError
from ..configuration import SUPPORTED_ACTIVATIONS, ClassifierConfig, conv_out

# The published variants (paper Table 1; snap-research checkpoints `efficientformer-{l1,l3,l7}-300`).
VARIANTS = {
    "l1": dict(hidden_sizes=[48, 96, 224, 448], depths=[3, 2, 6, 4], num_meta3d_blocks=1),
    "l3": dict(hidden_sizes=[64, 128, 320, 512], depths=[4, 4, 12, 6], num_meta3d_blocks=4),
    "l7": dict(hidden_sizes=[96, 192, 384, 768], depths=[6, 6, 18, 8], num_meta3d_blocks=8),
}

MAX_RESOLUTION = 1024  # the last-stage grid side npformer checks; published models use 7


@dataclass
class EfficientFormerConfig(ClassifierConfig):
    """The architecture of an EfficientFormer (V1) model: transformers 4.40.2's fields and defaults.

    The defaults are L1's sizes with transformers' 2 labels; `EfficientFormerConfig.variant`
    gives the published variants with 1000. Fields marked "stored" are kept for round-trips and
    change nothing; training-only fields (dropout, drop path, initialisation) likewise.

    Parameters
    ----------
    depths : list of int, default [3, 2, 6, 4]
        Blocks per stage; the last stage's last `num_meta3d_blocks` are attention blocks.
    hidden_sizes : list of int, default [48, 96, 224, 448]
        Channels per stage.
    downsamples : list of bool, default [True, True, True, True]
        Whether a downsampling convolution leads into stages 1–3 (also when the widths differ).
    dim : int, default 448
        Width of the attention blocks; must equal `hidden_sizes[-1]`.
    key_dim : int, default 32
        Query and key channels per head.
    attention_ratio : int, default 4
        Value channels per head = `attention_ratio` · `key_dim`.
    resolution : int, default 7
        Side of the last stage's token grid, which the attention-bias table is built for
        (7 at 224 px: inputs of 193–224 px).
    num_attention_heads : int, default 8
        Heads of each attention block.
    mlp_expansion_ratio : int, default 4
        Hidden width of the MLPs, in multiples of the block's width.
    num_channels : int, default 3
        Input channels.
    pool_size : int, default 3
        Window of the pooling token mixer (odd; None means 3, as in transformers).
    downsample_patch_size : int, default 3
        Kernel of the downsampling convolutions.
    downsample_stride : int, default 2
        Stride of the downsampling convolutions.
    downsample_pad : int, default 1
        Padding of the downsampling convolutions.
    num_meta3d_blocks : int, default 1
        Attention (Meta3D) blocks at the end of the last stage, 1 … `depths[-1]`.
    use_layer_scale : bool, default True
        Whether the blocks scale their branches by learned per-channel factors.
    hidden_act : str, default "gelu"
        The MLPs' activation: "gelu", "relu", "gelu_new" or "gelu_pytorch_tanh".
    layer_norm_eps : float, default 1e-12
        transformers' LayerNorm eps; the original code and timm use 1e-5, which npformer sets
        for their checkpoints.
    batch_norm_eps : float, default 1e-5
        The BatchNorms' eps.
    hidden_size : int, optional
        Width of the heads of `...WithTeacher`; must equal `hidden_sizes[-1]` when given.
    attention_bias_resize : str, optional
        npformer's own field: None runs the built grid only; "pairwise" resizes the bias to
        each input's grid (see `npformer.load`).
    num_hidden_layers : int, default 5
        Stored, unused (as in transformers).
    patch_size : int, default 16
        Stored, unused.
    distillation : bool, default True
        Stored, unused: the class decides the heads.
    image_size : int, default 224
        Stored, unused: `resolution` fixes the input sizes.
    hidden_dropout_prob : float, default 0.0
        Training only.
    drop_path_rate : float, default 0.0
        Training only.
    layer_scale_init_value : float, default 1e-5
        Initialisation only.
    initializer_range : float, default 0.02
        Initialisation only.
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
        A field of the wrong type, or a combination npformer (or transformers) cannot run,
        named with the reason.

    Examples
    --------
    >>> cfg = EfficientFormerConfig.variant("l3")
    >>> cfg.hidden_sizes, cfg.depths, cfg.num_meta3d_blocks
    ([64, 128, 320, 512], [4, 4, 12, 6], 4)
    """

    model_type: ClassVar[str] = "efficientformer"
    list_fields: ClassVar[dict] = {"depths": "int", "hidden_sizes": "positive", "downsamples": "bool"}
    positive_fields: ClassVar[tuple] = ("key_dim", "attention_ratio", "num_attention_heads", "mlp_expansion_ratio",
                                        "num_channels", "downsample_patch_size", "downsample_stride", "resolution")
    non_negative_fields: ClassVar[tuple] = ("downsample_pad",)

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
    pool_size: int | None = 3  # transformers: None means 3
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
    # npformer's: how the forward fits the bias to another grid (None: the built grid only; see attention_bias.py)
    attention_bias_resize: str | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def variant(cls, name: str, **overrides) -> "EfficientFormerConfig":
        """The config of a published variant, with 1000 labels and transformers' LayerNorm eps 1e-12.

        Parameters
        ----------
        name : str
            "l1", "l3" or "l7" (also "efficientformer-l1", any case).
        **overrides
            Fields to set besides the variant's (e.g. `num_labels=10`).

        Returns
        -------
        EfficientFormerConfig
            The variant's config.

        Raises
        ------
        ConfigError
            An unknown variant name, or overrides the config refuses.
        """
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

    def summary(self) -> str:
        """The sizes that make this architecture what it is (for a config that is no published variant)."""
        blocks = self.num_meta3d_blocks
        return (f"hidden_sizes {self.hidden_sizes}, depths {self.depths}, "
                f"{blocks} attention block{'s' if blocks != 1 else ''}")

    @property
    def stage_widths(self) -> list[int]:
        """Channels of each stage."""
        return self.hidden_sizes

    @property
    def downsample_conv(self) -> tuple[int, int, int]:
        """(kernel, stride, padding) of the downsampling convolutions between stages."""
        return self.downsample_patch_size, self.downsample_stride, self.downsample_pad

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
        if self.resolution > MAX_RESOLUTION:
            raise ConfigError(f"resolution={self.resolution}: a last-stage grid of more than {MAX_RESOLUTION} per side "
                              "is not an EfficientFormer npformer can check (published models use 7)")
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
        side = conv_out(conv_out(side, 3, 2, 1), 3, 2, 1)
        for stage in (1, 2, 3):
            if self.has_downsample(stage):
                side = conv_out(side, self.downsample_patch_size, self.downsample_stride, self.downsample_pad)
        return side

    def input_side_range(self) -> tuple[int, int] | None:
        """(smallest, largest) input side whose last stage is resolution×resolution (None: no such side)."""
        ok = [s for s in range(1, 64 * self.resolution + 64) if self.last_stage_side(s) == self.resolution]
        return (min(ok), max(ok)) if ok else None
