# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises 03 — Attention, three ways
#
# The three families npformer implements attend in three different ways: EfficientFormer with
# multi-head self-attention plus a learned position bias, SwiftFormer with one global query
# ("additive attention"), EfficientFormerV2 with heads that talk to each other.
#
# **What you'll do**
# - Spread EfficientFormer's bias table (one number per head and relative offset) into a full
#   query × key matrix.
# - Write EfficientFormer's multi-head attention with that bias.
# - Write SwiftFormer's additive attention, in both of its generations.
# - Write EfficientFormerV2's talking-heads attention.
#
# **What you'll learn**
# - How a 7×7 grid's 49×49 bias comes from only 49 learned numbers per head.
# - How one fused qkv projection is split into heads, and the classic way to split it wrongly.
# - Why SwiftFormer's first release had attention weights that were all exactly 1.
# - Where the talking heads mix the heads, before and after the softmax.
#
# **What you'll need**
# - numpy and npformer (`pip install -e .`). No torch. About 40 minutes.
#
# Each exercise: replace `raise NotImplementedError()` with your code, then run the `check` cell
# after it. It prints `passed`, or what is wrong; when your output matches a common mistake it
# names it. Shapes: `B` batch, `N` tokens (queries), `M` keys, `C` channels, `h` heads, `dk` key
# dim, `dv` value dim, `R` the side of the token grid (`N = R²`).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

from npformer.exercises import check

# %% [markdown]
# ## 1. The attention bias, gathered
#
# EfficientFormer's last stage is an `R×R` grid of tokens, numbered row by row: token `n` sits at
# row `n // R`, column `n % R`. Its attention adds a learned bias to every query–key logit, and the
# bias depends only on how far apart the two tokens are, `(|Δrow|, |Δcol|)`. There are `R·R` such
# offsets, so each head learns a table of `R²` numbers, entry `|Δrow|·R + |Δcol|` for an offset.
#
# Build the `[N, N]` index of which table entry each (query, key) pair uses, and gather the table
# with it into an `[h, N, N]` bias. (`np.divmod(np.arange(N), R)` gives each token's row and column.)

# %% nbgrader={"grade": false, "grade_id": "gather_attention_bias", "locked": false, "schema_version": 3, "solution": true, "task": false}
def gather_attention_bias(table, resolution):  # [h, R²] -> [h, N, N]
    """The learned table spread over every (query, key) pair of an R×R grid."""
    ### BEGIN SOLUTION
    R = resolution
    row, col = np.divmod(np.arange(R * R), R)  # [N] each
    index = np.abs(row[:, None] - row[None, :]) * R + np.abs(col[:, None] - col[None, :])  # [N, N]
    return table[:, index]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_gather_attention_bias", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("gather_attention_bias", gather_attention_bias)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Multi-head attention with the bias
#
# One linear layer, `qkv = x·qkv_weightᵀ + qkv_bias`, makes the queries, keys and values of every
# head at once: `[B, N, h·(2·dk + dv)]`. Its channels are laid out **per head**: head 0's
# `[q (dk) | k (dk) | v (dv)]`, then head 1's, and so on. (Reading it as all heads' q, then all k,
# then all v is the classic porting mistake.) Then, per head:
#
# `probs = softmax(q·kᵀ / √dk + attn_bias)` over the keys (the last axis), `out = probs·v`.
#
# The heads' outputs are concatenated per token, channel `head·dv + d`, and projected back:
# `out·proj_weightᵀ + proj_bias`. Return the output and the probabilities. For the softmax,
# subtract each row's maximum before `np.exp` (it changes nothing but keeps exp from overflowing).

# %% nbgrader={"grade": false, "grade_id": "multi_head_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multi_head_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim):
    """EfficientFormer's attention: [B, N, C] -> (out [B, N, C], probs [B, h, N, N])."""
    ### BEGIN SOLUTION
    B, N, C = x.shape
    h, dk = num_heads, key_dim
    qkv = x @ qkv_weight.T + qkv_bias  # [B, N, h·(2dk + dv)]
    qkv = qkv.reshape(B, N, h, -1).transpose(0, 2, 1, 3)  # [B, h, N, 2dk + dv]
    q, k, v = qkv[..., :dk], qkv[..., dk:2 * dk], qkv[..., 2 * dk:]
    logits = q @ k.transpose(0, 1, 3, 2) * dk**-0.5 + attn_bias  # [B, h, N, N]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(B, N, -1)  # [B, N, h·dv], channel head·dv + d
    return out @ proj_weight.T + proj_bias, probs
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_multi_head_attention", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("multi_head_attention", multi_head_attention)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 3. SwiftFormer's additive attention, both generations
#
# SwiftFormer replaces the `N×N` attention matrix with one global query, so its cost grows
# linearly with the number of tokens. With `weights` holding the block's tensors
# (`"to_query.weight"`, `"to_query.bias"`, `"to_key.weight"`, `"to_key.bias"`, `"w_g"` `[C, 1]`,
# `"proj.weight"`, `"proj.bias"`, `"final.weight"`, `"final.bias"`; linear weights are `[out, in]`):
#
# 1. `q = x·Wqᵀ + bq`, `k = x·Wkᵀ + bk`, each L2-normalised over the channels: `q̂ = q / ‖q‖`
#    (divide by `max(‖q‖, 1e-12)`, as `torch.nn.functional.normalize`).
# 2. One score per token, `scores = q̂·w_g / √C`: `[B, N, 1]`.
# 3. Token weights `α` from the scores, by generation:
#    - **v1** (the first release, and transformers): `softmax(scores)` over the **last** axis. That
#      axis has size 1, so every weight is exactly 1. This is what the checkpoints were trained
#      with; reproduce it, do not "fix" it.
#    - **v2** (the authors' correction of 2023, and timm): the scores L2-normalised over the tokens
#      (axis 1).
# 4. The global query `G = Σ_n α_n·q̂_n`: `[B, 1, C]`.
# 5. `out = final(proj(G ⊙ k̂) + q̂)`, where `proj` and `final` are the two linear layers.

