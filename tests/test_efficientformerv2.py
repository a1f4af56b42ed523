"""EfficientFormerV2 S0/S1/S2/L against timm (timm's names are npformer's canonical names).

Golden tier (no torch): the seeded weights and pixels are regenerated from their seeds, and
npformer's logits and its Trace records `stem`, `stages.0`…`stages.3`, `norm` are compared with
timm's, stored in tests/fixtures/golden_v2 (make_golden.py there): four variants at 224, S0 on a
209-px input (odd sides on the way down) and S0 built for 224×320; float32 and float64, fused and
unfused. The original schema: the same weights renamed to the original repo's names load to the
same tensors and logits.
Mutations (permanent): each known way to get V2 wrong, patched in where the model looks it up,
must fail the golden comparison (`pytest -s` prints how far it moves the float64 logits).
Layers: the new layers against their loop twins. Contract: parameter counts, folds, key maps,
derived buffers, configs read from tensors, config and input checks.
Live tier (oracle): the same comparisons against timm directly at batch 1 and 4; every traced name
that is a timm module gives that module's output; timm's state_dict order, shapes and bias-index
buffers equal the schema's; the layers against torch.
"""

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer.models.efficientformerv2.config as v2_config
import npformer.models.efficientformerv2.model as v2
from npformer import layers
from npformer.checkpoints.convert import to_canonical
from npformer.checkpoints.seeded import seeded_weights
from npformer.checkpoints.weights import count_parameters
from npformer.errors import CheckpointMismatchError, ConfigError, InputError
from npformer.models.efficientformerv2 import schema
from npformer.models.efficientformerv2.config import EfficientFormerV2Config
from npformer.models.schema import detect_schema, foreign_names
from npformer.tools.parity import abs_diff, checksum, scaled_diff, seeded_pixels
from npformer.trace import Trace
from tiers import tiered, variants

GOLDEN = Path(__file__).parent / "fixtures" / "golden_v2"
VARIANTS = ["s0", "s1", "s2", "l"]
# logits: max abs diff; features: max abs diff / max(1, max |timm|)
TOL = {"float32": 1e-4, "float64": 1e-9}
RNG = np.random.default_rng(0)

_spec = importlib.util.spec_from_file_location("golden_v2_make", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)  # torch-free at import: CASES, FEATURES, case_config, case_pixels, golden_entries

def seeded(cfg, num_heads=2, seed=0):
    return seeded_weights(cfg, num_heads=num_heads, seed=seed)


