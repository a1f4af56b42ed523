"""SwiftFormer XS/S/L1/L3: attention v1 against transformers 4.40.2, v2 against timm.

Golden tier (no torch): seeded weights and pixels are regenerated from their seeds and compared
with the references' outputs in tests/fixtures/golden/swiftformer_*.safetensors
(make_golden_swiftformer.py). Live tier (oracle): the same against the references directly.
"""

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import npformer.models.swiftformer.model as sf
from npformer import SwiftFormerConfig
from npformer.errors import ConfigError, InputError
from npformer.tools.parity import abs_diff, checksum, entry_diff, golden_entries, npformer_outputs, reference_config
from npformer.tools.parity import seeded_pixels
from npformer.checkpoints.seeded import seeded_weights
from npformer.trace import Trace
from tiers import variants

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
TOL = {"float32": 1e-4, "float64": 1e-9}
VARIANTS = variants("swiftformer", ["xs", "s", "l1", "l3"])
CASES = [("transformers", 2), ("transformers", 0), ("timm", 2)]


def read_golden(variant):
    with safe_open(str(GOLDEN / f"swiftformer_{variant}.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def golden_diffs(variant, reference, num_heads, dtype, cfg=None, fuse=False):
    """{entry: difference npformer − reference}: absolute for outputs, scaled for hidden states."""
    golden, meta = read_golden(variant)
    cfg = cfg or reference_config("swiftformer", variant, reference)
    pixels = seeded_pixels(2)
    assert checksum({"pixels": pixels}) == meta["pixels_checksum"], "seeded pixels drifted: regenerate fixtures"
    weights = seeded_weights(cfg, num_heads=num_heads, seed=0)
    assert checksum(weights) == meta[f"{reference}/{num_heads}/weights_checksum"], "seeded weights drifted"
    ours = npformer_outputs(cfg, weights, num_heads, pixels, dtype, reference, fuse=fuse)
    ours = golden_entries(ours, "swiftformer", num_heads, f"{reference}/{num_heads}/{np.dtype(dtype).name}")
    assert ours.keys() <= golden.keys() and ours
    return {k: entry_diff(k, v, golden[k]) for k, v in ours.items()}


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reference,num_heads", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference_golden(variant, reference, num_heads, dtype, fuse):
    diffs = golden_diffs(variant, reference, num_heads, dtype, fuse=fuse)
    tol = TOL[np.dtype(dtype).name]
    bad = {k: v for k, v in diffs.items() if v > tol}
    assert not bad, f"beyond {tol}: {bad}"


@pytest.mark.parametrize("weights_from,run_as", [("transformers", "v2"), ("timm", "v1")])
def test_the_attention_generation_matters(weights_from, run_as):
    # v1 weights under v2 code (and the reverse) run, give finite logits, and are wrong
    cfg = reference_config("swiftformer", "xs", weights_from)
    cfg.attention_generation = run_as
    diffs = golden_diffs("xs", weights_from, 2, np.float64, cfg=cfg)
    assert max(diffs.values()) > 1e-3


def test_v1_weights_are_all_ones_and_v2_are_unit_norm():
    x = seeded_pixels(1, size=64)
    for generation in ("v1", "v2"):
        cfg = SwiftFormerConfig.variant("xs", attention_generation=generation)
        trace = Trace(["*.attn.weights"])
        sf.SwiftFormerForImageClassification(cfg)(x, trace=trace)
        for name, weights in trace.records.items():  # [B, N, 1]
            if generation == "v1":
                np.testing.assert_array_equal(weights, 1.0)
            else:
                np.testing.assert_allclose(np.sqrt((weights**2).sum(axis=1)), 1.0, rtol=1e-6)


@pytest.fixture(scope="module")
def xs():
    cfg = SwiftFormerConfig.variant("xs")
    return sf.SwiftFormerForImageClassification(cfg, seeded_weights(cfg, 2))


def test_output_fields_and_shapes(xs):
    out = xs(seeded_pixels(2), output_hidden_states=True)
    assert out.logits.shape == (2, 1000) and out.logits.dtype == np.float32
    assert [h.shape for h in out.hidden_states] == [
        (2, 48, 56, 56), (2, 48, 56, 56), (2, 56, 28, 28), (2, 56, 28, 28),
        (2, 112, 14, 14), (2, 112, 14, 14), (2, 220, 7, 7), (2, 220, 7, 7)]
    assert out.keys() == ["logits", "hidden_states"]


@pytest.mark.parametrize("size", [(32, 32), (96, 160), (225, 193), (1, 7)])
def test_any_input_size(xs, size):
    out = xs(seeded_pixels(1, size=1)[:, :, :1, :1].repeat(size[0], 2).repeat(size[1], 3))
    assert out.logits.shape == (1, 1000) and np.isfinite(out.logits).all()


def test_backbone_has_no_norm_and_returns_nchw():
    cfg = SwiftFormerConfig.variant("xs")
    model = sf.SwiftFormerModel(cfg, seeded_weights(cfg, 0))
    assert "norm.weight" not in model.weights
    assert model(seeded_pixels(1)).last_hidden_state.shape == (1, 220, 7, 7)


def test_trace_names_follow_the_weights(xs):
    trace = Trace()
    xs(seeded_pixels(1, size=64), trace=trace)
    names = list(trace)
    assert names[:2] == ["stem.0", "stem.1"] and names[-1] == "logits"
    for name in ("stages.0.blocks.2.local_representation", "stages.0.blocks.2.attn", "stages.0.blocks.2.linear",
                 "stages.1.downsample", "stages.3", "norm", "pooled", "head", "head_dist"):
        assert name in names


def test_bad_inputs_and_configs():
    cfg = SwiftFormerConfig.variant("xs")
    model = sf.SwiftFormerModel(cfg, seeded_weights(cfg, 0))
    with pytest.raises(InputError, match="channels"):
        model(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(InputError, match="empty"):
        model(np.zeros((1, 3, 0, 8), np.float32))
    with pytest.raises(ConfigError, match="attention_generation='v3'"):
        SwiftFormerConfig.variant("xs", attention_generation="v3")
    with pytest.raises(ConfigError, match="unknown SwiftFormer variant"):
        SwiftFormerConfig.variant("m")


@pytest.mark.parametrize("variant,count", [("xs", 3_475_360), ("s", 6_092_128), ("l1", 12_057_920), ("l3", 28_494_736)])
def test_parameter_counts_equal_timms(variant, count):
    # timm 1.0.31's swiftformer_* (both heads; BatchNorm statistics excluded)
    from npformer.checkpoints.weights import count_parameters

    cfg = SwiftFormerConfig.variant(variant)
    assert count_parameters({k: np.empty(s, np.uint8) for k, s in sf.weight_schema(cfg, 2).items()}) == count


# ---------------------------------------------------------------------------------------------
# live tier


@pytest.mark.oracle
@pytest.mark.parametrize("reference,num_heads", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference_live(variant, reference, num_heads):
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from npformer.tools.parity import compare

    for batch, dtype, fused in ((1, np.float32, False), (4, np.float32, False), (1, np.float64, False),
                                (4, np.float32, True), (1, np.float64, True)):
        diffs = compare("swiftformer", variant, reference, num_heads, batch, dtype, fused=fused)
        assert max(diffs.values()) <= TOL[np.dtype(dtype).name], (reference, num_heads, batch, dtype, fused, diffs)


@pytest.mark.oracle
def test_odd_input_size_matches_transformers():
    pytest.importorskip("transformers")
    from npformer.tools.oracle import hf_forward, hf_model

    cfg = SwiftFormerConfig.variant("xs")
    weights = seeded_weights(cfg, 2)
    pixels = seeded_pixels(2, size=200)[:, :, :, :136]  # 200×136: odd halvings on the way down
    ref = hf_forward(hf_model(cfg, weights, 2, np.float64), pixels)
    ours = sf.SwiftFormerForImageClassification(cfg, weights, dtype=np.float64)(pixels)
    assert abs_diff(ours.logits, ref["logits"]) < 1e-9
