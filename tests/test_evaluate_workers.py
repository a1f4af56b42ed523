"""`npformer evaluate` past one thread: worker processes, a Dask cluster (the cluster extra), shards.

Every path must write the results file a 1-worker run writes, byte for byte, including after a
Ctrl-C, a killed worker or a killed client and a resume. Interruptions are placed by the run's own
hook (`run.batch_written`, on the client's main thread) or by waiting for lines in the results
file, never by timing; the waits have generous limits that only guard against a hang. Every worker
process a test starts is checked gone at its end. The Dask tests skip without the cluster extra,
except under NPFORMER_REQUIRE_CLUSTER=1 (CI's second tier), where that is a failure; their
clusters listen on 127.0.0.1 only.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from extras import need

from npformer import cli
from npformer.errors import CheckpointMismatchError, ConfigError, InputError, MissingExtraError, NpformerError
from npformer.evaluation import EvaluationInterrupted, evaluate, merge_shards, read_dataset, read_results
from npformer.evaluation import backends
from npformer.evaluation import run as run_module
from npformer.evaluation.batch import WorkerSpec, keep_malloc_fast, load_runner, worker_runner
from tiers import heavy

ROOT = Path(__file__).parent.parent
FOLDER = Path(__file__).parent / "fixtures" / "digits" / "heldout"
EF = ROOT / "weights" / "efficientformer-digits.safetensors"
SF = ROOT / "weights" / "swiftformer-digits.safetensors"
HANG_GUARD = 300  # seconds: a limit against a hang, never a speed bound


def gone(pid: int) -> bool:
    """True once process `pid` has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition, what: str):
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


@pytest.fixture()
def worker_pids(monkeypatch):
    """The pids of every worker process the process backend starts in this test; each is checked
    gone at the end."""
    pids, real = [], backends._start_worker_process

    def start():
        proc, tasks, results = real()
        pids.append(proc.pid)
        return proc, tasks, results

    monkeypatch.setattr(backends, "_start_worker_process", start)
    yield pids
    wait_until(lambda: all(gone(pid) for pid in pids), "the worker processes to exit")


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """The results file of the 1-worker run every path must reproduce: 120 digits, batches of 8, logits."""
    out = tmp_path_factory.mktemp("one") / "one.jsonl"
    evaluate(FOLDER, EF, output=out, workers=1, batch_size=8, limit=120, logits=True)
    return out.read_bytes()


