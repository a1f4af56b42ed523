"""`npformer evaluate`: a checkpoint (or a port, via --compare) on a whole dataset."""

from __future__ import annotations

import shlex
import sys

from .common import MissingExtraError, UsageError, positive_int, weights_path

DESCRIPTION = (
    "Run a classification checkpoint on every image of a dataset and report top-1, top-5, per-class "
    "accuracy (the ten worst classes), the most-confused pairs and images per second; the last line is "
    "a JSON summary. With --output, one JSON record per image (path, label, top-5 classes and "
    "probabilities exactly as computed, every logit with --logits) is written as batches complete, so "
    "an interrupted run (Ctrl-C) goes on where it stopped with --resume and ends with the same results.\n\n"
    "DATA: a folder with one subfolder per class; a CSV/TSV of path,label (paths relative to the "
    "file); or the ImageNet validation folder (ILSVRC2012_val_*.JPEG) with Kaggle's "
    "LOC_val_solution.csv next to it, above it or given by --ground-truth (the devkit's "
    "ILSVRC2012_validation_ground_truth.txt is refused: its ids are not the class order). A class is "
    "one of the weights' class names, an ImageNet synset (n01440764; 1000-class models) or a class "
    "index.\n\n"
    "Preprocessing: the checkpoint's own, as for `predict`, unless --processor says otherwise. The "
    "model runs fused. Workers run whole batches (batch k = images k·B … k·B+B−1), each forward on one "
    "thread with BLAS on one thread, so the records are identical for any --workers, --backend or "
    "--cluster: worker processes by default (each loads the model once; faster than threads, whose "
    "forwards share one interpreter lock), threads with --backend threads; one worker runs in this "
    "process. --cluster runs the batches as tasks on a Dask distributed cluster (the cluster extra): "
    "tcp://HOST:8786, a running scheduler whose workers see DATA and the weights at the same paths and "
    "have npformer installed, or local:N, N single-threaded worker processes on this machine; a worker "
    "lost mid-run has its batches run again. --shard I/N runs part I of N of the batches (a contiguous "
    "run) into its --output, for N machines without a scheduler; --merge PART... --output ALL.jsonl "
    "joins parts 1 … N into the file one run writes, byte for byte. Every file a class folder "
    "lists is accounted for: one named like an image that cannot be read (undecodable, unreadable, a dangling "
    "link, a FIFO) gets an error record, listed and counted, never fatal; other names are counted as ignored. "
    "A file name that is not UTF-8 is kept reversibly (path shows each such byte as \\xNN, path_bytes holds "
    "the name's bytes in hex). A progress bar (rate, ETA) goes to stderr when it is a terminal.\n\n"
    "--compare OTHER.jsonl: agreement with another run or a port's predictions (JSONL lines with path "
    "and logits or top5): top-1 agreement, max |Δ probability| and |Δ logit|, the first disagreeing "
    "images. The --compare and --resume files are read and checked field by field before the first batch "
    "runs: a line that is not a record (a wrong type, top5 as a string, NaN or inf, logits not of the "
    "model's class count, a class index out of range, a path twice) is refused with the file, line and "
    "field. --reference transformers|timm runs that PyTorch reference (the oracle extra) on the same "
    "pixel batches in the same run and reports the same figures."
)

EPILOG = """examples:
  npformer evaluate tests/fixtures/digits/heldout                     # the demo EfficientFormer
  npformer evaluate val/ --weights efficientformer-l1.safetensors --output l1.jsonl
  npformer evaluate val/ --weights efficientformer-l1.safetensors --output l1.jsonl --resume
  npformer evaluate imagenet/ILSVRC/Data/CLS-LOC/val --weights l1.safetensors --workers 2
  npformer evaluate val/ --weights l1.safetensors --cluster tcp://10.0.0.5:8786 -o l1.jsonl  # a Dask cluster
  npformer evaluate val/ --weights l1.safetensors --shard 3/8 -o part3.jsonl         # machine 3 of 8
  npformer evaluate --merge part1.jsonl part2.jsonl ... part8.jsonl -o l1.jsonl
  npformer evaluate images.csv --weights swiftformer-xs.safetensors --compare port.jsonl
  npformer evaluate tests/fixtures/digits/heldout --reference transformers --logits -o ef.jsonl

exit status: 0 done, 130 interrupted (the results file can be resumed); errors as for predict."""


