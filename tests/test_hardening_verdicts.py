"""The oracle's verdicts on hostile input: `npformer compare` (trace fixtures), the records that
`npformer evaluate --compare / --resume` read back, and the files a class folder lists.

Each case is classified as the other hardening tests classify theirs: *refused* (an npformer
error naming the file and what is wrong: the CLI's one line and exit code), or *verdict* (an
answer whose every figure the case checks). A raw exception is a crash; an answer the case does
not expect (exit 0 for a broken port, a NaN turned into a number, a file left out of the count) is
a silent answer: both fail. OUTCOMES counts the cases of each kind; test_the_corpus_counts checks
that the corpus is as large as it claims.
"""

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from extras import need
from npformer import cli, load as load_model
from npformer.errors import InputError
from npformer.evaluation import evaluate, read_predictions, read_results
from npformer.evaluation import run as run_module
from npformer.tools.golden import compare_fixtures, read_fixture, trace_to_fixture

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "tests" / "fixtures" / "digits" / "heldout"
EF = ROOT / "weights" / "efficientformer-digits.safetensors"
FC2 = "stages.0.blocks.0.mlp.fc2"
OUTCOMES = {"refused": 0, "verdict": 0}


def counted(kind):
    OUTCOMES[kind] += 1


# ---------------------------------------------------------------------------------------------
# compare: fixtures


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    model, _ = load_model(EF, np.float32)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)
    path = tmp_path_factory.mktemp("golden") / "golden.safetensors"
    trace_to_fixture(model, pixels, path)
    tensors, order, metadata = read_fixture(path)
    return path, tensors, order, metadata


def fixture(path, tensors, names=None, metadata=None):
    meta = {"format": "npformer-trace"} if metadata is None else metadata
    if names is not None:
        meta["names"] = json.dumps(names)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def compare_cli(capsys, *argv):
    code = cli.main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def perturbed(tensors, order, start, how=lambda x: x + 1.0):
    """The tensors with `how` applied from `start` on in forward order (what a broken port gives)."""
    after = order[order.index(start):]
    return {k: (how(v) if k in after else v) for k, v in tensors.items()}


def test_why_a_port_without_names_is_judged_in_the_goldens_order(tmp_path, golden, capsys):
    path, tensors, order, _ = golden
    port = fixture(tmp_path / "port.safetensors", perturbed(tensors, order, FC2))  # no names metadata
    assert compare_fixtures(port, path).first_failure.name == FC2  # not `head`, alphabetically first
    code, out, _ = compare_cli(capsys, port, path)
    assert code == 1 and out.splitlines()[-1].startswith(f"first tensor beyond tolerance: {FC2} (max abs 1,")
    counted("verdict")


