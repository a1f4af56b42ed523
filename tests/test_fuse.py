"""BatchNorm folding (npformer.fuse, model.fuse()): the fused fast path equals the unfused model."""

import numpy as np
import pytest

from npformer import fuse, layers
from npformer import EfficientFormerConfig, SwiftFormerConfig
from npformer import EfficientFormerForImageClassificationWithTeacher, EfficientFormerModel
from npformer.errors import InputError
from npformer.tools.parity import seeded_pixels
from npformer import SwiftFormerForImageClassification, SwiftFormerModel
from npformer.trace import Trace
from tiers import heavy

RNG = np.random.default_rng(0)


def bn_params(c):
    return RNG.normal(0, 1, c), RNG.uniform(0.3, 3, c), RNG.normal(1, 0.5, c), RNG.normal(0, 1, c)  # mean, var, γ, β


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, 1), (1, 2, 1), (6, 1, 1)])
def test_fold_after_equals_conv_then_batch_norm(groups, stride, padding):
    x = RNG.normal(0, 1, (2, 6, 9, 9))
    w, b = RNG.normal(0, 1, (6, 6 // groups, 3, 3)), RNG.normal(0, 1, 6)
    mean, var, gamma, beta = bn_params(6)
    expected = layers.batch_norm(layers.conv2d(x, w, b, stride, padding, groups), mean, var, gamma, beta, 1e-5)
    wf, bf = fuse.fold_after(w, b, *layers.batch_norm_affine(mean, var, gamma, beta, 1e-5))
    np.testing.assert_allclose(layers.conv2d(x, wf, bf, stride, padding, groups), expected, rtol=1e-12, atol=1e-12)


def test_fold_before_equals_batch_norm_then_1x1_conv():
    x = RNG.normal(0, 1, (2, 5, 4, 4))
    w, b = RNG.normal(0, 1, (7, 5, 1, 1)), RNG.normal(0, 1, 7)
    mean, var, gamma, beta = bn_params(5)
    expected = layers.conv2d(layers.batch_norm(x, mean, var, gamma, beta, 1e-5), w, b)
    wf, bf = fuse.fold_before(w, b, *layers.batch_norm_affine(mean, var, gamma, beta, 1e-5))
    np.testing.assert_allclose(layers.conv2d(x, wf, bf), expected, rtol=1e-12, atol=1e-12)


MODELS = [
    (EfficientFormerForImageClassificationWithTeacher, EfficientFormerConfig.variant("l1")),
    pytest.param(EfficientFormerModel, EfficientFormerConfig.variant("l3"), marks=heavy),
    (SwiftFormerForImageClassification, SwiftFormerConfig.variant("xs", attention_generation="v2")),
    pytest.param(SwiftFormerModel, SwiftFormerConfig.variant("s"), marks=heavy),
]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("cls,cfg", MODELS, ids=lambda v: getattr(v, "__name__", ""))
def test_fused_model_equals_unfused(cls, cfg, dtype, tol):
    model = cls(cfg, dtype=dtype)
    fused = model.fuse()
    pixels = seeded_pixels(2)
    trace, trace_fused = Trace(["*"]), Trace(["*"])
    out, out_fused = model(pixels, trace=trace), fused(pixels, trace=trace_fused)
    first = "logits" if "logits" in out.keys() else "last_hidden_state"
    assert out_fused[first].dtype == dtype
    scale = max(1.0, float(np.abs(out[first]).max()))
    assert np.abs(out_fused[first] - out[first]).max() / scale <= tol
    # every activation both traces have agrees (the residual stream grows: relative to its size)
    common = [k for k in trace_fused.records if k in trace.records]
    assert len(common) > 20
    worst = max(np.abs(trace_fused[k] - trace[k]).max() / max(1.0, float(np.abs(trace[k]).max())) for k in common)
    assert worst <= 10 * tol


def test_fused_trace_has_each_batch_norm_output_under_its_own_name():
    cfg = EfficientFormerConfig.variant("l1")
    model = EfficientFormerForImageClassificationWithTeacher(cfg)
    trace, trace_fused = Trace(["*"]), Trace(["*"])
    model(seeded_pixels(1), trace=trace)
    model.fuse()(seeded_pixels(1), trace=trace_fused)
    folded = {conv for conv, _, _ in model.batch_norm_folds(cfg)}
    assert set(trace.records) - set(trace_fused.records) == folded  # the bare convolutions are gone
    assert set(trace_fused.records) <= set(trace.records)


def test_fuse_drops_exactly_the_folded_batch_norms():
    cfg = SwiftFormerConfig.variant("xs", attention_generation="v2")
    model = SwiftFormerForImageClassification(cfg)
    fused = model.fuse()
    dropped = set(model.weights) - set(fused.weights)
    norms = {norm for _, norm, _ in model.batch_norm_folds(cfg)}
    assert dropped == {f"{n}.{k}" for n in norms for k in ("weight", "bias", "running_mean", "running_var")}
    assert "norm.running_var" in fused.weights  # the classifier's BatchNorm is next to no convolution
    assert fused.fused and not model.fused and fused.fuse() is fused
    assert all(not v.flags.writeable for v in fused.weights.values())
    assert model.params.tensors is not fused.params.tensors


def test_a_fused_model_cannot_be_saved(tmp_path):
    fused = SwiftFormerModel(SwiftFormerConfig.variant("xs")).fuse()
    with pytest.raises(InputError, match="before .fuse"):
        fused.save_pretrained(tmp_path / "x.safetensors")
