"""Exercises on attention: EfficientFormer's bias table gathered into an [h, N, N] matrix, its
multi-head attention, SwiftFormer's additive attention in both generations, and
EfficientFormerV2's talking-heads attention."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import layers
from ..checkpoints.seeded import seeded_tensor
from ..models.swiftformer import model as swiftformer
from ..params import Params
from ..trace import no_trace
from .spec import Case, Exercise, Mistake, random

# ---------------------------------------------------------------------------------------------
# the attention bias, gathered


def bias_cases() -> list[Case]:
    rng = np.random.default_rng(1708)

    def case(heads, R, dtype=np.float32):
        label = f"{heads} head{'s' if heads > 1 else ''}, a {R}×{R} grid, {np.dtype(dtype).name}"
        return Case(label, (random(rng, (heads, R * R), dtype), R))

    return [case(2, 3), case(1, 4), case(3, 2, np.float64), case(2, 5)]


def offsets(R):  # -> ([N, N], [N, N]) signed row and column offsets between tokens n = r·R + c
    r, c = np.divmod(np.arange(R * R), R)
    return r[:, None] - r[None, :], c[:, None] - c[None, :]


def rows_and_columns_swapped(table, resolution):
    dr, dc = offsets(resolution)
    return table[:, np.abs(dc) * resolution + np.abs(dr)]


def signed_offsets(table, resolution):
    dr, dc = offsets(resolution)
    return table[:, dr * resolution + dc]  # negative indices wrap around: no error, wrong entries


def manhattan_distance(table, resolution):
    dr, dc = offsets(resolution)
    return table[:, np.abs(dr) + np.abs(dc)]


GATHER_ATTENTION_BIAS = Exercise(
    name="gather_attention_bias",
    signature="gather_attention_bias(table, resolution)  # [h, R²] -> [h, N, N], N = R²",
    summary="spread the learned table (one value per head and offset) into the full bias matrix",
    reference=layers.gather_attention_bias,
    cases=bias_cases,
    mistakes=(
        Mistake("rows and columns swapped", "your index is |Δcol|·R + |Δrow|; the table is laid out row offset first: "
                "|Δrow|·R + |Δcol|.", rows_and_columns_swapped),
        Mistake("signed offsets", "you used signed offsets (r1 − r2)·R + (c1 − c2): NumPy wraps negative indices around "
                "without an error. Take |Δrow| and |Δcol|.", signed_offsets),
        Mistake("distance", "your index is the distance |Δrow| + |Δcol|; each pair (|Δrow|, |Δcol|) has its own entry, "
                "|Δrow|·R + |Δcol|.", manhattan_distance),
    ),
)

# ---------------------------------------------------------------------------------------------
# multi-head attention with the gathered bias


def attention_case(rng, label, B, R, C, h, dk, dv, dtype=np.float32) -> Case:
    N = R * R
    qkv_w = random(rng, (h * (2 * dk + dv), C), dtype, C**-0.5)
    proj_w = random(rng, (C, h * dv), dtype, (h * dv) ** -0.5)
    bias = layers.gather_attention_bias(random(rng, (h, N), dtype), R)
    return Case(f"{label}, {np.dtype(dtype).name}",
                (random(rng, (B, N, C), dtype), qkv_w, random(rng, (h * (2 * dk + dv),), dtype, 0.1), proj_w,
                 random(rng, (C,), dtype, 0.1), bias, h, dk))


def attention_cases() -> list[Case]:
    rng = np.random.default_rng(1709)
    return [
        attention_case(rng, "batch 2, 9 tokens, 8 channels, 2 heads, key dim 4, value dim 8", 2, 3, 8, 2, 4, 8),
        attention_case(rng, "4 tokens, 6 channels, 3 heads, key dim 2, value dim 4", 1, 2, 6, 3, 2, 4, np.float64),
        attention_case(rng, "16 tokens, 16 channels, 4 heads, key dim 4, value dim 8", 1, 4, 16, 4, 4, 8),
    ]


def attention_variant(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim, *,
                      split="per head", with_bias=True, softmax_axis=-1, scale_power=0.5, merge="head major"):
    """EfficientFormer's attention with one detail switchable; the defaults give the reference."""
    B, N, C = x.shape
    h, dk = num_heads, key_dim
    qkv = layers.linear(x, qkv_weight, qkv_bias)  # [B, N, h·(2dk + dv)]
    dv = qkv.shape[-1] // h - 2 * dk
    if split == "per head":
        qkv = qkv.reshape(B, N, h, 2 * dk + dv).transpose(0, 2, 1, 3)  # [B, h, N, 2dk + dv]
        q, k, v = qkv[..., :dk], qkv[..., dk:2 * dk], qkv[..., 2 * dk:]
    else:  # one block of q for all heads, then k, then v
        q, k, v = np.split(qkv, [h * dk, 2 * h * dk], axis=-1)
        q, k = (t.reshape(B, N, h, dk).transpose(0, 2, 1, 3) for t in (q, k))
        v = v.reshape(B, N, h, dv).transpose(0, 2, 1, 3)
    logits = np.matmul(q, k.transpose(0, 1, 3, 2)) * x.dtype.type(dk**-scale_power)  # [B, h, N, N]
    if with_bias:
        logits = logits + attn_bias
    probs = layers.softmax(logits, axis=softmax_axis)
    out = np.matmul(probs, v)  # [B, h, N, dv]
    out = out.transpose(0, 2, 1, 3) if merge == "head major" else out.transpose(0, 2, 3, 1)  # [B, N, h, dv] | [B, N, dv, h]
    return layers.linear(out.reshape(B, N, h * dv), proj_weight, proj_bias), probs


