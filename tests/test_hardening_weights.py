"""Bad weight files: every one gets a specific npformer error that names the file and the key,
and the expected and found value, whether it is loaded through the API or the CLI.

Everything is built in tmp_path from the demo weights (weights/*.safetensors) or by hand; no torch.
Malicious pickles: tests/test_torchfile.py and tests/test_hardening_pickles.py.
"""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import npformer
from npformer import cli
from npformer.checkpoints.convert import load_any
from npformer.errors import CheckpointMismatchError, ConfigError, NpformerError, WeightFileError
from npformer.checkpoints.weights import FORMAT_VERSION, load_weights

ROOT = Path(__file__).resolve().parent.parent
EF = ROOT / "weights" / "efficientformer-digits.safetensors"
SF = ROOT / "weights" / "swiftformer-digits.safetensors"
DIGIT = ROOT / "tests" / "fixtures" / "digits" / "digit_3_705.png"


@pytest.fixture(scope="module")
def ef():
    return load_weights(EF)  # (tensors, metadata)


@pytest.fixture(scope="module")
def sf():
    return load_weights(SF)


def save(path, tensors, metadata):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def raw_safetensors(path, entries, metadata=None, header=None):
    """A safetensors file written by hand: entries {key: (dtype name, shape, raw bytes)}."""
    if header is None:
        header, offset = {}, 0
        for key, (dtype, shape, raw) in entries.items():
            header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
            offset += len(raw)
        if metadata:
            header["__metadata__"] = metadata
        header = json.dumps(header).encode()
    data = b"".join(raw for _, _, raw in entries.values())
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def load_error(path, cls, *needles, **kwargs):
    """The error from_pretrained raises for `path`: exactly `cls`, naming the file and each needle."""
    with pytest.raises(NpformerError) as info:
        npformer.from_pretrained(path, **kwargs)
    message = str(info.value)
    assert type(info.value) is cls, f"{type(info.value).__name__}: {message}"
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ---------------------------------------------------------------------------------------------
# unreadable safetensors files: WeightFileError (exit 4)

def _header_len(data):
    return struct.unpack("<Q", data[:8])[0]


