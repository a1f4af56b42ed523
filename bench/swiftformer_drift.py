"""How far SwiftFormer's two attention generations drift apart as the token count grows.

    python bench/swiftformer_drift.py [--variant xs] [--sizes 224 256 320 384 512 224x320] [--references]

One seeded model (`npformer.checkpoints.seeded`, seed 0, both heads; v1 and v2 have the same
weight schema, so the same tensors) runs one seeded image (`seeded_pixels(1, max(H, W))` cropped
to H×W, as tests/fixtures/golden_sizes) under attention v1 and under v2, in float64. Everything
before the first attention block (stage 0's last block) is the same for both, so the difference
of that block's output is the attention's alone; the logits carry every block's.

The global query G = Σ_n w_n q̂_n sums N unit vectors q̂_n: v1's weights are all 1, so ‖G‖ ≤ N
and grows like N when the queries share a direction; v2's weights have unit L2 norm over the
tokens, so ‖G‖ ≤ √N (Cauchy–Schwarz). G is recomputed here from the traced block input and
weights, and checked by rebuilding the block's traced output from it.

`--references` also runs transformers 4.40.2 (v1) and timm (v2) on the same weights, float64, and
prints their difference of the same two quantities (forward hooks on `...blocks.2.attn`): the
drift is the references', not npformer's.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import npformer.models.swiftformer.model as sf
from npformer import SwiftFormerConfig
from npformer.checkpoints.seeded import seeded_weights
from npformer.layers import l2_normalize, linear
from npformer.models.swiftformer.schema import stages
from npformer.tools.parity import abs_diff, seeded_pixels
from npformer.trace import Trace

DTYPE = np.float64


def parse_size(text: str) -> tuple[int, int]:
    """"384" -> (384, 384), "224x320" -> (224, 320): (H, W)."""
    H, _, W = text.partition("x")
    return int(H), int(W or H)


def pixels_of(H: int, W: int) -> np.ndarray:  # -> [1, 3, H, W]
    return np.ascontiguousarray(seeded_pixels(1, size=max(H, W))[:, :, :H, :W])


def first_attention_block(cfg) -> str:
    """The name of stage 0's encoder block (its last block), e.g. stages.0.blocks.2."""
    return stages(cfg)[0].blocks[-1][1]


def global_query(block_input, p, attn, weights, traced_out):  # [B, C, H, W], ..., [B, N, 1] -> [B, C]
    """G = Σ_n w_n q̂_n, from the block's input tokens and traced weights; checked against the traced output."""
    B, C, H, W = block_input.shape
    tokens = block_input.transpose(0, 2, 3, 1).reshape(B, H * W, C)  # [B, N, C]
    q = l2_normalize(linear(tokens, p[f"{attn}.to_query.weight"], p[f"{attn}.to_query.bias"]), axis=-1)
    k = l2_normalize(linear(tokens, p[f"{attn}.to_key.weight"], p[f"{attn}.to_key.bias"]), axis=-1)
    G = np.sum(weights * q, axis=1, keepdims=True)  # [B, 1, C]
    out = linear(linear(G * k, p[f"{attn}.proj.weight"], p[f"{attn}.proj.bias"]) + q, p[f"{attn}.final.weight"],
                 p[f"{attn}.final.bias"])
    assert abs_diff(out, traced_out) <= 1e-10 * max(1.0, np.abs(traced_out).max()), "G does not rebuild the block"
    return G[:, 0]


def npformer_run(variant, generation, weights, pixels) -> dict:
    """logits [1, 1000], the first attention block's output [1, N, C] and ‖G‖ there, float64."""
    cfg = SwiftFormerConfig.variant(variant, attention_generation=generation)
    block = first_attention_block(cfg)
    attn = f"{block}.attn"
    trace = Trace([f"{block}.local_representation", attn, f"{attn}.weights"])
    model = sf.SwiftFormerForImageClassification(cfg, weights, dtype=DTYPE)
    logits = model(pixels, trace=trace).logits
    G = global_query(trace[f"{block}.local_representation"], model.params, attn, trace[f"{attn}.weights"], trace[attn])
    return {"logits": logits, "attn": trace[attn], "G": float(np.linalg.norm(G))}


