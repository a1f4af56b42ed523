"""Where the batches of an evaluation run: threads of this process, worker processes, or a Dask
cluster. A backend takes batch numbers and gives back (k, records) as batches complete, in any
order; `run.evaluate` writes them in dataset order, so the records do not depend on the backend.

    threads     a thread pool in this process, each thread running whole batches. NumPy releases
                the GIL inside its calls only, and a forward is hundreds of short calls, so two
                threads give well under twice one thread's images/s.
    processes   N worker processes (new interpreters, `serve`), each loading the model once by
                path (npformer's models do not pickle, and a model per task would cost its
                transfer) and checking it is the client's, npformer and BLAS at one thread in
                each; a batch goes out as its items (paths and labels), its records come back.
                The default for two workers or more: on two cores it gave more images/s than two
                threads (docs/performance.md, "npformer evaluate: throughput"). Ctrl-C is the client's alone: the
                workers ignore SIGINT, the batches they are running finish and are kept, then
                they are stopped. A worker whose client is gone reads end-of-file on its pipe
                and exits.
    dask        `cluster="tcp://host:8786"` (a running Dask distributed scheduler) or
                `cluster="local:N"` (a LocalCluster of N single-threaded worker processes on this
                machine, loopback only). Each batch is a task; the workers read the images and the
                weights themselves, from the same paths (absolute on the client), and load the
                model once per worker process. A worker lost mid-run has its batches re-run by Dask.

A backend is started only once the run has checked everything it reads (--compare, --resume), so
a refused file costs no worker start.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from multiprocessing.connection import wait as wait_for_connections

from .. import parallel
from ..errors import ConfigError, MissingExtraError, NpformerError
from .batch import WorkerSpec, run_worker_batch, worker_runner

STOP_SECONDS = 10  # how long a stopped worker process may take to exit before it is terminated
CLUSTER_TIMEOUT = 30  # seconds to connect to a scheduler / to see the first worker
CLUSTER_EXTRA = "pip install 'npformer[cluster]' (dask[distributed])"


class ThreadBackend:
    """`job(k)` -> records of batch k on a pool of `workers` threads of this process."""

    name = "threads"

    def __init__(self, job, workers: int):
        self.job, self.workers, self.startup = job, workers, 0.0
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npformer-eval")
        self.pending = {}  # future -> batch number

    def describe(self) -> str:
        return f"{self.workers} threads" if self.workers > 1 else "1 worker in this process"

    def submit(self, k: int) -> None:
        self.pending[self.pool.submit(self.job, k)] = k

    def completed(self):
        """(k, records) of each batch done, waiting for at least one; a batch that failed raises."""
        done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=self.pending.get):
            yield self.pending.pop(future), future.result()

    def finish(self):
        """After Ctrl-C: queued batches never start, running ones end; (k, records) of those that completed."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for future, k in sorted(self.pending.items(), key=lambda item: item[1]):
            if future.done() and not future.cancelled() and future.exception() is None:
                yield k, future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)  # running batches finish; queued ones never start


# ---------------------------------------------------------------------------------------------
# worker processes


WORKER_COMMAND = "from npformer.evaluation.backends import serve; serve()"
ONE_THREAD = {"NPFORMER_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _portable(err: BaseException, where: str) -> BaseException:
    """`err` as the client will raise it: an npformer error as it is, anything else as an
    NpformerError naming the worker, its type and message (never a traceback from another process)."""
    if not isinstance(err, NpformerError):
        err = NpformerError(f"{where}: {type(err).__name__}: {err}")
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 — an error that cannot cross the pipe is sent as text
        return NpformerError(f"{where}: {type(err).__name__}: {err}")


def _as_npformer_error(err: BaseException, where: str) -> NpformerError:
    """A worker's error as the client raises it (`_portable` made it an NpformerError already)."""
    return err if isinstance(err, NpformerError) else NpformerError(f"{where}: {type(err).__name__}: {err}")


def serve() -> None:
    """A worker process (`python -c WORKER_COMMAND TASKS RESULTS`, two pipe descriptors): read the
    WorkerSpec, load the model, say ready, then answer each (start, root, items) received until None
    (stop) or end-of-file (the client is gone: its end of the pipe closed with it)."""
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's: it ends the run, keeping whole batches
    tasks, results = Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    parallel.set_num_threads(1)
    where = f"worker process {os.getpid()}"
    try:
        spec = tasks.recv()
        worker_runner(spec)
    except (EOFError, OSError):
        return
    except BaseException as err:  # noqa: BLE001 — reported to the client, which raises it
        results.send(("failed", None, _portable(err, where)))
        return
    results.send(("ready", None, os.getpid()))
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):  # the client is gone: nothing will read a result
            return
        if task is None:
            return
        start, root, items = task
        try:
            message = ("done", start, run_worker_batch(spec, root, start, items))
        except BaseException as err:  # noqa: BLE001 — reported to the client, which raises it
            message = ("error", start, _portable(err, f"{where}, images {start}…{start + len(items) - 1}"))
        try:
            results.send(message)
        except (BrokenPipeError, OSError):
            return


