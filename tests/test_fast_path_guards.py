"""Guards for the fast path: no intermediate silently becomes float64, and a forward pass does not
allocate far more than it should (tracemalloc sees NumPy's buffers, from every thread).

The memory guards measure a forward on one thread (`npformer.parallel.set_num_threads(1)`, restored
after): with helpers, the peak depends on how the threads' pieces happen to overlap (up to 12.4
against 10.4 MiB for L1 on a busy 2-core machine), and a bound on it would be a bound on the
scheduler; on one thread the peak is the same on every run."""

import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest

from npformer import layers, parallel

from npformer import EfficientFormerConfig, EfficientFormerV2Config, SwiftFormerConfig
from npformer import EfficientFormerForImageClassificationWithTeacher, EfficientFormerV2ForImageClassificationWithTeacher
from npformer.tools.parity import seeded_pixels
from npformer import SwiftFormerForImageClassification
from npformer.trace import Trace

# peak bytes traced during one fused forward at batch 1 on one thread, in MiB: measured 8.9 (L1),
# 9.5 (XS) and 7.9 (V2-S0) in float32 (the same on every run), 19.3, 20.4 and 17.0 in float64; the
# bounds leave a third for allocator and NumPy differences
MODELS = {
    "efficientformer-l1": (lambda dtype: EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.variant("l1"),
                                                                                          dtype=dtype), 12),
    "swiftformer-xs": (lambda dtype: SwiftFormerForImageClassification(SwiftFormerConfig.variant("xs"), dtype=dtype), 13),
    "efficientformerv2-s0": (lambda dtype: EfficientFormerV2ForImageClassificationWithTeacher(
        EfficientFormerV2Config.variant("s0"), dtype=dtype), 10.5),
}


@contextmanager
def one_thread():
    """npformer's forwards on the calling thread only, for a peak no thread interleaving can move."""
    saved = parallel.num_threads()
    parallel.set_num_threads(1)
    try:
        yield
    finally:
        parallel.set_num_threads(saved)


def peak_mib(model, pixels) -> float:
    with one_thread():
        model(pixels)  # warm: first-call allocations (the attention-bias index) are not the forward's
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
    # on one thread, the same peak every time (to a few Python objects' bytes)
    assert abs(peak_mib(build(np.float32).fuse(), pixels) - peak32) < 0.01
    # a float64 temporary anywhere in the float32 path pushes its peak towards the float64 one
    assert peak32 <= 0.6 * peak64, (peak32, peak64)


def test_the_guard_catches_a_float64_round_trip(monkeypatch):
    # a GELU that computes in float64 and casts back: every traced dtype is still float32
    exact = layers.ACTIVATIONS["gelu"]
    monkeypatch.setitem(layers.ACTIVATIONS, "gelu", lambda x: exact(x.astype(np.float64)).astype(x.dtype))
    build, bound = MODELS["efficientformer-l1"]
    peak32 = peak_mib(build(np.float32).fuse(), seeded_pixels(1))
    assert peak32 > bound or peak32 > 0.6 * peak_mib(build(np.float64).fuse(), seeded_pixels(1))
