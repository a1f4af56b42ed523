"""Exercises that assemble layers: EfficientFormer's Meta4D and Meta3D blocks, then the whole
EfficientFormer forward on the demo weights (`weights/efficientformer-digits.safetensors`, 112 px),
compared logit by logit.

A block exercise takes `(x, weights, cfg)`: `weights` holds the block's own tensors under the
names below the block (`"mlp.fc1.weight"`, `"ls1.gamma"`, …; `block_weights` cuts them out of a
model's weights), `cfg` is an `EfficientFormerConfig`. The reference is npformer's block from
`models/efficientformer/model.py`; the mistakes are a re-assembly with one detail switched.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import layers
from ..checkpoints.seeded import seeded_tensor, seeded_weights
from ..erf import gelu, gelu_tanh
from ..models.efficientformer import model as ef
from ..models.efficientformer.config import EfficientFormerConfig
from ..models.efficientformer.schema import stages, weight_schema
from ..models.registry import FAMILIES
from ..params import Params
from ..trace import no_trace
from .attention import attention_variant
from .pointwise import include_pad, pool_alone
from .spec import Case, Exercise, Mistake, random

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / FAMILIES["efficientformer"].demo_weights


def block_weights(weights: dict, name: str) -> dict:
    """The tensors of one block, with the block's prefix cut off.

    Parameters
    ----------
    weights : dict of str to ndarray
        A model's weights (`model.weights`).
    name : str
        The block, e.g. "stages.0.blocks.0".

    Returns
    -------
    dict of str to ndarray
        `{"mlp.fc1.weight": ..., "ls1.gamma": ..., ...}`.
    """
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# small configs and seeded block weights

BLOCK_CONFIG = dict(depths=[1, 1, 1, 2], hidden_sizes=[8, 12, 16, 24], dim=24, key_dim=4, num_attention_heads=2,
                    attention_ratio=2, resolution=3, num_labels=10)


def small_config(**change) -> EfficientFormerConfig:
    return EfficientFormerConfig(**(BLOCK_CONFIG | change))


def seeded_block(cfg, name, dtype, seed) -> dict:
    """Block `name`'s weights from npformer's seeded distributions (layer scales 0.1–0.6, BatchNorm
    statistics far from (0, 1), attention biases of order 1), prefix cut off."""
    schema = {k: s for k, s in weight_schema(cfg).items() if k.startswith(name + ".")}
    return block_weights({k: seeded_tensor(k, s, seed).astype(dtype) for k, s in schema.items()}, name)


def prefixed(weights: dict) -> Params:
    return Params({f"block.{k}": v for k, v in weights.items()})


# ---------------------------------------------------------------------------------------------
# Meta4D


def meta4d_block(x, weights, cfg):  # [B, C, H, W] -> [B, C, H, W]
    """npformer's Meta4D block (`models/efficientformer/model.py`) on a block's own weights."""
    return ef.meta4d_block(x, prefixed(weights), cfg, no_trace, "block")


def meta4d_cases() -> list[Case]:
    rng = np.random.default_rng(1712)
    cfg, plain = small_config(), small_config(use_layer_scale=False)

    def case(label, cfg, name, shape, seed, dtype=np.float32):
        return Case(f"{label}, {np.dtype(dtype).name}", (random(rng, shape, dtype), seeded_block(cfg, name, dtype, seed), cfg))

    return [
        case("8 channels, 5×5, batch 2", cfg, "stages.0.blocks.0", (2, 8, 5, 5), 1),
        case("12 channels, 3×4", cfg, "stages.1.blocks.0", (1, 12, 3, 4), 2, np.float64),
        case("8 channels, 4×6, no layer scale (cfg.use_layer_scale=False)", plain, "stages.0.blocks.0", (1, 8, 4, 6), 3),
    ]


def conv_bn(x, w, conv, norm, eps):
    y = layers.conv2d(x, w[f"{conv}.weight"], w[f"{conv}.bias"])
    return layers.batch_norm(y, w[f"{norm}.running_mean"], w[f"{norm}.running_var"], w[f"{norm}.weight"],
                             w[f"{norm}.bias"], eps)


def scaled(y, w, key, cfg, channel_axis):
    if not cfg.use_layer_scale:
        return y
    shape = [1] * y.ndim
    shape[channel_axis] = -1
    return y * w[key].reshape(shape)


def meta4d_variant(x, weights, cfg, *, mixer=layers.pool_mixer, sequential=True, layer_scale=True, act=gelu):
    """Meta4D with one detail switchable; the defaults give the reference."""
    w, eps = weights, cfg.batch_norm_eps
    ls = scaled if layer_scale else (lambda y, *_: y)
    mixed = x + ls(mixer(x, cfg.pool_size or 3), w, "ls1.gamma", cfg, 1)
    h = conv_bn(mixed if sequential else x, w, "mlp.fc1", "mlp.norm1", eps)  # [B, 4C, H, W]
    h = conv_bn(act(h), w, "mlp.fc2", "mlp.norm2", eps)  # [B, C, H, W]
    return mixed + ls(h, w, "ls2.gamma", cfg, 1)


def meta4d(**change):
    def fn(x, weights, cfg):
        return meta4d_variant(x, weights, cfg, **change)
    return fn


META4D_BLOCK = Exercise(
    name="meta4d_block",
    signature="meta4d_block(x, weights, cfg)  # [B, C, H, W] -> [B, C, H, W]; weights: ls1.gamma, mlp.fc1.weight, ...",
    summary="the pooling block: x += ls1·(avgpool(x) − x); x += ls2·MLP(x), MLP = 1×1 conv → BN → GELU → 1×1 conv → BN",
    reference=meta4d_block,
    cases=meta4d_cases,
    mistakes=(
        Mistake("parallel branches", "both branches read the block's input; the MLP must read x after the token mixer's "
                "residual: x = x + ls1·mixer(x), then x = x + ls2·MLP(x).", meta4d(sequential=False)),
        Mistake("count_include_pad", "the token mixer's border divides by 9: that is count_include_pad=True; average only "
                "the real pixels (your pool_mixer from notebook 02).", meta4d(mixer=include_pad)),
        Mistake("no layer scale", "the layer scales are not applied: multiply each branch by its per-channel "
                "ls1.gamma / ls2.gamma when cfg.use_layer_scale.", meta4d(layer_scale=False)),
        Mistake("mixer without − x", "the token mixer is avgpool(x) alone; it is avgpool(x) − x.",
                meta4d(mixer=pool_alone)),
        Mistake("tanh GELU", "the MLP uses the tanh approximation of GELU; EfficientFormer's is the exact one.",
                meta4d(act=gelu_tanh)),
    ),
)

# ---------------------------------------------------------------------------------------------
# Meta3D


def meta3d_block(x, weights, cfg):  # [B, N, C] -> ([B, N, C], [B, h, N, N])
    """npformer's Meta3D block on a block's own weights: (output, attention probabilities)."""
    return ef.meta3d_block(x, prefixed(weights), cfg, no_trace, "block")


def meta3d_cases() -> list[Case]:
    rng = np.random.default_rng(1713)
    cfg = small_config()
    other = small_config(hidden_sizes=[8, 12, 12, 12], dim=12, num_attention_heads=3, key_dim=2, resolution=2)
    plain = small_config(use_layer_scale=False)

    def case(label, cfg, shape, seed, dtype=np.float32):
        weights = seeded_block(cfg, "stages.3.blocks.2", dtype, seed)
        return Case(f"{label}, {np.dtype(dtype).name}", (random(rng, shape, dtype), weights, cfg))

    return [
        case("9 tokens, 24 channels, 2 heads, batch 2", cfg, (2, 9, 24), 4),
        case("4 tokens, 12 channels, 3 heads", other, (1, 4, 12), 5, np.float64),
        case("9 tokens, no layer scale (cfg.use_layer_scale=False)", plain, (1, 9, 24), 6),
    ]


def meta3d_variant(x, weights, cfg, *, pre_norm=True, norm2=True, sequential=True, **attention_change):
    """Meta3D with one detail switchable (attention_change goes to `attention_variant`)."""
    w = weights

    def ln(t, key):
        return layers.layer_norm(t, w[f"{key}.weight"], w[f"{key}.bias"], cfg.layer_norm_eps)

    def attn(t):
        bias = layers.gather_attention_bias(w["token_mixer.attention_biases"], cfg.resolution)
        return attention_variant(t, w["token_mixer.qkv.weight"], w["token_mixer.qkv.bias"], w["token_mixer.proj.weight"],
                                 w["token_mixer.proj.bias"], bias, cfg.num_attention_heads, cfg.key_dim,
                                 **attention_change)

    def mlp(t):
        return layers.linear(gelu(layers.linear(t, w["mlp.fc1.weight"], w["mlp.fc1.bias"])), w["mlp.fc2.weight"],
                             w["mlp.fc2.bias"])

    if not pre_norm:  # the original Transformer's order: add, then normalise
        mixed, probs = attn(x)
        x = ln(x + scaled(mixed, w, "ls1.gamma", cfg, 2), "norm1")
        return ln(x + scaled(mlp(x), w, "ls2.gamma", cfg, 2), "norm2"), probs
    mixed, probs = attn(ln(x, "norm1"))
    y = x + scaled(mixed, w, "ls1.gamma", cfg, 2)
    source = y if sequential else x
    return y + scaled(mlp(ln(source, "norm2") if norm2 else source), w, "ls2.gamma", cfg, 2), probs


def meta3d(**change):
    def fn(x, weights, cfg):
        return meta3d_variant(x, weights, cfg, **change)
    return fn


META3D_BLOCK = Exercise(
    name="meta3d_block",
    signature="meta3d_block(x, weights, cfg)  # [B, N, C] -> (out [B, N, C], probs [B, h, N, N]); "
              "weights: norm1.weight, token_mixer.qkv.weight, ...",
    summary="the attention block: x += ls1·Attention(LN1(x)); x += ls2·MLP(LN2(x)), MLP = Linear → GELU → Linear",
    reference=meta3d_block,
    cases=meta3d_cases,
    outputs=("out", "probs"),
    mistakes=(
        Mistake("post-norm", "the LayerNorms come after the residual additions (post-norm, as in the original "
                "Transformer); EfficientFormer normalises each branch's input: x + ls1·Attention(LN1(x)).",
                meta3d(pre_norm=False)),
        Mistake("no norm2", "the MLP reads x without norm2: x + ls2·MLP(LN2(x)).", meta3d(norm2=False)),
        Mistake("parallel branches", "both branches read the block's input; the MLP must read x after the attention's "
                "residual.", meta3d(sequential=False)),
        Mistake("no attention bias", "the attention bias is not added: gather token_mixer.attention_biases into an "
                "[h, N, N] matrix (your gather_attention_bias) and add it to the logits.", meta3d(with_bias=False)),
        Mistake("qkv as q|k|v blocks", "q, k and v taken as three blocks instead of per head: the qkv output is, head "
                "after head, [q | k | v].", meta3d(split="blocks")),
    ),
)

# ---------------------------------------------------------------------------------------------
# the whole EfficientFormer on the demo weights

DEMO_CONFIG = dict(depths=[1, 1, 2, 2], hidden_sizes=[16, 32, 48, 64], dim=64, key_dim=16, attention_ratio=2,
                   resolution=4, num_attention_heads=4, num_labels=10)  # the demo weights' architecture


@lru_cache(maxsize=1)
def demo_weights() -> tuple:
    """(config, {name: float32 array}, where they come from): the demo weights when `weights/` holds
    them, else seeded weights for the same architecture (an installed npformer has no weights/)."""
    if DEMO_WEIGHTS.is_file():
        model = ef.EfficientFormerForImageClassificationWithTeacher.from_pretrained(DEMO_WEIGHTS)
        return model.config, {k: np.array(v) for k, v in model.weights.items()}, "demo weights"
    cfg = EfficientFormerConfig(**DEMO_CONFIG)
    return cfg, seeded_weights(cfg), "seeded weights (weights/ not found)"


def efficientformer(pixel_values, weights, cfg):  # [B, 3, S, S] -> [B, num_labels]
    """npformer's EfficientFormerForImageClassificationWithTeacher: the logits, mean of head and head_dist."""
    model = ef.EfficientFormerForImageClassificationWithTeacher(cfg, weights, dtype=pixel_values.dtype)
    return model(pixel_values).logits