def _worker_environment() -> dict:
    """This process's environment, BLAS and npformer at one thread, and the folder this npformer
    was imported from first on PYTHONPATH: a worker runs the client's npformer, wherever it came from."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **ONE_THREAD, "PYTHONPATH": path}


def _start_worker_process():
    """(process, tasks connection, results connection): a new interpreter running `serve`. Not
    multiprocessing: its spawn and forkserver import the caller's __main__ again in each worker (a
    script without a main guard, `python -m npformer`, would run again), and a fork would copy the
    client's threads half-way. The worker holds the only other ends of the two pipes."""
    from multiprocessing.connection import Connection

    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", WORKER_COMMAND, str(task_r), str(result_w)],
                                pass_fds=(task_r, result_w), stdin=subprocess.DEVNULL, env=_worker_environment())
    except BaseException:
        for fd in (task_w, result_r):
            os.close(fd)
        raise
    finally:
        os.close(task_r)
        os.close(result_w)
    return proc, Connection(task_w, readable=False), Connection(result_r, writable=False)


def _exit_status(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _worker_lost(proc, doing: str) -> NpformerError:
    """The error of a worker process that ended without answering (killed, out of memory …)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_SECONDS)
    return NpformerError(f"worker process {proc.pid} ended ({_exit_status(proc.poll())}) while {doing}; the "
                         "results file holds the batches before it: run again with --resume")


class ProcessBackend:
    """Batches on `workers` worker processes, one batch at a time in each (a new one as soon as it
    answers), the batches waiting their turn here, in order."""

    name = "processes"

    def __init__(self, spec: WorkerSpec, dataset, workers: int):
        self.spec, self.batch_size, self.workers = spec, spec.batch_size, workers
        self.root, self.items = os.path.abspath(dataset.root), dataset.items
        self.queue: deque[int] = deque()  # batches submitted, not yet handed to a worker
        self.running: dict[int, int] = {}  # worker -> batch
        self.procs, self.tasks, self.conns = [], [], []  # the processes, their task and result connections
        started = time.perf_counter()
        try:
            for _ in range(workers):
                proc, tasks, results = _start_worker_process()
                self.procs.append(proc)
                self.tasks.append(tasks)
                self.conns.append(results)
                tasks.send(spec)
            for i in range(workers):
                status, _, detail = self._receive(i, "starting")
                if status == "failed":
                    raise _as_npformer_error(detail, "a worker process starting")
        except BaseException:
            self.close()
            raise
        self.idle = deque(range(workers))
        self.startup = time.perf_counter() - started

    def describe(self) -> str:
        return f"{self.workers} worker processes"

    def _receive(self, i: int, doing: str):
        """The next message of worker i; NpformerError if it died instead."""
        try:
            return self.conns[i].recv()  # end-of-file once the worker is gone
        except (EOFError, OSError):
            raise _worker_lost(self.procs[i], doing) from None

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            i, k = self.idle.popleft(), self.queue.popleft()
            start = k * self.batch_size
            try:
                self.tasks[i].send((start, self.root, self.items[start:start + self.batch_size]))
            except OSError:  # the worker is gone
                raise _worker_lost(self.procs[i], f"waiting for batch {k}") from None
            self.running[i] = k

    def submit(self, k: int) -> None:
        self.queue.append(k)
        self._dispatch()

    def completed(self):
        """(k, records) of each batch done, waiting for at least one; a batch that failed raises."""
        busy = sorted(self.running)
        ready = wait_for_connections([self.conns[i] for i in busy])
        for i in busy:
            if self.conns[i] in ready:
                k = self.running[i]
                status, _, detail = self._receive(i, f"running batch {k}")
                del self.running[i]
                if status == "error":
                    raise _as_npformer_error(detail, f"batch {k}")
                self.idle.append(i)
                self._dispatch()
                yield k, detail

    def finish(self):
        """After Ctrl-C: queued batches never start, running ones end; (k, records) of those that completed."""
        self.queue.clear()
        for i, k in sorted(self.running.items(), key=lambda item: item[1]):
            try:
                status, _, detail = self._receive(i, f"running batch {k}")
            except NpformerError:
                continue
            if status == "done":
                yield k, detail
        self.running.clear()

    def close(self) -> None:
        """Stop every worker: ask, then terminate one that has not exited within STOP_SECONDS."""
        for tasks in self.tasks:
            with contextlib.suppress(OSError):
                tasks.send(None)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.poll() is None:  # a worker still in a batch (an error ended the run)
                proc.terminate()
                try:
                    proc.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for conn in self.tasks + self.conns:
            conn.close()
        self.procs, self.tasks, self.conns = [], [], []


# ---------------------------------------------------------------------------------------------
# a Dask cluster


def import_distributed():
    """dask.distributed, or a MissingExtraError saying what to install."""
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as err:
        raise MissingExtraError(f"--cluster runs the batches on a Dask distributed cluster, which is not installed "
                                f"({err}): {CLUSTER_EXTRA}") from None
    return distributed


def parse_cluster(cluster: str) -> tuple[str, int | None]:
    """("local", N) for "local:N", (address, None) for a scheduler address such as tcp://host:8786."""
    text = str(cluster).strip()
    if text.startswith("local:"):
        n = text.removeprefix("local:")
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"cluster {cluster!r}: local:N needs a positive number of worker processes, e.g. local:2")
        return "local", int(n)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("tcp", "tls", "ws", "wss", "inproc", "ucx") or not rest:
        raise ConfigError(f"cluster {cluster!r}: expected a Dask scheduler address (tcp://host:8786) or local:N")
    return text, None


