"""The NumPy layers EfficientFormer and SwiftFormer are built from.

Dimension letters, used in every shape comment:
    B batch, C channels (OC out, IC in), H×W spatial size, N = H·W tokens,
    KH×KW kernel size, h heads, dk key dim, dv value dim.

Weights use PyTorch's layouts so that checkpoints load without transposes:
conv weight [OC, IC/groups, KH, KW], linear weight [out, in] (y = x·Wᵀ + b).

Every function keeps the dtype of its input (float32 stays float32; float64 runs end to end in
float64). Each hard op has a `*_naive` twin written as plain loops: the tests check fast against
naive on random shapes, and the twins are the place to start reading.

The functions that multiply (conv2d, linear, the attention products) report their multiply-
accumulates to `npformer.macs` once per call: nothing happens unless a count is running.
"""

from __future__ import annotations

import math

import numpy as np

from .erf import gelu, gelu_tanh
from .errors import InputError
from .macs import count_macs, count_matmul
from .parallel import equal_blocks, for_each_piece


# ---------------------------------------------------------------------------------------------
# convolution


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """2-D convolution (cross-correlation, as PyTorch's Conv2d) with zero padding.

    Three cases, one idea each:
      * 1×1, stride 1: a single matrix product over channels (BLAS).
      * depthwise (groups == IC == OC): the KH·KW shifted copies of each channel, stacked and
        weighted by the channel's taps (one small product per channel).
      * everything else: gather the KH·KW shifted copies ("im2col" by kernel offset), then one
        matrix product per group.
    The products compute fixed blocks of output channels on npformer's workers
    (`parallel.for_each_piece`: the blocks depend on the shape alone), a block's bias added while
    the block is in cache; the depthwise path runs its blocks on the calling thread.
    """
    B, IC, H, W = x.shape
    OC, ICg, KH, KW = weight.shape
    if IC != ICg * groups:
        raise ValueError(f"conv2d: input has {IC} channels, weight expects {ICg}×{groups} groups")
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    count_macs(B * OC * OH * OW * ICg * KH * KW, "conv")  # every path, once: each output sums ICg·KH·KW products
    if KH == KW == 1 and stride == 1 and padding == 0 and groups == 1:
        return _pointwise_conv2d(x, weight, bias)
    if groups == IC == OC and ICg == 1:
        return _depthwise_conv2d(x, weight, bias, stride, padding)
    return _grouped_conv2d(x, weight, bias, stride, padding, groups)


