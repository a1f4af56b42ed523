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
# # 04 — npformer as a golden oracle
#
# You are porting EfficientFormer or SwiftFormer to another framework, language or chip. The
# logits come out wrong. Where did it go wrong? npformer records every named activation of a
# forward pass into one file, a **trace fixture**. Your port writes its own activations under the
# same names. A comparison then names the first layer that differs.
#
# **What you'll do**
# - Trace a model into a fixture, with both the Python API and `npformer trace`.
# - Build a deliberately broken port: the exact GELU swapped for the tanh approximation by
#   monkeypatching at run time.
# - Find its first diverging layer with `compare_fixtures` and `npformer compare`, and plot the
#   divergence through the network.
# - Check a hand-written partial port (only the stem) against the fixture.
# - See at which layer other classic porting mistakes surface, in float32 and in float64.
#
# **What you'll learn**
# - What a trace fixture holds, and the tolerance rule `|port − golden| ≤ atol + rtol·|golden|`.
# - Why the first failing tensor, not the logits, is the useful answer.
# - Why some mistakes only show up at float64 precision.
#
# **What you'll need**
# - `pip install -e ".[notebooks]"`. About 10 seconds. Fixtures go to a temporary directory.
# - The demo weights, or your own checkpoint (`WEIGHTS` or `NPFORMER_WEIGHTS`), or nothing
#   (then seeded L1 weights at 224 px are used).

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from npformer import layers
from npformer.tools import explain
from npformer.cli import main as npformer_cli
from npformer.tools.golden import compare_fixtures, read_fixture, trace_to_fixture

# %%
WEIGHTS = None  # e.g. "../weights/efficientformer-l1-300"
chosen = explain.choose_model("efficientformer", weights=WEIGHTS)
model = chosen.model
print(chosen.description)
image_path = Path("../tests/fixtures/digits/digit_3_705.png" if chosen.kind == "demo" else "../tests/fixtures/images/two_cats.png")
pixels = chosen.processor(image_path)["pixel_values"]  # [1, 3, S, S]
print(image_path.name, pixels.shape)
assert pixels.shape == (1, 3, chosen.size, chosen.size)
workdir = Path(tempfile.mkdtemp(prefix="npformer-oracle-"))  # nothing is written into the repository

# %% [markdown]
# ## 1. The golden fixture
#
# `trace_to_fixture` runs the model with a full `Trace` and writes one safetensors file. It holds
# the `input` pixel values, one tensor per named activation in the model's dtype, and metadata:
# format and version, model class, config, weights, dtype and npformer version.

# %%
golden = workdir / "golden.safetensors"
weights_name = os.path.relpath(chosen.path) if chosen.path else "seeded"
meta = trace_to_fixture(model, pixels, golden, weights_name=weights_name)
tensors, names, meta = read_fixture(golden)
print({k: v for k, v in meta.items() if k not in ("config", "names")})
print(len(names), "tensors, the first ones:")
for name in names[:8]:
    print(f"  {name:28s} {tensors[name].shape}")
assert names[0] == "input" and tensors["input"].shape == pixels.shape
assert names[1:] == json.loads(meta["names"]) and names[-1] == "logits"
assert tensors["logits"].shape == (1, model.config.num_labels)

# %% [markdown]
# The command line does the same from an image file, with the preprocessing the weights call for.
# It needs a weight file, so it is skipped when the notebook runs on seeded weights:

# %%
if chosen.path is not None:
    status = npformer_cli(["trace", str(image_path), str(workdir / "golden_cli.safetensors"), "--weights", weights_name])
    assert status == 0
    cli_tensors, cli_names, _ = read_fixture(workdir / "golden_cli.safetensors")
    assert cli_names == names and np.array_equal(cli_tensors["logits"], tensors["logits"])

# %% [markdown]
# ## 2. A broken port: the tanh GELU
#
# The most common porting mistake in these models is a GELU that is not the exact one. Many
# frameworks offer the tanh approximation, sometimes as the default. We simulate a port that
# makes this mistake by **monkeypatching** npformer at run time. Inside
# `explain.swapped_activation("gelu")`, the lookup table `npformer.layers.ACTIVATIONS` returns
# `gelu_tanh` for `"gelu"`. The model object itself does not change.

