"""npformer.tools.explain's EfficientFormerV2 steps (notebook 05): each step-by-step recomputation
gives exactly what the model computes in one call (its traced outputs), unfused and fused, on a
small seeded V2 built for 128 px (the demo model's architecture: 4×4 attention inside an 8×8
stage 2) and on S0 at 224 (7×7 inside 14×14)."""

import numpy as np
import pytest

import npformer
from npformer import layers
from npformer.errors import InputError
from npformer.models.efficientformerv2 import model as v2
from npformer.models.efficientformerv2.schema import attention_blocks, attention_grid
from npformer.tools import explain
from npformer.trace import no_trace
from tiers import heavy

SMALL = dict(widths=[16, 24, 32, 48], depths=[1, 1, 2, 2], num_vit=1, mlp_ratios=[[4], [4], [4, 3], [3, 4]],
             num_labels=10, image_size=128)


def seeded_model(case, dtype=np.float64):
    cfg = npformer.EfficientFormerV2Config(**SMALL) if case == "small" else npformer.EfficientFormerV2Config.variant(case)
    return npformer.EfficientFormerV2ForImageClassificationWithTeacher(cfg, dtype=dtype)  # seeded weights


def pixels(model, batch=2, seed=0):
    S = model.config.image_hw[0]
    return np.random.default_rng(seed).standard_normal((batch, 3, S, S)).astype(model.dtype)


@pytest.fixture(scope="module", params=["small", "s0"])
def case(request):
    model = seeded_model(request.param)
    return model, pixels(model)


def test_input_name_walks_back_one_traced_output():
    cfg = seeded_model("small").config
    assert explain.input_name(cfg, "stages.2.blocks.1.token_mixer") == "stages.2.blocks.0"
    assert explain.input_name(cfg, "stages.2.blocks.0") == "stages.2.downsample"
    assert explain.input_name(cfg, "stages.0.blocks.0.mlp") == "stem"
    assert explain.input_name(cfg, "stages.3.downsample.attn") == "stages.2"
    with pytest.raises(InputError, match="stages.2.blocks.5"):
        explain.input_name(cfg, "stages.2.blocks.5.token_mixer")


def test_module_input_is_what_the_block_reads(case):
    model, x = case
    block = attention_blocks(model.config)[0]  # the first stage-2 AttnFFN block
    inp, trace = explain.module_input(model, x, f"{block}.token_mixer", record=[block])
    # the block is x + ls1·mixer(x), then the MLP: its input plus its token mixer's scaled output
    ls1 = model.weights[f"{block}.ls1.gamma"].reshape(1, -1, 1, 1)
    after_mixer = inp + ls1 * trace[f"{block}.token_mixer"]
    block_out = v2.ffn_block(after_mixer, model.params, model.config, no_trace, block)
    np.testing.assert_allclose(block_out, trace[block], rtol=0, atol=1e-12)


