"""The teaching notebooks: each committed .ipynb is in step with its py:percent source, was executed
with its pictures, and the sources execute headless without error (and without torch).

Needs the `notebooks` extra (jupytext, nbclient, ipykernel, matplotlib); without it these tests
skip, except under NPFORMER_REQUIRE_NOTEBOOKS=1 (CI's second tier), where a missing extra fails.
The regenerate command is `python notebooks/build.py`; this file uses the same functions.
"""

import importlib.util
import json
import time
from pathlib import Path

import pytest
from extras import need

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_layers_from_scratch", "02_efficientformer_stage_by_stage", "03_swiftformer_additive_attention",
         "04_golden_oracle", "05_efficientformerv2_stage_by_stage", "06_beyond_224"]
README_FIGURE = "notebooks/figures/efficientformer_stages.png"


def load_build():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed(name) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def test_the_notebooks_are_paired():
    build = load_build()
    assert [p.stem for p in build.sources()] == NAMES
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_in_step_with_its_source(name):
    need("jupytext")
    assert load_build().out_of_step(NOTEBOOKS / f"{name}.py") is None, "re-run `python notebooks/build.py`"


@pytest.mark.parametrize("name", NAMES)
def test_committed_ipynb_was_executed_with_pictures(name):
    notebook = committed(name)
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1)), "run every cell, in order"
    outputs = [output for cell in code for output in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the committed notebook should show its pictures"
    text = "".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    for heading in ("What you'll do", "What you'll learn", "What you'll need"):
        assert heading in text
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def test_notebook_sizes_stay_reasonable():
    sizes = {name: (NOTEBOOKS / f"{name}.ipynb").stat().st_size for name in NAMES}
    assert sum(sizes.values()) < 3 * 2**20, sizes
    assert max(sizes.values()) < 1 * 2**20, sizes


def test_readme_shows_the_figure_notebook_02_saves():
    assert (ROOT / README_FIGURE).is_file()
    assert f"]({README_FIGURE})" in (ROOT / "README.md").read_text()
    assert "efficientformer_stages.png" in (NOTEBOOKS / "02_efficientformer_stage_by_stage.py").read_text()


def test_plots_lay_images_out():
    need("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from npformer.tools import plots

    fig = plots.image_row([np.zeros((4, 4)), np.ones((4, 4, 3)) / 2, np.eye(4) - 0.5], ["a", "b", "c"],
                          overlays=[None, np.eye(4), None], colorbar=True, symmetric=True, cols=2, suptitle="t")
    image_axes = fig.axes[:4]  # a 2×2 grid of subplots (the last one blank), then a colour bar per picture
    assert [ax.get_title() for ax in image_axes] == ["a", "b", "c", ""] and len(fig.axes) == 4 + 3
    assert image_axes[2].images[0].get_clim() == (-0.5, 0.5)  # symmetric
    plots.annotate_matrix(image_axes[0], np.arange(16).reshape(4, 4))
    plots.mark_token(image_axes[0], 5, 2, 4, 4)
    assert len(image_axes[0].texts) == 16 and len(image_axes[0].patches) == 1
    matplotlib.pyplot.close(fig)


@pytest.mark.heavy
@pytest.mark.kernels
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_headless(name, tmp_path, monkeypatch):
    """Execute the py:percent source in a fresh kernel (cwd notebooks/); any error fails the test.
    Pictures go to a temporary directory; a last cell, added here only, checks torch was never imported."""
    need("jupytext", "nbclient", "ipykernel", "matplotlib")
    import nbformat

    build = load_build()
    monkeypatch.setenv("NPFORMER_FIGURES_DIR", str(tmp_path))
    monkeypatch.delenv("NPFORMER_WEIGHTS", raising=False)
    notebook = build.read_source(NOTEBOOKS / f"{name}.py")
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import sys\nassert 'torch' not in sys.modules, 'a notebook imported torch'\nprint('torch-free')"))
    start = time.perf_counter()
    build.execute(notebook)
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s")  # shown with -s; the 2-minute budget is checked by people, not asserted
    assert notebook.cells[-1].outputs[0]["text"].strip() == "torch-free"
    if name.startswith("02"):
        assert (tmp_path / "efficientformer_stages.png").is_file()
