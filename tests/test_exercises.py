"""npformer.exercises: the checker names each catalogued mistake, passes npformer's own functions,
reports stubs, exceptions, shapes, dtypes and wrong values in plain words, and never raises for a
learner's bug; the student notebooks are what the solution notebooks give. Torch-free, and no
notebooks extra needed (the committed .ipynb files are read as JSON)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npformer import layers
from npformer.errors import InputError
from npformer.exercises import EXERCISES, check, exercise, names
from npformer.exercises import assemble, attention, student
from npformer.exercises.checker import describe

ROOT = Path(__file__).resolve().parent.parent
EXERCISE_NOTEBOOKS = ROOT / "notebooks" / "exercises"
MISTAKES = [(name, m) for name, ex in EXERCISES.items() for m in ex.mistakes]


def test_the_course_has_at_least_ten_exercises_each_with_two_mistakes():
    assert names()[:2] == ["conv2d_naive", "conv2d"] and names()[-1] == "efficientformer"
    assert len(names()) >= 10
    assert {name: len(ex.mistakes) for name, ex in EXERCISES.items() if len(ex.mistakes) < 2} == {}
    # the building blocks the issue lists, V2's talking heads included
    for name in ("batch_norm", "fold_after", "pool_mixer", "gelu", "layer_norm", "multi_head_attention", "meta4d_block",
                 "meta3d_block", "additive_attention", "talking_heads_attention"):
        assert name in EXERCISES
    for ex in EXERCISES.values():
        keys = [m.key for m in ex.mistakes]
        assert len(set(keys)) == len(keys), ex.name  # a diagnosis names one mistake


@pytest.mark.parametrize("name", names())
def test_npformer_reference_passes(name):
    result = check(name, exercise(name).reference, quiet=True)
    assert result.passed and result.status == "passed" and result.diagnosis is None
    assert result.max_abs_error == 0.0
    assert result.cases >= 3 and result.verdict.startswith(f"{name}: passed")


@pytest.mark.parametrize("name", names())
def test_cases_cover_float32_float64_and_batches(name):
    cases = exercise(name).cases()
    text = " ".join(c.label for c in cases)
    assert "float32" in text and "float64" in text


@pytest.mark.parametrize("name, mistake", MISTAKES, ids=[f"{n}: {m.key}" for n, m in MISTAKES])
def test_each_catalogued_mistake_gets_its_diagnosis(name, mistake):
    result = check(name, mistake.fn, quiet=True)
    assert not result.passed and result.status == "mistake"
    assert result.mistake == mistake.key and result.diagnosis == mistake.diagnosis
    assert mistake.diagnosis in result.verdict


def test_the_issues_example_sentences():
    def diagnosis(name, key):
        return next(m.diagnosis for m in exercise(name).mistakes if m.key == key)

    assert diagnosis("pool_mixer", "count_include_pad").startswith("your border divides by the full window, k² (9 for 3×3): "
                                                                   "that is count_include_pad=True")
    assert diagnosis("gelu", "tanh approximation").startswith("this is the tanh approximation of GELU")
    assert diagnosis("multi_head_attention", "qkv as q|k|v blocks").startswith("q, k and v taken as three blocks")
    swiftformer_v1 = diagnosis("additive_attention", "softmax over tokens")  # v1's softmax over an axis of size 1
    assert swiftformer_v1.startswith("softmax over the wrong axis") and "every weight is exactly 1" in swiftformer_v1


def test_variants_with_nothing_changed_are_the_reference():
    """The mistakes are npformer's code with one switch flipped: unswitched, each re-assembly gives
    the reference exactly (so a mistake differs from it by that switch alone)."""
    for name, variant in (("multi_head_attention", attention.variant()), ("additive_attention", attention.additive()),
                          ("talking_heads_attention", attention.talking()), ("meta4d_block", assemble.meta4d()),
                          ("meta3d_block", assemble.meta3d()), ("efficientformer", assemble.forward())):
        ex = exercise(name)
        for case in ex.cases():
            want, got = ex.reference(*case.args), variant(*case.args)
            for a, b in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
                np.testing.assert_allclose(b, a, rtol=1e-5 if a.dtype == np.float32 else 1e-12, atol=1e-6, err_msg=name)


def test_the_model_exercise_runs_on_the_demo_weights_at_112_px():
    cfg, weights, source = assemble.demo_weights()
    assert source == "demo weights" and cfg.num_labels == 10 and len(weights) == 121
    cases = exercise("efficientformer").cases()
    assert [c.args[0].shape for c in cases] == [(1, 3, 112, 112), (2, 3, 112, 112), (1, 3, 112, 112)]
    result = check("efficientformer", assemble.forward(heads=("head",)), quiet=True)
    lines = result.verdict.splitlines()
    assert lines[1].strip().startswith("logits of image 0") and lines[2].split()[0] == "npformer"
    assert len(lines[2].split()) == 11 and lines[3].split()[0] == "yours"  # the 10 logits, side by side


# ---------------------------------------------------------------------------------------------
# a learner's bugs, in plain words


def stub(x, kernel_size=3):
    # YOUR CODE HERE
    raise NotImplementedError()


def test_a_stub_is_not_implemented_yet_without_a_traceback(capsys):
    result = check("pool_mixer", stub)
    printed = capsys.readouterr().out
    assert not result.passed and result.status == "not implemented" and result.diagnosis == "not implemented yet"
    assert result.max_abs_error is None
    assert printed.startswith("pool_mixer: not implemented yet") and "Traceback" not in printed


def test_a_stub_called_by_the_function_is_named():
    def meta4d_block(x, weights, cfg):
        raise NotImplementedError()

    def forward(pixel_values, weights, cfg):
        return meta4d_block(pixel_values, weights, cfg)

    result = check("efficientformer", forward, quiet=True)
    assert result.status == "not implemented" and "(meta4d_block, which it calls, still raises" in result.verdict


def test_an_exception_is_named_with_its_case_and_line():
    def conv(x, weight, bias=None, stride=1, padding=0, groups=1):
        out = np.zeros((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]), x.dtype)
        out[0, 0, 0, 0] = x[0, 0, x.shape[2], 0]  # one row too far
        return out

    result = check("conv2d_naive", conv, quiet=True)
    assert result.status == "error" and not result.passed
    assert result.diagnosis.startswith("your function raised IndexError: index 5 is out of bounds for axis 2 with size 5")
    assert "x [2, 3, 5, 7] float32, weight [4, 3, 3, 3] float32, bias [4] float32, stride=1, padding=1, groups=1" in result.diagnosis
    assert "of conv: `out[0, 0, 0, 0] = x[0, 0, x.shape[2], 0]  # one row too far`" in result.diagnosis


def test_a_wrong_signature_names_the_expected_one():
    result = check("layer_norm", lambda x, weight, bias: x, quiet=True)
    assert result.status == "error" and "TypeError" in result.diagnosis
    assert "It must take the reference's arguments: layer_norm(x, weight, bias, eps)" in result.diagnosis


def test_a_wrong_dtype_is_said_in_plain_words():
    result = check("gelu", lambda x: layers.gelu(x).astype(np.float64), quiet=True)
    assert result.status == "dtype"
    assert result.diagnosis.startswith("your output is float64 for float32 inputs")
    assert result.max_abs_error < 1e-6  # the values themselves are right


def test_a_wrong_shape_is_said_in_plain_words():
    result = check("pool_mixer", lambda x, kernel_size=3: layers.pool_mixer(x, kernel_size)[:, :, 1:-1, 1:-1], quiet=True)
    assert result.status == "shape"
    assert result.diagnosis.startswith("output has shape [2, 3, 3, 5], expected [2, 3, 5, 7], on case '3×3 window")


def test_a_missing_return_and_a_missing_output():
    assert "did you forget to `return`" in check("erf", lambda x: None, quiet=True).diagnosis
    result = check("multi_head_attention", lambda *args: layers.multi_head_attention(*args)[0], quiet=True)
    assert result.status == "output" and "returned one value; expected 2 arrays: (out, probs)" in result.diagnosis
    result = check("gelu", layers.gelu(np.zeros(3, np.float32)), quiet=True)
    assert result.status == "output" and "write check('gelu', gelu), without calling it" in result.diagnosis


def test_wrong_values_no_mistake_explains_give_the_first_wrong_index():
    def off_by_a_bit(x, weight, bias, eps):
        y = layers.layer_norm(x, weight, bias, eps)
        y[..., 3] += 0.01
        return y

    result = check("layer_norm", off_by_a_bit, quiet=True)
    assert result.status == "values" and result.mistake is None
    assert "10 of 80 values of output are off (max abs error 0.01); the first at output[0, 0, 3]" in result.diagnosis
    assert "It matches none of the 4 mistakes npformer knows for layer_norm." in result.diagnosis
    assert result.max_abs_error == pytest.approx(0.01, rel=1e-4)


def test_wrong_values_only_on_the_border_say_so():
    def corners_divide_by_five(x, kernel_size=3):
        y = layers.pool_mixer(x, kernel_size)
        y[..., 0, 0] = (layers.avg_pool2d(x, kernel_size) * 0.8)[..., 0, 0] - x[..., 0, 0]
        return y

    result = check("pool_mixer", corners_divide_by_five, quiet=True)
    assert result.status == "values" and "Every wrong value lies on the image border" in result.diagnosis


def test_a_function_that_writes_into_its_input_fails():
    def in_place(x, weight, bias, eps):
        x -= x.mean(axis=-1, keepdims=True)
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight + bias

    result = check("layer_norm", in_place, quiet=True)
    assert result.status == "mutated" and result.max_abs_error < 1e-5
    assert result.diagnosis.startswith("your function changed its input x in place")


def test_loops_fail_the_vectorised_convolution_but_pass_the_loop_exercise():
    assert check("conv2d_naive", layers.conv2d_naive, quiet=True).passed
    result = check("conv2d", layers.conv2d_naive, quiet=True)
    assert result.status == "slow" and not result.passed and result.max_abs_error < 1e-5
    assert "this exercise wants the loops replaced by NumPy operations" in result.diagnosis


def test_a_mistake_with_the_wrong_dtype_gets_both():
    result = check("gelu", lambda x: layers.gelu_tanh(x).astype(np.float64), quiet=True)
    assert result.status == "mistake" and result.mistake == "tanh approximation"
    assert "Also: your output is float64 for float32 inputs" in result.diagnosis


def test_an_unknown_exercise_is_an_input_error():
    with pytest.raises(InputError, match="no exercise called 'conv3d'; there are: conv2d_naive, conv2d"):
        check("conv3d", layers.conv2d)


def test_describe_names_every_argument():
    case = exercise("talking_heads_attention").cases()[-1]
    text = describe(exercise("talking_heads_attention"), case.args)
    assert text == ("q [1, 2, 4, 4] float32, k [1, 2, 9, 4] float32, v [1, 2, 9, 3] float32, bias [2, 4, 9] float32, "
                    "talking_head1=None, talking_head2=None")


def test_importing_the_exercises_needs_neither_matplotlib_nor_torch():
    code = ("import sys, npformer.exercises; from npformer.exercises import check; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'jupytext', 'nbformat') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# student versions (nbgrader's generate_assignment, without nbgrader)


def code_cell(source, **nbgrader):
    meta = {"nbgrader": {"grade": False, "solution": False, "locked": False, "schema_version": 3, **nbgrader}} if nbgrader else {}
    return {"cell_type": "code", "execution_count": 3, "metadata": meta, "outputs": [{"output_type": "stream", "text": "x"}],
            "source": source}


def test_student_version_replaces_solutions_removes_hidden_tests_and_clears_outputs():
    notebook = {"cells": [
        code_cell("def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n",
                  solution=True, grade_id="f"),
        code_cell("r = check('f', f)\n### BEGIN HIDDEN TESTS\nassert r.passed\n### END HIDDEN TESTS",
                  grade=True, locked=True, grade_id="check_f", points=1),
        code_cell("answer = 42", solution=True, grade_id="whole"),
        code_cell("import numpy", locked=True, grade_id="setup"),
        {"cell_type": "markdown", "metadata": {}, "source": ["plain ", "text"]},
    ], "metadata": {"celltoolbar": "Create Assignment"}, "nbformat": 4, "nbformat_minor": 5}
    out = student.student_version(notebook)
    sources = [student.source_of(c) for c in out["cells"]]
    assert sources[0] == 'def f(x):\n    """doc"""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
    assert sources[1] == "r = check('f', f)"
    assert sources[2] == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert sources[3:] == ["import numpy", "plain text"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in out["cells"] if c["cell_type"] == "code")
    assert [(c["metadata"].get("deletable"), c["metadata"].get("editable")) for c in out["cells"]] == \
        [(False, None), (False, False), (False, None), (False, False), (None, None)]
    assert "celltoolbar" not in out["metadata"] and notebook["cells"][0]["outputs"]  # the input is left alone


@pytest.mark.parametrize("cells, message", [
    ([code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")], "a solution region in a cell that is not a solution cell"),
    ([code_cell("### BEGIN SOLUTION\nx = 1", solution=True, grade_id="a")], "'BEGIN SOLUTION' without its 'END SOLUTION'"),
    ([code_cell("### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS", locked=True, grade_id="a")], "hidden tests in a cell"),
    ([code_cell("1", solution=True, grade_id="a"), code_cell("2", solution=True, grade_id="a")], "grade_id 'a' is used twice"),
    ([code_cell("1", grade=True, grade_id="g")], "a grade cell needs points"),
])
def test_student_version_refuses_what_nbgrader_refuses(cells, message):
    with pytest.raises(InputError, match=message):
        student.student_version({"cells": cells, "metadata": {}})


def exercise_notebooks():
    return sorted(EXERCISE_NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_four_exercise_notebooks_with_every_exercise_checked_once():
    assert [p.stem for p in exercise_notebooks()] == ["01_convolution_and_batchnorm", "02_pooling_gelu_layernorm",
                                                      "03_attention", "04_blocks_and_the_whole_model"]
    checked = []
    for path in exercise_notebooks():
        notebook = student.read_notebook(path)
        assert student.metadata_problems(notebook) == []
        for cell in notebook["cells"]:
            meta = student.grading(cell)
            if meta.get("grade"):
                source = student.source_of(cell)
                name = source.split('"')[1]
                assert source.startswith(f'result = check("{name}", {name})\n### BEGIN HIDDEN TESTS\n'), source
                assert "assert result.passed" in source and meta["grade_id"] == f"check_{name}" and meta["locked"]
                checked.append(name)
            if meta.get("solution"):
                assert "### BEGIN SOLUTION" in student.source_of(cell) and meta["grade_id"] in EXERCISES
    assert checked == names()


@pytest.mark.parametrize("path", exercise_notebooks(), ids=lambda p: p.stem)
def test_committed_student_version_is_generated_from_the_solution(path):
    """What `python notebooks/build.py exercises` writes; regenerate with it."""
    committed = json.loads((EXERCISE_NOTEBOOKS / "student" / path.name).read_text())
    generated = student.student_version(student.read_notebook(path), path.name)
    assert committed == json.loads(json.dumps(generated))
    text = json.dumps(committed)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "assert result.passed" not in text


@pytest.mark.parametrize("path", exercise_notebooks(), ids=lambda p: p.stem)
def test_committed_solution_was_executed_and_every_check_passed(path):
    notebook = student.read_notebook(path)
    for cell in notebook["cells"]:
        if student.grading(cell).get("grade"):
            text = "".join("".join(o.get("text", "")) for o in cell["outputs"])
            assert f"{student.grading(cell)['grade_id'][len('check_'):]}: passed ✓" in text, text
        if cell["cell_type"] == "code":
            assert not [o for o in cell["outputs"] if o["output_type"] == "error"]


def test_restore_grade_cells_and_score_as_autograde_does():
    solution = student.read_notebook(exercise_notebooks()[0])
    submission = student.student_version(solution)
    restored = student.restore_grade_cells(submission, solution)
    grade = [c for c in restored["cells"] if student.grading(c).get("grade")]
    assert all("assert result.passed" in student.source_of(c) for c in grade)
    assert student.score(solution) == (4.0, 4.0)
    grade[0]["outputs"] = [{"output_type": "error", "ename": "AssertionError", "evalue": "", "traceback": []}]
    assert student.score(restored) == (3.0, 4.0)


def test_the_student_command_writes_the_student_versions(tmp_path, capsys):
    assert student.main([str(exercise_notebooks()[1]), "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / exercise_notebooks()[1].name).read_text())
    assert written == json.loads((EXERCISE_NOTEBOOKS / "student" / exercise_notebooks()[1].name).read_text())
    (tmp_path / "bad.ipynb").write_text("{")
    assert student.main([str(tmp_path / "bad.ipynb"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read it as a notebook" in capsys.readouterr().err
