"""The threads an npformer forward runs on, and why its results never depend on them.

    >>> import npformer.parallel
    >>> npformer.parallel.num_threads()        # default: the cores this process may use
    2
    >>> npformer.parallel.set_num_threads(1)   # or NPFORMER_NUM_THREADS=1 in the environment

Three rules make every output bit-identical whatever the worker count (tests/test_parallel.py):

* **BLAS at one thread.** Inside a forward (`blas_held_at_one`) OpenBLAS / MKL run single-threaded,
  through threadpoolctl; the caller's limits come back when the last running forward ends. Two
  reasons: a product's summation order depends on BLAS's own thread count (one vs two threads
  moved batch-1 logits by ~1e-6), and OpenBLAS's workers spin ~0.1 s after each product, taking
  the core a Python worker needs (numerics.md §12.6).
* **Fixed partitions.** Work is split into pieces chosen from the shapes alone (an image of a
  batch, models/base.py; a block of a linear's rows, `layers.linear`), never from the worker
  count. Each piece is computed by the same code on one thread and written to its own slice.
  (Splitting 1×1 and depthwise convolutions, pooling and GELU the same way was measured and did
  not pay on two cores: README, Speed.)
* **One level of parallelism.** `parallel_for` hands its pieces to the workers; called again from
  inside a piece (a batch-1 op inside one image of a batch), it runs its pieces in order on the
  current thread: the same pieces, so the same bits, and no task ever waits on the pool.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from .errors import InputError

ENV = "NPFORMER_NUM_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _threads_from_env() -> int:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return available_cores()
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{ENV}={value!r}: expected a positive number of threads, e.g. {ENV}=2")
    return int(value)


_lock = threading.Lock()
_threads: int | None = None  # None: not decided yet (read NPFORMER_NUM_THREADS on first use)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_local = threading.local()  # .inside: this thread is running a piece of a parallel_for


def num_threads() -> int:
    """How many threads an npformer forward uses (the caller's thread included)."""
    global _threads
    if _threads is None:
        _threads = _threads_from_env()
    return _threads


def set_num_threads(n: int) -> None:
    """Use `n` threads from now on (1: everything on the calling thread). Outputs do not change."""
    global _threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"set_num_threads: expected a positive int, got {n!r}")
    with _lock:
        _threads = n
        old = None
        if _pool is not None and _pool_size < n - 1:  # a smaller pool is replaced; a larger one serves as it is
            old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=False)


def _helpers() -> ThreadPoolExecutor:
    """The shared pool of num_threads() − 1 helper threads (the caller is the last worker), made on first use."""
    global _pool, _pool_size
    with _lock:
        if _pool is None:
            _pool_size = max(num_threads() - 1, 1)
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="npformer")
        return _pool


def parallel_for(n: int, piece) -> None:
    """piece(0), …, piece(n − 1), each exactly once, spread over the workers; returns when all are done.

    The pieces must be independent (each writes its own slice). The caller's thread takes pieces
    too; so do up to num_threads() − 1 helpers, each pulling the next index until none is left.
    From inside a piece, or with one thread, the pieces run in order here."""
    workers = min(num_threads(), n)
    if workers <= 1 or getattr(_local, "inside", False):
        for i in range(n):
            piece(i)
        return
    indices = itertools.count()  # next() is atomic under the GIL: each index is taken once

    def drain():
        _local.inside = True
        try:
            while (i := next(indices)) < n:
                piece(i)
        finally:
            _local.inside = False

    futures = [_helpers().submit(drain) for _ in range(workers - 1)]
    try:
        drain()
    finally:
        for f in futures:  # a failed piece re-raises here, after every helper has stopped
            f.result()


# ---------------------------------------------------------------------------------------------
# BLAS at one thread while any forward runs

_controller = None
_forwards = 0  # forwards running now, in any thread
_limiter = None  # threadpoolctl's limit, entered by the first forward and left by the last


def _hand_back_openblas_control():
    """threadpoolctl >= 3.8 lets only one "controlling" thread change OpenBLAS's process-wide pool
    and silently ignores the others (measured: a forward started from a second thread ran with
    two BLAS threads, its logits ~1e-6 off). npformer changes the limit only under its own lock,
    first forward in and last forward out, possibly on different threads; so around each change
    it clears the controlling thread, and a caller's own `threadpool_limits` still restores."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextmanager
def blas_held_at_one():
    """BLAS single-threaded inside the block; re-entrant and safe from many threads at once: the
    first forward to start sets the limit, the last to end restores the caller's settings."""
    global _controller, _forwards, _limiter
    with _lock:
        if _forwards == 0:
            if _controller is None:
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()  # finds the loaded BLAS libraries once (~ms)
            _hand_back_openblas_control()
            _limiter = _controller.limit(limits=1, user_api="blas")
            _hand_back_openblas_control()
        _forwards += 1
    try:
        yield
    finally:
        with _lock:
            _forwards -= 1
            if _forwards == 0:
                _hand_back_openblas_control()
                _limiter.restore_original_limits()
                _hand_back_openblas_control()
                _limiter = None


# ---------------------------------------------------------------------------------------------
# fixed pieces of one op

PIECE_WORK = 1 << 22  # multiply-adds (or value-passes) per piece: ~0.1 ms, well above a hand-off's ~20 µs


def pieces(length: int, work_per_item: int, align: int = 8) -> list[slice]:
    """`length` items (output channels, tokens) cut into consecutive slices of about PIECE_WORK
    work each, sizes a multiple of `align`: a function of the shape alone, never of the workers."""
    per_piece = max(PIECE_WORK // max(work_per_item, 1), 1)
    size = -(-per_piece // align) * align
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def for_each_piece(length: int, work_per_item: int, compute, align: int = 8) -> None:
    """compute(slice) for each piece of `pieces(length, work_per_item, align)`, on the workers."""
    cuts = pieces(length, work_per_item, align)
    parallel_for(len(cuts), lambda i: compute(cuts[i]))
