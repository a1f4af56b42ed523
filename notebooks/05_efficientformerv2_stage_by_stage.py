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
# # 05 — EfficientFormerV2, stage by stage
#
# EfficientFormerV2 keeps V1's four stages but never leaves the feature map: every block reads and
# writes `[B, C, H, W]`, the attention included. Three things are new, and this notebook opens
# each one up:
# - **talking heads**: the heads' attention logits are mixed before the softmax, and their
#   probabilities again after it;
# - **stride-2 attention** in stage 2: it attends on a grid of half the side, then upsamples ×2;
# - **the attention downsample** into stage 3: queries on the half-resolution grid attend over
#   every position of the full one.
#
# **What you'll do**
# - Build the shape table from the config and check it against a traced forward pass.
# - Recompute one Attention4D block step by step, draw each head's map before and after each
#   talking-heads mix, and measure how far each mix moves it.
# - Follow the stride-2 attention from the stage's grid to the half grid and back through the
#   bilinear ×2 upsample.
# - Open the attention downsample: its local-global query and its `[N2, N]` bias index.
#
# **What you'll learn**
# - What talking heads do to attention maps, and why the second mix's maps are no longer
#   probabilities.
# - Why V2's attention biases fix the input size, and why the stage-2 side must be even.
# - How a downsampling layer can attend: 1/4 of the positions ask, all of them answer.
#
# **What you'll need**
# - `pip install -e ".[notebooks]"`; notebooks 01 and 02 help. A few seconds.
# - The demo EfficientFormerV2 in `weights/`, a V2 checkpoint of your own (set `WEIGHTS` or the
#   environment variable `NPFORMER_WEIGHTS`), or nothing: then seeded S0 weights are used.

# %%
import numpy as np

import npformer
from npformer import layers
from npformer.models.efficientformerv2.schema import attention_blocks, attention_grid
from npformer.tools import explain, plots

# %%
WEIGHTS = None  # e.g. "../weights/efficientformerv2-s0.safetensors" (converted with `npformer convert`)
chosen = explain.choose_model("efficientformerv2", weights=WEIGHTS)
model, config = chosen.model, chosen.model.config
print(chosen.description)
print("widths", config.widths, "depths", config.depths, "attention blocks per stage", config.num_vit,
      "heads", config.num_heads, "key dim", config.key_dim, "built for", config.image_hw)

# %% [markdown]
# **Which image.** The demo model is a small V2 trained on handwritten digits at 128 px (the side
# V2's grid accepts, see section 1), so it gets a held-out digit from `tests/fixtures/digits/`
# (UCI digits, CC BY 4.0). Any other weights get the COCO two-cats photo at 224 px. Seeded
# weights attend at random: their pictures show the structure, not learned attention.

# %%
if chosen.kind == "demo":
    image_path = "../tests/fixtures/digits/digit_3_705.png"  # a held-out "3"
else:
    image_path = "../tests/fixtures/images/two_cats.png"  # COCO val2017 000000039769
pixels = chosen.processor(image_path)["pixel_values"]  # [1, 3, S, S]
S = chosen.size
image = explain.pixels_to_image(pixels)
print(image_path, pixels.shape)
assert pixels.shape == (1, 3, S, S) and (S, S) == config.image_hw

# %% [markdown]
# ## 1. The shape table
#
# The stem halves the side twice and each downsample once more, rounding up, so the stages run at
# `⌈S/4⌉, ⌈S/8⌉, ⌈S/16⌉, ⌈S/32⌉`. Unlike V1 there is no flatten: every row is a 4D map.

# %%
rows = explain.shape_table(model, pixels)
print(explain.format_shape_table(rows))

# %%
for row in rows:
    assert row.traced == row.expected, f"{row.name}: traced {row.traced}, expected {row.expected}"
