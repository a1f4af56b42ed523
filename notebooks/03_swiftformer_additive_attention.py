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
# # 03 — SwiftFormer's additive attention
#
# Self-attention compares every token with every other one, so its cost grows with N². SwiftFormer
# replaces that with *efficient additive attention*. One global query summarises all tokens, and
# each token then interacts only with that summary, so the cost is linear in N. That is why
# SwiftFormer can attend in every stage, even over the 56×56 = 3136 tokens of its first stage
# at 224 px.
#
# **What you'll do**
# - Run one additive attention step by step, check every intermediate's shape, and check the
#   result against the model's own output.
# - Draw each stage's per-token weights over the image.
# - Measure why the first release's ("v1") weights are all exactly 1, and what that costs.
# - Time additive attention against multi-head self-attention as the number of tokens grows.
#
# **What you'll learn**
# - The five lines of additive attention, and where `w_g` enters.
# - Why transformers' SwiftFormer (v1) and timm's (v2) need different weights.
# - How N² shows up in practice.
#
# **What you'll need**
# - `pip install -e ".[notebooks]"`. About 20 seconds, most of it the timing in section 5.
# - The demo SwiftFormer in `weights/`, a SwiftFormer checkpoint of your own (set `WEIGHTS` or
#   `NPFORMER_WEIGHTS`), or nothing: then seeded weights are used.

# %%
import os

# Section 5 times small matrix products. On a busy machine, several BLAS threads waiting for each
# other swamp such timings, so this notebook runs NumPy on one thread (set before NumPy loads).
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import matplotlib.pyplot as plt  # noqa: E402 (after the thread setting)
import numpy as np  # noqa: E402

import npformer  # noqa: E402
from npformer.tools import explain, plots  # noqa: E402

# %%
WEIGHTS = None  # e.g. "../weights/swiftformer-xs" (transformers, v1) or a timm model.safetensors (v2)
chosen = explain.choose_model("swiftformer", weights=WEIGHTS)
model, config = chosen.model, chosen.model.config
print(chosen.description)
print("widths", config.embed_dims, "depths", config.depths, "attention generation", config.attention_generation)

# %% [markdown]
# The demo model was trained on 112 px digits, so we give it a held-out digit. Any other weights
# get the COCO two-cats photo at their own input size.

# %%
image_path = "../tests/fixtures/digits/digit_7_1496.png" if chosen.kind == "demo" else "../tests/fixtures/images/two_cats.png"
pixels = chosen.processor(image_path)["pixel_values"]  # [1, 3, S, S]
S = chosen.size
image = explain.pixels_to_image(pixels)
print(pixels.shape)
assert pixels.shape == (1, 3, S, S)

# %% [markdown]
# ## 1. Where the attention is
#
# Every SwiftFormer stage ends with one *encoder block*, which does three things:
# - a local representation (a depthwise 3×3 convolution);
# - `x += ls1·AdditiveAttention(tokens(x))`;
# - `x += ls2·MLP(x)`.
#
# The other blocks are convolutional (`ConvEncoder`). The shape table, checked cell by cell:

# %%
rows = explain.shape_table(model, pixels)
print(explain.format_shape_table(rows))
for row in rows:
    assert row.traced == row.expected, f"{row.name}: traced {row.traced}, expected {row.expected}"