def add_parser(sub, parents, formatter, wrap) -> None:
    """Register `npformer evaluate` on the subcommand table (parents: --weights, --attention, --dtype/--processor)."""
    p = sub.add_parser("evaluate", parents=parents, formatter_class=formatter,
                       help="accuracy on a dataset; agreement with another run, a port or a PyTorch reference",
                       description=wrap(DESCRIPTION), epilog=EPILOG)
    p.add_argument("data", metavar="DATA", nargs="?",
                   help="class folders, a CSV/TSV of path,label, or the ImageNet val folder")
    p.add_argument("--workers", "-j", type=positive_int, metavar="N",
                   help="batches run at once (default: the cores this process may use)")
    p.add_argument("--backend", choices=("processes", "threads"),
                   help="what the workers are: processes (the default; each loads the model once) or threads")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the batches on a Dask cluster: tcp://HOST:8786, or local:N for N worker processes here "
                        "(needs the cluster extra)")
    p.add_argument("--shard", metavar="I/N", help="run only part I of N of the batches (join the parts with --merge)")
    p.add_argument("--merge", nargs="+", metavar="PART",
                   help="join the results files of parts 1 … N of a --shard run into --output (instead of DATA)")
    p.add_argument("--batch-size", "-b", type=positive_int, default=32, metavar="B",
                   help="images per forward pass (default 32); part of the run's identity for --resume")
    p.add_argument("--output", "-o", metavar="RESULTS.jsonl", help="write one JSON record per image here")
    p.add_argument("--resume", action="store_true",
                   help="go on with an existing --output of the same run (same weights, data and settings)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    p.add_argument("--limit", type=positive_int, metavar="K", help="only the first K images (in path order)")
    p.add_argument("--logits", action="store_true", help="keep every logit in the records")
    p.add_argument("--ground-truth", metavar="FILE",
                   help="the ImageNet validation labels (Kaggle's LOC_val_solution.csv) if not next to DATA")
    p.add_argument("--compare", metavar="OTHER.jsonl", help="report agreement with this run's or a port's records")
    p.add_argument("--reference", choices=("transformers", "timm"),
                   help="also run this PyTorch reference on the same batches (needs the oracle extra)")
    p.set_defaults(func=cmd_evaluate)


def resume_command(args, weights) -> str:
    """The command line that goes on with an interrupted run."""
    argv = ["npformer", "evaluate", args.data, "--weights", str(weights), "--output", args.output, "--resume"]
    for flag, value in (("--attention", args.attention), ("--processor", args.processor),
                        ("--ground-truth", args.ground_truth), ("--compare", args.compare),
                        ("--reference", args.reference), ("--limit", args.limit), ("--workers", args.workers),
                        ("--backend", args.backend), ("--cluster", args.cluster), ("--shard", args.shard)):
        if value is not None:
            argv += [flag, str(value)]
    if args.dtype != "float32":
        argv += ["--dtype", args.dtype]
    if args.batch_size != 32:
        argv += ["--batch-size", str(args.batch_size)]
    if args.logits:
        argv.append("--logits")
    return shlex.join(argv)


def cmd_merge(args) -> int:
    """`npformer evaluate --merge PART... --output ALL.jsonl`."""
    from ..evaluation import merge_shards

    if args.data is not None:
        raise UsageError(f"--merge joins results files, it runs no DATA (got {args.data!r}); give the parts after "
                         "--merge")
    if args.output is None:
        raise UsageError("--merge needs --output, the file to write")
    merged = merge_shards(args.merge, args.output, force=args.force)
    print(f"{merged.output}: {merged.records:,} records, parts 1 … {merged.parts} of one run; its report: "
          f"npformer evaluate {shlex.quote(merged.header['data'])} --output {shlex.quote(str(merged.output))} "
          f"--resume (with the run's options)")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluation import EvaluationInterrupted, evaluate, report_lines, summary_line

    if args.merge is not None:
        return cmd_merge(args)
    if args.data is None:
        raise UsageError("evaluate needs DATA (class folders, a CSV/TSV or the ImageNet val folder), or --merge PART...")
    if args.cluster is not None and (args.workers is not None or args.backend is not None):
        raise UsageError("--cluster runs the batches on the cluster's workers: pass --cluster, or --workers / "
                         "--backend, not both")
    if args.cluster is not None:
        from ..evaluation.backends import import_distributed

        import_distributed()
    if args.resume and args.output is None:
        raise UsageError("--resume needs --output, the results file to go on with")
    if args.reference is not None:
        from .oracle import missing_extras

        missing = missing_extras()
        if missing:
            raise MissingExtraError(f"npformer evaluate --reference needs the oracle extra (torch, transformers and "
                                    f"timm; missing: {', '.join(missing)}): pip install 'npformer[oracle]'")
    weights = weights_path(args)
    try:
        result = evaluate(args.data, weights, output=args.output, resume=args.resume, force=args.force,
                          workers=args.workers, backend=args.backend, cluster=args.cluster, shard=args.shard,
                          batch_size=args.batch_size, limit=args.limit,
                          processor=args.processor, dtype=args.dtype, attention=args.attention, logits=args.logits,
                          ground_truth=args.ground_truth, compare=args.compare, reference=args.reference)
    except EvaluationInterrupted as stop:
        print(f"npformer: interrupted after {stop.done:,} of {stop.total:,} images", file=sys.stderr)
        if stop.output is not None:
            print(f"{stop.output} holds their records (whole batches, complete lines); resume with:\n"
                  f"  {resume_command(args, weights)}", file=sys.stderr)
        else:
            print("nothing was saved (no --output); pass --output RESULTS.jsonl to be able to resume", file=sys.stderr)
        return 130
    print("\n".join(report_lines(result)))
    print(summary_line(result))
    return 0
