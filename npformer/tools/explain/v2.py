"""EfficientFormerV2's attention, step by step: Attention4D with its two talking-heads mixes, the
stride-2 attention of stage 2 and its bilinear ×2 upsample, and the downsampling attention's
local-global query (queries on the half-resolution grid, keys on the full one).

Each `*_steps` function recomputes one attention from its input with the model's own blocks
(`npformer.models.efficientformerv2.model`: conv_norm, split_heads, merge_heads, position_bias,
subsample) and `npformer.layers`, keeping every intermediate the model computes in one call of
`layers.talking_heads_attention`. Letters: B batch, C channels, h heads, dk / dv key / value
channels per head, r×r the grid the attention runs on (N = r² tokens), H×W its input's grid.
"""

from __future__ import annotations

import numpy as np

from ... import layers
from ...errors import InputError
from ...parallel import blas_held_at_one
from ...models.efficientformerv2 import model as v2
from ...models.efficientformerv2.schema import attention_grid, stages
from ...trace import Trace, no_trace


def input_name(config, module: str) -> str:
    """The traced name whose output module `module` reads: the block or downsample before a block
    ("stages.2.blocks.1" ← "stages.2.blocks.0", "stages.2.blocks.0" ← "stages.2.downsample"), or
    the previous stage for a downsample ("stages.3.downsample.attn" ← "stages.2")."""
    order = ["stem"]
    for stage in stages(config):
        if stage.downsample:
            order.append(stage.downsample)
        order += [name for _, name in stage.blocks]
    parts = module.split(".")
    if len(parts) >= 3 and parts[0] == "stages" and parts[2] == "downsample":
        return f"stages.{int(parts[1]) - 1}"
    block = ".".join(parts[:4])
    if block not in order or block == "stem":
        raise InputError(f"{module!r} is not a block or downsample of this EfficientFormerV2; "
                         f"blocks: {', '.join(order[1:])}")
    return order[order.index(block) - 1]


def module_input(model, pixel_values, module: str, record=()):  # -> ([B, C, H, W], Trace)
    """The feature map module `module` reads (see `input_name`) in a forward of `pixel_values`,
    and a Trace of that forward holding it, the module's output and the names in `record` (globs)."""
    source = input_name(model.config, module)
    trace = Trace([source, module, f"{module}.attn_probs", *record])
    model(pixel_values, trace=trace)
    return trace[source], trace


def talking_heads_weights(model, name: str) -> dict:  # -> {"talking_head1": ([h, h], [h]), "talking_head2": ...}
    """Each talking head of the Attention4D `name` (a block's token_mixer) as a matrix and a bias:
    mixed[h′] = Σ_h W[h′, h]·maps[h] + b[h′]."""
    p = model.params
    return {t: (p[f"{name}.{t}.weight"][:, :, 0, 0], p[f"{name}.{t}.bias"]) for t in ("talking_head1", "talking_head2")}