def run(out, **kwargs):
    return evaluate(FOLDER, EF, output=out, batch_size=8, limit=120, logits=True, progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# worker processes


def test_process_workers_write_the_one_worker_file(tmp_path, one_worker, worker_pids):
    result = run(tmp_path / "p.jsonl", workers=2)
    assert (tmp_path / "p.jsonl").read_bytes() == one_worker
    assert (result.backend, result.workers, result.ran_on, result.computed) == ("processes", 2, "2 worker processes",
                                                                                120)
    assert len(worker_pids) == 2 and result.top1_correct == 119
    threads = run(tmp_path / "t.jsonl", workers=3, backend="threads")
    assert (tmp_path / "t.jsonl").read_bytes() == one_worker and threads.ran_on == "3 threads"


def test_a_resumed_run_starts_no_worker_when_nothing_is_left(tmp_path, one_worker, worker_pids):
    out = tmp_path / "r.jsonl"
    out.write_bytes(one_worker)
    result = run(out, workers=2, resume=True)
    assert result.computed == 0 and worker_pids == [] and out.read_bytes() == one_worker


def test_ctrl_c_with_process_workers_keeps_whole_batches_and_stops_them(tmp_path, one_worker, worker_pids,
                                                                        monkeypatch):
    """Ctrl-C on the client after batch 3 is written: the batches the workers are running finish
    and are kept, the workers exit, and --resume with workers ends with the one-worker file."""
    out = tmp_path / "c.jsonl"

    def batch_written(k, done):
        if k == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(run_module, "batch_written", batch_written)
        with pytest.raises(EvaluationInterrupted) as stop:
            run(out, workers=2)
    done = stop.value.done
    assert done % 8 == 0 and 32 <= done <= 32 + 2 * 2 * 8  # batch 3 and what the two workers had in hand
    assert out.read_bytes() == one_worker[:len(out.read_bytes())] and out.read_text().count("\n") == 1 + done
    assert all(gone(pid) for pid in worker_pids)
    resumed = run(out, workers=2, resume=True)
    assert resumed.computed == 120 - done and out.read_bytes() == one_worker


def test_a_worker_that_loads_other_weights_is_refused(tmp_path):
    """A worker loads the weights by path and checks them against the client's model_sha256."""
    runner = load_runner(EF, "float32")
    spec = WorkerSpec.of(SF, "float32", None, None, None, runner.digest, 8, False)
    with pytest.raises(CheckpointMismatchError, match="every worker must read the same weights"):
        worker_runner(spec)
    dataset = read_dataset(FOLDER, runner.class_names)
    with pytest.raises(CheckpointMismatchError, match=r"on worker .* \(pid \d+\) holds a model with sha256"):
        backends.ProcessBackend(spec, dataset, 2)
    assert worker_runner(WorkerSpec.of(EF, "float32", None, None, None, runner.digest, 8, False)).digest == runner.digest


def test_a_killed_worker_process_ends_the_run_with_a_resumable_file(tmp_path, one_worker, worker_pids, monkeypatch):
    out = tmp_path / "k.jsonl"

    def batch_written(k, done):
        if k == 1:
            os.kill(worker_pids[0], signal.SIGKILL)

    with monkeypatch.context() as m:
        m.setattr(run_module, "batch_written", batch_written)
        with pytest.raises(NpformerError, match=r"worker process \d+ ended \(killed by SIGKILL\) while .*--resume"):
            run(out, workers=2)
    text = out.read_bytes()
    assert one_worker.startswith(text) and (text.count(b"\n") - 1) % 8 == 0
    run(out, workers=2, resume=True)
    assert out.read_bytes() == one_worker


# a client that stops on its main thread after batch 2 is written, until the test has signalled it
# (so the signal lands mid-run however fast the machine), and writes its worker processes' pids
BLOCKED_CLIENT = """
import os, sys, time
import signal
# Ctrl-C as a terminal delivers it, even when the tests run as a background job (which starts with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from npformer.evaluation import backends, run


def start_worker(start=backends._start_worker_process):
    proc, tasks, results = start()
    with open(sys.argv[2], "a") as f:
        f.write(f"{proc.pid}\\n")
    return proc, tasks, results


def batch_written(k, done):
    release = Path(sys.argv[1])
    if k == 2:
        Path(str(release) + ".waiting").touch()
        while not release.exists():
            time.sleep(0.01)


if __name__ == "__main__":  # Dask's worker processes import this file again
    backends._start_worker_process = start_worker
    run.batch_written = batch_written
    from npformer.cli import main
    sys.exit(main(sys.argv[3:]))
"""


def client(tmp_path, *argv, script=BLOCKED_CLIENT):
    (tmp_path / "client.py").write_text(script)
    release, pids = tmp_path / "release", tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "client.py"), str(release), str(pids), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, release, pids


