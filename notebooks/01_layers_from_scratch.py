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
# # 01 — Layers from scratch
#
# EfficientFormer and SwiftFormer are built from a handful of layers. This notebook writes each
# one out the slow, obvious way and checks it against the fast version npformer runs.
#
# **What you'll do**
# - Run a convolution three ways: as nested loops, as a sum over kernel offsets, and as im2col
#   followed by one matrix product. Check that all three agree.
# - Write BatchNorm the textbook way, then fold it into the convolution before it.
# - Build EfficientFormer's pooling token mixer, `avgpool(x) − x`, and see what
#   `count_include_pad=True` would do at the image border.
# - Compare the exact GELU (with npformer's own `erf`) against the tanh approximation.
# - Gather the attention bias: a table of 49 learned numbers spread into a 49×49 matrix.
#
# **What you'll learn**
# - Why a 3×3 convolution is really nine matrix products.
# - Why a single padding flag changes every border pixel of every pooling block.
# - How big the tanh GELU's error is, and why it is big enough for a golden-value test to catch.
# - How EfficientFormer encodes "where is this key relative to this query" with so few parameters.
#
# **What you'll need**
# - `pip install -e ".[notebooks]"` (numpy, pillow, safetensors, plus matplotlib and jupytext).
# - About 20 seconds. No torch.
#
# Shapes use the letters of `npformer/layers.py`: `B` batch, `C` channels (`OC` out, `IC` in),
# `H×W` spatial size, `N = H·W` tokens, `KH×KW` kernel size, `h` heads.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from npformer import fuse, layers
from npformer.tools import explain, plots
from npformer.erf import erf, gelu, gelu_tanh

# %% [markdown]
# ## The weights
#
# The notebooks run on one of three sources, tried in this order:
# 1. a checkpoint you point at: set `WEIGHTS` below, or the environment variable
#    `NPFORMER_WEIGHTS`;
# 2. the demo weights in `weights/` (a small EfficientFormer trained on handwritten digits);
# 3. seeded random weights.
#
# Here we only borrow the model's first convolution and its BatchNorm, so that (with trained weights)
# the filters are learned ones.

# %%
WEIGHTS = None  # e.g. "../weights/efficientformer-l1-300" (a transformers directory) or an npformer .safetensors
chosen = explain.choose_model("efficientformer", weights=WEIGHTS)
print(chosen.description)
model = chosen.model

# %% [markdown]
# We use a real photograph: the astronaut Eileen Collins, a public-domain NASA image shipped in
# `tests/fixtures/images/`. It goes through the model's own preprocessing.

# %%
pixels = chosen.processor("../tests/fixtures/images/astronaut_225x225.png")["pixel_values"]
print(pixels.shape, pixels.dtype)  # [B, 3, S, S]
assert pixels.shape == (1, 3, chosen.size, chosen.size)
x = pixels[:, :, :112, :112]  # at most 112×112: the loop version below is slow
B, IC, H, W = x.shape
print("x", x.shape)
assert x.shape == (1, 3, 112, 112)

# %% [markdown]
# ## 1. Convolution, three ways
#
# The stem's first convolution has 3×3 kernels, stride 2 and padding 1. Its weight uses
# PyTorch's layout `[OC, IC, KH, KW]`.

# %%
weight = model.weights["stem.conv1.weight"][:8]  # at most 8 filters keep the loops quick
bias = model.weights["stem.conv1.bias"][:8]
OC, _, KH, KW = weight.shape
stride, padding = 2, 1
OH, OW = layers.conv_output_size(H, W, KH, KW, stride, padding)
print("weight", weight.shape, "-> output", (B, OC, OH, OW))
assert weight.shape == (OC, 3, 3, 3) and (OH, OW) == (56, 56)

# %% [markdown]
# **Loops.** `layers.conv2d_naive` is the definition written out directly:
# `out[b, o, y, x] = Σ_{c,i,j} w[o, c, i, j] · in[b, c, s·y + i − p, s·x + j − p]`.
# That is six nested loops, and it is slow.