def conv_output_size(H, W, KH, KW, stride=1, padding=0) -> tuple[int, int]:
    """(OH, OW) = ((H + 2p − KH) // s + 1, (W + 2p − KW) // s + 1)."""
    return (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1


def shifted_windows(x, KH, KW, stride=1, padding=0):  # [B, C, H, W] -> KH·KW × [B, C, OH, OW]
    """The input seen through each kernel offset (i, j), in (i, j) row-major order:
    x_pad[:, :, i + s·oh, j + s·ow] (views of the zero-padded input, no copies)."""
    OH, OW = conv_output_size(*x.shape[2:], KH, KW, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    return [
        xp[:, :, i : i + stride * (OH - 1) + 1 : stride, j : j + stride * (OW - 1) + 1 : stride]
        for i in range(KH)
        for j in range(KW)
    ]


def im2col(x, KH, KW, stride=1, padding=0):  # [B, IC, H, W] -> [B, IC·KH·KW, OH·OW]
    """Every receptive field as a column, its rows in the conv weight's (ic, kh, kw) order."""
    B, IC, H, W = x.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    cols = np.stack(shifted_windows(x, KH, KW, stride, padding), axis=2)  # [B, IC, KH·KW, OH, OW]
    return cols.reshape(B, IC * KH * KW, OH * OW)


def _pointwise_conv2d(x, weight, bias):  # [B, IC, H, W] -> [B, OC, H, W]
    """1×1: out[b] = W·x[b], the pixels as the columns of one matrix product per image."""
    B, IC, H, W = x.shape
    OC = weight.shape[0]
    w, pixels = weight.reshape(OC, IC), x.reshape(B, IC, H * W)  # [OC, IC], [B, IC, N]
    out = np.empty((B, OC, H * W), dtype=np.result_type(x, weight))

    def block(c):  # output channels c, of every image
        np.matmul(w[c], pixels, out=out[:, c])
        add_channel_bias(out[:, c], bias, c)

    for_each_piece(OC, IC * H * W, block)
    return out.reshape(B, OC, H, W)


def _depthwise_conv2d(x, weight, bias, stride, padding):  # [B, C, H, W] -> [B, C, OH, OW]
    """Each channel its own KH×KW filter: out[c] = Σ_t tap[c, t] · window_t[c] over the kernel
    offsets t. The KH·KW windows of a block of channels are stacked ([B, c, KH·KW, N]) and each
    channel's taps multiply them as one product ([1, KH·KW] · [KH·KW, N]): two passes over the
    block instead of 2·KH·KW, on blocks of ~128k outputs so the stack stays in cache."""
    B, C, H, W = x.shape
    _, _, KH, KW = weight.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    taps = weight.reshape(C, 1, KH * KW)  # [C, 1, KH·KW]
    out = np.empty((B, C, 1, OH * OW), dtype=np.result_type(x, weight))

    def block(c):  # channels c
        windows = np.stack(shifted_windows(x[:, c], KH, KW, stride, padding), axis=2)  # [B, |c|, KH·KW, OH, OW]
        np.matmul(taps[c], windows.reshape(B, -1, KH * KW, OH * OW), out=out[:, c])  # [B, |c|, 1, N]
        add_channel_bias(out[:, c], bias, c)

    for c in equal_blocks(C, max(1, DEPTHWISE_BLOCK // (B * OH * OW))):  # on one worker: two lost time (README, Speed)
        block(c)
    return out.reshape(B, C, OH, OW)


DEPTHWISE_BLOCK = 1 << 17  # outputs per block (3×3 on 128 × 56², ms: 2.7 in blocks of 8k, 1.0 of 128k, 1.9 unblocked)


def _grouped_conv2d(x, weight, bias, stride, padding, groups):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """im2col, then per group [OC/g, ICg·KH·KW] · [ICg·KH·KW, OH·OW]."""
    B, IC, H, W = x.shape
    OC, ICg, KH, KW = weight.shape
    OH, OW = conv_output_size(H, W, KH, KW, stride, padding)
    cols = im2col(x, KH, KW, stride, padding).reshape(B, groups, ICg * KH * KW, OH * OW)  # each group's rows
    w = weight.reshape(groups, OC // groups, ICg * KH * KW)
    out = np.empty((B, groups, OC // groups, OH * OW), dtype=np.result_type(x, weight))
    group_bias = None if bias is None else bias.reshape(groups, OC // groups)

    def block(c):  # output channels c of every group
        np.matmul(w[:, c], cols, out=out[:, :, c])  # [groups, |c|, K] · [B, groups, K, N] -> [B, groups, |c|, N]
        if group_bias is not None:
            out[:, :, c] += group_bias[:, c, None]

    for_each_piece(OC // groups, groups * cols.shape[2] * OH * OW, block)
    return out.reshape(B, OC, OH, OW)


def add_channel_bias(out, bias, c):  # out [B, |c|, ...] += bias[c], per channel
    if bias is not None:
        out += bias[c].reshape(-1, *(1,) * (out.ndim - 2))  # [|c|] -> [|c|, 1, ...]


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """Loop twin of `conv2d`: out[b, o, y, x] = Σ_{c, i, j} w[o, c, i, j] · in[b, g·ICg + c, s·y + i − p, s·x + j − p]."""
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


# ---------------------------------------------------------------------------------------------
# normalisation, linear, activations


def batch_norm_affine(running_mean, running_var, weight, bias, eps):  # [C] each -> ([C], [C])
    """(α, β′) of an eval-mode BatchNorm, BN(x) = α·x + β′: α = γ / √(var + eps), β′ = β − mean·α."""
    alpha = weight / np.sqrt(running_var + eps)
    return alpha, bias - running_mean * alpha


def batch_norm(x, running_mean, running_var, weight, bias, eps):  # [B, C, H, W] -> [B, C, H, W]
    """BatchNorm in eval mode, computed as PyTorch's CPU kernel does: x·α + β′ (`batch_norm_affine`)."""
    C = x.shape[1]
    alpha, shift = batch_norm_affine(running_mean, running_var, weight, bias, eps)
    return x * alpha.reshape(1, C, 1, 1) + shift.reshape(1, C, 1, 1)


def layer_norm(x, weight, bias, eps):  # [..., C] -> [..., C]
    """LayerNorm over the last axis with the biased variance, as torch.nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias=None):  # [..., IN] -> [..., OUT]
    """y = x·Wᵀ + b with W in PyTorch's [OUT, IN] layout, in fixed blocks of rows (tokens) on
    npformer's workers (`parallel.for_each_piece`: the blocks depend on the shape alone), as
    `conv2d` splits its products by output channels (README, Speed)."""
    count_macs(math.prod(x.shape[:-1]) * weight.size, "matmul")  # prod(leading dims)·OUT·IN
    OUT, IN = weight.shape
    rows = x.reshape(-1, IN)  # [M, IN], M = prod(leading dims); a view for one image's tokens
    y = np.empty((rows.shape[0], OUT), dtype=x.dtype)

    def block(r):  # one block of rows on one worker, its bias added while in cache
        np.matmul(rows[r], weight.T, out=y[r])
        if bias is not None:
            y[r] += bias

    for_each_piece(rows.shape[0], weight.size, block)
    return y.reshape(*x.shape[:-1], OUT)


def relu(x):
    return np.maximum(x, 0)


ACTIVATIONS = {
    "gelu": gelu,  # exact: 0.5·x·(1 + erf(x/√2)), the only form the references use
    "relu": relu,
    "gelu_new": gelu_tanh,  # transformers' names for the tanh approximation
    "gelu_pytorch_tanh": gelu_tanh,
}


def l2_normalize(x, axis, eps=1e-12):
    """x / max(‖x‖₂, eps) along `axis`, as torch.nn.functional.normalize."""
    norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    return x / np.maximum(norm, eps)


def softmax(x, axis=-1):
    """Numerically stable softmax: exp(x − max) / Σ exp(x − max)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------
# pooling token mixer


def avg_pool2d(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """Stride-1 average pooling with padding k//2 and count_include_pad=False.

    Each output is the mean of the *valid* pixels under the window: at a corner of a 3×3 window
    that is 4 pixels, on an edge 6, inside 9. The k×k window sum is separable: sum k shifted
    copies along W, then k along H (2(k−1) additions instead of k²−1), of the zero-padded input;
    it is then divided by the per-position count of valid pixels, itself a product of 1-D counts.
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
    """How many of the k window positions centred on each index fall inside 0 .. length − 1."""
    i, pad = np.arange(length), k // 2
    return (np.minimum(i + pad, length - 1) - np.maximum(i - pad, 0) + 1).astype(dtype)


def avg_pool2d_naive(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """Loop twin of `avg_pool2d`."""
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


def pool_mixer(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """EfficientFormer's pooling token mixer: avgpool(x) − x (the block adds x back)."""
    mixed = avg_pool2d(x, kernel_size)
    mixed -= x
    return mixed


# ---------------------------------------------------------------------------------------------
# multi-head attention with a learned relative-position bias


def attention_bias_index(resolution):  # -> [N, N] int64, N = resolution²
    """Index into the bias table for each (query, key) token pair on a square grid:
    idx[n1, n2] = |r1 − r2|·R + |c1 − c2| for tokens n = r·R + c (R = resolution)."""
    r, c = np.divmod(np.arange(resolution * resolution), resolution)
    return np.abs(r[:, None] - r[None, :]) * resolution + np.abs(c[:, None] - c[None, :])


def gather_attention_bias(table, resolution):  # [h, R²] -> [h, N, N]
    """The learned table (one value per distinct offset and head) spread into a full bias matrix."""
    return table[:, attention_bias_index(resolution)]


def multi_head_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim):
    """EfficientFormer's Meta3D attention.  # [B, N, C] -> ([B, N, C], [B, h, N, N])

    qkv is one Linear whose output is, per head, [q (dk) | k (dk) | v (dv)]: heads interleaved,
    not a q-block, k-block, v-block. logits = (q·kᵀ)·dk^-0.5 + bias; probabilities = softmax over
    keys; the heads' outputs are concatenated (channel = head·dv + d) and projected back to C.
    Returns the output and the attention probabilities.
    """
    B, N, C = x.shape
    qkv = linear(x, qkv_weight, qkv_bias)  # [B, N, h·(2dk + dv)]
    qkv = qkv.reshape(B, N, num_heads, -1).transpose(0, 2, 1, 3)  # [B, h, N, 2dk + dv]
    q = qkv[..., :key_dim]  # [B, h, N, dk]
    k = qkv[..., key_dim : 2 * key_dim]  # [B, h, N, dk]
    v = qkv[..., 2 * key_dim :]  # [B, h, N, dv]
    count_matmul(q, k.transpose(0, 1, 3, 2))
    logits = np.matmul(q, k.transpose(0, 1, 3, 2)) * key_dim**-0.5 + attn_bias  # [B, h, N, N]
    probs = softmax(logits, axis=-1)
    count_matmul(probs, v)
    out = np.matmul(probs, v)  # [B, h, N, dv]
    out = out.transpose(0, 2, 1, 3).reshape(B, N, -1)  # [B, N, h·dv]
    return linear(out, proj_weight, proj_bias), probs


def multi_head_attention_naive(x, qkv_weight, qkv_bias, proj_weight, proj_bias, attn_bias, num_heads, key_dim):
    """Loop twin of `multi_head_attention`: one head, one query at a time."""
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


# ---------------------------------------------------------------------------------------------
# EfficientFormerV2: bilinear ×2 upsampling, talking heads, attention on a grid of any aspect


def bilinear_taps(n_in, dtype):  # -> ([2n] int64, [2n] int64, [2n] dtype)
    """Where each output index o of a ×2 bilinear upsampling reads along one axis of length n
    (torch, align_corners=False): src = max((o + 0.5)/2 − 0.5, 0), i0 = ⌊src⌋, i1 = min(i0 + 1, n − 1),
    λ = src − i0, out[o] = (1 − λ)·in[i0] + λ·in[i1]. λ is 0.25 or 0.75 (0 at o = 0), exact in float32."""
    src = np.maximum((np.arange(2 * n_in) + 0.5) / 2 - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(dtype)


def upsample_bilinear_2x(x):  # [B, C, H, W] -> [B, C, 2H, 2W]
    """×2 bilinear upsampling, as torch's nn.Upsample(scale_factor=2, mode="bilinear") with
    align_corners=False: blend the two nearest input columns, then the two nearest input rows
    (torch's order), with the weights of `bilinear_taps`."""
    B, C, H, W = x.shape
    r0, r1, a = bilinear_taps(H, x.dtype)
    c0, c1, b = bilinear_taps(W, x.dtype)
    cols = x[:, :, :, c0] * (1 - b) + x[:, :, :, c1] * b  # [B, C, H, 2W]
    return cols[:, :, r0] * (1 - a)[:, None] + cols[:, :, r1] * a[:, None]  # [B, C, 2H, 2W]


def upsample_bilinear_2x_naive(x):  # [B, C, H, W] -> [B, C, 2H, 2W]
    """Loop twin of `upsample_bilinear_2x`: each output pixel from its four input neighbours."""
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


def attention_bias_index_grid(H, W, query_stride=1):  # -> [Nq, N] int64, N = H·W, Nq = ⌈H/s⌉·⌈W/s⌉
    """Index into the bias table for each (query, key) pair on an H×W key grid of any aspect:
    idx = |Δrow|·W + |Δcol| (timm's closed form), the queries sitting at every `query_stride`-th
    row and column of the key grid (EfficientFormerV2's downsampling attention: stride 2, 7×7
    queries over 14×14 keys). With stride 1 on a square grid it equals `attention_bias_index`."""
    kr, kc = np.divmod(np.arange(H * W), W)  # [N] row and column of each key
    qr, qc = np.meshgrid(np.arange(0, H, query_stride), np.arange(0, W, query_stride), indexing="ij")
    qr, qc = qr.reshape(-1), qc.reshape(-1)  # [Nq] the queries' rows and columns, row-major
    return np.abs(qr[:, None] - kr[None, :]) * W + np.abs(qc[:, None] - kc[None, :])


def talking_heads(logits, weight, bias):  # [B, h, N, M] -> [B, h, N, M]
    """Mix the heads: a 1×1 convolution with the heads as channels (weight [h, h, 1, 1], as a
    PyTorch Conv2d stores it), out[h′] = Σ_h W[h′, h]·logits[h] + b[h′] at every (query, key)."""
    return conv2d(logits, weight, bias)


def talking_heads_attention(q, k, v, bias, talking_head1=None, talking_head2=None):
    """EfficientFormerV2's attention core: q [B, h, N, dk], k [B, h, M, dk], v [B, h, M, dv] and a
    bias [h, N, M] -> (out [B, h, N, dv], probabilities [B, h, N, M]).

    logits = (q·kᵀ)·dk^-0.5 + bias; talking head 1 mixes the heads' logits; softmax over the keys;
    talking head 2 mixes the heads' probabilities; out = A·v. `talking_head1`, `talking_head2`:
    (weight, bias) pairs, or None (the downsampling attention has no talking heads). Returns out
    and the softmax probabilities (before talking head 2: each row sums to 1).
    """
    count_matmul(q, k.transpose(0, 1, 3, 2))  # the talking heads count as the 1×1 convolutions they are
    logits = np.matmul(q, k.transpose(0, 1, 3, 2)) * q.shape[-1] ** -0.5 + bias  # [B, h, N, M]
    if talking_head1 is not None:
        logits = talking_heads(logits, *talking_head1)
    probs = softmax(logits, axis=-1)
    mixed = probs if talking_head2 is None else talking_heads(probs, *talking_head2)
    count_matmul(mixed, v)
    return np.matmul(mixed, v), probs  # [B, h, N, dv]


def talking_heads_attention_naive(q, k, v, bias, talking_head1=None, talking_head2=None):
    """Loop twin of `talking_heads_attention`: one image and one query at a time, heads mixed by explicit sums."""
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


# ---------------------------------------------------------------------------------------------
# resampling an image to any size: torch's F.interpolate (bilinear, bicubic; align_corners=False;
# antialias off or on), as one small weight matrix per axis: out = Wy · x · Wxᵀ

INTERPOLATION_MODES = ("bilinear", "bicubic")
CUBIC_A = -0.75  # Keys' cubic kernel parameter of torch's plain bicubic (as OpenCV)
CUBIC_A_ANTIALIAS = -0.5  # ... of torch's antialiased bicubic (as PIL)


def rounding(dtype):  # -> function: float64 array -> float64 array
    """The weight helpers below compute in float64 and call this where torch's kernel rounds to
    the input's dtype: a round trip through float32 for float32 inputs, nothing for float64.

    Note: torch's compiled CPU kernels fuse some multiply-adds (one FMA, one rounding); an
    expression inside one `rnd(...)` below is such a fused step: float32 operands, computed in
    float64 (exactly, for the coordinates) and rounded once. Which steps torch fuses was
    measured (torch 2.13.0 CPU wheel, AVX2 and AVX512 kernels alike): with these roundings the
    float32 weights equal torch's bit for bit. torch's DEFAULT kernels (CPUs without AVX2) fuse
    nothing and differ by up to 1e-5. In float64 the fused steps round twice here (weights
    ≤ 2e-14 from torch's)."""
    if np.dtype(dtype) == np.float32:
        return lambda v: np.asarray(v, np.float64).astype(np.float32).astype(np.float64)
    return lambda v: np.asarray(v, np.float64)


def source_coordinate(in_size, out_size, dtype):  # -> [out_size] float64 (values of dtype)
    """Where output index o samples the input along one axis (align_corners=False):
    src = s·(o + ½) − ½ with s = in/out, both in the input's dtype, s·(o + ½) − ½ fused (see
    `rounding`). How much this matters in float32 (49 → 70, 196 → 256, 224 → 97, max |Δ| from
    torch's output): 4.8e-7 so, 4.6e-5 rounding the product before subtracting ½, 9.8e-5 with
    float64 coordinates (numerics.md §12.4)."""
    rnd = rounding(dtype)
    scale = rnd(np.float64(in_size) / out_size)
    return rnd(scale * (np.arange(out_size) + 0.5) - 0.5)


def floor_and_fraction(src, in_size, dtype):  # [out] -> ([out] int64, [out] float64)
    """torch's split of a source coordinate: i = min(⌊src⌋, in − 1), the floor taken in float32
    whatever the dtype (torch calls floorf), and λ = src − i in dtype (it rounds when src < 0),
    clamped to [0, 1]."""
    i = np.minimum(np.floor(src.astype(np.float32)), in_size - 1).astype(np.int64)
    return i, np.clip(rounding(dtype)(src - i), 0.0, 1.0)


def cubic_kernel(x, a, dtype=np.float64, fused_last=False):  # [...] -> [...]
    """Keys' cubic convolution kernel at distance x:
    (a+2)|x|³ − (a+3)|x|² + 1 for |x| ≤ 1, a|x|³ − 5a|x|² + 8a|x| − 4a for 1 < |x| < 2, else 0,
    in torch's Horner form and roundings (`rounding`). torch's plain bicubic rounds the last
    product before the last addition; its antialias filter fuses that step too (`fused_last`)."""
    rnd = rounding(dtype)
    x = np.abs(x)
    near = rnd(rnd((a + 2) * x - (a + 3)) * x)  # ((a+2)|x| − (a+3))·|x|, then ·|x| + 1
    far = rnd(rnd(a * x - 5 * a) * x + 8 * a)  # ((a|x| − 5a)·|x| + 8a), then ·|x| − 4a
    if fused_last:
        near, far = rnd(near * x + 1), rnd(far * x - 4 * a)
    else:
        near, far = rnd(rnd(near * x) + 1), rnd(rnd(far * x) - 4 * a)
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def linear_taps(in_size, out_size, dtype):  # -> ([out, 2] int64, [out, 2] float64)
    """Bilinear along one axis, antialias off: src clamped to ≥ 0, i = ⌊src⌋, λ = src − i;
    out[o] = (1 − λ)·in[i] + λ·in[min(i + 1, in − 1)]."""
    rnd = rounding(dtype)
    i, lam = floor_and_fraction(np.maximum(source_coordinate(in_size, out_size, dtype), 0.0), in_size, dtype)
    return np.stack([i, np.minimum(i + 1, in_size - 1)], 1), np.stack([rnd(1 - lam), lam], 1)


def cubic_taps(in_size, out_size, dtype):  # -> ([out, 4] int64, [out, 4] float64)
    """Bicubic along one axis, antialias off: src not clamped, i = ⌊src⌋, t = src − i; taps
    i−1 … i+2 with indices clamped to [0, in − 1] (the edge pixel repeats), weighted by the
    cubic kernel (a = −0.75) at their distances t+1, t, 1−t, 2−t from src."""
    rnd = rounding(dtype)
    i, t = floor_and_fraction(source_coordinate(in_size, out_size, dtype), in_size, dtype)
    s = rnd(1 - t)
    index = np.clip(i[:, None] + np.arange(-1, 3), 0, in_size - 1)  # [out, 4]
    distance = np.stack([rnd(t + 1), t, s, rnd(s + 1)], 1)  # [out, 4]
    return index, cubic_kernel(distance, CUBIC_A, dtype)


def antialias_taps(in_size, out_size, mode, dtype):  # -> ([out, K] int64, [out, K] float64)
    """Antialiased resampling along one axis (torch's `_upsample_*_aa`, as PIL): output o is a
    normalised sum over the input pixels j whose centres lie within `support` of its centre
    c = s·(o + ½), weighted by the filter at (j + ½ − c)/max(s, 1): the triangle 1 − |x|
    (bilinear) or the cubic kernel with a = −0.5 (bicubic). support = 1 or 2, times s when
    downsampling (s > 1): the filter widens so that every input pixel counts. Unlike the plain
    modes, taps outside the image are dropped and the rest renormalised; the edge never repeats.
    K = 2⌈support⌉ + 1 taps per output, unused ones with weight 0."""
    rnd = rounding(dtype)
    scale = rnd(np.float64(in_size) / out_size)
    half_width = 1.0 if mode == "bilinear" else 2.0
    support = rnd(half_width * scale) if scale >= 1 else half_width
    inv_scale = rnd(1 / scale) if scale >= 1 else 1.0
    K = int(np.ceil(support)) * 2 + 1
    centre = rnd(scale * (np.arange(out_size) + 0.5))  # [out]
    # the window [first, stop) of input pixels within support of the centre, clipped to the image
    first = np.maximum(np.floor(rnd(centre - support) + 0.5), 0).astype(np.int64)  # [out]
    stop = np.minimum(np.floor(rnd(centre + support) + 0.5).astype(np.int64), in_size)  # [out]
    j = first[:, None] + np.arange(K)  # [out, K] input pixels
    x = rnd((rnd(j - centre[:, None]) + 0.5) * inv_scale)  # [out, K] filter arguments
    if mode == "bilinear":
        w = np.where(np.abs(x) < 1, rnd(1 - np.abs(x)), 0.0)
    else:
        w = cubic_kernel(x, CUBIC_A_ANTIALIAS, dtype, fused_last=True)
    w = np.where(j < np.minimum(stop, first + K)[:, None], w, 0.0)  # taps past the window weigh 0
    total = np.zeros(out_size)
    for k in range(K):  # torch adds the taps up one by one, in dtype
        total = rnd(total + w[:, k])
    w = np.divide(w, total[:, None], out=w, where=total[:, None] != 0)
    return np.minimum(j, in_size - 1), rnd(w)


def resampling_weights(in_size, out_size, mode="bilinear", antialias=False, dtype=np.float32):  # -> [out, in]
    """The matrix M that resamples one axis as torch's F.interpolate does: out = M @ in.

    Each row holds the weights of one output index: 2 (bilinear) or 4 (bicubic) taps, or up to
    2⌈support⌉ + 1 with antialias (`linear_taps`, `cubic_taps`, `antialias_taps`). Taps clamped
    onto the same edge pixel add up, one by one in dtype, as torch's sum does. Equal sizes give
    the identity (torch copies). In float32 the matrix equals torch's weights bit for bit.
    """
    if in_size == out_size:
        return np.eye(out_size, dtype=dtype)
    if antialias:
        index, weight = antialias_taps(in_size, out_size, mode, dtype)
    elif mode == "bilinear":
        index, weight = linear_taps(in_size, out_size, dtype)
    else:
        index, weight = cubic_taps(in_size, out_size, dtype)
    M = np.zeros((out_size, in_size), dtype=dtype)
    rows = np.arange(out_size)
    for k in range(index.shape[1]):  # tap by tap, in torch's order
        np.add.at(M, (rows, index[:, k]), weight[:, k].astype(dtype))
    return M


def interpolate(x, size, mode="bilinear", antialias=False):  # [..., H, W] -> [..., OH, OW]
    """Resample the last two axes to `size` = (OH, OW) (or one int for both), as
    torch.nn.functional.interpolate(x, size, mode=mode, align_corners=False, antialias=antialias):
    mode "bilinear" or "bicubic", upsampling or downsampling by any ratio, in x's dtype (float32
    or float64). Both modes are separable: out = Wy · x · Wxᵀ with one `resampling_weights`
    matrix per axis, columns first (torch's order). Measured against torch 2.13.0: ≤ 1e-6 in
    float32 (float32 weights bit-identical; what remains is summation order) and ≤ 1e-13 in
    float64 (tests/test_interpolate.py).

    Note: torch's antialias path gives every output row the weights of row 0 when the output is
    one column wide and the height changes (OW = 1, H ≠ OH); npformer keeps the formula there."""
    x, (OH, OW) = check_interpolation(x, size, mode, antialias, "interpolate")
    H, W = x.shape[-2:]
    rows = resampling_weights(H, OH, mode, antialias, x.dtype)  # [OH, H]
    cols = resampling_weights(W, OW, mode, antialias, x.dtype)  # [OW, W]
    return np.matmul(rows, np.matmul(x, cols.T))  # [..., H, W] -> [..., H, OW] -> [..., OH, OW]


def check_interpolation(x, size, mode, antialias, name):  # -> (x, (OH, OW))
    """An InputError naming what is wrong with the arguments of `interpolate`, else them, cleaned."""
    if not isinstance(mode, str) or mode not in INTERPOLATION_MODES:
        raise InputError(f"{name}: mode={mode!r} is not one of {', '.join(map(repr, INTERPOLATION_MODES))}")
    if not isinstance(antialias, (bool, np.bool_)):
        raise InputError(f"{name}: antialias must be True or False, got {antialias!r}")
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n > 0 for n in pair)):
        raise InputError(f"{name}: size must be a positive int or a pair (OH, OW) of positive ints, got {size!r}")
    x = np.asarray(x)
    if x.ndim < 2 or 0 in x.shape[-2:]:
        raise InputError(f"{name}: expected an array [..., H, W] with H, W ≥ 1 (e.g. [C, H, W] or "
                         f"[B, C, H, W]), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise InputError(f"{name}: expected float32 or float64 values, got {x.dtype}")
    return x, (int(pair[0]), int(pair[1]))


def interpolate_naive(x, size, mode="bilinear", antialias=False):  # [..., H, W] -> [..., OH, OW]
    """Loop twin of `interpolate`: every output pixel summed over its row taps and column taps,
    each weight straight from the formula in float64 (`resampling_taps_naive`). Without torch's
    float32 roundings, in float32 it misses torch by up to 1e-4 on non-dyadic ratios (224 → 97):
    that is the gap `interpolate`'s roundings close."""
    x, (OH, OW) = check_interpolation(x, size, mode, antialias, "interpolate_naive")
    H, W = x.shape[-2:]
    row_taps = [resampling_taps_naive(H, OH, oy, mode, antialias) for oy in range(OH)]
    col_taps = [resampling_taps_naive(W, OW, ox, mode, antialias) for ox in range(OW)]
    x64 = x.astype(np.float64)
    out = np.zeros(x.shape[:-2] + (OH, OW))
    for oy in range(OH):
        for ox in range(OW):
            for iy, wy in row_taps[oy]:
                for ix, wx in col_taps[ox]:
                    out[..., oy, ox] += wy * wx * x64[..., iy, ix]
    return out.astype(x.dtype)


def resampling_taps_naive(in_size, out_size, o, mode, antialias):  # -> [(input index, weight), ...]
    """The input pixels output index o reads along one axis, and their weights, from the formulas.

    Plain: src = s·(o + ½) − ½ (s = in/out); the taps j around src (⌊src⌋, ⌊src⌋+1 for bilinear,
    ⌊src⌋−1 … ⌊src⌋+2 for bicubic) weigh kernel(src − j), the triangle or Keys' cubic with
    a = −0.75, and read pixel j clamped into the image. Antialias: the pixels j whose centres lie
    within support = (1 or 2)·max(s, 1) of c = s·(o + ½) weigh filter((j + ½ − c)/max(s, 1))
    (cubic a = −0.5), normalised to sum 1.
    """
    s = in_size / out_size
    if antialias:
        stretch = max(s, 1.0)
        support = (1.0 if mode == "bilinear" else 2.0) * stretch
        centre = s * (o + 0.5)
        first, stop = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        taps = [(j, _filter_naive((j + 0.5 - centre) / stretch, mode, CUBIC_A_ANTIALIAS)) for j in range(first, stop)]
        total = sum(w for _, w in taps)
        return [(j, w / total) for j, w in taps]
    src = s * (o + 0.5) - 0.5
    base = math.floor(src)
    offsets = (0, 1) if mode == "bilinear" else (-1, 0, 1, 2)
    return [(min(max(base + k, 0), in_size - 1), _filter_naive(src - (base + k), mode, CUBIC_A)) for k in offsets]


def _filter_naive(x, mode, a):  # distance -> weight
    """The triangle max(0, 1 − |x|) (bilinear) or Keys' cubic kernel with parameter a (bicubic)."""
    x = abs(x)
    if mode == "bilinear":
        return max(0.0, 1.0 - x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0
