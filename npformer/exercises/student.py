"""Student versions of the exercise notebooks, made as nbgrader's `generate_assignment` makes them,
without nbgrader (so CI and instructors without it get the same files).

    python -m npformer.exercises.student notebooks/exercises/01_convolution.ipynb --out release/

The solution notebooks are the source of truth, in nbgrader's format: cells carry
`metadata.nbgrader` (schema 3: `grade`, `solution`, `locked`, `grade_id`, `points`), solution
code sits between `### BEGIN SOLUTION` and `### END SOLUTION`, and the grade cells' asserts between
`### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`. What this does to each cell, as nbgrader 0.9
does with its default settings (ClearSolutions, ClearHiddenTests, ClearOutput, LockCells):

* a solution region becomes `# YOUR CODE HERE` / `raise NotImplementedError()` at the region's
  indentation (`YOUR ANSWER HERE` in markdown); a solution cell without a region becomes the stub;
* a hidden-tests region is removed (nbgrader's autograde puts it back from its database;
  `restore_grade_cells` does the same from the solution notebook);
* outputs and execution counts are cleared;
* solution cells become non-deletable, grade and read-only cells non-deletable and non-editable.

nbgrader also writes checksums into the metadata (for its own validation); these files have none.
Reads and writes plain notebook JSON: no nbformat or jupytext needed.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

from ..errors import InputError

BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
TEXT_STUB = ["YOUR ANSWER HERE"]
OUTPUT_METADATA = ("collapsed", "scrolled")  # what nbconvert's ClearOutput drops with the outputs


def source_of(cell) -> str:
    """A cell's source as one string (notebook JSON stores it as a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def grading(cell) -> dict:
    """The cell's nbgrader metadata ({} for a plain cell)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def replace_regions(source: str, begin: str, end: str, stub: list | None, where: str) -> tuple[str, bool]:
    """`source` with every begin … end region replaced by `stub` (indented like the begin line) or,
    with stub None, removed; and whether there was one. A region left open or nested is an InputError."""
    lines, inside, found = [], False, False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise InputError(f"{where}: a '{begin}' inside another one")
            inside = found = True
            indent = re.match(r"\s*", line).group(0)
            lines += [indent + s for s in stub or []]
        elif end in line:
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise InputError(f"{where}: '{begin}' without its '{end}'")
    return "\n".join(lines), found


def student_cell(cell: dict, where: str) -> dict:
    """The student version of one cell (a new dict)."""
    cell = copy.deepcopy(cell)
    meta = grading(cell)
    code = cell["cell_type"] == "code"
    source, replaced = replace_regions(source_of(cell), BEGIN_SOLUTION, END_SOLUTION, CODE_STUB if code else TEXT_STUB,
                                       where)
    if replaced and not meta.get("solution"):
        raise InputError(f"{where}: a solution region in a cell that is not a solution cell (metadata.nbgrader.solution)")
    if meta.get("solution") and not replaced:
        source = "\n".join(CODE_STUB if code else TEXT_STUB)
    source, removed = replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, None, where)
    if removed and not meta.get("grade"):
        raise InputError(f"{where}: hidden tests in a cell that is not a grade cell (metadata.nbgrader.grade)")
    cell["source"] = source
    if code:
        cell["outputs"], cell["execution_count"] = [], None
        for key in OUTPUT_METADATA:
            cell.get("metadata", {}).pop(key, None)
    lock(cell)
    return cell


def lock(cell: dict) -> None:
    """nbgrader's LockCells defaults: solution cells cannot be deleted; grade cells and read-only
    cells can neither be deleted nor edited."""
    meta, md = grading(cell), cell.setdefault("metadata", {})
    if meta.get("solution"):
        md["deletable"] = False
    elif meta.get("grade") or meta.get("locked"):
        md["deletable"] = md["editable"] = False


def metadata_problems(notebook: dict) -> list[str]:
    """What nbgrader's metadata validator (schema 3) would refuse: grade, solution or locked cells
    without a grade_id, duplicate grade_ids, grade cells without points, markdown cells that are
    grade or solution but not both."""
    problems, seen = [], set()
    for n, cell in enumerate(notebook["cells"]):
        meta = grading(cell)
        if not meta:
            continue
        if meta.get("schema_version") != 3:
            problems.append(f"cell {n}: nbgrader schema_version must be 3, got {meta.get('schema_version')!r}")
        missing = [k for k in ("grade", "solution", "locked") if k not in meta]
        if missing:
            problems.append(f"cell {n}: nbgrader metadata lacks {', '.join(missing)}")
            continue
        if not (meta["grade"] or meta["solution"] or meta["locked"]):
            continue
        grade_id = meta.get("grade_id", "")
        if not grade_id:
            problems.append(f"cell {n}: no grade_id")
        elif grade_id in seen:
            problems.append(f"cell {n}: grade_id {grade_id!r} is used twice")
        seen.add(grade_id)
        if meta["grade"] and "points" not in meta:
            problems.append(f"cell {n} ({grade_id}): a grade cell needs points")
        if cell["cell_type"] == "markdown" and meta["grade"] != meta["solution"]:
            problems.append(f"cell {n} ({grade_id}): a markdown cell is either both grade and solution, or neither")
    return problems


def student_version(notebook: dict, name: str = "notebook") -> dict:
    """The student version of a solution notebook (a new dict); InputError if its nbgrader metadata
    or markers are wrong."""
    problems = metadata_problems(notebook)
    if problems:
        raise InputError(f"{name}: " + "; ".join(problems))
    student = copy.deepcopy(notebook)
    student["cells"] = [student_cell(cell, f"{name} cell {n}") for n, cell in enumerate(notebook["cells"])]
    student.get("metadata", {}).pop("celltoolbar", None)
    return student


def restore_grade_cells(submission: dict, solution: dict) -> dict:
    """A submitted notebook with every grade cell's source put back from the solution notebook, by
    grade_id (hidden tests included): what nbgrader's autograde does before executing it."""
    sources = {grading(c)["grade_id"]: source_of(c) for c in solution["cells"] if grading(c).get("grade")}
    restored = copy.deepcopy(submission)
    for cell in restored["cells"]:
        grade_id = grading(cell).get("grade_id")
        if grading(cell).get("grade") and grade_id in sources:
            cell["source"] = sources[grade_id]
    return restored


def score(executed: dict) -> tuple[float, float]:
    """(points earned, points possible) of an executed notebook, as nbgrader's autograde counts:
    a grade cell earns its points when it produced no error."""
    earned = possible = 0.0
    for cell in executed["cells"]:
        meta = grading(cell)
        if cell["cell_type"] == "code" and meta.get("grade"):
            possible += meta["points"]
            if not any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                earned += meta["points"]
    return earned, possible


def read_notebook(path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read it as a notebook: {err}") from None


def write_notebook(notebook: dict, path) -> None:
    """Write as nbformat does (one-space indent, sorted keys, a final newline)."""
    text = json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npformer.exercises.student",
                                     description="Write the student version of nbgrader-format solution notebooks.")
    parser.add_argument("notebooks", nargs="+", help="solution .ipynb files")
    parser.add_argument("--out", required=True, help="directory for the student versions (same file names)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.notebooks):
        try:
            student = student_version(read_notebook(path), path.name)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        write_notebook(student, out / path.name)
        print(f"{path} -> {out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
