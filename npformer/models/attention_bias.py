"""Attention biases on another grid than the one they were trained on: two named strategies.

EfficientFormer (V1) and EfficientFormerV2 learn one bias per head and per distinct offset
(|Δrow|, |Δcol|) between a query and a key: a table [h, H·W] over the H×W key grid the model was
built for (7×7 at 224 px). Another input size gives another grid, which the table does not fit, and
no reference resizes it by itself (transformers, timm and the original classifiers all refuse
or break on another grid). npformer never guesses: a model runs at another
size only under a strategy the caller names.

    "table"     resample each head's table, seen as an [H, W] image, to the new grid, once at load:
                bicubic with antialias, as timm's `resize_rel_pos_bias_table_levit` does for LeViT,
                TinyViT and EfficientViT. The result is an ordinary model built for the new size
                (transformers' `resolution=`, timm V2's `img_size=`), which can be saved as such.
    "pairwise"  keep the trained table, gather it into the full [h, Nq0, Nk0] (query, key) matrix
                and resize that matrix bicubically (antialias off) to [h, Nq, Nk] for the token
                counts of each forward: what the original repo's detection and segmentation
                backbones do (`F.interpolate(bias.unsqueeze(0), size=(N, N), mode='bicubic')`).
                The model then takes any input size.

The two are different answers (antialias alone changes a table by up to 0.28), so neither is
a default. Which tensors are tables, and over which grid, each family's schema says
(`attention_bias_grids`); how a config is rebuilt for another size too (`config_at_size`).
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import ConfigError, InputError
from ..resample import interpolate
from .registry import family_of

STRATEGIES = {
    "table": "resample each head's offset table to the new grid once at load (bicubic, antialias; timm's LeViT resize)",
    "pairwise": "resize the gathered [h, N, N] bias to each forward's token count (bicubic; the original detection "
                "and segmentation backbones)",
}


def resize_table(table, trained, grid):  # [h, Ht·Wt] -> [h, H·W]
    """Each head's offset table as a [Ht, Wt] image, resampled to [H, W] (bicubic, antialias on)."""
    h = table.shape[0]
    image = table.reshape(h, *trained)  # [h, Ht, Wt]: row |Δrow|, column |Δcol|
    return interpolate(image, tuple(grid), mode="bicubic", antialias=True).reshape(h, grid[0] * grid[1])


def resize_pairwise(bias, num_queries, num_keys):  # [h, Nq0, Nk0] -> [h, Nq, Nk]
    """The gathered (query, key) bias matrix resized as one image per head (bicubic, antialias off)."""
    if bias.shape[1:] == (num_queries, num_keys):
        return bias
    return interpolate(bias, (num_queries, num_keys), mode="bicubic", antialias=False)


def check_strategy(strategy) -> str | None:
    """`strategy` if it is None or a known name, else a ConfigError listing the strategies."""
    if strategy is None or strategy in STRATEGIES:
        return strategy
    raise ConfigError(f"attention_bias_resize={strategy!r} is not a strategy npformer knows; "
                      + "; ".join(f"{name!r}: {what}" for name, what in STRATEGIES.items()))


def strategies_hint() -> str:
    """How to run a model at another size: the sentence every grid-mismatch error ends with."""
    return ("to run it at another size, load it with npformer.from_pretrained(path, image_size=(H, W), "
            "attention_bias_resize=STRATEGY), on the command line --size H W --bias-resize STRATEGY, "
            "where STRATEGY is " + " or ".join(f"'{name}' ({what})" for name, what in STRATEGIES.items()))


def _side(size) -> tuple[int, int]:
    """(H, W) from one side or a pair, or a ConfigError."""
    sides = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else tuple(size)
    if len(sides) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                                  for s in sides):
        raise ConfigError(f"image_size={size!r} must be one side or (height, width) in pixels, each a positive integer")
    return int(sides[0]), int(sides[1])


def at_image_size(config, tensors: dict, image_size, strategy=None, dtype=np.float32, source="the checkpoint"):
    """(config, tensors) of a model that runs `image_size` inputs, from one built for its own grid.

    Nothing changes when the new size gives the same grids (e.g. 200 px for a 224 model) or the
    family has no attention biases (SwiftFormer). Otherwise the grids must be resized by a named
    `strategy` ("table": tables resampled in `dtype` and a config built for the new size;
    "pairwise": the trained tables, and the config records the strategy for the forward), or an
    InputError names the trained grid, the size asked for and the strategies."""
    strategy = check_strategy(strategy)
    schema = family_of(config).schema
    H, W = _side(image_size)
    trained, wanted = schema.attention_bias_grids(config), schema.attention_bias_grids(config, (H, W))
    if trained == wanted:
        return config, tensors
    name = next(n for n in trained if trained[n] != wanted[n])
    if strategy is None:
        raise InputError(
            f"{source} is trained on a {'×'.join(map(str, trained[name]))} attention grid ({name}: "
            f"{np.shape(tensors[name])[-1]} offsets), which {_input_sides(config)}; a {H}×{W} input gives "
            f"{'×'.join(map(str, wanted[name]))}, which the bias table does not fit; " + strategies_hint())
    if strategy == "pairwise":
        return with_strategy(config, "pairwise"), tensors
    new_config = schema.config_at_size(config, (H, W))
    resized = {n: resize_table(np.asarray(tensors[n], dtype=dtype), trained[n], wanted[n]) for n in trained}
    return new_config, {**tensors, **resized}


def _input_sides(config) -> str:
    """The input sides that give a config's own grid, in words ("takes 193–224 px inputs")."""
    if hasattr(config, "input_sides"):  # EfficientFormerV2: per axis
        (h_lo, h_hi), (w_lo, w_hi) = config.input_sides()
        return f"takes inputs {h_lo}–{h_hi} px high and {w_lo}–{w_hi} px wide"
    lo, hi = config.input_side_range()
    return f"takes {lo}–{hi} px inputs"


def with_strategy(config, strategy):
    """A copy of `config` recording the bias strategy its forward applies (None: the built grid only)."""
    config = copy.deepcopy(config)
    config.attention_bias_resize = strategy
    return config
