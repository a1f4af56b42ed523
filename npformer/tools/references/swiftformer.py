"""The PyTorch references for SwiftFormer, for the oracle tier (`npformer.tools.oracle`,
`npformer.tools.parity`): transformers 4.40.2 (attention v1, classifier and backbone) and timm
(attention v2). torch is imported only when a function runs."""

from __future__ import annotations

from ...errors import ConfigError
from ...models.swiftformer.config import SwiftFormerConfig
from ...models.swiftformer.schema import ARCHITECTURES

# (variant, reference, classifier heads) of every parity row
PARITY_CASES = ([(v, "transformers", h) for v in ("xs", "s", "l1", "l3") for h in (2, 0)]
                + [(v, "timm", 2) for v in ("xs", "s", "l1", "l3")])
# output fields compared whole, by number of classifier heads
OUTPUTS = {0: ("last_hidden_state",), 2: ("logits",)}
FORWARD_OPTIONS = {}  # SwiftFormer returns no attention maps


def reference_config(variant: str, reference: str) -> SwiftFormerConfig:
    """The config a reference implements: transformers' attention is v1, timm's v2."""
    return SwiftFormerConfig.variant(variant, attention_generation="v2" if reference == "timm" else "v1")


def transformers_model(config: SwiftFormerConfig, num_heads: int):
    """transformers' model class for `num_heads`, built for `config` (random weights)."""
    import transformers

    if config.attention_generation != "v1":
        raise ConfigError("transformers' SwiftFormer implements attention generation v1 only")
    fields = {k: v for k, v in config.to_dict().items() if k != "attention_generation"}  # npformer's, not transformers'
    return getattr(transformers, ARCHITECTURES[num_heads])(transformers.SwiftFormerConfig(**fields))


def timm_model(config: SwiftFormerConfig):
    """(timm's SwiftFormer built for `config`, timm's original→timm `checkpoint_filter_fn`)."""
    from ..timm_import import import_timm

    import_timm()
    from timm.models import swiftformer

    if config.attention_generation != "v2":
        raise ConfigError("timm's SwiftFormer implements attention generation v2 only")
    model = swiftformer.SwiftFormer(layers=list(config.depths), embed_dims=list(config.embed_dims),
                                    num_classes=config.num_labels)
    return model, swiftformer.checkpoint_filter_fn
