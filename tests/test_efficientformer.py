"""EfficientFormer L1/L3/L7 against transformers 4.40.2.

Golden tier (no torch): seeded weights and pixels are regenerated from their seeds and the
outputs compared to transformers' outputs stored in tests/fixtures/golden (make_golden.py).
Live tier (oracle): the same comparison run against transformers directly, at batch 1 and 4.
Mutation tests: known-wrong details must make the golden comparison fail.
"""

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer.models.efficientformer.model as ef
from npformer import layers
from npformer import EfficientFormerConfig
from npformer.models.registry import ARCHITECTURE_FOR_HEADS
from npformer.errors import CheckpointMismatchError, InputError
from npformer.tools.parity import HEAD_KINDS, checksum, entry_diff, golden_entries, npformer_outputs, seeded_pixels
from npformer.checkpoints.seeded import seeded_weights
from npformer.trace import Trace
from tiers import variants

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
# logits: max abs diff; hidden states, attentions: max abs diff / max(1, max |reference|)
TOL = {"float32": 1e-4, "float64": 1e-9}


def read_golden(variant):
    with safe_open(str(GOLDEN / f"efficientformer_{variant}.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def golden_diffs(variant, num_heads, dtype, cfg=None, fuse=False):
    """{entry: difference npformer − transformers} for one model class and dtype, from the fixture:
    absolute for the heads' outputs, scaled (parity.scaled_diff) for hidden states and attentions."""
    golden, meta = read_golden(variant)
    cfg = cfg or EfficientFormerConfig.variant(variant)
    pixels = seeded_pixels(2)
    assert checksum({"pixels": pixels}) == meta["pixels_checksum"], "seeded pixels drifted: regenerate fixtures"
    weights = seeded_weights(cfg, num_heads=num_heads, seed=0)
    ours = golden_entries(npformer_outputs(cfg, weights, num_heads, pixels, dtype, fuse=fuse), "efficientformer", num_heads,
                          f"{HEAD_KINDS[num_heads]}/{np.dtype(dtype).name}")
    assert ours.keys() <= golden.keys()
    return {k: entry_diff(k, v, golden[k]) for k, v in ours.items()}


@pytest.mark.parametrize("variant", variants("efficientformer", ["l1", "l3", "l7"]))
def test_seeded_weights_are_what_the_fixtures_were_made_from(variant):
    _, meta = read_golden(variant)
    cfg = EfficientFormerConfig.variant(variant)
    assert checksum(seeded_weights(cfg, num_heads=2, seed=0)) == meta["weights_checksum"]


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_heads", [2, 1, 0])
@pytest.mark.parametrize("variant", variants("efficientformer", ["l1", "l3", "l7"]))
def test_matches_transformers_golden(variant, num_heads, dtype, fuse):
    diffs = golden_diffs(variant, num_heads, dtype, fuse=fuse)
    tol = TOL[np.dtype(dtype).name]
    bad = {k: v for k, v in diffs.items() if v > tol}
    assert not bad, f"beyond {tol}: {bad}"


# ---------------------------------------------------------------------------------------------
# the tests bite: each known-wrong detail must fail the golden comparison (L1, float64)


def tanh_gelu(monkeypatch):
    monkeypatch.setitem(layers.ACTIVATIONS, "gelu", layers.ACTIVATIONS["gelu_new"])


def pool_counting_padding(monkeypatch):
    def pool_mixer(x, kernel_size=3):
        pad = kernel_size // 2
        total = sum(layers.shifted_windows(x, kernel_size, kernel_size, 1, pad))
        return total / kernel_size**2 - x  # count_include_pad=True

    monkeypatch.setattr(ef, "pool_mixer", pool_mixer)


def qkv_split_in_blocks(monkeypatch):
    def attention(x, qkv_w, qkv_b, proj_w, proj_b, bias, num_heads, key_dim):
        # wrong layout: all queries, then all keys, then all values
        B, N, _ = x.shape
        qkv = layers.linear(x, qkv_w, qkv_b)
        qk = num_heads * key_dim
        q = qkv[..., :qk].reshape(B, N, num_heads, key_dim).transpose(0, 2, 1, 3)
        k = qkv[..., qk : 2 * qk].reshape(B, N, num_heads, key_dim).transpose(0, 2, 1, 3)
        v = qkv[..., 2 * qk :].reshape(B, N, num_heads, -1).transpose(0, 2, 1, 3)
        probs = layers.softmax(q @ k.transpose(0, 1, 3, 2) * key_dim**-0.5 + bias)
        out = (probs @ v).transpose(0, 2, 1, 3).reshape(B, N, -1)
        return layers.linear(out, proj_w, proj_b), probs

    monkeypatch.setattr(ef, "multi_head_attention", attention)


def attention_bias_dropped(monkeypatch):
    monkeypatch.setattr(ef, "gather_attention_bias", lambda table, r: np.zeros((table.shape[0], r * r, r * r), table.dtype))


MUTATIONS = [tanh_gelu, pool_counting_padding, qkv_split_in_blocks, attention_bias_dropped]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_golden_comparison_catches(mutation, monkeypatch):
    mutation(monkeypatch)
    assert max(golden_diffs("l1", 2, np.float64).values()) > 1e-6


def test_golden_comparison_catches_layer_norm_eps_1e5():
    cfg = EfficientFormerConfig.variant("l1", layer_norm_eps=1e-5)  # transformers' config says 1e-12
    assert max(golden_diffs("l1", 2, np.float64, cfg=cfg).values()) > TOL["float64"]


# ---------------------------------------------------------------------------------------------
# outputs, shapes, trace


@pytest.fixture(scope="module")
def l1_teacher():
    cfg = EfficientFormerConfig.variant("l1")
    return ef.EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, 2))