def test_a_real_ctrl_c_to_the_process_group(tmp_path, one_worker):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while the client waits
    after batch 2: the workers ignore it, the client keeps whole batches, exits 130 and prints the
    command that resumes with process workers; no worker process is left."""
    out = tmp_path / "cli.jsonl"
    argv = ["evaluate", str(FOLDER), "--weights", str(EF), "--output", str(out), "--batch-size", "8", "--limit", "120",
            "--logits", "--workers", "2"]
    proc, release, pids = client(tmp_path, *argv)
    try:
        wait_until(lambda: Path(str(release) + ".waiting").exists() or proc.poll() is not None, "batch 2")
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.2)  # lets the signal reach the client's main thread first; the result does not depend on it
        release.touch()
        stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    wait_until(lambda: all(gone(pid) for pid in workers), "the worker processes to exit")
    done = out.read_text().count("\n") - 1
    assert done % 8 == 0 and done >= 24 and f"interrupted after {done} of 120 images" in stderr
    assert "Traceback" not in stderr and one_worker.startswith(out.read_bytes())
    command = stderr.splitlines()[-1].strip()
    assert command.endswith("--resume --limit 120 --workers 2 --batch-size 8 --logits")
    assert cli.main(shlex.split(command)[1:]) == 0 and out.read_bytes() == one_worker


# ---------------------------------------------------------------------------------------------
# a Dask cluster


def test_a_local_cluster_writes_the_one_worker_file(tmp_path, one_worker):
    need("distributed", extra="cluster", switch="NPFORMER_REQUIRE_CLUSTER")
    before = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    result = run(tmp_path / "d.jsonl", cluster="local:2")
    assert (tmp_path / "d.jsonl").read_bytes() == one_worker
    assert (result.backend, result.workers, result.ran_on) == ("dask", 2, "Dask local:2, 2 worker threads")
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == before  # the nanny's variables are put back


def test_a_running_scheduler_by_its_address(tmp_path, one_worker):
    """--cluster tcp://127.0.0.1:PORT: a scheduler started elsewhere (here a LocalCluster of one
    worker with two threads, Dask's own defaults otherwise: MALLOC_TRIM_THRESHOLD_ set in it)."""
    distributed = need("distributed", extra="cluster", switch="NPFORMER_REQUIRE_CLUSTER")
    before = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address=None,
                                       scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    try:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        result = run(tmp_path / "a.jsonl", cluster=address)
        assert (tmp_path / "a.jsonl").read_bytes() == one_worker
        assert result.ran_on == f"Dask {address}, 2 worker threads"
        with distributed.Client(address) as client:  # the cluster is still there: it is not the run's to close
            assert list(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == ["65536"]
    finally:
        cluster.close()
        if before is None:  # Dask's nanny writes its variables into this process's environment
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        else:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = before


def test_a_killed_dask_worker_has_its_batches_run_again(tmp_path, one_worker, monkeypatch):
    """SIGKILL to one of the two workers of a local:2 cluster after batch 1 is written: the nanny
    starts a new one, Dask runs the lost batches again, and the file is the one-worker file. The
    workers run without Dask's MALLOC_TRIM_THRESHOLD_."""
    need("distributed", extra="cluster", switch="NPFORMER_REQUIRE_CLUSTER")
    seen, real = {}, backends.DaskBackend.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen["backend"] = self

    def batch_written(k, done):
        if k == 1:
            client = seen["backend"].client
            seen["env"] = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
            seen["pids"] = client.run(os.getpid)
            os.kill(sorted(seen["pids"].values())[0], signal.SIGKILL)

    monkeypatch.setattr(backends.DaskBackend, "__init__", init)
    monkeypatch.setattr(run_module, "batch_written", batch_written)
    out = tmp_path / "k.jsonl"
    result = run(out, cluster="local:2")
    assert out.read_bytes() == one_worker and result.computed == 120
    assert len(seen["pids"]) == 2 and set(seen["env"].values()) == {None}
    wait_until(lambda: all(gone(pid) for pid in seen["pids"].values()), "the cluster's workers to exit")


DASK_CLIENT = BLOCKED_CLIENT.replace("""    backends._start_worker_process = start_worker
""", """    real_init = backends.DaskBackend.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        with open(sys.argv[2], "a") as f:
            f.write("".join(f"{pid}\\n" for pid in self.client.run(os.getpid).values()))

    backends.DaskBackend.__init__ = init
""")


@heavy  # a client killed outright; the default tier stops clients and workers by Ctrl-C
@pytest.mark.parametrize("workers", [["--workers", "2"], ["--cluster", "local:2"]], ids=["processes", "local:2"])
def test_a_killed_client_leaves_no_worker_and_resumes_to_the_same_file(tmp_path, one_worker, workers):
    """SIGKILL to the client while it waits after batch 2: its worker processes exit by themselves
    (ours read end-of-file on their pipe; a local cluster's watch their parent), and a resume, on
    new workers, ends with the one-worker file."""
    if workers[0] == "--cluster":
        need("distributed", extra="cluster", switch="NPFORMER_REQUIRE_CLUSTER")
    out = tmp_path / "cli.jsonl"
    argv = ["evaluate", str(FOLDER), "--weights", str(EF), "--output", str(out), "--batch-size", "8", "--limit", "120",
            "--logits", *workers]
    proc, release, pids = client(tmp_path, *argv, script=DASK_CLIENT if workers[0] == "--cluster" else BLOCKED_CLIENT)
    try:
        wait_until(lambda: Path(str(release) + ".waiting").exists() or proc.poll() is not None, "batch 2")
        assert proc.poll() is None, proc.communicate()
        proc.kill()
        proc.communicate(timeout=HANG_GUARD)
    finally:
        release.touch()
    pids = [int(p) for p in pids.read_text().split()]
    assert len(pids) == 2
    wait_until(lambda: all(gone(pid) for pid in pids), "the worker processes to exit")
    assert one_worker.startswith(out.read_bytes()) and out.read_text().count("\n") - 1 >= 24
    run(out, resume=True, **({"cluster": "local:2"} if workers[0] == "--cluster" else {"workers": 2}))
    assert out.read_bytes() == one_worker


def test_without_the_cluster_extra_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'npformer\[cluster\]'"):
        evaluate(FOLDER, EF, cluster="local:2")
    assert cli.main(["evaluate", str(FOLDER), "--cluster", "local:2"]) != 0
    assert "pip install 'npformer[cluster]'" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,needle", [
    ({"cluster": "local:0"}, "local:N needs a positive number"),
    ({"cluster": "8786"}, "expected a Dask scheduler address"),
    ({"cluster": "local:2", "workers": 2}, "not both"),
    ({"backend": "fork"}, "backend 'fork' is not one of processes, threads"),
    ({"shard": "3/2"}, "1 ≤ I ≤ N"),
    ({"shard": "1-2"}, "expected I/N"),
])
def test_settings_are_checked_before_anything_runs(kwargs, needle):
    if "cluster" in kwargs and "workers" in kwargs:  # an address is checked before the extra is imported
        need("distributed", extra="cluster", switch="NPFORMER_REQUIRE_CLUSTER")
    with pytest.raises(ConfigError, match=needle):
        evaluate(FOLDER, EF, **kwargs)


