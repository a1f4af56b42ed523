"""EfficientFormer (V1): L1, L3, L7 in NumPy.

Li et al., "EfficientFormer: Vision Transformers at MobileNet Speed", NeurIPS 2022.

The network, top to bottom (shapes for L1 at 224×224; L3/L7 differ only in widths and depths):

    pixels               [B, 3, 224, 224]
    stem                 [B, 48, 56, 56]     conv3×3/2 → BN → ReLU → conv3×3/2 → BN → ReLU
    stage 0: Meta4D ×3   [B, 48, 56, 56]     x += ls1·(avgpool(x) − x);  x += ls2·MLP4D(x)
    stage 1: down, ×2    [B, 96, 28, 28]     down = conv3×3/2 → BN
    stage 2: down, ×6    [B, 224, 14, 14]
    stage 3: down, Meta4D ×3, flatten, Meta3D ×1
                         [B, 448, 7, 7] → [B, 49, 448]
                                             x += ls1·Attention(LN(x));  x += ls2·MLP3D(LN(x))
    norm (LayerNorm)     [B, 49, 448]        = last_hidden_state
    mean over tokens     [B, 448]
    head, head_dist      [B, 1000] each      Linear; the teacher model averages the two

The attention bias is a table over the last stage's resolution × resolution grid (7×7 at 224),
so inputs must give that grid (193–224 px at 224), unless the model was loaded for another size
by a named strategy (models/attention_bias.py). Weights are a flat {name: array} dict with timm's
key names (see `weight_schema`); every block is a function of (x, its weights, the config) and
reports its output to `trace` under its name.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ...layers import ACTIVATIONS, gather_attention_bias, layer_norm, linear, multi_head_attention
from ...layers import pool_mixer, relu
from ...losses import classification_loss
from ...outputs import BaseModelOutput, EfficientFormerForImageClassificationWithTeacherOutput, ImageClassifierOutput
from ...params import Params
from ...trace import no_trace
from ..attention_bias import resize_pairwise, strategies_hint
from ..base import PreTrainedModel, as_pixel_values, check_finite_output, conv_bn
from .schema import batch_norm_folds, stages, weight_schema

# ---------------------------------------------------------------------------------------------
# blocks, in data-flow order


def stem(x, p: Params, cfg, trace):  # [B, 3, H, W] -> [B, C0, H/4, W/4]
    """Two stride-2 3×3 convolutions, each with BatchNorm and ReLU."""
    x = relu(conv_bn(x, p, cfg, trace, "stem.conv1", "stem.norm1", 2, 1))  # [B, C0/2, H/2, W/2]
    x = relu(conv_bn(x, p, cfg, trace, "stem.conv2", "stem.norm2", 2, 1))  # [B, C0, H/4, W/4]
    return trace("stem", x)


def downsample(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C', H/2, W/2]
    """Embedding between stages: a strided 3×3 convolution and BatchNorm."""
    x = conv_bn(x, p, cfg, trace, f"{name}.conv", f"{name}.norm", cfg.downsample_stride, cfg.downsample_pad)
    return trace(name, x)


def layer_scale(x, p: Params, key, cfg, channel_axis):
    """Multiply by a learned per-channel scale (identity when the config has none)."""
    if not cfg.use_layer_scale:
        return x
    gamma = p[key]
    shape = [1] * x.ndim
    shape[channel_axis] = gamma.shape[0]
    return x * gamma.reshape(shape)


def mlp_4d(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """1×1 conv (C→4C) → BN → GELU → 1×1 conv (4C→C) → BN."""
    x = conv_bn(x, p, cfg, trace, f"{name}.fc1", f"{name}.norm1", 1, 0)  # [B, 4C, H, W]
    x = ACTIVATIONS[cfg.hidden_act](x)
    x = conv_bn(x, p, cfg, trace, f"{name}.fc2", f"{name}.norm2", 1, 0)  # [B, C, H, W]
    return trace(name, x)


def meta4d_block(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """Pooling block: x += ls1·(avgpool(x) − x); then x += ls2·MLP4D(x) on the updated x."""
    mixed = trace(f"{name}.token_mixer", pool_mixer(x, cfg.pool_size or 3))  # transformers: None means 3
    x = x + layer_scale(mixed, p, f"{name}.ls1.gamma", cfg, channel_axis=1)
    x = x + layer_scale(mlp_4d(x, p, cfg, trace, f"{name}.mlp"), p, f"{name}.ls2.gamma", cfg, channel_axis=1)
    return trace(name, x)


def flat(x, trace, name):  # [B, C, H, W] -> [B, N, C]
    """Tokens in row-major order: n = h·W + w."""
    B, C, H, W = x.shape
    return trace(name, x.reshape(B, C, H * W).transpose(0, 2, 1))


def attention_bias(p: Params, cfg, name, num_tokens):  # -> [h, N, N]
    """The learned table (a value per head and relative offset) spread over every (query, key) pair
    of the built resolution × resolution grid; for another token count (only under the "pairwise"
    strategy, see models/attention_bias.py) that matrix resized to N × N."""
    bias = gather_attention_bias(p[f"{name}.attention_biases"], cfg.resolution)  # [h, R², R²]
    return resize_pairwise(bias, num_tokens, num_tokens)  # [h, N, N]


def attention(x, p: Params, cfg, trace, name):  # [B, N, C] -> ([B, N, C], [B, h, N, N])
    """Multi-head self-attention with a learned bias per head and relative offset (|Δrow|, |Δcol|) between query and key."""
    bias = attention_bias(p, cfg, name, x.shape[1])  # [h, N, N]
    out, probs = multi_head_attention(
        x, p[f"{name}.qkv.weight"], p[f"{name}.qkv.bias"], p[f"{name}.proj.weight"], p[f"{name}.proj.bias"],
        bias, num_heads=cfg.num_attention_heads, key_dim=cfg.key_dim,
    )
    trace(f"{name}.attn_probs", probs)
    return trace(name, out), probs


def mlp_3d(x, p: Params, cfg, trace, name):  # [B, N, C] -> [B, N, C]
    """Linear (C→4C) → GELU → Linear (4C→C)."""
    x = trace(f"{name}.fc1", linear(x, p[f"{name}.fc1.weight"], p[f"{name}.fc1.bias"]))
    x = ACTIVATIONS[cfg.hidden_act](x)
    x = linear(x, p[f"{name}.fc2.weight"], p[f"{name}.fc2.bias"])
    return trace(name, x)


def meta3d_block(x, p: Params, cfg, trace, name):  # [B, N, C] -> ([B, N, C], [B, h, N, N])
    """Attention block: x += ls1·Attention(LN1(x)); then x += ls2·MLP3D(LN2(x))."""
    eps = cfg.layer_norm_eps
    normed = trace(f"{name}.norm1", layer_norm(x, p[f"{name}.norm1.weight"], p[f"{name}.norm1.bias"], eps))
    mixed, probs = attention(normed, p, cfg, trace, f"{name}.token_mixer")
    x = x + layer_scale(mixed, p, f"{name}.ls1.gamma", cfg, channel_axis=2)
    normed = trace(f"{name}.norm2", layer_norm(x, p[f"{name}.norm2.weight"], p[f"{name}.norm2.bias"], eps))
    x = x + layer_scale(mlp_3d(normed, p, cfg, trace, f"{name}.mlp"), p, f"{name}.ls2.gamma", cfg, channel_axis=2)
    return trace(name, x), probs


def encoder(x, p: Params, cfg, trace):
    """Stem and the four stages. Returns (tokens [B, N, C] before the final norm,
    transformers' 8 hidden_states, the attention probabilities of each Meta3D block)."""
    x = stem(x, p, cfg, trace)
    hidden_states, attentions = [x], []
    for stage in stages(cfg):
        if stage.downsample:
            x = downsample(x, p, cfg, trace, stage.downsample)
            hidden_states.append(x)
        for kind, name in stage.blocks:
            if kind == "meta4d":
                x = meta4d_block(x, p, cfg, trace, name)
            elif kind == "flat":
                x = flat(x, trace, name)
            else:
                x, probs = meta3d_block(x, p, cfg, trace, name)
                attentions.append(probs)
        hidden_states.append(trace(f"stages.{stage.index}", x))
    return x, hidden_states, attentions


# ---------------------------------------------------------------------------------------------
# the models transformers users know


def check_pixel_values(pixel_values, cfg, dtype) -> np.ndarray:
    """[B, C, H, W] in the model's dtype whose sides fit the attention grid, or an InputError."""
    x = as_pixel_values(pixel_values, cfg.num_channels, dtype)
    if cfg.attention_bias_resize == "pairwise":  # the bias follows the input's grid
        return x
    lo, hi = cfg.input_side_range()
    H, W = x.shape[2:]
    if not (lo <= H <= hi and lo <= W <= hi):
        raise InputError(
            f"this EfficientFormer's attention bias is fixed to a {cfg.resolution}×{cfg.resolution} grid, so each "
            f"input side must be {lo}–{hi} px; got {H}×{W}. Resize or crop the image (e.g. to {hi}×{hi}); "
            + strategies_hint()
        )
    return x


class EfficientFormerPreTrainedModel(PreTrainedModel):
    """An EfficientFormer: config + weights; `from_pretrained` reads an npformer file or a checkpoint."""

    family = "efficientformer"
    weight_schema = staticmethod(weight_schema)
    batch_norm_folds = staticmethod(batch_norm_folds)

    def _features(self, pixel_values, output_hidden_states, output_attentions, trace):
        x = check_pixel_values(pixel_values, self.config, self.dtype)
        p = self.params
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, once, by name
            tokens, hidden_states, attentions = encoder(x, p, self.config, trace)
            last = trace("norm", layer_norm(tokens, p["norm.weight"], p["norm.bias"], self.config.layer_norm_eps))
        check_finite_output(last, "last hidden state", x)
        return BaseModelOutput(
            last_hidden_state=last,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class EfficientFormerModel(EfficientFormerPreTrainedModel):
    """EfficientFormer's backbone: the tokens after the final LayerNorm, no head.

    `model(pixel_values)` returns a `BaseModelOutput` (see `__call__` below).
    """

    def _forward(self, pixel_values, output_hidden_states=False, output_attentions=False, trace=None):
        """`model(pixel_values, output_hidden_states=False, output_attentions=False, trace=None)`: the forward.

        Parameters
        ----------
        pixel_values : array_like of shape [B, 3, H, W]
            Normalised pixel values (float16/32/64; copied into the model's dtype).
        output_hidden_states : bool, default False
            Also return transformers' 8 `hidden_states`: the stem, each downsample's output
            and each stage's output; the last is [B, N, C] tokens, the others [B, C, H, W].
        output_attentions : bool, default False
            Also return the attention probabilities of each Meta3D block, [B, h, N, N] each.
        trace : callable, optional
            A `npformer.Trace` (or any `trace(name, x) -> x`) that records the activations it
            is called with, under their weight prefixes (`stem`, `stages.0.blocks.1.mlp`, ...).

        Returns
        -------
        BaseModelOutput
            `last_hidden_state` [B, N, C]: the last stage's N = H/32 · W/32 tokens after the final
            LayerNorm; `hidden_states` and `attentions` when asked for, else None.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`), or an input
            side outside the range the attention grid takes (193–224 px for a model built for 224).
        """
        return self._features(pixel_values, output_hidden_states, output_attentions, no_trace if trace is None else trace)


class EfficientFormerForImageClassification(EfficientFormerPreTrainedModel):
    """EfficientFormer with the class head only (`head`), as transformers: no distillation head.

    `model(pixel_values)` returns an `ImageClassifierOutput` (see `__call__` below).
    """

    num_heads = 1

    def _forward(self, pixel_values, labels=None, output_hidden_states=False, output_attentions=False, trace=None):
        """`model(pixel_values, labels=None, output_hidden_states=False, output_attentions=False, trace=None)`: the forward.

        The arguments are `EfficientFormerModel.__call__`'s, plus `labels`:

        Parameters
        ----------
        labels : array_like, optional
            Targets for a loss, computed as transformers decides from `config.problem_type`
            and the labels: [B] class indices (cross-entropy; -100 is ignored), [B, K] floats
            (binary cross-entropy), or [B] / [B, 1] values for one label (mean squared error).

        Returns
        -------
        ImageClassifierOutput
            `logits` [B, num_labels] (the pooled features [B, C] when `num_labels` is 0),
            `loss` when `labels` are given, `hidden_states` and `attentions` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`), or an input
            side outside the range the attention grid takes (193–224 px for a model built for 224).
        """
        trace = no_trace if trace is None else trace
        out = self._features(pixel_values, output_hidden_states, output_attentions, trace)
        pooled = trace("pooled", out.last_hidden_state.mean(axis=-2))  # [B, C]
        logits = self._head(pooled, "head", trace)  # [B, num_labels]
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class EfficientFormerForImageClassificationWithTeacher(EfficientFormerPreTrainedModel):
    """EfficientFormer with its class and distillation heads; `logits` is their mean.

    `model(pixel_values)` returns an `EfficientFormerForImageClassificationWithTeacherOutput`
    (see `__call__` below). The published checkpoints hold both heads.
    """

    num_heads = 2

    def _forward(self, pixel_values, output_hidden_states=False, output_attentions=False, trace=None):
        """`model(pixel_values, output_hidden_states=False, output_attentions=False, trace=None)`: the forward.

        The arguments are `EfficientFormerModel.__call__`'s.

        Returns
        -------
        EfficientFormerForImageClassificationWithTeacherOutput
            `logits` [B, num_labels] = (`cls_logits` + `distillation_logits`) / 2, both heads'
            logits, `hidden_states` and `attentions` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`), or an input
            side outside the range the attention grid takes (193–224 px for a model built for 224).
        """
        trace = no_trace if trace is None else trace
        out = self._features(pixel_values, output_hidden_states, output_attentions, trace)
        pooled = trace("pooled", out.last_hidden_state.mean(axis=-2))  # [B, C]
        cls_logits = self._head(pooled, "head", trace)
        distillation_logits = self._head(pooled, "head_dist", trace)
        logits = trace("logits", (cls_logits + distillation_logits) / 2)
        return EfficientFormerForImageClassificationWithTeacherOutput(
            logits, cls_logits, distillation_logits, out.hidden_states, out.attentions
        )