def model_cases() -> list[Case]:
    cfg, weights, source = demo_weights()
    rng = np.random.default_rng(1714)
    as64 = {k: v.astype(np.float64) for k, v in weights.items()}
    return [
        Case(f"one 112×112 image, {source}, float32", (random(rng, (1, 3, 112, 112)), weights, cfg)),
        Case(f"a batch of 2, {source}, float32", (random(rng, (2, 3, 112, 112)), weights, cfg)),
        Case(f"one image, {source}, float64", (random(rng, (1, 3, 112, 112), np.float64), as64, cfg)),
    ]


def forward_variant(pixel_values, weights, cfg, *, stem_act=layers.relu, column_major=False, final_norm=True,
                    pooling="mean", heads=("head", "head_dist")):
    """The EfficientFormer forward from npformer's blocks, with one detail switchable."""
    p = Params(weights)
    x = pixel_values
    for conv, norm in (("stem.conv1", "stem.norm1"), ("stem.conv2", "stem.norm2")):
        x = stem_act(ef.conv_bn(x, p, cfg, no_trace, conv, norm, 2, 1))
    for stage in stages(cfg):
        if stage.downsample:
            x = ef.downsample(x, p, cfg, no_trace, stage.downsample)
        for kind, name in stage.blocks:
            if kind == "meta4d":
                x = ef.meta4d_block(x, p, cfg, no_trace, name)
            elif kind == "flat":
                B, C, H, W = x.shape
                order = (0, 3, 2, 1) if column_major else (0, 2, 3, 1)  # tokens n = w·H + h, or n = h·W + w
                x = x.transpose(order).reshape(B, H * W, C)
            else:
                x, _ = ef.meta3d_block(x, p, cfg, no_trace, name)
    if final_norm:
        x = layers.layer_norm(x, p["norm.weight"], p["norm.bias"], cfg.layer_norm_eps)
    pooled = x.mean(axis=1) if pooling == "mean" else x.max(axis=1)  # [B, C]
    return sum(layers.linear(pooled, p[f"{h}.weight"], p[f"{h}.bias"]) for h in heads) / len(heads)


