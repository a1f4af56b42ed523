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
# # Exercises 04 — EfficientFormer's blocks, and the whole model
#
# Time to assemble. EfficientFormer is a stem, then Meta4D blocks (the pooling mixer and a
# convolutional MLP) for three and a half stages, then Meta3D blocks (attention and a linear MLP)
# on the last stage's tokens, then a LayerNorm, a mean over the tokens and two classifier heads.
# You write the two blocks and then the whole forward pass, and run it on the demo weights: a
# small EfficientFormer trained on handwritten digits (`weights/efficientformer-digits.safetensors`,
# 112×112 inputs, 10 classes). The check compares your logits with npformer's, logit by logit.
#
# **What you'll do**
# - Write the Meta4D block from the layers of notebooks 01 and 02.
# - Write the Meta3D block from LayerNorm and the attention of notebook 03.
# - Write the whole EfficientFormer forward from your blocks, and match npformer's logits.
#
# **What you'll learn**
# - Where each residual connection, layer scale and normalisation sits in a block.
# - How a checkpoint's tensor names map onto the network (`stages.2.blocks.1.mlp.fc1.weight`).
# - What it takes to reproduce a model's logits to 1e-4: every detail of the last three notebooks.
#
# **What you'll need**
# - numpy and npformer (`pip install -e .`, from the repository so that `weights/` is there; without
#   it the model check runs on seeded weights of the same shape). No torch. About 40 minutes.
#
# Each exercise: replace `raise NotImplementedError()` with your code, then run the `check` cell
# after it. It prints `passed`, or what is wrong; when your output matches a common mistake it
# names it.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

from npformer.exercises import block_weights, check

# %% [markdown]
# ## Your layers
#
# The blocks are built from the layers of notebooks 01–03. The next cell imports npformer's
# versions. To run the whole model on **your own** layers, paste your functions from those
# notebooks below the import (each one that passed its check there): they then replace npformer's.

# %%
from npformer.layers import batch_norm, conv2d, gather_attention_bias, gelu, layer_norm, multi_head_attention, pool_mixer

# paste your conv2d, batch_norm, pool_mixer, gelu (with your erf), layer_norm, gather_attention_bias
# and multi_head_attention here

mine = [f.__name__ for f in (batch_norm, conv2d, gather_attention_bias, gelu, layer_norm, multi_head_attention, pool_mixer)
        if f.__module__ == "__main__"]
print("your layers:", ", ".join(mine) or "none yet (npformer's are used)")

# %% [markdown]
# ## 1. The Meta4D block
#
# A block gets `weights`, its own tensors under the names below the block (the keys of
# `block_weights(model_weights, "stages.0.blocks.0")`), and `cfg`, the model's
# `EfficientFormerConfig`:
#
# ```
# ls1.gamma, ls2.gamma                              [C]      layer scales (only when cfg.use_layer_scale)
# mlp.fc1.weight [4C, C, 1, 1], mlp.fc1.bias [4C]            1×1 convolution C → 4C
# mlp.norm1.{running_mean, running_var, weight, bias} [4C]   its BatchNorm
# mlp.fc2.weight [C, 4C, 1, 1], mlp.fc2.bias [C]             1×1 convolution 4C → C
# mlp.norm2.{running_mean, running_var, weight, bias} [C]    its BatchNorm
# ```
#
# The block, in order:
#
# 1. `x = x + ls1 · pool_mixer(x)` (window `cfg.pool_size`, which is 3),
# 2. `x = x + ls2 · MLP(x)` on the **updated** `x`, with MLP = fc1 → norm1 → GELU → fc2 → norm2.
#
# A layer scale multiplies each channel by its `gamma` (reshape `[C]` to `[1, C, 1, 1]`); skip it
# when `cfg.use_layer_scale` is False. BatchNorm's eps is `cfg.batch_norm_eps`.

