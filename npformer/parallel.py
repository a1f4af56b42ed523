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
  the core a Python worker needs.
* **Fixed partitions.** Work is split into pieces chosen from the shapes alone (an image of a
  batch, models/batching.py; a block of output channels of a convolution's product or of rows of a
  `linear`, a block of a GELU's values: npformer/kernels.py), never from the worker count. Each
  piece is computed by the same code on one thread and written to its own slice. How each op is
  cut is in `npformer.kernels`, the one place the ops hand their work to. (Depthwise
  convolutions and pooling stay whole: split, they were slower on two cores.)
* **One level of parallelism.** `parallel_for` hands its pieces to the workers; called again from
  inside a piece (a batch-1 op inside one image of a batch), from a thread inside
  `pieces_on_this_thread`, or while another caller's job holds the helpers, it runs its pieces in
  order on the current thread: the same pieces, so the same bits, and no task ever waits on the pool.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from contextlib import contextmanager

from .errors import InputError

ENV = "NPFORMER_NUM_THREADS"


def available_cores() -> int:
    """The cores this process may run on.

    Returns
    -------
    int
        The size of its CPU affinity where the OS reports one, else `os.cpu_count()`.
    """
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
_pool: "Helpers | None" = None
_local = threading.local()  # .inside: this thread is running a piece of a parallel_for

SPIN = 0.0003  # seconds a helper keeps looking for the next job before it sleeps (see Helpers)
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))  # gives up the GIL and the core for a moment


def num_threads() -> int:
    """How many threads an npformer forward uses, the caller's thread included.

    The default is the `NPFORMER_NUM_THREADS` environment variable, else the cores this process
    may use (`available_cores`).

    Returns
    -------
    int
        The thread count.

    Raises
    ------
    InputError
        An `NPFORMER_NUM_THREADS` that is not a positive integer.
    """
    global _threads
    if _threads is None:
        _threads = _threads_from_env()
    return _threads


def set_num_threads(n: int) -> None:
    """Use `n` threads from now on; the outputs do not change.

    Parameters
    ----------
    n : int
        Threads, the caller's included (1: everything on the calling thread).

    Raises
    ------
    InputError
        `n` is not a positive int.
    """
    global _threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"set_num_threads: expected a positive int, got {n!r}")
    with _lock:
        _threads = n
        old = None
        if _pool is not None and _pool.size < n - 1:  # a smaller pool is replaced; a larger one serves as it is
            old, _pool = _pool, None
    if old is not None:
        old.close()


def _helpers() -> "Helpers":
    """The shared helpers, num_threads() − 1 of them (the caller is the last worker), made on first use."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = Helpers(max(num_threads() - 1, 1))
        return _pool


class Job:
    """One parallel_for: pieces 0 … n − 1 handed out one at a time, each run once."""

    def __init__(self, n: int, piece):
        self.n, self.piece = n, piece
        self.next = itertools.count()  # next() is atomic under the GIL: each index is taken once
        self.finished = itertools.count(1)  # pieces completed, counted the same way
        self.all_done = threading.Event()
        self.error: BaseException | None = None

    def drain(self) -> None:
        """Run pieces until none is left (a piece after a failed one is skipped, still counted)."""
        while (i := next(self.next)) < self.n:
            if self.error is None:
                try:
                    self.piece(i)
                except BaseException as e:  # noqa: BLE001 — re-raised by the caller of parallel_for
                    self.error = self.error or e
            if next(self.finished) == self.n:
                self.all_done.set()

    def wait(self) -> None:
        """Back on the caller, once every piece has completed (spinning first, as the helpers do)."""
        deadline = time.perf_counter() + SPIN
        while not self.all_done.is_set() and time.perf_counter() < deadline:
            _yield()
        self.all_done.wait()


class Helpers:
    """`size` helper threads that take pieces of the job parallel_for posts, one job at a time.

    Between jobs a helper spins for SPIN seconds (os.sched_yield on every turn, giving up the GIL
    and the core) before it sleeps on a condition. Why: waking a sleeping thread took ~75 µs on
    this project's 2-core virtual machine (parallel_for of two empty pieces: 76 µs through a
    ThreadPoolExecutor, 7.5 µs with spinning helpers), and a forward at batch 1 hands out ~60 jobs
    of 0.2–1 ms each. The price: while a helper spins, each NumPy call of the main thread waits
    ~5 µs longer for the GIL, which is why the spin is short."""

    def __init__(self, size: int):
        self.size = size
        self.busy = threading.Lock()  # held by the caller whose job is posted
        self.posted = threading.Condition()
        self.job: Job | None = None
        self.serial = 0  # jobs posted so far
        self.closed = False
        for i in range(size):
            threading.Thread(target=self._serve, name=f"npformer-{i}", daemon=True).start()

    def _serve(self) -> None:
        _local.inside = True  # a piece that calls parallel_for runs its pieces here, in order
        seen = 0
        while True:
            deadline = time.perf_counter() + SPIN
            while self.serial == seen and not self.closed and time.perf_counter() < deadline:
                _yield()
            with self.posted:
                while self.serial == seen and not self.closed:
                    self.posted.wait()
                if self.closed:
                    return
                seen, job = self.serial, self.job
            job.drain()  # a helper that comes late finds no piece left

    def run(self, job: Job) -> bool:
        """Run `job` on the helpers and the calling thread; False (nothing run) if another caller's job holds them."""
        if not self.busy.acquire(blocking=False):
            return False
        try:
            with self.posted:
                self.job, self.serial = job, self.serial + 1
                self.posted.notify_all()
            _local.inside = True
            try:
                job.drain()
            finally:
                _local.inside = False
            job.wait()
        finally:
            self.busy.release()
        return True

    def close(self) -> None:
        with self.posted:
            self.closed = True
            self.posted.notify_all()