def read_golden(case):
    with safe_open(str(GOLDEN / f"efficientformerv2_{case}.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def npformer_outputs(cfg, weights, pixels, dtype, fuse=False) -> dict:
    """npformer's logits and the Trace records named like timm's modules (full arrays)."""
    trace = Trace(list(make_golden.FEATURES))
    model = v2.EfficientFormerV2ForImageClassificationWithTeacher(cfg, weights, dtype=dtype)
    logits = (model.fuse() if fuse else model)(pixels, trace=trace).logits
    assert list(trace) == list(make_golden.FEATURES)
    return {"logits": logits, **trace.records}


def diffs(ours: dict, ref: dict) -> dict:
    """{name: difference}: absolute for logits, scaled for the features (the residual stream grows)."""
    assert ours.keys() == ref.keys()
    return {k: (abs_diff if k.endswith("logits") else scaled_diff)(ours[k], ref[k]) for k in ref}


def golden_diffs(case, dtype, fuse=False, weights=None):
    golden, meta = read_golden(case)
    pixels = make_golden.case_pixels(case)
    assert checksum({"pixels": pixels}) == meta["pixels_checksum"], "seeded pixels drifted: regenerate fixtures"
    cfg = make_golden.case_config(case)
    name = np.dtype(dtype).name
    outputs = npformer_outputs(cfg, seeded(cfg) if weights is None else weights, pixels, dtype, fuse)
    return diffs(make_golden.golden_entries(outputs, name), {k: v for k, v in golden.items() if k.startswith(f"{name}/")})


@pytest.mark.parametrize("case", tiered(make_golden.CASES, lambda case: ("efficientformerv2", make_golden.CASES[case][0])))
def test_seeded_weights_are_what_the_fixtures_were_made_from(case):
    _, meta = read_golden(case)
    assert checksum(seeded(make_golden.case_config(case))) == meta["weights_checksum"]


def test_seeded_weights_exercise_every_path():
    # far from timm's init, where BatchNorm is the identity, layer scales 1e-5, biases 0 and a
    # talking head could pass for the identity
    weights = seeded(EfficientFormerV2Config.variant("s0"))
    pick = lambda suffix: np.concatenate([v.ravel() for k, v in weights.items() if k.endswith(suffix)])  # noqa: E731
    assert pick("running_mean").std() > 0.4 and pick("running_var").min() >= 0.5 and pick("running_var").max() > 1.9
    assert np.abs(pick("gamma")).min() >= 0.1 and (pick("gamma") < 0).any()
    assert 0.9 < pick("attention_biases").std() < 1.1
    heads = [v[:, :, 0, 0] for k, v in weights.items() if "talking_head" in k and k.endswith("weight")]
    assert len(heads) == 8 and min(np.abs(w - np.eye(8)).max() for w in heads) > 0.5
    assert 0.005 < np.abs(pick("talking_head2.bias")).mean() < 0.02  # small next to probabilities of ~1/49


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", tiered(make_golden.CASES, lambda case: ("efficientformerv2", make_golden.CASES[case][0])))
def test_matches_timm_golden(case, dtype, fuse):
    found = golden_diffs(case, dtype, fuse=fuse)
    tol = TOL[np.dtype(dtype).name]
    bad = {k: v for k, v in found.items() if v > tol}
    assert not bad, f"beyond {tol}: {bad}"


# ---------------------------------------------------------------------------------------------
# the original schema (snap-research): renamed keys, (C, 1, 1) layer scales, saved index buffers


def original_bias_index(key_side, query_side=None):  # -> [Nq, N]
    """attention_bias_idxs as the original repo builds it: offsets numbered in order of first
    appearance, as float tuples in the downsampling attention (its `(size − 1) / 2` term)."""
    keys = list(itertools.product(range(key_side), range(key_side)))
    queries = keys if query_side is None else list(itertools.product(range(query_side), range(query_side)))
    step = 1 if query_side is None else math.ceil(key_side / query_side)
    offsets, idxs = {}, []
    for q in queries:
        for k in keys:
            offset = (abs(q[0] * step - k[0] + (1 - 1) / 2), abs(q[1] * step - k[1] + (1 - 1) / 2))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return np.array(idxs, dtype=np.int64).reshape(len(queries), len(keys))


def original_state_dict(cfg, weights) -> dict:
    """The original repo's state_dict of `weights` (spec §7.2): its names, (C, 1, 1) layer scales,
    BatchNorm counters and every attention's attention_bias_idxs."""
    names = foreign_names(schema.original_modules(cfg), weights)
    state = {names[k]: v.reshape(schema.foreign_shape(k, v.shape, "original")) for k, v in weights.items()}
    state |= {names[k].replace("running_var", "num_batches_tracked"): np.array(7, np.int64)
              for k in weights if k.endswith("running_var")}
    side = cfg.grid(2)[0]
    state["network.5.attn.attention_bias_idxs"] = original_bias_index(side, side // 2)
    for block in schema.attention_blocks(cfg):
        state[f"{names[f'{block}.ls1.gamma'].rsplit('.', 1)[0]}.token_mixer.attention_bias_idxs"] = original_bias_index(side // 2)
    return state


def original_to_canonical(state, cfg) -> dict:
    """The converter's renaming of an original state dict (checks and drops the bias-index buffers)."""
    return to_canonical(state, cfg, 2, "original", "test")


@pytest.mark.parametrize("variant", variants("efficientformerv2", ["s0", "s2"]))
def test_original_schema_names_every_tensor_once(variant):
    cfg = EfficientFormerV2Config.variant(variant)
    weights = seeded(cfg)
    state = original_state_dict(cfg, weights)
    assert detect_schema(set(state), schema.FINGERPRINTS) == "original"
    assert detect_schema(set(weights), schema.FINGERPRINTS) == "timm"
    assert len(set(foreign_names(schema.original_modules(cfg), weights).values())) == len(weights)
    assert {k for k in state if "layer_scale" in k} and all(state[k].shape[1:] == (1, 1) for k in state if "layer_scale" in k)
    assert "network.5.attn.q.local.0.weight" in state and "network.5.attn.proj.2.running_var" in state
    assert "network.0.0.mlp.mid_norm.weight" in state and "dist_head.bias" in state
    tensors = original_to_canonical(state, cfg)
    assert tensors.keys() == weights.keys() and all(np.array_equal(tensors[k], weights[k]) for k in weights)


def test_original_schema_loads_to_the_same_logits():
    cfg = make_golden.case_config("s0")
    tensors = original_to_canonical(original_state_dict(cfg, seeded(cfg)), cfg)
    found = golden_diffs("s0", np.float64, weights=tensors)
    assert max(found.values()) <= TOL["float64"], found


def test_config_from_tensors_reads_both_schemas():
    def out_channels(state):
        return lambda key: int(state[key].shape[0])

    for variant in VARIANTS:
        cfg = EfficientFormerV2Config.variant(variant)
        weights = {k: np.empty(s, np.float32) for k, s in schema.weight_schema(cfg, 2).items()}
        for source, state in (("timm", weights), ("original", original_state_dict(cfg, weights))):
            assert schema.config_from_tensors(state, source, out_channels(state)) == cfg, (variant, source)
    wide = make_golden.case_config("s0_wide")
    weights = {k: np.empty(s, np.float32) for k, s in schema.weight_schema(wide, 1).items()}
    with pytest.raises(CheckpointMismatchError, match="not a square stage-2 grid"):
        schema.config_from_tensors(weights, "timm", out_channels(weights))
    one_head = schema.config_from_tensors(weights | {"stages.3.downsample.attn.attention_biases": np.empty((8, 256))},
                                          "timm", out_channels(weights))
    assert one_head.image_size == 256 and not one_head.distillation


def test_wrong_bias_index_buffers_are_refused():
    cfg = EfficientFormerV2Config.variant("s0")
    state = original_state_dict(cfg, seeded(cfg))
    assert np.array_equal(state["network.5.attn.attention_bias_idxs"], layers.attention_bias_index_grid(14, 14, 2))
    flipped = state["network.5.attn.attention_bias_idxs"][::-1].copy()
    with pytest.raises(CheckpointMismatchError, match="network.5.attn.attention_bias_idxs"):
        schema.check_derived_buffer("network.5.attn.attention_bias_idxs", flipped, cfg, "x.pth")
    with pytest.raises(CheckpointMismatchError, match=r"network.4.4.token_mixer.attention_bias_idxs \(shape \(196, 196\)\)"):
        schema.check_derived_buffer("network.4.4.token_mixer.attention_bias_idxs", layers.attention_bias_index(14), cfg, "x.pth")
    assert not schema.check_derived_buffer("network.4.4.token_mixer.attention_biases", flipped, cfg, "x.pth")


def test_original_and_timm_files_load_through_npformer(tmp_path):
    import npformer
    from safetensors.numpy import save_file

    cfg = make_golden.case_config("s0")
    weights = seeded(cfg)
    golden, _ = read_golden("s0")
    for name, state in (("timm", weights), ("original", original_state_dict(cfg, weights))):
        path = tmp_path / f"{name}.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
        model = npformer.from_pretrained(path, dtype=np.float64)
        assert type(model) is v2.EfficientFormerV2ForImageClassificationWithTeacher and model.config == cfg
        assert abs_diff(model(make_golden.case_pixels("s0")).logits, golden["float64/logits"]) <= TOL["float64"], name


# ---------------------------------------------------------------------------------------------
# the tests bite: each known-wrong detail must fail the golden comparison (S0, float64)


def talking_heads_dropped(monkeypatch):
    monkeypatch.setattr(layers, "talking_heads", lambda logits, weight, bias: logits)


def talking_heads_swapped(monkeypatch):  # talking_head2 mixes the logits, talking_head1 the probabilities
    core = layers.talking_heads_attention
    monkeypatch.setattr(v2, "talking_heads_attention", lambda q, k, v, bias, th1=None, th2=None: core(q, k, v, bias, th2, th1))


def talking_heads_both_before_softmax(monkeypatch):
    def core(q, k, v, bias, th1=None, th2=None):
        logits = np.matmul(q, k.transpose(0, 1, 3, 2)) * q.shape[-1] ** -0.5 + bias
        if th1 is not None:
            logits = layers.talking_heads(layers.talking_heads(logits, *th1), *th2)
        probs = layers.softmax(logits)
        return np.matmul(probs, v), probs

    monkeypatch.setattr(v2, "talking_heads_attention", core)


def heads_interleaved(monkeypatch):  # channel c = j·h + head instead of head·d + j
    def split_heads(x, num_heads):
        B, C, H, W = x.shape
        return x.reshape(B, C // num_heads, num_heads, H * W).transpose(0, 2, 3, 1)

    monkeypatch.setattr(v2, "split_heads", split_heads)


def upsample_align_corners(monkeypatch):  # src = dst·(n − 1)/(2n − 1): the corners line up
    def upsample(x):
        def taps(n):
            src = np.arange(2 * n) * (n - 1) / (2 * n - 1)
            i0 = np.floor(src).astype(np.int64)
            return i0, np.minimum(i0 + 1, n - 1), (src - i0).astype(x.dtype)

        (r0, r1, a), (c0, c1, b) = taps(x.shape[2]), taps(x.shape[3])
        cols = x[:, :, :, c0] * (1 - b) + x[:, :, :, c1] * b
        return cols[:, :, r0] * (1 - a)[:, None] + cols[:, :, r1] * a[:, None]

    monkeypatch.setattr(v2, "upsample_bilinear_2x", upsample)


def upsample_nearest(monkeypatch):
    monkeypatch.setattr(v2, "upsample_bilinear_2x", lambda x: x.repeat(2, axis=2).repeat(2, axis=3))


def query_without_pooled_input(monkeypatch):
    monkeypatch.setattr(v2, "subsample", lambda x: np.zeros_like(x[:, :, ::2, ::2]))


def relu_stem(monkeypatch):
    conv_norm_act = v2.conv_norm_act

    def patched(x, p, cfg, trace, name, *args, **kwargs):
        if name.startswith("stem."):
            return layers.relu(v2.conv_norm(x, p, cfg, trace, name, *args, **kwargs))
        return conv_norm_act(x, p, cfg, trace, name, *args, **kwargs)

    monkeypatch.setattr(v2, "conv_norm_act", patched)


def unsubsampled_query_grid(monkeypatch):  # the downsampling queries at rows 0, 1, … rather than 0, 2, …
    def index(H, W, query_stride=1):
        Hq, Wq = -(-H // query_stride), -(-W // query_stride)
        qr, qc = np.divmod(np.arange(Hq * Wq), Wq)
        kr, kc = np.divmod(np.arange(H * W), W)
        return np.abs(qr[:, None] - kr[None, :]) * W + np.abs(qc[:, None] - kc[None, :])

    monkeypatch.setattr(v2, "attention_bias_index_grid", index)


def floor_sides(monkeypatch):
    monkeypatch.setattr(v2_config, "halve", lambda side: side // 2)


MUTATIONS = [talking_heads_dropped, talking_heads_swapped, talking_heads_both_before_softmax, heads_interleaved,
             upsample_align_corners, upsample_nearest, query_without_pooled_input, relu_stem, unsubsampled_query_grid]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_golden_comparison_catches(mutation, monkeypatch):
    mutation(monkeypatch)
    found = golden_diffs("s0", np.float64)
    print(f"\n{mutation.__name__}: max |Δ float64 logits| = {found['float64/logits']:.3g}")
    assert found["float64/logits"] > 1e-3, found


def test_golden_comparison_catches_floor_sides(monkeypatch):
    # 209 px: ⌈⌉ gives 105, 53, 27, 14 (the built 14×14 grid); ⌊⌋ gives 104, 52, 26, 13
    assert max(golden_diffs("s0_odd", np.float64).values()) <= TOL["float64"]
    floor_sides(monkeypatch)
    with pytest.raises(InputError, match="built for 224×224 inputs.*got 209×209"):
        golden_diffs("s0_odd", np.float64)
    with pytest.raises(ConfigError, match="13×13 stage-2 grid"):
        EfficientFormerV2Config.variant("s0", image_size=209)


# ---------------------------------------------------------------------------------------------
# the new layers against their loop twins


@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 2, 5, 8), (1, 1, 1, 1), (1, 3, 1, 4), (2, 1, 6, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_matches_naive_twin(shape, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    fast, naive = layers.upsample_bilinear_2x(x), layers.upsample_bilinear_2x_naive(x)
    assert fast.shape == naive.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    assert fast.dtype == naive.dtype == dtype
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-15)


def test_upsample_weights():
    x = np.arange(3.0).reshape(1, 1, 1, 3)
    # src = max((o + 0.5)/2 − 0.5, 0): 0, 0.25, 0.75, 1.25, 1.75, 2 (the last index clamps)
    np.testing.assert_allclose(layers.upsample_bilinear_2x(x)[0, 0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2])


@pytest.mark.parametrize("B,h,N,M,dk,dv", [(2, 3, 5, 5, 4, 6), (1, 8, 4, 16, 2, 3), (1, 1, 1, 7, 3, 2)])
@pytest.mark.parametrize("talking", [True, False])
def test_talking_heads_attention_matches_naive_twin(B, h, N, M, dk, dv, talking):
    q, k, v = (RNG.standard_normal(s) for s in ((B, h, N, dk), (B, h, M, dk), (B, h, M, dv)))
    bias = RNG.standard_normal((h, N, M))
    heads = [(RNG.standard_normal((h, h, 1, 1)), RNG.standard_normal(h)) for _ in range(2)] if talking else []
    out, probs = layers.talking_heads_attention(q, k, v, bias, *heads)
    out_naive, probs_naive = layers.talking_heads_attention_naive(q, k, v, bias, *heads)
    np.testing.assert_allclose(out, out_naive, rtol=0, atol=1e-12)
    np.testing.assert_allclose(probs, probs_naive, rtol=0, atol=1e-14)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-12)
    f32 = layers.talking_heads_attention(*(a.astype(np.float32) for a in (q, k, v, bias)),
                                         *[(w.astype(np.float32), b.astype(np.float32)) for w, b in heads])
    assert {a.dtype for a in f32} == {np.dtype(np.float32)}


def test_talking_heads_mix_heads_at_every_position():
    logits, w, b = RNG.standard_normal((2, 4, 3, 5)), RNG.standard_normal((4, 4, 1, 1)), RNG.standard_normal(4)
    expected = np.einsum("gh,bhnm->bgnm", w[:, :, 0, 0], logits) + b[None, :, None, None]
    np.testing.assert_allclose(layers.talking_heads(logits, w, b), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("H,W,stride", [(7, 7, 1), (14, 14, 2), (7, 10, 1), (14, 20, 2), (5, 3, 2)])
def test_bias_index_grid(H, W, stride):
    idx = layers.attention_bias_index_grid(H, W, stride)
    assert idx.shape == (-(-H // stride) * -(-W // stride), H * W) and idx.min() == 0 and idx.max() < H * W
    if H == W:
        assert np.array_equal(idx, original_bias_index(H, None if stride == 1 else -(-H // stride)))
    if stride == 1 and H == W:
        assert np.array_equal(idx, layers.attention_bias_index(H))


# ---------------------------------------------------------------------------------------------
# the contract: sizes, folds, names


@pytest.mark.parametrize("variant,count,one_head", [("s0", 3_600_256, 3_423_256), ("s1", 6_185_560, 5_960_560),
                                                    ("s2", 12_710_112, 12_421_112), ("l", 26_322_288, 25_937_288)])
def test_parameter_counts_equal_timms(variant, count, one_head):
    # timm 1.0.31's efficientformerv2_* (with head_dist, and without; BatchNorm statistics excluded)
    cfg = EfficientFormerV2Config.variant(variant)
    for heads, expected in ((2, count), (1, one_head)):
        assert count_parameters({k: np.empty(s, np.uint8) for k, s in schema.weight_schema(cfg, heads).items()}) == expected


def test_every_batch_norm_but_the_last_folds():
    cfg = EfficientFormerV2Config.variant("s0")
    norms = {k.removesuffix(".running_var") for k in schema.weight_schema(cfg, 2) if k.endswith("running_var")}
    folds = schema.batch_norm_folds(cfg)
    assert {norm for _, norm, _ in folds} == norms - {"norm"} and all(where == "after" for *_, where in folds)
    assert ("stages.3.downsample.attn.v_local.conv", "stages.3.downsample.attn.v_local.bn", "after") in folds
    assert not any("q.local" in conv for conv, _, _ in folds)  # the local-global query's conv has no BatchNorm
    fused = v2.EfficientFormerV2Model(cfg, seeded(cfg, 0)).fuse()
    assert [k for k in fused.weights if "running_var" in k] == ["norm.running_var"]


def test_blocks_and_stages():
    cfg = EfficientFormerV2Config.variant("l")
    kinds = [[kind for kind, _ in stage.blocks] for stage in schema.stages(cfg)]
    assert kinds[:2] == [["ffn"] * 5] * 2
    assert kinds[2] == ["ffn"] * 9 + ["attn_ffn"] * 6 and kinds[3] == ["ffn"] * 4 + ["attn_ffn"] * 6
    assert schema.attention_blocks(cfg)[0] == "stages.2.blocks.9" and len(schema.attention_blocks(cfg)) == 12
    assert [s.downsample for s in schema.stages(cfg)] == [None, "stages.1.downsample", "stages.2.downsample",
                                                         "stages.3.downsample"]


# ---------------------------------------------------------------------------------------------
# outputs, shapes, trace


@pytest.fixture(scope="module")
def s0():
    cfg = EfficientFormerV2Config.variant("s0")
    return v2.EfficientFormerV2ForImageClassificationWithTeacher(cfg, seeded(cfg))


def test_output_fields_and_shapes(s0):
    out = s0(seeded_pixels(2), output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == out.cls_logits.shape == out.distillation_logits.shape == (2, 1000)
    np.testing.assert_allclose(out.logits, (out.cls_logits + out.distillation_logits) / 2)
    assert [h.shape for h in out.hidden_states] == [(2, 32, 56, 56), (2, 48, 28, 28), (2, 96, 14, 14), (2, 176, 7, 7)]
    assert [a.shape for a in out.attentions] == [(2, 8, 49, 49)] * 4
    np.testing.assert_allclose(out.attentions[0].sum(axis=-1), 1.0, rtol=1e-5)
    assert out.keys() == ["logits", "cls_logits", "distillation_logits", "hidden_states", "attentions"]


def test_backbone_and_single_head_share_the_teacher_forward(s0):
    cfg, pixels = EfficientFormerV2Config.variant("s0"), seeded_pixels(1)  # its own: the loss writes problem_type
    trace = Trace(["norm", "head"])
    s0(pixels, trace=trace)
    backbone = v2.EfficientFormerV2Model(cfg, seeded(cfg, 0))(pixels)
    np.testing.assert_array_equal(backbone.last_hidden_state, trace["norm"])
    assert backbone.last_hidden_state.shape == (1, 176, 7, 7)
    single = v2.EfficientFormerV2ForImageClassification(cfg, seeded(cfg, 1))
    out = single(pixels, labels=np.array([3]))
    np.testing.assert_array_equal(out.logits, trace["head"])
    assert out.loss.shape == () and out.loss > 0
    with pytest.raises(ConfigError, match="distillation=False"):
        v2.EfficientFormerV2ForImageClassificationWithTeacher(EfficientFormerV2Config.variant("s0", distillation=False))


def test_trace_names_follow_timms_modules(s0):
    trace = Trace()
    s0(seeded_pixels(1), trace=trace)
    names = list(trace)
    assert names[:5] == ["stem.conv1.conv", "stem.conv1.bn", "stem.conv1", "stem.conv2.conv", "stem.conv2.bn"]
    assert names[-5:] == ["norm", "pooled", "head", "head_dist", "logits"]
    for name in ("stages.2.blocks.4.token_mixer.stride_conv", "stages.2.blocks.4.token_mixer.upsample",
                 "stages.2.blocks.4.token_mixer.act", "stages.2.blocks.4.ls1", "stages.3.downsample.attn.q.local",
                 "stages.3.downsample.attn.q.pool", "stages.3.downsample.attn.attn_probs", "stages.0.blocks.1.mlp.mid",
                 "stages.3.downsample", "stages.3"):
        assert name in names
    assert "stages.3.blocks.2.token_mixer.stride_conv" not in names  # stage 3 attends at its own resolution
    assert trace["stages.3.downsample.attn.attn_probs"].shape == (1, 8, 49, 196)
    assert {v.dtype for v in trace.records.values()} == {np.dtype(np.float32)}  # no float64 temporaries leak out


def test_float64_runs_end_to_end_in_float64():
    cfg = make_golden.case_config("s0_wide")
    trace = Trace()
    v2.EfficientFormerV2Model(cfg, seeded(cfg, 0), dtype=np.float64).fuse()(make_golden.case_pixels("s0_wide", 1), trace=trace)
    assert {v.dtype for v in trace.records.values()} == {np.dtype(np.float64)}


@pytest.mark.parametrize("side,ok", [(224, True), (209, True), (223, True), (208, False), (225, False), (256, False)])
def test_input_sides_must_give_the_built_grid(s0, side, ok):
    pixels = seeded_pixels(1, size=side)
    if ok:
        assert np.isfinite(s0(pixels).logits).all()
    else:
        with pytest.raises(InputError, match=r"built for 224×224 inputs .* height of 209–224 px and a width of 209–224 px"):
            s0(pixels)


def test_non_square_build_takes_its_own_size_only():
    cfg = make_golden.case_config("s0_wide")
    assert cfg.grid(2) == (14, 20) and cfg.input_sides() == [(209, 224), (305, 320)]
    assert schema.weight_schema(cfg)["stages.3.downsample.attn.attention_biases"] == (8, 280)
    assert schema.weight_schema(cfg)["stages.2.blocks.5.token_mixer.attention_biases"] == (8, 70)
    with pytest.raises(InputError, match="built for 224×320"):
        v2.EfficientFormerV2Model(cfg, seeded(cfg, 0))(seeded_pixels(1))


# ---------------------------------------------------------------------------------------------
# the config


def test_variants_and_round_trip():
    assert EfficientFormerV2Config.variant("S2") == EfficientFormerV2Config.variant("efficientformerv2_s2")
    cfg = EfficientFormerV2Config.variant("efficientformerv2-l", image_size=[256, 224])
    assert (cfg.widths, cfg.depths, cfg.num_vit) == ([40, 80, 192, 384], [5, 5, 15, 10], 6)
    assert EfficientFormerV2Config.from_dict(cfg.to_dict()) == cfg
    cfg.mlp_ratios[2][0] = 99  # a config owns its lists: the variant table is untouched
    assert v2_config.VARIANTS["l"]["mlp_ratios"][2][0] == 4
    assert EfficientFormerV2Config() == EfficientFormerV2Config.variant("s0")
    with pytest.raises(ConfigError, match="unknown EfficientFormerV2 variant 'l1'"):
        EfficientFormerV2Config.variant("l1")


@pytest.mark.parametrize("overrides,message", [
    ({"image_size": 240}, r"15×15 stage-2 grid.*15 → ⌈15/2⌉ = 8 → ×2 = 16.*240 does not"),
    ({"image_size": [224, 240]}, "14×15 stage-2 grid"),
    ({"image_size": [224]}, "one side or"),
    ({"image_size": 2048}, "1–1024 px"),
    ({"hidden_act": "relu"}, "exact GELU everywhere"),
    ({"batch_norm_eps": 1e-3}, "norm_eps does not reach"),
    ({"num_vit": 5}, r"at most min\(depths\[2\], depths\[3\]\) = 4"),
    ({"mlp_ratios": [[4, 4], [4, 4], [4] * 6, [4] * 3]}, "one ratio per block"),
    ({"mlp_ratios": [[4, 4], [4, 4], [4] * 6, [4, 4, 0, 4]]}, r"mlp_ratios\[3\]\[2\]=0"),
    ({"widths": [1, 48, 96, 176]}, "at least 2"),
    ({"depths": [2, 2, 6]}, "4 entries"),
    ({"key_dim": 0}, "key_dim=0 must be >= 1"),
    ({"layer_scale_init_value": None}, "layer_scale_init_value=None: expected a number"),
])
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        EfficientFormerV2Config.variant("s0", **overrides)


# ---------------------------------------------------------------------------------------------
# live tier


@pytest.fixture(scope="module")
def timm_models():
    """timm_models(case, dtype) -> timm's model holding the seeded weights (built once per module)."""
    pytest.importorskip("torch")
    from npformer.tools.oracle import import_timm

    try:
        import_timm()  # not importorskip: timm needs oracle.import_timm's torchvision workaround here
    except ImportError as err:
        pytest.skip(f"could not import 'timm': {err}")

    cache = {}

    def get(case, dtype):
        key = (case, np.dtype(dtype).name)
        if key not in cache:
            cfg = make_golden.case_config(case)
            cache[key] = make_golden.timm_model(make_golden.CASES[case][0], cfg, seeded(cfg), dtype)
        return cache[key]

    yield get
    cache.clear()


@pytest.mark.oracle
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("variant", variants("efficientformerv2", VARIANTS))
def test_matches_timm_live(variant, batch, timm_models):
    cfg = make_golden.case_config(variant)
    weights = seeded(cfg)
    pixels = make_golden.case_pixels(variant, batch)
    for dtype in (np.float32, np.float64) if batch == 1 else (np.float32,):
        ref = make_golden.timm_outputs(timm_models(variant, dtype), pixels)
        for fuse in (False, True):
            found = diffs(npformer_outputs(cfg, weights, pixels, dtype, fuse), ref)
            assert max(found.values()) <= TOL[np.dtype(dtype).name], (np.dtype(dtype).name, fuse, found)


@pytest.mark.oracle
@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("case", ["s0", "s0_wide"])
def test_every_traced_timm_module_matches(case, fuse, timm_models):
    cfg = make_golden.case_config(case)
    pixels = make_golden.case_pixels(case, 1)
    trace = Trace()
    model = v2.EfficientFormerV2ForImageClassificationWithTeacher(cfg, seeded(cfg), dtype=np.float64)
    (model.fuse() if fuse else model)(pixels, trace=trace)
    timm = timm_models(case, np.float64)
    modules = dict(timm.named_modules())
    shared = [name for name in trace if name in modules]
    assert {name.rsplit(".", 1)[-1] for name in trace if name not in modules} == {"attn_probs", "pooled", "logits"}
    ref = make_golden.timm_outputs(timm, pixels, shared)
    found = {name: scaled_diff(trace[name], ref[name]) for name in shared}
    assert len(shared) > 200 and max(found.values()) <= TOL["float64"], sorted(found.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.oracle
@pytest.mark.parametrize("case", tiered(make_golden.CASES, lambda case: ("efficientformerv2", make_golden.CASES[case][0])))
def test_timm_state_dict_and_buffers_are_the_schema(case, timm_models):
    from timm.models import efficientformer_v2 as timm_v2

    cfg = make_golden.case_config(case)
    timm = timm_models(case, np.float32)
    state = {k: tuple(v.shape) for k, v in timm.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(state.items()) == list(schema.weight_schema(cfg, 2).items())
    assert sum(p.numel() for p in timm.parameters()) == count_parameters({k: np.empty(s, np.uint8) for k, s in state.items()})
    buffers = {k: v.numpy() for k, v in timm.named_buffers() if k.endswith("attention_bias_idxs")}
    assert len(buffers) == len(schema.attention_blocks(cfg)) + 1
    for key, value in buffers.items():
        assert schema.check_derived_buffer(key, value, cfg, "timm"), key
    variant = make_golden.CASES[case][0].upper()
    assert list(timm_v2.EfficientFormer_width[variant]) == cfg.widths
    assert list(timm_v2.EfficientFormer_depth[variant]) == cfg.depths
    ratios = timm_v2.EfficientFormer_expansion_ratios[variant]
    assert [[r] * d if isinstance(r, int) else list(r) for r, d in zip(ratios, cfg.depths)] == cfg.mlp_ratios


@pytest.mark.oracle
@pytest.mark.parametrize("variant", variants("efficientformerv2", ["s0", "s1"]))
def test_timm_state_dict_renamed_to_original_gives_timms_logits(variant, timm_models):
    cfg = make_golden.case_config(variant)
    timm = timm_models(variant, np.float64)
    state = {k: v.numpy() for k, v in timm.state_dict().items() if not k.endswith("num_batches_tracked")}
    tensors = original_to_canonical(original_state_dict(cfg, state), cfg)
    pixels = make_golden.case_pixels(variant, 1)
    ours = v2.EfficientFormerV2ForImageClassificationWithTeacher(cfg, tensors, dtype=np.float64)(pixels).logits
    assert abs_diff(ours, make_golden.timm_outputs(timm, pixels, ())["logits"]) <= TOL["float64"]


@pytest.mark.oracle
def test_torch_files_load_through_npformer(timm_models, tmp_path):
    import torch

    import npformer

    cfg = make_golden.case_config("s0")
    timm = timm_models("s0", np.float32)
    state = timm.state_dict()
    original = original_state_dict(cfg, {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")})
    pixels = make_golden.case_pixels("s0", 1)
    ref = make_golden.timm_outputs(timm, pixels, ())["logits"]
    for name, sd in (("timm", state), ("original", {k: torch.from_numpy(np.array(v)) for k, v in original.items()})):
        torch.save(sd, tmp_path / f"{name}.pth")
        model = npformer.from_pretrained(tmp_path / f"{name}.pth")
        assert type(model) is v2.EfficientFormerV2ForImageClassificationWithTeacher and model.config == cfg
        assert abs_diff(model(pixels).logits, ref) <= TOL["float32"], name


@pytest.mark.oracle
def test_layers_match_torch():
    torch = pytest.importorskip("torch")
    for shape in [(2, 3, 7, 7), (1, 2, 5, 8), (1, 1, 1, 3), (2, 4, 14, 20)]:
        for dtype, atol in ((np.float32, 1e-6), (np.float64, 1e-15)):
            x = RNG.standard_normal(shape).astype(dtype)
            ref = torch.nn.Upsample(scale_factor=2, mode="bilinear")(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(layers.upsample_bilinear_2x(x), ref, rtol=0, atol=atol)
    logits, w, b = (RNG.standard_normal(s) for s in ((2, 8, 49, 196), (8, 8, 1, 1), (8,)))
    ref = torch.nn.functional.conv2d(torch.from_numpy(logits), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(layers.talking_heads(logits, w, b), ref, rtol=0, atol=1e-13)
