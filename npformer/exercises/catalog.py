"""Every exercise, in course order: the layers first, then the blocks, then the whole model.

    notebook 01  conv2d_naive, conv2d, batch_norm, fold_after
    notebook 02  pool_mixer, erf, gelu, layer_norm
    notebook 03  gather_attention_bias, multi_head_attention, additive_attention, talking_heads_attention
    notebook 04  meta4d_block, meta3d_block, efficientformer
"""

from __future__ import annotations

from ..errors import InputError
from .assemble import EFFICIENTFORMER, META3D_BLOCK, META4D_BLOCK
from .attention import ADDITIVE_ATTENTION, GATHER_ATTENTION_BIAS, MULTI_HEAD_ATTENTION, TALKING_HEADS_ATTENTION
from .convolution import BATCH_NORM, CONV2D, CONV2D_NAIVE, FOLD_AFTER
from .pointwise import ERF, GELU, LAYER_NORM, POOL_MIXER

EXERCISES = {ex.name: ex for ex in (
    CONV2D_NAIVE, CONV2D, BATCH_NORM, FOLD_AFTER,
    POOL_MIXER, ERF, GELU, LAYER_NORM,
    GATHER_ATTENTION_BIAS, MULTI_HEAD_ATTENTION, ADDITIVE_ATTENTION, TALKING_HEADS_ATTENTION,
    META4D_BLOCK, META3D_BLOCK, EFFICIENTFORMER,
)}


def names() -> list[str]:
    """The exercises' names, in course order.

    Returns
    -------
    list of str
        "conv2d_naive", "conv2d", "batch_norm", "fold_after" (notebook 01); "pool_mixer", "erf",
        "gelu", "layer_norm" (02); "gather_attention_bias", "multi_head_attention",
        "additive_attention", "talking_heads_attention" (03); "meta4d_block", "meta3d_block",
        "efficientformer" (04).
    """
    return list(EXERCISES)


def exercise(name: str):
    """The exercise called `name`, with its reference, cases and catalogued mistakes.

    Parameters
    ----------
    name : str
        One of `names()`.

    Returns
    -------
    Exercise
        The exercise.

    Raises
    ------
    InputError
        An unknown name (the message lists the names there are).
    """
    if name not in EXERCISES:
        raise InputError(f"no exercise called {name!r}; there are: {', '.join(EXERCISES)}")
    return EXERCISES[name]
