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
# # 06 — Beyond 224: other input sizes, the feature pyramid, MACs
#
# EfficientFormer learns one attention bias per head and per relative offset between a query and
# a key: a table over the token grid it was trained on (7×7 at 224 px). Another input size gives
# another grid, which the table does not fit. No reference resizes it by itself, so npformer
# refuses until you name a strategy, and this notebook shows what each strategy does.
#
# **What you'll do**
# - Watch a model refuse an input twice its trained size, then load it both ways the field knows.
# - Draw a trained bias table resized both ways, side by side, and measure what each keeps.
# - Look at attention at twice the trained size, and count how many held-out digits each strategy
#   still gets right.
# - Take the feature pyramid of one image at strides 4, 8, 16 and 32, as a detector would.
# - Count MACs as the input grows, and see which part grows faster than the pixels.
#
# **What you'll learn**
# - `"table"` (resample the offset table, as timm does for LeViT) keeps the bias a function of the
#   offset; `"pairwise"` (resize the whole query × key matrix, as the original detection backbones do)
#   does not.
# - Why backbone APIs return maps at four strides, and what `forward_intermediates` gives.
# - Why attention's cost grows with the square of the token count, and how little of the total that
#   is for these models.
#
# **What you'll need**
# - `pip install -e ".[notebooks]"`; notebook 02 helps. Under a minute.
# - The demo EfficientFormer in `weights/` (trained at 112 px on digits, a 4×4 attention grid), a
#   checkpoint of your own (`WEIGHTS` or `NPFORMER_WEIGHTS`), or nothing: then seeded L1 weights.

# %%
import numpy as np

import npformer
from npformer.models.attention_bias import STRATEGIES, with_strategy
from npformer.preprocess.selection import processor_at_size
from npformer.tools import explain, plots
from npformer.tools.explain import sizes

# %%
WEIGHTS = None  # e.g. "../weights/efficientformer-l1.safetensors" (converted with `npformer convert`)
chosen = explain.choose_model("efficientformer", weights=WEIGHTS)
model, config = chosen.model, chosen.model.config
S = chosen.size  # the size it was trained at
R = config.resolution  # the side of its attention grid
print(chosen.description)
print(f"trained at {S} px: a {R}×{R} attention grid, {config.num_attention_heads} heads")

# %% [markdown]
# **Which image.** The demo model gets a held-out digit from `tests/fixtures/digits/` (UCI digits,
# CC BY 4.0); any other weights the COCO two-cats photo.

# %%
image_path = ("../tests/fixtures/digits/digit_3_705.png" if chosen.kind == "demo"
              else "../tests/fixtures/images/two_cats.png")
big = 2 * S  # twice the trained size
processor_big, how = processor_at_size(chosen.processor, (big, big))
pixels = chosen.processor(image_path)["pixel_values"]  # [1, 3, S, S]
pixels_big = processor_big(image_path)["pixel_values"]  # [1, 3, 2S, 2S]
print(image_path, pixels.shape, pixels_big.shape, "|", how)
assert pixels_big.shape == (1, 3, big, big)

# %% [markdown]
# ## 1. Twice the size: refused, then loaded by name
#
# The grid at `2S` px has side `R′`, and the table holds `R²` offsets for an `R × R` grid. The
# model says so instead of guessing:

# %%
try:
    model(pixels_big)
except npformer.NpformerError as err:
    print(str(err)[:300], "...")
else:
    raise AssertionError("a model must refuse a grid its bias table does not fit")

# %%
path = chosen.path if chosen.path is not None else None
if path is None:  # seeded weights: save them so they load like a checkpoint
    import tempfile

    path = f"{tempfile.mkdtemp()}/seeded.safetensors"
    model.save_pretrained(path)
for name, what in STRATEGIES.items():
    print(f"{name:9s} {what}")
resized = {s: npformer.from_pretrained(path, image_size=big, attention_bias_resize=s) for s in STRATEGIES}
R2 = resized["table"].config.resolution
print(f"'table' builds the model for {big} px: resolution {R} → {R2}; 'pairwise' keeps resolution "
      f"{resized['pairwise'].config.resolution} and resizes in the forward")