# %%
port = workdir / "port_tanh_gelu.safetensors"
with explain.swapped_activation("gelu"):
    assert layers.ACTIVATIONS["gelu"] is layers.gelu_tanh  # patched inside the block ...
    trace_to_fixture(model, pixels, port)
assert layers.ACTIVATIONS["gelu"] is layers.gelu  # ... and restored after it
port_tensors, port_names, _ = read_fixture(port)
print(f"logits: golden {tensors['logits'][0, :3]}, port {port_tensors['logits'][0, :3]}")
print(f"max |Δ logits| = {np.abs(port_tensors['logits'] - tensors['logits']).max():.2e}")
assert port_names == names

# %% [markdown]
# The logits differ by about 1e-3, which is enough to fail a 1e-4 test. But the logits cannot say
# *where* the port went wrong.
#
# ## 3. The first diverging layer
#
# `compare_fixtures(port, golden)` walks the tensors in forward order and checks
# `|port − golden| ≤ atol + rtol·|golden|` everywhere. It reports each tensor's max absolute and
# max relative difference, and `first_failure` is the earliest tensor outside the tolerance.
# `npformer compare` prints the same table up to that tensor and exits with status 1:

# %%
status = npformer_cli(["compare", str(port), str(golden), "--atol", "1e-4", "--rtol", "1e-4"])
assert status == 1

# %%
result = compare_fixtures(port, golden, atol=1e-4, rtol=1e-4)
first = result.first_failure
first_after_gelu = next(n for n in names if n.endswith("mlp.fc2"))  # fc1 → norm1 → GELU → fc2
print(f"first tensor beyond tolerance: {first.name}, max abs {first.max_abs:.2e}, shape {first.shape_a}")
print(f"the first activation computed from a GELU's output: {first_after_gelu}")
assert first.name == first_after_gelu
earlier = result.rows[: [row.name for row in result.rows].index(first.name)]
assert all(row.max_abs == 0.0 for row in earlier)  # everything before the first GELU is bit-identical
print(f"{len(earlier)} earlier tensors are bit-identical; {sum(not r.ok for r in result.rows)} of {len(result.rows)} fail")

# %% [markdown]
# The answer is exact. Everything up to the first MLP's `norm1` is bit-identical, and the first
# tensor that reads a GELU output is the first to fail. A port author now knows to look at the
# activation function.
#
# The plot shows the difference through the whole network. Tensors that are exactly equal sit on
# the floor of the plot.

# %%
floor = 1e-10
diffs = np.array([max(row.max_abs, floor) for row in result.rows])
fig, ax = plt.subplots(figsize=(11, 3.2))
ax.semilogy(diffs, ".-", lw=0.8)
ax.axhline(1e-4, color="grey", ls="--", lw=1, label="atol 1e-4")
index = [row.name for row in result.rows].index(first.name)
ax.axvline(index, color="red", lw=1, label=f"first failure: {first.name}")
stage_starts = {f"stage {s}": next(i for i, r in enumerate(result.rows) if r.name.startswith(f"stages.{s}")) for s in range(4)}
ax.set_xticks(list(stage_starts.values()), list(stage_starts.keys()))
ax.set(ylabel="max |port − golden|", ylim=(floor / 2, 1), title="tanh GELU port against the golden fixture, in forward order")
ax.text(0, floor * 2, "exactly 0", fontsize=8, color="grey")
ax.legend(loc="lower right")
fig.tight_layout()

# %% [markdown]
# ## 4. Your own port writes the same names
#
# A real port is separate code. Here is a tiny one: just EfficientFormer's stem, written from
# scratch with the im2col convolution of notebook 01 and the textbook BatchNorm.
# `explain.save_port_fixture` writes its activations with the metadata `compare` needs. The
# comparison runs over the names both files hold, and lists the rest as "only in B".

# %%
def stem_port(x, w):  # a from-scratch stem: [B, 3, S, S] -> [B, C0, S/4, S/4]
    out = {}
    for conv, norm in (("stem.conv1", "stem.norm1"), ("stem.conv2", "stem.norm2")):
        x = explain.conv2d_im2col(x, w[f"{conv}.weight"], w[f"{conv}.bias"], stride=2, padding=1)
        out[conv] = x
        x = explain.batch_norm_textbook(x, w[f"{norm}.running_mean"], w[f"{norm}.running_var"], w[f"{norm}.weight"],
                                        w[f"{norm}.bias"], model.config.batch_norm_eps)
        out[norm] = x
        x = np.maximum(x, 0)
    out["stem"] = x
    return out