def test_output_fields_and_shapes(l1_teacher):
    out = l1_teacher(seeded_pixels(2), output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == out.cls_logits.shape == out.distillation_logits.shape == (2, 1000)
    np.testing.assert_allclose(out.logits, (out.cls_logits + out.distillation_logits) / 2, rtol=0, atol=1e-6)
    assert [h.shape for h in out.hidden_states] == [
        (2, 48, 56, 56), (2, 48, 56, 56), (2, 96, 28, 28), (2, 96, 28, 28),
        (2, 224, 14, 14), (2, 224, 14, 14), (2, 448, 7, 7), (2, 49, 448)]
    assert [a.shape for a in out.attentions] == [(2, 8, 49, 49)]
    assert out[0] is out.logits and out["cls_logits"] is out.cls_logits
    assert all(h.dtype == np.float32 for h in out.hidden_states) and out.logits.dtype == np.float32


def test_without_flags_returns_no_hidden_states(l1_teacher):
    out = l1_teacher(seeded_pixels(1))
    assert out.hidden_states is None and out.attentions is None
    assert out.keys() == ["logits", "cls_logits", "distillation_logits"]


def test_trace_records_every_named_block_in_order(l1_teacher):
    trace = Trace()
    out = l1_teacher(seeded_pixels(1), output_hidden_states=True, trace=trace)
    names = list(trace)
    assert names[:3] == ["stem.conv1", "stem.norm1", "stem.conv2"]
    assert "stages.3.blocks.4.token_mixer.attn_probs" in names and names[-1] == "logits"
    np.testing.assert_array_equal(trace["stages.2"], out.hidden_states[5])
    np.testing.assert_array_equal(trace["logits"], out.logits)
    only = Trace(["stages.0.blocks.*.token_mixer"])
    l1_teacher(seeded_pixels(1), trace=only)
    assert list(only) == [f"stages.0.blocks.{i}.token_mixer" for i in range(3)]


def test_batch_items_are_independent(l1_teacher):
    pixels = seeded_pixels(3)
    together = l1_teacher(pixels).logits
    alone = np.concatenate([l1_teacher(pixels[i : i + 1]).logits for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=2e-5)


@pytest.mark.parametrize("side,ok", [(192, False), (193, True), (224, True), (225, False), (256, False)])
def test_input_side_must_fit_the_7x7_attention_grid(l1_teacher, side, ok):
    pixels = np.zeros((1, 3, side, 224), np.float32)
    if ok:
        assert l1_teacher(pixels).logits.shape == (1, 1000)
    else:
        with pytest.raises(InputError, match=r"7×7 grid.*193–224 px; got"):
            l1_teacher(pixels)


@pytest.mark.parametrize("shape", [(3, 224, 224), (1, 4, 224, 224), (1, 224, 224, 3)])
def test_bad_input_shapes_are_explained(l1_teacher, shape):
    with pytest.raises(InputError):
        l1_teacher(np.zeros(shape, np.float32))


def test_weights_are_read_only_and_strictly_checked():
    cfg = EfficientFormerConfig.variant("l1")
    weights = seeded_weights(cfg, 2)
    model = ef.EfficientFormerForImageClassificationWithTeacher(cfg, weights)
    assert not model.weights["head.weight"].flags.writeable
    broken = dict(weights)
    del broken["stages.3.blocks.4.token_mixer.attention_biases"]
    broken["stages.0.blocks.0.mlp.fc1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    broken["extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointMismatchError) as err:
        ef.EfficientFormerForImageClassificationWithTeacher(cfg, broken)
    message = str(err.value)
    assert "missing keys (1): stages.3.blocks.4.token_mixer.attention_biases" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "stages.0.blocks.0.mlp.fc1.weight: expected shape (192, 48, 1, 1), got (1, 1, 1, 1)" in message


def test_float64_runs_end_to_end_in_float64():
    cfg = EfficientFormerConfig.variant("l1")
    model = ef.EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, 2), dtype=np.float64)
    trace = Trace()
    model(seeded_pixels(1), trace=trace)
    assert {v.dtype for v in trace.records.values()} == {np.dtype(np.float64)}


