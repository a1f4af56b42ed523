"""The NumPy layers EfficientFormer, SwiftFormer and EfficientFormerV2 are built from.

Dimension letters, used in every shape comment:
    B batch, C channels (OC out, IC in), H×W spatial size, N = H·W tokens,
    KH×KW kernel size, h heads, dk key dim, dv value dim.

Weights use PyTorch's layouts so that checkpoints load without transposes:
conv weight [OC, IC/groups, KH, KW], linear weight [out, in] (y = x·Wᵀ + b).

Every function keeps the dtype of its input (float32 stays float32; float64 runs end to end in
float64). Each hard op has a `*_naive` twin written as plain loops, just before it: start
reading there. The tests check each op against its twin on random shapes.

The ops state their maths; the heavy products (and GELU's passes) go through `npformer.kernels`,
the one place where work is split over npformer's workers, blocked for the cache and counted for
`npformer.macs`. Its functions compute exactly the expression their names and docstrings give.
Resampling to any size (torch's interpolate) is in `npformer.resample`.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .erf import gelu, gelu_tanh
from .resample import interpolate, interpolate_naive, resampling_weights  # noqa: F401 (npformer.layers' names)
from .windows import conv_output_size, im2col, shifted_windows

__all__ = [
    "conv2d_naive", "conv2d", "conv_output_size", "shifted_windows", "im2col", "batch_norm_affine", "batch_norm",
    "layer_norm", "linear", "relu", "gelu", "gelu_tanh", "ACTIVATIONS", "l2_normalize", "softmax", "avg_pool2d_naive",
    "avg_pool2d", "valid_count", "pool_mixer", "attention_bias_index", "gather_attention_bias",
    "multi_head_attention_naive", "multi_head_attention", "bilinear_taps", "upsample_bilinear_2x_naive",
    "upsample_bilinear_2x", "attention_bias_index_grid", "talking_heads", "talking_heads_attention_naive",
    "talking_heads_attention", "interpolate", "interpolate_naive", "resampling_weights",
]


# ---------------------------------------------------------------------------------------------
# convolution


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """Loop twin of `conv2d`: out[b, o, y, x] = Σ_{c, i, j} w[o, c, i, j] · in[b, g·ICg + c, s·y + i − p, s·x + j − p].

    Same parameters and result as `conv2d`; g = o // (OC / groups) is the output channel's group.
    """
    B, IC, H, W = x.shape
    OC, ICg, KH, KW = weight.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    OCg = OC // groups
    out = np.zeros((B, OC, OH, OW), dtype=x.dtype)
    for b in range(B):
        for o in range(OC):
            g = o // OCg
            for oy in range(OH):
                for ox in range(OW):
                    acc = 0.0
                    for c in range(ICg):
                        for i in range(KH):
                            for j in range(KW):
                                iy, ix = stride * oy + i - padding, stride * ox + j - padding
                                if 0 <= iy < H and 0 <= ix < W:
                                    acc += weight[o, c, i, j] * x[b, g * ICg + c, iy, ix]
                    out[b, o, oy, ox] = acc + (bias[o] if bias is not None else 0.0)
    return out


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """2-D convolution (cross-correlation, as PyTorch's Conv2d) with zero padding, as one product.

    Three cases, one idea each:

    * 1×1, stride 1: the weights times the pixels, out[b] = W·x[b] (the channels are the sum).
    * depthwise (groups == IC == OC): each channel's KH·KW shifted copies, weighted by its taps.
    * everything else: every receptive field as a column ("im2col"), then one product per group,
      out[b, g] = W_g · cols[b, g].

    Parameters
    ----------
    x : ndarray of shape [B, IC, H, W]
        The input.
    weight : ndarray of shape [OC, IC/groups, KH, KW]
        PyTorch's layout.
    bias : ndarray of shape [OC], optional
        Added to each output channel.
    stride : int, default 1
        The same along both axes.
    padding : int, default 0
        Zeros on every side.
    groups : int, default 1
        Input and output channels split into this many independent groups.

    Returns
    -------
    ndarray of shape [B, OC, OH, OW]
        OH = (H + 2·padding − KH) // stride + 1, likewise OW; in x's dtype.
    """
    B, IC, H, W = x.shape
    OC, ICg, KH, KW = weight.shape
    if IC != ICg * groups:
        raise ValueError(f"conv2d: input has {IC} channels, weight expects {ICg}×{groups} groups")
    per_channel = None if bias is None else bias.reshape(groups, OC // groups, 1)  # [G, OC/G, 1]
    if KH == KW == 1 and stride == 1 and padding == 0 and groups == 1:
        out = kernels.blocked_matmul(weight.reshape(OC, IC), x.reshape(B, IC, H * W), per_channel, "conv")  # [B, OC, N]
        return out.reshape(B, OC, H, W)
    if groups == IC == OC and ICg == 1:
        return kernels.depthwise_conv2d(x, weight, bias, stride, padding)
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    cols = im2col(x, KH, KW, stride, padding).reshape(B, groups, ICg * KH * KW, OH * OW)  # each group's rows
    w = weight.reshape(groups, OC // groups, ICg * KH * KW)  # [G, OC/G, ICg·KH·KW]
    out = kernels.blocked_matmul(w, cols, per_channel, "conv")  # [B, G, OC/G, OH·OW]
    return out.reshape(B, OC, OH, OW)


# ---------------------------------------------------------------------------------------------
# normalisation, linear, activations


def batch_norm_affine(running_mean, running_var, weight, bias, eps):  # [C] each -> ([C], [C])
    """(α, β′) of an eval-mode BatchNorm, BN(x) = α·x + β′: α = γ / √(var + eps), β′ = β − mean·α.

    Parameters
    ----------
    running_mean : ndarray of shape [C]
        The running mean.
    running_var : ndarray of shape [C]
        The running variance.
    weight : ndarray of shape [C]
        γ.
    bias : ndarray of shape [C]
        β.
    eps : float
        Added to the variance.

    Returns
    -------
    alpha : ndarray of shape [C]
        The scale α.
    shift : ndarray of shape [C]
        The shift β′.
    """
    alpha = weight / np.sqrt(running_var + eps)
    return alpha, bias - running_mean * alpha


def batch_norm(x, running_mean, running_var, weight, bias, eps):  # [B, C, H, W] -> [B, C, H, W]
    """BatchNorm in eval mode, computed as PyTorch's CPU kernel does: x·α + β′ (`batch_norm_affine`).

    Parameters
    ----------
    x : ndarray of shape [B, C, H, W]
        The input.
    running_mean : ndarray of shape [C]
        The running mean.
    running_var : ndarray of shape [C]
        The running variance.
    weight : ndarray of shape [C]
        γ.
    bias : ndarray of shape [C]
        β.
    eps : float
        Added to the variance.

    Returns
    -------
    ndarray of shape [B, C, H, W]
        The normalised input.
    """
    C = x.shape[1]
    alpha, shift = batch_norm_affine(running_mean, running_var, weight, bias, eps)
    return x * alpha.reshape(1, C, 1, 1) + shift.reshape(1, C, 1, 1)


def layer_norm(x, weight, bias, eps):  # [..., C] -> [..., C]
    """LayerNorm over the last axis with the biased variance, as torch.nn.LayerNorm.

    (x − mean) / √(var + eps) · weight + bias, mean and var over the last axis.

    Parameters
    ----------
    x : ndarray of shape [..., C]
        The input.
    weight : ndarray of shape [C]
        The scale.
    bias : ndarray of shape [C]
        The shift.
    eps : float
        Added to the variance (transformers' EfficientFormer 1e-12, timm's 1e-5).

    Returns
    -------
    ndarray of shape [..., C]
        The normalised input.
    """
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias=None):  # [..., IN] -> [..., OUT]
    """y = x·Wᵀ + b, with W in PyTorch's [OUT, IN] layout.

    Parameters
    ----------
    x : ndarray of shape [..., IN]
        The input.
    weight : ndarray of shape [OUT, IN]
        W.
    bias : ndarray of shape [OUT], optional
        b.

    Returns
    -------
    ndarray of shape [..., OUT]
        y.
    """
    rows = x.reshape(-1, weight.shape[1])  # [M, IN], M = prod(leading dims)
    y = kernels.blocked_matmul(rows, weight.T, bias)  # x·Wᵀ + b: [M, IN]·[IN, OUT] + [OUT]
    return y.reshape(*x.shape[:-1], weight.shape[0])


def relu(x):
    """max(x, 0), elementwise.

    Parameters
    ----------
    x : ndarray
        The input.

    Returns
    -------
    ndarray
        x's shape and dtype.
    """
    return np.maximum(x, 0)


ACTIVATIONS = {  # transformers' names (config.hidden_act) -> the function
    "gelu": gelu,  # x·Φ(x) = 0.5·x·(1 + erf(x/√2)), the only form the references use; float32 evaluates Φ
                   # from a table, ≤ 1.5e-7·max(1, |x|) from the exact value (see npformer.erf.gelu)
    "relu": relu,
    "gelu_new": gelu_tanh,  # the tanh approximation, under transformers' two names for it
    "gelu_pytorch_tanh": gelu_tanh,
}


def l2_normalize(x, axis, eps=1e-12):
    """x / max(‖x‖₂, eps) along `axis`, as torch.nn.functional.normalize.

    Parameters
    ----------
    x : ndarray
        The input.
    axis : int
        The axis the norm runs over (SwiftFormer v2: the tokens).
    eps : float, default 1e-12
        The smallest norm divided by.

    Returns
    -------
    ndarray
        x's shape, each slice along `axis` of unit length.
    """
    norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    return x / np.maximum(norm, eps)


def softmax(x, axis=-1):
    """Numerically stable softmax: exp(x − max) / Σ exp(x − max).

    Parameters
    ----------
    x : ndarray
        The logits.
    axis : int, default -1
        The axis that sums to 1.

    Returns
    -------
    ndarray
        Probabilities, x's shape.
    """
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------
# pooling token mixer


def avg_pool2d_naive(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """Loop twin of `avg_pool2d`: each output the mean of the valid pixels under its window.

    Same parameters and result as `avg_pool2d`.
    """
    B, C, H, W = x.shape
    pad = kernel_size // 2
    out = np.zeros_like(x)
    for b in range(B):
        for c in range(C):
            for y in range(H):
                for xx in range(W):
                    window = x[b, c, max(y - pad, 0) : y + pad + 1, max(xx - pad, 0) : xx + pad + 1]
                    out[b, c, y, xx] = window.sum() / window.size
    return out


def avg_pool2d(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """Stride-1 average pooling with padding k//2 and count_include_pad=False.

    Each output is the mean of the *valid* pixels under the window: at a corner of a 3×3 window
    that is 4 pixels, on an edge 6, inside 9. The k×k window sum is separable: sum k shifted
    copies along W, then k along H (2(k−1) additions instead of k²−1), of the zero-padded input;
    it is then divided by the per-position count of valid pixels, itself a product of 1-D counts.

    Parameters
    ----------
    x : ndarray of shape [B, C, H, W]
        The input.
    kernel_size : int, default 3
        The window's side (odd).

    Returns
    -------
    ndarray of shape [B, C, H, W]
        The means.
    """
    B, C, H, W = x.shape
    k, pad = kernel_size, kernel_size // 2
    xp = np.zeros((B, C, H + 2 * pad, W + 2 * pad), dtype=x.dtype)
    xp[:, :, pad : pad + H, pad : pad + W] = x
    rows = _window_sum(xp, k, axis=3)  # [B, C, H + 2p, W]
    total = _window_sum(rows, k, axis=2)  # [B, C, H, W]
    total /= valid_count(H, k, x.dtype)[:, None] * valid_count(W, k, x.dtype)[None, :]  # 4, 6 or 9 for k = 3
    return total


def _window_sum(x, k, axis):  # [..., L + k − 1 along axis] -> [..., L]
    """Sum of k consecutive entries along `axis` (a 1-D box filter, no padding)."""
    n = x.shape[axis] - k + 1
    take = lambda i: x[(slice(None),) * axis + (slice(i, i + n),)]  # noqa: E731
    out = take(0) + take(1) if k > 1 else take(0).copy()
    for i in range(2, k):
        out += take(i)
    return out


def valid_count(length, k, dtype=np.int64):  # -> [length]
    """How many of the k window positions centred on each index fall inside 0 .. length − 1.

    Parameters
    ----------
    length : int
        The axis' length.
    k : int
        The window's size (odd).
    dtype : numpy dtype, default np.int64
        The result's dtype.

    Returns
    -------
    ndarray of shape [length]
        The counts (2, 3, …, 3, 2 for k = 3).
    """
    i, pad = np.arange(length), k // 2
    return (np.minimum(i + pad, length - 1) - np.maximum(i - pad, 0) + 1).astype(dtype)


def pool_mixer(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """EfficientFormer's pooling token mixer: avgpool(x) − x (the block adds x back).

    Parameters
    ----------
    x : ndarray of shape [B, C, H, W]
        The input.
    kernel_size : int, default 3
        The pooling window's side.

    Returns
    -------
    ndarray of shape [B, C, H, W]
        avg_pool2d(x, kernel_size) − x.
    """
    mixed = avg_pool2d(x, kernel_size)
    mixed -= x
    return mixed


# ---------------------------------------------------------------------------------------------
# multi-head attention with a learned relative-position bias


def attention_bias_index(resolution):  # -> [N, N] int64, N = resolution²
    """Index into the bias table for each (query, key) token pair on a square grid.

    idx[n1, n2] = |r1 − r2|·R + |c1 − c2| for tokens n = r·R + c (R = resolution).

    Parameters
    ----------
    resolution : int
        R, the grid's side.

    Returns
    -------
    ndarray of shape [N, N]
        int64 indices, N = R².
    """
    r, c = np.divmod(np.arange(resolution * resolution), resolution)
    return np.abs(r[:, None] - r[None, :]) * resolution + np.abs(c[:, None] - c[None, :])


def gather_attention_bias(table, resolution):  # [h, R²] -> [h, N, N]
    """The learned table (one value per distinct offset and head) spread into a full bias matrix.

    Parameters
    ----------
    table : ndarray of shape [h, R²]
        One value per head and offset (|Δrow|, |Δcol|).
    resolution : int
        R, the grid's side.

    Returns
    -------
    ndarray of shape [h, N, N]
        bias[h, n1, n2] = table[h, attention_bias_index(R)[n1, n2]], N = R².
    """
    return table[:, attention_bias_index(resolution)]


def multi_head_attention_naive(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim):
    """Loop twin of `multi_head_attention`: one head, one query at a time.

    Same parameters and result as `multi_head_attention`.
    """
    B, N, C = x.shape
    per_head = qkv_weight.shape[0] // num_heads
    value_dim = per_head - 2 * key_dim
    out = np.zeros((B, N, num_heads * value_dim), dtype=x.dtype)
    probs = np.zeros((B, num_heads, N, N), dtype=x.dtype)
    for b in range(B):
        qkv = x[b] @ qkv_weight.T + qkv_bias  # [N, h·(2dk + dv)]
        for h in range(num_heads):
            base = h * per_head
            q = qkv[:, base : base + key_dim]
            k = qkv[:, base + key_dim : base + 2 * key_dim]
            v = qkv[:, base + 2 * key_dim : base + per_head]
            for n in range(N):
                scores = np.array([q[n] @ k[m] for m in range(N)]) * key_dim**-0.5 + attn_bias[h, n]
                p = np.exp(scores - scores.max())
                p /= p.sum()
                probs[b, h, n] = p
                out[b, n, h * value_dim : (h + 1) * value_dim] = p @ v
    return out @ proj_weight.T + proj_bias, probs


def multi_head_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim):
    """EfficientFormer's Meta3D attention.  # [B, N, C] -> ([B, N, C], [B, h, N, N])

    qkv is one Linear whose output is, per head, [q (dk) | k (dk) | v (dv)]: heads interleaved,
    not a q-block, k-block, v-block. logits = (q·kᵀ)·dk^-0.5 + bias; probabilities = softmax over
    keys; the heads' outputs are concatenated (channel = head·dv + d) and projected back to C.

    Parameters
    ----------
    x : ndarray of shape [B, N, C]
        The tokens.
    qkv_weight : ndarray of shape [h·(2dk + dv), C]
        The qkv Linear's weight.
    qkv_bias : ndarray of shape [h·(2dk + dv)]
        Its bias.
    proj_weight : ndarray of shape [C, h·dv]
        The output projection's weight.
    proj_bias : ndarray of shape [C]
        Its bias.
    attn_bias : ndarray of shape [h, N, N]
        Added to the logits (`gather_attention_bias`).
    num_heads : int
        h.
    key_dim : int
        dk; dv is what remains of each head's share of qkv.

    Returns
    -------
    out : ndarray of shape [B, N, C]
        The projected output.
    probs : ndarray of shape [B, h, N, N]
        The attention probabilities (each row sums to 1).
    """
    B, N, C = x.shape
    qkv = linear(x, qkv_weight, qkv_bias)  # [B, N, h·(2dk + dv)]
    qkv = qkv.reshape(B, N, num_heads, -1).transpose(0, 2, 1, 3)  # [B, h, N, 2dk + dv]
    q = qkv[..., :key_dim]  # [B, h, N, dk]
    k = qkv[..., key_dim : 2 * key_dim]  # [B, h, N, dk]
    v = qkv[..., 2 * key_dim :]  # [B, h, N, dv]
    logits = kernels.matmul(q, k.transpose(0, 1, 3, 2)) * key_dim**-0.5 + attn_bias  # [B, h, N, N]
    probs = softmax(logits, axis=-1)
    out = kernels.matmul(probs, v)  # [B, h, N, dv]
    out = out.transpose(0, 2, 1, 3).reshape(B, N, -1)  # [B, N, h·dv]
    return linear(out, proj_weight, proj_bias), probs


# ---------------------------------------------------------------------------------------------
# EfficientFormerV2: bilinear ×2 upsampling, talking heads, attention on a grid of any aspect


def bilinear_taps(n_in, dtype):  # -> ([2n] int64, [2n] int64, [2n] dtype)
    """Where each output index o of a ×2 bilinear upsampling reads along one axis of length n.

    torch, align_corners=False: src = max((o + 0.5)/2 − 0.5, 0), i0 = ⌊src⌋, i1 = min(i0 + 1, n − 1),
    λ = src − i0, out[o] = (1 − λ)·in[i0] + λ·in[i1]. λ is 0.25 or 0.75 (0 at o = 0), exact in float32.

    Parameters
    ----------
    n_in : int
        n, the input axis' length.
    dtype : numpy dtype
        The dtype of λ.

    Returns
    -------
    i0 : ndarray of shape [2n]
        int64 first taps.
    i1 : ndarray of shape [2n]
        int64 second taps.
    weight : ndarray of shape [2n]
        λ, the second tap's weight.
    """
    src = np.maximum((np.arange(2 * n_in) + 0.5) / 2 - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(dtype)


def upsample_bilinear_2x_naive(x):  # [B, C, H, W] -> [B, C, 2H, 2W]
    """Loop twin of `upsample_bilinear_2x`: each output pixel from its four input neighbours.

    Same parameters and result as `upsample_bilinear_2x`.
    """
    B, C, H, W = x.shape
    out = np.zeros((B, C, 2 * H, 2 * W), dtype=x.dtype)
    for oy in range(2 * H):
        sy = max((oy + 0.5) / 2 - 0.5, 0.0)
        y0, ly = int(sy), sy - int(sy)
        y1 = min(y0 + 1, H - 1)
        for ox in range(2 * W):
            sx = max((ox + 0.5) / 2 - 0.5, 0.0)
            x0, lx = int(sx), sx - int(sx)
            x1 = min(x0 + 1, W - 1)
            top = (1 - lx) * x[:, :, y0, x0] + lx * x[:, :, y0, x1]
            bottom = (1 - lx) * x[:, :, y1, x0] + lx * x[:, :, y1, x1]
            out[:, :, oy, ox] = (1 - ly) * top + ly * bottom
    return out


def upsample_bilinear_2x(x):  # [B, C, H, W] -> [B, C, 2H, 2W]
    """×2 bilinear upsampling, as torch's nn.Upsample(scale_factor=2, mode="bilinear") with align_corners=False.

    Blend the two nearest input columns, then the two nearest input rows (torch's order), with
    the weights of `bilinear_taps`.

    Parameters
    ----------
    x : ndarray of shape [B, C, H, W]
        The input.

    Returns
    -------
    ndarray of shape [B, C, 2H, 2W]
        The upsampled input.
    """
    B, C, H, W = x.shape
    r0, r1, a = bilinear_taps(H, x.dtype)
    c0, c1, b = bilinear_taps(W, x.dtype)
    cols = x[:, :, :, c0] * (1 - b) + x[:, :, :, c1] * b  # [B, C, H, 2W]
    return cols[:, :, r0] * (1 - a)[:, None] + cols[:, :, r1] * a[:, None]  # [B, C, 2H, 2W]


def attention_bias_index_grid(H, W, query_stride=1):  # -> [Nq, N] int64, N = H·W, Nq = ⌈H/s⌉·⌈W/s⌉
    """Index into the bias table for each (query, key) pair on an H×W key grid of any aspect.

    idx = |Δrow|·W + |Δcol| (timm's closed form), the queries sitting at every `query_stride`-th
    row and column of the key grid (EfficientFormerV2's downsampling attention: stride 2, 7×7
    queries over 14×14 keys). With stride 1 on a square grid it equals `attention_bias_index`.

    Parameters
    ----------
    H : int
        The key grid's height.
    W : int
        The key grid's width.
    query_stride : int, default 1
        The queries' step over the key grid.

    Returns
    -------
    ndarray of shape [Nq, N]
        int64 indices, N = H·W, Nq = ⌈H/s⌉·⌈W/s⌉.
    """
    kr, kc = np.divmod(np.arange(H * W), W)  # [N] row and column of each key
    qr, qc = np.meshgrid(np.arange(0, H, query_stride), np.arange(0, W, query_stride), indexing="ij")
    qr, qc = qr.reshape(-1), qc.reshape(-1)  # [Nq] the queries' rows and columns, row-major
    return np.abs(qr[:, None] - kr[None, :]) * W + np.abs(qc[:, None] - kc[None, :])


def talking_heads(logits, weight, bias):  # [B, h, N, M] -> [B, h, N, M]
    """Mix the heads: a 1×1 convolution with the heads as channels.

    out[h′] = Σ_h W[h′, h]·logits[h] + b[h′] at every (query, key).

    Parameters
    ----------
    logits : ndarray of shape [B, h, N, M]
        One [N, M] map per head.
    weight : ndarray of shape [h, h, 1, 1]
        W, as a PyTorch Conv2d stores it.
    bias : ndarray of shape [h]
        b.

    Returns
    -------
    ndarray of shape [B, h, N, M]
        The mixed maps.
    """
    return conv2d(logits, weight, bias)


def talking_heads_attention_naive(q, k, v, bias, talking_head1=None, talking_head2=None):
    """Loop twin of `talking_heads_attention`: one image and one query at a time, heads mixed by explicit sums.

    Same parameters and result as `talking_heads_attention`.
    """
    B, h, N, dk = q.shape
    M, dv = v.shape[2:]

    def mix(rows, pair):  # [h, M] -> [h, M]: row h′ = Σ_h W[h′, h]·rows[h] + b[h′]
        if pair is None:
            return rows
        w, b = pair
        return np.array([sum(w[i, j, 0, 0] * rows[j] for j in range(h)) + b[i] for i in range(h)])

    out = np.zeros((B, h, N, dv), dtype=q.dtype)
    probs = np.zeros((B, h, N, M), dtype=q.dtype)
    for n_b in range(B):
        for n in range(N):
            scores = np.array([[q[n_b, i, n] @ k[n_b, i, m] for m in range(M)] for i in range(h)])  # [h, M]
            scores = mix(scores * dk**-0.5 + bias[:, n], talking_head1)
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            probs[n_b, :, n] = p
            weights = mix(p, talking_head2)
            for i in range(h):
                out[n_b, i, n] = weights[i] @ v[n_b, i]
    return out, probs


def talking_heads_attention(q, k, v, bias, talking_head1=None, talking_head2=None):
    """EfficientFormerV2's attention core, with talking heads.

    logits = (q·kᵀ)·dk^-0.5 + bias; talking head 1 mixes the heads' logits; softmax over the keys;
    talking head 2 mixes the heads' probabilities; out = A·v.

    Parameters
    ----------
    q : ndarray of shape [B, h, N, dk]
        Queries.
    k : ndarray of shape [B, h, M, dk]
        Keys.
    v : ndarray of shape [B, h, M, dv]
        Values.
    bias : ndarray of shape [h, N, M]
        Added to the logits.
    talking_head1 : tuple of ndarray, optional
        (weight [h, h, 1, 1], bias [h]) mixing the logits; None: no mixing (the downsampling
        attention has no talking heads).
    talking_head2 : tuple of ndarray, optional
        (weight, bias) mixing the probabilities; None: no mixing.

    Returns
    -------
    out : ndarray of shape [B, h, N, dv]
        A·v.
    probs : ndarray of shape [B, h, N, M]
        The softmax probabilities, before talking head 2: each row sums to 1.
    """
    logits = kernels.matmul(q, k.transpose(0, 1, 3, 2)) * q.shape[-1] ** -0.5 + bias  # [B, h, N, M]
    if talking_head1 is not None:
        logits = talking_heads(logits, *talking_head1)
    probs = softmax(logits, axis=-1)
    mixed = probs if talking_head2 is None else talking_heads(probs, *talking_head2)
    return kernels.matmul(mixed, v), probs  # [B, h, N, dv]
