"""TensorFlow's side without TensorFlow: tf_model.h5 read and written with h5py
(npformer/checkpoints/h5.py), the TF class names (npformer/tf_classes.py), and the config fields
transformers 4.41+ writes.

Golden: tests/fixtures/tf holds directories transformers 4.41.2's TF classes saved (a small
EfficientFormer with both heads, a small SwiftFormer; seeded weights) and the TF classes' own
logits (tests/fixtures/tf/make_fixtures.py). Tests that read or write .h5 need h5py (the h5
extra): they skip without it, except under NPFORMER_REQUIRE_H5=1 (CI's second tier), where a
missing h5py fails. Without h5py, reading a tf_model.h5 says what to install (tested everywhere).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from extras import need

import npformer
from npformer.checkpoints.seeded import seeded_weights
from npformer.errors import CheckpointMismatchError, ConfigError, InputError, MissingExtraError, WeightFileError
from npformer.tools.parity import seeded_pixels

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
EF, SF = FIXTURES / "efficientformer-tiny", FIXTURES / "swiftformer-tiny"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())["logits"]


def copy(tmp_path, source: Path) -> Path:
    target = tmp_path / f"{source.name}-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(source, target)
    return target


# ---------------------------------------------------------------------------------------------
# reading what transformers' TF classes wrote


@pytest.mark.parametrize("directory", [EF, SF], ids=lambda p: p.name)
def test_tf_written_checkpoints_give_tfs_logits(directory):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    for path in (directory, directory / "tf_model.h5"):
        model, metadata = npformer.load(path)
        assert type(model).__name__ == json.loads((directory / "config.json").read_text())["architectures"][0]
        logits = model(seeded_pixels(1, 224, seed=0)).logits
        assert np.abs(logits - np.array(GOLDEN[directory.name])).max() <= 1e-4
    assert metadata["recipe"] == {"efficientformer-tiny": "efficientformer-hf", "swiftformer-tiny": "swiftformer-hf"}[
        directory.name]


def test_every_entry_point_reads_a_tf_directory():
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    expected = np.array(GOLDEN[SF.name])
    pixels = seeded_pixels(1, 224, seed=0)
    for load in (npformer.from_pretrained, npformer.AutoModelForImageClassification.from_pretrained,
                 npformer.SwiftFormerForImageClassification.from_pretrained,
                 npformer.TFSwiftFormerForImageClassification.from_pretrained):
        assert np.abs(load(SF)(pixels).logits - expected).max() <= 1e-4
    assert npformer.AutoConfig.from_pretrained(SF).attention_generation == "v1"  # transformers' TF port is v1
    backbone = npformer.AutoModel.from_pretrained(SF)
    assert type(backbone).__name__ == "SwiftFormerModel"


def test_npformer_convert_accepts_a_tf_model_h5(tmp_path, capsys):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    from npformer.cli import main

    assert main(["convert", str(EF / "tf_model.h5"), str(tmp_path / "ef.safetensors")]) == 0
    assert "EfficientFormerForImageClassificationWithTeacher" in capsys.readouterr().out
    model = npformer.from_pretrained(tmp_path / "ef.safetensors")
    assert np.abs(model(seeded_pixels(1, 224, seed=0)).logits - np.array(GOLDEN[EF.name])).max() <= 1e-4


def test_pytorch_weights_are_preferred_when_a_directory_holds_both(tmp_path):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    directory = copy(tmp_path, SF)
    model = npformer.from_pretrained(directory)
    model.save_pretrained(tmp_path / "pt", format="transformers")
    shutil.copy(tmp_path / "pt" / "model.safetensors", directory)
    (directory / "tf_model.h5").write_bytes(b"not read")  # the PyTorch file comes first
    again = npformer.from_pretrained(directory)
    assert all(np.array_equal(again.weights[k], model.weights[k]) for k in model.weights)


# ---------------------------------------------------------------------------------------------
# writing


def structure(path: Path) -> dict:
    """{variable name without "<model>/": (shape, dtype kind)} and the layer names of a tf_model.h5."""
    h5py = need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    with h5py.File(path, "r") as f:
        layers = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        out = {}
        for layer in layers:
            for name in f[layer].attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                out[name.split("/", 1)[1]] = (f[layer][name].shape, f[layer][name].dtype.kind)
    return {"layers": layers, "variables": out}


@pytest.mark.parametrize("directory", [EF, SF], ids=lambda p: p.name)
def test_format_tf_writes_what_transformers_tf_classes_write(tmp_path, directory):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    model = npformer.from_pretrained(directory)
    model.save_pretrained(tmp_path / "out", format="tf")
    assert structure(tmp_path / "out" / "tf_model.h5") == structure(directory / "tf_model.h5")
    theirs = json.loads((directory / "config.json").read_text())
    ours = json.loads((tmp_path / "out" / "config.json").read_text())
    assert ours["architectures"] == theirs["architectures"] and ours["model_type"] == theirs["model_type"]
    again = npformer.from_pretrained(tmp_path / "out")
    assert all(np.array_equal(again.weights[k], model.weights[k]) for k in model.weights)
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()


def test_long_name_lists_are_split_as_keras_splits_them(tmp_path):
    h5py = need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    config = npformer.EfficientFormerConfig.variant("l3", num_labels=3)  # with the teacher's longer model name
    weights = seeded_weights(config, 2)
    npformer.EfficientFormerForImageClassificationWithTeacher(config, weights).save_pretrained(tmp_path / "l3", format="tf")
    with h5py.File(tmp_path / "l3" / "tf_model.h5", "r") as f:
        attrs = set(f["efficientformer"].attrs)
        assert "weight_names" not in attrs and {"weight_names0", "weight_names1"} <= attrs
        assert all(f["efficientformer"].attrs[k].nbytes <= 64512 for k in attrs)
    again = npformer.from_pretrained(tmp_path / "l3")
    assert type(again).__name__ == "EfficientFormerForImageClassificationWithTeacher"
    assert all(np.array_equal(again.weights[k], weights[k]) for k in weights)


def test_what_the_tf_ports_cannot_hold_is_refused_by_name(tmp_path):
    v2 = npformer.EfficientFormerV2Config.variant("s0", num_labels=3)
    with pytest.raises(ConfigError, match="EfficientFormerV2 has no transformers' TensorFlow port"):
        npformer.EfficientFormerV2ForImageClassification(v2).save_pretrained(tmp_path / "v2", format="tf")
    sf2 = npformer.SwiftFormerConfig.variant("xs", attention_generation="v2", num_labels=3)
    with pytest.raises(ConfigError, match="TensorFlow implements SwiftFormer's attention generation v1 only"):
        npformer.SwiftFormerForImageClassification(sf2).save_pretrained(tmp_path / "sf2", format="tf")
    dropping = npformer.SwiftFormerConfig.variant("xs", num_labels=3, drop_path_rate=0.1)
    with pytest.raises(ConfigError, match="drop_path_rate=0.1: transformers' TFSwiftFormer cannot be built"):
        npformer.SwiftFormerForImageClassification(dropping).save_pretrained(tmp_path / "sf3", format="tf")
    assert not any((tmp_path / d).exists() for d in ("v2", "sf2", "sf3"))


def test_export_checkpoint_writes_tf_from_any_checkpoint(tmp_path):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    from npformer.checkpoints.export import export_checkpoint

    export_checkpoint(EF / "tf_model.h5", tmp_path / "again", "tf")
    assert structure(tmp_path / "again" / "tf_model.h5") == structure(EF / "tf_model.h5")


# ---------------------------------------------------------------------------------------------
# without h5py


def test_without_h5py_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    with pytest.raises(MissingExtraError, match=r"needs h5py \(the h5 extra\): pip install 'npformer\[h5\]'"):
        npformer.from_pretrained(EF)
    model = npformer.EfficientFormerForImageClassificationWithTeacher(npformer.EfficientFormerConfig(num_labels=3))
    with pytest.raises(MissingExtraError, match="npformer\\[h5\\]"):
        model.save_pretrained(tmp_path / "out", format="tf")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# hostile files


def edited(tmp_path, source: Path, edit) -> Path:
    """A copy of `source` (a TF directory) whose tf_model.h5 `edit(h5py, file)` has changed."""
    h5py = need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    directory = copy(tmp_path, source)
    with h5py.File(directory / "tf_model.h5", "r+") as f:
        edit(h5py, f)
    return directory


def names(f, layer="efficientformer"):
    return [n.decode() if isinstance(n, bytes) else n for n in f[layer].attrs["weight_names"]]


def first(f, suffix, layer="efficientformer"):
    return next(n for n in names(f, layer) if n.endswith(suffix))


def test_not_hdf5_and_truncated_files_are_named(tmp_path):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    directory = copy(tmp_path, EF)
    (directory / "tf_model.h5").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(WeightFileError, match="not an HDF5 file"):
        npformer.from_pretrained(directory)
    data = (EF / "tf_model.h5").read_bytes()
    for cut in (len(data) // 2, 4096, 100):
        (directory / "tf_model.h5").write_bytes(data[:cut])
        with pytest.raises(WeightFileError, match="tf_model.h5"):
            npformer.from_pretrained(directory)


def test_missing_unexpected_and_misshaped_variables_are_named_as_in_the_file(tmp_path):
    def drop(h5py, f):
        name = first(f, "layernorm/gamma:0")
        del f["efficientformer"][name]
        f["efficientformer"].attrs["weight_names"] = [n.encode() for n in names(f) if n != name]

    with pytest.raises(CheckpointMismatchError, match=r"missing variables \(1\): efficientformer/layernorm/gamma:0"):
        npformer.from_pretrained(edited(tmp_path, EF, drop))

    def add(h5py, f):
        extra = names(f)[0].split("/")[0] + "/efficientformer/encoder/extra/kernel:0"
        f["efficientformer"].create_dataset(extra, data=np.zeros(3, np.float32))
        f["efficientformer"].attrs["weight_names"] = [n.encode() for n in names(f) + [extra]]

    with pytest.raises(CheckpointMismatchError, match=r"unexpected variables \(1\): efficientformer/encoder/extra/kernel:0"):
        npformer.from_pretrained(edited(tmp_path, EF, add))

    def absurd(h5py, f):  # a declared shape of 2**40 floats and no data: refused before anything is read
        name = first(f, "layernorm/beta:0")
        del f["efficientformer"][name]
        f["efficientformer"].create_dataset(name, shape=(2**40,), dtype=np.float32)

    with pytest.raises(CheckpointMismatchError, match=r"layernorm/beta:0: expected shape \(32,\), got \(1099511627776,\)"):
        npformer.from_pretrained(edited(tmp_path, EF, absurd))


def test_wrong_dtypes_and_a_wrong_bias_index_are_refused(tmp_path):
    def integer_kernel(h5py, f):
        name = first(f, "classifier/kernel:0", "classifier")
        value = f["classifier"][name][()]
        del f["classifier"][name]
        f["classifier"].create_dataset(name, data=value.astype(np.int32))

    with pytest.raises(CheckpointMismatchError, match="classifier/kernel:0: expected a floating-point tensor, got int32"):
        npformer.from_pretrained(edited(tmp_path, EF, integer_kernel))

    def shuffled_index(h5py, f):
        name = first(f, "attention_bias_idxs:0")
        value = f["efficientformer"][name][()]
        value[0, :2] = value[0, 1::-1]
        f["efficientformer"][name][...] = value

    with pytest.raises(CheckpointMismatchError, match="attention_bias_idxs is not the"):
        npformer.from_pretrained(edited(tmp_path, EF, shuffled_index))

    def float_index(h5py, f):
        name = first(f, "attention_bias_idxs:0")
        value = f["efficientformer"][name][()]
        del f["efficientformer"][name]
        f["efficientformer"].create_dataset(name, data=value.astype(np.float32))

    with pytest.raises(CheckpointMismatchError, match="attention_bias_idxs:0: expected an integer index, got float32"):
        npformer.from_pretrained(edited(tmp_path, EF, float_index))

    def nan(h5py, f):
        f["efficientformer"][first(f, "layernorm/gamma:0")][0] = np.nan

    with pytest.raises(WeightFileError, match="NaN"):
        npformer.from_pretrained(edited(tmp_path, EF, nan))


def test_links_out_of_the_file_are_refused(tmp_path):
    h5py = need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as g:
        g.create_dataset("x", data=np.ones(32, np.float32))

    def external_link(h5py, f):
        name = first(f, "layernorm/gamma:0")
        del f["efficientformer"][name]
        f["efficientformer"][name] = h5py.ExternalLink(str(outside), "x")

    with pytest.raises(WeightFileError, match="is a link to another file"):
        npformer.from_pretrained(edited(tmp_path, EF, external_link))

    def soft_link(h5py, f):
        name = first(f, "layernorm/gamma:0")
        target = f["efficientformer"][name].name
        f.move(target, "/hidden")
        f["efficientformer"][name] = h5py.SoftLink("/hidden")

    with pytest.raises(WeightFileError, match="is a soft link"):
        npformer.from_pretrained(edited(tmp_path, EF, soft_link))

    def virtual(h5py, f):
        name = first(f, "layernorm/gamma:0")
        del f["efficientformer"][name]
        layout = h5py.VirtualLayout(shape=(32,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(outside), "x", shape=(32,))
        f["efficientformer"].create_virtual_dataset(name, layout)

    with pytest.raises(WeightFileError, match="is a virtual dataset"):
        npformer.from_pretrained(edited(tmp_path, EF, virtual))

    (tmp_path / "raw.bin").write_bytes(np.ones(32, np.float32).tobytes())

    def external_storage(h5py, f):
        name = first(f, "layernorm/gamma:0")
        del f["efficientformer"][name]
        f["efficientformer"].create_dataset(name, shape=(32,), dtype=np.float32,
                                            external=[(str(tmp_path / "raw.bin"), 0, 128)])

    with pytest.raises(WeightFileError, match="keeps its data in external files"):
        npformer.from_pretrained(edited(tmp_path, EF, external_storage))


def test_attributes_that_lie_are_refused(tmp_path):
    def lists_a_missing_dataset(h5py, f):
        f["efficientformer"].attrs["weight_names"] = [n.encode() for n in names(f) + [names(f)[0].replace("kernel", "x")]]

    with pytest.raises(WeightFileError, match="which is not a dataset in the file"):
        npformer.from_pretrained(edited(tmp_path, EF, lists_a_missing_dataset))

    def hides_a_dataset(h5py, f):
        f["efficientformer"].attrs["weight_names"] = [n.encode() for n in names(f)[1:]]

    with pytest.raises(WeightFileError, match="holds 1 datasets its name lists do not mention"):
        npformer.from_pretrained(edited(tmp_path, EF, hides_a_dataset))

    def split_with_a_gap(h5py, f):
        listed = names(f)
        del f["efficientformer"].attrs["weight_names"]
        f["efficientformer"].attrs["weight_names0"] = [n.encode() for n in listed[:10]]
        f["efficientformer"].attrs["weight_names2"] = [n.encode() for n in listed[10:]]

    with pytest.raises(WeightFileError, match="'weight_names2' follows no complete"):
        npformer.from_pretrained(edited(tmp_path, EF, split_with_a_gap))

    def split_in_order(h5py, f):  # weight_names0, 1, 2 read as one list, as Keras reads them
        listed = names(f)
        del f["efficientformer"].attrs["weight_names"]
        for i, part in enumerate((listed[:10], listed[10:20], listed[20:])):
            f["efficientformer"].attrs[f"weight_names{i}"] = [n.encode() for n in part]

    assert np.abs(npformer.from_pretrained(edited(tmp_path, EF, split_in_order))(seeded_pixels(1, 224, seed=0)).logits
                  - np.array(GOLDEN[EF.name])).max() <= 1e-4

    def layer_not_a_group(h5py, f):
        f.attrs["layer_names"] = [b"efficientformer", b"classifier", b"distillation_classifier", b"nowhere"]

    with pytest.raises(WeightFileError, match="layer_names lists 'nowhere', which is not a group"):
        npformer.from_pretrained(edited(tmp_path, EF, layer_not_a_group))

    def numbers_for_names(h5py, f):
        f["classifier"].attrs["weight_names"] = np.arange(3)

    with pytest.raises(WeightFileError, match="holds a .*int.*, not a name"):
        npformer.from_pretrained(edited(tmp_path, EF, numbers_for_names))

    def no_layer_names(h5py, f):
        del f.attrs["layer_names"]

    with pytest.raises(WeightFileError, match="no 'layer_names' attribute"):
        npformer.from_pretrained(edited(tmp_path, EF, no_layer_names))


def test_a_tf_model_h5_without_a_config_beside_it_is_refused(tmp_path):
    shutil.copy(EF / "tf_model.h5", tmp_path / "tf_model.h5")
    with pytest.raises(ConfigError, match="no config.json beside it"):
        npformer.from_pretrained(tmp_path / "tf_model.h5")


# ---------------------------------------------------------------------------------------------
# a hub repo holding only tf_model.h5


def test_a_hub_repo_with_only_tf_model_h5_loads(monkeypatch, tmp_path):
    need("h5py", extra="h5", switch="NPFORMER_REQUIRE_H5")
    pytest.importorskip("huggingface_hub")
    from hub_cache import add_directory, offline_hub, scanned

    hub = offline_hub(monkeypatch, tmp_path / "hf")
    add_directory(hub, "someone/swiftformer-tiny-tf", SF)
    assert scanned(hub) == {"someone/swiftformer-tiny-tf": {"main": {"config.json", "tf_model.h5"}}}
    model = npformer.TFSwiftFormerForImageClassification.from_pretrained("someone/swiftformer-tiny-tf")
    assert np.abs(model(seeded_pixels(1, 224, seed=0)).logits - np.array(GOLDEN[SF.name])).max() <= 1e-4


# ---------------------------------------------------------------------------------------------
# configs saved by later transformers


@pytest.mark.parametrize("version", ["4.41.2", "4.57.6"])
def test_swiftformer_configs_of_later_transformers_are_accepted(version):
    path = FIXTURES / "configs" / f"swiftformer-{version}.json"
    written = json.loads(path.read_text())
    config = npformer.SwiftFormerConfig.from_json_file(path)
    assert (config.drop_conv_encoder_rate, config.drop_mlp_rate, config.image_size) == (0.0, 0.0, 224)
    assert {k: config.to_dict()[k] for k in ("drop_conv_encoder_rate", "drop_mlp_rate", "image_size")} == {
        k: written[k] for k in ("drop_conv_encoder_rate", "drop_mlp_rate", "image_size")}
    # dropout rates only act in training: a model with other rates computes the same
    config_dict = {**written, "drop_conv_encoder_rate": 0.3, "drop_mlp_rate": 0.2}
    other = npformer.SwiftFormerConfig.from_dict(config_dict)
    weights = seeded_weights(other, 0)
    pixels = seeded_pixels(1, 64)
    assert np.array_equal(npformer.SwiftFormerModel(other, weights)(pixels).last_hidden_state,
                          npformer.SwiftFormerModel(config, weights)(pixels).last_hidden_state)
    assert "drop_mlp_rate" not in npformer.SwiftFormerConfig.variant("xs").to_dict()  # absent stays absent


@pytest.mark.parametrize("cls", [npformer.SwiftFormerConfig, npformer.EfficientFormerConfig])
def test_the_dtype_field_of_transformers_4_56_and_later_is_kept(cls):
    """From 4.56 a model's saved config says `"dtype": "float32"` where earlier ones said torch_dtype."""
    written = {**cls().to_dict(), "dtype": "float32", "transformers_version": "4.57.6"}
    config = cls.from_dict(written)
    assert config.to_dict()["dtype"] == "float32" and config.to_dict() | {"dtype": "float32"} == config.to_dict()


