"""The layers written out for teaching: convolution three ways, BatchNorm as the paper writes it
(folding it into a convolution is npformer.fuse), the pooling token mixer (valid counts, the
`count_include_pad=True` mistake, its frequency response), exact erf and GELU, and the attention
bias as a relative-position map."""

from __future__ import annotations

import math

import numpy as np

from ... import layers


def conv2d_kernel_offsets(x, weight, bias=None, stride=1, padding=0):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """Convolution as a sum over the KH·KW kernel offsets: out = Σ_{i,j} W[:, :, i, j] · shift_{i,j}(x).

    Each term is one [OC, IC] × [IC, OH·OW] matrix product: 9 of them for a 3×3 kernel."""
    B, IC, H, W = x.shape
    OC, _, KH, KW = weight.shape
    OH, OW = layers.conv_output_size(H, W, KH, KW, stride, padding)
    out = np.zeros((B, OC, OH * OW), dtype=x.dtype)
    windows = layers.shifted_windows(x, KH, KW, stride, padding)  # KH·KW × [B, IC, OH, OW], (i, j) row-major
    for t, window in enumerate(windows):
        i, j = divmod(t, KW)
        out += np.matmul(weight[:, :, i, j], window.reshape(B, IC, OH * OW))  # [OC, IC] @ [B, IC, N] -> [B, OC, N]
    out = out.reshape(B, OC, OH, OW)
    return out if bias is None else out + bias.reshape(1, OC, 1, 1)


def conv2d_im2col(x, weight, bias=None, stride=1, padding=0):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """Convolution as one matrix product: W [OC, IC·KH·KW] @ layers.im2col(x) [B, IC·KH·KW, OH·OW]."""
    B, IC, H, W = x.shape
    OC, _, KH, KW = weight.shape
    OH, OW = layers.conv_output_size(H, W, KH, KW, stride, padding)
    out = np.matmul(weight.reshape(OC, -1), layers.im2col(x, KH, KW, stride, padding)).reshape(B, OC, OH, OW)
    return out if bias is None else out + bias.reshape(1, OC, 1, 1)


# ---------------------------------------------------------------------------------------------
# BatchNorm


def batch_norm_textbook(x, running_mean, running_var, weight, bias, eps):  # [B, C, H, W] -> [B, C, H, W]
    """BatchNorm as the paper writes it: (x − μ) / √(σ² + ε) · γ + β, per channel."""
    C = x.shape[1]

    def per_channel(v):
        return v.reshape(1, C, 1, 1)

    return (x - per_channel(running_mean)) / np.sqrt(per_channel(running_var) + eps) * per_channel(weight) + per_channel(bias)


# ---------------------------------------------------------------------------------------------
# the pooling token mixer


def valid_counts(H, W, kernel_size=3) -> np.ndarray:  # -> [H, W]
    """How many real (non-padding) pixels each k×k window holds: 4 / 6 / 9 at corner / edge /
    inside for k = 3. `count_include_pad=False` divides by this; True divides by k² everywhere."""
    return np.outer(layers.valid_count(H, kernel_size), layers.valid_count(W, kernel_size)).astype(int)


def avg_pool2d_include_pad(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """The mistake: average pooling with `count_include_pad=True`, padding zeros counted as pixels
    (at a corner 4 real pixels divided by 9). EfficientFormer uses False: `layers.avg_pool2d`."""
    H, W = x.shape[2:]
    return layers.avg_pool2d(x, kernel_size) * (valid_counts(H, W, kernel_size) / kernel_size**2).astype(x.dtype)


def pool_mixer_include_pad(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """`layers.pool_mixer` with the count_include_pad=True mistake: avgpool_include_pad(x) − x."""
    return avg_pool2d_include_pad(x, kernel_size) - x


def pool_mixer_kernel(kernel_size=3) -> np.ndarray:  # -> [k, k]
    """Away from the border the mixer is a convolution: a box of 1/k² minus 1 at the centre."""
    kernel = np.full((kernel_size, kernel_size), 1.0 / kernel_size**2)
    kernel[kernel_size // 2, kernel_size // 2] -= 1.0
    return kernel


def frequency_response(kernel, n=64) -> np.ndarray:  # [k, k] -> [n, n], zero frequency in the centre
    """|DFT| of a small kernel on an n×n grid, shifted so that the zero frequency is at [n//2, n//2].
    For the pooling mixer it is 0 at zero frequency and largest at the highest: a high-pass filter."""
    padded = np.zeros((n, n))
    k = kernel.shape[0]
    padded[:k, :k] = kernel
    return np.abs(np.fft.fftshift(np.fft.fft2(padded)))


# ---------------------------------------------------------------------------------------------
# erf and GELU: exact references


def erf_reference(x) -> np.ndarray:  # [...] -> [...] float64
    """erf from Python's `math.erf` (the C library's, correctly rounded to ~1 ulp), elementwise."""
    x = np.asarray(x, dtype=np.float64)
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def gelu_reference(x) -> np.ndarray:  # [...] -> [...] float64
    """Exact GELU x·Φ(x) = 0.5·x·(1 + erf(x/√2)) in float64, with `math.erf`."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + erf_reference(x / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------
# EfficientFormer's attention bias


def offset_bias_table(resolution, row_weight=1.0, col_weight=1.0) -> np.ndarray:  # -> [R²]
    """A hand-made bias table, entry |dr|·R + |dc| = −(row_weight·|dr| + col_weight·|dc|): a head
    that prefers nearby keys (1, 1), or keys in its own row (large row_weight, 0)."""
    dr, dc = np.divmod(np.arange(resolution * resolution), resolution)
    return -(row_weight * dr + col_weight * dc)


def bias_relative_map(table, resolution) -> np.ndarray:  # [h, R²] -> [h, 2R−1, 2R−1]
    """The learned bias as a picture of relative position: entry [head, R−1+dr, R−1+dc] is the bias
    any query adds to the key dr rows below and dc columns right of it, table[head, |dr|·R + |dc|].
    The centre is the query itself; the map is mirror-symmetric because only |dr|, |dc| count."""
    offsets = np.arange(-(resolution - 1), resolution)  # [2R − 1]
    index = np.abs(offsets)[:, None] * resolution + np.abs(offsets)[None, :]  # [2R − 1, 2R − 1]
    return np.asarray(table)[:, index]