# %%
blocks = explain.attention_block_names(config)  # one encoder block per stage
shapes = {row.name: row.traced for row in rows}
tokens_per_stage = [shapes[b][2] * shapes[b][3] for b in blocks]
print(blocks)
print("tokens per stage:", tokens_per_stage)
assert len(blocks) == 4 and tokens_per_stage == [(-(-S // 2**k)) ** 2 for k in (2, 3, 4, 5)]

# %% [markdown]
# ## 2. One additive attention, step by step
#
# We take the first stage's encoder block, where the number of tokens is largest. Its input is the
# local representation's output `[B, C, H, W]`, flattened row-major into `[B, N, C]`.
# `explain.attention_input` traces both that input and the model's attention output.

# %%
block = blocks[0]
tokens, model_out = explain.attention_input(model, pixels, block)  # [B, N, C] each
B, N, C = tokens.shape
print(block, "tokens", tokens.shape)
assert (N, C) == (tokens_per_stage[0], config.embed_dims[0])

# %% [markdown]
# `explain.additive_attention_steps` runs the same computation as `npformer/swiftformer.py` but
# keeps every intermediate:
#
# 1. `q, k = to_query(x), to_key(x)` — two linear maps, `[B, N, C]` each.
# 2. `q̂, k̂` — each token's query and key scaled to unit length.
# 3. `scores = q̂·w_g / √C` — one number per token, `[B, N, 1]`. `w_g` is a learned `[C, 1]` vector.
# 4. `weights` — turned into token weights α. **This is where v1 and v2 differ** (section 4).
# 5. `G = Σₙ αₙ q̂ₙ` — the global query, `[B, 1, C]`.
# 6. `out = final(proj(G ⊙ k̂) + q̂)` — every token's key modulated by the one global query.

# %%
steps = explain.additive_attention_steps(tokens, model.weights, f"{block}.attn", config.attention_generation)
for name, value in steps.items():
    print(f"{name:13s} {value.shape}")
expected = {"q": (B, N, C), "k": (B, N, C), "q_hat": (B, N, C), "k_hat": (B, N, C), "scores": (B, N, 1),
            "weights": (B, N, 1), "global_query": (B, 1, C), "out": (B, N, C)}
assert {name: value.shape for name, value in steps.items()} == expected
np.testing.assert_allclose(np.linalg.norm(steps["q_hat"], axis=-1), 1.0, rtol=1e-5)  # unit vectors
print(f"max |steps out − model's attention output| = {np.abs(steps['out'] - model_out).max():.1e}")
np.testing.assert_allclose(steps["out"], model_out, rtol=1e-5, atol=1e-5)

# %% [markdown]
# No `[N, N]` matrix appears anywhere. The largest intermediate is `[B, N, C]`.
#
# ## 3. The token weights, stage by stage
#
# The weights α say how much each token contributes to the global query. The model reports them
# under `<block>.attn.weights`, so one `Trace` collects all four stages. Under v2 a weight can be
# negative: the token's query then counts against the global query.

# %%
trace = npformer.Trace(["*.attn.weights"])
model(pixels, trace=trace)
maps = []
for b, n in zip(blocks, tokens_per_stage):
    w = trace[f"{b}.attn.weights"]  # [B, N, 1]
    side = int(np.sqrt(n))
    assert w.shape == (1, n, 1)
    maps.append(explain.upsample_onto_image(w.reshape(1, side, side), S, S, keep="value")[0])  # [S, S]
    print(f"{b}.attn.weights {w.shape}  sum of squares {np.sum(w**2):.4f}")
fig = plots.image_row([image] + maps, ["input"] + [f"stage {s}: {n} tokens" for s, n in enumerate(tokens_per_stage)],
                      cmap="RdBu_r", symmetric=True, size=2.4, colorbar=True)

# %% [markdown]
# ## 4. v1 against v2: why v1's weights are all ones
#
# SwiftFormer's first release computed step 4 as `softmax(scores, dim=-1)`. transformers copied
# it. But `scores` has shape `[B, N, 1]`, so the last axis has **one** element. A softmax over one
# element is `exp(s − s) / exp(s − s) = 1`, whatever `s` is. On 2023-07-26 the authors changed it
# to an L2 normalisation over the N tokens (v2, which timm uses) and retrained. Let's measure it.

# %%
v1 = explain.additive_attention_steps(tokens, model.weights, f"{block}.attn", "v1")
v2 = explain.additive_attention_steps(tokens, model.weights, f"{block}.attn", "v2")
print("v1 weights: unique values", np.unique(v1["weights"]), " shape", v1["weights"].shape)
print(f"v2 weights: min {v2['weights'].min():+.4f}  max {v2['weights'].max():+.4f}  Σα² = {np.sum(v2['weights'] ** 2):.6f}")
assert np.all(v1["weights"] == 1.0)  # exactly one, every token
np.testing.assert_allclose(np.sum(v2["weights"] ** 2), 1.0, rtol=1e-5)  # unit length over the tokens

# %% [markdown]
# So under v1 the scores never reach the output, and `w_g` is a learned parameter that does
# nothing. To show it, we replace `w_g` with a very different vector and run both generations
# again.

# %%
changed = dict(model.weights)
changed[f"{block}.attn.w_g"] = -7.0 * model.weights[f"{block}.attn.w_g"] + 1.0
for generation in ("v1", "v2"):
    before = explain.additive_attention_steps(tokens, model.weights, f"{block}.attn", generation)["out"]
    after = explain.additive_attention_steps(tokens, changed, f"{block}.attn", generation)["out"]
    print(f"{generation}: max |Δ output| after changing w_g = {np.abs(after - before).max():.3g}")
    if generation == "v1":
        assert np.all(after == before)  # bit for bit: w_g has no effect
    else:
        assert np.abs(after - before).max() > 1e-3

# %% [markdown]
# Under v1 the global query is the plain sum of N unit vectors, so its length grows with the
# number of tokens. Under v2 the weights have unit length, so `|G| ≤ √N`. We measure `|G|` in
# every stage:

# %%
print(f"{'block':20s} {'N':>5s} {'|G| v1':>8s} {'|G| v2':>8s}")
for b in blocks:
    x, _ = explain.attention_input(model, pixels, b)
    norms = [np.linalg.norm(explain.additive_attention_steps(x, model.weights, f"{b}.attn", g)["global_query"])
             for g in ("v1", "v2")]
    print(f"{b:20s} {x.shape[1]:5d} {norms[0]:8.2f} {norms[1]:8.3f}")
    assert norms[0] <= x.shape[1] + 1e-3 and norms[1] <= np.sqrt(x.shape[1]) + 1e-3

# %% [markdown]
# Each generation's weights were trained with its own attention. Running them under the other one
# gives a different network. That is why npformer keeps the generation in the config and in the
# weight file, and refuses to guess it:

# %%
other = explain.simulated_port(model, "other attention generation")
logits = {config.attention_generation: model(pixels).logits[0], other.config.attention_generation: other(pixels).logits[0]}
for generation, row in sorted(logits.items()):
    print(f"run as {generation}: top class {int(np.argmax(row))}, logits {np.round(row[:4], 2)} ...")
assert np.abs(logits["v1"] - logits["v2"]).max() > 1e-3

# %% [markdown]
# ## 5. Cost against the number of tokens
#
# Now we time one token mixer of `C = 64` channels on `N` random tokens. Additive attention uses
# `explain.additive_attention_steps`. Multi-head self-attention uses `layers.multi_head_attention`
# with 4 heads and no bias. `explain.attention_flops` counts the operations: both pay `8·N·C²` for
# their linear layers, and only multi-head attention adds `4·N²·C`.
#
# **Note:** each timing is the fastest of 7 runs on one thread (see the first code cell). On a
# shared machine timings are still noisy, so compare the shapes of the curves, not single
# numbers. Nothing here is asserted about time.

# %%
token_counts = [49, 196, 784, 1568, 3136]  # 7², 14², 28², 2·28², 56²
times = {n: explain.time_attention(n, channels=64, heads=4, repeats=7) for n in token_counts}
flops = {n: explain.attention_flops(n, 64) for n in token_counts}
print(f"{'N':>5s} {'additive ms':>12s} {'multi-head ms':>14s} {'additive MFLOP':>15s} {'multi-head MFLOP':>17s}")
for n in token_counts:
    print(f"{n:5d} {times[n]['additive'] * 1e3:12.2f} {times[n]['multi-head'] * 1e3:14.2f} "
          f"{flops[n]['additive'] / 1e6:15.1f} {flops[n]['multi-head'] / 1e6:17.1f}")
assert flops[3136]["additive"] == 64 * flops[49]["additive"]  # linear in N
assert flops[3136]["multi-head"] > 1000 * flops[49]["multi-head"]  # quadratic term dominates

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
for kind, style in (("additive", "o-"), ("multi-head", "s-")):
    left.loglog(token_counts, [times[n][kind] * 1e3 for n in token_counts], style, label=kind)
    right.loglog(token_counts, [flops[n][kind] / 1e6 for n in token_counts], style, label=kind)
left.set(xlabel="tokens N", ylabel="ms (fastest of 7)", title="measured: C = 64, batch 1, one thread")
right.set(xlabel="tokens N", ylabel="MFLOP", title="counted: 8NC² + 4N²C vs 8NC² + 6NC")
for ax in (left, right):
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()

# %% [markdown]
# At 49 tokens, the 7×7 grid where EfficientFormer attends, the two cost about the same: the
# linear layers dominate. From 49 to 3136 tokens, the tokens grow 64-fold. Additive attention's
# operation count grows 64-fold too. Multi-head attention's N² term grows 4096-fold, and it needs
# an `[h, N, N]` probability matrix: 157 MB in float32 for 4 heads at N = 3136. The measured
# curves follow the counted ones, with noise. That is why EfficientFormer attends only in its
# last stage, while SwiftFormer attends in every stage.
