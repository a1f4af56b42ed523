"""Each layer: fast vs its loop twin on random shapes (always), and vs torch (oracle tier)."""

import numpy as np
import pytest

from npformer import layers

RNG = np.random.default_rng(0)

# (B, IC, H, W, OC, K, stride, padding, groups): dense, strided, depthwise, grouped, 1×1, odd sizes
CONV_CASES = [
    (2, 3, 9, 11, 4, 3, 2, 1, 1),
    (1, 5, 8, 8, 6, 3, 1, 1, 1),
    (2, 6, 7, 10, 6, 3, 1, 1, 6),
    (1, 4, 9, 9, 4, 3, 2, 1, 4),
    (2, 4, 6, 5, 8, 3, 1, 0, 2),
    (2, 7, 5, 6, 3, 1, 1, 0, 1),
    (1, 3, 13, 12, 2, 5, 3, 2, 1),
]


def random(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_naive_twin(case):
    B, IC, H, W, OC, K, stride, padding, groups = case
    x, w, b = random(B, IC, H, W), random(OC, IC // groups, K, K), random(OC)
    fast = layers.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    naive = layers.conv2d_naive(x, w, b, stride=stride, padding=padding, groups=groups)
    assert fast.shape == naive.shape
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_keeps_dtype(dtype):
    for B, IC, H, W, OC, K, stride, padding, groups in CONV_CASES:
        out = layers.conv2d(random(B, IC, H, W, dtype=dtype), random(OC, IC // groups, K, K, dtype=dtype),
                            random(OC, dtype=dtype), stride=stride, padding=padding, groups=groups)
        assert out.dtype == dtype


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (1, 2, 2, 9), (3, 1, 6, 6)])
def test_avg_pool_matches_naive_twin(shape):
    x = random(*shape)
    np.testing.assert_allclose(layers.avg_pool2d(x), layers.avg_pool2d_naive(x), rtol=0, atol=1e-14)


def test_avg_pool_divides_by_valid_pixels_only():
    x = np.ones((1, 1, 4, 4))
    np.testing.assert_array_equal(layers.avg_pool2d(x), x)  # a count that included the padding would give 4/9 at corners
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 0] = 36.0
    out = layers.avg_pool2d(x)[0, 0]
    assert out[0, 0] == 9.0 and out[0, 1] == 6.0 and out[1, 1] == 4.0  # corner /4, edge /6, centre /9


@pytest.mark.parametrize("B,N,C,h,dk,dv", [(2, 9, 16, 2, 4, 8), (1, 49, 24, 8, 3, 12), (3, 4, 8, 1, 8, 8)])
def test_attention_matches_naive_twin(B, N, C, h, dk, dv):
    x = random(B, N, C)
    qkv_w, qkv_b = random(h * (2 * dk + dv), C), random(h * (2 * dk + dv))
    proj_w, proj_b = random(C, h * dv), random(C)
    bias = random(h, N, N)
    out, probs = layers.multi_head_attention(x, qkv_w, qkv_b, proj_w, proj_b, bias, h, dk)
    out_n, probs_n = layers.multi_head_attention_naive(x, qkv_w, qkv_b, proj_w, proj_b, bias, h, dk)
    np.testing.assert_allclose(out, out_n, rtol=0, atol=1e-11)
    np.testing.assert_allclose(probs, probs_n, rtol=0, atol=1e-14)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-14)


def test_attention_bias_index_is_relative_offset():
    idx = layers.attention_bias_index(7)
    assert idx.shape == (49, 49) and idx.max() == 48 and len(np.unique(idx)) == 49
    # token 8 = (row 1, col 1), token 47 = (row 6, col 5): offset (5, 4) -> 5·7 + 4
    assert idx[8, 47] == idx[47, 8] == 39
    assert (np.diag(idx) == 0).all()


def test_layer_norm_and_batch_norm_formulas():
    x = random(2, 5, 3, 3)
    mean, var, w, b = random(5), RNG.uniform(0.5, 2, 5), random(5), random(5)
    expect = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * w[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(layers.batch_norm(x, mean, var, w, b, 1e-5), expect, atol=1e-13)
    t = random(2, 7, 6)
    expect = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-12) * w[0] + b[0]
    np.testing.assert_allclose(layers.layer_norm(t, w[0], b[0], 1e-12), expect, atol=1e-13)