def variant(**change):
    def fn(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim):
        return attention_variant(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim,
                                 **change)
    return fn


MULTI_HEAD_ATTENTION = Exercise(
    name="multi_head_attention",
    signature="multi_head_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim)"
              "  # [B, N, C] -> (out [B, N, C], probs [B, h, N, N])",
    summary="softmax(q·kᵀ/√dk + bias)·v per head, qkv interleaved per head as [q | k | v]",
    reference=layers.multi_head_attention,
    cases=attention_cases,
    outputs=("out", "probs"),
    mistakes=(
        Mistake("qkv as q|k|v blocks", "q, k and v taken as three blocks (all heads' q, then all k, then all v) instead "
                "of per head: the qkv output is, head after head, [q (dk) | k (dk) | v (dv)].", variant(split="blocks")),
        Mistake("no attention bias", "the attention bias is not added to the logits: q·kᵀ/√dk + attn_bias.",
                variant(with_bias=False)),
        Mistake("softmax over queries", "softmax over the wrong axis: over the queries (axis −2) instead of the keys "
                "(the last axis); each row of probs must sum to 1.", variant(softmax_axis=-2)),
        Mistake("scaled by 1/dk", "the logits are scaled by 1/dk instead of 1/√dk.", variant(scale_power=1.0)),
        Mistake("not scaled", "the logits are not scaled: multiply q·kᵀ by 1/√dk.", variant(scale_power=0.0)),
        Mistake("heads merged in the wrong order", "the heads' outputs are concatenated in the wrong order: channel "
                "d·h + head instead of head·dv + d (transpose [B, h, N, dv] to [B, N, h, dv] before the reshape).",
                variant(merge="value major")),
    ),
)

# ---------------------------------------------------------------------------------------------
# SwiftFormer's additive attention, both generations

ADDITIVE_KEYS = ("to_query.weight", "to_query.bias", "to_key.weight", "to_key.bias", "w_g", "proj.weight", "proj.bias",
                 "final.weight", "final.bias")


def additive_weights(C, seed, dtype) -> dict:
    """{timm name below `attn.`: array}, drawn as npformer's seeded weights are."""
    shapes = {"w_g": (C, 1)} | {k: (C, C) if k.endswith("weight") else (C,) for k in ADDITIVE_KEYS if k != "w_g"}
    return {k: seeded_tensor(f"stages.0.blocks.0.attn.{k}", shapes[k], seed).astype(dtype) for k in ADDITIVE_KEYS}


def additive_cases() -> list[Case]:
    rng = np.random.default_rng(1710)

    def case(generation, B, N, C, seed, dtype=np.float32):
        return Case(f"{generation}, batch {B}, {N} tokens, {C} channels, {np.dtype(dtype).name}",
                    (random(rng, (B, N, C), dtype), additive_weights(C, seed, dtype), generation))

    return [case("v1", 2, 6, 8, 1), case("v2", 2, 6, 8, 1), case("v2", 1, 5, 4, 2, np.float64),
            case("v1", 1, 9, 4, 3, np.float64)]


