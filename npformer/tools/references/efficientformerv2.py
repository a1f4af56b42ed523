"""The PyTorch reference for EfficientFormerV2, for the oracle tier (`npformer.tools.oracle`,
`npformer.tools.parity`): timm (there is no transformers port; timm is also a sufficient oracle
for the original repo's schema: timm's V2 module computes the original forward). torch is imported only when a function runs."""

from __future__ import annotations

from ...errors import ConfigError
from ...models.efficientformerv2.config import EfficientFormerV2Config

# (variant, reference, classifier heads) of every parity row
PARITY_CASES = [(v, "timm", 2) for v in ("s0", "s1", "s2", "l")]
# output fields compared whole, by number of classifier heads
OUTPUTS = {0: ("last_hidden_state",), 1: ("logits",), 2: ("logits", "cls_logits", "distillation_logits")}
FORWARD_OPTIONS = {"output_attentions": True}  # what a parity forward asks for besides hidden states
TIMM_FIXED = {"key_dim": 32, "num_heads": 8, "attn_ratio": 4, "downsample_key_dim": 16}  # sizes timm sets in code


def reference_config(variant: str, reference: str) -> EfficientFormerV2Config:
    """The config timm implements for a variant (built for 224×224)."""
    return EfficientFormerV2Config.variant(variant)


def timm_model(config: EfficientFormerV2Config):
    """(timm's EfficientFormerV2 built for `config`, None: timm has no original→timm filter for V2).
    Load weights before calling eval(): timm caches the gathered attention bias in eval mode."""
    from ..timm_import import import_timm

    import_timm()
    from timm.models import efficientformer_v2

    fixed = {k: getattr(config, k) for k in TIMM_FIXED if getattr(config, k) != TIMM_FIXED[k]}
    if fixed:
        raise ConfigError(f"timm's EfficientFormerV2 fixes {TIMM_FIXED} in code; the config says {fixed}")
    model = efficientformer_v2.EfficientFormerV2(
        depths=tuple(config.depths), embed_dims=tuple(config.widths), mlp_ratios=tuple(map(tuple, config.mlp_ratios)),
        num_vit=config.num_vit, img_size=config.image_hw, in_chans=config.num_channels, num_classes=config.num_labels,
        distillation=config.distillation)
    return model, None