def test_the_malloc_trim_threshold_is_undone_in_a_worker(tmp_path):
    """MALLOC_TRIM_THRESHOLD_ (Dask's nanny sets 65536) is undone by mallopt where a worker starts."""
    assert keep_malloc_fast() is (("MALLOC_TRIM_THRESHOLD_" in os.environ) or ("MALLOC_MMAP_THRESHOLD_" in os.environ))
    code = "from npformer.evaluation.batch import keep_malloc_fast; print(keep_malloc_fast())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    with_trim = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD,
                               env={**env, "MALLOC_TRIM_THRESHOLD_": "65536"})
    without = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD, env=env)
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert (with_trim.stdout.strip(), without.stdout.strip()) == (expected, "False"), with_trim.stderr


# ---------------------------------------------------------------------------------------------
# shards


def test_shards_merge_into_the_one_run_file(tmp_path, one_worker):
    """120 images in 15 batches of 8 as parts of 5, 5, 5 batches (run 2/3 interrupted and resumed),
    merged: byte for byte the one-worker file; a resume of the merged file reports and runs nothing."""
    parts = [tmp_path / f"part{i}.jsonl" for i in (1, 2, 3)]
    run(parts[0], shard="1/3", workers=1)
    run(parts[2], shard=(3, 3), workers=2)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(run_module, "batch_written", lambda k, done: (_ for _ in ()).throw(KeyboardInterrupt) if k == 6
                  else None)
        with pytest.raises(EvaluationInterrupted) as stop:
            run(parts[1], shard="2/3", workers=1)
    done = stop.value.done  # batches 5 and 6, and 7 if the worker had started it
    assert done in (16, 24) and stop.value.total == 40
    second = run(parts[1], shard="2/3", workers=1, resume=True)
    assert second.computed == 40 - done and [r.index for r in second.records] == list(range(40, 80))
    header, records, _ = read_results(parts[1])
    assert header["shard"] == [2, 3] and records[0].index == 40
    merged = merge_shards([parts[2], parts[0], parts[1]], tmp_path / "all.jsonl")
    assert (merged.parts, merged.records) == (3, 120) and (tmp_path / "all.jsonl").read_bytes() == one_worker
    again = run(tmp_path / "all.jsonl", workers=1, resume=True)
    assert again.computed == 0 and again.top1_correct == 119