# %% nbgrader={"grade": false, "grade_id": "additive_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_attention(x, weights, generation):  # [B, N, C] -> [B, N, C]
    """SwiftFormer's efficient additive attention; generation is "v1" or "v2"."""
    ### BEGIN SOLUTION
    w = weights
    C = x.shape[-1]

    def l2_normalize(t, axis):
        return t / np.maximum(np.sqrt((t * t).sum(axis=axis, keepdims=True)), 1e-12)

    q = l2_normalize(x @ w["to_query.weight"].T + w["to_query.bias"], axis=-1)  # [B, N, C]
    k = l2_normalize(x @ w["to_key.weight"].T + w["to_key.bias"], axis=-1)  # [B, N, C]
    scores = q @ w["w_g"] * C**-0.5  # [B, N, 1]
    if generation == "v1":
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        alpha = e / e.sum(axis=-1, keepdims=True)  # a softmax over one element: all ones
    else:
        alpha = l2_normalize(scores, axis=1)  # over the tokens
    global_query = (alpha * q).sum(axis=1, keepdims=True)  # [B, 1, C]
    out = (global_query * k) @ w["proj.weight"].T + w["proj.bias"] + q
    return out @ w["final.weight"].T + w["final.bias"]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_additive_attention", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("additive_attention", additive_attention)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 4. EfficientFormerV2's talking heads
#
# EfficientFormerV2's attention takes the queries, keys and values already split into heads:
# `q [B, h, N, dk]`, `k [B, h, M, dk]`, `v [B, h, M, dv]`, and a position bias `[h, N, M]`. Its
# heads talk: a **talking head** is a 1×1 convolution with the heads as channels, weight
# `[h, h, 1, 1]` and bias `[h]`, so that head `h′` of its output is `Σ_h W[h′, h, 0, 0]·in[h] + b[h′]`
# at every (query, key):
#
# 1. `logits = q·kᵀ / √dk + bias`
# 2. mix the logits with `talking_head1`
# 3. `probs = softmax(logits)` over the keys
# 4. mix the probabilities with `talking_head2`, and `out = mixed·v`.
#
# `talking_head1` and `talking_head2` are `(weight, bias)` pairs, or None: the attention that
# downsamples into the last stage has no talking heads. Return `out` and `probs` (the softmax's
# output, before the second mix, so that each row sums to 1).

# %% nbgrader={"grade": false, "grade_id": "talking_heads_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def talking_heads_attention(q, k, v, bias, talking_head1=None, talking_head2=None):
    """EfficientFormerV2's attention core: -> (out [B, h, N, dv], probs [B, h, N, M])."""
    ### BEGIN SOLUTION
    def mix(t, pair):  # [B, h, N, M] -> [B, h, N, M]: head h′ = Σ_h W[h′, h]·t[h] + b[h′]
        if pair is None:
            return t
        weight, b = pair
        return np.einsum("ij,bjnm->binm", weight[:, :, 0, 0], t) + b.reshape(1, -1, 1, 1)

    logits = mix(q @ k.transpose(0, 1, 3, 2) * q.shape[-1] ** -0.5 + bias, talking_head1)  # [B, h, N, M]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    return mix(probs, talking_head2) @ v, probs
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_talking_heads_attention", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
result = check("talking_heads_attention", talking_heads_attention)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## What next
#
# Notebook 04 assembles EfficientFormer's blocks and then the whole model from your layers. The
# teaching notebooks `../03_swiftformer_additive_attention.ipynb` (why v1's weights are all ones,
# measured) and `../05_efficientformerv2_stage_by_stage.ipynb` (each talking head's effect, per
# head) show these attentions inside trained models.
