"""The batched run behind `npformer evaluate`: every image of a dataset through a checkpoint's own
preprocessing and its fused model, on worker threads, its records written in dataset order.

    image files --processor--> [b, 3, H, W] --fused model--> logits [b, K] --> top-5, probabilities

* **Batches are fixed by position**: batch k is images k·B … k·B + B − 1, whatever the number
  of workers, so every batch (and every logit) is computed the same way in any run.
* **Workers are threads** (concurrent.futures): NumPy's matrix products and most ufuncs, and
  Pillow's decoders and resizes, release the GIL. With two or more, each runs its batch's forward
  on its own thread (`npformer.parallel.pieces_on_this_thread`: npformer's helpers would add
  threads to the workers'); BLAS is held at one thread for the whole run
  (`npformer.parallel.blas_held_at_one`): on a 2-core machine a two-thread OpenBLAS takes the
  second core away from the Python threads. The logits are the same bits either way.
* **Records go out in dataset order** as batches complete (a reorder buffer, at most two
  batches per worker in flight), one write per batch; so the results file is the same
  byte for byte for any worker count, and an interrupted run leaves whole batches only.
* **Resume**: the results file's header must match this run's (weights, dataset, settings);
  its whole batches are kept and the run goes on from the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from .. import parallel
from ..errors import CheckpointMismatchError, ConfigError, ImageError, NpformerError
from ..labels import label_names
from ..layers import softmax
from ..loading import load
from ..models.registry import FAMILIES
from .datasets import Dataset, read_dataset
from .records import (TOP_K, Agreement, Prediction, Record, RecordWriter, check_same_run, compare_with_file,
                      make_header, prediction_diffs, read_results, reference_agreement)

REFERENCES = ("transformers", "timm")
DEFAULT_BATCH_SIZE = 32


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during `evaluate`: the results file holds the `done` records (whole batches, complete
    lines) and a run with `resume=True` goes on from there."""

    def __init__(self, done: int, total: int, output: Path | None):
        super().__init__(f"interrupted after {done} of {total} images")
        self.done, self.total, self.output = done, total, output


@dataclass
class EvaluationResult:
    """An evaluation's records and what they add up to (see `report.py` for the text)."""

    header: dict
    dataset: Dataset
    records: list[Record]
    class_names: list[str]
    computed: int  # images run by this call (the others were read back from the resumed file)
    seconds: float  # wall time of those
    workers: int
    output: Path | None
    agreements: list[Agreement] = field(default_factory=list)

    @property
    def errors(self) -> list[Record]:
        return [r for r in self.records if r.error is not None]

    @property
    def scored(self) -> list[Record]:
        """Records with a label and a prediction: what the accuracies count."""
        return [r for r in self.records if r.label is not None and r.prediction is not None]

    @property
    def top1_correct(self) -> int:
        return sum(r.prediction.top1 == r.label for r in self.scored)

    @property
    def top5_correct(self) -> int:
        return sum(r.label in r.prediction.top5 for r in self.scored)

    @property
    def top1(self) -> float | None:
        return self.top1_correct / len(self.scored) if self.scored else None

    @property
    def top5(self) -> float | None:
        return self.top5_correct / len(self.scored) if self.scored else None

    @property
    def images_per_second(self) -> float | None:
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    def per_class(self) -> list[tuple[int, int, int]]:
        """(class, images, top-1 correct) of every labelled class, worst accuracy first (ties: class order)."""
        images, correct = Counter(), Counter()
        for r in self.scored:
            images[r.label] += 1
            correct[r.label] += r.prediction.top1 == r.label
        return sorted(((c, images[c], correct[c]) for c in images), key=lambda t: (t[2] / t[1], t[0]))

    def confusions(self) -> list[tuple[int, int, int]]:
        """(true class, predicted class, images) of every wrong top-1, most frequent first."""
        pairs = Counter((r.label, r.prediction.top1) for r in self.scored if r.prediction.top1 != r.label)
        return sorted(((t, p, n) for (t, p), n in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))


# ---------------------------------------------------------------------------------------------
# one batch


def predictions(logits: np.ndarray, keep_logits: bool) -> list[Prediction]:
    """Top-5 classes (ties: lower index first) and their probabilities, in the logits' dtype."""
    probs = softmax(logits)  # [b, K], the model's dtype
    top = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]  # [b, 5]
    top_prob = np.take_along_axis(probs, top, axis=1)  # [b, 5]
    return [Prediction(tuple(int(c) for c in t), p, row.copy() if keep_logits else None)
            for t, p, row in zip(top, top_prob, logits)]