# %% nbgrader={"grade": false, "grade_id": "meta4d_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
def meta4d_block(x, weights, cfg):  # [B, C, H, W] -> [B, C, H, W]
    """EfficientFormer's pooling block."""
    ### BEGIN SOLUTION
    w = weights

    def scale(y, key):  # per-channel layer scale
        return y * w[key].reshape(1, -1, 1, 1) if cfg.use_layer_scale else y

    def conv_bn(y, conv, norm):
        y = conv2d(y, w[f"{conv}.weight"], w[f"{conv}.bias"])
        return batch_norm(y, w[f"{norm}.running_mean"], w[f"{norm}.running_var"], w[f"{norm}.weight"],
                          w[f"{norm}.bias"], cfg.batch_norm_eps)

    x = x + scale(pool_mixer(x, cfg.pool_size or 3), "ls1.gamma")
    hidden = gelu(conv_bn(x, "mlp.fc1", "mlp.norm1"))  # [B, 4C, H, W]
    return x + scale(conv_bn(hidden, "mlp.fc2", "mlp.norm2"), "ls2.gamma")
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_meta4d_block", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
result = check("meta4d_block", meta4d_block)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 2. The Meta3D block
#
# On the last stage's tokens `[B, N, C]`, with these tensors:
#
# ```
# norm1.weight, norm1.bias, norm2.weight, norm2.bias   [C]            LayerNorms (eps cfg.layer_norm_eps)
# token_mixer.qkv.weight [h·(2dk + dv), C], token_mixer.qkv.bias       the fused qkv projection
# token_mixer.proj.weight [C, h·dv], token_mixer.proj.bias [C]         the output projection
# token_mixer.attention_biases [h, R²]                                  the bias table
# mlp.fc1.weight [4C, C], mlp.fc1.bias, mlp.fc2.weight [C, 4C], mlp.fc2.bias   Linear → GELU → Linear
# ls1.gamma, ls2.gamma [C]                                             layer scales
# ```
#
# The block normalises *before* each branch ("pre-norm"):
#
# 1. `x = x + ls1 · Attention(LN1(x))`, the attention of notebook 03 with the gathered bias
#    (`cfg.num_attention_heads` heads, key dim `cfg.key_dim`, grid side `cfg.resolution`),
# 2. `x = x + ls2 · MLP(LN2(x))`.
#
# Return the output and the attention probabilities.

