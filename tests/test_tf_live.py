"""The live TensorFlow tier: npformer against transformers' TF classes, on seeded weights that
exercise every path (BatchNorm statistics, layer scales and biases far from their init).

For EfficientFormer L1/L3/L7 (the backbone and both classifiers) and SwiftFormer XS/S/L1/L3 (the
backbone and the classifier):
* npformer -> tf_model.h5 -> TF: the directory `save_pretrained(format="tf")` writes loads into
  the TF class with nothing missing or unexpected, and TF's logits (or last hidden state) equal
  npformer's within 1e-4 (fp32), its hidden states within 1e-4 of max(1, their largest |value|)
  (the stage outputs before the final norm reach O(1000) in L7);
* TF -> tf_model.h5 -> npformer: the file TF's own save_pretrained writes (from the same weights
  taken with `from_pt=True`) reads back bit-identical;
* TF's `return_dict=False` tuples have the layout npformer's TF classes give (EfficientFormer's
  hidden states NHWC).

Needs the tf-oracle extra (tensorflow-cpu, tf-keras installed with --no-deps, h5py), torch (for
`from_pt`), and a transformers with TFSwiftFormer (4.41+): CI installs 4.41.2 into a folder of its
own and names it in NPFORMER_TF_TRANSFORMERS, which this module puts first on sys.path (the 4.40.2
PyTorch oracle of the other tiers stays as it is). Skips without them, except under
NPFORMER_REQUIRE_TF=1 (CI's fourth step), where a missing piece fails. NPFORMER_TF_PARITY_REPORT=FILE
writes the measured differences there (JSON).
"""

import json
import os
import sys

import numpy as np
import pytest

import npformer
from npformer.checkpoints.export import export
from npformer.checkpoints.seeded import seeded_weights
from npformer.tools.parity import seeded_pixels

TOLERANCE = 1e-4
CASES = [("efficientformer", v, arch) for v in ("l1", "l3", "l7") for arch in (
    "EfficientFormerModel", "EfficientFormerForImageClassification", "EfficientFormerForImageClassificationWithTeacher")]
CASES += [("swiftformer", v, arch) for v in ("xs", "s", "l1", "l3") for arch in (
    "SwiftFormerModel", "SwiftFormerForImageClassification")]
MEASURED = {}


