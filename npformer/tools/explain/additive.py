"""SwiftFormer's additive attention step by step, and its cost against multi-head self-attention."""

from __future__ import annotations

import time

import numpy as np

from ... import layers
from ...errors import InputError
from ...parallel import blas_held_at_one


def additive_attention_steps(x, weights: dict, name: str, generation: str) -> dict:  # [B, N, C] -> {step: array}
    """SwiftFormer's efficient additive attention with every intermediate kept, for the block
    `name` (e.g. "stages.3.blocks.1.attn") of a weight dict with timm's names:

        q, k       [B, N, C]  to_query(x), to_key(x)
        q_hat, k_hat          L2-normalised over channels (each token a unit vector)
        scores     [B, N, 1]  q̂·w_g / √C, one score per token
        weights    [B, N, 1]  v1: softmax over the last axis (size 1: all exactly 1)
                              v2: the scores L2-normalised over the N tokens
        global_query [B, 1, C]  Σ_n weights_n · q̂_n
        out        [B, N, C]  final(proj(G ⊙ k̂) + q̂)

    The model computes the same in `npformer.models.swiftformer.model.additive_attention`."""
    if generation not in ("v1", "v2"):
        raise InputError(f"generation must be 'v1' or 'v2', got {generation!r}")

    if x.shape[0] > 1:  # as a forward runs a batch (npformer.parallel): one image at a time, so the same bits
        per_image = [additive_attention_steps(x[i:i + 1], weights, name, generation) for i in range(x.shape[0])]
        return {step: np.concatenate([steps[step] for steps in per_image]) for step in per_image[0]}

    def w(key):
        return weights[f"{name}.{key}"]

    with blas_held_at_one():  # BLAS at one thread, as in a forward: the same products, the same bits
        C = x.shape[-1]
        s = {}
        s["q"] = layers.linear(x, w("to_query.weight"), w("to_query.bias"))  # [B, N, C]
        s["k"] = layers.linear(x, w("to_key.weight"), w("to_key.bias"))  # [B, N, C]
        s["q_hat"] = layers.l2_normalize(s["q"], axis=-1)
        s["k_hat"] = layers.l2_normalize(s["k"], axis=-1)
        s["scores"] = np.matmul(s["q_hat"], w("w_g")) * C**-0.5  # [B, N, 1]
        if generation == "v1":
            s["weights"] = layers.softmax(s["scores"], axis=-1)  # softmax over one element: 1
        else:
            s["weights"] = layers.l2_normalize(s["scores"], axis=1)  # over the tokens
        s["global_query"] = np.sum(s["weights"] * s["q_hat"], axis=1, keepdims=True)  # [B, 1, C]
        mixed = layers.linear(s["global_query"] * s["k_hat"], w("proj.weight"), w("proj.bias")) + s["q_hat"]
        s["out"] = layers.linear(mixed, w("final.weight"), w("final.bias"))  # [B, N, C]
    return s


def attention_input(model, pixel_values, block: str):  # -> ([B, N, C] tokens, [B, N, C] the model's attention output)
    """The tokens SwiftFormer's encoder block `block` feeds its attention (the local
    representation's output, flattened row-major) and what the model's attention returned."""
    from ...trace import Trace

    trace = Trace([f"{block}.local_representation", f"{block}.attn"])
    model(pixel_values, trace=trace)
    x = trace[f"{block}.local_representation"]  # [B, C, H, W]
    B, C, H, W = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, H * W, C), trace[f"{block}.attn"]


def attention_flops(tokens: int, channels: int) -> dict:
    """Floating-point operations (a multiply-add counts 2) of one token mixer on N tokens of C
    channels, batch 1, softmax and normalisations left out:

        multi-head self-attention  qkv and proj linears 2·N·C·4C, plus q·kᵀ and probs·v 2·2·N²·C
                                   (however C is split over the heads)
        additive attention         to_query, to_key, proj and final linears 2·N·C·4C, plus q̂·w_g,
                                   Σ α·q̂ and G ⊙ k̂, about 3·2·N·C

    Both pay the same 8·N·C² for their linear layers; only multi-head attention pays N²."""
    N, C = tokens, channels
    linears = 2 * N * C * 4 * C
    return {"multi-head": linears + 2 * 2 * N * N * C, "additive": linears + 3 * 2 * N * C}


def time_attention(tokens: int, channels: int = 64, heads: int = 4, repeats: int = 5, seed: int = 0) -> dict:
    """Wall time in seconds of one forward of each token mixer on [1, N, C] random tokens, the
    fastest of `repeats` runs after a warm-up (the minimum is the least disturbed by other work):
    "additive" (`additive_attention_steps`, v2) and "multi-head" (`layers.multi_head_attention`,
    `heads` heads of key and value dim C/heads, no bias). Measured, so noisy: compare shapes, not
    values."""
    rng = np.random.default_rng(seed)
    C = channels
    x = rng.standard_normal((1, tokens, C)).astype(np.float32)

    def mat(*shape):
        return (rng.standard_normal(shape) * shape[-1] ** -0.5).astype(np.float32)

    additive = {f"a.{n}.weight": mat(C, C) for n in ("to_query", "to_key", "proj", "final")}
    additive |= {f"a.{n}.bias": np.zeros(C, np.float32) for n in ("to_query", "to_key", "proj", "final")}
    additive["a.w_g"] = mat(C, 1)
    dk = C // heads
    qkv_w, qkv_b = mat(3 * C, C), np.zeros(3 * C, np.float32)
    proj_w, proj_b = mat(C, C), np.zeros(C, np.float32)
    runs = {
        "additive": lambda: additive_attention_steps(x, additive, "a", "v2"),
        "multi-head": lambda: layers.multi_head_attention(x, qkv_w, qkv_b, proj_w, proj_b, 0.0, heads, dk),
    }
    times = {}
    for kind, run in runs.items():
        run()  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        times[kind] = min(samples)
    return times