CORRUPT = {
    "zero bytes": (lambda d: b"", "(0 bytes; the header length alone takes 8)"),
    "seven bytes": (lambda d: d[:7], "(7 bytes; the header length alone takes 8)"),
    "header length larger than the file": (lambda d: struct.pack("<Q", len(d)) + d[8:],
                                           "its header length 788,368 is larger than the 788,368-byte file"),
    "header length 2**62": (lambda d: struct.pack("<Q", 2**62) + d[8:],
                            "its header length 4,611,686,018,427,387,904 is larger than the 788,368-byte file"),
    "header cut in half": (lambda d: d[: 8 + _header_len(d) // 2], "its header length 13,816 is larger than the 6,916-byte"),
    "data cut in half": (lambda d: d[: len(d) // 2], "file not fully covered"),
    "last byte missing": (lambda d: d[:-1], "file not fully covered"),
    "trailing bytes": (lambda d: d + b"\0" * 16, "file not fully covered"),
    "non-JSON header": (lambda d: struct.pack("<Q", 12) + b"not json!!!!", "invalid JSON in header"),
    "JSON list header": (lambda d: struct.pack("<Q", 2) + b"[]", "invalid JSON in header"),
    "empty header": (lambda d: struct.pack("<Q", 0), "invalid JSON in header"),
    "header of spaces": (lambda d: struct.pack("<Q", 8) + b" " * 8, "invalid JSON in header"),
    "random bytes": (lambda d: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                     "is larger than the 4,096-byte file"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_safetensors_files(tmp_path, case):
    make, reason = CORRUPT[case]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(make(EF.read_bytes()))
    load_error(path, WeightFileError, "not a readable safetensors file", reason)


def test_tensors_past_the_end_or_overlapping(tmp_path):
    four = np.float32([1, 2, 3, 4]).tobytes()
    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}).encode()
    load_error(raw_safetensors(tmp_path / "past.safetensors", {"a": ("F32", [4], four)}, header=header),
               WeightFileError, "not a readable safetensors file")
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = raw_safetensors(tmp_path / "overlap.safetensors", {"a": ("F32", [2], four[:8])}, header=header)
    load_error(path, WeightFileError, "invalid offset for tensor")


# ---------------------------------------------------------------------------------------------
# dtypes

@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2"])
def test_dtypes_numpy_cannot_hold_are_refused_by_key(tmp_path, dtype):
    path = raw_safetensors(tmp_path / "f8.safetensors", {"stem.conv1.weight": (dtype, [4], b"\0" * 4)})
    load_error(path, WeightFileError, f"tensor 'stem.conv1.weight' has dtype {dtype}", "F16, BF16, F32 and F64")


@pytest.mark.parametrize("dtype,cast", [("F16", np.float16), ("F64", np.float64), ("BF16", None)])
def test_float16_bfloat16_float64_weights_load_as_float32_values(tmp_path, ef, dtype, cast):
    tensors, metadata = ef
    path = tmp_path / f"{dtype}.safetensors"
    if cast is not None:
        stored = {k: v.astype(cast) for k, v in tensors.items()}
        save(path, stored, metadata)
        expected = {k: v.astype(np.float32) for k, v in stored.items()}
    else:  # bfloat16: the top 16 bits of each float32 (truncation); NumPy cannot write it, so by hand
        bits = {k: (v.view(np.uint32) >> 16).astype("<u2") for k, v in tensors.items()}
        expected = {k: (b.astype(np.uint32) << 16).view(np.float32) for k, b in bits.items()}
        raw_safetensors(path, {k: ("BF16", tensors[k].shape, b.tobytes()) for k, b in bits.items()}, metadata=metadata)
    model = npformer.from_pretrained(path)
    assert set(model.weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(model.weights[key], value, err_msg=key)
    if dtype == "F64":  # float64 weights round to float32 exactly as the float32 file was written
        reference = npformer.from_pretrained(EF)
        pixels = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)
        np.testing.assert_array_equal(model(pixels).logits, reference(pixels).logits)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64])
def test_non_float_weights_are_refused_by_key(tmp_path, ef, dtype):
    tensors, metadata = ef
    bad = dict(tensors, **{"head.weight": tensors["head.weight"].astype(dtype)})
    load_error(save(tmp_path / "m.safetensors", bad, metadata), CheckpointMismatchError,
               f"head.weight: expected a floating-point tensor, got {np.dtype(dtype)}")


def test_non_float_weights_in_foreign_checkpoints_are_not_cast(tmp_path, sf):
    # a timm-named SwiftFormer state dict: to_canonical used to cast every tensor to float32
    tensors, _ = sf
    for dtype in (np.int64, np.complex64, np.bool_):
        state = dict(tensors, **{"stem.0.weight": tensors["stem.0.weight"].astype(dtype)})
        path = save(tmp_path / "timm.safetensors", state, {})
        load_error(path, CheckpointMismatchError, f"stem.0.weight is a {np.dtype(dtype)} tensor")


# ---------------------------------------------------------------------------------------------
# values: NaN / inf / negative variances -> WeightFileError naming every tensor and count

def test_nan_and_inf_weights_are_refused_by_key_and_count(tmp_path, ef):
    tensors, metadata = ef
    bad = {k: v.copy() for k, v in tensors.items()}
    bad["head.weight"][0, :3] = np.nan
    bad["head.bias"][1] = np.inf
    bad["stem.conv1.weight"][0, 0, 0, 0] = -np.inf
    bad["norm.bias"][:] = np.nan
    bad["norm.bias"][0] = np.inf
    message = load_error(save(tmp_path / "nan.safetensors", bad, metadata), WeightFileError,
                         "4 tensors hold values no trained model has",
                         "head.weight (3 NaN of 640 values)", "head.bias (1 inf of 10 values)",
                         "stem.conv1.weight (1 inf of 216 values)", "norm.bias (63 NaN and 1 inf of 64 values)")
    assert "\n" not in message


def test_non_finite_weights_are_refused_from_every_source(tmp_path, sf):
    tensors, _ = sf
    state = dict(tensors, **{"head.bias": np.full(10, np.nan, np.float32)})
    load_error(save(tmp_path / "timm.safetensors", state, {}), WeightFileError, "head.bias (10 NaN of 10 values)")
    state = dict(tensors, **{"head.bias": np.full(10, 1e300)})  # finite float64 -> inf as float32
    load_error(save(tmp_path / "timm64.safetensors", state, {}), WeightFileError, "head.bias (10 inf of 10 values)")
    with pytest.raises(WeightFileError, match=r"SwiftFormerForImageClassification: 1 tensor holds.*"
                                              r"head\.bias \(10 values beyond float32's range\)"):
        npformer.SwiftFormerForImageClassification(load_any(SF)[0], state)  # float64 in memory, never a file


def test_negative_running_variance_is_refused(tmp_path, ef):
    tensors, metadata = ef
    bad = dict(tensors, **{"stem.norm1.running_var": -np.abs(tensors["stem.norm1.running_var"]) - 1})
    load_error(save(tmp_path / "var.safetensors", bad, metadata), WeightFileError,
               "stem.norm1.running_var (8 negative variances")
    # a negative weight or mean is fine: only variances cannot be negative
    fine = dict(tensors, **{"stem.norm1.running_mean": -np.abs(tensors["stem.norm1.running_mean"]) - 1})
    npformer.from_pretrained(save(tmp_path / "mean.safetensors", fine, metadata))


def test_a_refused_file_leaves_nothing_behind_in_convert(tmp_path, ef):
    tensors, metadata = ef
    bad = dict(tensors, **{"head.bias": np.full(10, np.nan, np.float32)})
    src = save(tmp_path / "nan.safetensors", bad, metadata)
    code = cli.main(["convert", str(src), str(tmp_path / "out.safetensors")])
    assert code == 4 and not (tmp_path / "out.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nan.safetensors"]


# ---------------------------------------------------------------------------------------------
# keys and shapes: CheckpointMismatchError (exit 6) naming key, expected and found

def test_missing_unexpected_and_misshaped_keys(tmp_path, ef):
    tensors, metadata = ef
    bad = {k: v for k, v in tensors.items() if k != "norm.weight"}
    bad["stem.conv1.weight"] = tensors["stem.conv1.weight"][:, :2]
    bad["head.bias"] = np.zeros((10, 1), np.float32)
    bad["extra.weight"] = np.zeros(3, np.float32)
    load_error(save(tmp_path / "m.safetensors", bad, metadata), CheckpointMismatchError,
               "missing keys (1): norm.weight", "unexpected keys (1): extra.weight",
               "stem.conv1.weight: expected shape (8, 3, 3, 3), got (8, 2, 3, 3)",
               "head.bias: expected shape (10,), got (10, 1)")


def test_long_key_lists_are_cut_to_one_readable_line(tmp_path, ef):
    tensors, metadata = ef
    kept = {k: v for k, v in tensors.items() if k.startswith("stem.")}
    message = load_error(save(tmp_path / "m.safetensors", kept, metadata), CheckpointMismatchError,
                         f"missing keys ({len(tensors) - len(kept)}): ", f"(+{len(tensors) - len(kept) - 10} more)")
    assert len(message) < 1000 and "\n" not in message


def test_tensors_of_the_other_family(tmp_path, ef, sf):
    tensors, metadata = ef
    swift_meta = sf[1]
    load_error(save(tmp_path / "m.safetensors", tensors, swift_meta), CheckpointMismatchError,
               "metadata says swiftformer, but the tensors are efficientformer tensors (stem.conv1.weight)")
    load_error(save(tmp_path / "s.safetensors", sf[0], metadata), CheckpointMismatchError,
               "metadata says efficientformer, but the tensors are swiftformer tensors (stem.0.weight)")


def test_a_safetensors_file_of_unknown_tensors(tmp_path):
    path = save(tmp_path / "bert.safetensors", {"embeddings.word.weight": np.zeros((4, 2), np.float32)}, {})
    load_error(path, CheckpointMismatchError, "not a checkpoint npformer knows")


# ---------------------------------------------------------------------------------------------
# metadata that contradicts itself or the tensors

def test_family_contradicting_the_config(tmp_path, ef):
    tensors, metadata = ef
    load_error(save(tmp_path / "m.safetensors", tensors, metadata | {"family": "swiftformer"}), CheckpointMismatchError,
               "metadata family 'swiftformer' contradicts its config's model_type 'efficientformer'")
    load_error(save(tmp_path / "b.safetensors", tensors, metadata | {"family": "bert"}), WeightFileError,
               "metadata family 'bert' is not one of ['efficientformer', 'efficientformerv2', 'swiftformer']")


def test_architecture_contradicting_the_family_or_the_heads(tmp_path, ef):
    tensors, metadata = ef
    load_error(save(tmp_path / "a.safetensors", tensors, metadata | {"architecture": "SwiftFormerModel"}),
               WeightFileError, "metadata architecture 'SwiftFormerModel' is not one of")
    load_error(save(tmp_path / "b.safetensors", tensors, metadata | {"architecture": "EfficientFormerModel"}),
               CheckpointMismatchError, "unexpected keys (4): head.bias, head.weight, head_dist.bias, head_dist.weight")


def test_variant_contradicting_the_config(tmp_path, ef):
    tensors, metadata = ef
    load_error(save(tmp_path / "v.safetensors", tensors, metadata | {"variant": "l1"}), CheckpointMismatchError,
               "metadata variant 'l1' contradicts its config, which is no published variant")
    # an L1 config claiming to be L3 (refused before the tensors are looked at)
    l1_config = npformer.EfficientFormerConfig.variant("l1").to_dict()
    l1_meta = metadata | {"config": json.dumps(l1_config), "variant": "l3"}
    load_error(save(tmp_path / "l3.safetensors", tensors, l1_meta), CheckpointMismatchError,
               "metadata variant 'l3' contradicts its config, which is 'l1'")


def test_swiftformer_attention_generation_contradictions(tmp_path, sf):
    tensors, metadata = sf  # trained with v2
    config = json.loads(metadata["config"])
    for stored, configured in (("v1", "v2"), ("v2", "v1")):
        changed = json.dumps(config | {"attention_generation": configured})
        path = save(tmp_path / f"{stored}.safetensors", tensors, metadata | {"attention_generation": stored, "config": changed})
        load_error(path, CheckpointMismatchError,
                   f"metadata attention_generation '{stored}' contradicts its config's '{configured}'")
    load_error(SF, CheckpointMismatchError, "trained with attention v2", "running them as v1", attention_generation="v1")


@pytest.mark.parametrize("version,message", [
    (str(FORMAT_VERSION + 1), "npformer format version '2' is newer than this npformer understands (1); upgrade npformer"),
    ("12345678901234567890123", "format_version '12345678901234567890123' is not a version number"),
    ("0", "npformer format version '0' never existed"),
    ("1.0", "format_version '1.0' is not a version number"),
    ("", "format_version '' is not a version number"),
    ("٣", "format_version '٣' is not a version number"),  # an Arabic-Indic 3: str.isdigit() says yes
    (None, "metadata has no format_version"),
])
def test_format_versions(tmp_path, ef, version, message):
    tensors, metadata = ef
    meta = {k: v for k, v in metadata.items() if k != "format_version"}
    if version is not None:
        meta["format_version"] = version
    load_error(save(tmp_path / "m.safetensors", tensors, meta), WeightFileError, message)


@pytest.mark.parametrize("config,message", [
    ("{", "metadata has no valid 'config'"),
    ("[]", "metadata 'config' is not a JSON object"),
])
def test_unreadable_metadata_config(tmp_path, ef, config, message):
    tensors, metadata = ef
    load_error(save(tmp_path / "m.safetensors", tensors, metadata | {"config": config}), WeightFileError, message)


def test_config_that_contradicts_the_tensor_shapes(tmp_path, ef):
    tensors, metadata = ef
    config = json.loads(metadata["config"])
    fewer = {k: v for k, v in config.items() if k not in ("id2label", "label2id")} | {"num_labels": 5}
    load_error(save(tmp_path / "m.safetensors", tensors, metadata | {"config": json.dumps(fewer)}), CheckpointMismatchError,
               "head.weight: expected shape (5, 64), got (10, 64)")
    wider = config | {"hidden_sizes": [16, 32, 48, 72], "dim": 72, "hidden_size": 72}
    load_error(save(tmp_path / "w.safetensors", tensors, metadata | {"config": json.dumps(wider)}), CheckpointMismatchError,
               "norm.weight: expected shape (72,), got (64,)")
    load_error(save(tmp_path / "c.safetensors", tensors, metadata | {"config": json.dumps(config | {"dim": 72})}),
               ConfigError, "dim=72 must equal hidden_sizes[-1]=64")


@pytest.mark.parametrize("field,value,message", [
    ("attention_ratio", None, "attention_ratio=None: expected an integer"),  # was a TypeError in weight_schema
    ("key_dim", True, "key_dim=True: expected an integer"),
    ("depths", [1, 1, "2", 2], "depths=[1, 1, '2', 2]: expected non-negative integer entries"),
    ("hidden_sizes", [16, 32, 0, 64], "expected positive integer entries"),
    ("downsample_stride", 0, "downsample_stride=0 must be >= 1"),  # was a ZeroDivisionError
    ("resolution", 10**9, "resolution=1000000000: a last-stage grid of more than 1024"),  # was a near-endless loop
    ("layer_norm_eps", float("inf"), "layer_norm_eps=inf must be > 0 and finite"),
    ("batch_norm_eps", float("nan"), "batch_norm_eps=nan must be > 0 and finite"),
    ("id2label", {"cat": "cat"}, "id2label must map class indices to names"),
    ("id2label", ["cat"], "id2label must map class indices to names"),
])
def test_config_fields_of_the_wrong_type_or_range(tmp_path, ef, field, value, message):
    tensors, metadata = ef
    config = json.dumps(json.loads(metadata["config"]) | {field: value})  # json writes inf / nan as Infinity / NaN
    load_error(save(tmp_path / "m.safetensors", tensors, metadata | {"config": config}), ConfigError, message)


# ---------------------------------------------------------------------------------------------
# the CLI: each class its exit code, one line naming the file

CLI_CASES = {
    "truncated": (lambda p, t, m: p.write_bytes(EF.read_bytes()[:1000]), 4, "not a readable safetensors file"),
    "NaN weight": (lambda p, t, m: save(p, dict(t, **{"head.bias": np.full(10, np.nan, np.float32)}), m), 4,
                   "head.bias (10 NaN of 10 values)"),
    "future format": (lambda p, t, m: save(p, t, m | {"format_version": "2"}), 4, "newer than this npformer"),
    "missing key": (lambda p, t, m: save(p, {k: v for k, v in t.items() if k != "norm.bias"}, m), 6,
                    "missing keys (1): norm.bias"),
    "wrong shape": (lambda p, t, m: save(p, dict(t, **{"norm.bias": np.zeros(3, np.float32)}), m), 6,
                    "norm.bias: expected shape (64,), got (3,)"),
    "family": (lambda p, t, m: save(p, t, m | {"family": "swiftformer"}), 6, "contradicts its config's model_type"),
    "bad config": (lambda p, t, m: save(p, t, m | {"config": json.dumps(json.loads(m["config"]) | {"hidden_act": "swish"})}),
                   3, "hidden_act='swish' is not supported"),
}


@pytest.mark.parametrize("command", ["predict", "convert", "shapes"])
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_exit_codes_and_one_line_messages(tmp_path, capsys, ef, case, command):
    make, code, needle = CLI_CASES[case]
    path = tmp_path / "bad.safetensors"
    make(path, *ef)
    argv = {"predict": ["predict", DIGIT, "--weights", path], "convert": ["convert", path, tmp_path / "out.safetensors"],
            "shapes": ["shapes", "--weights", path]}[command]
    assert cli.main([str(a) for a in argv]) == code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("npformer: error: "), err
    assert str(path) in err and needle in err
    assert not (tmp_path / "out.safetensors").exists()