def _same_size_groups(pixels: list[np.ndarray]) -> list[list[int]]:
    """Positions of the images of each [H, W] in a batch (a processor without a crop can give
    several), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(pixels):
        groups.setdefault(x.shape, []).append(i)
    return list(groups.values())


def run_batch(k: int, dataset: Dataset, batch_size: int, model, processor, keep_logits: bool,
              reference=None) -> list[Record]:
    """The records of batch k (images k·B … k·B + B − 1): undecodable images become error records."""
    start = k * batch_size
    records, pixels = [], []
    for index, item in enumerate(dataset.items[start:start + batch_size], start=start):
        record = Record(index, item.path, item.label)
        file = dataset.file(item)
        try:
            pixels.append(processor(file)["pixel_values"])  # [1, 3, H, W]
        except ImageError as err:  # recorded and counted, never fatal; the record has the path already
            record.error = " ".join(str(err).split()).removeprefix(f"{file}: ")
        records.append(record)
    decoded = [r for r in records if r.error is None]
    for group in _same_size_groups(pixels):
        x = np.concatenate([pixels[i] for i in group])  # [b, 3, H, W]
        logits = model(x).logits  # [b, K]
        ours = predictions(logits, keep_logits)
        if reference is not None:
            ref_logits = reference(x).astype(logits.dtype)  # [b, K], the same pixels through PyTorch
            theirs = predictions(ref_logits, keep_logits)
        for j, i in enumerate(group):
            decoded[i].prediction = ours[j]
            if reference is not None:
                dl, dp, _ = prediction_diffs(Prediction(ours[j].top5, None, logits[j]),
                                             Prediction(theirs[j].top5, None, ref_logits[j]))
                decoded[i].reference, decoded[i].diffs = theirs[j], (dl, dp)
    return records


# ---------------------------------------------------------------------------------------------
# the PyTorch reference in the same run


class Reference:
    """A PyTorch reference model holding the checkpoint's weights: `reference(x)` -> logits [b, K]
    (float32 or float64 as the model). torch runs on one thread per call, as BLAS does."""

    def __init__(self, name: str, model, dtype):
        from ..tools import oracle

        if name == "transformers":
            self.module = oracle.hf_model(model.config, model.weights, model.num_heads, dtype)
            self.forward = lambda x: oracle.hf_forward(self.module, x)["logits"]
        else:
            if model.num_heads != 2:
                raise ConfigError(f"timm's models have both classifier heads; {type(model).__name__} has "
                                  f"{model.num_heads}")
            self.module, _ = oracle.timm_model(model.config, model.weights, dtype)
            self.forward = lambda x: oracle.timm_forward(self.module, x, ())["logits"]
        import torch

        library = __import__(name)
        self.name = f"{name} {library.__version__} (torch {torch.__version__})"
        self.torch = torch

    def __call__(self, x: np.ndarray) -> np.ndarray:  # [b, 3, H, W] -> [b, K]
        return np.asarray(self.forward(x))


# ---------------------------------------------------------------------------------------------
# identity of a run (the results file's header)


def model_digest(model) -> str:
    """sha256 of what a model computes with: its config and every tensor (name, dtype, shape, bytes),
    so a resumed run must hold the same weights however they are stored or named on disk."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name in sorted(model.weights):
        tensor = np.ascontiguousarray(model.weights[name])
        digest.update(f"{name}\0{tensor.dtype.str}\0{tensor.shape}\0".encode())
        digest.update(tensor.data)
    return digest.hexdigest()


def _processor_config(processor) -> dict | str:
    to_dict = getattr(processor, "to_dict", None)
    return json.loads(json.dumps(to_dict(), default=str)) if to_dict else repr(processor)


