"""Arrays given to models: bad ones get an InputError saying what is wrong; every accepted form
gives bit-identical logits; outputs are deterministic across runs and threads; a forward never
writes to its input or to the model's weights.

Both families, on the small demo models (weights/*.safetensors, 112 x 112 inputs). No torch.
"""

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = {"efficientformer": ROOT / "weights" / "efficientformer-digits.safetensors",
           "swiftformer": ROOT / "weights" / "swiftformer-digits.safetensors"}


@pytest.fixture(scope="module", params=list(WEIGHTS))
def model(request):
    return npformer.from_pretrained(WEIGHTS[request.param])


def pixels(batch=2, side=112, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, side, side)).astype(np.float32)


def refused(model, x, *needles):
    with pytest.raises(InputError) as info:
        model(x)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


# ---------------------------------------------------------------------------------------------
# refused, each with its reason

def test_wrong_rank(model):
    x = pixels(1)
    refused(model, x[0], "must be [batch, channels, height, width], got shape (3, 112, 112)")
    refused(model, x[None], "got shape (1, 1, 3, 112, 112)")
    refused(model, np.float32(1.0), "got shape ()")
    refused(model, None, "got shape () (from a NoneType)")
    refused(model, "cat.png", "(from a str)")


def test_finite_pixels_that_overflow_inside_the_model(model):
    assert np.isfinite(model(pixels(1) * np.float32(1e36)).logits).all()  # still finite at 1e36 (measured)
    refused(model, pixels(1) * np.float32(1e37), "are not finite", "overflow float32 inside the network")


def test_wrong_channel_count_or_order(model):
    x = pixels(1)
    refused(model, x[:, :1], "has 1 channels (shape (1, 1, 112, 112)), the model expects 3 in NCHW order")
    refused(model, x.transpose(0, 2, 3, 1), "has 112 channels (shape (1, 112, 112, 3))")
    refused(model, np.concatenate([x, x[:, :1]], axis=1), "has 4 channels")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.bool_])
def test_integer_and_bool_arrays(model, dtype):
    refused(model, np.zeros((1, 3, 112, 112), dtype), f"has dtype {np.dtype(dtype)}",
            "Raw 0..255 pixels would give wrong logits: run the image processor")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U1", "datetime64[s]"])
def test_complex_object_and_other_dtypes(model, dtype):
    refused(model, np.zeros((1, 3, 112, 112), dtype), "must be a real floating-point array, got dtype")


def test_ragged_nested_lists(model):
    refused(model, [np.zeros((3, 112, 112)), np.zeros((3, 100, 112))], "cannot be read as one [batch, channels")


@pytest.mark.parametrize("bad,what", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_nan_and_inf(model, bad, what):
    x = pixels(2)
    x[1, 2, 5, 7] = bad
    x[1, 0, 100, 3] = bad
    refused(model, x, f"holds 2 {what} of {x.size} values, first at index [1, 0, 100, 3]", "every logit would be NaN")
    x[0, 0, 0, 0] = np.nan if what == "inf" else np.inf
    refused(model, x, "1 NaN and 2 inf" if what == "inf" else "2 NaN and 1 inf", "first at index [0, 0, 0, 0]")


def test_finite_float64_beyond_float32(model):
    x = pixels(1).astype(np.float64)
    x[0, 1, 2, 3] = 1e39
    refused(model, x, "holds 1 inf", "after conversion from float64 to float32", "first at index [0, 1, 2, 3]")


def test_masked_arrays_with_masked_elements(model):
    x = np.ma.masked_array(pixels(1), mask=False)
    x[0, 0, 0, :5] = np.ma.masked
    refused(model, x, "masked array with 5 masked elements")
    unmasked = np.ma.masked_array(pixels(1), mask=False)  # nothing masked: just an array
    np.testing.assert_array_equal(model(unmasked).logits, model(pixels(1)).logits)


def test_empty_batches_and_images(model):
    refused(model, np.zeros((0, 3, 112, 112), np.float32), "batch size 0 (shape (0, 3, 112, 112))")
    refused(model, np.zeros((1, 3, 0, 112), np.float32), "empty image")


def test_efficientformer_sizes_outside_the_attention_grid():
    model = npformer.from_pretrained(WEIGHTS["efficientformer"])
    lo, hi = model.config.input_side_range()
    assert (lo, hi) == (97, 128)
    for height, width in ((lo - 1, lo), (lo, hi + 1), (1, 1), (1, 4000), (hi + 1, hi + 1)):
        refused(model, np.zeros((1, 3, height, width), np.float32), f"each input side must be {lo}–{hi} px; got {height}×{width}")
    for height, width in ((lo, lo), (hi, hi), (lo, hi)):
        assert np.isfinite(model(np.zeros((1, 3, height, width), np.float32)).logits).all()


def test_swiftformer_takes_any_size():
    model = npformer.from_pretrained(WEIGHTS["swiftformer"])
    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (1, 400), (400, 1), (3, 2), (129, 97)):
        logits = model(rng.standard_normal((1, 3, height, width)).astype(np.float32)).logits
        assert logits.shape == (1, 10) and np.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------