def require(what: str):
    if os.environ.get("NPFORMER_REQUIRE_TF") == "1":
        pytest.fail(f"NPFORMER_REQUIRE_TF=1 but {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def tf_transformers():
    """(tensorflow, transformers) with TFSwiftFormer, or a skip / failure saying what is missing."""
    folder = os.environ.get("NPFORMER_TF_TRANSFORMERS")
    if folder and "transformers" not in sys.modules:
        sys.path.insert(0, folder)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        import tf_keras  # noqa: F401 (transformers' TF classes refuse Keras 3 without it)
        import torch
        import transformers
    except ImportError as err:
        require(f"the TF tier needs tensorflow-cpu, tf-keras, torch and transformers ({err})")
    if not hasattr(transformers, "TFSwiftFormerModel"):
        require(f"transformers {transformers.__version__} has no TFSwiftFormer (4.41+): install 4.41.2 with "
                "`pip install --no-deps --target DIR transformers==4.41.2` and set NPFORMER_TF_TRANSFORMERS=DIR")
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    yield tf, transformers
    report = os.environ.get("NPFORMER_TF_PARITY_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump(MEASURED, f, indent=2)


def config_of(family: str, variant: str):
    fam = npformer.models.registry.FAMILIES[family]
    return fam.config.variant(variant)


def max_difference(ours, theirs) -> float:
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(ours, theirs))


def scaled_difference(ours, theirs) -> float:
    """max |Δ| / max(1, max |TF|) over the arrays: float32 rounding grows with a tensor's size, and
    the stage outputs before the final norm reach O(1000) in the deep variants."""
    return max_difference(ours, theirs) / max(1.0, max(float(np.abs(np.asarray(b)).max()) for b in theirs))


@pytest.mark.parametrize("family,variant,architecture", CASES, ids=[f"{v}-{a}" for _, v, a in CASES])
def test_npformer_h5_loads_into_tf_with_the_same_outputs(tmp_path, tf_transformers, family, variant, architecture):
    tf, transformers = tf_transformers
    config = config_of(family, variant)
    model_class = npformer.architectures()[architecture]
    ours_model = model_class(config, seeded_weights(config, model_class.num_heads))
    ours_model.save_pretrained(tmp_path / "tf", format="tf")
    theirs_model, info = getattr(transformers, f"TF{architecture}").from_pretrained(tmp_path / "tf",
                                                                                      output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    pixels = seeded_pixels(1, 224, seed=0)
    ours = ours_model(pixels, output_hidden_states=True)
    theirs = theirs_model(pixels, output_hidden_states=True, training=False)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    theirs_hidden = [h.numpy() for h in theirs.hidden_states]
    hidden = max_difference(ours.hidden_states, theirs_hidden)
    hidden_scaled = scaled_difference(ours.hidden_states, theirs_hidden)
    field = "last_hidden_state" if architecture.endswith("Model") else "logits"
    outputs = max_difference([getattr(ours, field)], [getattr(theirs, field).numpy()])
    MEASURED[f"{family}-{variant} {architecture}"] = {
        field: outputs, "hidden_states": hidden, "hidden_states_scaled": hidden_scaled,
        "hidden_states_max_abs": max(float(np.abs(h).max()) for h in theirs_hidden)}
    assert outputs <= TOLERANCE and hidden_scaled <= TOLERANCE
    if "Teacher" in architecture:
        assert max_difference([ours.cls_logits, ours.distillation_logits],
                              [theirs.cls_logits.numpy(), theirs.distillation_logits.numpy()]) <= TOLERANCE


@pytest.mark.parametrize("family,variant,architecture", [c for c in CASES if c[2].endswith(
    ("WithTeacher", "SwiftFormerForImageClassification"))], ids=lambda c: c if isinstance(c, str) else None)
def test_tfs_own_h5_reads_back_bit_identical(tmp_path, tf_transformers, family, variant, architecture):
    tf, transformers = tf_transformers
    config = config_of(family, variant)
    weights = seeded_weights(config, 2)
    export(tmp_path / "pt", "transformers", config, weights, architecture)
    theirs = getattr(transformers, f"TF{architecture}").from_pretrained(tmp_path / "pt", from_pt=True)
    theirs.save_pretrained(tmp_path / "tf")
    assert sorted(p.name for p in (tmp_path / "tf").iterdir()) == ["config.json", "tf_model.h5"]
    ours = npformer.from_pretrained(tmp_path / "tf")
    assert type(ours).__name__ == architecture
    assert ours.weights.keys() == weights.keys()
    assert all(np.array_equal(ours.weights[k], weights[k]) for k in weights)


@pytest.mark.parametrize("family,variant,architecture", [
    ("efficientformer", "l1", "EfficientFormerForImageClassificationWithTeacher"),
    ("efficientformer", "l1", "EfficientFormerModel"),
    ("swiftformer", "xs", "SwiftFormerForImageClassification")])
def test_tf_tuples_have_the_layout_of_npformers_tf_classes(tmp_path, tf_transformers, family, variant, architecture):
    tf, transformers = tf_transformers
    config = config_of(family, variant)
    ours_model = getattr(npformer, f"TF{architecture}")(config)
    ours_model.save_pretrained(tmp_path / "tf", format="tf")
    theirs_model = getattr(transformers, f"TF{architecture}").from_pretrained(tmp_path / "tf")
    pixels = seeded_pixels(1, 224, seed=0)
    ours = ours_model(pixels, output_hidden_states=True, return_dict=False, training=False)
    theirs = theirs_model(pixels, output_hidden_states=True, return_dict=False, training=False)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
        assert [x.shape for x in a] == [tuple(y.shape) for y in b]
        assert scaled_difference(a, [y.numpy() for y in b]) <= TOLERANCE


def test_from_tf_in_transformers_pytorch_drops_the_batchnorm_statistics(tmp_path, tf_transformers):
    """The pitfall the README warns of: transformers' `PTModel.from_pretrained(dir, from_tf=True)`
    leaves every BatchNorm running mean and variance at its init; npformer reads the .h5 whole."""
    tf, transformers = tf_transformers
    import torch

    config = config_of("efficientformer", "l1")
    ours = npformer.EfficientFormerForImageClassificationWithTeacher(config)
    ours.save_pretrained(tmp_path / "tf", format="tf")
    pixels = seeded_pixels(1, 224, seed=0)
    expected = ours(pixels).logits
    assert np.abs(npformer.from_pretrained(tmp_path / "tf")(pixels).logits - expected).max() <= 1e-5
    pt = transformers.EfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path / "tf", from_tf=True)
    with torch.no_grad():
        logits = pt.eval()(torch.from_numpy(pixels)).logits.numpy()
    MEASURED["from_tf=True pitfall, EfficientFormer-L1 teacher logits"] = float(np.abs(logits - expected).max())
    assert np.abs(logits - expected).max() > 0.1
    assert float(pt.efficientformer.patch_embed.batchnorm_before.running_var[0]) == 1.0  # the init, not the file's
