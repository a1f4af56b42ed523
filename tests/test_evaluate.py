"""`npformer evaluate` and `npformer.evaluation`: a checkpoint on a whole dataset.

The dataset is tests/fixtures/digits/heldout/ (the 360 held-out digits of the demo weights' split,
written from heldout.npz by make_heldout_folder.py): evaluate must give exactly the accuracy each
demo weight file records and pick, on every image, the class the PyTorch reference picked (its
logits are stored in heldout.npz / heldout_v2.npz); records are identical for any worker count and
after an interrupt and resume; undecodable images are listed, not fatal. The live tier runs the
PyTorch reference in the same run (--reference). A skip-if-absent test evaluates a real ImageNet
checkpoint on the real validation set (NPFORMER_IMAGENET_VAL, NPFORMER_IMAGENET_WEIGHTS).
"""

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer import cli
from npformer.checkpoints.seeded import seeded_weights
from npformer.checkpoints.weights import load_weights
from npformer.errors import ConfigError, InputError, NpformerError
from npformer.evaluation import EvaluationInterrupted, evaluate, read_dataset, read_results, report_lines, summary
from npformer.evaluation import run as run_module
from npformer.evaluation.datasets import match_classes
from npformer.labels import imagenet_labels, imagenet_synsets
from tiers import heavy

ROOT = Path(__file__).parent.parent
DIGITS = Path(__file__).parent / "fixtures" / "digits"
FOLDER = DIGITS / "heldout"
HELDOUT = np.load(DIGITS / "heldout.npz")
WEIGHTS = {family: ROOT / "weights" / f"{family}-digits.safetensors"
           for family in ("efficientformer", "swiftformer", "efficientformerv2")}
REFERENCE_LOGITS = {"efficientformer": HELDOUT["efficientformer_logits"], "swiftformer": HELDOUT["swiftformer_logits"],
                    "efficientformerv2": np.load(DIGITS / "heldout_v2.npz")["efficientformerv2_logits"]}
ROW_OF_PATH = {f"{label}/{index}.png": row
               for row, (label, index) in enumerate(zip(HELDOUT["labels"], HELDOUT["sklearn_index"]))}
EF = WEIGHTS["efficientformer"]


def digits(**kwargs):
    kwargs.setdefault("workers", 2)
    return evaluate(FOLDER, kwargs.pop("weights", EF), **kwargs)


def lines(path):
    return Path(path).read_text().splitlines()


# ---------------------------------------------------------------------------------------------
# the fixture


def test_the_heldout_folder_is_exactly_heldout_npz(tmp_path):
    spec = importlib.util.spec_from_file_location("make_heldout_folder", DIGITS / "make_heldout_folder.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert maker.check(FOLDER) == []
    assert len(list(FOLDER.rglob("*.png"))) == 360 and sorted(p.name for p in FOLDER.iterdir()) == list("0123456789")
    assert (FOLDER / "3" / "705.png").read_bytes() == (DIGITS / "digit_3_705.png").read_bytes()
    # the control: the script rewrites the folder exactly, and a changed pixel is caught
    maker.write(tmp_path / "heldout")
    assert maker.check(tmp_path / "heldout") == []
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "heldout" / "3" / "705.png")).copy()
    image[0, 0] ^= 1
    Image.fromarray(image, mode="L").save(tmp_path / "heldout" / "3" / "705.png")
    assert maker.check(tmp_path / "heldout") == ["3/705.png: not the heldout.npz image (mode L)"]


# ---------------------------------------------------------------------------------------------
# the demo weights' accuracies, image by image against the PyTorch reference's stored logits


