"""npformer owns its threads (npformer/parallel.py): outputs bit-identical for any worker count and
batch-invariant (an image alone or at any place in a batch), BLAS held at one thread during a
forward and given back after, forwards from several caller threads.

Every variant of every family, seeded weights, the fused fast path. The large variants run on
smaller inputs to keep the file fast: EfficientFormer-L3/L7 at 193 px (the smallest side their
7×7 attention grid accepts), SwiftFormer-L1/L3 at 128 px (any size works), EfficientFormerV2-S2/L
at 209 px (the smallest for their grids); the rest at 224."""

import threading
import time

import numpy as np
import pytest
import threadpoolctl

import npformer
from npformer import EfficientFormerConfig, EfficientFormerV2Config, SwiftFormerConfig
from npformer import EfficientFormerForImageClassificationWithTeacher, EfficientFormerV2ForImageClassificationWithTeacher
from npformer import SwiftFormerForImageClassification
from npformer import parallel
from npformer.errors import InputError
from npformer.trace import Trace
from tiers import REPRESENTATIVE, named_variants

FAMILIES = {
    "efficientformer": (EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher),
    "swiftformer": (SwiftFormerConfig, SwiftFormerForImageClassification),
    "efficientformerv2": (EfficientFormerV2Config, EfficientFormerV2ForImageClassificationWithTeacher),
}
CASES = {  # name: input side
    "efficientformer-l1": 224, "efficientformer-l3": 193, "efficientformer-l7": 193,
    "swiftformer-xs": 224, "swiftformer-s": 224, "swiftformer-l1": 128, "swiftformer-l3": 128,
    "efficientformerv2-s0": 224, "efficientformerv2-s1": 224, "efficientformerv2-s2": 209, "efficientformerv2-l": 209,
}


def build(name):
    family, variant = name.split("-")
    config_class, model_class = FAMILIES[family]
    return model_class(config_class.variant(variant)).fuse()


def images(n, side, seed=0):  # [n, 3, side, side]: distinct images, normalised-pixel scale
    return np.random.default_rng(seed).standard_normal((n, 3, side, side)).astype(np.float32)


@pytest.fixture
def threads():
    """set_num_threads for the test, the default back afterwards."""
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


@pytest.mark.parametrize("name", named_variants(CASES))
def test_outputs_are_bit_identical_for_any_worker_count_and_batch_invariant(name, threads):
    model, side = build(name), CASES[name]
    batch = images(8, side)
    per_workers = {}
    for n in (1, 2, 3):
        threads(n)
        alone = [model(batch[i : i + 1]).logits for i in (0, 5)]  # batch 1: the op-level pieces
        per_workers[n] = (alone, model(batch[:3]).logits)  # batch 3: one image per task
    one_alone, one_batch = per_workers[1]
    for n in (2, 3):
        alone, batched = per_workers[n]
        assert all(np.array_equal(a, b) for a, b in zip(alone, one_alone)), f"batch-1 logits change with {n} workers"
        assert np.array_equal(batched, one_batch), f"batch-3 logits change with {n} workers"
    threads(2)
    in_batch = model(batch).logits  # [8, K]
    for i in range(8):
        assert np.array_equal(in_batch[i], model(batch[i : i + 1]).logits[0]), f"image {i} differs alone and in a batch"
    assert np.array_equal(one_batch, in_batch[:3])
    assert np.abs(in_batch[0] - in_batch[1]).max() > 1e-3  # the images are distinct: the comparison can fail


def test_a_batch_gives_every_output_field_and_trace_entry_as_the_images_alone(threads):
    threads(2)
    model = build("efficientformer-l1")
    batch = images(3, 224, seed=1)
    labels = np.array([3, 1, 4])
    trace = Trace(["stages.3.*", "stem", "norm"])
    out = model(batch, output_hidden_states=True, output_attentions=True, trace=trace)
    singles = [Trace(["stages.3.*", "stem", "norm"]) for _ in range(3)]
    alone = [model(batch[i : i + 1], output_hidden_states=True, output_attentions=True, trace=singles[i]) for i in range(3)]
    assert np.array_equal(out.cls_logits, np.concatenate([a.cls_logits for a in alone]))
    assert len(out.hidden_states) == 8 and len(out.attentions) == 1
    for k in range(8):
        assert np.array_equal(out.hidden_states[k], np.concatenate([a.hidden_states[k] for a in alone]))
    assert np.array_equal(out.attentions[0], np.concatenate([a.attentions[0] for a in alone]))
    assert list(trace.records) == list(singles[0].records)  # same names, forward order
    assert len(trace.records) > 20
    for name, value in trace.records.items():
        assert np.array_equal(value, np.concatenate([s[name] for s in singles])), name
    # a loss is computed once, on the joined logits (not the mean of per-image losses)
    classifier = npformer.EfficientFormerForImageClassification(EfficientFormerConfig.variant("l1")).fuse()
    joined = classifier(batch, labels=labels)
    logits = np.concatenate([classifier(batch[i : i + 1]).logits for i in range(3)])
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = -np.mean(shifted[np.arange(3), labels] - np.log(np.exp(shifted).sum(axis=1)))
    assert np.array_equal(joined.logits, logits)
    assert np.isclose(joined.loss, expected, rtol=1e-6)


def test_a_mac_count_of_a_batch_sees_every_image(threads):
    threads(2)
    model = build("swiftformer-xs")
    with npformer.macs.counting() as one:
        model(images(1, 96))
    with npformer.macs.counting() as three:
        model(images(3, 96))
    assert one.total > 0 and three.total == 3 * one.total