# %%
start = time.perf_counter()
out_loops = layers.conv2d_naive(x, weight, bias, stride=stride, padding=padding)
print(f"loops: {out_loops.shape} in {time.perf_counter() - start:.2f} s")
assert out_loops.shape == (B, OC, OH, OW)

# %% [markdown]
# **A sum over kernel offsets.** Fix one kernel offset `(i, j)`. Every output pixel then reads
# the input pixel at `(s·y + i, s·x + j)`, which is just a shifted, strided view of the padded
# input. That view is multiplied by the `[OC, IC]` matrix `w[:, :, i, j]`. Adding up the nine
# products gives the convolution.

# %%
views = layers.shifted_windows(x, KH, KW, stride, padding)  # one view per offset (i, j)
print(len(views), "views of shape", views[0].shape)  # KH·KW × [B, IC, OH, OW]
assert len(views) == 9 and views[0].shape == (B, IC, OH, OW)
out_offsets = explain.conv2d_kernel_offsets(x, weight, bias, stride=stride, padding=padding)

# %% [markdown]
# **im2col.** Stack the nine views into one matrix with `IC·KH·KW = 27` rows and one column per
# output pixel. The convolution is then a single matrix product, `[OC, 27] @ [27, OH·OW]`.

# %%
cols = layers.im2col(x, KH, KW, stride, padding)
print("im2col", cols.shape, " weight as a matrix", weight.reshape(OC, -1).shape)  # [B, 27, 3136], [OC, 27]
assert cols.shape == (B, IC * KH * KW, OH * OW)
out_im2col = explain.conv2d_im2col(x, weight, bias, stride=stride, padding=padding)

# %%
out_fast = layers.conv2d(x, weight, bias, stride=stride, padding=padding)  # what the model runs
for name, out in [("kernel offsets", out_offsets), ("im2col", out_im2col), ("layers.conv2d", out_fast)]:
    print(f"{name:15s} {out.shape}  max |Δ| vs loops = {np.abs(out - out_loops).max():.1e}")
    assert out.shape == out_loops.shape
    np.testing.assert_allclose(out, out_loops, rtol=1e-5, atol=1e-5)

# %% [markdown]
# The four agree to float32 rounding. Below are the input, the (channel-averaged) learned
# filters, and what they make of the photograph.

# %%
filters = [weight[o].mean(axis=0) for o in range(OC)]  # [KH, KW] each
fig = plots.image_row([explain.pixels_to_image(x)] + filters, ["input 112×112"] + [f"filter {o}" for o in range(OC)],
                      cmap="RdBu_r", size=1.3)
fig = plots.image_row([out_fast[0, o] for o in range(OC)], [f"output {o}" for o in range(OC)], size=1.3)

# %% [markdown]
# ## 2. BatchNorm
#
# At inference BatchNorm is a fixed per-channel affine map:
# `(x − μ) / √(σ² + ε) · γ + β`, using the running statistics μ, σ² saved at training time.
# `layers.batch_norm` computes it as PyTorch's CPU kernel does, `x·α + β′` with
# `α = γ / √(σ² + ε)` and `β′ = β − μ·α`. The two orderings round differently, so they agree
# only to float32 precision, not bit for bit.

# %%
bn = {k: model.weights[f"stem.norm1.{k}"][:OC] for k in ("running_mean", "running_var", "weight", "bias")}
eps = model.config.batch_norm_eps
normed = layers.batch_norm(out_fast, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps)
textbook = explain.batch_norm_textbook(out_fast, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps)
print(normed.shape, f"max |Δ| = {np.abs(normed - textbook).max():.1e}")
assert normed.shape == (B, OC, OH, OW)
np.testing.assert_allclose(normed, textbook, rtol=1e-5, atol=1e-5)

# %% [markdown]
# Because BatchNorm is affine and comes straight after a convolution, it can be **folded** into
# the convolution's weights and bias: with α = γ/√(σ² + ε), W′ = α·W and b′ = α·(b − μ) + β.
# Afterwards there is one layer where there were two. `model.fuse()` does this for every
# BatchNorm of a model (`npformer/fuse.py`): the fast path.

