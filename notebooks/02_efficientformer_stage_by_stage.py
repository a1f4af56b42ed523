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
# # 02 — EfficientFormer, stage by stage
#
# One image goes through an EfficientFormer. We stop after every stage to check the tensor's shape
# and to look at it.
#
# **What you'll do**
# - Build the model's shape table from its config alone, then check it cell by cell against a
#   traced forward pass.
# - Look at feature maps after the stem and after each of the four stages.
# - See the pooling token mixer as a high-pass filter, both on the image and in frequency space.
# - Draw each attention head's map over the image, and the learned position bias of each head.
#
# **What you'll learn**
# - How EfficientFormer goes from 4D conv-style blocks (`[B, C, H, W]`) to 3D transformer blocks
#   (`[B, N, C]`), and where it switches.
# - What `npformer.Trace` records, and how to ask for any intermediate by name.
# - What an attention head looks at, and what it prefers by position alone.
#
# **What you'll need**
# - `pip install -e ".[notebooks]"`, and notebook 01 helps. About 10 seconds.
# - The demo weights in `weights/`, or a checkpoint of your own (set `WEIGHTS` or the environment
#   variable `NPFORMER_WEIGHTS`). Without either, seeded weights are used.

# %%
import os
from pathlib import Path

import numpy as np

import npformer
from npformer import layers
from npformer.tools import explain, plots

# %%
WEIGHTS = None  # e.g. "../weights/efficientformer-l1-300" (a transformers directory) or an npformer .safetensors
chosen = explain.choose_model("efficientformer", weights=WEIGHTS)
model, config = chosen.model, chosen.model.config
print(chosen.description)
print("widths", config.hidden_sizes, "depths", config.depths, "Meta3D blocks", config.num_meta3d_blocks,
      "heads", config.num_attention_heads, "key dim", config.key_dim, "attention grid", config.resolution)

# %% [markdown]
# **Which image, and why.** Attention pictures only mean something when the weights are
# trained. With the demo weights (a small EfficientFormer trained on handwritten digits at
# 112 px) we use a held-out digit from `tests/fixtures/digits/` (UCI digits, CC BY 4.0). Its last
# stage is a 4×4 grid of 16 tokens. With a real ImageNet checkpoint we use the COCO two-cats photo
# at 224 px, where the grid is 7×7 = 49 tokens. Seeded weights also get the photo. Their feature
# maps still show the network's structure, but their attention is noise, because the weights are
# random.

# %%
if chosen.kind == "demo":
    image_path = Path("../tests/fixtures/digits/digit_3_705.png")  # a held-out "3"
else:
    image_path = Path("../tests/fixtures/images/two_cats.png")  # COCO val2017 000000039769
pixels = chosen.processor(image_path)["pixel_values"]  # [1, 3, S, S]
S = chosen.size
image = explain.pixels_to_image(pixels)  # [S, S, 3] for display
print(image_path.name, pixels.shape, pixels.dtype)
assert pixels.shape == (1, 3, S, S)

# %% [markdown]
# ## 1. The shape table, from the config and from a trace
#
# Every block of an npformer model reports its output under its weight prefix (`stem`,
# `stages.0.blocks.1`, `norm`, ...). `explain.expected_shapes` predicts each shape from the
# config's arithmetic alone:
# - the stem halves the side twice;
# - each downsample halves it again, so the sides are `S/4, S/8, S/16, S/32`;
# - blocks keep the shape;
# - the *flatten* step in the last stage turns `[B, C, H, W]` into `[B, H·W, C]`.
#
# `explain.shape_table` then runs the model with a `Trace` of exactly those names and fills in
# what came out.

# %%
rows = explain.shape_table(model, pixels)
print(explain.format_shape_table(rows))

# %%
for row in rows:  # every cell: the config's arithmetic against the traced tensor
    assert row.traced == row.expected, f"{row.name}: traced {row.traced}, expected {row.expected}"