def blas_threads():
    return sorted((i["internal_api"], i["num_threads"]) for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def test_blas_runs_on_one_thread_inside_a_forward_and_the_callers_limits_come_back(threads):
    threads(2)
    model = build("efficientformer-l1")
    seen = []

    def trace(name, x):  # looks at BLAS from inside the forward, once
        if not seen:
            seen.append(blas_threads())
        return x

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(n == 2 for _, n in before)
        model(images(1, 224), trace=trace)
        assert blas_threads() == before
        model(images(2, 224))
        assert blas_threads() == before
    assert seen and all(n == 1 for _, n in seen[0])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_weights_memory_layout_does_not_change_a_bit(family):
    """The same weights held in Fortran order or as strided views (as tf_model.h5's transposed kernels
    arrive) give bit-identical outputs: the model keeps its weights in C order."""
    config_class, model_class = FAMILIES[family]
    config = config_class.variant(REPRESENTATIVE[family])
    weights = dict(model_class(config).weights)
    fortran = {k: np.asfortranarray(v) for k, v in weights.items()}
    strided = {k: np.repeat(v, 2, axis=-1)[..., ::2] if v.ndim else v for k, v in weights.items()}
    assert any(not v.flags.c_contiguous for v in fortran.values())
    pixels = images(1, 224)
    expected = model_class(config, weights)(pixels).logits
    for other in (fortran, strided):
        model = model_class(config, other)
        assert all(v.flags.c_contiguous for v in model.weights.values())
        assert np.array_equal(model(pixels).logits, expected)


def test_callers_threads_each_running_forwards_get_the_same_bits(threads):
    threads(2)
    model = build("swiftformer-xs")
    inputs = [images(b, 160, seed=s) for s, b in enumerate((1, 2, 1))]
    expected = [model(x).logits.tobytes() for x in inputs]
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        results, errors = [[] for _ in range(4)], []

        def work(t):
            try:
                for i in range(6):
                    which = (t + i) % 3
                    results[t].append((which, model(inputs[which]).logits.tobytes()))
            except Exception as err:
                errors.append(repr(err))

        callers = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for c in callers:
            c.start()
        for c in callers:
            c.join()
        assert errors == [] and sum(map(len, results)) == 24
        assert all(got == expected[which] for r in results for which, got in r)
        assert blas_threads() == before


def test_pieces_depend_on_the_shape_alone_and_cover_it_once():
    assert parallel.pieces(192, 48 * 3136) == [slice(0, 96), slice(96, 192)]  # 29M MACs: 2 pieces
    assert len(parallel.pieces(224, 896 * 196)) == 4  # 39M: 4 of 9.8M
    assert parallel.pieces(48, 192 * 3136) == [slice(0, 24), slice(24, 48)]
    assert parallel.pieces(24, 1 << 30) == [slice(0, 24)]  # thinner than 2 × MIN_ROWS: one piece
    assert parallel.pieces(10, 1) == [slice(0, 10)]
    assert parallel.pieces(0, 5) == [slice(0, 0)]
    hits = np.zeros(1000, int)
    parallel.for_each_piece(1000, 80_000, lambda s: np.add.at(hits, np.arange(s.start, s.stop), 1))
    assert (hits == 1).all() and len(parallel.pieces(1000, 80_000)) == 8


def test_equal_blocks_depend_on_the_size_alone_and_cover_it_once():
    assert parallel.equal_blocks(175_000, 1 << 17) == [slice(0, 87_500), slice(87_500, 175_000)]
    assert [c.stop - c.start for c in parallel.equal_blocks(602_112, 1 << 17)] == [75_264] * 8
    assert parallel.equal_blocks(10, 100) == [slice(0, 10)]
    assert parallel.equal_blocks(0, 4) == []
    cuts = parallel.equal_blocks(1001, 100)
    assert len(cuts) == 16 and {c.stop - c.start for c in cuts} == {62, 63}
    assert [c.start for c in cuts[1:]] == [c.stop for c in cuts[:-1]] and cuts[-1].stop == 1001


def test_pieces_on_this_thread_keeps_every_piece_on_the_caller(threads):
    threads(3)
    where = []
    with parallel.pieces_on_this_thread():
        parallel.parallel_for(40, lambda i: where.append((i, threading.get_ident())))
    assert sorted(i for i, _ in where) == list(range(40)) and {t for _, t in where} == {threading.get_ident()}
    assert [i for i, _ in where] == list(range(40))  # in order, as a nested parallel_for runs
    seen = set()

    def slow(i):  # long enough that a helper takes some of the pieces
        seen.add(threading.get_ident())
        time.sleep(0.002)

    parallel.parallel_for(40, slow)
    assert len(seen) > 1, "outside the block the helpers take pieces again"


def test_parallel_for_runs_each_piece_once_and_reports_a_failure(threads):
    threads(3)
    done = []
    parallel.parallel_for(50, done.append)
    assert sorted(done) == list(range(50))

    def fails(i):
        if i == 7:
            raise ValueError("piece 7")

    with pytest.raises(ValueError, match="piece 7"):
        parallel.parallel_for(20, fails)


def test_the_thread_count_is_checked(threads, monkeypatch):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError, match="positive int"):
            parallel.set_num_threads(bad)
    monkeypatch.setattr(parallel, "_threads", None)
    monkeypatch.setenv("NPFORMER_NUM_THREADS", "3")
    assert parallel.num_threads() == 3
    monkeypatch.setattr(parallel, "_threads", None)
    monkeypatch.setenv("NPFORMER_NUM_THREADS", "two")
    with pytest.raises(InputError, match="NPFORMER_NUM_THREADS='two'"):
        parallel.num_threads()
    monkeypatch.setattr(parallel, "_threads", None)
    monkeypatch.delenv("NPFORMER_NUM_THREADS")
    assert parallel.num_threads() == parallel.available_cores()
