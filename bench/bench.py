"""npformer against PyTorch eager and onnxruntime: latency, cold start, peak memory.

    pip install torch==2.13.0 && pip install -e ".[oracle,bench]"   # + transformers 4.40.2, timm, onnxruntime
    python bench/bench.py                   # every variant, batch 1 and 8, 10 repetitions
    python bench/bench.py --variants efficientformer-l1 swiftformer-xs --reps 20 --markdown

Every model holds the same seeded weights (npformer.checkpoints.seeded) and sees the same input. For each
variant and batch size the implementations run *interleaved*, one forward each per round, so a
noisy machine slows them all alike; the table gives the median per image over the rounds and
the ratios npformer / PyTorch and npformer / onnxruntime from that one run. Each timed forward
starts after a 0.25 s pause (`SETTLE`), so no library's idle-spinning threads slow the next one.

    npformer        the fused fast path (`model.fuse()`), float32, on every core this process may use
    npformer 1 worker  the same on one worker (npformer.parallel.set_num_threads(1)): the scaling
    transformers    transformers 4.40.2 on torch (EfficientFormer; SwiftFormer with attention v1)
    timm            timm on torch (SwiftFormer with attention v2; EfficientFormerV2)
    onnxruntime     the PyTorch model exported to ONNX (opset 17), CPUExecutionProvider

Cold start: a new process that loads the L1 / XS weights, reads and preprocesses an image,
runs the model and prints the top 5 (`npformer predict` against the same job in transformers),
wall time to exit and peak RSS, median of 3. A tool, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import npformer
from npformer.models.registry import ARCHITECTURE_FOR_HEADS
from npformer.tools.parity import reference_config, seeded_pixels
from npformer import parallel
from npformer.checkpoints.seeded import seeded_weights

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "tests" / "fixtures" / "images" / "chelsea_451x300.jpg"
VARIANTS = ["efficientformer-l1", "efficientformer-l3", "efficientformer-l7",
            "swiftformer-xs", "swiftformer-s", "swiftformer-l1", "swiftformer-l3",
            "efficientformerv2-s0", "efficientformerv2-s1", "efficientformerv2-s2", "efficientformerv2-l"]


# ---------------------------------------------------------------------------------------------
# the contenders: each a function pixels [B, 3, 224, 224] -> logits [B, 1000]


def npformer_runner(cfg, weights, threads):
    """The fused model on `threads` workers (npformer.parallel; the outputs are the same bits for any count)."""
    model = npformer.architectures()[ARCHITECTURE_FOR_HEADS[cfg.model_type][2]](cfg, weights).fuse()

    def run(x):
        parallel.set_num_threads(threads)
        return model(x).logits

    return run


def torch_runner(module):
    import torch

    def run(x):
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        return (out if isinstance(out, torch.Tensor) else out.logits).numpy()

    return run


def onnx_runner(module, path: Path):
    """Export `module` (logits out) with a dynamic batch axis and open it in onnxruntime."""
    import onnxruntime
    import torch

    class Logits(torch.nn.Module):  # transformers models return a ModelOutput
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            return out if isinstance(out, torch.Tensor) else out.logits

    example = torch.from_numpy(seeded_pixels(1))
    torch.onnx.export(Logits(module).eval(), (example,), str(path), dynamo=False, opset_version=17,
                      input_names=["pixel_values"], output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixel_values": x})[0]


def contenders(name: str, tmp: Path, with_onnx: bool) -> dict:
    """{label: run} for one variant, all holding the same weights."""
    from npformer.tools.oracle import hf_model, timm_model

    family, variant = name.split("-")
    cfg = reference_config(family, variant, "transformers" if family == "efficientformer" else "timm")
    weights = seeded_weights(cfg, num_heads=2)
    runs = {"npformer": npformer_runner(cfg, weights, parallel.available_cores()),
            "npformer 1 worker": npformer_runner(cfg, weights, 1)}
    if family == "efficientformer":
        torch_model = hf_model(cfg, weights, 2)
        runs["transformers"] = torch_runner(torch_model)
    elif family == "efficientformerv2":  # timm only: transformers has no EfficientFormerV2
        torch_model, _ = timm_model(cfg, weights)
        runs["timm"] = torch_runner(torch_model)
    else:  # SwiftFormer: timm runs attention v2 on npformer's weights, transformers v1 on its own
        torch_model, _ = timm_model(cfg, weights)
        runs["timm"] = torch_runner(torch_model)
        cfg_v1 = reference_config(family, variant, "transformers")
        runs["transformers"] = torch_runner(hf_model(cfg_v1, seeded_weights(cfg_v1, num_heads=2), 2))
    if with_onnx:
        runs["onnxruntime"] = onnx_runner(torch_model, tmp / f"{name}.onnx")
    return runs


# ---------------------------------------------------------------------------------------------
# measuring


# seconds of rest before each timed forward: OpenBLAS (NumPy's) keeps its worker threads spinning
# for ~0.1 s after a matrix product and OpenMP (torch's) for a moment after a parallel region;
# without a pause those spinning threads take a core from whichever library runs next (measured:
# both npformer and torch ran ~2x slower back to back than alone)
SETTLE = 0.25


def interleaved(runs: dict, batch: int, reps: int) -> dict:
    """{label: median ms per image} over `reps` rounds, each round one forward of every contender."""
    x = seeded_pixels(batch)
    outputs = {label: run(x) for label, run in runs.items()}  # warm-up, and a check they agree
    ref = outputs["npformer"]
    assert np.array_equal(outputs["npformer 1 worker"], ref), "npformer's logits depend on its worker count"
    for label, out in outputs.items():
        # SwiftFormer's transformers contender runs attention v1 on its own weights: not npformer's (v2) logits
        if label != "transformers" or "timm" not in runs:
            assert np.abs(out - ref).max() < 1e-3, f"{label} disagrees with npformer: {np.abs(out - ref).max()}"
    times = {label: [] for label in runs}
    for _ in range(reps):
        for label, run in runs.items():
            time.sleep(SETTLE)
            start = time.perf_counter()
            run(x)
            times[label].append((time.perf_counter() - start) * 1e3 / batch)
    return {label: float(np.median(t)) for label, t in times.items()}


NPFORMER_JOB = """
import sys
from npformer.cli import main
main(["predict", "--weights", sys.argv[1], "--processor", sys.argv[3] + "-hf", sys.argv[2]])
"""

TRANSFORMERS_JOB = """
import sys, torch, transformers
from PIL import Image
directory, image, family = sys.argv[1:4]
config = transformers.AutoConfig.from_pretrained(directory)
model = getattr(transformers, config.architectures[0]).from_pretrained(directory).eval()
processor = (transformers.EfficientFormerImageProcessor if family == "efficientformer" else transformers.ViTImageProcessor)()
pixels = processor(Image.open(image), return_tensors="pt")["pixel_values"]
with torch.no_grad():
    logits = model(pixels).logits[0]