def reference_runs(variant, weights, pixels) -> dict:
    """transformers (v1) and timm (v2) in float64: logits and the first attention block's output [1, N, C]."""
    import torch

    from npformer.tools.oracle import hf_model, timm_model

    recorded, runs = {}, {}
    for generation in ("v1", "v2"):
        cfg = SwiftFormerConfig.variant(variant, attention_generation=generation)
        block = first_attention_block(cfg)  # stages.0.blocks.i: timm's name; transformers': network.0.blocks.i
        if generation == "v1":
            model, name = hf_model(cfg, weights, 2, DTYPE), "swiftformer.encoder.network.0." + block.split(".", 2)[2]
        else:
            model, name = timm_model(cfg, weights, DTYPE)[0], block
        hook = model.get_submodule(f"{name}.attn").register_forward_hook(
            lambda module, args, output: recorded.__setitem__("attn", output.detach().numpy().copy()))
        with torch.no_grad():
            out = model(torch.from_numpy(pixels).to(torch.float64))
        hook.remove()
        attn = recorded["attn"]
        if attn.ndim == 4:  # timm's attention returns [B, C, H, W]
            attn = attn.reshape(*attn.shape[:2], -1).transpose(0, 2, 1)  # [B, N, C]
        runs[generation] = {"logits": (out.logits if hasattr(out, "logits") else out).numpy(), "attn": attn}
    return runs


def drift_rows(variant, sizes, references=False, printer=print) -> list[dict]:
    weights = seeded_weights(SwiftFormerConfig.variant(variant), num_heads=2, seed=0)
    cols = ["size", "tokens N (stage 0)", "‖G‖ v1", "‖G‖ v1 / N", "‖G‖ v2", "‖G‖ v2 / √N",
            "max |Δ attn| (stage 0)", "max |attn| v1 / v2", "max |Δ logits|", "max |logits| v1 / v2"]
    if references:
        cols += ["refs: max |Δ attn|", "refs: max |Δ logits|"]
    printer(f"SwiftFormer-{variant.upper()}, seeded weights (seed 0), one seeded image, float64: attention v1 against v2")
    printer("| " + " | ".join(cols) + " |")
    printer("|" + "---|" * len(cols))
    rows = []
    for H, W in sizes:
        pixels = pixels_of(H, W)
        v1, v2 = (npformer_run(variant, g, weights, pixels) for g in ("v1", "v2"))
        N = v1["attn"].shape[1]
        row = {"size": f"{H}×{W}" if H != W else f"{H}", "N": N, "G_v1": v1["G"], "G_v2": v2["G"],
               "d_attn": abs_diff(v1["attn"], v2["attn"]), "attn_v1": float(np.abs(v1["attn"]).max()),
               "attn_v2": float(np.abs(v2["attn"]).max()), "d_logits": abs_diff(v1["logits"], v2["logits"]),
               "logits_v1": float(np.abs(v1["logits"]).max()), "logits_v2": float(np.abs(v2["logits"]).max())}
        cells = [row["size"], f"{N:,}", f"{row['G_v1']:.1f}", f"{row['G_v1'] / N:.3f}", f"{row['G_v2']:.2f}",
                 f"{row['G_v2'] / N**0.5:.3f}", f"{row['d_attn']:.3g}", f"{row['attn_v1']:.3g} / {row['attn_v2']:.3g}",
                 f"{row['d_logits']:.3g}", f"{row['logits_v1']:.3g} / {row['logits_v2']:.3g}"]
        if references:
            refs = reference_runs(variant, weights, pixels)
            row["refs_d_attn"] = abs_diff(refs["v1"]["attn"], refs["v2"]["attn"])
            row["refs_d_logits"] = abs_diff(refs["v1"]["logits"], refs["v2"]["logits"])
            row["npformer_vs_refs"] = max(abs_diff(run[k], refs[g][k]) for g, run in (("v1", v1), ("v2", v2))
                                          for k in ("attn", "logits"))
            cells += [f"{row['refs_d_attn']:.3g}", f"{row['refs_d_logits']:.3g}"]
        printer("| " + " | ".join(cells) + " |")
        rows.append(row)
    if references:
        printer(f"npformer against the references, these tensors, float64: max |Δ| {max(r['npformer_vs_refs'] for r in rows):.2e}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="xs", choices=["xs", "s", "l1", "l3"])
    parser.add_argument("--sizes", nargs="+", default=["224", "256", "320", "384", "512", "224x320"],
                        help="H or HxW per size")
    parser.add_argument("--references", action="store_true", help="also run transformers (v1) and timm (v2)")
    args = parser.parse_args(argv)
    drift_rows(args.variant, [parse_size(s) for s in args.sizes], args.references)
    return 0


if __name__ == "__main__":
    sys.exit(main())