@blas_held_at_one()  # BLAS at one thread, as in a forward: the same products, the same bits
def attention4d_steps(x, model, name: str) -> dict:  # [B, C, H, W] -> {step: array}
    """Attention4D `name` (e.g. "stages.2.blocks.1.token_mixer") on its input x, every step kept:

        strided       [B, C, r, r]    stride-2 depthwise 3×3 conv → BN (stage 2 only; else x itself)
        q, k          [B, h, N, dk]   1×1 conv → BN, split into heads
        v             [B, h, N, dv];  v_local [B, h·dv, r, r] (depthwise 3×3 → BN of v)
        bias          [h, N, N]       the learned table at every (query, key) offset
        logits        [B, h, N, N]    q·kᵀ·dk^-0.5 + bias
        mixed_logits  [B, h, N, N]    talking head 1: the heads' logits mixed
        probs         [B, h, N, N]    softmax over the keys (each row sums to 1; the model traces these)
        mixed_probs   [B, h, N, N]    talking head 2: the heads' probabilities mixed (rows need not sum to 1)
        attended      [B, h·dv, r, r] mixed_probs·v, heads merged, + v_local
        upsampled     [B, h·dv, H, W] bilinear ×2 (stage 2 only; else attended itself)
        out           [B, C, H, W]    GELU → 1×1 conv → BN: what the model's token_mixer returns"""
    p, cfg = model.params, model.config
    h = cfg.num_heads
    stride = f"{name}.stride_conv.conv.weight" in p
    s = {"strided": v2.conv_norm(x, p, cfg, no_trace, f"{name}.stride_conv", stride=2, padding=1, groups=x.shape[1])
         if stride else x}
    r_h, r_w = s["strided"].shape[2:]
    s["q"] = v2.split_heads(v2.conv_norm(s["strided"], p, cfg, no_trace, f"{name}.q"), h)  # [B, h, N, dk]
    s["k"] = v2.split_heads(v2.conv_norm(s["strided"], p, cfg, no_trace, f"{name}.k"), h)  # [B, h, N, dk]
    v = v2.conv_norm(s["strided"], p, cfg, no_trace, f"{name}.v")  # [B, h·dv, r, r]
    s["v"] = v2.split_heads(v, h)  # [B, h, N, dv]
    s["v_local"] = v2.conv_norm(v, p, cfg, no_trace, f"{name}.v_local", padding=1, groups=v.shape[1])
    built = attention_grid(cfg, 2 if stride else 3)  # the grid the table is laid over
    s["bias"] = v2.position_bias(p, name, (r_h, r_w), built)  # [h, N, N]
    dk = s["q"].shape[-1]
    s["logits"] = np.matmul(s["q"], s["k"].transpose(0, 1, 3, 2)) * dk**-0.5 + s["bias"]  # [B, h, N, N]
    s["mixed_logits"] = layers.talking_heads(s["logits"], p[f"{name}.talking_head1.weight"], p[f"{name}.talking_head1.bias"])
    s["probs"] = layers.softmax(s["mixed_logits"], axis=-1)
    s["mixed_probs"] = layers.talking_heads(s["probs"], p[f"{name}.talking_head2.weight"], p[f"{name}.talking_head2.bias"])
    s["attended"] = v2.merge_heads(np.matmul(s["mixed_probs"], s["v"]), r_h, r_w) + s["v_local"]  # [B, h·dv, r, r]
    s["upsampled"] = layers.upsample_bilinear_2x(s["attended"]) if stride else s["attended"]  # [B, h·dv, H, W]
    s["out"] = v2.conv_norm(layers.gelu(s["upsampled"]), p, cfg, no_trace, f"{name}.proj")  # [B, C, H, W]
    return s


def row_distance(a, b) -> np.ndarray:  # [B, h, N, M] twice -> [h]
    """Half the L1 distance between matching rows of two stacks of maps, averaged over images and
    queries, per head. For probability rows it is the total-variation distance: 0 when equal,
    1 when the two put all their weight on different keys."""
    return 0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum(axis=-1).mean(axis=(0, 2))


def talking_heads_effect(steps: dict) -> dict:  # {step: array} -> {measure: [h]}
    """How far each talking-heads mix moves each head's attention, from `attention4d_steps`:

        head1_moves     total-variation distance between softmax(logits), the attention the head
                        would have without talking head 1, and probs, the one it has
        head2_moves     half the L1 distance between probs and mixed_probs (talking head 2)
        head2_row_sums  the mean row sum of mixed_probs: Σ_h W2[h′, h] + N·b2[h′] (1 for the identity)

    All three are per head, [h]; with identity talking heads the moves are 0 and the sums 1."""
    without_mix = layers.softmax(steps["logits"], axis=-1)
    return {
        "head1_moves": row_distance(without_mix, steps["probs"]),
        "head2_moves": row_distance(steps["probs"], steps["mixed_probs"]),
        "head2_row_sums": steps["mixed_probs"].sum(axis=-1).mean(axis=(0, 2)),
    }


def talking_heads_shares(model, name: str) -> dict:  # -> {"talking_head1": [h], "talking_head2": [h]}
    """For each output head of each talking head, the share of its weight on its own input head:
    |W[h′, h′]| / Σ_h |W[h′, h]| (1 = no mixing; 1/h = an even mix of all heads)."""
    shares = {}
    for t, (w, _) in talking_heads_weights(model, name).items():
        shares[t] = np.abs(np.diag(w)) / np.abs(w).sum(axis=1)
    return shares


