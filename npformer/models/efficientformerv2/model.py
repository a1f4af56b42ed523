"""EfficientFormerV2: S0, S1, S2, L in NumPy.

Li et al., "Rethinking Vision Transformers for MobileNet Size and Speed", ICCV 2023.

The network, top to bottom (shapes for S0 at 224×224; S1, S2 and L differ in widths, depths, MLP
ratios and the number of attention blocks):

    pixels                  [B, 3, 224, 224]
    stem                    [B, 32, 56, 56]    conv3×3/2 → BN → GELU → conv3×3/2 → BN → GELU
    stage 0: FFN ×2         [B, 32, 56, 56]    x += ls2·MLP(x)
    stage 1: down, FFN ×2   [B, 48, 28, 28]    down = conv3×3/2 → BN
    stage 2: down, FFN ×4, AttnFFN ×2
                            [B, 96, 14, 14]    x += ls1·Attention4D(x); x += ls2·MLP(x). The attention
                                               runs at 7×7: a stride-2 depthwise conv in, bilinear ×2 out
    stage 3: attention down, FFN ×2, AttnFFN ×2
                            [B, 176, 7, 7]     down = conv3×3/2 → BN, plus an attention whose 7×7
                                               queries look at all 14×14 positions of its input
    norm (BatchNorm)        [B, 176, 7, 7]     = last_hidden_state
    mean over positions     [B, 176]
    head, head_dist         [B, 1000] each     Linear; the teacher model averages the two

    MLP          1×1 conv (C→rC) → BN → GELU → depthwise 3×3 → BN → GELU → 1×1 conv (rC→C) → BN
    Attention4D  q, k, v = 1×1 conv → BN, 8 heads (q and k 32 channels per head, v 128);
                 A = talking_head2(softmax(talking_head1(q·kᵀ/√32 + bias)));  out = A·v + v_local
                 (v_local = depthwise 3×3 → BN of v), then GELU → 1×1 conv → BN

The attention biases are tables over the grid the model is built for (`image_size`, 224 here), so
each input side must give that grid (209–224 px at 224); a model loaded for another size resizes
them by a named strategy (models/attention_bias.py). Weights are a flat {name: array} dict
with timm's key names (see `weight_schema`); every block is a function of (x, its weights, the
config) and reports its output to `trace` under timm's module name: a forward hook on that timm
module sees the same tensor.
"""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError, InputError
from ...layers import attention_bias_index_grid, conv2d, gelu, talking_heads_attention, upsample_bilinear_2x
from ...losses import classification_loss
from ...outputs import BaseModelOutput, EfficientFormerForImageClassificationWithTeacherOutput, ImageClassifierOutput
from ...params import Params
from ...trace import no_trace
from ..attention_bias import resize_pairwise, strategies_hint
from ..base import PreTrainedModel, as_pixel_values, bn, check_finite_output, conv_bn
from .schema import attention_grid, batch_norm_folds, stages, weight_schema

# ---------------------------------------------------------------------------------------------
# blocks, in data-flow order


