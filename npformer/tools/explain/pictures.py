"""Feature maps and attention maps as pictures: tokens back to a grid, channel grids, attention maps
upsampled onto the image (arrays only; drawing is npformer.tools.plots)."""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError


def tokens_to_map(tokens) -> np.ndarray:  # [B, N, C] -> [B, C, R, R]
    """Undo EfficientFormer's flatten (token n = r·R + c, row-major) for a square grid."""
    B, N, C = np.shape(tokens)
    R = math.isqrt(N)
    if R * R != N:
        raise InputError(f"{N} tokens are not a square grid")
    return np.asarray(tokens).transpose(0, 2, 1).reshape(B, C, R, R)


def channels_by_spread(fmap) -> np.ndarray:  # [C, H, W] -> [C] channel indices
    """Channels ordered by their spatial standard deviation, largest first (the busiest first)."""
    fmap = np.asarray(fmap)
    return np.argsort(-fmap.reshape(fmap.shape[0], -1).std(axis=1), kind="stable")


def feature_grid(fmap, count=16, cols=8, pad=1, channels=None) -> np.ndarray:  # [C, H, W] -> [rows·(H+pad)−pad, cols·(W+pad)−pad]
    """`count` channels of one feature map tiled into one picture, each min-max scaled to [0, 1]
    on its own (a constant channel is 0), separated by `pad` pixels of NaN (drawn blank).

    `channels`: which channels, in order (default: `channels_by_spread`, the busiest first)."""
    fmap = np.asarray(fmap, dtype=np.float64)
    C, H, W = fmap.shape
    channels = channels_by_spread(fmap)[: min(count, C)] if channels is None else np.asarray(channels)
    cols = min(cols, len(channels))
    rows = -(-len(channels) // cols)
    grid = np.full((rows * (H + pad) - pad, cols * (W + pad) - pad), np.nan)
    for n, c in enumerate(channels):
        tile = fmap[c]
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        r, k = divmod(n, cols)
        grid[r * (H + pad) : r * (H + pad) + H, k * (W + pad) : k * (W + pad) + W] = tile
    return grid


def attention_maps(probs, query=None) -> np.ndarray:  # [h, N, N] -> [h, R, R]
    """Each head's attention over the key grid: the row of token `query` (an index n = r·R + c),
    or, with query=None, the mean over all queries (how much attention each key receives).
    Every map sums to 1 (each row of `probs` does)."""
    probs = np.asarray(probs)
    h, N, _ = probs.shape
    R = math.isqrt(N)
    if R * R != N:
        raise InputError(f"attention over {N} tokens is not a square grid")
    rows = probs.mean(axis=1) if query is None else probs[:, query, :]  # [h, N]
    return rows.reshape(h, R, R)


def upsample_onto_image(maps, height, width, keep="sum") -> np.ndarray:  # [h, R, R] -> [h, height, width]
    """Each token's value over the pixels it covers (pixel y belongs to token row ⌊y·R/height⌋).

    keep="sum": the value is spread evenly over those pixels, so every map keeps its sum (a map of
    probabilities still sums to 1); keep="value": each pixel simply takes its token's value."""
    if keep not in ("sum", "value"):
        raise InputError(f"keep must be 'sum' or 'value', got {keep!r}")
    maps = np.asarray(maps, dtype=np.float64)
    h, R, RC = maps.shape
    ry = np.arange(height) * R // height  # [height] token row of each pixel row
    rx = np.arange(width) * RC // width  # [width]
    if keep == "sum":
        pixels_per_token = np.bincount(ry, minlength=R)[:, None] * np.bincount(rx, minlength=RC)[None, :]  # [R, R]
        maps = maps / pixels_per_token
    return maps[:, ry][:, :, rx]
