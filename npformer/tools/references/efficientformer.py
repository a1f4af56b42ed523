"""The PyTorch references for EfficientFormer (V1), for the oracle tier (`npformer.tools.oracle`,
`npformer.tools.parity`): transformers 4.40.2 (LayerNorm eps 1e-12, three classes) and timm
(LayerNorm eps 1e-5). torch is imported only when a function runs."""

from __future__ import annotations

import numpy as np

from ...layers import attention_bias_index
from ...models.efficientformer.config import EfficientFormerConfig
from ...models.efficientformer.schema import ARCHITECTURES

# (variant, reference, classifier heads) of every parity row
PARITY_CASES = ([(v, "transformers", h) for v in ("l1", "l3", "l7") for h in (2, 1, 0)]
                + [(v, "timm", 2) for v in ("l1", "l3", "l7")])
# output fields compared whole, by number of classifier heads
OUTPUTS = {0: ("last_hidden_state",), 1: ("logits",), 2: ("logits", "cls_logits", "distillation_logits")}
FORWARD_OPTIONS = {"output_attentions": True}  # what a parity forward asks for besides hidden states


def reference_config(variant: str, reference: str) -> EfficientFormerConfig:
    """The config a reference implements: timm's LayerNorm eps is 1e-5, transformers' 1e-12."""
    return EfficientFormerConfig.variant(variant, **({"layer_norm_eps": 1e-5} if reference == "timm" else {}))


def transformers_model(config: EfficientFormerConfig, num_heads: int):
    """transformers' model class for `num_heads`, built for `config` (random weights)."""
    import transformers

    hf_config = transformers.EfficientFormerConfig(**config.to_dict())
    hf_config.hidden_size = config.width  # WithTeacher sizes its heads with it; EfficientFormerConfig does not declare it
    model = getattr(transformers, ARCHITECTURES[num_heads])(hf_config)
    for name, buf in model.named_buffers():  # the bias index npformer's converter checks checkpoints against
        if name.endswith("attention_bias_idxs"):
            assert np.array_equal(buf.numpy(), attention_bias_index(config.resolution)), name
    return model


def timm_model(config: EfficientFormerConfig):
    """(timm's EfficientFormer built for `config`, timm's original→timm `checkpoint_filter_fn`)."""
    from ...errors import ConfigError
    from ..timm_import import import_timm

    import_timm()
    from timm.models import efficientformer

    if config.layer_norm_eps != 1e-5:
        raise ConfigError(f"timm's EfficientFormer uses LayerNorm eps 1e-5, the config says {config.layer_norm_eps}")
    model = efficientformer.EfficientFormer(depths=tuple(config.depths), embed_dims=tuple(config.hidden_sizes),
                                            num_vit=config.num_meta3d_blocks, num_classes=config.num_labels)
    return model, efficientformer.checkpoint_filter_fn
