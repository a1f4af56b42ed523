"""Beyond the trained size (notebook 06): the attention-bias strategies opened up, attention at
another size, the feature pyramid, and MACs against input size.

The strategies themselves are npformer.models.attention_bias; this module only lays their results
out as pictures and measures them.
"""

from __future__ import annotations

import numpy as np

from ...layers import attention_bias_index_grid
from ...macs import count
from ...models.attention_bias import resize_pairwise, resize_table


def table_image(table, grid) -> np.ndarray:  # [h, H·W] -> [h, H, W]
    """Each head's offset table as an image: row |Δrow|, column |Δcol| (offset 0 at the top left)."""
    return np.asarray(table).reshape(table.shape[0], *grid)


def gathered_bias(table, grid) -> np.ndarray:  # [h, H·W] -> [h, N, N]
    """The full (query, key) bias matrix a table spreads into on its own grid."""
    return np.asarray(table)[:, attention_bias_index_grid(*grid)]


def both_strategies(table, trained, grid) -> dict:  # -> {name: array}
    """What each strategy makes of one trained table for a new `grid`:
    "table" (the resampled [h, H, W] table), "table_matrix" (its gathered [h, N, N] bias),
    "pairwise_matrix" (the trained [h, N0, N0] matrix resized to [h, N, N]) and "trained_matrix"."""
    N = grid[0] * grid[1]
    resized = resize_table(np.asarray(table), trained, grid)  # [h, H·W]
    trained_matrix = gathered_bias(table, trained)
    return {"table": table_image(resized, grid), "table_matrix": gathered_bias(resized, grid),
            "pairwise_matrix": resize_pairwise(trained_matrix, N, N), "trained_matrix": trained_matrix}


def offset_spread(matrix, grid) -> float:
    """How far a [h, N, N] bias is from being a function of the (|Δrow|, |Δcol|) offset alone: the
    largest spread (max − min) among the pairs that share an offset. 0 for any gathered table; the
    pairwise resize, which treats the matrix as an image, breaks that symmetry."""
    index = attention_bias_index_grid(*grid).reshape(-1)  # [N·N] offset of each pair
    values = np.asarray(matrix).reshape(matrix.shape[0], -1)  # [h, N·N]
    order = np.argsort(index, kind="stable")
    groups = np.split(values[:, order], np.flatnonzero(np.diff(index[order])) + 1, axis=1)
    return float(max((g.max(axis=1) - g.min(axis=1)).max() for g in groups))


def query_attention(probs, query, grid) -> np.ndarray:  # [B, h, N, N] -> [h, H, W]
    """Where one query token (n = row·W + col) looks, per head, on the first image's grid."""
    return np.asarray(probs)[0, :, query].reshape(probs.shape[1], *grid)


def feature_pyramid(model, pixel_values) -> list[np.ndarray]:  # [1, 3, H, W] -> 4 × [h_i, w_i]
    """The four stage maps of one image (strides 4, 8, 16, 32), each as its mean |activation| over channels."""
    _, maps = model.forward_intermediates(pixel_values)
    return [np.abs(m[0]).mean(axis=0) for m in maps]


def macs_by_size(model, sizes) -> list[tuple[int, int, int]]:
    """(side, MACs per image, of which attention-free stages 0–2 and the stem) for square inputs
    of each side: npformer.macs.count on the model's own forward."""
    rows = []
    for side in sizes:
        result = count(model, (side, side))
        early = sum(result[part].macs for part in ("stem", "stages.0", "stages.1", "stages.2"))
        rows.append((side, result.macs, early))
    return rows
