"""SwiftFormer: XS, S, L1, L3 in NumPy.

Shaker et al., "SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile
Vision Applications", ICCV 2023.

The network, top to bottom (shapes for XS at 224×224):

    pixels                [B, 3, 224, 224]
    stem                  [B, 48, 56, 56]     conv3×3/2 → BN → ReLU → conv3×3/2 → BN → ReLU
    stage 0: 2 ConvEncoders, 1 encoder block     [B, 48, 56, 56]
    stage 1: down, 2 + 1  [B, 56, 28, 28]     down = conv3×3/2 → BN
    stage 2: down, 5 + 1  [B, 112, 14, 14]
    stage 3: down, 3 + 1  [B, 220, 7, 7]      = last_hidden_state (no final norm in the backbone)
    norm (BatchNorm), mean over positions     [B, 220]
    head, head_dist, averaged                 [B, 1000]

    ConvEncoder:    x += γ·(1×1 conv(C→4C) → GELU → 1×1 conv(4C→C))(BN(depthwise 3×3(x)))
    encoder block:  x = LocalRepresentation(x)            (a ConvEncoder with C→C→C 1×1 convs)
                    x += ls1·AdditiveAttention(tokens(x))
                    x += ls2·MLP(x),  MLP = BN → 1×1 conv(C→4C) → GELU → 1×1 conv(4C→C)

Every stage ends with one encoder block, so even stage 0 attends over 56·56 = 3136 tokens: the
additive attention is linear in the number of tokens. There are no position-dependent weights,
so any input size works. Weights use timm's key names (see `weight_schema`).
"""

from __future__ import annotations

import numpy as np

from ... import kernels
from ...layers import ACTIVATIONS, conv2d, gelu, l2_normalize, linear, relu, softmax
from ...losses import classification_loss
from ...outputs import BaseModelOutputWithNoAttention, ImageClassifierOutputWithNoAttention
from ...params import Params
from ...trace import no_trace
from ..base import PreTrainedModel, as_pixel_values, bn, check_finite_output, conv_bn
from .schema import batch_norm_folds, stages, weight_schema

# ---------------------------------------------------------------------------------------------
# weight schema: every tensor, with its shape


# ---------------------------------------------------------------------------------------------
# blocks, in data-flow order