def forward(**change):
    def fn(pixel_values, weights, cfg):
        return forward_variant(pixel_values, weights, cfg, **change)
    return fn


def logits_side_by_side(case, expected, got) -> list[str]:
    """The first image's logits, npformer's and the learner's, class by class."""
    e, g = expected[0][0], got[0]
    if g.shape != expected[0].shape:
        return []
    g = g[0]
    worst = int(np.argmax(np.abs(g.astype(np.float64) - e)))
    return [f"logits of image 0 ({case.label}), class 0 … {e.size - 1}:",
            "  npformer " + "".join(f"{v:9.4f}" for v in e),
            "  yours    " + "".join(f"{v:9.4f}" for v in g),
            f"  largest |Δ| {abs(float(g[worst]) - float(e[worst])):.1e}, at class {worst}; npformer's top class "
            f"{int(np.argmax(e))}, yours {int(np.argmax(g))}"]


EFFICIENTFORMER = Exercise(
    name="efficientformer",
    signature="efficientformer(pixel_values, weights, cfg)  # [B, 3, 112, 112] -> logits [B, 10]",
    summary="the whole forward from your own blocks: stem, 4 stages, LayerNorm, mean over tokens, two heads averaged",
    reference=efficientformer,
    cases=model_cases,
    tolerance={"float32": (1e-4, 1e-4), "float64": (1e-9, 1e-9)},
    report=logits_side_by_side,
    mistakes=(
        Mistake("column-major tokens", "the last stage was flattened column-major (tokens n = w·H + h); tokens are "
                "row-major, n = h·W + w: x.reshape(B, C, H·W).transpose(0, 2, 1). The attention bias only fits "
                "row-major tokens.", forward(column_major=True)),
        Mistake("class head only", "your logits are the class head's alone; EfficientFormer…WithTeacher averages the "
                "two heads: (head(pooled) + head_dist(pooled)) / 2.", forward(heads=("head",))),
        Mistake("no final norm", "the final LayerNorm (norm.weight, norm.bias) is missing before the mean over tokens.",
                forward(final_norm=False)),
        Mistake("max pooling", "the tokens are max-pooled; EfficientFormer takes their mean.", forward(pooling="max")),
        Mistake("no ReLU in the stem", "the stem has no ReLU: conv → BN → ReLU, twice.", forward(stem_act=lambda x: x)),
    ),
)