def _check_arguments(batch_size, workers, limit, dtype, resume, output, reference):
    for name, value in (("batch_size", batch_size), ("workers", workers), ("limit", limit)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    if resume and output is None:
        raise ConfigError("resume needs the results file to resume: pass output")
    if reference is not None and reference not in REFERENCES:
        raise ConfigError(f"reference {reference!r} is not one of {', '.join(REFERENCES)}")


def _open_output(output: Path, header: dict, dataset: Dataset, batch_size: int, dtype, resume: bool,
                 force: bool) -> tuple[RecordWriter, list[Record]]:
    """The writer for the results file and the records a resumed file already holds (whole batches)."""
    if output.is_dir():
        raise NpformerError(f"{output}: is a directory; give the results file to write, e.g. "
                            f"{output / 'results.jsonl'}")
    if not output.parent.is_dir():
        raise NpformerError(f"{output.parent}: no such directory to write {output.name} into")
    if not output.exists() or force:
        return RecordWriter(output, header), []
    if not resume:
        raise NpformerError(f"{output}: already exists; pass --resume to go on with it or --force to overwrite it")
    found, records, ends = read_results(output, dtype)
    check_same_run(found, header, output)
    for i, record in enumerate(records):
        item = dataset.items[i] if i < len(dataset.items) else None
        if record.index != i or item is None or (record.path, record.label) != (item.path, item.label):
            raise NpformerError(f"{output}: record {i + 1} is image {record.index} ({record.path}), expected image "
                                f"{i} ({item.path if item else 'none: the file has more records than images'})")
    keep = len(records) if len(records) == len(dataset.items) else len(records) // batch_size * batch_size
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


def _progress_bar(total: int, initial: int, progress: bool | None, desc: str):
    from tqdm import tqdm

    # disable=None: tqdm stays quiet when stderr is not a terminal
    return tqdm(total=total, initial=initial, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=None if progress is None else not progress, smoothing=0.1)


def evaluate(data, weights, *, output=None, resume: bool = False, force: bool = False, workers: int | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, limit: int | None = None, processor=None, dtype="float32",
             attention=None, logits: bool = False, ground_truth=None, compare=None, reference: str | None = None,
             progress: bool | None = None) -> EvaluationResult:
    """Run the checkpoint `weights` on every image of `data` and return the records and their sums.

    data: a folder of class subfolders, a CSV/TSV of `path,label`, or the ImageNet validation
        folder (see `npformer.evaluation.datasets`); `ground_truth`: its LOC_val_solution.csv
        when it is not found next to the folder.
    weights: what `npformer.load` reads; `attention`: SwiftFormer original checkpoints' "v1"/"v2".
    processor: None (the checkpoint's own preprocessing, as `npformer predict` picks it), a recipe
        name, "published" / "default", or a preprocessor_config.json (`make_processor`).
    output: the JSONL results file, written as batches complete; `resume=True` goes on with an
        existing one from the same run (refused if weights, data or settings differ); `force=True`
        overwrites one. `logits=True` keeps every logit in the records.
    workers: threads (default: the cores this process may use); `batch_size`: images per forward;
        `limit`: the first `limit` images only.
    compare: another results file (or a port's JSONL predictions) to report agreement with, by path.
    reference: "transformers" or "timm": also run that PyTorch reference (the oracle extra) on the
        same pixel batches and report agreement.
    progress: a progress bar on stderr (None: only when stderr is a terminal).

    Ctrl-C raises `EvaluationInterrupted` after the results file is cut back to its whole batches.
    """
    _check_arguments(batch_size, workers, limit, dtype, resume, output, reference)
    from ..preprocess import make_processor

    dtype = np.dtype(dtype)
    model, metadata = load(weights, dtype, attention)
    arch = type(model).__name__
    if model.num_heads == 0 or model.config.num_labels == 0:
        raise CheckpointMismatchError(f"{weights}: holds {arch} with no classifier head (num_labels="
                                      f"{model.config.num_labels}); evaluate needs a classification checkpoint")
    preprocess, preprocessing = make_processor(processor, weights, FAMILIES[model.family], metadata)
    names = label_names(model.config)
    dataset = read_dataset(data, names, ground_truth=ground_truth).limited(limit)
    ref = Reference(reference, model, dtype) if reference else None
    digest = model_digest(model)
    fast = model.fuse()  # the fast path: each BatchNorm folded into its convolution
    del model

    header = make_header(
        npformer_version=__version__, weights=str(weights), model_sha256=digest, model=arch,
        attention=getattr(fast.config, "attention_generation", None), dtype=dtype.name,
        preprocessing=preprocessing, preprocessor=_processor_config(preprocess), data=str(data),
        data_kind=dataset.kind, labelling=dataset.labelling, images=len(dataset.items),
        dataset_sha256=dataset.fingerprint(), limit=limit, batch_size=batch_size, logits=logits,
        reference=ref.name if ref else None)
    output = Path(output) if output is not None else None
    writer, records = (_open_output(output, header, dataset, batch_size, dtype, resume, force) if output
                       else (None, []))

    workers = workers or default_workers()
    first, batches = len(records) // batch_size, -(-len(dataset.items) // batch_size)
    if len(records) == len(dataset.items):
        first = batches
    start = time.perf_counter()
    bar = _progress_bar(len(dataset.items), len(records), progress, f"{Path(str(data)).name or data}")
    buffer = _ReorderBuffer(first, records, writer, bar)

    threads = max(1, min(workers, batches - first))

    def job(k):  # with one worker, its forward spreads over npformer's own threads
        with parallel.pieces_on_this_thread() if threads > 1 else nullcontext():
            return run_batch(k, dataset, batch_size, fast, preprocess, logits, ref)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="npformer-eval")
    pending, next_submit = {}, first  # future -> batch number; the next batch to hand out
    try:
        with parallel.blas_held_at_one(), _TorchThreads(ref):
            try:
                while buffer.next < batches:
                    while next_submit < batches and next_submit - buffer.next < 2 * workers:
                        pending[pool.submit(job, next_submit)] = next_submit
                        next_submit += 1
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=pending.get):
                        buffer.add(pending.pop(future), future.result())
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # running batches finish; queued ones never start
    except KeyboardInterrupt:
        try:  # keep what the running batches finished, as far as it goes in order
            for future, k in pending.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    buffer.add(k, future.result())
        finally:
            bar.close()
            if writer:
                writer.abort()
        raise EvaluationInterrupted(len(records), len(dataset.items), output) from None
    except BaseException:
        bar.close()
        if writer:
            writer.abort()
        raise
    bar.close()
    if writer:
        writer.close()
    computed = buffer.computed
    seconds = time.perf_counter() - start

    result = EvaluationResult(header, dataset, records, names, computed, seconds, workers, output)
    if ref:
        result.agreements.append(reference_agreement(records, ref.name))
    if compare is not None:
        result.agreements.append(compare_with_file(records, compare))
    return result
