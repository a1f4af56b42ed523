"""The exercise notebooks (notebooks/exercises/, nbgrader format): each .ipynb is in step with its
py:percent source and each student version with its solution; the solution notebooks execute with
every check passing; the student notebooks execute with every check saying "not implemented yet"
and no traceback, and score 0 once their hidden tests are put back, as nbgrader's autograde does.
With nbgrader installed (the `course` extra), nbgrader's own generate_assignment must produce the
committed student versions and its autograde must give the stubs 0 points and the solutions all.

Needs the `notebooks` extra (jupytext, nbclient, ipykernel); without it these tests skip, except
under NPFORMER_REQUIRE_NOTEBOOKS=1 (CI's second tier). The nbgrader tests skip without the `course`
extra, except under NPFORMER_REQUIRE_COURSE=1 (CI's second tier too). Regenerate with
`python notebooks/build.py exercises`.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from extras import need

from npformer.exercises import names, student

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "notebooks" / "exercises"
NAMES = ["01_convolution_and_batchnorm", "02_pooling_gelu_layernorm", "03_attention", "04_blocks_and_the_whole_model"]


def load_build():
    spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grade_outputs(notebook) -> dict:
    """{exercise name: the text its check cell printed} of an executed notebook."""
    found = {}
    for cell in notebook["cells"]:
        meta = student.grading(cell)
        if meta.get("grade"):
            found[meta["grade_id"].removeprefix("check_")] = "".join("".join(o.get("text", "")) for o in cell["outputs"])
    return found


def errors(notebook) -> list:
    return [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c["outputs"] if o["output_type"] == "error"]


def test_build_finds_the_exercises_beside_the_teaching_notebooks():
    build = load_build()
    assert [p.stem for p in build.exercise_sources()] == NAMES
    assert [p.stem for p in build.exercise_sources(["exercises/03"])] == ["03_attention"]
    assert build.exercise_sources(["02"]) == [] and all(p.parent.name == "notebooks" for p in build.sources())
    assert sorted(p.stem for p in EXERCISES.glob("*.ipynb")) == NAMES
    assert sorted(p.stem for p in (EXERCISES / "student").glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_and_student_version_in_step_with_the_source(name):
    need("jupytext")
    build = load_build()
    source = EXERCISES / f"{name}.py"
    assert build.out_of_step(source) is None, "re-run `python notebooks/build.py exercises`"
    assert build.student_out_of_step(source) is None, "re-run `python notebooks/build.py exercises`"


@pytest.mark.parametrize("name", NAMES)
def test_exercise_notebooks_say_what_you_do_learn_need(name):
    text = (EXERCISES / f"{name}.py").read_text()
    for heading in ("What you'll do", "What you'll learn", "What you'll need"):
        assert heading in text


@pytest.mark.heavy
@pytest.mark.kernels
@pytest.mark.parametrize("name", NAMES)
def test_solution_executes_with_every_check_passing(name, tmp_path):
    need("jupytext", "nbclient", "ipykernel")
    import nbformat

    build = load_build()
    notebook = build.read_source(EXERCISES / f"{name}.py")
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import sys\nassert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\nprint('torch-free')"))
    build.execute(notebook, cwd=EXERCISES)
    assert errors(notebook) == []
    verdicts = grade_outputs(notebook)
    assert verdicts and all(text.startswith(f"{n}: passed ✓") for n, text in verdicts.items()), verdicts
    assert notebook.cells[-1].outputs[0]["text"].strip() == "torch-free"
    earned, possible = student.score(notebook)
    assert earned == possible > 0


@pytest.mark.heavy
@pytest.mark.kernels
@pytest.mark.parametrize("name", NAMES)
def test_student_version_executes_with_every_check_not_implemented_yet(name):
    """The committed student notebook runs top to bottom: every check prints "not implemented yet",
    nothing raises, no traceback. With the hidden tests put back (nbgrader's autograde) it scores 0."""
    need("nbclient", "ipykernel", "nbformat")
    import nbformat

    build = load_build()
    path = EXERCISES / "student" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    build.execute(notebook, cwd=EXERCISES)
    assert errors(notebook) == []
    verdicts = grade_outputs(notebook)
    assert verdicts and all(text.startswith(f"{n}: not implemented yet") for n, text in verdicts.items()), verdicts
    printed = json.dumps([c.get("outputs", []) for c in notebook["cells"]])
    assert "Traceback" not in printed and "NotImplementedError:" not in printed

    solution = student.read_notebook(EXERCISES / f"{name}.ipynb")
    graded = nbformat.from_dict(student.restore_grade_cells(nbformat.read(path, as_version=4), solution))
    from nbclient import NotebookClient

    NotebookClient(graded, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(EXERCISES)}}).execute()
    earned, possible = student.score(graded)
    assert earned == 0 and possible == sum(student.grading(c).get("points", 0) for c in solution["cells"])
    assert {e["ename"] for e in errors(graded)} == {"AssertionError"}


def test_every_exercise_is_in_a_notebook():
    in_notebooks = [n for name in NAMES for n in grade_outputs(student.read_notebook(EXERCISES / f"{name}.ipynb"))]
    assert in_notebooks == names()


# ---------------------------------------------------------------------------------------------
# nbgrader itself (the `course` extra)


def nbgrader(*args, cwd):
    """Run the nbgrader command of this Python (its bin/ first on PATH: nbgrader calls `alembic`)."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--CourseDirectory.root=."], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def comparable(cell) -> tuple:
    """A cell without what only nbgrader writes (checksums, the cell type it records)."""
    meta = json.loads(json.dumps(cell["metadata"]))
    for key in ("checksum", "cell_type"):
        meta.get("nbgrader", {}).pop(key, None)
    return cell["cell_type"], student.source_of(cell), meta, cell.get("outputs"), cell.get("execution_count")


@pytest.mark.heavy
@pytest.mark.kernels
def test_nbgrader_generates_the_committed_student_versions_and_autogrades_them(tmp_path):
    need("nbgrader", extra="course", switch="NPFORMER_REQUIRE_COURSE")
    course = tmp_path / "course"
    (course / "source" / "exercises").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(EXERCISES / f"{name}.ipynb", course / "source" / "exercises")
    nbgrader("generate_assignment", "exercises", "--force", cwd=course)
    for name in NAMES:
        theirs = student.read_notebook(course / "release" / "exercises" / f"{name}.ipynb")
        ours = student.read_notebook(EXERCISES / "student" / f"{name}.ipynb")
        assert [comparable(c) for c in theirs["cells"]] == [comparable(c) for c in ours["cells"]], name
        assert theirs["metadata"] == ours["metadata"]

    # autograde: one student hands in the stubs untouched, another the solutions
    for who, folder in (("stub", course / "release" / "exercises"), ("solved", EXERCISES)):
        nbgrader("db", "student", "add", who, cwd=course)
        (course / "submitted" / who / "exercises").mkdir(parents=True)
        for name in NAMES:
            shutil.copy(folder / f"{name}.ipynb", course / "submitted" / who / "exercises")
    nbgrader("autograde", "exercises", "--force", cwd=course)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {who: (gradebook.find_submission("exercises", who).score, gradebook.find_submission("exercises", who).max_score)
                  for who in ("stub", "solved")}
    possible = sum(student.grading(c).get("points", 0) for name in NAMES
                   for c in student.read_notebook(EXERCISES / f"{name}.ipynb")["cells"])
    assert scores == {"stub": (0.0, possible), "solved": (possible, possible)}
