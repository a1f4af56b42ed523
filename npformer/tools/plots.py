"""Small matplotlib helpers for the teaching notebooks (the `notebooks` extra).

matplotlib is imported inside each function, never when npformer is imported: npformer's
run-time dependencies stay numpy, pillow and safetensors. What the pictures show is computed in
`npformer.tools.explain`; these functions only lay images out.
"""

from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("npformer.tools.plots needs matplotlib: pip install 'npformer[notebooks]'") from None
    return plt


def image_row(images, titles=(), cmap="gray", size=2.2, overlays=None, overlay_cmap="inferno", alpha=0.6,
              cols=None, colorbar=False, vmin=None, vmax=None, symmetric=False, suptitle=None):
    """A figure of images side by side (wrapped after `cols`), axes off.

    `images`: [H, W] arrays (drawn with `cmap`) or [H, W, 3] RGB arrays in [0, 1].
    `overlays`: optional [H, W] heat maps, one per image (None to skip one), drawn on top with
    `overlay_cmap` at opacity `alpha`. `colorbar`: a colour bar beside each (non-RGB) image.
    `symmetric`: each image's colour range is ±max|image| (for signed maps with a diverging `cmap`).
    Returns the figure."""
    plt = _pyplot()
    images = list(images)
    cols = min(cols or len(images), len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + (0.4 if suptitle else 0)), squeeze=False)
    titles = list(titles) + [""] * (len(images) - len(titles))
    overlays = list(overlays) if overlays is not None else [None] * len(images)
    for ax, image, title, heat in zip(axes.flat, images, titles, overlays):
        image = np.asarray(image)
        lo, hi = vmin, vmax
        if symmetric and image.ndim == 2:
            hi = float(np.nanmax(np.abs(image))) or 1.0
            lo = -hi
        shown = ax.imshow(image, cmap=None if image.ndim == 3 else cmap, vmin=lo, vmax=hi, interpolation="nearest")
        if heat is not None:
            shown = ax.imshow(heat, cmap=overlay_cmap, alpha=alpha, interpolation="nearest")
        if colorbar and (image.ndim == 2 or heat is not None):
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[len(images):]:
        ax.axis("off")
    if suptitle:
        wrapped_suptitle(fig, suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def wrapped_suptitle(fig, text, fontsize=11, fill=0.96):
    """Set the figure's title, broken between words onto as many lines as needed for each line to
    take at most `fill` of the figure's width (measured as drawn: a one-line title wider than its
    figure is cut off at both edges when saved). Returns the title's Text."""
    title = fig.suptitle(text, fontsize=fontsize)
    get_renderer = getattr(fig.canvas, "get_renderer", None)
    if get_renderer is None:  # a backend that cannot measure text: leave the title as it is
        return title
    renderer, limit = get_renderer(), fill * fig.bbox.width
    lines, line = [], ""
    for word in text.split():
        title.set_text(f"{line} {word}".strip())
        if line and title.get_window_extent(renderer).width > limit:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    title.set_text("\n".join(lines + [line]))
    return title


def annotate_matrix(ax, matrix, fmt="{:d}", fontsize=7, color="white"):
    """Write each value of a small 2-D array into its cell of an `imshow`ed axes."""
    matrix = np.asarray(matrix)
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, fmt.format(value.item()), ha="center", va="center", fontsize=fontsize, color=color)


def mark_token(ax, index, grid, height, width, color="cyan"):
    """Outline token `index` (n = r·R + c on an R×R grid) on an image of height×width pixels."""
    plt = _pyplot()
    r, c = divmod(index, grid)
    y0, y1 = r * height // grid, (r + 1) * height // grid
    x0, x1 = c * width // grid, (c + 1) * width // grid
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2))