def additive_attention(x, weights, generation):  # [B, N, C] -> [B, N, C]
    """npformer's SwiftFormer additive attention (`models/swiftformer/model.py`) on a block's weights."""
    p = Params({f"attn.{k}": v for k, v in weights.items()})
    return swiftformer.additive_attention(x, p, SimpleNamespace(attention_generation=generation), no_trace, "attn")


def additive_variant(x, weights, generation, *, token_weights=None, normalise=True, residual=True):
    """The additive attention with one detail switchable; `token_weights(scores, generation)` replaces
    the generation's rule for the per-token weights."""
    w = weights
    C = x.shape[-1]
    q = layers.linear(x, w["to_query.weight"], w["to_query.bias"])  # [B, N, C]
    k = layers.linear(x, w["to_key.weight"], w["to_key.bias"])
    if normalise:
        q, k = layers.l2_normalize(q, axis=-1), layers.l2_normalize(k, axis=-1)
    scores = np.matmul(q, w["w_g"]) * x.dtype.type(C**-0.5)  # [B, N, 1]
    rule = token_weights or generation_rule
    alpha = rule(scores, generation)
    global_query = np.sum(alpha * q, axis=1, keepdims=True)  # [B, 1, C]
    out = layers.linear(global_query * k, w["proj.weight"], w["proj.bias"])
    if residual:
        out = out + q
    return layers.linear(out, w["final.weight"], w["final.bias"])


def generation_rule(scores, generation):  # [B, N, 1] -> [B, N, 1]
    return layers.softmax(scores, axis=-1) if generation == "v1" else layers.l2_normalize(scores, axis=1)


def softmax_over_tokens(scores, generation):
    return layers.softmax(scores, axis=1)


def swapped_generations(scores, generation):
    return generation_rule(scores, {"v1": "v2", "v2": "v1"}[generation])


def v2_normalised_over_last_axis(scores, generation):
    return generation_rule(scores, "v1") if generation == "v1" else layers.l2_normalize(scores, axis=-1)


def additive(**change):
    def fn(x, weights, generation):
        return additive_variant(x, weights, generation, **change)
    return fn


ADDITIVE_ATTENTION = Exercise(
    name="additive_attention",
    signature="additive_attention(x, weights, generation)  # [B, N, C] -> [B, N, C]; weights: to_query.weight, ...",
    summary="SwiftFormer's efficient additive attention, v1 (softmax over a size-1 axis) and v2 (L2 over tokens)",
    reference=additive_attention,
    cases=additive_cases,
    mistakes=(
        Mistake("softmax over tokens", "softmax over the wrong axis: your token weights are a softmax over the tokens. "
                "v1 (transformers, the first release) takes it over the last axis, of size 1, so every weight is exactly "
                "1; v2 L2-normalises the scores over the tokens.", additive(token_weights=softmax_over_tokens)),
        Mistake("generations swapped", "v1 and v2 are swapped: v1's weights are softmax(scores, axis=-1) (all ones), "
                "v2's are the scores L2-normalised over the tokens (axis 1).",
                additive(token_weights=swapped_generations)),
        Mistake("v2 over the last axis", "v2's scores are L2-normalised over the last axis, of size 1, which leaves only "
                "their signs (±1); normalise over the tokens, axis 1.",
                additive(token_weights=v2_normalised_over_last_axis)),
        Mistake("q and k not normalised", "q and k are not L2-normalised over the channels before the scores and the "
                "global query (q̂ = q / ‖q‖, k̂ = k / ‖k‖).", additive(normalise=False)),
        Mistake("no q̂ residual", "the q̂ residual is missing: out = final(proj(G ⊙ k̂) + q̂).", additive(residual=False)),
    ),
)

# ---------------------------------------------------------------------------------------------
# EfficientFormerV2's talking-heads attention


def talking_case(rng, label, B, h, N, M, dk, dv, heads=True, dtype=np.float32) -> Case:
    def mix():
        w = (np.eye(h) + rng.normal(0.0, 0.5, (h, h))).reshape(h, h, 1, 1).astype(dtype)
        return w, random(rng, (h,), dtype, 0.1)

    pair1, pair2 = (mix(), mix()) if heads else (None, None)
    q, k, v = random(rng, (B, h, N, dk), dtype), random(rng, (B, h, M, dk), dtype), random(rng, (B, h, M, dv), dtype)
    return Case(f"{label}, {np.dtype(dtype).name}", (q, k, v, random(rng, (h, N, M), dtype), pair1, pair2))


