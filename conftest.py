"""What `python -m pytest` runs, beyond tests/: the examples of README.md and docs/, and the heavy tier.

* Every ```python block of README.md and docs/**/*.md runs (Sybil), top to bottom per page, in one
  namespace per page, in a fresh folder where `weights/` and `tests/fixtures/` point at the
  repository's. Blocks written as a doctest (`>>> ...` followed by the output) have their output
  checked; ```console blocks have every `$ npformer ...` line run and its output checked the same way
  (`...` matches anything). A block that needs an optional extra says so in front of it:
  `<!-- skip: next if(missing("torch"), reason="the oracle extra") -->`; under the extra's
  NPFORMER_REQUIRE_* switch (CI) a missing extra fails instead.
* Tests that start Jupyter kernels (marked `kernels`, and the examples that call NotebookClient) run one at
  a time across the xdist workers: a kernel's ports are chosen before the kernel binds them, and two
  kernels started at once in two workers collided ("Address already in use").
* Tests marked `heavy` (the larger variants' golden cases, float64 unfused forwards, the notebooks)
  run only with `--heavy`; CI runs them. The default run is the representative tier: every layer,
  every family at one variant, the hardening and CLI tests.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import shlex
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SWITCHES = {  # module -> the CI switch under which its absence is a failure, not a skip
    "torch": "NPFORMER_REQUIRE_ORACLE", "transformers": "NPFORMER_REQUIRE_ORACLE", "timm": "NPFORMER_REQUIRE_ORACLE",
    "matplotlib": "NPFORMER_REQUIRE_NOTEBOOKS", "h5py": "NPFORMER_REQUIRE_H5", "dask": "NPFORMER_REQUIRE_CLUSTER",
    "tensorflow": "NPFORMER_REQUIRE_TF", "huggingface_hub": "NPFORMER_REQUIRE_ORACLE",
}


def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true",
                     help="also run the tests marked heavy: the larger variants' golden cases, float64 unfused "
                          "forwards, the notebooks (CI runs them)")


def pytest_configure(config):
    if _collect_examples is None and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        raise pytest.UsageError("the examples of README.md and docs/ need sybil, which the test extra installs: "
                                "pip install -e '.[test]'")


@pytest.hookimpl(trylast=True)  # after tests/conftest.py has marked its heavy cases
def pytest_collection_modifyitems(config, items):
    if config.getoption("--heavy"):
        return
    heavy = [item for item in items if item.get_closest_marker("heavy")]
    if heavy:
        items[:] = [item for item in items if not item.get_closest_marker("heavy")]
        config.hook.pytest_deselected(items=heavy)


def pytest_report_header(config):
    if not config.getoption("--heavy"):
        return "heavy tests deselected (the representative tier); --heavy runs them too"


KERNEL_LOCK = Path(tempfile.gettempdir()) / "npformer-tests-jupyter-kernels.lock"


@pytest.fixture(autouse=True)
def one_kernel_at_a_time(request):
    """An exclusive lock, across processes, around a test or docs example that starts Jupyter kernels."""
    example = getattr(request.node, "example", None)  # a Sybil item's example
    source = example.document.text[example.start:example.end] if example else ""
    starts_kernels = request.node.get_closest_marker("kernels") or "NotebookClient(" in source
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run as scheduled
        fcntl = None
    if not starts_kernels or fcntl is None:
        yield
        return
    with open(KERNEL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


# --- the examples of README.md and docs/ ------------------------------------------------------------------

def missing(module: str) -> bool:
    """True when `module` cannot be imported: the example in front of which it is asked is skipped, except
    under the module's NPFORMER_REQUIRE_* switch, where a missing extra is an error."""
    import importlib.util

    try:
        absent = importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        absent = True
    switch = SWITCHES.get(module)
    if absent and switch and os.environ.get(switch) == "1":
        raise RuntimeError(f"{switch}=1 but {module} is not installed")
    return absent


def _in_a_fresh_folder(namespace):
    """Each page runs in a folder of its own: what it writes stays there; weights/ and tests/fixtures/ are the
    repository's."""
    folder = tempfile.TemporaryDirectory(prefix="npformer-docs-")
    work = Path(folder.name)
    (work / "tests").mkdir()
    (work / "weights").symlink_to(ROOT / "weights")
    (work / "tests" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
    (work / "notebooks").symlink_to(ROOT / "notebooks")
    namespace["_folder"], namespace["_cwd"] = folder, os.getcwd()
    namespace["missing"] = missing
    os.chdir(work)


def _back(namespace):
    os.chdir(namespace.pop("_cwd"))
    namespace.pop("_folder").cleanup()


OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def evaluate_console(example):
    """A ```console block: each `$ npformer ARGS` line runs in this process (npformer.cli.main) and what it
    prints must match the lines up to the next `$` (doctest's rules: `...` matches anything); other `$`
    lines (pip install, jupyter) are shown, not run."""
    from npformer.cli import main

    commands, current = [], None
    for line in example.parsed.splitlines():
        if line.startswith("$ "):
            current = [line[2:], []]
            commands.append(current)
        elif current is not None:
            current[1].append(line)
    checker = doctest.OutputChecker()
    for command, expected in commands:
        argv = shlex.split(command, comments=True)
        if not argv or argv[0] != "npformer":
            continue
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv[1:])
            except SystemExit as stop:
                status = stop.code
        want = "\n".join(expected).strip() + "\n"
        got = (out.getvalue() + err.getvalue()).strip() + "\n"
        if status not in (0, None) and "exit" not in want:
            raise AssertionError(f"`{command}` exited {status}:\n{got}")
        if expected and not checker.check_output(want, got, OPTIONS):
            raise AssertionError(f"`{command}` printed:\n{got}\nThe page shows:\n{want}")


def _sybil_collector():
    try:
        from sybil import Sybil
        from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
    except ImportError:  # the test extra brings sybil; without it the examples are not collected
        return None

    class ConsoleParser(CodeBlockParser):
        language = "console"

        def evaluate(self, example):
            evaluate_console(example)

    return Sybil(
        parsers=[PythonCodeBlockParser(doctest_optionflags=OPTIONS), ConsoleParser(), SkipParser()],
        patterns=["*.md"], path=str(ROOT), setup=_in_a_fresh_folder, teardown=_back, fixtures=["one_kernel_at_a_time"],
    ).pytest()


_collect_examples = _sybil_collector()


def pytest_collect_file(file_path, parent):
    page = Path(file_path)
    if _collect_examples and page.suffix == ".md" and (page == ROOT / "README.md" or ROOT / "docs" in page.parents):
        return _collect_examples(file_path, parent)
    return None