@heavy  # the whole held-out set per family; test_the_report_and_its_summary_line checks the first in the default tier
@pytest.mark.parametrize("family,correct", [("efficientformer", 357), ("swiftformer", 360), ("efficientformerv2", 359)])
def test_evaluate_reproduces_the_accuracy_each_demo_weight_file_records(family, correct):
    _, metadata = load_weights(WEIGHTS[family])
    result = digits(weights=WEIGHTS[family])
    assert len(result.records) == len(result.scored) == 360 and not result.errors
    assert result.top1_correct == correct and f"{result.top1:.4f}" == metadata["heldout_accuracy_pytorch"]
    reference = REFERENCE_LOGITS[family]
    rows = [ROW_OF_PATH[r.path] for r in result.records]
    assert [r.label for r in result.records] == HELDOUT["labels"][rows].tolist()
    # every image gets the class the PyTorch reference gave it, with its probability to 1e-5
    assert [r.prediction.top1 for r in result.records] == reference[rows].argmax(1).tolist()
    e = np.exp(reference[rows] - reference[rows].max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    ours = np.array([r.prediction.top5_prob for r in result.records])
    theirs = np.take_along_axis(probs, np.array([r.prediction.top5 for r in result.records]), 1)
    assert ours.dtype == np.float32 and np.abs(ours - theirs).max() < 1e-5
    # the mistakes the report lists are the reference's mistakes
    wrong = sorted((int(HELDOUT["labels"][i]), int(reference[i].argmax())) for i in range(360)
                   if reference[i].argmax() != HELDOUT["labels"][i])
    assert sorted((t, p) for t, p, n in result.confusions() for _ in range(n)) == wrong


def test_the_report_and_its_summary_line(capsys):
    code = cli.main(["evaluate", str(FOLDER), "--workers", "2"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == (f"npformer evaluate {FOLDER}  (EfficientFormerForImageClassificationWithTeacher, float32, "
                      "preprocessing: the weight file's own (EfficientFormerImageProcessor))")
    assert out[2] == "  data     class folders, 360 images in 10 classes (folder names = the weights' class names)"
    assert out[3] == "  top-1    99.17%  (357 of 360)" and out[4] == "  top-5   100.00%  (360 of 360)"
    assert out[5] == "  per-class top-1 (all 10, worst first):"
    assert out[7:10] == ["    0          36   97.22%", "    4          36   97.22%", "    9          36   97.22%"]
    confused = out.index("  most confused (true -> predicted: images):")
    assert out[confused + 1:confused + 4] == ["    0 -> 6: 1", "    4 -> 9: 1", "    9 -> 3: 1"]
    assert "  undecodable images: 0" in out and any(line.startswith("  speed    360 images in ") for line in out)
    last = json.loads(out[-1])
    assert last["top1"] == 357 / 360 and last["top5"] == 1.0 and last["top1_correct"] == 357
    assert last["images"] == 360 and last["undecodable"] == 0 and last["workers"] == 2 and last["batch_size"] == 32


def test_float64_records_float64_values_and_the_same_classes(tmp_path):
    a = digits(limit=64)
    b = digits(limit=64, dtype="float64", output=tmp_path / "f64.jsonl", logits=True)
    assert b.records[0].prediction.logits.dtype == np.float64 and b.header["dtype"] == "float64"
    assert [r.prediction.top5 for r in a.records] == [r.prediction.top5 for r in b.records]
    diff = max(np.abs(x.prediction.top5_prob - y.prediction.top5_prob).max() for x, y in zip(a.records, b.records))
    assert 0 < diff < 1e-5
    _, back, _ = read_results(tmp_path / "f64.jsonl", np.float64)
    assert all(np.array_equal(x.prediction.logits, y.prediction.logits) for x, y in zip(back, b.records))


# ---------------------------------------------------------------------------------------------
# determinism: workers, interrupt and resume


@heavy  # the whole held-out set three times; tests/test_evaluate_workers.py checks worker counts in the default tier
def test_records_are_identical_for_any_worker_count(tmp_path):
    files = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.jsonl"
        result = digits(workers=workers, batch_size=24, limit=168, output=out, logits=True)
        assert result.workers == workers
        files.append(out.read_bytes())
    assert files[0] == files[1] == files[2]
    assert len(files[0].splitlines()) == 169


def test_records_round_trip_exactly(tmp_path):
    result = digits(limit=40, output=tmp_path / "r.jsonl", logits=True)
    header, back, ends = read_results(tmp_path / "r.jsonl")
    assert header == json.loads(lines(tmp_path / "r.jsonl")[0]) and len(ends) == 41
    for ours, read in zip(result.records, back):
        assert (read.index, read.path, read.label) == (ours.index, ours.path, ours.label)
        assert read.prediction.top5 == ours.prediction.top5
        assert read.prediction.top5_prob.tobytes() == ours.prediction.top5_prob.tobytes()  # the float32 bits
        assert read.prediction.logits.tobytes() == ours.prediction.logits.tobytes()


def _interrupt_after(monkeypatch, batches):
    real = run_module.run_batch

    def run_batch(k, *args, **kwargs):
        if k == batches:
            raise KeyboardInterrupt
        return real(k, *args, **kwargs)

    monkeypatch.setattr(run_module, "run_batch", run_batch)


def test_an_interrupted_run_resumes_to_the_same_results(tmp_path, monkeypatch):
    whole = tmp_path / "whole.jsonl"
    expected = digits(batch_size=16, limit=160, output=whole, logits=True)
    part = tmp_path / "part.jsonl"
    with monkeypatch.context() as m:
        _interrupt_after(m, 4)  # run_batch patched here: the batches run on this process's threads
        with pytest.raises(EvaluationInterrupted) as stop:
            digits(batch_size=16, limit=160, output=part, logits=True, backend="threads")
    assert (stop.value.done, stop.value.total, stop.value.output) == (64, 160, part)
    text = part.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 1 + 64  # the header and four whole batches
    assert whole.read_text().startswith(text)
    resumed = digits(batch_size=16, limit=160, output=part, resume=True, logits=True)
    assert part.read_bytes() == whole.read_bytes()
    assert resumed.computed == 96 and len(resumed.records) == 160
    assert summary(resumed)["top1_correct"] == summary(expected)["top1_correct"]
    assert [r.to_json() for r in resumed.records] == [r.to_json() for r in expected.records]
    assert any("64 read back from the results file" in line for line in report_lines(resumed))
    # resuming a finished file runs nothing and reports the same
    again = digits(batch_size=16, limit=160, output=part, resume=True, logits=True)
    assert again.computed == 0 and again.top1_correct == expected.top1_correct
    assert part.read_bytes() == whole.read_bytes()


def test_resume_drops_a_torn_line_and_a_partial_batch(tmp_path):
    whole = tmp_path / "whole.jsonl"
    digits(batch_size=16, limit=64, output=whole)
    torn = tmp_path / "torn.jsonl"
    full = lines(whole)
    # as a killed process could leave it: two whole batches, five records of the third, half a line
    torn.write_text("\n".join(full[:1 + 32 + 5]) + "\n" + full[38][:40])
    resumed = digits(batch_size=16, limit=64, output=torn, resume=True)
    assert resumed.computed == 32 and torn.read_bytes() == whole.read_bytes()


def test_a_write_cut_short_is_cut_back_off(tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing a batch (after half its bytes): the file keeps whole batches."""
    from npformer.evaluation import records as records_module

    whole = tmp_path / "whole.jsonl"
    digits(batch_size=16, limit=64, output=whole)
    real, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 3:
            real(fd, data[: len(data) // 2])
            raise KeyboardInterrupt
        return real(fd, data)

    out = tmp_path / "cut.jsonl"
    monkeypatch.setattr(records_module.os, "write", write)
    with pytest.raises(EvaluationInterrupted) as stop:
        digits(batch_size=16, limit=64, output=out, workers=1)
    monkeypatch.undo()
    assert stop.value.done == 32 and out.read_text() == "\n".join(lines(whole)[:33]) + "\n"
    digits(batch_size=16, limit=64, output=out, resume=True)
    assert out.read_bytes() == whole.read_bytes()


def test_resume_refuses_another_run(tmp_path):
    out = tmp_path / "r.jsonl"
    digits(batch_size=16, limit=32, output=out)
    with pytest.raises(NpformerError, match="already exists; pass --resume"):
        digits(batch_size=16, limit=32, output=out)
    for change, needle in (({"batch_size": 8}, "batch_size: file 16, this run 8"),
                           ({"limit": 48}, "limit: file 32, this run 48"),
                           ({"weights": WEIGHTS["swiftformer"]}, "model_sha256"),
                           ({"logits": True}, "logits: file False, this run True"),
                           ({"processor": "timm"}, "preprocess")):
        settings = {"batch_size": 16, "limit": 32, **change}
        with pytest.raises(NpformerError, match="was written by a different run") as err:
            digits(output=out, resume=True, **settings)
        assert needle in str(err.value)
    (tmp_path / "other.jsonl").write_text('{"path": "x.png", "top5": [1]}\n')
    with pytest.raises(InputError, match="not an npformer evaluate results file"):
        digits(batch_size=16, limit=32, output=tmp_path / "other.jsonl", resume=True)
    result = digits(batch_size=16, limit=32, output=out, force=True)  # --force starts it again
    assert result.computed == 32 and len(lines(out)) == 33
    with pytest.raises(ConfigError, match="resume needs the results file"):
        digits(resume=True)


def _interrupt_after_batch(monkeypatch, k):
    """Ctrl-C on the main thread right after batch k is written: where a real one lands mid-run."""
    def batch_written(batch, done):
        if batch == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "batch_written", batch_written)


def test_ctrl_c_on_the_command_line_leaves_a_resumable_file(tmp_path, monkeypatch, capsys):
    """Ctrl-C after batch 2 (through run.batch_written, deterministic): exit 130, whole batches only,
    the printed resume command finishes the run, and the file equals an uninterrupted run's."""
    out = tmp_path / "cli.jsonl"
    argv = ["evaluate", str(FOLDER), "--weights", str(EF), "--output", str(out), "--batch-size", "8",
            "--workers", "2", "--limit", "80"]
    with monkeypatch.context() as m:
        _interrupt_after_batch(m, 2)
        assert cli.main(argv) == 130
    stdout, stderr = capsys.readouterr()
    text = out.read_text()
    done = text.count("\n") - 1
    # batch 2 and what the workers had finished by then (at most two batches per worker in flight)
    assert text.endswith("\n") and done % 8 == 0 and 24 <= done <= 24 + 4 * 8 and stdout == ""
    assert f"npformer: interrupted after {done} of 80 images" in stderr and "Traceback" not in stderr
    command = stderr.splitlines()[-1].strip()
    assert command.startswith("npformer evaluate ") and command.endswith("--resume --limit 80 --workers 2 --batch-size 8")
    program, *rest = shlex.split(command)
    assert program == "npformer" and cli.main(rest) == 0
    resumed = capsys.readouterr().out
    assert f"{80 - done} images in" in resumed and f"{done} read back from the results file" in resumed
    whole = tmp_path / "whole.jsonl"
    evaluate(FOLDER, str(EF), output=whole, batch_size=8, limit=80, workers=1)
    assert out.read_bytes() == whole.read_bytes()


# the child of the real-signal test: batch 2 and later wait for a file the test makes only after
# it has sent SIGINT, so the run cannot finish before its signal however fast or busy the machine
BLOCKED_CHILD = """
import sys, time
import signal
# Ctrl-C as a terminal delivers it, even when the tests run as a background job (which starts with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from npformer.evaluation import run

release, started = Path(sys.argv[1]), Path(sys.argv[2])
real = run.run_batch

def run_batch(k, *args, **kwargs):
    if k >= 2:
        started.touch()
        while not release.exists():
            time.sleep(0.01)
    return real(k, *args, **kwargs)

run.run_batch = run_batch
from npformer.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_a_real_sigint_leaves_a_resumable_file(tmp_path):
    """A real SIGINT to a running `npformer evaluate` process, sent while it waits on batch 2: exit
    130, batches 0-2 kept (batch 2 finishes after the signal, batch 3 never starts), the printed
    command resumes it to the uninterrupted run's bytes."""
    out, release, started = tmp_path / "cli.jsonl", tmp_path / "release", tmp_path / "started"
    (tmp_path / "child.py").write_text(BLOCKED_CHILD)
    argv = ["evaluate", str(FOLDER), "--weights", str(EF), "--output", str(out), "--batch-size", "8", "--workers", "1",
            "--limit", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(release), str(started), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a speed bound
        while not (started.exists() and out.exists() and out.read_text().count("\n") == 1 + 16):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)  # lets the signal reach the child's main thread first; the result does not depend on it
        release.touch()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    text = out.read_text()
    assert text.endswith("\n") and text.count("\n") == 1 + 24 and stdout == ""
    assert "npformer: interrupted after 24 of 64 images" in stderr and "Traceback" not in stderr
    program, *rest = shlex.split(stderr.splitlines()[-1].strip())
    resumed = subprocess.run([sys.executable, "-m", "npformer", *rest], capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "40 images in" in resumed.stdout and "24 read back from the results file" in resumed.stdout
    whole = tmp_path / "whole.jsonl"
    evaluate(FOLDER, str(EF), output=whole, batch_size=8, limit=64, workers=2)
    assert out.read_bytes() == whole.read_bytes()


# ---------------------------------------------------------------------------------------------
# undecodable images, datasets


def test_a_corrupt_image_is_listed_and_skipped(tmp_path, capsys):
    data = tmp_path / "heldout"
    shutil.copytree(FOLDER, data)
    (data / "3" / "broken.png").write_bytes(b"not an image at all")
    (data / "7" / "truncated.png").write_bytes((FOLDER / "7" / "1009.png").read_bytes()[:60])
    (data / "7" / "notes.txt").write_text("not an image: ignored")
    code = cli.main(["evaluate", str(data), "--output", str(tmp_path / "r.jsonl")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[2] == "  data     class folders, 362 images in 10 classes (folder names = the weights' class names); " \
                     "1 non-image files ignored"
    assert out[3] == "  top-1    99.17%  (357 of 360)"  # the 360 decodable images, as before
    i = out.index("  undecodable images: 2 (not counted in the accuracies)")
    assert out[i + 1] == "    3/broken.png: not an image file Pillow can identify"
    assert out[i + 2].startswith("    7/truncated.png: cannot decode image (truncated or corrupt?): ")
    assert json.loads(out[-1])["undecodable"] == 2
    errors = [json.loads(line) for line in lines(tmp_path / "r.jsonl")[1:] if "error" in line]
    assert [(e["path"], e["label"]) for e in errors] == [("3/broken.png", 3), ("7/truncated.png", 7)]


def test_csv_and_tsv_datasets(tmp_path):
    chosen = sorted(ROW_OF_PATH)[:20]
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("path,label\n" + "".join(f"{FOLDER / p},{p[0]}\n" for p in chosen[:15])
                        + "".join(f"{FOLDER / p},\n" for p in chosen[15:]))  # the last five unlabelled
    result = evaluate(csv_file, EF, workers=1)
    assert result.dataset.describe() == "CSV, 20 images in 1 class (labels = the weights' class names)"
    assert len(result.scored) == 15 and [r.label for r in result.records[15:]] == [None] * 5
    folder = {r.path: r.prediction.top5 for r in digits(limit=40).records}
    assert all(r.prediction.top5 == folder[Path(r.path).relative_to(FOLDER).as_posix()] for r in result.records)
    tsv = tmp_path / "sub" / "list.tsv"
    tsv.parent.mkdir()
    shutil.copy(FOLDER / "0" / "1002.png", tsv.parent / "a.png")
    tsv.write_text("a.png\t0\n")  # paths relative to the file's folder, no header
    result = evaluate(tsv, EF, workers=1)
    assert result.dataset.kind == "TSV" and result.records[0].path == "a.png" and result.top1_correct == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{FOLDER / '0' / '1002.png'},cat\n")
    with pytest.raises(InputError, match="1 of 1 classes match no output of the model: 'cat'"):
        evaluate(bad, EF)


def test_class_matching_rules():
    names = imagenet_labels()
    assert match_classes(["n01440764", "n02123045"], names, "d") == ({"n01440764": 0, "n02123045": 281},
                                                                     "ImageNet synsets")
    assert match_classes(["tabby, tabby cat"], names, "d") == ({"tabby, tabby cat": 281}, "the weights' class names")
    assert match_classes(["0", "12"], names, "d") == ({"0": 0, "12": 12}, "class indices")
    assert match_classes(["cat", "dog"], ["cat", "dog"], "d")[1] == "the weights' class names"
    with pytest.raises(InputError, match=r"d: 1 of 2 classes match no output of the model: 'n99999999'.*ImageNet"):
        match_classes(["n01440764", "n99999999"], names, "d")
    with pytest.raises(InputError, match="an index 0–9"):
        match_classes(["10"], [str(i) for i in range(10)], "d")
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and (synsets[0], synsets[281], synsets[-1]) == ("n01440764", "n02123045", "n15075141")


def _tiny_imagenet_model(tmp_path):
    cfg = npformer.EfficientFormerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 2], num_meta3d_blocks=1,
                                         dim=32, hidden_size=32, num_labels=1000)
    path = tmp_path / "tiny1000.safetensors"
    npformer.EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, num_heads=2, seed=3)
                                                              ).save_pretrained(path)
    return path


def test_imagenet_synset_folders_and_the_kaggle_val_folder(tmp_path):
    weights = _tiny_imagenet_model(tmp_path)
    images = sorted(FOLDER.rglob("*.png"))[:6]
    synsets = ["n01440764", "n01440764", "n02123045", "n02123045", "n15075141", "n01443537"]
    kaggle_dir = tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    kaggle_dir.mkdir(parents=True)
    for i, (image, synset) in enumerate(zip(images, synsets)):
        (tmp_path / "val" / synset).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, tmp_path / "val" / synset / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        shutil.copy(image, kaggle_dir / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    (tmp_path / "kaggle" / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"ILSVRC2012_val_{i + 1:08d},{s} 1 2 3 4 {s} 5 6 7 8\n"
                                               for i, s in reversed(list(enumerate(synsets)))))
    labels = {0: 0, 1: 0, 2: 281, 3: 281, 4: 999, 5: 1}
    folders = evaluate(tmp_path / "val", weights, processor="efficientformer-hf", workers=1)
    assert folders.dataset.labelling == "folder names = ImageNet synsets"
    kaggle = evaluate(kaggle_dir, weights, processor="efficientformer-hf", workers=1)
    assert kaggle.dataset.kind == "ImageNet val" and kaggle.dataset.labelling == \
        "labels = ImageNet synsets from LOC_val_solution.csv"
    assert [(r.path, r.label) for r in kaggle.records] == [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", labels[i])
                                                           for i in range(6)]
    assert sorted(r.label for r in folders.records) == sorted(labels.values())
    by_name = {Path(r.path).name: r.prediction.top5 for r in folders.records}
    assert all(by_name[r.path] == r.prediction.top5 for r in kaggle.records)  # same pixels, same predictions
    # the devkit's ground truth is refused with the reason; a 10-class model cannot take ImageNet labels
    devkit = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    devkit.write_text("490\n361\n171\n822\n297\n482\n")
    with pytest.raises(InputError, match="meta.mat order, not the class-index"):
        evaluate(kaggle_dir, weights, ground_truth=devkit)
    with pytest.raises(InputError, match="need a 1000-class model, these weights have 10"):
        evaluate(kaggle_dir, EF)
    shutil.move(tmp_path / "kaggle" / "LOC_val_solution.csv", tmp_path / "gt.csv")
    with pytest.raises(InputError, match="no LOC_val_solution.csv was found"):
        evaluate(kaggle_dir, weights)
    assert len(evaluate(kaggle_dir, weights, ground_truth=tmp_path / "gt.csv", processor="efficientformer-hf",
                        workers=1).records) == 6
    with pytest.raises(InputError, match="has class subfolders, which label the images already"):
        evaluate(tmp_path / "val", weights, ground_truth=tmp_path / "gt.csv")


def _csv(folder, text):
    (folder / "l.csv").write_text(text)
    return folder / "l.csv"


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing", "missing: no such file or directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no class subfolders"),
    (lambda d: (d / "e" / "x").mkdir(parents=True) or d / "e", "e: its class subfolders hold no images"),
    (lambda d: _csv(d, "path,label\n"), "l.csv: lists no images"),
    (lambda d: _csv(d, "a.png,1,2\n"), "l.csv: row 1 is ['a.png', '1', '2']; expected `path,label`"),
    (lambda d: _csv(d, "a.png,1\na.png,1\n"), "l.csv: lists 1 image paths more than once, first 'a.png'"),
    (lambda d: _csv(d, "ImageId,PredictionString\n").rename(d / "LOC_val_solution.csv"), "is ImageNet ground truth"),
])
def test_dataset_errors_name_the_problem(tmp_path, make, needle):
    with pytest.raises(InputError) as err:
        read_dataset(make(tmp_path), [str(i) for i in range(10)])
    assert needle in str(err.value)


# ---------------------------------------------------------------------------------------------
# comparing with another run or a port


def _port_file(path, family, rows=None, top5_only=False, change=None):
    """The PyTorch reference's stored logits as a port's exported predictions (path + logits)."""
    with open(path, "w") as f:
        for p, row in ROW_OF_PATH.items():
            logits = REFERENCE_LOGITS[family][row].astype(np.float64)
            if change and p in change:
                logits[change[p]] += 10
            entry = {"path": p}
            if top5_only:
                order = np.argsort(-logits, kind="stable")[:5]
                e = np.exp(logits - logits.max())
                entry.update(top5=order.tolist(), top5_prob=(e / e.sum())[order].tolist())
            else:
                entry["logits"] = logits.tolist()
            f.write(json.dumps(entry) + "\n")
    return path


@heavy  # the whole held-out set, three times
def test_compare_with_a_ports_predictions(tmp_path, capsys):
    port = _port_file(tmp_path / "port.jsonl", "efficientformer")
    result = digits(compare=port, logits=True)
    [agreement] = result.agreements
    assert (agreement.images, agreement.top1_agree, agreement.only_ours, agreement.only_theirs) == (360, 360, 0, 0)
    assert 1e-7 < agreement.max_abs_logit < 1e-4 and 0 < agreement.max_abs_prob < 1e-5
    assert agreement.prob_scope == "every class" and agreement.first_disagreements == []
    # a port that gets two images wrong, and one that exports only its top 5
    changed = _port_file(tmp_path / "bad.jsonl", "efficientformer", change={"0/1002.png": 4, "5/1003.png": 2})
    code = cli.main(["evaluate", str(FOLDER), "--compare", str(changed), "--logits"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    i = out.index(f"  agreement with {changed}: 360 images")
    assert out[i + 1] == "    top-1 agreement  99.44%  (358 of 360)"
    assert out[i + 2].startswith("    max |Δ logit|        10")
    assert out[i + 4] == "    first disagreeing images (ours vs theirs: top-1 class, probability):"
    assert out[i + 5].startswith("      0/1002.png: 0 (0.95) vs 4 (") and out[i + 6].startswith("      5/1003.png: 5 (")
    assert json.loads(out[-1])["agreement"][0]["top1_agree"] == 358
    top5_file = _port_file(tmp_path / "top5.jsonl", "efficientformer", top5_only=True)
    top5 = digits(compare=top5_file, limit=64).agreements[0]
    assert (top5.images, top5.top1_agree, top5.only_theirs) == (64, 64, 296)
    assert top5.max_abs_logit is None and 0 < top5.max_abs_prob < 1e-5
    assert top5.prob_scope == "the classes both top-5 lists name"
    # our own records compare too, by path; images only one side has are counted
    ours = tmp_path / "ours.jsonl"
    digits(output=ours, limit=64)
    against = digits(compare=ours, limit=96).agreements[0]
    assert (against.images, against.top1_agree, against.only_ours, against.only_theirs) == (64, 64, 32, 0)
    assert against.max_abs_prob == 0.0


# ---------------------------------------------------------------------------------------------
# progress bar, command line


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    digits(limit=32, progress=True)
    assert "32/32" in capsys.readouterr().err
    digits(limit=32)  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv,code,needle", [
    (["evaluate", "{missing}"], 7, "missing: no such file or directory"),
    (["evaluate", "{folder}", "--resume"], 2, "--resume needs --output"),
    (["evaluate", "{folder}", "--weights", "{missing}"], 4, "missing: no such file"),
    (["evaluate", "{folder}", "--processor", "nope"], 3, "nope"),
    (["evaluate", "{folder}", "--processor", "timm"], 7, ""),  # 224 px into a model built for 112
    (["evaluate", "{folder}", "--compare", "{missing}"], 7, "no such file to compare with"),
    (["evaluate", "{folder}", "--batch-size", "0"], 2, "must be >= 1"),
])
def test_cli_errors(tmp_path, capsys, argv, code, needle):
    files = {"missing": tmp_path / "missing", "folder": FOLDER}
    assert cli.main([a.format(**files) for a in argv] + ["--limit", "8"]) == code
    out, err = capsys.readouterr()
    assert needle in err and "Traceback" not in err
    if code != 2 or "--resume" in argv:
        assert err.startswith("npformer: error: ") and err.count("\n") == 1, err


def test_reference_without_the_oracle_extra(capsys, monkeypatch):
    monkeypatch.setattr(cli.oracle, "missing_extras", lambda: ["torch", "timm"])
    assert cli.main(["evaluate", str(FOLDER), "--reference", "timm"]) == 2
    assert capsys.readouterr().err == ("npformer: error: npformer evaluate --reference needs the oracle extra (torch, "
                                       "transformers and timm; missing: torch, timm): pip install 'npformer[oracle]'\n")


def test_help(capsys):
    assert cli.main(["evaluate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--workers", "--resume", "--compare", "--reference", "--processor", "LOC_val_solution.csv",
                   "ILSVRC2012_validation_ground_truth.txt is refused", "exit status: 0 done, 130 interrupted"):
        assert needle in text, needle
    assert cli.main(["--help"]) == 0 and "evaluate" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# live tier: the PyTorch reference in the same run


@pytest.mark.parametrize("family,reference", [("efficientformer", "transformers"), ("swiftformer", "timm"),
                                              ("efficientformerv2", "timm")])
def test_the_reference_agrees_on_every_image(family, reference, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from npformer.tools.oracle import import_timm

    try:
        import_timm()  # not importorskip: timm needs oracle.import_timm's torchvision workaround here
    except ImportError as err:
        pytest.skip(f"could not import 'timm': {err}")
    out = tmp_path / "ref.jsonl"
    result = digits(weights=WEIGHTS[family], reference=reference, output=out, logits=True)
    [agreement] = result.agreements
    assert agreement.other.startswith(f"{reference} ") and "(torch 2.13.0" in agreement.other
    assert agreement.images == agreement.top1_agree == 360
    assert 1e-7 < agreement.max_abs_logit < 1e-4 and agreement.max_abs_prob < 1e-5
    # the reference's logits in the records are the PyTorch logits stored with the fixture (same pixels)
    _, records, _ = read_results(out)
    rows = [ROW_OF_PATH[r.path] for r in records]
    ref = np.array([r.reference.logits for r in records])
    assert np.abs(ref - REFERENCE_LOGITS[family][rows]).max() < 1e-5
    assert max(r.diffs[0] for r in records) == agreement.max_abs_logit
    # and they resume like the rest: a second run reads them back
    again = digits(weights=WEIGHTS[family], reference=reference, output=out, logits=True, resume=True)
    assert again.computed == 0 and again.agreements[0].max_abs_logit == agreement.max_abs_logit


# ---------------------------------------------------------------------------------------------
# the published ImageNet accuracies (skipped unless the data and a checkpoint are here)

# (family, variant, checkpoint source) -> (published top-1 %, how far npformer may land from it, where it is from)
PUBLISHED_TOP1 = {
    ("efficientformer", "l1", "timm"): (80.50, 0.05, "timm eval (1000-epoch weights)"),
    ("efficientformer", "l3", "timm"): (82.56, 0.05, "timm eval"),
    ("efficientformer", "l7", "timm"): (83.40, 0.05, "timm eval"),
    ("efficientformerv2", "s0", "timm"): (76.10, 0.05, "timm eval"),
    ("efficientformerv2", "s1", "timm"): (79.68, 0.05, "timm eval"),
    ("efficientformerv2", "s2", "timm"): (82.16, 0.05, "timm eval"),
    ("efficientformerv2", "l", "timm"): (83.64, 0.05, "timm eval"),
    ("swiftformer", "xs", "timm"): (75.60, 0.05, "timm eval (v2 weights)"),
    ("swiftformer", "s", "timm"): (78.46, 0.05, "timm eval"),
    ("swiftformer", "l1", "timm"): (80.91, 0.05, "timm eval"),
    ("swiftformer", "l3", "timm"): (82.99, 0.05, "timm eval"),
    # the repositories' README figures, measured with their own eval code: looser
    ("efficientformer", "l1", "transformers"): (79.2, 0.5, "EfficientFormer README, 300 epochs"),
    ("efficientformer", "l3", "transformers"): (82.4, 0.5, "EfficientFormer README, 300 epochs"),
    ("efficientformer", "l7", "transformers"): (83.3, 0.5, "EfficientFormer README, 300 epochs"),
    ("efficientformerv2", "s0", "original"): (76.2, 0.5, "EfficientFormer README, 450 epochs"),
    ("efficientformerv2", "s1", "original"): (79.7, 0.5, "EfficientFormer README, 450 epochs"),
    ("efficientformerv2", "s2", "original"): (82.0, 0.5, "EfficientFormer README, 450 epochs"),
    ("efficientformerv2", "l", "original"): (83.5, 0.5, "EfficientFormer README, 450 epochs"),
    ("swiftformer", "xs", "transformers"): (75.7, 0.5, "SwiftFormer README"),
    ("swiftformer", "s", "transformers"): (78.5, 0.5, "SwiftFormer README"),
    ("swiftformer", "l1", "transformers"): (80.9, 0.5, "SwiftFormer README"),
    ("swiftformer", "l3", "transformers"): (83.0, 0.5, "SwiftFormer README"),
}
# the original .pth files: the same README figures (EfficientFormer's 300-epoch ones; 1000d: NPFORMER_IMAGENET_TOP1)
PUBLISHED_TOP1 |= {(f, v, "original"): figure for (f, v, s), figure in PUBLISHED_TOP1.items() if s == "transformers"}


def test_published_imagenet_accuracy():
    """NPFORMER_IMAGENET_VAL: the validation folder (synset subfolders, or the flat folder with
    LOC_val_solution.csv next to or above it); NPFORMER_IMAGENET_WEIGHTS: a published checkpoint
    (converted or as downloaded). NPFORMER_IMAGENET_TOP1 overrides the expected figure (e.g. for an
    original checkpoint trained for another number of epochs)."""
    val, weights = os.environ.get("NPFORMER_IMAGENET_VAL"), os.environ.get("NPFORMER_IMAGENET_WEIGHTS")
    if not val or not weights:
        pytest.skip("set NPFORMER_IMAGENET_VAL and NPFORMER_IMAGENET_WEIGHTS to evaluate a published checkpoint")
    from npformer.models.registry import variant_name

    model, metadata = npformer.load(weights)
    key = (model.family, variant_name(model.config), metadata.get("source"))
    if "NPFORMER_IMAGENET_TOP1" in os.environ:
        expected, tolerance, where = float(os.environ["NPFORMER_IMAGENET_TOP1"]), 0.05, "NPFORMER_IMAGENET_TOP1"
    elif key in PUBLISHED_TOP1:
        expected, tolerance, where = PUBLISHED_TOP1[key]
    else:
        pytest.skip(f"no published top-1 for {key}; set NPFORMER_IMAGENET_TOP1")
    output = os.environ.get("NPFORMER_IMAGENET_OUTPUT")  # a results file to resume, if the run is cut short
    result = evaluate(val, weights, output=output, resume=output is not None, progress=True)
    scored, errors = len(result.scored), len(result.errors)
    assert scored == 50_000 and not errors, f"{scored} images scored, {errors} undecodable"
    print("\n".join(report_lines(result)))
    assert abs(100 * result.top1 - expected) <= tolerance, f"{100 * result.top1:.2f} vs {expected} ({where})"