def talking_cases() -> list[Case]:
    rng = np.random.default_rng(1711)
    return [
        talking_case(rng, "batch 2, 3 heads, 6 queries over 6 keys, both talking heads", 2, 3, 6, 6, 4, 5),
        talking_case(rng, "2 heads, 4 queries over 4 keys, both talking heads", 1, 2, 4, 4, 3, 2, dtype=np.float64),
        talking_case(rng, "4 queries over 9 keys, both talking heads", 1, 3, 4, 9, 4, 3),
        talking_case(rng, "downsampling: 4 queries over 9 keys, no talking heads", 1, 2, 4, 9, 4, 3, heads=False),
    ]


def mix_heads(x, pair, transposed=False):  # [B, h, N, M] -> [B, h, N, M]
    if pair is None:
        return x
    w, b = pair
    w = w[:, :, 0, 0].T if transposed else w[:, :, 0, 0]  # [h′, h]
    return np.einsum("ij,bjnm->binm", w, x) + b.reshape(1, -1, 1, 1)


def talking_variant(q, k, v, bias, talking_head1=None, talking_head2=None, *, transposed=False,
                    second_before_softmax=False, return_mixed=False, use_heads=True, softmax_axis=-1,
                    bias_after_mix=False):
    """The talking-heads attention with one detail switchable; the defaults give the reference."""
    th1, th2 = (talking_head1, talking_head2) if use_heads else (None, None)
    logits = np.matmul(q, k.transpose(0, 1, 3, 2)) * q.dtype.type(q.shape[-1] ** -0.5)  # [B, h, N, M]
    if not bias_after_mix:
        logits = logits + bias
    logits = mix_heads(logits, th1, transposed)
    if bias_after_mix:
        logits = logits + bias
    if second_before_softmax:
        logits = mix_heads(logits, th2, transposed)
    probs = layers.softmax(logits, axis=softmax_axis)
    mixed = probs if second_before_softmax else mix_heads(probs, th2, transposed)
    return np.matmul(mixed, v), (mixed if return_mixed else probs)


def talking(**change):
    def fn(q, k, v, bias, talking_head1=None, talking_head2=None):
        return talking_variant(q, k, v, bias, talking_head1, talking_head2, **change)
    return fn


TALKING_HEADS_ATTENTION = Exercise(
    name="talking_heads_attention",
    signature="talking_heads_attention(q, k, v, bias, talking_head1=None, talking_head2=None)"
              "  # [B, h, N, dk], [B, h, M, dk], [B, h, M, dv], [h, N, M] -> (out [B, h, N, dv], probs [B, h, N, M])",
    summary="EfficientFormerV2's attention: heads mixed by a 1×1 conv before the softmax and again after it",
    reference=layers.talking_heads_attention,
    cases=talking_cases,
    outputs=("out", "probs"),
    mistakes=(
        Mistake("mix transposed", "the talking-head weight is used transposed: out[h′] = Σ_h W[h′, h, 0, 0]·in[h] "
                "(a 1×1 convolution with the heads as channels).", talking(transposed=True)),
        Mistake("second mix before the softmax", "both talking heads mix the logits; the second one mixes the "
                "probabilities, after the softmax.", talking(second_before_softmax=True)),
        Mistake("probs after the second mix", "the probs you return are those after talking head 2; return the softmax "
                "output itself (each row sums to 1), and use the mixed ones only for A·v.", talking(return_mixed=True)),
        Mistake("no talking heads", "the talking heads are not applied: mix the heads' logits with talking_head1 before "
                "the softmax and the probabilities with talking_head2 after it (when they are not None).",
                talking(use_heads=False)),
        Mistake("softmax over queries", "softmax over the wrong axis: over the queries (axis −2) instead of the keys "
                "(the last axis).", talking(softmax_axis=-2)),
        Mistake("bias after the mix", "the position bias is added after talking head 1; add it to q·kᵀ/√dk first, then "
                "mix.", talking(bias_after_mix=True)),
    ),
)
