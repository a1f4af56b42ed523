"""What a convolution sees: its output size, and its input through each kernel offset.

Shared by the convolutions in `npformer.layers`, their fast products in `npformer.kernels`, and
the teaching versions in the notebooks' helpers.
"""

from __future__ import annotations

import numpy as np


def conv_output_size(H, W, KH, KW, stride=1, padding=0) -> tuple[int, int]:
    """(OH, OW) = ((H + 2p − KH) // s + 1, (W + 2p − KW) // s + 1).

    Parameters
    ----------
    H : int
        Input height.
    W : int
        Input width.
    KH : int
        Kernel height.
    KW : int
        Kernel width.
    stride : int, default 1
        s.
    padding : int, default 0
        p, zeros on every side.

    Returns
    -------
    tuple of int
        (OH, OW).
    """
    return (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1


def shifted_windows(x, KH, KW, stride=1, padding=0):  # [B, C, H, W] -> KH·KW × [B, C, OH, OW]
    """The input seen through each kernel offset (i, j), in (i, j) row-major order.

    Window (i, j) is x_pad[:, :, i + s·oh, j + s·ow] over every output position (oh, ow): views of
    the zero-padded input, no copies.

    Parameters
    ----------
    x : ndarray of shape [B, C, H, W]
        The input.
    KH : int
        Kernel height.
    KW : int
        Kernel width.
    stride : int, default 1
        s.
    padding : int, default 0
        Zeros on every side.

    Returns
    -------
    list of ndarray
        KH·KW arrays of shape [B, C, OH, OW].
    """
    OH, OW = conv_output_size(*x.shape[2:], KH, KW, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    return [
        xp[:, :, i : i + stride * (OH - 1) + 1 : stride, j : j + stride * (OW - 1) + 1 : stride]
        for i in range(KH)
        for j in range(KW)
    ]


def im2col(x, KH, KW, stride=1, padding=0):  # [B, IC, H, W] -> [B, IC·KH·KW, OH·OW]
    """Every receptive field as a column, its rows in the conv weight's (ic, kh, kw) order.

    Parameters
    ----------
    x : ndarray of shape [B, IC, H, W]
        The input.
    KH : int
        Kernel height.
    KW : int
        Kernel width.
    stride : int, default 1
        The same along both axes.
    padding : int, default 0
        Zeros on every side.

    Returns
    -------
    ndarray of shape [B, IC·KH·KW, OH·OW]
        The columns: a convolution is then W.reshape(OC, IC·KH·KW) times them.
    """
    B, IC, H, W = x.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    cols = np.stack(shifted_windows(x, KH, KW, stride, padding), axis=2)  # [B, IC, KH·KW, OH, OW]
    return cols.reshape(B, IC * KH * KW, OH * OW)