assert R2 == -(-big // 32) and resized["pairwise"].config.resolution == R

# %% [markdown]
# ## 2. One trained table, both ways
#
# Each head's table is an image: row `|Δrow|`, column `|Δcol|`, offset 0 at the top left. We take
# the last attention block's table.
#
# - **table**: the `R × R` image resampled to `R′ × R′` (bicubic, antialias on), then gathered
#   into the `N × N` (query, key) matrix as usual. Every pair with the same offset gets the same bias.
# - **pairwise**: the trained `R² × R²` matrix resized as an image to `N × N` (bicubic, antialias
#   off). Rows and columns are token indices, not positions, so row-major order leaks into the
#   result: pairs with the same offset no longer share a bias.

# %%
block = explain.attention_block_names(config)[-1]
name = f"{block}.token_mixer.attention_biases"
table = model.weights[name]  # [h, R²]
ways = sizes.both_strategies(table, (R, R), (R2, R2))
print(name, table.shape, "→ table", ways["table"].shape, "| matrices", ways["table_matrix"].shape,
      ways["pairwise_matrix"].shape)
head = 0
plots.image_row(
    [sizes.table_image(table, (R, R))[head], ways["table"][head], ways["trained_matrix"][head],
     ways["table_matrix"][head], ways["pairwise_matrix"][head]],
    [f"trained table {R}×{R}", f"'table' {R2}×{R2}", f"trained matrix {R * R}²", f"'table' matrix {R2 * R2}²",
     f"'pairwise' matrix {R2 * R2}²"],
    cmap="RdBu_r", symmetric=True, size=2.6, suptitle=f"head {head}: the bias, trained and resized two ways")

# %%
spread = {way: sizes.offset_spread(ways[f"{way}_matrix"], (R2, R2)) for way in ("table", "pairwise")}
print(f"largest bias spread among pairs that share an offset: table {spread['table']:.3g}, "
      f"pairwise {spread['pairwise']:.3g} (the table itself spans {np.ptp(table):.3g})")
assert spread["table"] == 0 and spread["pairwise"] > 0

# %% [markdown]
# ## 3. Attention at twice the size
#
# Where does the centre token look, per head, under each strategy? And does the model still
# recognise the image?

# %%
query = (R2 // 2) * R2 + R2 // 2  # the centre token of the R′ × R′ grid
runs = {s: m(pixels_big, output_attentions=True) for s, m in resized.items()}
maps = [sizes.query_attention(runs[s].attentions[-1], query, (R2, R2))[h] for s in STRATEGIES
        for h in range(config.num_attention_heads)]
titles = [f"{s}, head {h}" for s in STRATEGIES for h in range(config.num_attention_heads)]
plots.image_row(maps, titles, cmap="magma", cols=config.num_attention_heads, size=2.0,
                suptitle=f"where token {query} (the centre) looks at {big} px")
trained_top = int(np.argmax(model(pixels).logits[0]))
for s, out in runs.items():
    print(f"{s:9s} class {int(np.argmax(out.logits[0]))} (at {S} px: {trained_top})")

# %% [markdown]
# One image says little. The demo model's 360 held-out digits say more: accuracy at the trained
# size, and at 1.43× and 2× it under each strategy (the same images, preprocessed to each size).

# %%
if chosen.kind == "demo":
    from PIL import Image

    held = np.load("../tests/fixtures/digits/heldout.npz")
    images = [Image.fromarray(a, mode="L") for a in held["images"]]

    def accuracy_at(m, side):
        process = processor_at_size(chosen.processor, (side, side))[0]
        batch = np.concatenate([process(im)["pixel_values"] for im in images])  # [360, 3, side, side]
        return float((m(batch).logits.argmax(-1) == held["labels"]).mean())

    accuracy = {(S, "trained"): accuracy_at(model, S)}
    for side in (160, big):
        for s in STRATEGIES:
            accuracy[(side, s)] = accuracy_at(npformer.from_pretrained(path, image_size=side, attention_bias_resize=s), side)
    for (side, s), acc in accuracy.items():
        print(f"{side:4d} px  {s:9s} {acc:.4f}")
    assert accuracy[(S, "trained")] > 0.99

# %% [markdown]
# Both strategies lose most of the accuracy at twice the size, and they differ by about a point:
# the bias is not what fails. The convolutions see every stroke twice as wide as in training, and
# nothing resizes what they learned. That is why the original repo *fine-tunes* at a new
# resolution; a bias strategy only makes that possible (and an oracle of it exact).

# %% [markdown]
# ## 4. The feature pyramid
#
# Detection and segmentation heads read the four stage outputs, at strides 4, 8, 16 and 32
# (`model.feature_info`). `model.forward_intermediates(x)` returns them as NCHW maps (the last
# stage's tokens laid back on their grid), exactly as timm's does; `model.features_only((1, 3))`
# is timm's `features_only=True`. Here: each map's mean |activation| over its channels.

# %%
for info in resized["table"].feature_info:
    print(info)
pyramid = sizes.feature_pyramid(resized["table"], pixels_big)
plots.image_row([explain.pixels_to_image(pixels_big)] + pyramid,
                ["input"] + [f"stride {f['reduction']}: {m.shape[0]}×{m.shape[1]}"
                             for f, m in zip(resized["table"].feature_info, pyramid)],
                cmap="viridis", size=2.4)
assert [m.shape[0] for m in pyramid] == [-(-big // r) for r in (4, 8, 16, 32)]

# %% [markdown]
# ## 5. MACs as the input grows
#
# `npformer.macs.count(model, size)` counts what the forward computes (convolutions and matrix
# products, as torch's FlopCounterMode does). The convolutional stages grow with the pixels;
# the last stage's attention grows with the square of its token count. We count the published
# variants on seeded weights, with pairwise biases so that one model runs at every size.

# %%
seeded = {}
for family, variant in (("efficientformer", "l1"), ("efficientformerv2", "s0"), ("swiftformer", "xs")):
    m = explain.choose_model(family, weights="seeded", seeded_variant=variant).model
    if hasattr(m.config, "attention_bias_resize"):  # SwiftFormer has no bias to resize
        m = type(m)(with_strategy(m.config, "pairwise"), dict(m.weights))
    seeded[f"{family}-{variant}"] = m
side_list = (224, 320, 448, 640)
table_rows = {name: sizes.macs_by_size(m, side_list) for name, m in seeded.items()}
print(f"{'model':22s}" + "".join(f"{s:>10d}" for s in side_list) + "   GMACs; growth 224→640 vs pixels ×8.2")
for name, rows in table_rows.items():
    print(f"{name:22s}" + "".join(f"{macs / 1e9:10.3f}" for _, macs, _ in rows)
          + f"   ×{rows[-1][1] / rows[0][1]:.2f}")
assert abs(table_rows["efficientformer-l1"][0][1] / 1e9 - 1.291) < 1e-3  # the published 1.3 GMACs

# %%
plt = plots._pyplot()
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, rows in table_rows.items():
    ax.plot([s * s / 224**2 for s, _, _ in rows], [macs / rows[0][1] for _, macs, _ in rows], "o-", label=name)
ax.plot([1, (640 / 224) ** 2], [1, (640 / 224) ** 2], "k--", lw=1, label="∝ pixels")
ax.set_xlabel("pixels / 224²")
ax.set_ylabel("MACs / MACs at 224")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
growth = {name: rows[-1][1] / rows[0][1] for name, rows in table_rows.items()}
pixels_ratio = (640 / 224) ** 2
print({name: round(g, 2) for name, g in growth.items()}, "pixels ×", round(pixels_ratio, 2))
assert abs(growth["swiftformer-xs"] / pixels_ratio - 1) < 0.01  # linear in the tokens
assert 1 < growth["efficientformer-l1"] / pixels_ratio < 1.05 and growth["efficientformerv2-s0"] / pixels_ratio > 1.3

# %% [markdown]
# SwiftFormer follows the pixel line exactly: its additive attention is linear in the tokens.
# EfficientFormer-L1 grows a little faster, from the `N²` of its one attention block on the 1/32
# grid. EfficientFormerV2-S0 grows a third faster than the pixels: its attentions work on the
# 1/32 grid in stage 2 *and* stage 3, and its downsampling attention lets the 1/32 queries look
# at every position of the 1/16 grid, so at 640 px that is 400 queries × 1600 keys.
#
# **Takeaways**
# - A model trained at one size runs at another only under a named bias strategy; `"table"` keeps
#   the bias a function of the offset and can be saved as a model of the new size, `"pairwise"`
#   follows any size at run time but mixes offsets.
# - `forward_intermediates` / `features_only` give the stride-4…32 maps a detector reads.
# - MACs grow with the pixels, plus a quadratic attention term that is small for these models.