# %% nbgrader={"grade": false, "grade_id": "meta3d_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
def meta3d_block(x, weights, cfg):  # [B, N, C] -> ([B, N, C], [B, h, N, N])
    """EfficientFormer's attention block."""
    ### BEGIN SOLUTION
    w = weights

    def scale(y, key):
        return y * w[key] if cfg.use_layer_scale else y

    def norm(y, key):
        return layer_norm(y, w[f"{key}.weight"], w[f"{key}.bias"], cfg.layer_norm_eps)

    bias = gather_attention_bias(w["token_mixer.attention_biases"], cfg.resolution)  # [h, N, N]
    mixed, probs = multi_head_attention(norm(x, "norm1"), w["token_mixer.qkv.weight"], w["token_mixer.qkv.bias"],
                                        w["token_mixer.proj.weight"], w["token_mixer.proj.bias"], bias,
                                        cfg.num_attention_heads, cfg.key_dim)
    x = x + scale(mixed, "ls1.gamma")
    hidden = gelu(norm(x, "norm2") @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"])  # [B, N, 4C]
    return x + scale(hidden @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"], "ls2.gamma"), probs
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_meta3d_block", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
result = check("meta3d_block", meta3d_block)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The whole EfficientFormer
#
# `weights` is the model's whole weight dict, `cfg` its config (the demo model: `cfg.depths =
# [1, 1, 2, 2]`, `cfg.hidden_sizes = [16, 32, 48, 64]`, `cfg.num_meta3d_blocks = 1`). From the
# pixels `[B, 3, 112, 112]` to the logits `[B, 10]`:
#
# 1. **stem**: `stem.conv1` (3×3, stride 2, padding 1) → BatchNorm `stem.norm1` → ReLU, then the same
#    with `stem.conv2` / `stem.norm2`: `[B, 16, 28, 28]`.
# 2. **stages** `s = 0 … 3`. Stages 1–3 start with a downsample: the 3×3 convolution
#    `stages.{s}.downsample.conv` (stride `cfg.downsample_stride`, padding `cfg.downsample_pad`)
#    → BatchNorm `stages.{s}.downsample.norm`. Then the stage's Meta4D blocks
#    `stages.{s}.blocks.{i}`: `cfg.depths[s]` of them in stages 0–2,
#    `cfg.depths[3] − cfg.num_meta3d_blocks` in stage 3.
# 3. **flatten** the last stage's map to tokens, **row-major**: `[B, C, H, W] → [B, H·W, C]`, token
#    `n = h·W + w`. In the weights' numbering the flatten takes a block index of its own, so with
#    `n4d` Meta4D blocks in stage 3 the Meta3D blocks are `stages.3.blocks.{n4d + 1 + j}`.
# 4. the **Meta3D** blocks, then the final LayerNorm `norm` (eps `cfg.layer_norm_eps`).
# 5. the **mean over the tokens** `[B, C]`, and the two classifier heads `head` and `head_dist`
#    (linear layers); the logits are their **average**.
#
# `block_weights(weights, name)` cuts a block's tensors out of the weight dict.

# %% nbgrader={"grade": false, "grade_id": "efficientformer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def efficientformer(pixel_values, weights, cfg):  # [B, 3, S, S] -> [B, num_labels]
    """EfficientFormerForImageClassificationWithTeacher's logits, from your blocks."""
    ### BEGIN SOLUTION
    w = weights

    def conv_bn(x, conv, norm, stride, padding):
        x = conv2d(x, w[f"{conv}.weight"], w[f"{conv}.bias"], stride, padding)
        return batch_norm(x, w[f"{norm}.running_mean"], w[f"{norm}.running_var"], w[f"{norm}.weight"],
                          w[f"{norm}.bias"], cfg.batch_norm_eps)

    x = np.maximum(conv_bn(pixel_values, "stem.conv1", "stem.norm1", 2, 1), 0)  # [B, C0/2, S/2, S/2]
    x = np.maximum(conv_bn(x, "stem.conv2", "stem.norm2", 2, 1), 0)  # [B, C0, S/4, S/4]
    for s, depth in enumerate(cfg.depths):
        if s > 0:
            x = conv_bn(x, f"stages.{s}.downsample.conv", f"stages.{s}.downsample.norm", cfg.downsample_stride,
                        cfg.downsample_pad)
        n4d = depth if s < 3 else depth - cfg.num_meta3d_blocks
        for i in range(n4d):
            x = meta4d_block(x, block_weights(w, f"stages.{s}.blocks.{i}"), cfg)
    B, C, H, W = x.shape
    x = x.reshape(B, C, H * W).transpose(0, 2, 1)  # [B, N, C], token n = h·W + w
    for j in range(cfg.num_meta3d_blocks):
        x, _ = meta3d_block(x, block_weights(w, f"stages.3.blocks.{n4d + 1 + j}"), cfg)
    x = layer_norm(x, w["norm.weight"], w["norm.bias"], cfg.layer_norm_eps)
    pooled = x.mean(axis=1)  # [B, C]
    head, head_dist = (pooled @ w[f"{h}.weight"].T + w[f"{h}.bias"] for h in ("head", "head_dist"))
    return (head + head_dist) / 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_efficientformer", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
result = check("efficientformer", efficientformer)
### BEGIN HIDDEN TESTS
assert result.passed, result.verdict
### END HIDDEN TESTS

# %% [markdown]
# ## What next
#
# You have reproduced a vision transformer's logits from code you wrote. The same comparison, one
# named activation at a time, is how a port to another framework is checked: see the teaching
# notebook `../04_golden_oracle.ipynb` and the guide *Golden values for a port* on the documentation site.