def test_softmax_is_stable():
    p = layers.softmax(np.array([[1000.0, 1000.0], [-1000.0, 0.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# oracle tier: each op against torch


@pytest.mark.oracle
@pytest.mark.parametrize("dtype,atol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_ops_match_torch(dtype, atol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731

    for B, IC, H, W, OC, K, stride, padding, groups in CONV_CASES:
        x, w, b = random(B, IC, H, W, dtype=dtype), random(OC, IC // groups, K, K, dtype=dtype), random(OC, dtype=dtype)
        ref = F.conv2d(t(x), t(w), t(b), stride=stride, padding=padding, groups=groups).numpy()
        np.testing.assert_allclose(layers.conv2d(x, w, b, stride, padding, groups), ref, rtol=0, atol=atol * 4)

    x = random(2, 6, 9, 8, dtype=dtype)
    ref = F.avg_pool2d(t(x), 3, 1, 1, count_include_pad=False).numpy()
    np.testing.assert_allclose(layers.avg_pool2d(x), ref, rtol=0, atol=atol)

    mean, var = random(6, dtype=dtype), RNG.uniform(0.5, 2, 6).astype(dtype)
    w, b = random(6, dtype=dtype), random(6, dtype=dtype)
    ref = F.batch_norm(t(x), t(mean), t(var), t(w), t(b), training=False, eps=1e-5).numpy()
    np.testing.assert_allclose(layers.batch_norm(x, mean, var, w, b, 1e-5), ref, rtol=0, atol=atol)

    tokens = random(2, 49, 6, dtype=dtype)
    ref = F.layer_norm(t(tokens), (6,), t(w), t(b), eps=1e-12).numpy()
    np.testing.assert_allclose(layers.layer_norm(tokens, w, b, 1e-12), ref, rtol=0, atol=atol * 4)

    lw, lb = random(5, 6, dtype=dtype), random(5, dtype=dtype)
    np.testing.assert_allclose(layers.linear(tokens, lw, lb), F.linear(t(tokens), t(lw), t(lb)).numpy(), rtol=0, atol=atol * 4)
    np.testing.assert_allclose(layers.softmax(tokens), torch.softmax(t(tokens), -1).numpy(), rtol=0, atol=atol)
    np.testing.assert_allclose(layers.ACTIVATIONS["gelu"](tokens), F.gelu(t(tokens)).numpy(), rtol=0, atol=atol)
    np.testing.assert_allclose(layers.relu(tokens), F.relu(t(tokens)).numpy(), rtol=0, atol=0)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype,atol", [(np.float32, 3e-6), (np.float64, 1e-13)])
def test_attention_matches_transformers(dtype, atol):
    torch = pytest.importorskip("torch")
    from transformers.models.efficientformer.modeling_efficientformer import EfficientFormerSelfAttention

    C, h, dk, ratio, R = 40, 8, 32, 4, 7
    ref = EfficientFormerSelfAttention(C, dk, h, ratio, R).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for prm in ref.parameters():
            prm.copy_(torch.from_numpy(random(*prm.shape, dtype=dtype) * 0.3))
    ref.eval()  # gathers the bias table into its cache
    x = random(2, R * R, C, dtype=dtype)
    with torch.no_grad():
        out_ref, probs_ref = ref(torch.from_numpy(x), output_attentions=True)
    table = ref.attention_biases.detach().numpy()
    bias = layers.gather_attention_bias(table, R)
    np.testing.assert_array_equal(bias, ref.ab.numpy())
    out, probs = layers.multi_head_attention(
        x, ref.qkv.weight.detach().numpy(), ref.qkv.bias.detach().numpy(),
        ref.projection.weight.detach().numpy(), ref.projection.bias.detach().numpy(), bias, h, dk)
    np.testing.assert_allclose(probs, probs_ref.numpy(), rtol=0, atol=atol)
    scale = np.abs(out_ref.numpy()).max()  # outputs reach ~30 here: compare relative to that
    np.testing.assert_allclose(out, out_ref.numpy(), rtol=0, atol=atol * scale)