def conv(x, p: Params, name, trace, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    return trace(name, conv2d(x, p[f"{name}.weight"], p[f"{name}.bias"], stride=stride, padding=padding, groups=groups))


def stem(x, p: Params, cfg, trace):  # [B, 3, H, W] -> [B, C0, H/4, W/4]
    """Two stride-2 3×3 convolutions, each with BatchNorm and ReLU."""
    x = relu(conv_bn(x, p, cfg, trace, "stem.0", "stem.1", stride=2, padding=1))  # [B, C0/2, H/2, W/2]
    x = relu(conv_bn(x, p, cfg, trace, "stem.3", "stem.4", stride=2, padding=1))  # [B, C0, H/4, W/4]
    return trace("stem", x)


def downsample(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C', H/2, W/2]
    """Embedding between stages: a strided convolution and BatchNorm."""
    x = conv_bn(x, p, cfg, trace, f"{name}.proj", f"{name}.norm", stride=cfg.down_stride, padding=cfg.down_pad)
    return trace(name, x)


def conv_encoder(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """Depthwise 3×3 → BN → 1×1 (C→hidden) → GELU → 1×1 (hidden→C), scaled by γ and added to x.

    Also the LocalRepresentation of the encoder block (hidden = C there). Always the exact GELU,
    whatever the config's hidden_act (as in transformers)."""
    C = x.shape[1]
    y = conv_bn(x, p, cfg, trace, f"{name}.dwconv", f"{name}.norm", padding=1, groups=C)  # [B, C, H, W]
    y = gelu(conv(y, p, f"{name}.pwconv1", trace))  # [B, hidden, H, W]
    y = conv(y, p, f"{name}.pwconv2", trace)  # [B, C, H, W]
    return trace(name, x + p[f"{name}.layer_scale.gamma"] * y)


def additive_attention(x, p: Params, cfg, trace, name):  # [B, N, C] -> [B, N, C]
    """Efficient additive attention: one global query instead of an N×N attention matrix.

    q̂, k̂ = L2-normalised query and key of each token; a score per token a_n = (q̂_n·w_g)/√C;
    weights α from the scores; global query G = Σ_n α_n q̂_n; out_n = final(proj(G ⊙ k̂_n) + q̂_n).
    """
    C = x.shape[-1]
    q = l2_normalize(linear(x, p[f"{name}.to_query.weight"], p[f"{name}.to_query.bias"]), axis=-1)  # [B, N, C]
    k = l2_normalize(linear(x, p[f"{name}.to_key.weight"], p[f"{name}.to_key.bias"]), axis=-1)  # [B, N, C]
    scores = kernels.matmul(q, p[f"{name}.w_g"]) * C**-0.5  # [B, N, 1]
    if cfg.attention_generation == "v1":
        # transformers and the first original release: a softmax over the last axis, which has size 1,
        # so every weight is exactly 1.0 and G is the plain sum of the queries (w_g has no effect).
        weights = softmax(scores, axis=-1)  # [B, N, 1], all ones
    else:
        # v2 (timm, original repo since 2023-07-26): the scores L2-normalised over the N tokens.
        weights = l2_normalize(scores, axis=1)  # [B, N, 1]
    trace(f"{name}.weights", weights)
    global_query = np.sum(weights * q, axis=1, keepdims=True)  # [B, 1, C]
    out = linear(global_query * k, p[f"{name}.proj.weight"], p[f"{name}.proj.bias"]) + q  # [B, N, C]
    return trace(name, linear(out, p[f"{name}.final.weight"], p[f"{name}.final.bias"]))


def mlp(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """BN → 1×1 conv (C→4C) → activation → 1×1 conv (4C→C): the norm comes first, nothing after."""
    x = bn(x, p, f"{name}.norm1", cfg, trace)  # folded into fc1 in a fused model
    x = ACTIVATIONS[cfg.hidden_act](conv(x, p, f"{name}.fc1", trace))  # [B, 4C, H, W]
    return trace(name, conv(x, p, f"{name}.fc2", trace))  # [B, C, H, W]


def layer_scale(x, p: Params, key, cfg):
    return x * p[key] if cfg.use_layer_scale else x


def encoder_block(x, p: Params, cfg, trace, name):  # [B, C, H, W] -> [B, C, H, W]
    """LocalRepresentation, then x += ls1·attention(tokens), then x += ls2·MLP(x)."""
    x = conv_encoder(x, p, cfg, trace, f"{name}.local_representation")
    B, C, H, W = x.shape
    tokens = x.transpose(0, 2, 3, 1).reshape(B, H * W, C)  # [B, N, C], n = h·W + w
    attended = additive_attention(tokens, p, cfg, trace, f"{name}.attn")
    attended = attended.reshape(B, H, W, C).transpose(0, 3, 1, 2)  # [B, C, H, W]
    x = x + layer_scale(attended, p, f"{name}.layer_scale_1.gamma", cfg)
    x = x + layer_scale(mlp(x, p, cfg, trace, f"{name}.linear"), p, f"{name}.layer_scale_2.gamma", cfg)
    return trace(name, x)


def encoder(x, p: Params, cfg, trace):
    """Stem and the four stages: (last feature map [B, C, H, W], transformers' 8 hidden_states)."""
    x = stem(x, p, cfg, trace)
    hidden_states = [x]
    for stage in stages(cfg):
        if stage.downsample:
            x = downsample(x, p, cfg, trace, stage.downsample)
            hidden_states.append(x)
        for kind, name in stage.blocks:
            block = conv_encoder if kind == "conv_encoder" else encoder_block
            x = block(x, p, cfg, trace, name)
        hidden_states.append(trace(f"stages.{stage.index}", x))
    return x, hidden_states


# ---------------------------------------------------------------------------------------------
# the models transformers users know


class SwiftFormerPreTrainedModel(PreTrainedModel):
    """A SwiftFormer: config + weights; `from_pretrained` reads an npformer file or a checkpoint."""

    family = "swiftformer"
    weight_schema = staticmethod(weight_schema)
    batch_norm_folds = staticmethod(batch_norm_folds)


class SwiftFormerModel(SwiftFormerPreTrainedModel):
    """SwiftFormer's backbone: the last stage's feature map, no norm, no head.

    `model(pixel_values)` returns a `BaseModelOutputWithNoAttention` (see `__call__` below).
    Any input size.
    """

    def _forward(self, pixel_values, output_hidden_states=False, trace=None):
        """`model(pixel_values, output_hidden_states=False, trace=None)`: the forward.

        Parameters
        ----------
        pixel_values : array_like of shape [B, 3, H, W]
            Normalised pixel values (float16/32/64; copied into the model's dtype).
        output_hidden_states : bool, default False
            Also return transformers' 8 `hidden_states`: the stem, each downsample's output
            and each stage's output, each [B, C, H, W].
        trace : callable, optional
            A `npformer.Trace` (or any `trace(name, x) -> x`) that records the activations it
            is called with, under their weight prefixes (`stem`, `stages.0.blocks.1.mlp`, ...).

        Returns
        -------
        BaseModelOutputWithNoAttention
            `last_hidden_state` [B, C, H/32, W/32]: stage 3's output (transformers' backbone has
            no final norm); `hidden_states` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`).
        """
        trace = no_trace if trace is None else trace
        x = as_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, once, by name
            last, hidden_states = encoder(x, self.params, self.config, trace)
        check_finite_output(last, "last hidden state", x)
        return BaseModelOutputWithNoAttention(last, tuple(hidden_states) if output_hidden_states else None)


class SwiftFormerForImageClassification(SwiftFormerPreTrainedModel):
    """SwiftFormer classifier: backbone, BatchNorm, mean over positions, `head` and `head_dist` averaged.

    Both heads are always averaged, as in transformers and timm. `model(pixel_values)` returns an
    `ImageClassifierOutputWithNoAttention` (see `__call__` below). Any input size.
    """

    num_heads = 2

    def _forward(self, pixel_values, labels=None, output_hidden_states=False, trace=None):
        """`model(pixel_values, labels=None, output_hidden_states=False, trace=None)`: the forward.

        The arguments are `SwiftFormerModel.__call__`'s, plus `labels`:

        Parameters
        ----------
        labels : array_like, optional
            Targets for a loss, computed as transformers decides from `config.problem_type`
            and the labels: [B] class indices (cross-entropy; -100 is ignored), [B, K] floats
            (binary cross-entropy), or [B] / [B, 1] values for one label (mean squared error).

        Returns
        -------
        ImageClassifierOutputWithNoAttention
            `logits` [B, num_labels] = (head + head_dist) / 2 (the pooled features [B, C] when
            `num_labels` is 0), `loss` when `labels` are given, `hidden_states` when asked for.

        Raises
        ------
        InputError
            Pixel values the model cannot take (see `PreTrainedModel.__call__`).
        """
        trace = no_trace if trace is None else trace
        x = as_pixel_values(pixel_values, self.config.num_channels, self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, once, by name
            last, hidden_states = encoder(x, self.params, self.config, trace)
        check_finite_output(last, "last hidden state", x)
        p = self.params
        pooled = trace("pooled", bn(last, p, "norm", self.config, trace).mean(axis=(2, 3)))  # [B, C]
        if self.config.num_labels == 0:
            logits = pooled
        else:
            cls_logits = trace("head", linear(pooled, p["head.weight"], p["head.bias"]))
            dist_logits = trace("head_dist", linear(pooled, p["head_dist.weight"], p["head_dist.bias"]))
            logits = trace("logits", (cls_logits + dist_logits) / 2)  # [B, num_labels]
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return ImageClassifierOutputWithNoAttention(loss, logits, tuple(hidden_states) if output_hidden_states else None)