@contextlib.contextmanager
def _nanny_environment():
    """A LocalCluster's nanny starts each worker with the environment in dask's
    `distributed.nanny.pre-spawn-environ` (MALLOC_TRIM_THRESHOLD_=65536 among it: 3× slower forwards,
    see batch.keep_malloc_fast), and writes those variables into this process's own environment
    too. Here the trim threshold is left out, and this process's environment is put back after."""
    import dask

    key = "distributed.nanny.pre-spawn-environ"
    names = set(dask.config.get(key, default={}) or {}) | {"MALLOC_TRIM_THRESHOLD_"}
    saved = {name: os.environ.get(name) for name in names}
    try:
        with dask.config.set({f"{key}.MALLOC_TRIM_THRESHOLD_": None}):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class DaskBackend:
    """Batches as tasks on a Dask distributed scheduler, their results gathered as they complete."""

    name = "dask"

    def __init__(self, cluster: str, spec: WorkerSpec, dataset):
        distributed = import_distributed()
        address, local = parse_cluster(cluster)
        self.spec, self.batch_size, self.cluster_name = spec, spec.batch_size, str(cluster)
        self.root, self.items = os.path.abspath(dataset.root), dataset.items
        self.token = uuid.uuid4().hex[:12]  # task keys of this run, distinct on a shared scheduler
        self.cluster = self.client = None
        self.environment = contextlib.ExitStack()
        started = time.perf_counter()
        try:
            if local is not None:
                import logging

                self.environment.enter_context(_nanny_environment())
                # loopback only; no dashboard, the scheduler's HTTP endpoint on a free port
                self.cluster = distributed.LocalCluster(
                    n_workers=local, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.ERROR)
                self.client = distributed.Client(self.cluster, timeout=CLUSTER_TIMEOUT)
            else:
                try:
                    self.client = distributed.Client(address, timeout=CLUSTER_TIMEOUT)
                except (OSError, TimeoutError) as err:
                    raise NpformerError(f"cluster {address}: cannot connect to the Dask scheduler ({err})") from None
            self.client.wait_for_workers(local or 1, timeout=CLUSTER_TIMEOUT)
            self.workers = sum(self.client.nthreads().values())
            # each worker loads the model once before the first batch is timed (and a wrong file fails here)
            self.client.run(_load_on_worker, spec)
        except BaseException:
            self.close()
            raise
        self.startup = time.perf_counter() - started
        self.futures = {}  # future -> batch number
        self.done = distributed.as_completed()

    def describe(self) -> str:
        return f"Dask {self.cluster_name}, {self.workers} worker thread{'s' if self.workers > 1 else ''}"

    def submit(self, k: int) -> None:
        start = k * self.batch_size
        future = self.client.submit(run_worker_batch, self.spec, self.root, start,
                                    self.items[start:start + self.batch_size], key=f"npformer-{self.token}-{k}")
        self.futures[future] = k
        self.done.add(future)

    def completed(self):
        """(k, records) of the next batch done (waits for it); a batch that failed raises."""
        future = next(self.done)
        k = self.futures.pop(future)
        try:
            records = future.result()
        except NpformerError:
            raise
        except Exception as err:  # noqa: BLE001 — Dask's (a worker lost too often) or a worker's own
            raise NpformerError(f"cluster {self.cluster_name}: batch {k} failed ({type(err).__name__}: {err}); the "
                                "results file holds the batches before it: run again with --resume") from None
        yield k, records

    def finish(self):
        """After Ctrl-C: the batches not done are cancelled; (k, records) of those done."""
        finished = sorted((k, f) for f, k in self.futures.items() if f.status == "finished")
        for future, k in self.futures.items():
            if future.status != "finished":
                future.cancel()
        for k, future in finished:
            yield k, future.result()

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001 — closing a cluster that is going away
                self.client.close(timeout=STOP_SECONDS)
        if self.cluster is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001
                self.cluster.close(timeout=STOP_SECONDS)
        self.environment.close()
        self.client = self.cluster = None


def _load_on_worker(spec: WorkerSpec) -> int:
    """Run on each Dask worker at the start: its model loaded (and checked) before the first batch."""
    worker_runner(spec)
    return os.getpid()


def start_backend(job, spec: WorkerSpec, dataset, workers: int, backend: str, cluster: str | None):
    """The backend a run asked for: Dask for a cluster, else threads or processes (one worker: one
    thread of this process, whose forward npformer spreads over its own helpers)."""
    if cluster is not None:
        return DaskBackend(cluster, spec, dataset)
    if backend == "processes" and workers > 1 and os.name == "posix":  # elsewhere: no pass_fds, threads
        return ProcessBackend(spec, dataset, workers)
    return ThreadBackend(job, workers)
