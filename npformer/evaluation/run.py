"""The batched run behind `npformer evaluate`: every image of a dataset through a checkpoint's own
preprocessing and its fused model, on threads, worker processes or a Dask cluster, its records
written in dataset order.

    image files --processor--> [b, 3, H, W] --fused model--> logits [b, K] --> top-5, probabilities

* **Batches are fixed by position**: batch k is images k·B … k·B + B − 1, whatever the number
  of workers, so every batch (and every logit) is computed the same way in any run
  (`batch.run_batch`).
* **Workers** (`backends`): with two or more, each runs whole batches, its forward on one thread
  (`npformer.parallel.pieces_on_this_thread`: npformer's helpers would add threads to the
  workers') with BLAS at one thread (`npformer.parallel.blas_held_at_one`: on a 2-core machine a
  two-thread OpenBLAS takes the second core away from the other worker). Worker processes by
  default, threads on request, or the tasks of a Dask cluster. One worker runs in this process,
  its forward spread over npformer's own threads. The logits are the same bits on every path.
* **Records go out in dataset order** as batches complete (a reorder buffer, at most two
  batches per worker in flight), one write per batch; so the results file is the same
  byte for byte for any worker count and backend, and an interrupted run leaves whole batches only.
* **Resume**: the results file's header must match this run's (weights, dataset, settings);
  its whole batches are kept and the run goes on from the next one.
* **Shards** (`shards`): part I of N runs a contiguous run of whole batches into its own file;
  the parts merge into the file one run writes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from .. import parallel
from ..errors import ConfigError, InputError, NpformerError
from .backends import import_distributed, parse_cluster, start_backend
from .batch import WorkerSpec, load_runner, run_batch
from .datasets import Dataset, read_dataset
from .agreement import Agreement, compare_with, reference_agreement
from .records import (Record, RecordWriter, check_same_run, make_header, read_predictions, read_results, shard_images,
                      shown)
from .shards import parse_shard

REFERENCES = ("transformers", "timm")
BACKENDS = ("processes", "threads")
DEFAULT_BATCH_SIZE = 32


def default_workers() -> int:
    """The default worker count: the cores this process may run on.

    Returns
    -------
    int
        Its CPU affinity where the OS reports one, else `os.cpu_count()`.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during `evaluate`, a `KeyboardInterrupt` that says how far the run got.

    The results file holds the `done` records (whole batches, complete lines); a run with
    `resume=True` goes on from there. `npformer evaluate` prints the command that resumes and
    exits with status 130.

    Parameters
    ----------
    done : int
        Records written.
    total : int
        Images in the run.
    output : pathlib.Path or None
        The results file.
    """

    def __init__(self, done: int, total: int, output: Path | None):
        super().__init__(f"interrupted after {done} of {total} images")
        self.done, self.total, self.output = done, total, output


@dataclass
class EvaluationResult:
    """An evaluation's records and what they add up to.

    `report_lines(result)` gives the text report, `summary(result)` the machine-readable one.

    Attributes
    ----------
    header : dict
        The results file's header: what the records depend on (weights and their sha256,
        dataset and its sha256, preprocessing, dtype, batch size, ...).
    dataset : Dataset
        The images and their labels, in order.
    records : list of Record
        One per image, in dataset order.
    class_names : list of str
        The model's class names.
    computed : int
        Images run by this call (the others were read back from a resumed file).
    seconds : float
        Wall time of those.
    workers : int
        Batches run at once.
    output : pathlib.Path or None
        The results file.
    agreements : list of Agreement
        Agreement with `compare` and `reference`, when asked for.
    backend : str
        "threads", "processes" or "dask".
    ran_on : str
        The workers in words ("2 worker processes").
    startup : float
        Seconds to start the workers (not in `seconds`).
    """

    header: dict
    dataset: Dataset
    records: list[Record]
    class_names: list[str]
    computed: int  # images run by this call (the others were read back from the resumed file)
    seconds: float  # wall time of those
    workers: int
    output: Path | None
    agreements: list[Agreement] = field(default_factory=list)
    backend: str = "threads"  # "threads", "processes" or "dask"
    ran_on: str = ""  # the workers in words: "2 worker processes", "Dask local:2, 2 worker threads"
    startup: float = 0.0  # seconds to start the workers (not in `seconds`)

    @property
    def errors(self) -> list[Record]:
        """The records of images that could not be decoded (not counted in the accuracies)."""
        return [r for r in self.records if r.error is not None]

    @property
    def scored(self) -> list[Record]:
        """Records with a label and a prediction: what the accuracies count."""
        return [r for r in self.records if r.label is not None and r.prediction is not None]

    @property
    def top1_correct(self) -> int:
        """Scored images whose top-1 class is the label."""
        return sum(r.prediction.top1 == r.label for r in self.scored)

    @property
    def top5_correct(self) -> int:
        """Scored images whose top-5 classes hold the label."""
        return sum(r.label in r.prediction.top5 for r in self.scored)

    @property
    def top1(self) -> float | None:
        """Top-1 accuracy over the scored images, 0 … 1 (None when none is scored)."""
        return self.top1_correct / len(self.scored) if self.scored else None

    @property
    def top5(self) -> float | None:
        """Top-5 accuracy over the scored images, 0 … 1 (None when none is scored)."""
        return self.top5_correct / len(self.scored) if self.scored else None

    @property
    def images_per_second(self) -> float | None:
        """Images run by this call per second of wall time (None when none ran)."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    def per_class(self) -> list[tuple[int, int, int]]:
        """Top-1 accuracy per class, worst first.

        Returns
        -------
        list of tuple of int
            (class, images, top-1 correct) for every labelled class, worst accuracy first
            (ties: class order).
        """
        images, correct = Counter(), Counter()
        for r in self.scored:
            images[r.label] += 1
            correct[r.label] += r.prediction.top1 == r.label
        return sorted(((c, images[c], correct[c]) for c in images), key=lambda t: (t[2] / t[1], t[0]))

    def confusions(self) -> list[tuple[int, int, int]]:
        """The wrong top-1 predictions, counted by (true, predicted) pair.

        Returns
        -------
        list of tuple of int
            (true class, predicted class, images), most frequent first.
        """
        pairs = Counter((r.label, r.prediction.top1) for r in self.scored if r.prediction.top1 != r.label)
        return sorted(((t, p, n) for (t, p), n in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))


