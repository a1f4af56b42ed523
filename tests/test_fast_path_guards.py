"""Guards for the fast path: no intermediate silently becomes float64, and a forward pass does not
allocate far more than it should (tracemalloc sees NumPy's buffers, from every thread)."""

import tracemalloc

import numpy as np
import pytest

from npformer import layers

from npformer import EfficientFormerConfig, EfficientFormerV2Config, SwiftFormerConfig
from npformer import EfficientFormerForImageClassificationWithTeacher, EfficientFormerV2ForImageClassificationWithTeacher
from npformer.tools.parity import seeded_pixels
from npformer import SwiftFormerForImageClassification
from npformer.trace import Trace

# peak bytes traced during one forward at batch 1, in MiB: measured 10.5 (L1), 11.0 (XS) and 8.6
# (V2-S0) in float32, 22.5, 23.3 and 18.8 in float64; the bounds leave room for allocator and
# NumPy differences
MODELS = {
    "efficientformer-l1": (lambda dtype: EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.variant("l1"),
                                                                                          dtype=dtype), 13),
    "swiftformer-xs": (lambda dtype: SwiftFormerForImageClassification(SwiftFormerConfig.variant("xs"), dtype=dtype), 15),
    "efficientformerv2-s0": (lambda dtype: EfficientFormerV2ForImageClassificationWithTeacher(
        EfficientFormerV2Config.variant("s0"), dtype=dtype), 11),
}


def peak_mib(model, pixels) -> float:
    model(pixels)  # warm: first-call allocations (the attention-bias index, thread pool) are not the forward's
    tracemalloc.start()
    try:
        model(pixels)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", MODELS)
def test_every_intermediate_keeps_the_model_dtype(name, dtype, fused):
    model = MODELS[name][0](dtype)
    model = model.fuse() if fused else model
    trace = Trace(["*"])
    out = model(seeded_pixels(1).astype(np.float64), trace=trace)  # float64 pixels: cast once, at the input
    wrong = {k: v.dtype for k, v in trace.records.items() if v.dtype != dtype}
    assert not wrong and out.logits.dtype == dtype, wrong
    assert len(trace.records) > 50


@pytest.mark.parametrize("name", MODELS)
def test_a_forward_allocates_what_it_should(name):
    build, bound = MODELS[name]
    pixels = seeded_pixels(1)
    peak32 = peak_mib(build(np.float32).fuse(), pixels)
    peak64 = peak_mib(build(np.float64).fuse(), pixels)
    assert peak32 <= bound, f"float32 forward peaked at {peak32:.1f} MiB (bound {bound})"
    # a float64 temporary anywhere in the float32 path pushes its peak towards the float64 one
    assert peak32 <= 0.6 * peak64, (peak32, peak64)


def test_the_guard_catches_a_float64_round_trip(monkeypatch):
    # a GELU that computes in float64 and casts back: every traced dtype is still float32
    exact = layers.ACTIVATIONS["gelu"]
    monkeypatch.setitem(layers.ACTIVATIONS, "gelu", lambda x: exact(x.astype(np.float64)).astype(x.dtype))
    build, bound = MODELS["efficientformer-l1"]
    peak32 = peak_mib(build(np.float32).fuse(), seeded_pixels(1))
    assert peak32 > bound or peak32 > 0.6 * peak_mib(build(np.float64).fuse(), seeded_pixels(1))
