"""npformer.tools.explain: what the notebooks compute (numpy only; the plotting smoke test is in test_notebooks.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer import layers
from npformer.tools import explain
from npformer.cli import stage_level_names
from npformer.tools.golden import compare_fixtures, trace_to_fixture

ROOT = Path(__file__).resolve().parent.parent
DIGIT = ROOT / "tests" / "fixtures" / "digits" / "digit_3_705.png"
HF_CHECKPOINT = ROOT / "tests" / "fixtures" / "checkpoints" / "hf_safetensors"
RNG = np.random.default_rng(0)
demo = pytest.mark.skipif(not all(explain.DEMO_WEIGHTS[f].is_file() for f in ("efficientformer", "swiftformer")),
                          reason="demo weights not in this checkout")


def random(*shape):
    return RNG.standard_normal(shape)


@pytest.fixture(scope="module")
def ef_demo():
    return explain.choose_model("efficientformer", env={})


@pytest.fixture(scope="module")
def l1_backbone():
    return npformer.EfficientFormerModel(npformer.EfficientFormerConfig.variant("l1"))  # seeded


@pytest.fixture(scope="module")
def sf_demo():
    return explain.choose_model("swiftformer", env={})


# ---------------------------------------------------------------------------------------------
# package hygiene


def test_explain_and_plots_do_not_import_matplotlib():
    code = "import sys, npformer.tools.explain, npformer.tools.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# which weights


@demo
def test_choose_model_prefers_the_demo_weights(ef_demo, sf_demo):
    assert ef_demo.kind == "demo" and ef_demo.size == 112 and ef_demo.path == explain.DEMO_WEIGHTS["efficientformer"]
    assert type(ef_demo.model).__name__ == "EfficientFormerForImageClassificationWithTeacher"
    assert ef_demo.description.startswith("demo weights weights/efficientformer-digits.safetensors")
    assert sf_demo.kind == "demo" and sf_demo.model.config.attention_generation == "v2"
    assert ef_demo.processor(DIGIT)["pixel_values"].shape == (1, 3, 112, 112)


def test_choose_model_seeded_when_asked_or_without_demo(monkeypatch):
    chosen = explain.choose_model("efficientformer", weights="seeded")
    assert chosen.kind == "seeded" and chosen.size == 224 and chosen.path is None
    assert chosen.model.config.hidden_sizes == [48, 96, 224, 448]  # L1
    assert "seeded weights" in chosen.description and "L1" in chosen.description and "asked for" in chosen.description
    monkeypatch.setitem(explain.DEMO_WEIGHTS, "swiftformer", ROOT / "no-such-file.safetensors")
    chosen = explain.choose_model("swiftformer", env={})
    assert chosen.kind == "seeded" and chosen.model.config.embed_dims == [48, 56, 112, 220]  # XS
    assert chosen.model.config.attention_generation == "v2" and "no demo weights" in chosen.description
    assert explain.choose_model("efficientformer", env={"NPFORMER_WEIGHTS": "seeded"}).kind == "seeded"


def test_choose_model_uses_a_checkpoint_of_its_family():
    chosen = explain.choose_model("efficientformer", env={"NPFORMER_WEIGHTS": str(HF_CHECKPOINT)})
    assert chosen.kind == "checkpoint" and chosen.path == HF_CHECKPOINT and chosen.size == 224
    assert chosen.description.startswith(f"checkpoint {HF_CHECKPOINT}")
    other = explain.choose_model("swiftformer", weights=HF_CHECKPOINT)  # an EfficientFormer: not used
    assert other.kind != "checkpoint" and other.model.family == "swiftformer"
    assert "holds an EfficientFormer model; this notebook needs a SwiftFormer" in other.description
    with pytest.raises(ValueError, match="family"):
        explain.choose_model("vit")


def test_pixels_to_image():
    image = explain.pixels_to_image(np.linspace(-2, 3, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5))
    assert image.shape == (4, 5, 3) and image.min() == 0.0 and image.max() == 1.0
    assert np.all(explain.pixels_to_image(np.ones((3, 2, 2))) == 0)


# ---------------------------------------------------------------------------------------------
# convolution, BatchNorm


@pytest.mark.parametrize("B,IC,H,W,OC,K,stride,padding", [(2, 3, 9, 11, 4, 3, 2, 1), (1, 5, 8, 8, 6, 3, 1, 1),
                                                          (1, 2, 7, 6, 3, 1, 1, 0), (1, 3, 13, 12, 2, 5, 3, 2)])
def test_convolution_three_ways_agree_with_the_loops(B, IC, H, W, OC, K, stride, padding):
    x, w, b = random(B, IC, H, W), random(OC, IC, K, K), random(OC)
    loops = layers.conv2d_naive(x, w, b, stride=stride, padding=padding)
    OH, OW = layers.conv_output_size(H, W, K, K, stride, padding)
    assert loops.shape == (B, OC, OH, OW)
    assert layers.im2col(x, K, K, stride, padding).shape == (B, IC * K * K, OH * OW)
    np.testing.assert_allclose(explain.conv2d_kernel_offsets(x, w, b, stride, padding), loops, rtol=0, atol=1e-12)
    np.testing.assert_allclose(explain.conv2d_im2col(x, w, b, stride, padding), loops, rtol=0, atol=1e-12)
    np.testing.assert_allclose(explain.conv2d_im2col(x, w, None, stride, padding), loops - b.reshape(1, -1, 1, 1), atol=1e-12)


def test_im2col_column_is_a_receptive_field():
    x = np.arange(2 * 4 * 4, dtype=float).reshape(1, 2, 4, 4)
    cols = layers.im2col(x, 3, 3, stride=1, padding=1)  # [1, 18, 16]
    # output pixel (1, 2) = column 6 sees rows 0..2, columns 1..3 of each channel, in (c, i, j) order
    np.testing.assert_array_equal(cols[0, :, 6], x[0, :, 0:3, 1:4].reshape(-1))
    np.testing.assert_array_equal(cols[0, :9, 0], [0, 0, 0, 0, 0, 1, 0, 4, 5])  # top-left: padding zeros


def test_batch_norm_written_out():
    y = random(2, 4, 5, 5)
    mean, var, gamma, beta = random(4), RNG.uniform(0.5, 2, 4), random(4), random(4)
    bn = layers.batch_norm(y, mean, var, gamma, beta, 1e-5)
    np.testing.assert_allclose(explain.batch_norm_textbook(y, mean, var, gamma, beta, 1e-5), bn, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the pooling mixer


def test_valid_counts():
    counts = explain.valid_counts(7, 7)
    assert counts.shape == (7, 7) and counts[0, 0] == 4 and counts[0, 3] == 6 and counts[3, 3] == 9 and counts.sum() == 361
    assert explain.valid_counts(1, 1).tolist() == [[1]]
    five = explain.valid_counts(5, 6, kernel_size=5)
    assert five[0, 0] == 9 and five[2, 2] == 25 and five[2, 0] == 15
    ones = np.ones((1, 1, 5, 6))
    np.testing.assert_array_equal(five, layers.conv2d(ones, np.ones((1, 1, 5, 5)), padding=2)[0, 0])


def test_count_include_pad_mistake():
    x = random(2, 3, 6, 7)
    box = np.zeros((3, 1, 3, 3)) + 1 / 9
    expected = layers.conv2d(x, box, padding=1, groups=3)  # zero padding counted: always divide by 9
    np.testing.assert_allclose(explain.avg_pool2d_include_pad(x), expected, atol=1e-12)
    np.testing.assert_allclose(explain.pool_mixer_include_pad(x), expected - x, atol=1e-12)
    flat = explain.pool_mixer_include_pad(np.ones((1, 1, 4, 4)))[0, 0]
    np.testing.assert_allclose([flat[0, 0], flat[0, 1], flat[1, 1]], [4 / 9 - 1, 6 / 9 - 1, 0], atol=1e-15)
    assert np.all(layers.pool_mixer(np.ones((1, 1, 4, 4))) == 0)


def test_pool_mixer_is_a_high_pass_filter():
    kernel = explain.pool_mixer_kernel(3)
    assert kernel.shape == (3, 3) and abs(kernel.sum()) < 1e-15 and kernel[1, 1] == pytest.approx(-8 / 9)
    x = random(1, 1, 9, 9)
    inner = layers.conv2d(x, kernel[None, None], padding=0)[0, 0]  # away from the border: a convolution
    np.testing.assert_allclose(layers.pool_mixer(x)[0, 0, 1:-1, 1:-1], inner, atol=1e-12)
    response = explain.frequency_response(kernel, n=64)
    assert response.shape == (64, 64) and response[32, 32] < 1e-15
    assert response[0, 0] == pytest.approx(8 / 9) and response.max() == pytest.approx(4 / 3)


# ---------------------------------------------------------------------------------------------
# erf, GELU, the attention bias


def test_reference_erf_and_gelu():
    np.testing.assert_allclose(explain.erf_reference([0.0, 1.0, -2.0]), [0.0, 0.8427007929497149, -0.9953222650189527], rtol=1e-15)
    assert explain.gelu_reference(np.float32(1.0)).dtype == np.float64
    assert explain.gelu_reference(1.0) == pytest.approx(0.8413447460685429)  # Φ(1)
    xs = np.linspace(-5, 5, 1001)
    np.testing.assert_allclose(npformer.erf.gelu(xs), explain.gelu_reference(xs), rtol=0, atol=1e-15)


def test_offset_bias_table():
    table = explain.offset_bias_table(3)
    assert table.tolist() == [0, -1, -2, -1, -2, -3, -2, -3, -4]  # entry |dr|·3 + |dc| = −(|dr| + |dc|)
    assert explain.offset_bias_table(3, row_weight=2.0, col_weight=0.0).tolist() == [0, 0, 0, -2, -2, -2, -4, -4, -4]


@pytest.mark.parametrize("R", [4, 7])
def test_bias_relative_map_agrees_with_the_gathered_bias(R):
    table = random(3, R * R)
    relative = explain.bias_relative_map(table, R)  # [h, 2R − 1, 2R − 1]
    assert relative.shape == (3, 2 * R - 1, 2 * R - 1)
    np.testing.assert_array_equal(relative[:, R - 1, R - 1], table[:, 0])  # the query itself: offset (0, 0)
    gathered = layers.gather_attention_bias(table, R)  # [h, N, N]
    for r, c in [(0, 0), (R // 2, R // 2), (R - 1, 1)]:
        query = r * R + c
        window = relative[:, R - 1 - r : 2 * R - 1 - r, R - 1 - c : 2 * R - 1 - c]  # keys at offsets (k − query)
        np.testing.assert_array_equal(window.reshape(3, R * R), gathered[:, query])


# ---------------------------------------------------------------------------------------------
# shape tables


@pytest.mark.parametrize("family,variant,size,heads", [
    ("efficientformer", "l1", 224, "classifier"), ("efficientformer", "l1", 193, "backbone"),
    ("swiftformer", "xs", 224, "classifier"), ("swiftformer", "s", 97, "backbone")])
def test_shape_table_matches_the_trace(family, variant, size, heads):
    if family == "efficientformer":
        config = npformer.EfficientFormerConfig.variant(variant)
        cls = npformer.EfficientFormerModel if heads == "backbone" else npformer.EfficientFormerForImageClassificationWithTeacher
    else:
        config = npformer.SwiftFormerConfig.variant(variant)
        cls = npformer.SwiftFormerModel if heads == "backbone" else npformer.SwiftFormerForImageClassification
    model = cls(config)
    rows = explain.shape_table(model, np.zeros((2, 3, size, size), np.float32))
    assert all(row.ok for row in rows), explain.format_shape_table(rows)
    # the same stage-level names, in the same order, as `npformer shapes` lists
    assert [row.name for row in rows] == list(stage_level_names(config, cls.__name__))
    shapes = {row.name: row.expected for row in rows}
    widths = config.hidden_sizes if family == "efficientformer" else config.embed_dims
    assert shapes["stem"] == (2, widths[0], -(-size // 4), -(-size // 4))
    side = -(-size // 32)
    assert shapes["stages.3"] == ((2, side * side, widths[3]) if family == "efficientformer" else (2, widths[3], side, side))


def test_shape_table_for_the_head_only_classifier_and_a_wrong_expectation():
    model = npformer.EfficientFormerForImageClassification(npformer.EfficientFormerConfig.variant("l1"))
    rows = explain.shape_table(model, np.zeros((1, 3, 224, 224), np.float32))
    assert [r.name for r in rows[-3:]] == ["norm", "pooled", "head"] and rows[-1].traced == (1, 1000)
    rows[0].expected = (1, 48, 55, 55)
    assert not rows[0].ok and "NOT OK" in explain.format_shape_table(rows).splitlines()[1]
    assert explain.format_shape_table(rows).splitlines()[0].split() == ["name", "kind", "expected", "traced"]


@demo
def test_shape_table_of_the_demo_model(ef_demo):
    rows = explain.shape_table(ef_demo.model, ef_demo.processor(DIGIT)["pixel_values"])
    table = {row.name: (row.kind, row.expected, row.traced) for row in rows}
    assert table["stages.3.downsample"] == ("downsample", (1, 64, 4, 4), (1, 64, 4, 4))
    assert table["stages.3.blocks.1"] == ("Flat", (1, 16, 64), (1, 16, 64))
    assert table["stages.3.blocks.2"][0] == "Meta3D (attention)" and table["logits"][2] == (1, 10)
    assert explain.attention_block_names(ef_demo.model.config) == ["stages.3.blocks.2"]


def test_attention_block_names():
    cfg = npformer.EfficientFormerConfig.variant("l3")  # depths[-1] = 6, 4 Meta3D: blocks 0-1 pool, 2 flattens, 3-6 attend
    assert explain.attention_block_names(cfg) == [f"stages.3.blocks.{i}" for i in (3, 4, 5, 6)]
    assert explain.attention_block_names(npformer.SwiftFormerConfig.variant("xs")) == [
        "stages.0.blocks.2", "stages.1.blocks.2", "stages.2.blocks.5", "stages.3.blocks.3"]


# ---------------------------------------------------------------------------------------------
# feature maps, attention maps


def test_tokens_to_map_undoes_the_flatten(l1_backbone):
    model = l1_backbone
    trace = npformer.Trace(["stages.3.blocks.2", "stages.3.blocks.3"])  # the last Meta4D block, the flatten
    model(RNG.standard_normal((2, 3, 224, 224)).astype(np.float32), trace=trace)
    assert trace["stages.3.blocks.3"].shape == (2, 49, 448)
    np.testing.assert_array_equal(explain.tokens_to_map(trace["stages.3.blocks.3"]), trace["stages.3.blocks.2"])
    with pytest.raises(ValueError, match="square"):
        explain.tokens_to_map(np.zeros((1, 12, 4)))


def test_feature_grid():
    fmap = np.stack([np.full((3, 4), 5.0), np.arange(12.0).reshape(3, 4), -np.arange(12.0).reshape(3, 4) * 3])
    assert explain.channels_by_spread(fmap).tolist() == [2, 1, 0]
    grid = explain.feature_grid(fmap, count=3, cols=2, pad=1)
    assert grid.shape == (2 * 4 - 1, 2 * 5 - 1)
    np.testing.assert_allclose(grid[:3, :4], 1 - np.arange(12.0).reshape(3, 4) / 11)  # channel 2, scaled to [0, 1]
    np.testing.assert_allclose(grid[:3, 5:], np.arange(12.0).reshape(3, 4) / 11)  # channel 1
    assert np.all(grid[4:, :4] == 0)  # the constant channel
    assert np.all(np.isnan(grid[3])) and np.all(np.isnan(grid[:, 4])) and np.all(np.isnan(grid[4:, 5:]))
    assert explain.feature_grid(fmap, channels=[0]).shape == (3, 4)


def test_attention_maps_and_upsampling_keep_the_probabilities():
    logits = random(3, 16, 16)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # [h, N, N], rows sum to 1
    mean = explain.attention_maps(probs)
    assert mean.shape == (3, 4, 4)
    np.testing.assert_allclose(mean.sum(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(explain.attention_maps(probs, query=5), probs[:, 5].reshape(3, 4, 4))
    up = explain.upsample_onto_image(mean, 112, 112)  # 28×28 pixels per token
    assert up.shape == (3, 112, 112)
    np.testing.assert_allclose(up.sum(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(up[:, :28, :28].sum(axis=(1, 2)), mean[:, 0, 0])
    np.testing.assert_allclose(up[1, 30, 60], mean[1, 1, 2] / 28**2)
    odd = explain.upsample_onto_image(mean, 30, 17)  # token sides 7/8 and 4/5 pixels
    np.testing.assert_allclose(odd.sum(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(explain.upsample_onto_image(mean, 8, 8, keep="value"), np.kron(mean, np.ones((1, 2, 2))))
    with pytest.raises(ValueError):
        explain.attention_maps(np.ones((1, 12, 12)) / 12)


@demo
def test_demo_attention_upsampled_onto_the_digit(ef_demo):
    out = ef_demo.model(ef_demo.processor(DIGIT)["pixel_values"], output_attentions=True)
    probs = out.attentions[0][0]  # [4, 16, 16]
    up = explain.upsample_onto_image(explain.attention_maps(probs), 112, 112)
    np.testing.assert_allclose(up.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(up[:, ::28, ::28] * 28**2, probs.mean(axis=1).reshape(4, 4, 4), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# SwiftFormer's additive attention


@pytest.mark.parametrize("generation", ["v1", "v2"])
def test_additive_attention_steps_equal_the_model(generation):
    config = npformer.SwiftFormerConfig.variant("xs", attention_generation=generation)
    model = npformer.SwiftFormerForImageClassification(config)
    pixels = RNG.standard_normal((2, 3, 64, 64)).astype(np.float32)
    for block in explain.attention_block_names(config):
        tokens, model_out = explain.attention_input(model, pixels, block)
        steps = explain.additive_attention_steps(tokens, model.weights, f"{block}.attn", generation)
        np.testing.assert_array_equal(steps["out"], model_out)
        B, N, C = tokens.shape
        assert steps["scores"].shape == steps["weights"].shape == (B, N, 1) and steps["global_query"].shape == (B, 1, C)
        if generation == "v1":
            assert np.all(steps["weights"] == 1.0)
            np.testing.assert_allclose(steps["global_query"][:, 0], steps["q_hat"].sum(axis=1), rtol=1e-5)
        else:
            np.testing.assert_allclose(np.sum(steps["weights"] ** 2, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError):
        explain.additive_attention_steps(tokens, model.weights, f"{block}.attn", "v3")


def test_attention_flops_and_timing():
    flops = explain.attention_flops(49, 64)
    assert flops == {"multi-head": 2 * 49 * 64 * 256 + 4 * 49 * 49 * 64, "additive": 2 * 49 * 64 * 256 + 6 * 49 * 64}
    assert explain.attention_flops(98, 64)["additive"] == 2 * flops["additive"]  # linear in N
    big, small = explain.attention_flops(3136, 64), explain.attention_flops(784, 64)
    assert big["multi-head"] > 10 * small["multi-head"]  # the N² term dominates at large N
    times = explain.time_attention(16, channels=8, heads=2, repeats=1)
    assert set(times) == {"additive", "multi-head"} and all(t > 0 for t in times.values())


# ---------------------------------------------------------------------------------------------
# broken ports


def test_swapped_activation_is_restored():
    exact = layers.ACTIVATIONS["gelu"]
    with pytest.raises(RuntimeError):
        with explain.swapped_activation("gelu"):
            assert layers.ACTIVATIONS["gelu"] is npformer.erf.gelu_tanh
            raise RuntimeError
    assert layers.ACTIVATIONS["gelu"] is exact


def test_qkv_port_reads_the_weights_block_wise(l1_backbone):
    model = l1_backbone
    port = explain.simulated_port(model, "qkv as q|k|v blocks")
    name = "stages.3.blocks.4.token_mixer.qkv.weight"
    W, P = model.weights[name], port.weights[name]  # [h·(2dk + dv), C]
    h, dk, dv = 8, 32, 128
    for head in (0, 5):
        rows = P[head * (2 * dk + dv) : (head + 1) * (2 * dk + dv)]  # what npformer reads for this head
        np.testing.assert_array_equal(rows[:dk], W[head * dk : (head + 1) * dk])  # q block
        np.testing.assert_array_equal(rows[dk : 2 * dk], W[h * dk + head * dk : h * dk + (head + 1) * dk])  # k block
        np.testing.assert_array_equal(rows[2 * dk :], W[2 * h * dk + head * dv : 2 * h * dk + (head + 1) * dv])  # v block
    assert sorted(P.reshape(-1)) == sorted(W.reshape(-1))


def test_other_simulated_ports(l1_backbone):
    model = l1_backbone
    no_bias = explain.simulated_port(model, "no attention bias")
    assert np.all(no_bias.weights["stages.3.blocks.4.token_mixer.attention_biases"] == 0)
    assert np.any(model.weights["stages.3.blocks.4.token_mixer.attention_biases"] != 0)
    assert explain.simulated_port(model, "LayerNorm eps 1e-5").config.layer_norm_eps == 1e-5
    assert model.config.layer_norm_eps == 1e-12
    swift = npformer.SwiftFormerModel(npformer.SwiftFormerConfig.variant("xs", attention_generation="v1"))
    assert explain.simulated_port(swift, "other attention generation").config.attention_generation == "v2"
    float64 = npformer.EfficientFormerModel(model.config, model.weights, dtype=np.float64)
    assert explain.simulated_port(float64, "no attention bias").dtype == np.float64
    with pytest.raises(ValueError, match="unknown mistake"):
        explain.simulated_port(model, "typo")


@demo
def test_trace_and_compare_finds_the_tanh_gelu(ef_demo, tmp_path):
    pixels = ef_demo.processor(DIGIT)["pixel_values"]
    result = explain.trace_and_compare(ef_demo.model, ef_demo.model, pixels, tmp_path,
                                       port_context=lambda: explain.swapped_activation("gelu"))
    assert result.first_failure.name == "stages.0.blocks.0.mlp.fc2"
    assert (tmp_path / "golden.safetensors").is_file() and (tmp_path / "port.safetensors").is_file()
    same = explain.trace_and_compare(ef_demo.model, ef_demo.model, pixels, tmp_path)
    assert same.ok and all(row.max_abs == 0 for row in same.rows)


def test_save_port_fixture_is_compared_over_common_names(l1_backbone, tmp_path):
    model = l1_backbone
    pixels = RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)
    trace_to_fixture(model, pixels, tmp_path / "golden.safetensors")
    trace = npformer.Trace(["stem*"])
    model(pixels, trace=trace)
    explain.save_port_fixture(tmp_path / "port.safetensors", {"input": pixels, **trace.records})
    result = compare_fixtures(tmp_path / "port.safetensors", tmp_path / "golden.safetensors")
    assert [row.name for row in result.rows] == ["input", "stem.conv1", "stem.norm1", "stem.conv2", "stem.norm2", "stem"]
    assert result.ok and "norm" in result.only_in_b and not result.only_in_a