# %%
alpha, shift = layers.batch_norm_affine(bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], eps)  # [OC] each
w_folded, b_folded = (a.astype(np.float32) for a in fuse.fold_after(weight, bias, alpha, shift))
folded = layers.conv2d(x, w_folded, b_folded, stride=stride, padding=padding)
print("folded weight", w_folded.shape, f"max |Δ| vs conv → BN = {np.abs(folded - normed).max():.1e}")
assert w_folded.shape == weight.shape and b_folded.shape == (OC,)
np.testing.assert_allclose(folded, normed, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## 3. The pooling token mixer
#
# EfficientFormer's Meta4D blocks mix tokens without attention. The mixer is
# `pool_mixer(x) = avgpool3×3(x) − x`, and the block adds `x` back. Pooling uses stride 1 and
# padding 1. It also uses **`count_include_pad=False`**: each output is the mean of the real pixels
# under the window only. That is 4 pixels at a corner, 6 on an edge and 9 inside.

# %%
counts = explain.valid_counts(7, 7)  # [H, W]
print(counts)
assert counts.shape == (7, 7) and counts[0, 0] == 4 and counts[0, 3] == 6 and counts[3, 3] == 9

# %% [markdown]
# Two images show why the flag matters. The first is a constant image: it has no structure, so a
# token mixer should give zero everywhere. The second is the photograph. `explain.pool_mixer_include_pad`
# is the mistake: it divides by 9 everywhere, which counts the zero padding as if it were image.

# %%
flat_image = np.ones((1, 1, 7, 7), dtype=np.float32)  # [B, C, H, W]
right = layers.pool_mixer(flat_image)
wrong = explain.pool_mixer_include_pad(flat_image)
print("count_include_pad=False:", np.abs(right).max(), "  True: corner", wrong[0, 0, 0, 0], "edge", wrong[0, 0, 0, 3])
assert right.shape == wrong.shape == (1, 1, 7, 7)
assert np.all(right == 0)  # exactly zero: the mean of ones is one
np.testing.assert_allclose([wrong[0, 0, 0, 0], wrong[0, 0, 0, 3], wrong[0, 0, 3, 3]], [4 / 9 - 1, 6 / 9 - 1, 0], atol=1e-6)

# %%
titles = ["valid pixels per window", "mixer on ones\ncount_include_pad=False", "mixer on ones\ncount_include_pad=True"]
fig = plots.image_row([counts, right[0, 0], wrong[0, 0]], titles, cmap="viridis", size=2.6, colorbar=True)
plots.annotate_matrix(fig.axes[0], counts)

# %%
gray = explain.pixels_to_image(x).mean(axis=-1)[None, None].astype(np.float32)  # [1, 1, 112, 112], brightness in [0, 1]
mixed_right = layers.pool_mixer(gray)[0, 0]
mixed_wrong = explain.pool_mixer_include_pad(gray)[0, 0]
print(gray.shape, "->", mixed_right.shape)
assert mixed_right.shape == mixed_wrong.shape == (112, 112)
assert np.all(mixed_right[1:-1, 1:-1] == mixed_wrong[1:-1, 1:-1])  # the two differ only on the border
difference = mixed_wrong - mixed_right
fig = plots.image_row([mixed_right, mixed_wrong, difference, difference[:12, :12]],
                      ["mixer, count_include_pad=False", "mixer, count_include_pad=True", "difference (True − False)",
                       "difference, top-left 12×12"], cmap="RdBu_r", size=2.8, vmin=-0.5, vmax=0.5, colorbar=True)

# %% [markdown]
# With `False`, the mixer on the photo shows edges and texture everywhere, including at the
# border. With `True`, every border pixel loses a third (edge) to five ninths (corner) of its own
# brightness, which draws a frame that is not in the image. Every Meta4D block does this, so the error adds up:
# measured on L1 it moves the logits by 0.29.
#
# The fast `layers.avg_pool2d` adds nine shifted copies and divides by the count map above. Its
# loop twin reads the window directly:

# %%
np.testing.assert_allclose(layers.avg_pool2d(gray), layers.avg_pool2d_naive(gray), rtol=1e-6, atol=1e-6)
print("avg_pool2d == avg_pool2d_naive on", gray.shape)

# %% [markdown]
# ## 4. Exact GELU and npformer's erf
#
# EfficientFormer's MLPs use the exact GELU, `x·Φ(x) = 0.5·x·(1 + erf(x/√2))`. NumPy has no
# vectorised erf, so npformer has its own (`npformer/erf.py`): polynomial fits evaluated in
# float32 for float32 inputs. We measure it against Python's `math.erf` in float64.

# %%
xs = np.linspace(-6, 6, 4001, dtype=np.float32)  # [4001]
erf_error = np.abs(erf(xs) - explain.erf_reference(xs))
gelu_error = np.abs(gelu(xs) - explain.gelu_reference(xs))
tanh_error = np.abs(gelu_tanh(xs) - explain.gelu_reference(xs))
print(f"max |erf − math.erf|        = {erf_error.max():.1e}")
print(f"max |gelu − exact GELU|     = {gelu_error.max():.1e}   (float32 rounding of the result)")
print(f"max |gelu_tanh − exact GELU| = {tanh_error.max():.1e}")
assert erf(xs).shape == xs.shape and erf(xs).dtype == np.float32
assert erf_error.max() < 1.2e-7 and tanh_error.max() > 1e-4

# %%
fig, (left, right_ax) = plt.subplots(1, 2, figsize=(10, 3.2))
left.plot(xs, gelu(xs), label="exact GELU  x·Φ(x)")
left.plot(xs, np.maximum(xs, 0), "--", lw=1, label="ReLU")
left.set_xlim(-4, 4), left.set_ylim(-0.5, 4), left.legend(), left.set_title("GELU")
right_ax.semilogy(xs, tanh_error + 1e-12, label="tanh approximation")
right_ax.semilogy(xs, gelu_error + 1e-12, label="npformer gelu (float32)")
right_ax.set_ylim(1e-10, 1e-2), right_ax.legend(), right_ax.set_title("|error| against the exact GELU (float64)")
fig.tight_layout()

# %% [markdown]
# The tanh form is up to about 5e-4 away from the exact GELU. A golden-value test at 1e-4 sees
# that, and notebook 04 catches it in one layer. npformer's float32 GELU is as close as float32
# can get: about one unit in the last place.

# %% [markdown]
# ## 5. Attention with a learned bias
#
# EfficientFormer's last stage is a grid of `R×R` tokens: `R = 7` for a 224 px input, so
# `N = 49`. Its attention adds a learned bias to each query–key logit. The bias depends only on
# the offset between the two tokens, `(|Δrow|, |Δcol|)`. There are `R·R = 49` such offsets, so
# each head learns a table of 49 numbers. `layers.attention_bias_index` says which entry each of
# the 49×49 pairs uses.

# %%
R = 7
index = layers.attention_bias_index(R)  # [N, N] ints in 0 .. R²−1
print(index.shape, index.min(), index.max())
print(index[:3, :10])
assert index.shape == (R * R, R * R) and set(np.unique(index)) == set(range(R * R))

# %% [markdown]
# A trained model learns the table. To see what it can express, we write two tables by hand
# (`explain.offset_bias_table`):
# - head 0 prefers nearby keys, with entry `−(|Δr| + |Δc|)`;
# - head 1 prefers keys in its own row, with entry `−2·|Δr|`.
#
# `gather_attention_bias` spreads the `[h, 49]` table into the full `[h, 49, 49]` bias.

# %%
table = np.stack([explain.offset_bias_table(R), explain.offset_bias_table(R, row_weight=2.0, col_weight=0.0)])
table = table.astype(np.float32)  # [h, R²]
bias_matrix = layers.gather_attention_bias(table, R)  # [h, N, N]
print("table", table.shape, "-> bias", bias_matrix.shape)
assert table.shape == (2, 49) and bias_matrix.shape == (2, 49, 49)
assert bias_matrix[0, 0, 8] == table[0, 1 * R + 1] == -2  # token 0 = (0, 0) to token 8 = (1, 1): offset (1, 1)

# %%
fig = plots.image_row([np.arange(R * R).reshape(R, R), index, bias_matrix[0], bias_matrix[1]],
                      ["table entry for offset\nrow |Δr|, column |Δc|", "which entry each\n(query, key) pair uses",
                       "head 0 (nearby): 49×49 bias", "head 1 (same row): 49×49 bias"],
                      cmap="viridis", size=3.0, colorbar=True)
plots.annotate_matrix(fig.axes[0], np.arange(R * R).reshape(R, R))

# %% [markdown]
# The 49×49 matrix has a block structure: a 7×7 grid of 7×7 blocks, one per pair of token rows.
# Each block is a symmetric Toeplitz matrix because only `|Δcol|` counts.
#
# Now the attention itself. `multi_head_attention` projects tokens to per-head
# `[q | k | v]`, computes `softmax(q·kᵀ/√dk + bias)`, and mixes the values. Its loop twin does
# one head and one query at a time. We run both on random tokens and random weights, with the
# bias above (`h = 2` heads, key dim 16, value dim 64).

# %%
rng = np.random.default_rng(0)
N, C, h, dk, dv = R * R, 64, 2, 16, 64
tokens = rng.standard_normal((1, N, C)).astype(np.float32)  # [B, N, C]
qkv_w = (rng.standard_normal((h * (2 * dk + dv), C)) / np.sqrt(C)).astype(np.float32)  # [h·(2dk + dv), C]
qkv_b = np.zeros(h * (2 * dk + dv), np.float32)
proj_w = (rng.standard_normal((C, h * dv)) / np.sqrt(h * dv)).astype(np.float32)  # [C, h·dv]
proj_b = np.zeros(C, np.float32)
out, probs = layers.multi_head_attention(tokens, qkv_w, qkv_b, proj_w, proj_b, bias_matrix, h, dk)
out_naive, probs_naive = layers.multi_head_attention_naive(tokens, qkv_w, qkv_b, proj_w, proj_b, bias_matrix, h, dk)
print("out", out.shape, "probs", probs.shape, f"max |Δ| vs loops: {np.abs(out - out_naive).max():.1e}")
assert out.shape == (1, N, C) and probs.shape == (1, h, N, N)
np.testing.assert_allclose(out, out_naive, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)  # each row is a distribution

# %%
_, probs_no_bias = layers.multi_head_attention(tokens, qkv_w, qkv_b, proj_w, proj_b, 0.0, h, dk)
query = 3 * R + 2  # the token in row 3, column 2
maps = [probs_no_bias[0, 0, query], probs[0, 0, query], probs[0, 1, query]]
fig = plots.image_row([m.reshape(R, R) for m in maps] + list(explain.bias_relative_map(table, R)),
                      ["no bias", "head 0 (nearby)", "head 1 (same row)", "head 0 bias by offset", "head 1 bias by offset"],
                      cmap="magma", size=2.4, colorbar=True, suptitle="where query (3, 2) looks, and the bias by (Δr, Δc)")
for ax in fig.axes[:3]:  # the three attention maps (the colour bars come after the images)
    plots.mark_token(ax, query, R, R, R)

# %% [markdown]
# Without a bias, the query attends wherever the random content sends it. With one, the same
# query attends near itself, or along its own row, whatever the content. That is the kind of
# positional preference a trained head learns. The last two panels draw each table as a
# relative-position map: the query sits at the centre and each key at its offset (Δr, Δc). The
# map is mirror-symmetric because only `|Δr|` and `|Δc|` count. Notebook 02 draws these maps for
# a trained model.
#
# **Note:** the bias table has a fixed size, so EfficientFormer accepts only inputs whose last
# stage is exactly `R×R`. For L1 that means 193–224 px per side. npformer refuses other sizes
# with a message rather than cropping silently.