def upsample_matrix(H: int, W: int, dtype=np.float64) -> np.ndarray:  # -> [(2H·2W), (H·W)]
    """The bilinear ×2 upsample (`layers.upsample_bilinear_2x`) as a matrix U on flattened maps:
    upsample(x).reshape(-1) = U @ x.reshape(-1). Column n is the upsample of the n-th unit impulse;
    each row holds the (at most four) blend weights of one output pixel and sums to 1."""
    impulses = np.eye(H * W, dtype=dtype).reshape(H * W, 1, H, W)  # [N, 1, H, W]
    return layers.upsample_bilinear_2x(impulses).reshape(H * W, 4 * H * W).T


def query_positions(H: int, W: int, stride: int = 2) -> np.ndarray:  # -> [Nq, 2] (row, col) on the key grid
    """Where the downsampling attention's queries sit on its H×W key grid: every `stride`-th row and
    column, row-major (query n of the ⌈H/s⌉×⌈W/s⌉ grid at (s·row, s·col))."""
    rows, cols = np.meshgrid(np.arange(0, H, stride), np.arange(0, W, stride), indexing="ij")
    return np.stack([rows.reshape(-1), cols.reshape(-1)], axis=1)


@blas_held_at_one()  # as attention4d_steps
def local_global_query_steps(x, model, name: str = "stages.3.downsample.attn") -> dict:  # [B, C, H, W] -> {step: array}
    """The downsampling attention `name` on its input x (stage 2's output), every step kept:

        local        [B, C, H2, W2]   stride-2 depthwise 3×3 conv with bias, no BatchNorm: the local query
        pooled       [B, C, H2, W2]   every other pixel (timm's AvgPool2d(1, 2)): the global query
        query_map    [B, h·dk, H2, W2] (local + pooled) → 1×1 conv → BN: what the model traces as `{name}.q`
        q            [B, h, N2, dk];  k [B, h, N, dk];  v [B, h, N, dv]  (N2 = H2·W2 queries, N = H·W keys)
        v_local      [B, h·dv, H2, W2] stride-2 depthwise 3×3 → BN of v
        bias_index   [N2, N]          |2·q_row − k_row|·W + |2·q_col − k_col|
        bias         [h, N2, N]       the learned table [h, N] gathered by bias_index
        logits       [B, h, N2, N]    q·kᵀ·dk^-0.5 + bias (no talking heads here)
        probs        [B, h, N2, N]    softmax over the N keys
        out          [B, C′, H2, W2]  GELU(merge(probs·v) + v_local) → 1×1 conv → BN"""
    p, cfg = model.params, model.config
    h = cfg.num_heads
    H, W = x.shape[2:]
    s = {"local": layers.conv2d(x, p[f"{name}.q.local.weight"], p[f"{name}.q.local.bias"], stride=2, padding=1,
                                groups=x.shape[1])}
    s["pooled"] = v2.subsample(x)
    s["query_map"] = v2.conv_norm(s["local"] + s["pooled"], p, cfg, no_trace, f"{name}.q.proj")  # [B, h·dk, H2, W2]
    s["q"] = v2.split_heads(s["query_map"], h)  # [B, h, N2, dk]
    s["k"] = v2.split_heads(v2.conv_norm(x, p, cfg, no_trace, f"{name}.k"), h)  # [B, h, N, dk]
    v = v2.conv_norm(x, p, cfg, no_trace, f"{name}.v")  # [B, h·dv, H, W]
    s["v"] = v2.split_heads(v, h)  # [B, h, N, dv]
    s["v_local"] = v2.conv_norm(v, p, cfg, no_trace, f"{name}.v_local", stride=2, padding=1, groups=v.shape[1])
    s["bias_index"] = layers.attention_bias_index_grid(H, W, query_stride=2)  # [N2, N]
    s["bias"] = v2.position_bias(p, name, (H, W), cfg.grid(2), query_stride=2)  # [h, N2, N]
    dk = s["q"].shape[-1]
    s["logits"] = np.matmul(s["q"], s["k"].transpose(0, 1, 3, 2)) * dk**-0.5 + s["bias"]  # [B, h, N2, N]
    s["probs"] = layers.softmax(s["logits"], axis=-1)
    H2, W2 = s["query_map"].shape[2:]
    attended = v2.merge_heads(np.matmul(s["probs"], s["v"]), H2, W2) + s["v_local"]  # [B, h·dv, H2, W2]
    s["out"] = v2.conv_norm(layers.gelu(attended), p, cfg, no_trace, f"{name}.proj")  # [B, C′, H2, W2]
    return s