@pytest.mark.parametrize("fuse", [False, pytest.param(True, marks=heavy)], ids=["unfused", "fused"])  # fused: heavy
def test_attention4d_steps_equal_the_model(case, fuse):
    model, x = case
    model = model.fuse() if fuse else model
    cfg = model.config
    for block in attention_blocks(cfg):
        name = f"{block}.token_mixer"
        stage = int(block.split(".")[1])
        inp, trace = explain.module_input(model, x, name, record=[f"{name}.upsample", f"{name}.stride_conv"])
        s = explain.attention4d_steps(inp, model, name)
        r = attention_grid(cfg, stage)
        N, h = r[0] * r[1], cfg.num_heads
        assert s["logits"].shape == s["mixed_logits"].shape == s["probs"].shape == s["mixed_probs"].shape == (2, h, N, N)
        assert s["q"].shape == (2, h, N, cfg.key_dim) and s["v"].shape == (2, h, N, cfg.attn_ratio * cfg.key_dim)
        np.testing.assert_allclose(s["probs"], trace[f"{name}.attn_probs"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(s["out"], trace[name], rtol=0, atol=1e-12)
        np.testing.assert_allclose(s["probs"].sum(-1), 1.0, atol=1e-12)
        # talking head 2's rows sum to Σ_h W2[h′, h] + N·b2[h′]
        w2, b2 = explain.talking_heads_weights(model, name)["talking_head2"]
        row_sums = np.broadcast_to((w2.sum(1) + N * b2)[None, :, None], (2, h, N))
        np.testing.assert_allclose(s["mixed_probs"].sum(-1), row_sums, rtol=0, atol=1e-10)
        if stage == 2:  # attends on the half grid, then the bilinear ×2 upsample gives the stage's grid back
            assert s["strided"].shape[2:] == r and s["upsampled"].shape[2:] == inp.shape[2:] == (2 * r[0], 2 * r[1])
            np.testing.assert_allclose(s["strided"], trace[f"{name}.stride_conv"], rtol=0, atol=1e-12)
            np.testing.assert_array_equal(s["upsampled"], layers.upsample_bilinear_2x(s["attended"]))
            np.testing.assert_allclose(s["upsampled"], trace[f"{name}.upsample"], rtol=0, atol=1e-12)
        else:
            assert s["strided"] is inp and s["upsampled"] is s["attended"]


def test_the_steps_match_the_fused_core():
    model = seeded_model("small")
    name = f"{attention_blocks(model.config)[-1]}.token_mixer"
    inp, _ = explain.module_input(model, pixels(model), name)
    s = explain.attention4d_steps(inp, model, name)
    p = model.params
    heads = [(p[f"{name}.{t}.weight"], p[f"{name}.{t}.bias"]) for t in ("talking_head1", "talking_head2")]
    out, probs = layers.talking_heads_attention(s["q"], s["k"], s["v"], s["bias"], *heads)
    np.testing.assert_allclose(probs, s["probs"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out, np.matmul(s["mixed_probs"], s["v"]), rtol=0, atol=1e-12)


def test_talking_heads_effect_is_zero_for_identity_heads():
    model = seeded_model("small")
    name = f"{attention_blocks(model.config)[-1]}.token_mixer"
    h = model.config.num_heads
    eye = {f"{name}.{t}.{k}": v for t in ("talking_head1", "talking_head2")
           for k, v in (("weight", np.eye(h).reshape(h, h, 1, 1)), ("bias", np.zeros(h)))}
    plain = npformer.EfficientFormerV2ForImageClassificationWithTeacher(model.config, {**model.weights, **eye},
                                                                        dtype=np.float64)
    x = pixels(model)
    for m, moved in ((plain, False), (model, True)):
        inp, _ = explain.module_input(m, x, name)
        effect = explain.talking_heads_effect(explain.attention4d_steps(inp, m, name))
        assert set(effect) == {"head1_moves", "head2_moves", "head2_row_sums"}
        assert all(v.shape == (h,) for v in effect.values())
        if moved:  # the seeded heads are far from the identity
            assert effect["head1_moves"].min() > 0.05 and effect["head2_moves"].min() > 0.05
        else:
            np.testing.assert_allclose(effect["head1_moves"], 0, atol=1e-12)
            np.testing.assert_allclose(effect["head2_moves"], 0, atol=1e-12)
            np.testing.assert_allclose(effect["head2_row_sums"], 1, atol=1e-12)
    shares = explain.talking_heads_shares(plain, name)
    assert all(np.array_equal(v, np.ones(h)) for v in shares.values())
    assert all(0 < v.min() and v.max() < 1 for v in explain.talking_heads_shares(model, name).values())


def test_row_distance():
    a = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])  # [1, 1, 2, 2]
    b = np.array([[[[0.0, 1.0], [0.5, 0.5]]]])
    np.testing.assert_allclose(explain.row_distance(a, b), [0.5])  # rows 1 and 0 apart, averaged


@pytest.mark.parametrize("H,W", [(7, 7), (4, 4), (3, 5), (1, 2)])
def test_upsample_matrix_is_the_upsample(H, W):
    U = explain.upsample_matrix(H, W)
    assert U.shape == (4 * H * W, H * W)
    np.testing.assert_allclose(U.sum(axis=1), 1.0, atol=1e-15)
    assert ((U > 0).sum(axis=1) <= 4).all()
    x = np.random.default_rng(1).standard_normal((2, 3, H, W))
    flat = np.einsum("on,bcn->bco", U, x.reshape(2, 3, H * W)).reshape(2, 3, 2 * H, 2 * W)
    np.testing.assert_allclose(flat, layers.upsample_bilinear_2x(x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(flat, layers.upsample_bilinear_2x_naive(x), rtol=0, atol=1e-14)
    if H > 2 and W > 2:  # an interior output pixel blends four inputs 9/16, 3/16, 3/16, 1/16
        assert sorted(U[(2 * W) * 3 + 3][U[(2 * W) * 3 + 3] > 0]) == [1 / 16, 3 / 16, 3 / 16, 9 / 16]


def test_query_positions():
    q = explain.query_positions(14, 14)
    assert q.shape == (49, 2) and q[0].tolist() == [0, 0] and q[1].tolist() == [0, 2] and q[7].tolist() == [2, 0]
    assert explain.query_positions(5, 3).tolist() == [[0, 0], [0, 2], [2, 0], [2, 2], [4, 0], [4, 2]]


@pytest.mark.parametrize("fuse", [False, pytest.param(True, marks=heavy)], ids=["unfused", "fused"])  # fused: heavy
def test_local_global_query_steps_equal_the_model(case, fuse):
    model, x = case
    model = model.fuse() if fuse else model
    cfg = model.config
    name = "stages.3.downsample.attn"
    inp, trace = explain.module_input(model, x, name, record=[f"{name}.q", f"{name}.q.local", f"{name}.q.pool"])
    s = explain.local_global_query_steps(inp, model, name)
    H, W = cfg.grid(2)
    H2, W2 = cfg.grid(3)
    N, N2, h = H * W, H2 * W2, cfg.num_heads
    assert inp.shape[2:] == (H, W) and s["query_map"].shape[2:] == (H2, W2)
    assert s["q"].shape == (2, h, N2, cfg.downsample_key_dim) and s["k"].shape == (2, h, N, cfg.downsample_key_dim)
    assert s["bias_index"].shape == (N2, N) and s["probs"].shape == (2, h, N2, N)
    for step, traced in (("local", "q.local"), ("pooled", "q.pool"), ("query_map", "q")):
        np.testing.assert_allclose(s[step], trace[f"{name}.{traced}"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s["probs"], trace[f"{name}.attn_probs"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s["out"], trace[name], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(s["pooled"], inp[:, :, ::2, ::2])
    # each query's own position on the key grid has offset 0; the index is |Δrow|·W + |Δcol|
    where = explain.query_positions(H, W)
    own = where[:, 0] * W + where[:, 1]
    assert (s["bias_index"][np.arange(N2), own] == 0).all()
    kr, kc = np.divmod(np.arange(N), W)
    expected = np.abs(where[:, :1] - kr[None]) * W + np.abs(where[:, 1:] - kc[None])
    np.testing.assert_array_equal(s["bias_index"], expected)
    table = model.weights[f"{name}.attention_biases"]
    np.testing.assert_array_equal(s["bias"], table[:, expected])


def test_demo_weights_talking_heads_and_prediction():
    chosen = explain.choose_model("efficientformerv2", env={})
    if chosen.kind != "demo":
        pytest.skip("EfficientFormerV2 demo weights not in this checkout")
    model = chosen.model
    assert chosen.size == 128 and model.config.grid(2) == (8, 8)
    x = chosen.processor(explain.REPO / "tests" / "fixtures" / "digits" / "digit_3_705.png")["pixel_values"]
    assert x.shape == (1, 3, 128, 128)
    assert model.config.id2label[int(model(x).logits.argmax())] == "3"
    for block in attention_blocks(model.config):
        name = f"{block}.token_mixer"
        inp, trace = explain.module_input(model, x, name)
        s = explain.attention4d_steps(inp, model, name)
        np.testing.assert_allclose(s["out"], trace[name], rtol=0, atol=1e-6)