def parallel_for(n: int, piece) -> None:
    """piece(0), …, piece(n − 1), each exactly once, spread over the workers; returns when all are done.

    The pieces must be independent (each writes its own slice). The caller's thread takes pieces
    too; so do up to num_threads() − 1 helpers, each pulling the next index until none is left.
    From inside a piece, with one thread, or while another caller's job has the helpers, the
    pieces run in order here: the same pieces, so the same bits, and nothing waits on the pool."""
    if min(num_threads(), n) > 1 and not getattr(_local, "inside", False):
        job = Job(n, piece)
        if _helpers().run(job):
            if job.error is not None:  # a failed piece re-raises here, after every piece has ended
                raise job.error
            return
    for i in range(n):
        piece(i)


@contextmanager
def pieces_on_this_thread():
    """Run every forward this thread starts inside the block on this thread alone.

    For callers that spread their own work over the cores (`npformer evaluate`: a batch per
    thread), so that npformer's helpers do not add threads to theirs. The work is cut into the
    same pieces, so the outputs are the same bits.
    """
    was = getattr(_local, "inside", False)
    _local.inside = True
    try:
        yield
    finally:
        _local.inside = was


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

PIECE_WORK = 1 << 23  # multiply-adds a piece has at least: ~0.15 ms, well above a hand-off's ~8 µs
MIN_ROWS = 16  # items a piece has at least: BLAS loses time on thinner products (single-thread, 48 × 192 ·
               # 192 × 3136 in 8 row blocks: 2.4× the time of one product; in 2: 1.1×)


def pieces(length: int, work_per_item: int) -> list[slice]:
    """`length` items (output channels, tokens) cut into a power of two of equal consecutive slices,
    as many as keep each at least PIECE_WORK work and MIN_ROWS items: a function of the shape alone,
    never of the workers, and even for 2 or 4 of them."""
    count = 1
    while 2 * count * PIECE_WORK <= length * work_per_item and length // (2 * count) >= MIN_ROWS:
        count *= 2
    return _cut(length, count)


def for_each_piece(length: int, work_per_item: int, compute) -> None:
    """compute(slice) for each piece of `pieces(length, work_per_item)`, on the workers."""
    cuts = pieces(length, work_per_item)
    parallel_for(len(cuts), lambda i: compute(cuts[i]))


def equal_blocks(n: int, most: int) -> list[slice]:
    """0 .. n − 1 in consecutive blocks of (nearly) equal size, at most `most` each, their number
    the least power of two that allows it: a function of (n, most) alone, even for 2 or 4 workers
    (a 602k-value activation in blocks of at most 128k: 8 of 75k, not 4 of 128k and one of 90k)."""
    count = 1
    while count * most < n:
        count *= 2
    return _cut(n, count) if n else []


def _cut(n: int, count: int) -> list[slice]:
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(count)]