def test_merge_refuses_what_is_not_one_whole_run(tmp_path, one_worker):
    parts = [tmp_path / f"part{i}.jsonl" for i in (1, 2)]
    for i, part in enumerate(parts, start=1):
        run(part, shard=f"{i}/2", workers=1)
    other = tmp_path / "other.jsonl"
    evaluate(FOLDER, EF, output=other, batch_size=8, limit=120, logits=False, shard="2/2", workers=1)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(parts[1].read_text().splitlines(keepends=True)[:9]))
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(one_worker)
    for given, error, needle in (
            ([parts[0]], InputError, "parts 2 of 2 are missing"),
            ([parts[0], parts[0]], InputError, "part 1/2 again"),
            ([parts[0], other], InputError, "not a part of the same run as"),
            ([parts[0], cut], NpformerError, "part 2/2 holds 8 of its 64 records; finish it with --resume"),
            ([parts[0], whole], InputError, "is a whole run's results"),
            ([parts[0], tmp_path / "nothing.jsonl"], InputError, "no such results file")):
        with pytest.raises(error, match=needle):
            merge_shards(given, tmp_path / "merged.jsonl")
        assert not (tmp_path / "merged.jsonl").exists()
    merge_shards(parts, tmp_path / "merged.jsonl")
    with pytest.raises(NpformerError, match="already exists; pass --force"):
        merge_shards(parts, tmp_path / "merged.jsonl")
    assert (tmp_path / "merged.jsonl").read_bytes() == one_worker


def test_shard_and_merge_on_the_command_line(tmp_path, one_worker, capsys):
    base = ["evaluate", str(FOLDER), "--weights", str(EF), "--batch-size", "8", "--limit", "120", "--logits",
            "--workers", "1"]
    for i in (1, 2):
        assert cli.main(base + ["--shard", f"{i}/2", "--output", str(tmp_path / f"p{i}.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "  shard    part 2 of 2: images 56 … 119 (the parts join with npformer evaluate --merge)" in out
    merged = tmp_path / "all.jsonl"
    assert cli.main(["evaluate", "--merge", str(tmp_path / "p1.jsonl"), str(tmp_path / "p2.jsonl"), "--output",
                     str(merged)]) == 0
    assert merged.read_bytes() == one_worker and "120 records, parts 1 … 2 of one run" in capsys.readouterr().out
    assert cli.main(["evaluate", "--merge", str(tmp_path / "p1.jsonl")]) == 2
    assert "--merge needs --output" in capsys.readouterr().err
    assert cli.main(["evaluate", "--output", str(merged)]) == 2
    assert "evaluate needs DATA" in capsys.readouterr().err
