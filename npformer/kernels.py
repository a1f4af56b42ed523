"""How the ops run fast: the one seam between the maths and the machine.

`npformer.layers` (and the model files) state what each op computes: `linear` is x·Wᵀ + b, a
convolution is one product of its weights with its input's windows, GELU is x·Φ(x). They hand
the work itself to the four functions here, and only here is it split over npformer's workers,
blocked for the cache, and counted for `npformer.macs`:

    matmul(a, b)                       a @ b, counted (the attention products: small, run whole)
    blocked_matmul(a, b, plus)         a @ b + plus, a's rows in fixed pieces on the workers
    depthwise_conv2d(x, w, b, s, p)    each channel's windows times its taps, channels in blocks
    elementwise(f, x)                  f(x) for large x in fixed blocks of values, on the workers

What makes the pieces safe (npformer/parallel.py says it at length): a piece is chosen from the
shapes alone, never from the worker count, and is computed by the same NumPy call whichever
thread runs it, writing its own slice of the output. So the outputs are bit-identical with one
worker or many, and a reader may take each function here as the one-line expression its
docstring gives.
"""

from __future__ import annotations

import math

import numpy as np

from .macs import count_macs, count_matmul
from .parallel import equal_blocks, for_each_piece, parallel_for
from .windows import conv_output_size, shifted_windows


def matmul(a, b):  # [..., n, k] · [..., k, m] -> [..., n, m]
    """np.matmul(a, b), its multiply-accumulates reported to `npformer.macs`."""
    count_matmul(a, b)
    return np.matmul(a, b)


def blocked_matmul(a, b, plus=None, counted_as="matmul"):  # [..., M, K] · [..., K, N] (+ plus) -> [..., M, N]
    """a @ b + plus, computed in fixed pieces of a's rows (axis −2) on npformer's workers.

    `plus` (optional) broadcasts against the product; when it has a row axis (ndim ≥ 2: a bias
    per output channel, [M, 1] or [G, M, 1]) its rows are taken with a's, so each piece adds its
    own bias while its output is still in cache. The pieces (`parallel.pieces`) depend on M and
    the work per row alone. The product's multiply-accumulates are counted once, as `counted_as`
    ("conv" for a convolution's product, "matmul" for a linear layer's)."""
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])  # the leading dims of the product
    count_macs(math.prod(batch) * M * K * N, counted_as)
    out = np.empty(batch + (M, N), dtype=np.result_type(a, b))
    split_plus = plus is not None and np.ndim(plus) >= 2

    def piece(r):  # rows r of a, and of the output
        rows = (Ellipsis, r, slice(None))
        np.matmul(a[rows], b, out=out[rows])
        if plus is not None:
            out[rows] += plus[rows] if split_plus else plus

    for_each_piece(M, math.prod(a.shape[:-2]) * K * N, piece)
    return out


DEPTHWISE_BLOCK = 1 << 17  # outputs per block of channels: the block's stacked windows stay in cache


def depthwise_conv2d(x, weight, bias, stride, padding):  # [B, C, H, W] -> [B, C, OH, OW]
    """Each channel its own KH×KW filter: out[c] = Σ_t tap[c, t]·window_t[c] over the kernel
    offsets t (+ bias[c]). The KH·KW windows of a block of channels are stacked ([B, c, KH·KW, N])
    and each channel's taps multiply them as one product ([1, KH·KW]·[KH·KW, N]): two passes over
    the block instead of 2·KH·KW. Blocks of about DEPTHWISE_BLOCK outputs keep the stack in cache;
    they run on the calling thread (split over two workers they were slower, measured)."""
    B, C, H, W = x.shape
    _, _, KH, KW = weight.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    count_macs(B * C * OH * OW * KH * KW, "conv")
    taps = weight.reshape(C, 1, KH * KW)  # [C, 1, KH·KW]
    out = np.empty((B, C, 1, OH * OW), dtype=np.result_type(x, weight))
    for c in equal_blocks(C, max(1, DEPTHWISE_BLOCK // (B * OH * OW))):  # channels c
        np.matmul(taps[c], stacked_windows(x[:, c], KH, KW, stride, padding), out=out[:, c])  # [B, |c|, 1, N]
        if bias is not None:
            out[:, c] += bias[c].reshape(-1, 1, 1)
    return out.reshape(B, C, OH, OW)


def stacked_windows(x, KH, KW, stride, padding):  # [B, c, H, W] -> [B, c, KH·KW, OH·OW]
    """The KH·KW shifted windows of each channel, stacked (one copy; freed as soon as its block's
    product is done, so one block's stack is alive at a time)."""
    B, c = x.shape[:2]
    OH, OW = conv_output_size(*x.shape[2:], KH, KW, stride, padding)
    return np.stack(shifted_windows(x, KH, KW, stride, padding), axis=2).reshape(B, c, KH * KW, OH * OW)


ELEMENTWISE_BLOCK = 1 << 17  # values per block: a kernel's temporaries stay in cache


def elementwise(f, x):  # [...] -> [...]
    """f(x) for an elementwise f. Above ELEMENTWISE_BLOCK values, x is cut into equal blocks of at
    most that many (`parallel.equal_blocks`: a function of the size alone) that run on npformer's
    workers; each value gets the same answer either way. An MLP's hidden activations run to
    millions of values: in blocks, GELU's temporaries stay in cache and a forward's peak memory
    is about half (EfficientFormer-L1: 10.5 MiB instead of 19)."""
    if x.size <= ELEMENTWISE_BLOCK:
        return f(x)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    cuts = equal_blocks(flat.size, ELEMENTWISE_BLOCK)

    def block(i):
        out[cuts[i]] = f(flat[cuts[i]])

    parallel_for(len(cuts), block)
    return out.reshape(x.shape)