def test_why_a_port_sharing_only_input_is_refused(tmp_path, golden, capsys):
    path, tensors, _, _ = golden
    port = fixture(tmp_path / "port.safetensors", {"input": tensors["input"], "mine.0": np.zeros(3, np.float32)})
    code, out, err = compare_cli(capsys, port, path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "share no activation (only `input`, the pixels both were given)" in err
    assert "A holds 1 (mine.0), B holds 66 (stem.conv1, stem.norm1, stem.conv2, stem.norm2, ... (+62 more))" in err
    with pytest.raises(InputError, match="share no activation"):
        compare_fixtures(port, path)
    counted("refused")


NONFINITE = {  # case -> (tensor changes {side: (name, index, value)}, the note's text)
    "NaN in the port": ({"a": ("stem", (0, 3, 1, 2), np.nan)}, "A: 1 NaN, first at [0, 3, 1, 2]"),
    "+inf in the port": ({"a": ("stem", (0, 0, 0, 5), np.inf)}, "A: 1 +inf, first at [0, 0, 0, 5]"),
    "-inf in the port": ({"a": ("stem", (0, 1, 2, 3), -np.inf)}, "A: 1 -inf, first at [0, 1, 2, 3]"),
    "NaN in the golden": ({"b": ("stem", (0, 2, 2, 2), np.nan)}, "B: 1 NaN, first at [0, 2, 2, 2]"),
    "NaN on both sides at one place": ({"a": ("stem", (0, 1, 1, 1), np.nan), "b": ("stem", (0, 1, 1, 1), np.nan)},
                                       "A: 1 NaN, first at [0, 1, 1, 1]; B: 1 NaN, first at [0, 1, 1, 1]"),
    "+inf on both sides at one place": ({"a": ("stem", (0, 0, 1, 1), np.inf), "b": ("stem", (0, 0, 1, 1), np.inf)},
                                        "A: 1 +inf, first at [0, 0, 1, 1]; B: 1 +inf, first at [0, 0, 1, 1]"),
    "NaN in the logits only": ({"a": ("logits", (0, 7), np.nan)}, "A: 1 NaN, first at [0, 7]"),
}


@pytest.mark.parametrize("case", list(NONFINITE))
def test_nan_and_inf_fail_their_tensor_with_the_first_position(tmp_path, golden, capsys, case):
    path, tensors, order, metadata = golden
    changes, note = NONFINITE[case]
    sides = {"a": dict(tensors), "b": dict(tensors)}
    for side, (name, index, value) in changes.items():
        sides[side][name] = sides[side][name].copy()
        sides[side][name][index] = value
    port = fixture(tmp_path / "port.safetensors", sides["a"])
    gold = fixture(tmp_path / "gold.safetensors", sides["b"], metadata=dict(metadata))
    result = compare_fixtures(port, gold)
    first = result.first_failure
    name = next(iter(changes.values()))[0]
    assert first.name == name and first.nonfinite == note and not result.ok
    assert first.max_abs is not None and np.isfinite(first.max_abs)  # over the finite positions, never a NaN
    code, out, _ = compare_cli(capsys, port, gold)
    assert code == 1 and out.splitlines()[-1].startswith(f"first tensor beyond tolerance: {name} (")
    assert note in out.splitlines()[-1]
    counted("verdict")


def _reshaped(x):
    return x.reshape(x.shape[0], -1)


SHAPES_AND_DTYPES = {  # case -> (the port's stem, expected verdict: exit code, text in the last line)
    "fewer channels": (lambda x: x[:, :4], 1, "first tensor beyond tolerance: stem (shape [1, 4, 28, 28] vs "
                                              "[1, 16, 28, 28])"),
    "flattened": (_reshaped, 1, "first tensor beyond tolerance: stem (shape [1, 12544] vs [1, 16, 28, 28])"),
    "transposed": (lambda x: x.transpose(0, 2, 3, 1), 1, "(shape [1, 28, 28, 16] vs [1, 16, 28, 28])"),
    "one value": (lambda x: x.ravel()[:1], 1, "(shape [1] vs [1, 16, 28, 28])"),
    "empty": (lambda x: x[:, :0], 1, "(shape [1, 0, 28, 28] vs [1, 16, 28, 28])"),
    "float64, equal values": (lambda x: x.astype(np.float64), 0, "all 67 tensors within tolerance"),
    "float16": (lambda x: x.astype(np.float16), 1, "dtype float16 vs float32"),
    "int32": (lambda x: x.astype(np.int32), 1, "dtype int32 vs float32"),
    "bool": (lambda x: x > 0, 1, "dtype bool vs float32"),
}


@pytest.mark.parametrize("case", list(SHAPES_AND_DTYPES))
def test_shapes_and_dtypes_are_named(tmp_path, golden, capsys, case):
    path, tensors, _, _ = golden
    change, code_expected, needle = SHAPES_AND_DTYPES[case]
    port = fixture(tmp_path / "port.safetensors", {**tensors, "stem": change(tensors["stem"])})
    code, out, _ = compare_cli(capsys, port, path, "--all")
    assert code == code_expected and needle in out.splitlines()[-1] + "".join(out.splitlines()[:-1]), out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["stem"])
    if "dtype" in case or case in ("float16", "int32", "bool"):
        assert f"dtype {np.asarray(change(tensors['stem'])).dtype} vs float32" in row
    counted("verdict")


def test_golden_tensors_missing_from_the_port_are_listed(tmp_path, golden, capsys):
    path, tensors, order, _ = golden
    kept = {k: v for k, v in tensors.items() if k not in ("logits", "head")}
    port = fixture(tmp_path / "port.safetensors", kept)
    result = compare_fixtures(port, path)
    assert result.ok and result.only_in_b == ["head", "logits"]
    code, out, _ = compare_cli(capsys, port, path)
    lines = out.splitlines()
    assert code == 0 and lines[-2] == "not in A (golden tensors the port lacks, not compared) (2): head, logits"
    assert lines[-1] == "all 65 common tensors within tolerance; 2 of B's tensors are not in A and were not compared"
    counted("verdict")


def test_a_golden_without_names_names_no_first(tmp_path, golden, capsys):
    path, tensors, order, _ = golden
    gold = fixture(tmp_path / "gold.safetensors", tensors)  # no names: no forward order
    same = fixture(tmp_path / "same.safetensors", tensors)
    code, out, _ = compare_cli(capsys, same, gold)
    assert code == 0 and out.splitlines()[-1] == "all 67 tensors within tolerance"
    counted("verdict")
    port = fixture(tmp_path / "port.safetensors", perturbed(tensors, order, FC2))
    result = compare_fixtures(port, gold)
    assert not result.ok and not result.ordered and result.failures[0].name == "head"  # sorted, not "first"
    with pytest.raises(InputError, match="has no metadata 'names'.*no first diverging tensor can be named"):
        result.first_failure
    code, out, _ = compare_cli(capsys, port, gold)
    last = out.splitlines()[-1]
    assert code == 1 and last.startswith("B has no names metadata (its forward order), so no first tensor beyond "
                                         "tolerance can be named; 58 of 67 tensors are beyond tolerance: head, head_dist, logits, norm, pooled ...")
    counted("verdict")
    # the files swapped: the golden (with names) first, a port without names second
    code, out, _ = compare_cli(capsys, path, port)
    assert code == 1 and "(A has one: is A the golden? The golden fixture goes second)" in out.splitlines()[-1]
    counted("verdict")


