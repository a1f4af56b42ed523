"""The README's figure (notebooks/figures/efficientformer_stages.png, drawn by notebook 02) shows its
whole title: a one-line title wider than the figure used to be cut off at both edges."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIGURE = Path(__file__).resolve().parent.parent / "notebooks" / "figures" / "efficientformer_stages.png"


def test_the_committed_figure_has_blank_margins_beside_its_title():
    pixels = np.asarray(Image.open(FIGURE).convert("L"))  # [H, W], 255 = white
    title_band = pixels[:40]  # the title's rows, above the first row of pictures
    assert title_band.min() < 100, "the title is drawn"
    assert title_band[:, :6].min() == 255 and title_band[:, -6:].min() == 255, "the title runs off the figure's edge"


def test_wrapped_suptitle_breaks_a_long_title_to_the_figure_width():
    if importlib.util.find_spec("matplotlib") is None:
        if os.environ.get("NPFORMER_REQUIRE_NOTEBOOKS") == "1":
            pytest.fail("NPFORMER_REQUIRE_NOTEBOOKS=1 but the notebooks extra (matplotlib) is not installed")
        pytest.skip("the notebooks extra is not installed (matplotlib): pip install -e '.[notebooks]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npformer.tools import plots

    text = "EfficientFormerForImageClassificationWithTeacher (demo weights) reads digit_3_705.png: " * 3
    fig = plt.figure(figsize=(6, 2))
    title = plots.wrapped_suptitle(fig, text, fontsize=9)
    renderer = fig.canvas.get_renderer()
    lines = title.get_text().split("\n")
    assert len(lines) >= 3 and " ".join(lines) == " ".join(text.split())
    for line in lines:
        title.set_text(line)
        assert title.get_window_extent(renderer).width <= 0.96 * fig.bbox.width
    short = plots.wrapped_suptitle(fig, "a short title", fontsize=9)
    assert short.get_text() == "a short title"
    plt.close(fig)