# accepted forms: all bit-identical to the float32 C-contiguous array

def test_every_accepted_form_gives_identical_logits(model):
    x = pixels(2)
    expected = model(x).logits
    wide = np.zeros((2, 3, 224, 224 * 2), np.float32)
    wide[:, :, ::2, ::4] = x
    read_only = x.copy()
    read_only.flags.writeable = False
    forms = {
        "float16 of float16-exact values": (x.astype(np.float16), model(x.astype(np.float16).astype(np.float32)).logits),
        "float64": (x.astype(np.float64), expected),
        "longdouble": (x.astype(np.longdouble), expected),
        "big-endian": (x.astype(">f4"), expected),
        "Fortran order": (np.asfortranarray(x), expected),
        "strided view": (wide[:, :, ::2, ::4], expected),
        "NHWC transposed view": (np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), expected),
        "read-only": (read_only, expected),
        "broadcast (zero strides)": (np.broadcast_to(x[:1], x.shape), model(np.repeat(x[:1], 2, axis=0)).logits),
        "nested lists": (x.tolist(), expected),
        "tuple of arrays": (tuple(x), expected),
        "memoryview": (memoryview(x), expected),
    }
    for name, (given, want) in forms.items():
        np.testing.assert_array_equal(model(given).logits, want, err_msg=name)


def test_a_forward_never_writes_to_its_input(model):
    x = pixels(2)
    before = x.copy()
    model(x)
    np.testing.assert_array_equal(x, before)
    assert x.flags.writeable


# ---------------------------------------------------------------------------------------------
# determinism and concurrency

def test_repeated_runs_are_bit_identical(model):
    x = pixels(3, seed=1)
    first = model(x).logits
    for _ in range(3):
        assert model(x).logits.tobytes() == first.tobytes()
    again = npformer.from_pretrained(WEIGHTS[model.family])  # a second model from the same file
    assert again(x).logits.tobytes() == first.tobytes()


def weights_digest(model):
    digest = hashlib.sha256()
    for name in sorted(model.weights):
        digest.update(name.encode())
        digest.update(model.weights[name].tobytes())
    return digest.hexdigest()


def test_four_threads_fifty_forwards_share_one_model(model):
    inputs = [pixels(1, seed=seed) for seed in range(4)]
    expected = [model(x).logits.tobytes() for x in inputs]
    digest = weights_digest(model)
    results = [[] for _ in range(4)]
    errors = []
    start = threading.Barrier(4)

    def work(thread):
        try:
            start.wait()
            for i in range(50):
                which = (thread + i) % 4  # every thread runs every input, interleaved
                results[thread].append((which, model(inputs[which]).logits.tobytes()))
        except Exception as err:  # reported below, with the thread that failed
            errors.append((thread, repr(err)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(r) for r in results) == 200
    mismatches = [(t, which) for t in range(4) for which, got in results[t] if got != expected[which]]
    assert mismatches == []
    assert weights_digest(model) == digest


# ---------------------------------------------------------------------------------------------
# weights are read-only

def test_weights_cannot_be_written_in_place(model):
    digest = weights_digest(model)
    for name, value in model.weights.items():
        assert not value.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            value[...] = 0
        with pytest.raises(ValueError, match="read-only"):
            value += 1
        with pytest.raises(ValueError, match="read-only"):
            np.multiply(value, 2, out=value)
    assert weights_digest(model) == digest
    for param in (model.params["stem.conv1.weight"] if "stem.conv1.weight" in model.weights
                  else model.params["stem.0.weight"],):
        with pytest.raises(ValueError, match="read-only"):
            param[0] = 1


def test_weights_given_by_the_caller_cannot_be_written_through_the_callers_arrays():
    config, tensors, _ = npformer.checkpoints.convert.load_any(WEIGHTS["swiftformer"])
    as_float64 = {k: v.astype(np.float64) for k, v in tensors.items()}
    model = npformer.SwiftFormerForImageClassification(config, as_float64)
    as_float64["head.bias"][:] = 100.0  # float64 arrays were converted: the model holds its own copies
    assert (model.weights["head.bias"] != 100.0).all()
    as_float32 = {k: v.copy() for k, v in tensors.items()}
    model = npformer.SwiftFormerForImageClassification(config, as_float32)
    as_float32["head.bias"][:] = 100.0  # float32 arrays are copied too: the caller's stay writable, the model's don't change
    np.testing.assert_array_equal(model.weights["head.bias"], tensors["head.bias"])
    with pytest.raises(ValueError, match="read-only"):
        model.weights["head.bias"][:] = 100.0


def test_the_weight_mapping_cannot_be_rebound():
    model = npformer.from_pretrained(WEIGHTS["swiftformer"])  # its own model: this test may change it
    with pytest.raises(TypeError):
        model.weights["head.bias"] = model.weights["head.bias"].copy()