def test_the_port_given_other_pixels_fails_at_input(tmp_path, golden, capsys):
    path, tensors, _, _ = golden
    port = fixture(tmp_path / "port.safetensors", {**tensors, "input": tensors["input"] * 2})
    code, out, _ = compare_cli(capsys, port, path)
    assert code == 1 and out.splitlines()[-1].endswith("; A was given other pixel values")
    assert out.splitlines()[-1].startswith("first tensor beyond tolerance: input (")
    counted("verdict")


def _nested(depth):
    return "[" * depth + "]" * depth


REFUSED_FILES = {  # case -> (make the port file or the golden file, which side, exit code, needle)
    "empty file": (lambda p, t: p.write_bytes(b""), "a", 4, "not a readable safetensors file"),
    "text file": (lambda p, t: p.write_text("logits,1,2,3\n"), "a", 4, "not a readable safetensors file"),
    "a folder": (lambda p, t: p.mkdir(), "a", 4, "not a file"),
    "missing": (lambda p, t: None, "b", 4, "no such file"),
    "no format metadata": (lambda p, t: fixture(p, t, metadata={}), "a", 4, "not an npformer trace fixture"),
    "another format": (lambda p, t: fixture(p, t, metadata={"format": "pt"}), "a", 4, "not an npformer trace fixture"),
    "names not JSON": (lambda p, t: fixture(p, t, metadata={"format": "npformer-trace", "names": "stem,"}), "b", 4,
                       "metadata 'names' is not a JSON list of names"),
    "names a JSON object": (lambda p, t: fixture(p, t, metadata={"format": "npformer-trace", "names": "{}"}), "b", 4,
                            "metadata 'names' is not a JSON list of names"),
    "names of numbers": (lambda p, t: fixture(p, t, metadata={"format": "npformer-trace", "names": "[1, 2]"}), "b", 4,
                         "not a JSON list of names"),
    "names nested 100,000 deep": (lambda p, t: fixture(p, t, metadata={"format": "npformer-trace",
                                                                       "names": _nested(100_000)}), "b", 4,
                                  "not a JSON list of names"),
    "names a tensor twice": (lambda p, t: fixture(p, t, names=["stem", "stem"]), "b", 4,
                             "metadata 'names' lists 1 names more than once, first 'stem'"),
    "names a missing tensor": (lambda p, t: fixture(p, t, names=["stem", "nowhere"]), "b", 4,
                               "metadata 'names' lists tensors the file does not hold: ['nowhere']"),
    "no tensors at all": (lambda p, t: fixture(p, {}), "a", 2, "share no activation, so there is nothing to compare: "
                                                               "A holds 0, B holds 66"),
    "disjoint names": (lambda p, t: fixture(p, {"x": np.zeros(2, np.float32)}), "a", 2,
                       "share no activation, so there is nothing to compare: A holds 1 (x)"),
    "bfloat16 tensor": (None, "a", 4, "not a readable safetensors file"),
}


