"""EfficientFormerV2's config: the arguments of timm's `EfficientFormerV2` (there is no transformers
port), plus the attention sizes timm fixes in code, with the published variants.

    >>> cfg = EfficientFormerV2Config.variant("s1")
    >>> cfg.widths, cfg.depths, cfg.num_vit
    ([32, 48, 120, 224], [3, 3, 9, 6], 2)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

from ...errors import ConfigError
from ..configuration import ClassifierConfig

# The published variants (Li et al. 2023, Table 2; timm `efficientformerv2_{s0,s1,s2,l}`): stage widths,
# blocks per stage, attention blocks closing stages 2 and 3, and each block's MLP expansion ratio.
VARIANTS = {
    "s0": dict(widths=[32, 48, 96, 176], depths=[2, 2, 6, 4], num_vit=2,
               mlp_ratios=[[4, 4], [4, 4], [4, 3, 3, 3, 4, 4], [4, 3, 3, 4]]),
    "s1": dict(widths=[32, 48, 120, 224], depths=[3, 3, 9, 6], num_vit=2,
               mlp_ratios=[[4] * 3, [4] * 3, [4, 4, 3, 3, 3, 3, 4, 4, 4], [4, 4, 3, 3, 4, 4]]),
    "s2": dict(widths=[32, 64, 144, 288], depths=[4, 4, 12, 8], num_vit=4,
               mlp_ratios=[[4] * 4, [4] * 4, [4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 3, 3, 3, 3, 4, 4]]),
    "l": dict(widths=[40, 80, 192, 384], depths=[5, 5, 15, 10], num_vit=6,
              mlp_ratios=[[4] * 5, [4] * 5, [4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 4, 3, 3, 3, 3, 4, 4, 4]]),
}

MAX_IMAGE_SIDE = 1024  # the largest built input side npformer checks; published models use 224


def halve(side: int) -> int:
    """A side after one stride-2 step (3×3 convolution with padding 1, or every other pixel): ⌈side/2⌉."""
    return -(-side // 2)


@dataclass
class EfficientFormerV2Config(ClassifierConfig):
    """The architecture of an EfficientFormerV2 model: timm's `EfficientFormerV2` arguments.

    There is no transformers port. timm's names: `widths` = embed_dims, `image_size` = img_size,
    `num_channels` = in_chans, `num_labels` = num_classes, `batch_norm_eps` = norm_eps. The
    defaults are S0's, with 1000 labels.

    Parameters
    ----------
    num_labels : int, default 1000
        Classes (timm's num_classes).
    widths : list of int, default [32, 48, 96, 176]
        Channels per stage.
    depths : list of int, default [2, 2, 6, 4]
        Blocks per stage.
    mlp_ratios : list of list of float, default S0's
        Each block's MLP expansion ratio, one list per stage.
    num_vit : int, default 2
        Attention (AttnFFN) blocks closing stage 2 and closing stage 3, each.
    key_dim : int, default 32
        The blocks' attention: query and key channels per head.
    num_heads : int, default 8
        Heads of both attentions.
    attn_ratio : int, default 4
        Value channels per head = `attn_ratio` · key channels, in both attentions.
    downsample_key_dim : int, default 16
        Stage 3's downsampling attention: query and key channels per head.
    image_size : int or list of int, default 224
        The input side (or [H, W]) the model is built for: it sizes the bias tables. Inputs
        must give the same stage-2 grid (209–224 px per side at 224), and the stage-2 grid
        (⌈side / 16⌉) must be even.
    num_channels : int, default 3
        Input channels.
    hidden_act : str, default "gelu"
        The only activation EfficientFormerV2 has.
    batch_norm_eps : float, default 1e-5
        The only value any reference defines.
    distillation : bool, default True
        Whether the model has the distillation head `head_dist`.
    attention_bias_resize : str, optional
        npformer's own field: None runs the built grid only; "pairwise" resizes the biases to
        each input's grid (see `npformer.load`).
    drop_path_rate : float, default 0.0
        Training only.
    layer_scale_init_value : float, default 1e-5
        Initialisation only.
    id2label : dict of int to str, optional
        Class names by index.
    problem_type : str, optional
        The loss `labels` get (see `ClassifierConfig`).
    extra : dict, optional
        Other config.json fields, kept for round-trips.

    Raises
    ------
    ConfigError
        A field of the wrong type or a value npformer (or timm) cannot run, named with the
        reason.

    Examples
    --------
    >>> cfg = EfficientFormerV2Config.variant("s1")
    >>> cfg.widths, cfg.depths, cfg.num_vit
    ([32, 48, 120, 224], [3, 3, 9, 6], 2)
    """

    model_type: ClassVar[str] = "efficientformerv2"
    list_fields: ClassVar[dict] = {"widths": "positive", "depths": "positive"}
    positive_fields: ClassVar[tuple] = ("key_dim", "num_heads", "attn_ratio", "downsample_key_dim", "num_channels")
    non_negative_fields: ClassVar[tuple] = ("num_vit",)

    num_labels: int = 1000  # timm's num_classes default
    widths: list = field(default_factory=lambda: [32, 48, 96, 176])
    depths: list = field(default_factory=lambda: [2, 2, 6, 4])
    mlp_ratios: list = field(default_factory=lambda: copy.deepcopy(VARIANTS["s0"]["mlp_ratios"]))  # per stage, per block
    num_vit: int = 2  # attention blocks at the end of stage 2 and of stage 3
    key_dim: int = 32  # the blocks' attention: query / key channels per head
    num_heads: int = 8  # heads of both attentions
    attn_ratio: int = 4  # value channels per head = attn_ratio · key dim, in both attentions
    downsample_key_dim: int = 16  # stage 3's downsampling attention: query / key channels per head
    image_size: int | list = 224  # the input side (or [H, W]) the model is built for: it sizes the bias tables
    num_channels: int = 3
    hidden_act: str = "gelu"  # the only activation EfficientFormerV2 has (stem, MLPs, attention)
    batch_norm_eps: float = 1e-5
    distillation: bool = True  # whether the model has the distillation head `head_dist`
    drop_path_rate: float = 0.0  # training only (timm: S2 0.02, L 0.1)
    layer_scale_init_value: float = 1e-5  # initialisation only
    # npformer's: how the forward fits the biases to another grid (None: the built grid only; see attention_bias.py)
    attention_bias_resize: str | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def variant(cls, name: str, **overrides) -> "EfficientFormerV2Config":
        """The config of a published variant, with 1000 labels, built for 224×224.

        Parameters
        ----------
        name : str
            "s0", "s1", "s2" or "l" (also "efficientformerv2-s0", any case).
        **overrides
            Fields to set besides the variant's (e.g. `image_size=256`).

        Returns
        -------
        EfficientFormerV2Config
            The variant's config.

        Raises
        ------
        ConfigError
            An unknown variant name, or overrides the config refuses.
        """
        key = name.lower().removeprefix("efficientformerv2-").removeprefix("efficientformerv2_")
        if key not in VARIANTS:
            raise ConfigError(f"unknown EfficientFormerV2 variant {name!r}; known: {', '.join(VARIANTS)}")
        return cls(**{**copy.deepcopy(VARIANTS[key]), "num_labels": 1000, **overrides})

    # -- derived quantities -------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Channels of the last stage (the width the heads see)."""
        return self.widths[-1]

    def summary(self) -> str:
        """The sizes that make this architecture what it is (for a config that is no published variant)."""
        return f"widths {self.widths}, depths {self.depths}, {self.num_vit} attention blocks in stages 2 and 3"

    @property
    def stage_widths(self) -> list[int]:
        """Channels of each stage."""
        return self.widths

    @property
    def downsample_conv(self) -> tuple[int, int, int]:
        """(kernel, stride, padding) of the downsampling convolutions between stages."""
        return 3, 2, 1

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the input the model is built for."""
        return tuple(self.image_size) if isinstance(self.image_size, list) else (self.image_size, self.image_size)

    def grid(self, stage: int, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(H, W) of stage `stage`'s feature map for an input of `size` (default: the built size):
        the stem halves the input twice, each downsample once more, rounding up (timm: ⌈side/2^(s+2)⌉)."""
        sides = self.image_hw if size is None else size
        for _ in range(stage + 2):
            sides = tuple(halve(s) for s in sides)
        return sides

    def input_sides(self) -> list[tuple[int, int]]:
        """[(smallest, largest) input height, (smallest, largest) width] that give the built stage-2
        grid, which fixes every attention's bias table (224 → 209–224 on each axis)."""
        built = self.grid(2)
        ranges = []
        for axis in (0, 1):
            ok = [s for s in range(1, 16 * built[axis] + 17) if self.grid(2, (s, s))[axis] == built[axis]]
            ranges.append((min(ok), max(ok)))
        return ranges

    def validate(self) -> None:
        """Reject configs npformer (or timm itself) cannot run, saying which field and why."""
        super().validate()
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ConfigError(f"widths and depths must have 4 entries (4 stages), got {self.widths} and {self.depths}")
        if self.widths[0] < 2:
            raise ConfigError(f"widths[0]={self.widths[0]}: the stem's first convolution has widths[0] // 2 channels, "
                              "so it must be at least 2")
        self._validate_mlp_ratios()
        if self.num_vit > min(self.depths[2:]):
            raise ConfigError(f"num_vit={self.num_vit}: stages 2 and 3 end with num_vit attention blocks each, so it "
                              f"must be at most min(depths[2], depths[3]) = {min(self.depths[2:])}")
        if self.hidden_act != "gelu":
            raise ConfigError(f"hidden_act={self.hidden_act!r}: EfficientFormerV2 uses the exact GELU everywhere (stem, "
                              "MLPs, attention; timm's act_layer 'gelu'), and npformer implements no other")
        if self.batch_norm_eps != 1e-5:
            raise ConfigError(f"batch_norm_eps={self.batch_norm_eps}: every EfficientFormerV2 uses 1e-5, and timm's "
                              "norm_eps does not reach the BatchNorms inside its attention modules, so no reference "
                              "defines another value")
        self._validate_image_size()

    def _validate_mlp_ratios(self) -> None:
        shape_ok = isinstance(self.mlp_ratios, list) and len(self.mlp_ratios) == 4 and all(
            isinstance(r, list) and len(r) == d for r, d in zip(self.mlp_ratios, self.depths))
        if not shape_ok:
            raise ConfigError(f"mlp_ratios needs one list per stage with one ratio per block (depths {self.depths}), "
                              f"got {self.mlp_ratios!r:.200}")
        for stage, ratios in enumerate(self.mlp_ratios):
            for block, r in enumerate(ratios):
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < float("inf"):
                    raise ConfigError(f"mlp_ratios[{stage}][{block}]={r!r} must be a positive finite number")
                if int(self.widths[stage] * r) < 1:
                    raise ConfigError(f"mlp_ratios[{stage}][{block}]={r}: the MLP's hidden width "
                                      f"int({self.widths[stage]}·{r}) must be at least 1")

    def _validate_image_size(self) -> None:
        size = self.image_size
        if isinstance(size, list) and not (len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool)
                                                                   for s in size)):
            raise ConfigError(f"image_size={size!r} must be one side or [height, width] (integers)")
        if not all(1 <= s <= MAX_IMAGE_SIDE for s in self.image_hw):
            raise ConfigError(f"image_size={size!r}: each side must be 1–{MAX_IMAGE_SIDE} px (published models use 224)")
        stage2 = self.grid(2)
        if any(s % 2 for s in stage2):
            odd = " and ".join(f"{s} → ⌈{s}/2⌉ = {halve(s)} → ×2 = {2 * halve(s)}" for s in stage2 if s % 2)
            raise ConfigError(
                f"image_size={size!r} gives a {stage2[0]}×{stage2[1]} stage-2 grid; its attention blocks attend at half "
                f"that side and upsample ×2, which must give the side back ({odd}), so each side of the stage-2 grid "
                "(⌈image side / 16⌉) must be even: 224 or 256 work, 240 does not (timm fails there too)"
            )