# ---------------------------------------------------------------------------------------------
# losses, as transformers decides them


def test_loss_problem_types():
    cfg = EfficientFormerConfig.variant("l1", num_labels=5, depths=[1, 1, 1, 2], num_meta3d_blocks=1)
    model = ef.EfficientFormerForImageClassification(cfg, seeded_weights(cfg, 1))
    pixels = seeded_pixels(2)
    logits = model(pixels).logits.astype(np.float64)
    out = model(pixels, labels=np.array([1, 4]))
    assert cfg.problem_type == "single_label_classification"
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(out.loss, -(log_p[0, 1] + log_p[1, 4]) / 2, rtol=1e-5)

    cfg.problem_type = None
    targets = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 0, 1]], np.float32)
    out = model(pixels, labels=targets)
    assert cfg.problem_type == "multi_label_classification"
    p = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(out.loss, -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)), rtol=1e-5)


@pytest.mark.oracle
@pytest.mark.parametrize("num_labels,labels", [(1, [0.5, -1.0]), (4, [3, 0]), (4, [[1.0, 0, 0, 1], [0, 1, 1, 0]])])
def test_loss_matches_transformers(num_labels, labels):
    torch = pytest.importorskip("torch")
    from npformer.tools.oracle import hf_model

    cfg = EfficientFormerConfig.variant("l1", num_labels=num_labels)
    weights = seeded_weights(cfg, 1)
    pixels = seeded_pixels(2)
    ref = hf_model(cfg, weights, 1)
    label_array = np.array(labels)
    label_array = label_array.astype(np.int64 if label_array.dtype.kind == "i" else np.float32)
    with torch.no_grad():
        ref_loss = ref(torch.from_numpy(pixels), labels=torch.from_numpy(label_array)).loss.item()
    ours = ef.EfficientFormerForImageClassification(cfg, weights)(pixels, labels=label_array).loss
    assert cfg.problem_type == ref.config.problem_type
    np.testing.assert_allclose(ours, ref_loss, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# live tier


@pytest.mark.oracle
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("num_heads", [2, 1, 0])
@pytest.mark.parametrize("variant", ["l1", "l3", "l7"])
def test_matches_transformers_live(variant, num_heads, batch):
    pytest.importorskip("transformers")
    from npformer.tools.parity import compare

    for dtype, tol in ((np.float32, TOL["float32"]), (np.float64, TOL["float64"])):
        for fused in (False, True):
            diffs = compare("efficientformer", variant, "transformers", num_heads, batch, dtype, fused=fused)
            assert max(diffs.values()) <= tol, (ARCHITECTURE_FOR_HEADS["efficientformer"][num_heads], dtype, fused, diffs)


@pytest.mark.parametrize("variant,count", [("l1", 12_289_928), ("l3", 31_406_000), ("l7", 82_229_328)])
def test_parameter_counts_equal_timms(variant, count):
    # counts of timm 1.0.31's efficientformer_{l1,l3,l7} (both heads, BatchNorm statistics excluded)
    from npformer.checkpoints.weights import count_parameters

    cfg = EfficientFormerConfig.variant(variant)
    shapes = {name: np.empty(shape, np.uint8) for name, shape in ef.weight_schema(cfg, 2).items()}
    assert count_parameters(shapes) == count