shapes = {row.name: row.expected for row in rows}
side = [-(-S // 4), -(-S // 8), -(-S // 16), -(-S // 32)]  # ⌈S/4⌉ ... ⌈S/32⌉
assert shapes["stem"] == (1, config.hidden_sizes[0], side[0], side[0])
assert side[3] == config.resolution  # the last stage is exactly the attention grid
assert shapes["norm"] == (1, config.resolution**2, config.width)  # tokens from here on
print(f"{len(rows)} rows agree; the last stage is {side[3]}×{side[3]} = {side[3] ** 2} tokens of {config.width} channels")

# %% [markdown]
# ## 2. Everything, traced once
#
# A `Trace()` with no patterns records every named activation. We keep it for the rest of the
# notebook.

# %%
trace = npformer.Trace()
out = model(pixels, output_attentions=True, trace=trace)
print(len(trace), "activations, e.g.", list(trace)[:6])
print("logits", out.logits.shape, " attentions", [a.shape for a in out.attentions])
assert out.logits.shape == (1, config.num_labels)
assert out.attentions[0].shape == (1, config.num_attention_heads, config.resolution**2, config.resolution**2)

# %% [markdown]
# ## 3. The stem
#
# The stem is `conv3×3/2 → BN → ReLU → conv3×3/2 → BN → ReLU`. Below are its 16 busiest output
# channels (largest spatial spread first), each scaled to its own range.

# %%
stem = trace["stem"][0]  # [C0, S/4, S/4]
print("stem.conv1", trace["stem.conv1"].shape, "-> stem", trace["stem"].shape)
assert trace["stem.conv1"].shape == (1, config.hidden_sizes[0] // 2, side[0] * 2, side[0] * 2)
fig = plots.image_row([image, explain.feature_grid(stem, count=16, cols=4)],
                      ["input", f"stem: 16 of {stem.shape[0]} channels, {stem.shape[1]}×{stem.shape[2]}"], size=3.2)

# %% [markdown]
# ## 4. Four stages
#
# Each stage after the first starts with a downsample (`conv3×3/2 → BN`) that halves the side
# and widens the channels. Stages 0–2 are Meta4D pooling blocks. The last stage also ends with
# Meta3D attention blocks on tokens, so we fold its `[B, N, C]` back into `[B, C, R, R]` to draw
# it.

# %%
stage_maps = []
for stage in range(4):
    x = trace[f"stages.{stage}"]
    fmap = explain.tokens_to_map(x)[0] if x.ndim == 3 else x[0]  # [C, H, W]
    print(f"stages.{stage}: traced {x.shape} -> drawn as {fmap.shape}")
    assert fmap.shape == (config.hidden_sizes[stage], side[stage], side[stage])
    stage_maps.append(fmap)
fig = plots.image_row([explain.feature_grid(f, count=16, cols=4) for f in stage_maps],
                      [f"stage {s}: {f.shape[1]}×{f.shape[2]}, {f.shape[0]} channels" for s, f in enumerate(stage_maps)],
                      size=3.0)

# %% [markdown]
# Early channels respond to strokes and edges at full detail. Later ones are coarse and abstract:
# at `S/32` each position stands for a `32×32` patch of the input.
#
# ## 5. Inside a Meta4D block: pooling as a high-pass filter
#
# A Meta4D block computes `x += ls1·(avgpool(x) − x)`, then `x += ls2·MLP(x)`. The token mixer
# `avgpool(x) − x` subtracts each pixel's neighbourhood mean from the pixel. Flat regions become
# zero; edges and texture survive. That is a high-pass filter. Away from the border it is a
# convolution with the kernel `box/9 − δ`, and its frequency response is exactly zero at
# frequency zero.

# %%
kernel = explain.pool_mixer_kernel(3)  # [3, 3]
response = explain.frequency_response(kernel, n=64)  # [64, 64], zero frequency at the centre
print(kernel.round(3))
print(f"|response|: {response[32, 32]:.1e} at zero frequency, {response[0, 0]:.3f} at the highest (π, π), "
      f"{response.max():.3f} at most")
assert response.shape == (64, 64) and response[32, 32] < 1e-12
np.testing.assert_allclose(response[0, 0], 8 / 9)  # |1/9 − 1|: the box cancels to 1/9 at (π, π)

# %%
fig = plots.image_row([kernel, response], ["kernel: box/9 − δ", "|frequency response|, zero at the centre"],
                      cmap="magma", size=2.6, colorbar=True)

# %%
block_in = trace["stem"][0]  # [C0, S/4, S/4]: the first block of stage 0 reads the stem's output
mixer = trace["stages.0.blocks.0.token_mixer"][0]  # avgpool(x) − x, same shape
c = int(explain.channels_by_spread(block_in)[0])
assert mixer.shape == block_in.shape
np.testing.assert_allclose(mixer, layers.pool_mixer(block_in[None])[0], rtol=1e-6, atol=1e-6)  # what the model ran
fig = plots.image_row([image, block_in[c], mixer[c]],
                      ["input", f"stage 0 input, channel {c}", "its token mixer output\n(red > 0 > blue)"],
                      cmap="RdBu_r", symmetric=True, size=2.8)

# %% [markdown]
# On the feature map the mixer keeps the stroke's outline: positive just outside the stroke's
# edge, negative just inside, and zero where the map is flat. The block adds `x` back, scaled per
# channel by the learned layer scale `ls1`:
# `x + ls1·(avgpool(x) − x) = (1 − ls1)·x + ls1·avgpool(x)`. A channel with `ls1 > 0` is blended
# towards its blurred self. A channel with `ls1 < 0` is sharpened, like an unsharp mask. What did
# training choose?

# %%
if "stages.0.blocks.0.ls1.gamma" in model.weights:  # configs without layer scale have none
    ls1 = model.weights["stages.0.blocks.0.ls1.gamma"]  # [C0]
    print(f"stages.0.blocks.0 ls1 {ls1.shape}: {np.sum(ls1 > 0)} channels blend towards the blur, "
          f"{np.sum(ls1 < 0)} are sharpened; range {ls1.min():+.2f} .. {ls1.max():+.2f}")
    assert ls1.shape == (config.hidden_sizes[0],)

# %% [markdown]
# After the mixer, a per-pixel MLP (1×1 convolutions) mixes the channels.
#
# ## 6. The Meta3D block: attention per head
#
# In the last stage the map is flattened into `N = R·R` tokens (token `n = r·R + c`, row-major). A
# Meta3D block then runs `x += ls1·Attention(LN(x))` and `x += ls2·MLP(LN(x))`. The attention
# probabilities are `[B, h, N, N]`: one row per query, one column per key.
#
# For each head, `explain.attention_maps` averages the rows over all queries. The result says how
# much attention each key position receives. `explain.upsample_onto_image` spreads each token's
# share evenly over the `S/R × S/R` pixels it stands for. Every upsampled map still sums to 1.

# %%
attn_name = explain.attention_block_names(config)[-1]
probs = trace[f"{attn_name}.token_mixer.attn_probs"][0]  # [h, N, N]
h, N, _ = probs.shape
R = config.resolution
print(attn_name, "attention", probs.shape)
assert (h, N) == (config.num_attention_heads, R * R)
received = explain.upsample_onto_image(explain.attention_maps(probs), S, S)  # [h, S, S]
print("upsampled", received.shape, "sums", received.sum(axis=(1, 2)).round(6))
assert received.shape == (h, S, S)
np.testing.assert_allclose(received.sum(axis=(1, 2)), 1.0, atol=1e-5)

# %%
fig = plots.image_row([image] * (h + 1), ["input"] + [f"head {i}: mean over queries" for i in range(h)],
                      overlays=[None] + list(received), size=2.3, cols=min(h + 1, 5))

# %% [markdown]
# Now one query: the token at the centre of the image. Where does each head send it?

# %%
query = (R // 2) * R + R // 2
from_query = explain.upsample_onto_image(explain.attention_maps(probs, query=query), S, S)  # [h, S, S]
assert from_query.shape == (h, S, S)
np.testing.assert_allclose(from_query.sum(axis=(1, 2)), 1.0, atol=1e-5)
fig = plots.image_row([image] * h, [f"head {i}: query {divmod(query, R)}" for i in range(h)],
                      overlays=list(from_query), size=2.3, cols=min(h, 4))
for ax in fig.axes[:h]:
    plots.mark_token(ax, query, R, S, S)

# %% [markdown]
# ## 7. The learned position bias, per head
#
# Each head adds a learned bias `table[head, |Δr|·R + |Δc|]` to its logits, whatever the image
# (see notebook 01). `explain.bias_relative_map` draws it with the query at the centre and every
# key at its offset `(Δr, Δc)`. Bright means "this head likes keys at that offset".

# %%
table = model.weights[f"{attn_name}.token_mixer.attention_biases"]  # [h, R²]
relative = explain.bias_relative_map(table, R)  # [h, 2R − 1, 2R − 1]
print("table", table.shape, "-> relative maps", relative.shape)
assert table.shape == (h, R * R) and relative.shape == (h, 2 * R - 1, 2 * R - 1)
assert np.all(relative == relative[:, ::-1, :]) and np.all(relative == relative[:, :, ::-1])  # only |Δ| counts
fig = plots.image_row(list(relative), [f"head {i}: bias by (Δr, Δc)" for i in range(h)], cmap="viridis",
                      size=2.4, colorbar=True, cols=min(h, 4))

# %%
for i in range(h):
    low, high = divmod(int(table[i].argmin()), R), divmod(int(table[i].argmax()), R)
    print(f"head {i}: lowest bias at offset (|Δr|, |Δc|) = {low}, highest at {high}, "
          f"range {table[i].min():+.2f} .. {table[i].max():+.2f}")

# %% [markdown]
# With the demo weights, every head gives its lowest bias to offset (0, 0). Whatever the content,
# each token is nudged to look *away from itself*, towards other parts of the digit. Two steps to
# the side, `|Δc| = 2`, is a favourite. Run the notebook on another checkpoint and the preferences
# change.
#
# ## 8. The head
#
# The final LayerNorm, a mean over the tokens, and two linear heads (class and distillation),
# averaged.

# %%
pooled, logits = trace["pooled"], out.logits
probabilities = np.exp(logits[0] - logits[0].max())
probabilities /= probabilities.sum()
labels = config.id2label or {}
top = np.argsort(-probabilities)[:3]
print("pooled", pooled.shape, "-> logits", logits.shape)
for i in top:
    print(f"  {labels.get(int(i), i)!s:>12}  {probabilities[i]:6.2%}")
assert pooled.shape == (1, config.width)
if chosen.kind == "demo":
    assert labels[int(top[0])] == "3"  # the demo model reads this digit right

# %% [markdown]
# ## 9. One picture of the whole network
#
# The figure below, used at the top of the README, puts the steps side by side: the input, the
# busiest channel after each stage, and what each attention head attends to.

# %%
figures = Path(os.environ.get("NPFORMER_FIGURES_DIR", "figures"))  # the test suite redirects this
figures.mkdir(parents=True, exist_ok=True)
busiest = [f[int(explain.channels_by_spread(f)[0])] for f in stage_maps]  # [H, W] each
panels = [image] + busiest + [image] * h
titles = ["input"] + [f"stage {s}: {f.shape[1]}×{f.shape[2]}×{f.shape[0]}" for s, f in enumerate(stage_maps)] + \
         [f"attention, head {i}" for i in range(h)]
fig = plots.image_row(panels, titles, overlays=[None] * 5 + list(received), cmap="magma", size=1.9, cols=5)
plots.wrapped_suptitle(fig, f"{type(model).__name__} ({chosen.kind} weights) reads {image_path.name}: the busiest "
                       "channel after each stage, and where each attention head looks", fontsize=9)  # as many lines as it needs
fig.tight_layout()
fig.savefig(figures / "efficientformer_stages.png", dpi=90)
print("saved", figures / "efficientformer_stages.png")