shapes = {row.name: row.traced for row in rows}
side = [-(-S // 2**k) for k in (2, 3, 4, 5)]  # ⌈S/4⌉ ... ⌈S/32⌉
for stage in range(4):
    assert shapes[f"stages.{stage}"] == (1, config.widths[stage], side[stage], side[stage])
    assert config.grid(stage) == (side[stage], side[stage])
assert all(len(shape) == 4 for name, shape in shapes.items() if name not in ("pooled", "head", "head_dist", "logits"))
grids = {stage: attention_grid(config, stage) for stage in (2, 3)}
print(f"stage 2: {side[2]}×{side[2]} map, attends on {grids[2][0]}×{grids[2][1]}; "
      f"stage 3: {side[3]}×{side[3]} map, attends on {grids[3][0]}×{grids[3][1]}")
assert grids[2] == (side[2] // 2, side[2] // 2) and grids[3] == (side[3], side[3])

# %% [markdown]
# Stage 2 attends at half its side and upsamples ×2 afterwards, which must give the side back: the
# stage-2 side has to be even. At 224 px it is 14 (attention on 7×7); 112 px would give 7, whose
# half rounds up to 4 and comes back as 8, so the config refuses it. That is why the demo model
# is built for 128 px (stage 2 at 8×8, attention on 4×4). The attention biases are tables over
# these grids, so a model only takes inputs that give its own grid:

# %%
(lo, hi), _ = config.input_sides()
print(f"built for {S} px: inputs of {lo}–{hi} px give the {side[2]}×{side[2]} stage-2 grid")
refused = None
try:
    npformer.EfficientFormerV2Config.from_dict({**config.to_dict(), "image_size": 112})
except npformer.NpformerError as err:
    refused = err
print("image_size=112:", str(refused)[:140], "...")
assert refused is not None and "7×7 stage-2 grid" in str(refused)

# %% [markdown]
# ## 2. Everything, traced once

# %%
trace = npformer.Trace()
out = model(pixels, output_attentions=True, trace=trace)
blocks = attention_blocks(config)  # the AttnFFN blocks, closing stages 2 and 3
print(len(trace), "activations; attention blocks:", blocks)
print("attentions", [a.shape for a in out.attentions])
for block, probs in zip(blocks, out.attentions):
    r = attention_grid(config, int(block.split(".")[1]))
    assert probs.shape == (1, config.num_heads, r[0] * r[1], r[0] * r[1])

# %% [markdown]
# ## 3. Attention4D, step by step: the talking heads
#
# We follow the last attention block of stage 2. `explain.module_input` traces the map it reads,
# and `explain.attention4d_steps` recomputes its token mixer with the model's own blocks, keeping
# what `layers.talking_heads_attention` does in one call:
#
# 1. `logits = q·kᵀ/√dk + bias` — per head, `[B, h, N, N]`;
# 2. `mixed_logits = talking_head1(logits)` — a 1×1 convolution with the heads as channels:
#    head h′ gets `Σ_h W1[h′, h]·logits[h] + b1[h′]`;
# 3. `probs = softmax(mixed_logits)` over the keys — what the model returns as `attentions`;
# 4. `mixed_probs = talking_head2(probs)` — the probabilities mixed across heads the same way;
# 5. `out = mixed_probs·v + v_local`, then (stage 2) the ×2 upsample, GELU, 1×1 conv → BN.

# %%
block = [b for b in blocks if b.startswith("stages.2.")][-1]
name = f"{block}.token_mixer"
x_in, _ = explain.module_input(model, pixels, name)  # [1, C2, H, W]: what the block reads
steps = explain.attention4d_steps(x_in, model, name)
for step in ("strided", "q", "k", "v", "bias", "logits", "mixed_logits", "probs", "mixed_probs", "attended",
             "upsampled", "out"):
    print(f"  {step:13s} {steps[step].shape}")
h, N = config.num_heads, steps["logits"].shape[-1]
r = grids[2][0]
assert N == r * r and steps["out"].shape == x_in.shape == (1, config.widths[2], side[2], side[2])
np.testing.assert_allclose(steps["probs"], trace[f"{name}.attn_probs"], rtol=0, atol=1e-6)  # the model's attention
np.testing.assert_allclose(steps["out"], trace[name], rtol=0, atol=1e-5)  # and its token mixer's output
np.testing.assert_allclose(steps["probs"].sum(-1), 1, atol=1e-5)

# %% [markdown]
# Each head's map for one query, the token at the centre of the grid, at each of the four steps
# (each picture on its own colour scale: compare shapes here, magnitudes below).

# %%
query = (r // 2) * r + r // 2
order = ("logits", "mixed_logits", "probs", "mixed_probs")
panels = [steps[step][0, head, query].reshape(r, r) for step in order for head in range(h)]
titles = [f"{step}\nhead {head}" for step in order for head in range(h)]
fig = plots.image_row(panels, titles, cmap="viridis", size=1.5, cols=h)
for ax in fig.axes[:len(panels)]:
    plots.mark_token(ax, query, r, r, r, color="red")

# %% [markdown]
# The two mixing matrices (red > 0 > blue). With no mixing they would be the identity.

# %%
heads = explain.talking_heads_weights(model, name)  # {talking head: (W [h, h], b [h])}
fig = plots.image_row([heads["talking_head1"][0], heads["talking_head2"][0]],
                      ["talking_head1: W1[h′, h]", "talking_head2: W2[h′, h]"], cmap="RdBu_r", symmetric=True,
                      size=4.0, colorbar=True)
for ax, t in zip(fig.axes[:2], ("talking_head1", "talking_head2")):
    plots.annotate_matrix(ax, heads[t][0], fmt="{:+.1f}", fontsize=6, color="black")

# %% [markdown]
# **How far each mix moves the maps.** `explain.talking_heads_effect` measures, per head and
# averaged over the queries:
# - `head1_moves`: the total-variation distance between `softmax(logits)` (this head without
#   talking head 1) and `probs`. 0 means unchanged, 1 means the two put their weight on
#   different keys.
# - `head2_moves`: half the L1 distance between `probs` and `mixed_probs`.
# - `row sums`: what each row of `mixed_probs` adds up to. That is `Σ_h W2[h′, h] + N·b2[h′]`
#   exactly: after talking head 2 the maps are weights, not probabilities, and can be negative.
#
# `own share` is `|W[h′, h′]| / Σ_h |W[h′, h]|`: how much of a head's mix comes from itself.

# %%
effect = explain.talking_heads_effect(steps)
shares = explain.talking_heads_shares(model, name)
w2, b2 = heads["talking_head2"]
np.testing.assert_allclose(effect["head2_row_sums"], w2.sum(axis=1) + N * b2, rtol=1e-4, atol=1e-4)
print("head  head1_moves  head2_moves  row sums  own share (th1, th2)")
for i in range(h):
    print(f"{i:4d}  {effect['head1_moves'][i]:11.3f}  {effect['head2_moves'][i]:11.3f}  "
          f"{effect['head2_row_sums'][i]:+8.3f}  {shares['talking_head1'][i]:.2f}, {shares['talking_head2'][i]:.2f}")
assert all(v.shape == (h,) for v in effect.values())

# %% [markdown]
# With the demo weights the talking heads are far from the identity. No head keeps more than a
# quarter of its own weight (`own share`). In this block, talking head 1 moves each head's
# attention by a total-variation distance of about 0.5–0.8, and talking head 2's rows sum to
# anything from about −4 to +3, so what multiplies `v` is a signed blend of all eight heads' maps, not one head's
# probabilities.
#
# Note: timm initialises both talking heads like any 1×1 convolution (random weights), not as the
# identity, so the model mixed its heads from the first step; after training it still does.
#
# The same measures for every attention block, as means over the heads:

# %%
for b in blocks:
    n = f"{b}.token_mixer"
    s = explain.attention4d_steps(explain.module_input(model, pixels, n)[0], model, n)
    e = explain.talking_heads_effect(s)
    np.testing.assert_allclose(s["out"], trace[n], rtol=0, atol=1e-5)
    print(f"{b}: attends on {int(np.sqrt(s['logits'].shape[-1]))}² tokens, head1_moves {e['head1_moves'].mean():.3f}, "
          f"head2_moves {e['head2_moves'].mean():.3f}, row sums {e['head2_row_sums'].min():+.2f} .. "
          f"{e['head2_row_sums'].max():+.2f}")

# %% [markdown]
# ## 4. The stride-2 attention and its upsample
#
# Stage 2's attention block first shrinks its map with a stride-2 depthwise 3×3 convolution
# (→ BN): the attention then runs over `N = (side/2)²` tokens, a quarter of the positions, so
# its `N × N` logits are 1/16 of the full grid's. The result, `attended = mixed_probs·v + v_local`,
# is on the half grid; a bilinear ×2 upsample (torch's `align_corners=False`) brings it back to
# the stage's side.
#
# Below: one channel of the block's input, of the strided map, of the attended result and of its
# upsample (each channel the busiest of its map).

# %%
c_in = int(explain.channels_by_spread(x_in[0])[0])
c_out = int(explain.channels_by_spread(steps["attended"][0])[0])
maps = [x_in[0, c_in], steps["strided"][0, c_in], steps["attended"][0, c_out], steps["upsampled"][0, c_out]]
names = [f"block input, ch {c_in}\n{side[2]}×{side[2]}", f"stride_conv, ch {c_in}\n{r}×{r}",
         f"attended, ch {c_out}\n{r}×{r}", f"upsampled, ch {c_out}\n{2 * r}×{2 * r}"]
fig = plots.image_row(maps, names, cmap="magma", size=2.6, colorbar=True)
np.testing.assert_array_equal(steps["upsampled"], layers.upsample_bilinear_2x(steps["attended"]))
np.testing.assert_allclose(steps["upsampled"], trace[f"{name}.upsample"], rtol=0, atol=1e-5)
print(f"full-grid logits would be {side[2] ** 4:,} per head; on the half grid {N * N:,} ({N * N / side[2] ** 4:.4f})")

# %% [markdown]
# The upsample as a matrix: `explain.upsample_matrix(r, r)` is `[(2r)², r²]`, and row `o` holds
# the blend weights output pixel `o` takes from the half grid. An interior pixel blends four
# neighbours with 9/16, 3/16, 3/16, 1/16; a corner copies one value.

# %%
U = explain.upsample_matrix(r, r)
np.testing.assert_allclose(U.sum(axis=1), 1, atol=1e-12)
np.testing.assert_allclose(U @ steps["attended"][0, c_out].reshape(-1), steps["upsampled"][0, c_out].reshape(-1),
                           rtol=1e-5, atol=1e-5)
pixels_shown = {"corner (0, 0)": 0, "interior (3, 4)": 3 * 2 * r + 4}
fig = plots.image_row([U[o].reshape(r, r) for o in pixels_shown.values()],
                      [f"output pixel {k}:\nits weights on the {r}×{r} grid" for k in pixels_shown], cmap="Blues",
                      size=2.8)
for ax, o in zip(fig.axes, pixels_shown.values()):
    plots.annotate_matrix(ax, U[o].reshape(r, r), fmt="{:.4g}", fontsize=7, color="black")
assert sorted(U[3 * 2 * r + 4][U[3 * 2 * r + 4] > 0]) == [1 / 16, 3 / 16, 3 / 16, 9 / 16]

# %% [markdown]
# ## 5. The attention downsample: a local-global query
#
# Into stage 3, V2 adds an attention to the usual stride-2 convolution:
# `stages.3.downsample = conv3×3/2 → BN` **+** `Attention2dDownsample`. Its queries live on the
# half-resolution grid (`N2` positions), its keys and values on the full stage-2 grid (`N`):
# - `local`: a stride-2 depthwise 3×3 convolution (with bias, no BatchNorm) — what each
#   position's neighbourhood says;
# - `pooled`: every other pixel (timm's `AvgPool2d(kernel 1, stride 2)`) — the input itself;
# - `q = 1×1 conv → BN (local + pooled)`, split into heads of 16 channels;
# - no talking heads here: `softmax(q·kᵀ/4 + bias)·v + v_local` (stride 2), GELU, 1×1 conv → BN.

# %%
down = "stages.3.downsample.attn"
x2, _ = explain.module_input(model, pixels, down)  # [1, C2, H, W]: stage 2's output
lg = explain.local_global_query_steps(x2, model, down)
H, W = x2.shape[2:]
H2, W2 = lg["query_map"].shape[2:]
N_keys, N_queries = H * W, H2 * W2
for step in ("local", "pooled", "query_map", "q", "k", "v", "v_local", "bias_index", "bias", "probs", "out"):
    print(f"  {step:10s} {lg[step].shape}")
assert (H, W) == config.grid(2) and (H2, W2) == config.grid(3)
assert lg["probs"].shape == (1, h, N_queries, N_keys) and lg["bias_index"].shape == (N_queries, N_keys)
np.testing.assert_allclose(lg["query_map"], trace[f"{down}.q"], rtol=0, atol=1e-5)
np.testing.assert_allclose(lg["probs"], trace[f"{down}.attn_probs"], rtol=0, atol=1e-6)
np.testing.assert_allclose(lg["out"], trace[down], rtol=0, atol=1e-5)
print(f"{N_queries} queries on {H2}×{W2} attend over {N_keys} keys on {H}×{W}")

# %%
c = int(explain.channels_by_spread(x2[0])[0])
fig = plots.image_row([x2[0, c], lg["local"][0, c], lg["pooled"][0, c], lg["local"][0, c] + lg["pooled"][0, c]],
                      [f"stage 2 output, ch {c}\n{H}×{W}", f"local (dw conv /2)\n{H2}×{W2}",
                       f"pooled (every other pixel)\n{H2}×{W2}", "local + pooled\n(then 1×1 conv → BN)"],
                      cmap="magma", size=2.5, colorbar=True)
np.testing.assert_array_equal(lg["pooled"], x2[:, :, ::2, ::2])
print(f"|local| / |pooled| over all {x2.shape[1]} channels: {np.linalg.norm(lg['local']) / np.linalg.norm(lg['pooled']):.2f}")

# %% [markdown]
# **The bias index.** The learned table has one value per head and key offset on the `H×W` grid,
# `[h, N]`. Query `n` sits at `(2·row, 2·col)` of the key grid, and the index of key `(kr, kc)` is
# `|2·row − kr|·W + |2·col − kc|`. That makes a `[N2, N]` table (left). On the right is one
# query's row drawn on the key grid; its own position has index 0.

# %%
where = explain.query_positions(H, W)  # [N2, 2] (row, col) of each query on the key grid
q_sel = (H2 // 2) * W2 + W2 // 2  # a query near the middle
own = int(where[q_sel, 0] * W + where[q_sel, 1])
fig = plots.image_row([lg["bias_index"], lg["bias_index"][q_sel].reshape(H, W)],
                      [f"bias index [{N_queries}, {N_keys}]", f"query {q_sel} at {tuple(int(v) for v in where[q_sel])}: its row"],
                      cmap="viridis", size=4.2)
if H <= 8:
    plots.annotate_matrix(fig.axes[1], lg["bias_index"][q_sel].reshape(H, W), fontsize=7)
plots.mark_token(fig.axes[1], own, H, H, W, color="red")
assert lg["bias_index"][q_sel, own] == 0 and (lg["bias_index"][np.arange(N_queries), where[:, 0] * W + where[:, 1]] == 0).all()
np.testing.assert_array_equal(lg["bias_index"], layers.attention_bias_index_grid(H, W, query_stride=2))

# %% [markdown]
# Where that query looks, per head, over all `N` positions of the stage-2 grid, spread onto the
# image (each map sums to 1):

# %%
looks = lg["probs"][0, :, q_sel].reshape(h, H, W)  # [h, H, W]
on_image = explain.upsample_onto_image(looks, S, S)
np.testing.assert_allclose(on_image.sum(axis=(1, 2)), 1, atol=1e-5)
fig = plots.image_row([image] * h, [f"head {i}" for i in range(h)],
                      overlays=list(on_image), size=2.2, cols=min(h, 4))
for ax in fig.axes[:h]:
    plots.mark_token(ax, own, H, S, S)

# %% [markdown]
# ## 6. The head
#
# The final BatchNorm, the mean over the `⌈S/32⌉²` positions, and two linear heads (class and
# distillation), averaged.

# %%
logits = out.logits[0]
probabilities = np.exp(logits - logits.max())
probabilities /= probabilities.sum()
labels = config.id2label or {}
top = np.argsort(-probabilities)[:3]
print("pooled", trace["pooled"].shape, "-> logits", out.logits.shape)
for i in top:
    print(f"  {labels.get(int(i), i)!s:>12}  {probabilities[i]:6.2%}")
assert trace["pooled"].shape == (1, config.width)
if chosen.kind == "demo":
    assert labels[int(top[0])] == "3"  # the demo model reads this digit right