def _processor_config(processor) -> dict | str:
    to_dict = getattr(processor, "to_dict", None)
    return json.loads(json.dumps(to_dict(), default=str)) if to_dict else repr(processor)


def _check_arguments(batch_size, workers, limit, dtype, resume, output, reference, compare, backend, cluster):
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if cluster is not None:
        parse_cluster(cluster)
        import_distributed()  # the cluster extra, before the model is loaded
        if workers is not None or backend is not None:
            raise ConfigError("a cluster's workers run the batches: pass cluster, or workers / backend, not both")
    for name, value in (("batch_size", batch_size), ("workers", workers), ("limit", limit)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    if resume and output is None:
        raise ConfigError("resume needs the results file to resume: pass output")
    if reference is not None and reference not in REFERENCES:
        raise ConfigError(f"reference {reference!r} is not one of {', '.join(REFERENCES)}")
    if compare is not None and not Path(compare).is_file():  # at once, not after loading the model
        raise InputError(f"{compare}: no such file to compare with" if not Path(compare).exists() else
                         f"{compare}: not a file to compare with")


def _open_output(output: Path, header: dict, dataset: Dataset, images: range, batch_size: int, dtype, resume: bool,
                 force: bool, num_labels: int) -> tuple[RecordWriter, list[Record]]:
    """The writer for the results file and the records a resumed file already holds (whole batches
    of `images`, the run's images: all, or its shard's)."""
    if output.is_dir():
        raise NpformerError(f"{output}: is a directory; give the results file to write, e.g. "
                            f"{output / 'results.jsonl'}")
    if not output.parent.is_dir():
        raise NpformerError(f"{output.parent}: no such directory to write {output.name} into")
    if not output.exists() or force:
        return RecordWriter(output, header), []
    if not resume:
        raise NpformerError(f"{output}: already exists; pass --resume to go on with it or --force to overwrite it")
    found, records, ends = read_results(output, dtype, num_labels)
    check_same_run(found, header, output)
    for n, record in enumerate(records):
        i = images.start + n
        item = dataset.items[i] if i < images.stop else None
        if record.index != i or item is None or (record.path, record.label) != (item.path, item.label):
            raise NpformerError(f"{output}: record {n + 1} is image {record.index} ({shown(record.path)}), expected "
                                f"image {i} ({shown(item.path) if item else 'none: the file has more records than images'})")
    keep = len(records) if len(records) == len(images) else len(records) // batch_size * batch_size
    return RecordWriter(output, None, keep_bytes=ends[keep]), records[:keep]


# ---------------------------------------------------------------------------------------------
# the run


class _TorchThreads:
    """torch's intra-op threads held at one during a reference run (restored after)."""

    def __init__(self, reference):
        self.torch = reference.torch if reference else None

    def __enter__(self):
        if self.torch:
            self.saved = self.torch.get_num_threads()
            self.torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.torch:
            self.torch.set_num_threads(self.saved)


def batch_written(k: int, done: int) -> None:
    """Called on the main thread after batch k is written (`done`: the records so far), where a
    Ctrl-C lands while batches run. It does nothing; a test replaces it to interrupt a run after a
    given batch, deterministically (tests/test_evaluate.py)."""


class _ReorderBuffer:
    """Batches arrive in any order and leave in dataset order: appended to the records, written to
    the results file (one write per batch) and counted on the progress bar, with the top-1 so far."""

    def __init__(self, first: int, records: list, writer: RecordWriter | None, bar):
        self.next, self.records, self.writer, self.bar = first, records, writer, bar
        self.waiting: dict[int, list[Record]] = {}
        self.computed = 0
        scored = [r for r in records if r.label is not None and r.prediction is not None]
        self.scored, self.correct = len(scored), sum(r.prediction.top1 == r.label for r in scored)

    def add(self, k: int, batch: list[Record]) -> None:
        self.waiting[k] = batch
        while self.next in self.waiting:
            batch = self.waiting.pop(self.next)
            if self.writer:
                self.writer.write(batch)
            self.records += batch
            self.computed += len(batch)
            self.next += 1
            scored = [r for r in batch if r.label is not None and r.prediction is not None]
            self.scored += len(scored)
            self.correct += sum(r.prediction.top1 == r.label for r in scored)
            if self.scored:
                self.bar.set_postfix_str(f"top-1 {100 * self.correct / self.scored:.2f}%", refresh=False)
            self.bar.update(len(batch))
            batch_written(self.next - 1, len(self.records))


def _progress_bar(total: int, initial: int, progress: bool | None, desc: str):
    from tqdm import tqdm

    # disable=None: tqdm stays quiet when stderr is not a terminal
    return tqdm(total=total, initial=initial, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=None if progress is None else not progress, smoothing=0.1)


def evaluate(data, weights, *, output=None, resume: bool = False, force: bool = False, workers: int | None = None,
             backend: str | None = None, cluster: str | None = None, shard=None,
             batch_size: int = DEFAULT_BATCH_SIZE, limit: int | None = None, processor=None, dtype="float32",
             attention=None, logits: bool = False, ground_truth=None, compare=None, reference: str | None = None,
             progress: bool | None = None) -> EvaluationResult:
    """Run a checkpoint on every image of a dataset; return the records and what they add up to.

    Each image goes through the checkpoint's own preprocessing and its fused model; batch k is
    always images k·B … k·B + B − 1, so the records are the same bits for any `workers`,
    `backend` or `cluster`, and the results file is the same byte for byte. Every file the run
    reads (`compare`, a resumed `output`) is checked before the first batch.

    Parameters
    ----------
    data : str or os.PathLike
        A folder of class subfolders, a CSV/TSV of `path,label`, or the ImageNet validation
        folder (`ILSVRC2012_val_*.JPEG` with Kaggle's `LOC_val_solution.csv`).
    weights : str or os.PathLike
        Any checkpoint `npformer.load` reads.
    output : str or os.PathLike, optional
        The JSONL results file, written as batches complete.
    resume : bool, default False
        Go on with an existing `output` of the same run (refused if the weights, data or
        settings differ).
    force : bool, default False
        Overwrite an existing `output`.
    workers : int, optional
        Batches run at once (default: the cores this process may use).
    backend : str, optional
        "processes" (the default: worker processes, each loading the model once) or "threads";
        one worker runs in this process either way.
    cluster : str, optional
        Run the batches on a Dask distributed cluster instead (the cluster extra): a scheduler
        address ("tcp://host:8786"; every worker must see `data` and `weights` at the same
        paths) or "local:N" (N single-threaded worker processes on this machine).
    shard : str or tuple of int, optional
        "I/N" or (I, N): only part I of N of the batches (a contiguous run), to be merged with
        the other parts (`merge_shards`).
    batch_size : int, default 32
        Images per forward.
    limit : int, optional
        The first `limit` images only.
    processor : str, optional
        None: the checkpoint's own preprocessing (as `npformer predict` picks it); a recipe
        name, "published", "default", or a preprocessor_config.json (see `make_processor`).
    dtype : str or numpy dtype, default "float32"
        "float32" or "float64".
    attention : str, optional
        "v1" or "v2", for original SwiftFormer checkpoints.
    logits : bool, default False
        Keep every logit in the records.
    ground_truth : str or os.PathLike, optional
        The ImageNet folder's `LOC_val_solution.csv` when it is not next to the folder or above.
    compare : str or os.PathLike, optional
        Another results file, or a port's JSONL predictions, to report agreement with by path.
    reference : str, optional
        "transformers" or "timm": also run that PyTorch reference (the oracle extra) on the
        same pixel batches and report agreement.
    progress : bool, optional
        A progress bar on stderr (None: only when stderr is a terminal).

    Returns
    -------
    EvaluationResult
        The records (read-back ones included) and their accuracies.

    Raises
    ------
    ConfigError
        An invalid argument (a non-positive `batch_size`, `workers` or `limit`, `resume`
        without `output`, an unknown backend or reference, `cluster` with `workers`).
    InputError
        A missing dataset or `compare` file, a dataset whose classes do not match the model's,
        a `compare` or resumed file that breaks the record schema (with file, line and field).
    NpformerError
        An existing `output` without `resume` or `force`, a resumed file of another run.
    EvaluationInterrupted
        Ctrl-C, after the results file is cut back to its whole batches.
    """
    _check_arguments(batch_size, workers, limit, dtype, resume, output, reference, compare, backend, cluster)
    shard = parse_shard(shard)
    dtype = np.dtype(dtype)
    runner = load_runner(weights, dtype, attention, processor, reference)
    names = runner.class_names
    dataset = read_dataset(data, names, ground_truth=ground_truth).limited(limit)
    ref = runner.reference
    images = shard_images(*shard, len(dataset.items), batch_size) if shard else range(len(dataset.items))

    header = make_header(
        npformer_version=__version__, weights=str(weights), model_sha256=runner.digest, model=runner.architecture,
        attention=getattr(runner.model.config, "attention_generation", None), dtype=dtype.name,
        preprocessing=runner.preprocessing, preprocessor=_processor_config(runner.processor), data=str(data),
        data_kind=dataset.kind, labelling=dataset.labelling, images=len(dataset.items),
        dataset_sha256=dataset.fingerprint(), limit=limit, batch_size=batch_size, logits=logits,
        reference=ref.name if ref else None, **({"shard": list(shard)} if shard else {}))
    # every file this run reads is read and checked before its first batch
    theirs = read_predictions(compare, num_labels=len(names)) if compare is not None else None
    output = Path(output) if output is not None else None
    writer, records = (_open_output(output, header, dataset, images, batch_size, dtype, resume, force, len(names))
                       if output else (None, []))

    workers = workers or default_workers()
    first = (images.start + len(records)) // batch_size
    end = -(-images.stop // batch_size)
    if len(records) == len(images):
        first = end
    bar = _progress_bar(len(images), len(records), progress, f"{Path(str(data)).name or data}")
    buffer = _ReorderBuffer(first, records, writer, bar)
    spec = WorkerSpec.of(weights, dtype, attention, processor, reference, runner.digest, batch_size, logits)
    parallel_jobs = max(1, min(workers, end - first))

    def job(k):  # a batch on a thread of this process; with one worker, its forward spreads over npformer's threads
        with parallel.pieces_on_this_thread() if parallel_jobs > 1 else nullcontext():
            return run_batch(k, dataset, batch_size, runner.model, runner.processor, logits, ref)

    pool, ran_on, startup = None, "no workers: every record was read back", 0.0
    start = time.perf_counter()
    try:
        with parallel.blas_held_at_one(), _TorchThreads(ref):
            if first < end:
                pool = start_backend(job, spec, dataset, parallel_jobs, backend or "processes", cluster)
                ran_on, startup = pool.describe(), pool.startup
                start = time.perf_counter()
            next_submit = first
            while buffer.next < end:
                while next_submit < end and next_submit - buffer.next < 2 * pool.workers:
                    pool.submit(next_submit)
                    next_submit += 1
                for k, batch in pool.completed():
                    buffer.add(k, batch)
    except KeyboardInterrupt:
        try:  # keep what the running batches finished, as far as it goes in order
            if pool is not None:
                for k, batch in pool.finish():
                    buffer.add(k, batch)
        finally:
            _stop(pool, bar, writer)
        raise EvaluationInterrupted(len(records), len(images), output) from None
    except BaseException:
        _stop(pool, bar, writer)
        raise
    seconds = time.perf_counter() - start
    if pool is not None:
        pool.close()
    bar.close()
    if writer:
        writer.close()

    kind = pool.name if pool is not None else (backend or "processes") if cluster is None else "dask"
    count = pool.workers if pool is not None else workers
    result = EvaluationResult(header, dataset, records, names, buffer.computed, seconds, count, output,
                              backend=kind, ran_on=ran_on, startup=startup)
    if ref:
        result.agreements.append(reference_agreement(records, ref.name))
    if theirs is not None:
        result.agreements.append(compare_with(records, theirs, str(compare)))
    return result


def _stop(pool, bar, writer) -> None:
    """After an interrupt or an error: the workers stopped, the bar closed, the results file cut
    back to its last whole batch."""
    try:
        if pool is not None:
            pool.close()
    finally:
        bar.close()
        if writer:
            writer.abort()