# ---------------------------------------------------------------------------------------------
# the TF class names


def test_tf_names_are_at_the_top_level_and_take_what_tf_users_pass():
    for name in ("TFEfficientFormerModel", "TFEfficientFormerForImageClassification",
                 "TFEfficientFormerForImageClassificationWithTeacher", "TFSwiftFormerModel",
                 "TFSwiftFormerForImageClassification"):
        assert name in npformer.__all__ and hasattr(getattr(npformer, name), "from_pretrained")
    config = npformer.EfficientFormerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 2], dim=32, hidden_size=32,
                                            key_dim=8, num_attention_heads=2, num_labels=3)
    tf_model = npformer.TFEfficientFormerForImageClassificationWithTeacher(config)
    pt_model = npformer.EfficientFormerForImageClassificationWithTeacher(config, dict(tf_model.weights))
    pixels = seeded_pixels(1)
    out = tf_model(pixel_values=pixels, training=False, output_hidden_states=True)
    reference = pt_model(pixels, output_hidden_states=True)
    assert np.array_equal(out.logits, reference.logits)
    assert all(np.array_equal(a, b) for a, b in zip(out.hidden_states, reference.hidden_states))
    assert np.array_equal(tf_model({"pixel_values": pixels}).logits, reference.logits)  # Keras's model(inputs)
    assert np.array_equal(tf_model.call(pixels).logits, reference.logits)
    # return_dict=False: TF's tuple, hidden states NHWC but the last ([B, N, C])
    logits, cls_logits, dist_logits, hidden = tf_model(pixels, output_hidden_states=True, return_dict=False)
    assert np.array_equal(logits, reference.logits) and np.array_equal(dist_logits, reference.distillation_logits)
    assert [h.shape for h in hidden[:-1]] == [tuple(np.transpose(r, (0, 2, 3, 1)).shape) for r in reference.hidden_states[:-1]]
    assert all(np.array_equal(h, np.transpose(r, (0, 2, 3, 1))) for h, r in zip(hidden[:-1], reference.hidden_states))
    assert np.array_equal(hidden[-1], reference.hidden_states[-1])
    with pytest.raises(InputError, match="npformer runs inference only"):
        tf_model(pixels, training=True)
    with pytest.raises(InputError, match="You have to specify pixel_values"):
        tf_model()
    classifier = npformer.TFEfficientFormerForImageClassification(config)
    with pytest.raises(InputError, match="labels: the TF classes' loss"):
        classifier(pixels, labels=np.array([1]))


def test_tf_swiftformer_tuples_are_nchw_as_tf_returns_them():
    config = npformer.SwiftFormerConfig(embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 2], num_labels=3)
    tf_model = npformer.TFSwiftFormerModel(config)
    reference = npformer.SwiftFormerModel(config, dict(tf_model.weights))(seeded_pixels(1, 64), output_hidden_states=True)
    last, hidden = tf_model(seeded_pixels(1, 64), output_hidden_states=True, return_dict=False)
    assert np.array_equal(last, reference.last_hidden_state)
    assert all(np.array_equal(a, b) for a, b in zip(hidden, reference.hidden_states))