def _bf16(path):
    """A hand-written safetensors file with a BF16 tensor (NumPy has no bfloat16)."""
    import struct
    header = json.dumps({"stem": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
                         "__metadata__": {"format": "npformer-trace"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)


def test_a_bfloat16_tensor_is_refused_even_when_numpy_has_been_taught_bfloat16(tmp_path, golden, capsys):
    """ml_dtypes (which TensorFlow and JAX import) registers bfloat16 with NumPy, and safetensors then reads
    BF16: compare's verdict must not depend on whether anything in the process imported it."""
    need("ml_dtypes", extra="tf-oracle", switch="NPFORMER_REQUIRE_TF")
    path, _, _, _ = golden
    bad = tmp_path / "bad.safetensors"
    _bf16(bad)
    code, out, err = compare_cli(capsys, bad, path)
    assert code == 4 and "tensor 'stem' is BF16" in err and str(bad) in err, err


@pytest.mark.parametrize("case", list(REFUSED_FILES))
def test_files_compare_cannot_judge_are_refused(tmp_path, golden, capsys, case):
    path, tensors, _, _ = golden
    make, side, code_expected, needle = REFUSED_FILES[case]
    bad = tmp_path / "bad.safetensors"
    _bf16(bad) if make is None else make(bad, dict(tensors))
    argv = (bad, path) if side == "a" else (path, bad)
    code, out, err = compare_cli(capsys, *argv)
    assert code == code_expected and err.startswith("npformer: error: ") and err.count("\n") == 1, err
    assert needle in err and str(bad) in err, err
    counted("refused")


@pytest.mark.parametrize("option,value", [("--atol", "nan"), ("--atol", "-1"), ("--rtol", "inf"), ("--rtol", "-0.5")])
def test_tolerances_must_be_finite_and_not_negative(golden, capsys, option, value):
    path = golden[0]
    code, out, err = compare_cli(capsys, path, path, option, value)
    assert code == 2 and err == f"npformer: error: {option} must be a finite number >= 0, got {float(value)!r}\n"
    counted("refused")


# ---------------------------------------------------------------------------------------------
# records: a port's predictions (--compare) and npformer's own results (--resume)

K = 10  # the demo model's classes
LOGITS = [round(0.5 * i - 2, 3) for i in range(K)]  # class 9 best, then 8, 7, ...
PORT_LINE = {"path": "0/1002.png", "logits": LOGITS}


def port_file(tmp_path, *lines, raw=None):
    path = tmp_path / "port.jsonl"
    path.write_bytes(raw if raw is not None else "".join(json.dumps(line) + "\n" for line in lines).encode())
    return path


PORT_LINES = {  # case -> (the line's fields replaced (None: removed), the field the refusal names)
    "path missing": ({"path": None}, "'path' is missing"),
    "path a number": ({"path": 3}, "'path' must be a non-empty string, got 3"),
    "path null": ({"path": "<null>"}, "'path' must be a non-empty string, got null"),
    "path empty": ({"path": ""}, "'path' must be a non-empty string"),
    "path a list": ({"path": ["a"]}, "'path' must be a non-empty string"),
    "path_bytes not hex": ({"path_bytes": "zz"}, "'path_bytes' must be the name's bytes in hex"),
    "path_bytes a number": ({"path_bytes": 3}, "'path_bytes' must be the name's bytes in hex"),
    "path_bytes another name": ({"path_bytes": b"x.png".hex()}, "'path_bytes' holds the name 'x.png'"),
    "logits a string": ({"logits": "0123"}, "'logits' must be a non-empty list of numbers, got \"0123\""),
    "logits empty": ({"logits": []}, "'logits' must be a non-empty list of numbers"),
    "logits an object": ({"logits": {"0": 1}}, "'logits' must be a non-empty list"),
    "logits 9 values": ({"logits": LOGITS[:9]}, "'logits' has 9 values; expected 10 (the model's classes)"),
    "logits 11 values": ({"logits": LOGITS + [0]}, "'logits' has 11 values; expected 10"),
    "logits 1000 values": ({"logits": [0.0] * 1000}, "'logits' has 1000 values; expected 10 (the model's classes)"),
    "logits NaN": ({"logits": LOGITS[:3] + [float("nan")] + LOGITS[4:]}, "'logits[3]' is NaN: not a finite float64 (1 of 10 values are not)"),
    "logits Infinity": ({"logits": [float("inf")] + LOGITS[1:]}, "'logits[0]' is Infinity: not a finite"),
    "logits -Infinity": ({"logits": LOGITS[:9] + [float("-inf")]}, "'logits[9]' is -Infinity: not a finite"),
    "logits 1e999": (None, "'logits[0]' is Infinity: not a finite"),
    "logits 10**400": ({"logits": [10**400] + LOGITS[1:]}, "'logits[0]' is 1000000000"),
    "logits a string value": ({"logits": ["1"] + LOGITS[1:]}, "'logits[0]' is \"1\", not a number"),
    "logits a bool": ({"logits": LOGITS[:5] + [True] + LOGITS[6:]}, "'logits[5]' is true, not a number"),
    "logits null value": ({"logits": LOGITS[:2] + ["<null>"] + LOGITS[3:]}, "'logits[2]' is null, not a number"),
    "logits nested": ({"logits": [LOGITS]}, "'logits' has 1 values; expected 10"),
    "logits nested, 10 lists": ({"logits": [[1]] * K}, "'logits[0]' is [1], not a number"),
    "top5 a string": ({"top5": "01234"}, "'top5' must be a list of 1 to 5 class indices, best first, got \"01234\""),
    "top5 six classes": ({"top5": [9, 8, 7, 6, 5, 4]}, "'top5' must be a list of 1 to 5 class indices"),
    "top5 empty": ({"top5": []}, "'top5' must be a list of 1 to 5"),
    "top5 a number": ({"top5": 9}, "'top5' must be a list"),
    "top5 a class twice": ({"top5": [9, 9, 8]}, "'top5' names a class more than once: [9, 9, 8]"),
    "top5 class 10 of 10": ({"top5": [10, 8]}, "'top5[0]' is 10; expected a class index 0–9 (the model has 10 classes)"),
    "top5 class 500": ({"top5": [9, 500]}, "'top5[1]' is 500; expected a class index 0–9"),
    "top5 class -1": ({"top5": [-1]}, "'top5[0]' is -1; expected a class index 0–9"),
    "top5 a float class": ({"top5": [9.0, 8]}, "'top5[0]' must be an integer, got 9.0"),
    "top5 a bool class": ({"top5": [True]}, "'top5[0]' must be an integer, got true"),
    "top5 a string class": ({"top5": ["9"]}, "'top5[0]' must be an integer, got \"9\""),
    "top5 against its logits": ({"top5": [0, 1, 2, 3, 4]}, "'top5' is [0, 1, 2, 3, 4], but the line's logits rank "
                                                          "the classes [9, 8, 7, 6, 5]"),
    "top5_prob without top5": ({"top5_prob": [0.5]}, "'top5_prob' needs the field 'top5'"),
    "top5_prob too short": ({"logits": None, "top5": [9, 8], "top5_prob": [0.9]},
                            "'top5_prob' has 1 values; expected 2 (one per top5 class)"),
    "top5_prob NaN": ({"logits": None, "top5": [9], "top5_prob": [float("nan")]}, "'top5_prob[0]' is NaN"),
    "top5_prob above 1": ({"logits": None, "top5": [9], "top5_prob": [1.5]},
                          "'top5_prob[0]' is 1.5; a probability is in [0, 1]"),
    "top5_prob negative": ({"logits": None, "top5": [9, 8], "top5_prob": [0.9, -0.1]},
                           "'top5_prob[1]' is -0.1; a probability is in [0, 1]"),
    "top5_prob a string": ({"logits": None, "top5": [9], "top5_prob": "0.9"}, "'top5_prob' must be a non-empty list"),
    "no prediction": ({"logits": None, "label": 3}, "a prediction needs the field 'top5' or 'logits'"),
}


def _line(changes):
    line = dict(PORT_LINE)
    for key, value in changes.items():
        if value is None:
            line.pop(key)
        else:
            line[key] = None if value == "<null>" else (
                [None if v == "<null>" else v for v in value] if isinstance(value, list) else value)
    return line


@pytest.mark.parametrize("case", list(PORT_LINES))
def test_a_ports_bad_line_is_refused_with_file_line_and_field(tmp_path, case):
    changes, needle = PORT_LINES[case]
    good = {"path": "0/1003.png", "logits": LOGITS}
    if changes is None:  # 1e999: JSON text Python reads as inf
        path = port_file(tmp_path, raw=(json.dumps(good) + "\n" + json.dumps(PORT_LINE).replace(
            str(LOGITS[0]), "1e999", 1) + "\n").encode())
    else:
        path = port_file(tmp_path, good, _line(changes))
    if needle is None:  # no prediction: the line is not one; the file still holds the other
        assert list(read_predictions(path, num_labels=K)) == ["0/1003.png"]
        counted("verdict")
        return
    with pytest.raises(InputError) as err:
        read_predictions(path, num_labels=K)
    assert str(err.value).startswith(f"{path}: line 2") and needle in str(err.value), str(err.value)
    counted("refused")


UNREADABLE_PORT_FILES = {  # case -> (file bytes, needle)
    "a line cut short in the middle": (b'{"path": "a.png", "logits": [1, 2\n{"path": "b.png", "top5": [1]}\n',
                                       "line 1: not JSON"),
    "the last line cut short": (b'{"path": "a.png", "top5": [1]}\n{"path": "b.png", "top5": [',
                                "the last line, cut short?)"),
    "not UTF-8": (b'{"path": "a\xff.png", "top5": [1]}\n', "line 1: not JSON (not UTF-8)"),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: not JSON (nested too deep)"),
    "a JSON list line": (b"[1, 2]\n", "line 1: not a JSON object with `path` and `logits` or `top5`, got [1, 2]"),
    "a JSON number line": (b"3\n", "line 1: not a JSON object"),
    "a JSON string line": (b'"a.png"\n', "line 1: not a JSON object"),
    "a null line": (b"null\n", "line 1: not a JSON object"),
    "a path twice": (b'{"path": "a.png", "top5": [1]}\n{"path": "a.png", "top5": [2]}\n',
                     "line 2: field 'path' 'a.png' appears twice"),
    "empty": (b"", "holds no predictions"),
    "only blank lines": (b"\n\n  \n", "holds no predictions"),
    "only a port header": (b'{"format": "myport", "version": 3}\n', "holds no predictions"),
    "only error lines": (b'{"path": "a.png", "error": "cannot decode"}\n', "holds no predictions"),
    "an npformer header of another version": (b'{"format": "npformer-evaluate", "format_version": 2}\n',
                                              "line 1: format_version 2; this npformer reads format_version 1"),
}


@pytest.mark.parametrize("case", list(UNREADABLE_PORT_FILES))
def test_a_port_file_that_is_no_predictions_is_refused(tmp_path, case):
    data, needle = UNREADABLE_PORT_FILES[case]
    path = port_file(tmp_path, raw=data)
    with pytest.raises(InputError) as err:
        read_predictions(path, num_labels=K)
    assert str(err.value).startswith(str(path)) and needle in str(err.value), str(err.value)
    counted("refused")


def test_what_a_port_file_may_hold(tmp_path):
    """Blank lines, the port's own header, extra fields, a last line without its newline, a
    top-1 only, logits given as integers and JSON's \\udcXX escape of a non-UTF-8 name: all read exactly."""
    raw = (b'{"model": "my port", "classes": 10}\n\n'
           b'{"path": "a.png", "top5": [3], "time_ms": 4.5}\n'
           + json.dumps({"path": "b.png", "logits": list(range(K))}).encode() + b"\n"
           + json.dumps({"path": "caf\udce9.png", "top5": [1, 2]}).encode() + b"\n"
           b'{"path": "d.png", "top5": [9, 8, 7, 6, 5], "top5_prob": [0.5, 0.2, 0.1, 0.1, 0.05]}')
    got = read_predictions(port_file(tmp_path, raw=raw), num_labels=K)
    assert list(got) == ["a.png", "b.png", "caf\udce9.png", "d.png"]
    assert got["a.png"].top5 == (3,) and got["b.png"].top5 == (9, 8, 7, 6, 5)
    assert got["b.png"].logits.tolist() == list(range(K)) and got["d.png"].top5_prob[4] == 0.05
    counted("verdict")


def _own_results(tmp_path):
    out = tmp_path / "own.jsonl"
    evaluate(FOLDER, EF, output=out, batch_size=4, limit=8, logits=True, workers=1)
    return out


OWN_RECORDS = {  # case -> (line 3's fields replaced (None: removed), needle)
    "index a string": ({"index": "1"}, "field 'index' must be an integer, got \"1\""),
    "index negative": ({"index": -1}, "field 'index' is -1; expected ≥ 0"),
    "index a float": ({"index": 1.0}, "field 'index' must be an integer, got 1.0"),
    "index a bool": ({"index": True}, "field 'index' must be an integer, got true"),
    "index out of order": ({"index": 5}, "field 'index' is 5; expected 1 (records are written in dataset order"),
    "index missing": ({"index": None}, "field 'index' is missing"),
    "label 10 of 10": ({"label": 10}, "field 'label' is 10; expected a class index 0–9"),
    "label negative": ({"label": -1}, "field 'label' is -1"),
    "label a string": ({"label": "0"}, "field 'label' must be an integer, got \"0\""),
    "label a float": ({"label": 0.0}, "field 'label' must be an integer"),
    "label missing": ({"label": None}, "field 'label' is missing"),
    "top5 four classes": ({"top5": [0, 1, 2, 3]}, "field 'top5' must be a list of 5 class indices"),
    "an unknown field": ({"score": 1}, "field 'score' is not a field of an npformer evaluate record"),
    "an error with a prediction": ({"error": "broken"}, "field 'top5' is not allowed in an error record"),
    "an error not a string": ({"error": 3, "top5": None, "top5_prob": None, "logits": None},
                              "field 'error' must be a string, got 3"),
    "a reference not an object": ({"reference": [1]}, "line 3, reference: must be a JSON object"),
    "a reference without its diffs": ({"reference": {"top5": [0, 1, 2, 3, 4]}},
                                      "reference: field 'max_abs_logit_diff' must be a finite number >= 0, got null"),
    "a reference with a NaN diff": ({"reference": {"top5": [0, 1, 2, 3, 4], "max_abs_logit_diff": float("nan"),
                                                   "max_abs_prob_diff": 0}}, "'max_abs_logit_diff' must be a finite"),
    "a reference with a negative diff": ({"reference": {"top5": [0, 1, 2, 3, 4], "max_abs_logit_diff": 0,
                                                        "max_abs_prob_diff": -1}}, "'max_abs_prob_diff' must be a finite"),
    "a reference with an unknown field": ({"reference": {"top5": [0], "x": 1}}, "field 'x' is not a field of a reference"),
    "a path twice": ({"path": "<first>"}, "field 'path' '0/1002.png' appears twice"),
    "a line not an object": ("[1]", "not an npformer evaluate record (a JSON object), got [1]"),
    "a blank line": ("", "a blank line in an npformer evaluate results file"),
}


@pytest.fixture(scope="module")
def own_lines(tmp_path_factory):
    return _own_results(tmp_path_factory.mktemp("own")).read_text().splitlines()


@pytest.mark.parametrize("case", list(OWN_RECORDS))
def test_a_bad_record_of_npformers_own_file_is_refused(tmp_path, own_lines, case):
    changes, needle = OWN_RECORDS[case]
    lines = list(own_lines)
    if isinstance(changes, str):
        lines[2] = changes
    else:
        record = json.loads(lines[2])
        for key, value in changes.items():
            if value is None:
                record.pop(key, None)
            else:
                record[key] = json.loads(lines[1])["path"] if value == "<first>" else value
        lines[2] = json.dumps(record)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    reads = [lambda: read_results(path, num_labels=K), lambda: read_predictions(path, num_labels=K)]
    for read in reads[:1] if case == "index out of order" else reads:  # a port's file has no index order
        with pytest.raises(InputError) as err:
            read()
        assert str(err.value).startswith(f"{path}: line 3") and needle in str(err.value), str(err.value)
    counted("refused")


# ---------------------------------------------------------------------------------------------
# evaluate --compare: the examples of the issue, end to end


@pytest.fixture()
def no_batch_runs(monkeypatch):
    def run_batch(*args, **kwargs):
        raise AssertionError("the dataset ran before the --compare / --resume file was checked")

    monkeypatch.setattr(run_module, "run_batch", run_batch)


@pytest.fixture(scope="module")
def first_eight():
    return evaluate(FOLDER, EF, limit=8, logits=True, workers=1).records


def _ports_for_the_first_images(tmp_path, records, edit):
    lines = [{"path": r.path, "logits": r.prediction.logits.astype(float).tolist()} for r in records]
    edit(lines)
    return port_file(tmp_path, *lines)


@pytest.mark.parametrize("case,edit,needle", [
    ("a NaN logit", lambda ls: ls[3]["logits"].__setitem__(2, float("nan")), "line 4: field 'logits[2]' is NaN: "),
    ("1000 logits for 10 classes", lambda ls: ls[0].__setitem__("logits", [0.0] * 1000),
     "line 1: field 'logits' has 1000 values; expected 10 (the model's classes)"),
    ("top5 as a string", lambda ls: ls[5].update(top5="01234", logits=None) or ls[5].pop("logits"),
     "line 6: field 'top5' must be a list of 1 to 5 class indices, best first, got \"01234\""),
])
def test_why_evaluate_compare_refuses_a_bad_port_before_the_run(tmp_path, capsys, first_eight, no_batch_runs, case,
                                                                 edit, needle):
    port = _ports_for_the_first_images(tmp_path, first_eight, edit)
    code = cli.main(["evaluate", str(FOLDER), "--limit", "8", "--compare", str(port)])
    out, err = capsys.readouterr()
    assert code == 7 and out == "" and err.startswith(f"npformer: error: {port}: {needle}") and err.count("\n") == 1
    counted("refused")


def test_why_compare_with_a_missing_file_is_refused_at_once(tmp_path, capsys, no_batch_runs):
    code = cli.main(["evaluate", str(FOLDER), "--compare", str(tmp_path / "missing.jsonl")])
    assert code == 7 and capsys.readouterr().err == f"npformer: error: {tmp_path / 'missing.jsonl'}: no such file to compare with\n"
    counted("refused")


def test_why_a_bad_resume_file_is_refused_before_the_run(tmp_path, own_lines, capsys, no_batch_runs):
    out = tmp_path / "r.jsonl"
    record = json.loads(own_lines[1])
    record["top5"] = "01234"
    out.write_text("\n".join([own_lines[0], json.dumps(record), *own_lines[2:]]) + "\n")
    code = cli.main(["evaluate", str(FOLDER), "--limit", "8", "--batch-size", "4", "--logits", "--output", str(out),
                     "--resume"])
    err = capsys.readouterr().err
    assert code == 7 and f"{out}: line 2: field 'top5' must be a list of 5 class indices" in err
    counted("refused")


# ---------------------------------------------------------------------------------------------
# datasets: every file a class folder lists is accounted for


def small_folder(tmp_path, per_class=2):
    data = tmp_path / "data"
    for c in range(10):
        (data / str(c)).mkdir(parents=True)
        for image in sorted((FOLDER / str(c)).iterdir())[:per_class]:
            shutil.copy(image, data / str(c) / image.name)
    return data


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


ENTRIES = {  # case -> (make the entry in class 3, error record text (None: no item), describe() text)
    "a dangling symbolic link": (lambda p: os.symlink("nowhere.png", p / "gone.png"),
                                 "a symbolic link to 'nowhere.png' that cannot be followed (No such file or directory)",
                                 "21 images"),
    "a symbolic link loop": (lambda p: os.symlink("loop.png", p / "loop.png"),
                             "a symbolic link to 'loop.png' that cannot be followed (Too many levels of symbolic links)",
                             "21 images"),
    "a FIFO named like an image": (lambda p: _fifo(p / "pipe.png"), "a FIFO, not an image file", "21 images"),
    "a socket named like an image": (lambda p: _socket(p / "sock.png"), "a socket, not an image file", "21 images"),
    "text named like an image": (lambda p: (p / "text.png").write_text("hello"),
                                 "not an image file Pillow can identify", "21 images"),
    "an empty file": (lambda p: (p / "empty.jpg").write_bytes(b""), "not an image file Pillow can identify",
                      "21 images"),
    "a non-image name": (lambda p: (p / "notes.txt").write_text("x"), None, "1 non-image files ignored"),
    "a link to a folder": (lambda p: os.symlink(FOLDER / "3", p / "more"), None, "1 non-image files ignored"),
    "a hidden file": (lambda p: (p / ".DS_Store").write_bytes(b"\0"), None, "1 hidden files or folders skipped"),
    "a hidden folder of images": (lambda p: shutil.copytree(FOLDER / "4", p / ".thumbs"), None,
                                  "1 hidden files or folders skipped"),
    "a folder named like an image": (lambda p: (p / "dir.png").mkdir(), None, "20 images"),
    "an image in a subfolder": (lambda p: (p / "sub").mkdir() or shutil.copy(FOLDER / "3" / "705.png", p / "sub"),
                                None, "21 images"),
    "a file beside the class folders": (lambda p: shutil.copy(FOLDER / "3" / "705.png", p.parent / "stray.png"), None,
                                        "1 files beside the class folders ignored"),
    "an empty class folder": (lambda p: [f.unlink() for f in p.glob("*.png")] and None, None,
                              "1 class folders hold no image (3)"),
}


@pytest.mark.parametrize("case", list(ENTRIES))
def test_every_entry_of_a_class_folder_is_accounted_for(tmp_path, case):
    data = small_folder(tmp_path)
    make, error, described = ENTRIES[case]
    kept = make(data / "3")
    try:
        result = evaluate(data, EF, workers=1)
    finally:
        if isinstance(kept, socket.socket):
            kept.close()
    assert described in result.dataset.describe(), result.dataset.describe()
    errors = [(r.path, r.error) for r in result.errors]
    if error is None:
        images = {"20 images": 20, "21 images": 21}.get(described, 18 if "hold no image" in described else 20)
        assert errors == [] and len(result.records) == len(result.scored) == images
    else:
        assert len(errors) == 1 and errors[0][1].endswith(error), errors
        assert len(result.records) == 21 and len(result.scored) == 20  # in the count, not in the accuracies
    counted("verdict")


def test_why_a_file_name_that_is_not_utf8_round_trips(tmp_path, capsys):
    data = small_folder(tmp_path, per_class=1)
    name = os.fsdecode(b"caf\xe9.png")
    shutil.copy(FOLDER / "3" / "705.png", data / "3" / name)
    out = tmp_path / "r.jsonl"
    first = evaluate(data, EF, output=out, batch_size=4, workers=1, logits=True)
    line = next(json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()[1:] if "caf" in l)
    assert line["path"] == "3/caf\\xe9.png" and line["path_bytes"] == b"3/caf\xe9.png".hex()
    _, back, _ = read_results(out, num_labels=K)
    assert [r.path for r in back] == [r.path for r in first.records] and f"3/{name}" in [r.path for r in back]
    again = evaluate(data, EF, output=out, batch_size=4, workers=1, logits=True, resume=True)  # --resume
    assert again.computed == 0 and len(again.records) == 11
    compared = evaluate(data, EF, workers=1, compare=out).agreements[0]  # --compare
    assert (compared.images, compared.top1_agree, compared.only_ours, compared.only_theirs) == (11, 11, 0, 0)
    assert cli.main(["evaluate", str(data), "--compare", str(out)]) == 0  # and the report prints it
    capsys.readouterr()
    counted("verdict")


def test_the_corpus_counts():
    """The corpus of this file, case by case (each test above counts its outcome in OUTCOMES too)."""
    cases = {"compare: why": 2, "compare: NaN / inf": len(NONFINITE), "compare: shapes and dtypes": len(SHAPES_AND_DTYPES),
             "compare: missing tensors, no order, swapped, other pixels": 5, "compare: refused files": len(REFUSED_FILES),
             "compare: tolerances": 4, "port lines": len(PORT_LINES), "port files": len(UNREADABLE_PORT_FILES) + 1,
             "own records": len(OWN_RECORDS), "evaluate --compare / --resume before the run": 5,
             "class folder entries": len(ENTRIES), "non-UTF-8 names": 1}
    assert sum(cases.values()) >= 100, cases
    print(f"\nverdicts corpus: {sum(cases.values())} cases: {cases}")