activations = stem_port(pixels, model.weights)
print({name: a.shape for name, a in activations.items()})
partial = workdir / "port_stem_only.safetensors"
explain.save_port_fixture(partial, {"input": pixels, **activations})
status = npformer_cli(["compare", str(partial), str(golden), "--atol", "1e-4", "--rtol", "1e-4"])
assert status == 0
assert activations["stem"].shape == tensors["stem"].shape

# %% [markdown]
# The independent stem agrees with npformer within 1e-4. The port can grow block by block, and it
# is checked at every step.
#
# ## 5. Other mistakes, and which layer catches each
#
# `explain.simulated_port` builds ports that each make one classic mistake:

# %%
for mistake, what in explain.MISTAKES.items():
    print(f"{mistake:28s} {what}")

# %% [markdown]
# We compare each one twice:
# - in float32 at `atol = rtol = 1e-4`, the usual bar for ports that run in float32;
# - in float64 at `1e-9`, for ports that can run in double precision. There, far smaller
#   mistakes stand out from rounding noise.
#
# `explain.trace_and_compare` traces the reference and the port and compares them.

# %%
swift = explain.choose_model("swiftformer")  # the SwiftFormer case needs a SwiftFormer
swift_pixels = swift.processor(image_path)["pixel_values"]
cases = [  # (mistake, reference model, its input)
    ("tanh GELU", model, pixels),
    ("no attention bias", model, pixels),
    ("qkv as q|k|v blocks", model, pixels),
    ("LayerNorm eps 1e-5", model, pixels),
    ("other attention generation", swift.model, swift_pixels),
]
table = []
for mistake, reference, x in cases:
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-9)):
        ref = type(reference)(reference.config, reference.weights, dtype=dtype)  # the same weights, run in `dtype`
        if mistake == "tanh GELU":  # the monkeypatched port of section 2
            comparison = explain.trace_and_compare(ref, ref, x, workdir, atol=tol, rtol=tol,
                                                   port_context=lambda: explain.swapped_activation("gelu"))
        else:
            comparison = explain.trace_and_compare(ref, explain.simulated_port(ref, mistake), x, workdir, atol=tol, rtol=tol)
        first = comparison.first_failure
        logits = next(row for row in comparison.rows if row.name == "logits")
        table.append((mistake, np.dtype(dtype).name, tol, first.name if first else "(none)",
                      first.max_abs if first else 0.0, logits.max_abs))
print(f"{'mistake':28s} {'dtype':8s} {'tol':>6s}  {'first tensor beyond tolerance':42s} {'its max abs':>11s} {'Δ logits':>9s}")
for mistake, dtype, tol, name, diff, dlogits in table:
    print(f"{mistake:28s} {dtype:8s} {tol:6.0e}  {name:42s} {diff:11.2e} {dlogits:9.2e}")
assert len(table) == 10
assert all(name != "(none)" for _, dtype, _, name, _, _ in table if dtype == "float64")  # float64 catches every one

# %% [markdown]
# How to read the table:
# - **tanh GELU** fails at the first tensor after the first GELU, in both precisions.
# - **no attention bias** and **qkv as q|k|v blocks** fail at the attention probabilities of the
#   first Meta3D block. Everything before the last stage is exact.
# - **LayerNorm eps** is the quiet one. It changes the Meta3D block's `norm1` by a tiny amount.
#   In float32 at 1e-4 it surfaces only later, or not at all, depending on the weights. In float64
#   at 1e-9 it is caught at `norm1` itself. If your port can run in float64, compare there
#   (`npformer trace --dtype float64`).
# - **other attention generation** (SwiftFormer) fails at the very first `attn.weights`. Under
#   v1 those weights are all ones.
#
# **Note:** the same workflow works from a shell (the guide *Golden values for a port* on the
# documentation site walks through it):
# `npformer trace IMAGE golden.safetensors`, then your port writes `port.safetensors` with the
# same names and `format=npformer-trace`, then `npformer compare port.safetensors golden.safetensors`.
