"""Re-sync and re-execute the teaching notebooks.

    python notebooks/build.py                 # every NN_*.py -> executed NN_*.ipynb (outputs committed)
    python notebooks/build.py 02              # only notebooks whose name starts with 02
    python notebooks/build.py --check         # only check every .ipynb is in step with its .py (no execution)
    python notebooks/build.py exercises       # only the exercise notebooks, exercises/NN_*.py (or e.g. exercises/02)

The jupytext `py:percent` sources (`NN_name.py`) are the source of truth. Each is read with
jupytext, executed headless with nbclient in its own folder (so paths like `../tests/fixtures`
work), and written next to it as `NN_name.ipynb` with its outputs, which is what GitHub renders.
The exercise notebooks in `exercises/` are nbgrader solution notebooks: each also gets its student
version, `exercises/student/NN_name.ipynb` (`npformer.exercises.student`, outputs cleared).
Needs the `notebooks` extra (`pip install -e ".[notebooks]"`); the kernel is `python3`, i.e. the
Python that has npformer installed. `tests/test_notebooks.py` uses the same functions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXERCISES = HERE / "exercises"
CELL_TIMEOUT = 300  # seconds per cell; a whole notebook is meant to run in well under 2 minutes


def sources(prefixes=()) -> list[Path]:
    """The notebook sources `NN_*.py`, sorted; only those starting with one of `prefixes` if given."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not prefixes or p.name.startswith(tuple(prefixes))]


def exercise_sources(prefixes=()) -> list[Path]:
    """The exercise notebooks `exercises/NN_*.py` (nbgrader solution versions), sorted; only those
    whose path from here, e.g. "exercises/02_pooling_gelu_layernorm.py", starts with one of `prefixes`."""
    found = sorted(EXERCISES.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not prefixes or f"exercises/{p.name}".startswith(tuple(prefixes))]


def student_path(source: Path) -> Path:
    """Where the student version of an exercise notebook is written."""
    return EXERCISES / "student" / f"{source.stem}.ipynb"


def write_student_version(solution_ipynb: Path) -> Path:
    """Write the student version of an exercise's solution .ipynb (stubs, hidden tests removed, no outputs)."""
    from npformer.exercises.student import read_notebook, student_version, write_notebook

    target = student_path(solution_ipynb)
    target.parent.mkdir(exist_ok=True)
    write_notebook(student_version(read_notebook(solution_ipynb), solution_ipynb.name), target)
    return target


def student_out_of_step(source: Path) -> str | None:
    """Why an exercise's committed student version differs from the one its source gives; None if it does not."""
    from npformer.exercises.student import read_notebook, student_version

    target = student_path(source)
    if not target.is_file():
        return f"{target.relative_to(HERE)} is missing"
    want = cells(student_version(read_source(source), source.name))
    have = [(c["cell_type"], "".join(c["source"]).strip()) for c in read_notebook(target)["cells"]]
    if want != have:
        return f"{target.relative_to(HERE)} is not the student version of {source.name}"
    return None


def read_source(path: Path):
    """The notebook a py:percent source describes (no outputs)."""
    import jupytext

    return jupytext.read(path, fmt="py:percent")


def cells(notebook) -> list[tuple[str, str]]:
    """(cell type, source) of every cell: what must agree between a .py and its .ipynb."""
    return [(cell["cell_type"], "".join(cell["source"]).strip()) for cell in notebook["cells"]]


def out_of_step(source: Path) -> str | None:
    """Why `source`'s .ipynb is not in step with it (missing, or a cell differs); None if it is."""
    import jupytext

    ipynb = source.with_suffix(".ipynb")
    if not ipynb.is_file():
        return f"{ipynb.name} is missing"
    want, have = cells(read_source(source)), cells(jupytext.read(ipynb))
    if len(want) != len(have):
        return f"{ipynb.name} has {len(have)} cells, {source.name} has {len(want)}"
    for n, (a, b) in enumerate(zip(want, have)):
        if a != b:
            return f"{ipynb.name} cell {n} differs from {source.name}: {b[1][:60]!r} vs {a[1][:60]!r}"
    return None


def execute(notebook, cwd: Path = HERE, timeout: int = CELL_TIMEOUT):
    """Run every cell of `notebook` in a fresh python3 kernel started in `cwd`; raises
    nbclient's CellExecutionError (with the failing cell and traceback) on the first error."""
    from nbclient import NotebookClient

    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return notebook


def build(source: Path) -> float:
    """Execute `source` and write its .ipynb with outputs; returns the run time in seconds."""
    import jupytext

    notebook = read_source(source)
    start = time.perf_counter()
    execute(notebook, cwd=source.parent)
    seconds = time.perf_counter() - start
    jupytext.write(notebook, source.with_suffix(".ipynb"), fmt="ipynb")
    if source.parent == EXERCISES:
        write_student_version(source.with_suffix(".ipynb"))
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="name prefixes, e.g. 01 03 (default: every notebook)")
    parser.add_argument("--check", action="store_true", help="check sync only, execute nothing")
    args = parser.parse_args(argv)
    found = sources(args.names) + exercise_sources(args.names)
    if not found:
        print(f"no notebook source matches {args.names}", file=sys.stderr)
        return 2
    if args.check:
        problems = [p for p in map(out_of_step, found) if p]
        problems += [p for p in map(student_out_of_step, [f for f in found if f.parent == EXERCISES]) if p]
        for problem in problems:
            print(f"out of step: {problem}")
        print(f"{len(found) - len(problems)} of {len(found)} notebooks in step with their sources"
              + ("; re-run `python notebooks/build.py`" if problems else ""))
        return 1 if problems else 0
    total = 0.0
    for source in found:
        seconds = build(source)
        total += seconds
        size = source.with_suffix(".ipynb").stat().st_size
        print(f"{source.relative_to(HERE).with_suffix('')}: executed in {seconds:.1f} s, {size / 1024:.0f} KiB")
    print(f"{len(found)} notebooks in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
