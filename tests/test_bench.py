"""bench/bench.py stays runnable (oracle tier): one small variant, one round, every contender
but onnxruntime (an extra CI does not install). It asserts no time, only that the contenders
agree and the table is printed."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.oracle
@pytest.mark.parametrize("variant", ["efficientformer-l1", "swiftformer-xs"])
def test_bench_runs_and_its_contenders_agree(variant, capsys):
    pytest.importorskip("transformers")
    bench = load_bench()
    assert bench.main(["--variants", variant, "--batches", "2", "--reps", "1", "--no-onnx", "--no-cold"]) == 0
    table = capsys.readouterr().out
    row = [line for line in table.splitlines() if line.startswith(f"| {variant} | 2 |")]
    assert len(row) == 1 and "×" in row[0]
