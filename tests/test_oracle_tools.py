"""Golden-value fixtures: `npformer trace` / `npformer compare` and npformer.tools.golden (torch-free)."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import npformer
import npformer.layers
from npformer import load as load_model
from npformer.cli import DEMO_WEIGHTS, main
from npformer.errors import WeightFileError
from npformer.tools.golden import compare_fixtures, read_fixture, trace_to_fixture

ROOT = Path(__file__).resolve().parent.parent
DIGIT = ROOT / "tests" / "fixtures" / "digits" / "digit_3_705.png"

pytestmark = pytest.mark.skipif(not DEMO_WEIGHTS.is_file(), reason="demo weights not in this checkout")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)


@pytest.fixture()
def npy(tmp_path, pixels):
    path = tmp_path / "pixels.npy"
    np.save(path, pixels)
    return path


@pytest.fixture()
def golden(tmp_path, npy):
    out = tmp_path / "golden.safetensors"
    assert main(["trace", str(npy), str(out)]) == 0
    return out


def test_fixture_holds_input_and_activations_in_order(tmp_path, pixels):
    model, _ = load_model(DEMO_WEIGHTS, np.float32)
    path = tmp_path / "f.safetensors"
    trace_to_fixture(model, pixels, path, weights_name="demo")
    trace = npformer.Trace()
    out = model(pixels, trace=trace)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        keys = set(f.keys())
        np.testing.assert_array_equal(f.get_tensor("input"), pixels)
        np.testing.assert_array_equal(f.get_tensor("logits"), out.logits)
        assert f.get_tensor("stem.conv1").dtype == np.float32
    names = json.loads(meta["names"])
    assert names == list(trace.records) and names[0] == "stem.conv1" and names[-1] == "logits"
    assert keys == set(names) | {"input"}
    assert meta["format"] == "npformer-trace" and meta["format_version"] == "1"
    assert meta["model_class"] == "EfficientFormerForImageClassificationWithTeacher"
    assert meta["family"] == "efficientformer" and meta["dtype"] == "float32" and meta["weights"] == "demo"
    assert meta["npformer_version"] == npformer.__version__
    assert json.loads(meta["config"]) == model.config.to_dict()
    _, order, _ = read_fixture(path)
    assert order == ["input"] + names


def test_trace_cli_image_and_self_compare(tmp_path, capsys):
    out = tmp_path / "img.safetensors"
    assert main(["trace", str(DIGIT), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "67 tensors" in printed and "bytes" in printed
    with safe_open(str(out), framework="numpy") as f:
        assert f.get_tensor("input").shape == (1, 3, 112, 112)
        assert f.metadata()["weights"] == str(DEMO_WEIGHTS)
    assert main(["compare", str(out), str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "all 67 tensors within tolerance"
    assert sum(line.rstrip().endswith(" OK") for line in printed) == 67


def test_broken_port_first_divergence(tmp_path, npy, golden, monkeypatch, capsys):
    # a "port" with the tanh GELU instead of the exact one: everything before the first GELU agrees
    monkeypatch.setitem(npformer.layers.ACTIVATIONS, "gelu", npformer.layers.ACTIVATIONS["gelu_new"])
    broken = tmp_path / "broken.safetensors"
    assert main(["trace", str(npy), str(broken)]) == 0
    capsys.readouterr()

    result = compare_fixtures(broken, golden)
    first = result.first_failure
    assert first.name == "stages.0.blocks.0.mlp.fc2"  # the first activation after the first GELU
    names = [row.name for row in result.rows]
    assert all(row.ok and row.max_abs == 0 for row in result.rows[: names.index(first.name)])
    assert "stages.0.blocks.0.mlp.norm1" in names[: names.index(first.name)]
    assert first.max_abs > 1e-4 and not result.ok

    assert main(["compare", str(broken), str(golden)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("first tensor beyond tolerance: stages.0.blocks.0.mlp.fc2 (max abs ")
    table = [line for line in lines if line.rstrip().endswith("OK")]
    assert table[-1].split()[0] == "stages.0.blocks.0.mlp.fc2" and table[-1].endswith("NOT OK")
    assert len(table) == names.index(first.name) + 1  # rows up to and including the first failure

    assert main(["compare", str(broken), str(golden), "--all"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.rstrip().endswith("OK") for line in lines) == len(names)

    # loose enough tolerances accept the approximation
    assert main(["compare", str(broken), str(golden), "--atol", "1e-2", "--rtol", "1e-2"]) == 0


def test_float64_trace(tmp_path, npy, golden, capsys):
    out = tmp_path / "f64.safetensors"
    assert main(["trace", str(npy), str(out), "--dtype", "float64"]) == 0
    tensors, order, meta = read_fixture(out)
    assert meta["dtype"] == "float64"
    assert all(tensors[name].dtype == np.float64 for name in order)
    capsys.readouterr()
    # float32 vs float64: close at the default tolerances, not at float64's
    assert main(["compare", str(golden), str(out)]) == 0
    assert main(["compare", str(golden), str(out), "--atol", "1e-12", "--rtol", "0"]) == 1


def test_shape_mismatch_and_only_in(tmp_path, golden):
    tensors, order, meta = read_fixture(golden)
    tensors = dict(tensors)
    tensors["stem"] = tensors["stem"][:, :4]
    del tensors["logits"]
    tensors["extra"] = np.zeros(3, np.float32)
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata={"format": "npformer-trace"})  # a port's minimal fixture
    result = compare_fixtures(other, golden)  # the port first, the golden second
    assert result.first_failure.name == "stem" and result.first_failure.max_abs is None
    assert result.first_failure.note == "shape [1, 4, 28, 28] vs [1, 16, 28, 28]"
    assert result.only_in_a == ["extra"] and result.only_in_b == ["logits"]


def test_unreadable_and_not_a_fixture(tmp_path, golden, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    assert main(["compare", str(junk), str(golden)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("npformer: error: ") and str(junk) in err and err.count("\n") == 1

    assert main(["compare", str(golden), str(tmp_path / "missing.safetensors")]) == 4
    assert "no such file" in capsys.readouterr().err

    assert main(["compare", str(DEMO_WEIGHTS), str(golden)]) == 4
    err = capsys.readouterr().err
    assert "not an npformer trace fixture" in err and err.count("\n") == 1
    with pytest.raises(WeightFileError):
        compare_fixtures(golden, junk)


def test_bad_npy(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 112, 112), np.float32))
    assert main(["trace", str(bad), str(tmp_path / "x.safetensors")]) == 7
    assert "NCHW" in capsys.readouterr().err
