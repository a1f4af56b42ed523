"""`npformer evaluate` on 1 thread, 2 threads, 2 worker processes and a 2-worker Dask LocalCluster:
images/s, scaling efficiency, worker start-up and the Dask path's per-batch overhead.

    pip install -e ".[cluster]"
    python bench/evaluate_scaling.py                      # every model and path, 5 interleaved rounds
    python bench/evaluate_scaling.py --models efficientformer-l1 --paths "1 thread" "2 processes" --rounds 3

Models: the three demo weight files (weights/) on the held-out digits (tests/fixtures/digits/heldout),
and seeded EfficientFormer-L1 / SwiftFormer-XS / EfficientFormerV2-S0 at 224 px on real photographs
(tests/fixtures/images, copied to --images files in a temporary folder), all with --batch-size B.
Each round runs every (model, path) once, in the same order, so a busy machine slows them all
alike; the table gives the median images/s over the rounds (the time from the first batch handed
out to the last written, worker start-up apart) and, for N workers, the scaling efficiency
images/s / (N × 1-thread images/s). Every path's results file is compared with the 1-thread one
byte for byte. The machine's load average is printed with each round. A tool, not a test:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits" / "heldout"
PHOTOS = ROOT / "tests" / "fixtures" / "images"
DEMO = {f"demo-{family}": ROOT / "weights" / f"{family}-digits.safetensors"
        for family in ("efficientformer", "swiftformer", "efficientformerv2")}
SEEDED = ("efficientformer-l1", "swiftformer-xs", "efficientformerv2-s0")
PATHS = {"1 thread": {"workers": 1}, "1 worker, 2 op threads": {"workers": 1},
         "2 threads": {"workers": 2, "backend": "threads"},
         "2 processes": {"workers": 2, "backend": "processes"}, "local:2": {"cluster": "local:2"}}


def seeded_file(name: str, folder: Path) -> Path:
    """A weight file of seeded weights for `name` (family-variant), as bench/bench.py builds them."""
    import npformer
    from npformer.checkpoints.seeded import seeded_weights
    from npformer.models.registry import ARCHITECTURE_FOR_HEADS
    from npformer.tools.parity import reference_config

    family, variant = name.split("-")
    config = reference_config(family, variant, "transformers" if family == "efficientformer" else "timm")
    path = folder / f"{name}.safetensors"
    npformer.architectures()[ARCHITECTURE_FOR_HEADS[family][2]](config, seeded_weights(config, num_heads=2)) \
        .save_pretrained(path)
    return path


def photo_folder(folder: Path, images: int) -> Path:
    """A CSV dataset of `images` copies of the real photographs (unlabelled: predictions only)."""
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    lines = ["path"]
    for i in range(images):
        source = photos[i % len(photos)]
        shutil.copy(source, folder / f"{i:03d}_{source.name}")
        lines.append(f"{i:03d}_{source.name}")
    (folder / "photos.csv").write_text("\n".join(lines) + "\n")
    return folder / "photos.csv"


def task_round_trip(rounds: int = 50) -> tuple[float, float]:
    """(median ms of a no-op Dask task's round trip on a local:2 cluster, ms to start that cluster)."""
    import distributed

    from npformer.evaluation.backends import _nanny_environment

    start = time.perf_counter()
    with _nanny_environment():
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        client = distributed.Client(cluster)
        client.wait_for_workers(2)
        started = time.perf_counter() - start
        times = []
        for i in range(rounds):
            t = time.perf_counter()
            client.submit(int, i, pure=False).result()
            times.append(time.perf_counter() - t)
        client.close()
        cluster.close()
    return 1000 * statistics.median(times), 1000 * started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[*DEMO, *SEEDED])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                        help="which ways to run (the first is the base of the speed-ups)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64, help="photographs for the seeded models (copies)")
    parser.add_argument("--digits", type=int, default=360, help="held-out digits for the demo models")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", metavar="FILE", help="also write every measurement here")
    args = parser.parse_args(argv)

    from npformer import parallel
    from npformer.evaluation import evaluate

    tmp = Path(tempfile.mkdtemp(prefix="npformer-evaluate-scaling-"))
    try:
        photos = tmp / "photos"
        photos.mkdir()
        csv = photo_folder(photos, args.images)
        jobs = {}
        for name in args.models:
            if name in DEMO:
                jobs[name] = (DIGITS, DEMO[name], args.digits)
            else:
                jobs[name] = (csv, seeded_file(name, tmp), None)
        rates = {(m, p): [] for m in jobs for p in args.paths}
        startups = {(m, p): [] for m in jobs for p in args.paths}
        loads, mismatches = [], []
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds}: load average {loads[-1]:.2f}", file=sys.stderr, flush=True)
            for name, (data, weights, limit) in jobs.items():
                reference = None
                for path in args.paths:
                    out = tmp / f"{name}-{path.replace(' ', '-').replace(':', '').replace(',', '')}.jsonl"
                    # "1 thread": one worker, npformer on one thread; "1 worker, 2 op threads": one worker whose
                    # ops npformer spreads over two threads (what --workers 1 does on two cores)
                    parallel.set_num_threads(1 if path == "1 thread" else 2)
                    result = evaluate(data, weights, output=out, force=True, batch_size=args.batch_size, limit=limit,
                                      progress=False, **PATHS[path])
                    rates[name, path].append(result.images_per_second)
                    startups[name, path].append(result.startup)
                    text = out.read_bytes()
                    reference = reference if reference is not None else text
                    if text != reference:
                        mismatches.append((r, name, path))
                    print(f"  {name:22s} {path:12s} {result.images_per_second:7.1f} img/s "
                          f"(start {result.startup:.2f} s)", file=sys.stderr, flush=True)
        loads.append(os.getloadavg()[0])
        round_trip = task_round_trip() if "local:2" in args.paths else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = "1 thread" if "1 thread" in args.paths else args.paths[0]
    print(f"\n{args.rounds} interleaved rounds, batches of {args.batch_size}; load average at the rounds' starts: "
          f"median {statistics.median(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f}) on "
          f"{os.cpu_count()} cores\n")
    print("Each cell: median images/s over the rounds; the speed-up over 1 thread as the median of the rounds' own "
          "ratios (each path against the same round's 1 thread), its scaling efficiency (speed-up / workers), and "
          "the fastest round's images/s.\n")
    print("| model | " + " | ".join(args.paths) + " |")
    print("|---|" + "---|" * len(args.paths))
    summary = {}
    for name in jobs:
        cells = []
        for path in args.paths:
            rate = statistics.median(rates[name, path])
            speedup = statistics.median(a / b for a, b in zip(rates[name, path], rates[name, base]))
            n = 2 if "2" in path else 1
            fastest = max(rates[name, path])
            cells.append(f"{rate:.1f} (fastest {fastest:.1f})" if path == base else
                         f"{rate:.1f}: {speedup:.2f}×, eff. {speedup / n:.0%} (fastest {fastest:.1f})")
            summary[f"{name} / {path}"] = {"images_per_second": rate, "speedup": speedup, "efficiency": speedup / n,
                                          "fastest": fastest, "startup_s": statistics.median(startups[name, path]),
                                          "rounds": rates[name, path]}
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nworker start-up, median s: " + "; ".join(
        f"{path} {statistics.median(v for m in jobs for v in startups[m, path]):.2f}" for path in args.paths))
    if round_trip:
        print(f"Dask local:2: a no-op task's round trip {round_trip[0]:.1f} ms (median of 50); cluster start "
              f"{round_trip[1]:.0f} ms")
    print("records byte-identical on every path: " + ("yes" if not mismatches else f"NO: {mismatches}"))
    if args.json:
        Path(args.json).write_text(json.dumps({"loads": loads, "results": summary, "round_trip_ms": round_trip,
                                               "mismatches": mismatches}, indent=1))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
