"""One batch of an evaluation, wherever it runs: the model a run computes with, and the records of
batch k. The same code on a thread of the client, in a worker process and on a Dask worker, so
every path gives the same bits.

    image files --processor--> [b, 3, H, W] --fused model--> logits [b, K] --> top-5, probabilities

* `load_runner`: the checkpoint, fused, with its preprocessing (and the PyTorch reference when
  asked): what the client loads first and what every worker loads once.
* `WorkerSpec`: what a worker needs to load the same model by itself: paths and settings, a few
  strings (a fused model is never pickled). A worker checks that the weights it finds at the path
  compute the model the client's header names (`model_sha256`), so a worker that sees another file
  fails loudly instead of writing another model's records.
* `run_batch`: the records of batch k (images k·B … k·B + B − 1), through `run_items`, the records
  of any run of consecutive items; `run_worker_batch`: the same on a worker, which is sent the
  batch's items (paths and labels, not pixels) and reads the images itself, its model loaded once
  per process, BLAS at one thread.
* `keep_malloc_fast`: a worker started with Dask's MALLOC_TRIM_THRESHOLD_ gets glibc's fast
  allocation back.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import parallel
from ..errors import CheckpointMismatchError, ConfigError, ImageError
from ..labels import label_names
from ..layers import softmax
from ..loading import load
from ..models.registry import FAMILIES
from .datasets import Dataset
from .agreement import prediction_diffs
from .records import TOP_K, Prediction, Record


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


def check_image_file(file: Path) -> None:
    """ImageError unless `file` is a regular file (or a link to one) that can be opened: a dangling
    link, a FIFO (which would block the run), a socket or a device is an error record, not an image."""
    try:
        mode = os.stat(file).st_mode
    except OSError as err:  # a dangling link, a link loop, a file gone since the dataset was listed
        link = os.path.islink(file)
        what = f"a symbolic link to {os.readlink(file)!r} that cannot be followed" if link else "cannot be read"
        raise ImageError(f"{file}: {what} ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}.get(stat.S_IFMT(mode), "not a file")
        raise ImageError(f"{file}: {kind}, not an image file")
    try:
        os.close(os.open(file, os.O_RDONLY))
    except OSError as err:  # no read permission
        raise ImageError(f"{file}: cannot be read ({err.strerror})") from None


def run_batch(k: int, dataset: Dataset, batch_size: int, model, processor, keep_logits: bool,
              reference=None) -> list[Record]:
    """The records of batch k (images k·B … k·B + B − 1): undecodable images become error records."""
    start = k * batch_size
    return run_items(start, dataset.items[start:start + batch_size], dataset.root, model, processor, keep_logits,
                     reference)


def run_items(start: int, items, root: Path, model, processor, keep_logits: bool, reference=None) -> list[Record]:
    """The records of `items`, images start, start + 1, … of a dataset whose paths are relative to `root`."""
    records, pixels = [], []
    for index, item in enumerate(items, start=start):
        record = Record(index, item.path, item.label)
        file = Path(root) / item.path
        try:
            check_image_file(file)
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
# what a run's header calls the model


def model_digest(model) -> str:
    """sha256 of what a model computes with: its config and every tensor (name, dtype, shape, bytes),
    so a resumed run must hold the same weights however they are stored or named on disk."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name in sorted(model.weights):
        tensor = np.ascontiguousarray(model.weights[name])
        digest.update(f"{name}\0{tensor.dtype.str}\0{tensor.shape}\0".encode())
        digest.update(tensor.data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# the model a run computes with


@dataclass
class Runner:
    """What computes a batch: the fused model, the preprocessing, the optional PyTorch reference."""

    model: object  # the fused model (the fast path: each BatchNorm folded into its convolution)
    processor: object  # image file -> {"pixel_values": [1, 3, H, W]}
    preprocessing: str  # which preprocessing, in words (the header's `preprocessing`)
    reference: Reference | None
    digest: str  # model_digest of the unfused model: the header's `model_sha256`
    architecture: str
    class_names: list[str]


def load_runner(weights, dtype, attention=None, processor=None, reference: str | None = None) -> Runner:
    """The checkpoint `weights` ready to evaluate: refused unless it has a classification head."""
    from ..preprocess import make_processor

    dtype = np.dtype(dtype)
    model, metadata = load(weights, dtype, attention)
    arch = type(model).__name__
    if model.num_heads == 0 or model.config.num_labels == 0:
        raise CheckpointMismatchError(f"{weights}: holds {arch} with no classifier head (num_labels="
                                      f"{model.config.num_labels}); evaluate needs a classification checkpoint")
    preprocess, preprocessing = make_processor(processor, weights, FAMILIES[model.family], metadata)
    ref = Reference(reference, model, dtype) if reference else None
    digest = model_digest(model)
    return Runner(model.fuse(), preprocess, preprocessing, ref, digest, arch, label_names(model.config))


def _absolute(value):
    """A path that exists here, made absolute (a worker may start in another folder); anything else
    (a hub id, a recipe name, None) as it is."""
    if value is None or not Path(str(value)).exists():
        return None if value is None else str(value)
    return os.path.abspath(value)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to compute the run's batches by itself (picklable, small)."""

    weights: str
    dtype: str
    attention: str | None
    processor: str | None
    reference: str | None
    model_sha256: str  # what the weights must compute: checked by each worker after loading
    batch_size: int
    logits: bool

    @classmethod
    def of(cls, weights, dtype, attention, processor, reference, digest, batch_size, logits) -> "WorkerSpec":
        return cls(_absolute(weights), np.dtype(dtype).name, attention, _absolute(processor), reference, digest,
                   int(batch_size), bool(logits))


_loaded: dict[WorkerSpec, Runner] = {}  # this process's model, loaded by its first batch (one at a time)
_loading = threading.Lock()


def worker_runner(spec: WorkerSpec) -> Runner:
    """This process's Runner for `spec`, loaded on first use and kept (a previous run's is dropped);
    CheckpointMismatchError when the weights found at the path are not the client's model."""
    with _loading:
        if spec not in _loaded:
            _loaded.clear()
            keep_malloc_fast()
            runner = load_runner(spec.weights, spec.dtype, spec.attention, spec.processor, spec.reference)
            if runner.digest != spec.model_sha256:
                raise CheckpointMismatchError(
                    f"{spec.weights}: on worker {os.uname().nodename} (pid {os.getpid()}) holds a model with "
                    f"sha256 {runner.digest[:16]}…, the client's is {spec.model_sha256[:16]}…; every worker must "
                    "read the same weights")
            if runner.reference is not None:
                runner.reference.torch.set_num_threads(1)
            _loaded[spec] = runner
        return _loaded[spec]


def run_worker_batch(spec: WorkerSpec, root: str, start: int, items) -> list[Record]:
    """A batch on a worker (a process of the pool or a Dask worker): `items`, images start, start + 1,
    … of the dataset at `root` (a path the worker reads the images from). The model is loaded once per
    process; the forward runs on this thread with BLAS at one thread, as on the client's threads."""
    runner = worker_runner(spec)
    with parallel.blas_held_at_one(), parallel.pieces_on_this_thread():
        return run_items(start, items, Path(root), runner.model, runner.processor, spec.logits, runner.reference)


# glibc's mallopt parameters, and the values its dynamic mmap threshold reaches on 64-bit
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20
TRIM_THRESHOLD_KEPT = 2 * MMAP_THRESHOLD_MAX


def keep_malloc_fast() -> bool:
    """Undo a MALLOC_TRIM_THRESHOLD_ (or MALLOC_MMAP_THRESHOLD_) found in this process's environment;
    True if it did. Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536. Setting it
    freezes glibc's mmap threshold at 128 KiB, so every activation of a forward is mapped and unmapped
    again: an EfficientFormer-L1 batch of 8 at 224 px took 2.9–3.4× as long, with ~347,000 page
    faults instead of ~0. mallopt sets the thresholds glibc's own adaptive rule reaches (mmap above
    32 MiB, trim above 64 MiB), which restores the speed. Not glibc: nothing to do."""
    if not any(name in os.environ for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_KEPT))