def conv_norm(x, p: Params, cfg, trace, name, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """timm's ConvNorm: the convolution `{name}.conv`, then the BatchNorm `{name}.bn`."""
    return trace(name, conv_bn(x, p, cfg, trace, f"{name}.conv", f"{name}.bn", stride, padding, groups))


def conv_norm_act(x, p: Params, cfg, trace, name, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """timm's ConvNormAct: convolution → BatchNorm → GELU. timm applies the GELU inside its `bn`
    (a BatchNormAct2d), so `{name}.bn` is recorded after the GELU, as a hook there sees it."""
    def trace_all_but_bn(n, y):
        return y if n == f"{name}.bn" else trace(n, y)

    y = gelu(conv_bn(x, p, cfg, trace_all_but_bn, f"{name}.conv", f"{name}.bn", stride, padding, groups))
    return trace(name, trace(f"{name}.bn", y))


def stem(x, p: Params, cfg, trace):  # [B, 3, H, W] -> [B, C0, H/4, W/4]
    """Two stride-2 3×3 convolutions, each with BatchNorm and GELU (V1's stem has ReLU)."""
    x = conv_norm_act(x, p, cfg, trace, "stem.conv1", stride=2, padding=1)  # [B, C0/2, H/2, W/2]
    x = conv_norm_act(x, p, cfg, trace, "stem.conv2", stride=2, padding=1)  # [B, C0, H/4, W/4]
    return trace("stem", x)


def mlp(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """1×1 conv (C→hidden) → BN → GELU → depthwise 3×3 → BN → GELU → 1×1 conv (hidden→C) → BN."""
    x = conv_norm_act(x, p, cfg, trace, f"{name}.fc1")  # [B, hidden, H, W]
    x = conv_norm_act(x, p, cfg, trace, f"{name}.mid", padding=1, groups=x.shape[1])  # [B, hidden, H, W]
    return trace(name, conv_norm(x, p, cfg, trace, f"{name}.fc2"))  # [B, C, H, W]


def split_heads(x, num_heads):  # [B, h·d, H, W] -> [B, h, N, d]
    """Tokens per head: channel c = head·d + j (each head's channels contiguous), token n = row·W + col."""
    B, C, H, W = x.shape
    return x.reshape(B, num_heads, C // num_heads, H * W).transpose(0, 1, 3, 2)


def merge_heads(x, H, W):  # [B, h, N, d] -> [B, h·d, H, W]
    """Back to a feature map, channel = head·d + j."""
    B, h, N, d = x.shape
    return x.transpose(0, 1, 3, 2).reshape(B, h * d, H, W)


def position_bias(p: Params, name, grid, built, query_stride=1):  # -> [h, Nq, N]
    """The learned table (a value per head and distinct offset) spread over every (query, key)
    pair of the `built` key grid, the queries on every `query_stride`-th row and column. On
    another `grid` (only under the "pairwise" strategy, see models/attention_bias.py) that matrix
    is resized to the grid's query and key counts."""
    bias = p[f"{name}.attention_biases"][:, attention_bias_index_grid(*built, query_stride)]  # [h, Nq0, N0]
    (H, W), s = grid, query_stride
    return resize_pairwise(bias, -(-H // s) * -(-W // s), H * W)  # [h, Nq, N]


def attention_4d(x, p: Params, cfg, trace, name, stride):  # [B, C, H, W] -> ([B, C, H, W], [B, h, N, N])
    """Attention4D on the feature map; with `stride` (stage 2) it attends at half resolution, over
    N = 49 tokens at 224 in both stages.

    q, k, v: 1×1 conv → BN, split into heads; v also takes a depthwise 3×3 "local" path. The talking
    heads mix the heads' logits before the softmax and their probabilities after it."""
    if stride:
        x = conv_norm(x, p, cfg, trace, f"{name}.stride_conv", stride=2, padding=1, groups=x.shape[1])  # [B, C, H/2, W/2]
    H, W = x.shape[2:]  # the grid it attends on
    h = cfg.num_heads
    q = split_heads(conv_norm(x, p, cfg, trace, f"{name}.q"), h)  # [B, h, N, dk]
    k = split_heads(conv_norm(x, p, cfg, trace, f"{name}.k"), h)  # [B, h, N, dk]
    v = conv_norm(x, p, cfg, trace, f"{name}.v")  # [B, h·dv, H, W]
    v_local = conv_norm(v, p, cfg, trace, f"{name}.v_local", padding=1, groups=v.shape[1])  # [B, h·dv, H, W]
    heads = [(p[f"{name}.{t}.weight"], p[f"{name}.{t}.bias"]) for t in ("talking_head1", "talking_head2")]
    bias = position_bias(p, name, (H, W), attention_grid(cfg, 2 if stride else 3))  # [h, N, N]
    out, probs = talking_heads_attention(q, k, split_heads(v, h), bias, *heads)
    trace(f"{name}.attn_probs", probs)
    out = merge_heads(out, H, W) + v_local  # [B, h·dv, H, W]
    if stride:
        out = trace(f"{name}.upsample", upsample_bilinear_2x(out))  # [B, h·dv, 2H, 2W]: the input's grid
    out = trace(f"{name}.act", gelu(out))
    return trace(name, conv_norm(out, p, cfg, trace, f"{name}.proj")), probs  # [B, C, input H, input W]


def subsample(x):  # [B, C, H, W] -> [B, C, ⌈H/2⌉, ⌈W/2⌉]
    """Every other pixel: timm's AvgPool2d(kernel 1, stride 2), an average over one pixel."""
    return x[:, :, ::2, ::2]


def local_global_query(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, h·dk, ⌈H/2⌉, ⌈W/2⌉]
    """The downsampling attention's queries, on the half-resolution grid: a stride-2 depthwise 3×3
    convolution (no BatchNorm) plus the subsampled input, then 1×1 conv → BN."""
    w, b = p[f"{name}.local.weight"], p[f"{name}.local.bias"]
    local = trace(f"{name}.local", conv2d(x, w, b, stride=2, padding=1, groups=x.shape[1]))  # [B, C, H/2, W/2]
    q = local + trace(f"{name}.pool", subsample(x))
    return trace(name, conv_norm(q, p, cfg, trace, f"{name}.proj"))


def attention_downsample(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C', ⌈H/2⌉, ⌈W/2⌉]
    """Attention2dDownsample: queries on the half-resolution grid attend over every position of the
    input (N2 = 49 over N = 196 at 224), without talking heads; v's local path has stride 2."""
    H, W = x.shape[2:]
    h = cfg.num_heads
    q = local_global_query(x, p, cfg, trace, f"{name}.q")  # [B, h·dk, H2, W2]
    k = conv_norm(x, p, cfg, trace, f"{name}.k")  # [B, h·dk, H, W]
    v = conv_norm(x, p, cfg, trace, f"{name}.v")  # [B, h·dv, H, W]
    v_local = conv_norm(v, p, cfg, trace, f"{name}.v_local", stride=2, padding=1, groups=v.shape[1])  # [B, h·dv, H2, W2]
    bias = position_bias(p, name, (H, W), cfg.grid(2), query_stride=2)  # [h, N2, N]
    out, probs = talking_heads_attention(split_heads(q, h), split_heads(k, h), split_heads(v, h), bias)
    trace(f"{name}.attn_probs", probs)
    out = trace(f"{name}.act", gelu(merge_heads(out, *q.shape[2:]) + v_local))  # [B, h·dv, H2, W2]
    return trace(name, conv_norm(out, p, cfg, trace, f"{name}.proj"))


def downsample(x, p: Params, cfg, trace, name, attends):  # [B, C, H, W] -> [B, C', ⌈H/2⌉, ⌈W/2⌉]
    """Between stages: conv3×3/2 → BN; into stage 3 (`attends`), plus the downsampling attention."""
    out = conv_norm(x, p, cfg, trace, f"{name}.conv", stride=2, padding=1)
    if attends:
        out = attention_downsample(x, p, cfg, trace, f"{name}.attn") + out
    return trace(name, out)


def layer_scale(x, p: Params, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """Multiply by a learned per-channel scale γ [C]."""
    return trace(name, x * p[f"{name}.gamma"].reshape(1, -1, 1, 1))


def ffn_block(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """FFN block: x += ls2·MLP(x)."""
    x = x + layer_scale(mlp(x, p, cfg, trace, f"{name}.mlp"), p, trace, f"{name}.ls2")
    return trace(name, x)


def attn_ffn_block(x, p: Params, cfg, trace, name, stride):  # [B, C, H, W] -> ([B, C, H, W], [B, h, N, N])
    """AttnFFN block: x += ls1·Attention4D(x); then x += ls2·MLP(x) on the updated x."""
    mixed, probs = attention_4d(x, p, cfg, trace, f"{name}.token_mixer", stride)
    x = x + layer_scale(mixed, p, trace, f"{name}.ls1")
    return ffn_block(x, p, cfg, trace, name), probs


def encoder(x, p: Params, cfg, trace):
    """Stem and the four stages. Returns (the last stage's output [B, C3, H/32, W/32] before the
    final norm, the four stages' outputs, the attention probabilities of each AttnFFN block)."""
    x = stem(x, p, cfg, trace)
    hidden_states, attentions = [], []
    for stage in stages(cfg):
        if stage.downsample:
            x = downsample(x, p, cfg, trace, stage.downsample, attends=stage.index == 3)
        for kind, name in stage.blocks:
            if kind == "ffn":
                x = ffn_block(x, p, cfg, trace, name)
            else:
                x, probs = attn_ffn_block(x, p, cfg, trace, name, stride=stage.index == 2)
                attentions.append(probs)
        hidden_states.append(trace(f"stages.{stage.index}", x))
    return x, hidden_states, attentions


# ---------------------------------------------------------------------------------------------
# the model classes


def check_pixel_values(pixel_values, cfg, dtype) -> np.ndarray:
    """[B, C, H, W] in the model's dtype whose sides give the grid the model is built for, or an InputError."""
    x = as_pixel_values(pixel_values, cfg.num_channels, dtype)
    H, W = x.shape[2:]
    if cfg.attention_bias_resize == "pairwise":  # the biases follow the input's grid, which must still halve evenly
        stage2 = cfg.grid(2, (H, W))
        if any(side % 2 for side in stage2):
            raise InputError(f"a {H}×{W} input gives a {stage2[0]}×{stage2[1]} stage-2 grid; EfficientFormerV2's stage-2 "
                             "attention works at half that side and upsamples ×2, so each side of the stage-2 grid "
                             "(⌈input side / 16⌉) must be even (e.g. 224 or 256 px, not 240)")
        return x
    if cfg.grid(2, (H, W)) != cfg.grid(2):
        (h_lo, h_hi), (w_lo, w_hi) = cfg.input_sides()
        built = "×".join(map(str, cfg.image_hw))
        raise InputError(
            f"this EfficientFormerV2 is built for {built} inputs (image_size): its attention biases are fixed to a "
            f"{'×'.join(map(str, cfg.grid(2)))} stage-2 grid, which needs a height of {h_lo}–{h_hi} px and a width of "
            f"{w_lo}–{w_hi} px; got {H}×{W}. Resize or crop the image (e.g. to {built}); " + strategies_hint()
        )
    return x


class EfficientFormerV2PreTrainedModel(PreTrainedModel):
    """An EfficientFormerV2: config + weights; `from_pretrained` reads an npformer file or a checkpoint."""

    family = "efficientformerv2"
    weight_schema = staticmethod(weight_schema)
    batch_norm_folds = staticmethod(batch_norm_folds)

    def _features(self, pixel_values, output_hidden_states, output_attentions, trace):
        x = check_pixel_values(pixel_values, self.config, self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, once, by name
            features, hidden_states, attentions = encoder(x, self.params, self.config, trace)
            last = bn(features, self.params, "norm", self.config, trace)  # [B, C3, H/32, W/32]
        check_finite_output(last, "last hidden state", x)
        return BaseModelOutput(
            last_hidden_state=last,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class EfficientFormerV2Model(EfficientFormerV2PreTrainedModel):
    """EfficientFormerV2's backbone: the last stage's map after the final BatchNorm, no head.

    `model(pixel_values)` returns a `BaseModelOutput` (see `__call__` below).
    """

    def _forward(self, pixel_values, output_hidden_states=False, output_attentions=False, trace=None):
        """`model(pixel_values, output_hidden_states=False, output_attentions=False, trace=None)`: the forward.

        Parameters
        ----------
        pixel_values : array_like of shape [B, 3, H, W]
            Normalised pixel values (float16/32/64; copied into the model's dtype).
        output_hidden_states : bool, default False
            Also return the four stages' outputs, each [B, C_i, H_i, W_i] (as timm's
            `forward_intermediates`).
        output_attentions : bool, default False
            Also return the attention probabilities of each AttnFFN block, [B, h, N, N].
        trace : callable, optional
            A `npformer.Trace` (or any `trace(name, x) -> x`) that records the activations it
            is called with, under their weight prefixes (`stem`, `stages.0.blocks.1.mlp`, ...).

        Returns
        -------
        BaseModelOutput
            `last_hidden_state` [B, C, H/32, W/32] after the final BatchNorm; `hidden_states` and
            `attentions` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`), or an input
            whose stage-2 grid is not the one the model is built for (209–224 px per side at 224).
        """
        return self._features(pixel_values, output_hidden_states, output_attentions, no_trace if trace is None else trace)


class EfficientFormerV2ForImageClassification(EfficientFormerV2PreTrainedModel):
    """EfficientFormerV2 with the class head only (`head`): no distillation head.

    `model(pixel_values)` returns an `ImageClassifierOutput` (see `__call__` below).
    """

    num_heads = 1

    def _forward(self, pixel_values, labels=None, output_hidden_states=False, output_attentions=False, trace=None):
        """`model(pixel_values, labels=None, output_hidden_states=False, output_attentions=False, trace=None)`: the forward.

        The arguments are `EfficientFormerV2Model.__call__`'s, plus `labels`:

        Parameters
        ----------
        labels : array_like, optional
            Targets for a loss, computed as transformers decides from `config.problem_type`
            and the labels: [B] class indices (cross-entropy; -100 is ignored), [B, K] floats
            (binary cross-entropy), or [B] / [B, 1] values for one label (mean squared error).

        Returns
        -------
        ImageClassifierOutput
            `logits` [B, num_labels] (the pooled features [B, C] when `num_labels` is 0), `loss`
            when `labels` are given, `hidden_states` and `attentions` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`), or an input
            whose stage-2 grid is not the one the model is built for (209–224 px per side at 224).
        """
        trace = no_trace if trace is None else trace
        out = self._features(pixel_values, output_hidden_states, output_attentions, trace)
        pooled = trace("pooled", out.last_hidden_state.mean(axis=(2, 3)))  # [B, C]
        logits = self._head(pooled, "head", trace)  # [B, num_labels]
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class EfficientFormerV2ForImageClassificationWithTeacher(EfficientFormerV2PreTrainedModel):
    """EfficientFormerV2 with its class and distillation heads; `logits` is their mean (timm's eval).

    `model(pixel_values)` returns an `EfficientFormerForImageClassificationWithTeacherOutput`
    (see `__call__` below). Building one from a config with `distillation=False` is a
    `ConfigError`.
    """

    num_heads = 2

    def __init__(self, config, weights: dict | None = None, dtype=np.float32):
        if not config.distillation:
            raise ConfigError("distillation=False: the config has no distillation head; "
                              "use EfficientFormerV2ForImageClassification")
        super().__init__(config, weights, dtype)

    def _forward(self, pixel_values, output_hidden_states=False, output_attentions=False, trace=None):
        """`model(pixel_values, output_hidden_states=False, output_attentions=False, trace=None)`: the forward.

        The arguments are `EfficientFormerV2Model.__call__`'s.

        Returns
        -------
        EfficientFormerForImageClassificationWithTeacherOutput
            `logits` [B, num_labels] = (`cls_logits` + `distillation_logits`) / 2, both heads'
            logits, `hidden_states` and `attentions` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`), or an input
            whose stage-2 grid is not the one the model is built for (209–224 px per side at 224).
        """
        trace = no_trace if trace is None else trace
        out = self._features(pixel_values, output_hidden_states, output_attentions, trace)
        pooled = trace("pooled", out.last_hidden_state.mean(axis=(2, 3)))  # [B, C]
        cls_logits = self._head(pooled, "head", trace)
        distillation_logits = self._head(pooled, "head_dist", trace)
        logits = trace("logits", (cls_logits + distillation_logits) / 2)
        return EfficientFormerForImageClassificationWithTeacherOutput(
            logits, cls_logits, distillation_logits, out.hidden_states, out.attentions
        )
