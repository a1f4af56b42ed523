"""Where one npformer forward spends its time, against the floor this machine allows.

    python bench/where_time_goes.py efficientformer-l1 swiftformer-xs --batch 1

Each layer function the model files call is wrapped with a timer (outermost calls only, so an
attention's own linears count as attention); "rest" is the forward's time outside them (residual
adds, layer scales, reshapes, Python). The floor: the model's multiply-accumulates (npformer.macs)
at the sgemm rate measured here on every core, plus one read and one write of every value the
non-product ops produce at the measured memory bandwidth. A tool, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

import npformer
from npformer import layers, macs, parallel
from npformer.models.registry import ARCHITECTURE_FOR_HEADS
from npformer.tools.parity import reference_config, seeded_pixels
from npformer.checkpoints.seeded import seeded_weights

PRODUCTS = {"conv 1×1", "conv k×k (im2col)", "linear", "multi_head_attention", "talking_heads_attention"}
TIMED = {"conv2d", "linear", "multi_head_attention", "talking_heads_attention", "gelu", "avg_pool2d", "pool_mixer", "layer_norm", "batch_norm",
                    "l2_normalize", "softmax", "upsample_bilinear_2x", "relu"}


def wrap_layers(totals, written, depth):
    """Replace each TIMED function in layers and in every module that imported it; returns an undo list."""
    import importlib

    modules = [layers] + [importlib.import_module(f"npformer.models.{f}.model")
                          for f in ("efficientformer", "swiftformer", "efficientformerv2")]
    modules.append(importlib.import_module("npformer.models.base"))
    undo = []
    for name in TIMED:
        original = getattr(layers, name, None)
        if original is None:
            continue

        def timed(*args, _f=original, _name=name, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                out = _f(*args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                label = conv_kind(*args, **kwargs) if _name == "conv2d" else _name
                totals[label] += time.perf_counter() - start
                first = out[0] if isinstance(out, tuple) else out
                written[label] += first.size if label not in PRODUCTS else 0
            return out

        for m in modules:
            if getattr(m, name, None) is original:
                undo.append((m, name, original))
                setattr(m, name, timed)
        for key, fn in list(layers.ACTIVATIONS.items()):  # the models look activations up by config name
            if fn is original:
                undo.append((layers.ACTIVATIONS, key, original))
                layers.ACTIVATIONS[key] = timed
    return undo


def conv_kind(x, weight, bias=None, stride=1, padding=0, groups=1) -> str:
    if weight.shape[2:] == (1, 1) and stride == 1 and padding == 0 and groups == 1:
        return "conv 1×1"
    return "conv depthwise" if groups == x.shape[1] == weight.shape[0] else "conv k×k (im2col)"


def sgemm_rate() -> float:
    """GFLOP/s of single-thread products on every worker at once (npformer's own setting)."""
    w = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((192, 3136)).astype(np.float32)
    out = [np.empty((192, 3136), np.float32) for _ in range(8)]
    with parallel.blas_held_at_one():
        def piece(i):
            np.matmul(w, x, out=out[i])
        for _ in range(3):
            parallel.parallel_for(8, piece)
        best = min(timeit(lambda: parallel.parallel_for(8, piece)) for _ in range(10))
    return 8 * 2 * 192 * 192 * 3136 / best / 1e9


def bandwidth() -> float:
    """GB/s of a multiply-add pass over 4 MiB arrays (read 2, write 1), on every worker."""
    a = np.ones((16, 1 << 16), np.float32)
    out = np.empty_like(a)

    def piece(i):
        np.multiply(a[i], 1.5, out=out[i])
        out[i] += a[i]
    best = min(timeit(lambda: parallel.parallel_for(16, piece)) for _ in range(20))
    return 3 * a.nbytes / best / 1e9


def timeit(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def profile(name: str, batch: int, reps: int = 10):
    family, variant = name.split("-")
    cfg = reference_config(family, variant, "transformers" if family == "efficientformer" else "timm")
    model = npformer.architectures()[ARCHITECTURE_FOR_HEADS[family][2]](cfg, seeded_weights(cfg, num_heads=2)).fuse()
    x = seeded_pixels(batch)
    count = macs.count(model, image_size=(224, 224)).macs * batch
    model(x)
    totals, written, depth = defaultdict(float), defaultdict(int), [0]
    undo = wrap_layers(totals, written, depth)
    try:
        walls = []
        for _ in range(reps):
            time.sleep(0.25)
            walls.append(timeit(lambda: model(x)))
    finally:
        for m, attr, original in undo:
            if isinstance(m, dict):
                m[attr] = original
            else:
                setattr(m, attr, original)
    wall = float(np.mean(walls)) * 1e3 / batch
    rows = sorted(((k, v * 1e3 / reps / batch) for k, v in totals.items()), key=lambda kv: -kv[1])
    return wall, rows, count / batch, sum(written.values()) / reps / batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    gflops, gbs = sgemm_rate(), bandwidth()
    print(f"sgemm {gflops:.0f} GFLOP/s and memory {gbs:.0f} GB/s on {parallel.num_threads()} workers")
    for name in args.variants:
        wall, rows, macs_per_image, values = profile(name, args.batch)
        product_floor = 2 * macs_per_image / gflops / 1e6
        pass_floor = values * 8 / gbs / 1e6  # one read and one write of each value an elementwise op produces
        timed = sum(ms for _, ms in rows)
        print(f"\n{name}, batch {args.batch}: {wall:.1f} ms per image (with timers); floor {product_floor + pass_floor:.1f} ms "
              f"= products {product_floor:.1f} ms ({macs_per_image / 1e9:.2f} GMACs) + passes {pass_floor:.1f} ms "
              f"({values / 1e6:.1f} M values)")
        for op, ms in rows + [("rest (adds, layer scales, Python)", wall - timed)]:
            print(f"  {op:36s} {ms:6.1f} ms  {100 * ms / wall:4.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