probs = logits.softmax(-1)
for p, i in zip(*probs.topk(5)):
    print(int(i), f"{float(p):.4f}")
"""

# VmHWM, not ru_maxrss: the latter survives exec, so a child forked from this (large) process
# would report at least the parent's size
RSS_TAIL = "\nprint('peak_rss_kib', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"


def run_job(code: str, *args) -> tuple[float, float]:
    """(wall seconds from spawn to exit, peak RSS MiB) of a new Python process running `code`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + RSS_TAIL, *map(str, args)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"cold-start job failed:\n{done.stderr[-2000:]}")
    rss = [line for line in done.stdout.splitlines() if line.startswith("peak_rss_kib")][0]
    return wall, int(rss.split()[1]) / 1024


def cold_start(name: str, tmp: Path, repeats: int = 3) -> dict:
    """{label: (median wall s, median peak RSS MiB)} of the predict job, npformer vs transformers."""
    from npformer.tools.oracle import hf_model

    family, variant = name.split("-")
    cfg = reference_config(family, variant, "transformers")
    weights = seeded_weights(cfg, num_heads=2)
    model = npformer.architectures()[ARCHITECTURE_FOR_HEADS[family][2]](cfg, weights)
    model.save_pretrained(tmp / f"{name}.safetensors")
    hf_model(cfg, weights, 2).save_pretrained(tmp / f"{name}-hf")
    jobs = {"npformer": (NPFORMER_JOB, tmp / f"{name}.safetensors"), "transformers": (TRANSFORMERS_JOB, tmp / f"{name}-hf")}
    results = {label: [] for label in jobs}
    for _ in range(repeats):  # interleaved, like the latencies
        for label, (code, path) in jobs.items():
            results[label].append(run_job(code, path, IMAGE, family))
    return {label: tuple(float(np.median(col)) for col in zip(*r)) for label, r in results.items()}


# ---------------------------------------------------------------------------------------------
# reporting


def machine() -> str:
    import torch
    import transformers

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return (f"{time.strftime('%Y-%m-%d')}, {cpu}, {len(os.sched_getaffinity(0))} cores, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, onnxruntime {ort}, "
            f"npformer {npformer.__version__}")


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "–"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS, metavar="NAME",
                    help=f"family-variant names (default: all): {' '.join(VARIANTS)}")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="batch sizes (default: 1 8)")
    ap.add_argument("--reps", type=int, default=10, help="interleaved rounds per variant and batch (default 10)")
    ap.add_argument("--no-onnx", action="store_true", help="skip onnxruntime")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start and memory runs")
    args = ap.parse_args(argv)

    import torch

    print(f"# {machine()}; torch threads {torch.get_num_threads()}, npformer workers {parallel.available_cores()}; "
          f"{args.reps} rounds, medians\n")
    header = ("| model | batch | npformer ms/img (1 worker) | torch eager ms/img | npformer / torch "
              "| onnxruntime ms/img | npformer / onnxruntime |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.variants:
            runs = contenders(name, tmp, with_onnx=not args.no_onnx)
            for batch in args.batches:
                t = interleaved(runs, batch, args.reps)
                torch_labels = [k for k in ("transformers", "timm") if k in t]
                fastest = min(torch_labels, key=t.get)
                eager = " / ".join(f"{t[k]:.1f} ({k})" for k in torch_labels)
                ort = t.get("onnxruntime")
                print(f"| {name} | {batch} | {t['npformer']:.1f} ({t['npformer 1 worker']:.1f}) | {eager} | {ratio(t['npformer'], t[fastest])} | "
                      f"{'–' if ort is None else f'{ort:.1f}'} | {ratio(t['npformer'], ort) if ort else '–'} |", flush=True)
            del runs
        if not args.no_cold:
            print("\n| cold start: load, preprocess, forward, print top 5 | npformer | torch + transformers | ratio |")
            print("|---|---|---|---|")
            for name in ("efficientformer-l1", "swiftformer-xs"):
                c = cold_start(name, tmp)
                n, t = c["npformer"], c["transformers"]
                print(f"| {name}: wall time | {n[0]:.2f} s | {t[0]:.2f} s | {n[0] / t[0]:.2f}× |")
                print(f"| {name}: peak RSS | {n[1]:.0f} MiB | {t[1]:.0f} MiB | {n[1] / t[1]:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
