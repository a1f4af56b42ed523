"""Tests for npformer.checkpoints.torchfile, the torch-free reader of torch.save files.

Tier 1 needs no torch: malicious pickles built by hand, corrupt files, and golden checkpoints
written by real torch (tests/fixtures/torchfile, see make_fixtures.py there).
Tier 2 (`oracle`) round-trips tensors through torch.save and compares with torch.load.
"""

import builtins
import importlib
import os
import pickle
import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from npformer.errors import UnsafePickleError, WeightFileError
from npformer.checkpoints.torchfile import flatten_state_dict, load_torch_file

FIXTURES = Path(__file__).parent / "fixtures" / "torchfile"
GOLDEN = [FIXTURES / "small_zip.pth", FIXTURES / "small_legacy.pth"]
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2}}


# --- writing torch-like files by hand -----------------------------------------------------


def write_zip(path, pickled, storages=None, prefix="archive", byteorder=b"little"):
    """A zip laid out like torch.save's: <prefix>/data.pkl, data/<key>, byteorder, version."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{prefix}/data.pkl", pickled)
        archive.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            archive.writestr(f"{prefix}/data/{key}", raw)
        archive.writestr(f"{prefix}/version", b"3\n")
    return path


def write_legacy(path, pickled, storages=None, header=None):
    """The legacy layout: magic, protocol, sys info, main pickle, key list, counted storages."""
    storages = storages or {}
    parts = header or [pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, SYS_INFO)]
    parts += [pickled, pickle.dumps(sorted(storages), protocol=2)]
    for key in sorted(storages):
        array = storages[key]
        little_endian = array.astype(array.dtype.newbyteorder("<"))
        parts += [array.size.to_bytes(8, "little"), little_endian.tobytes()]
    path.write_bytes(b"".join(parts))
    return path


def op_global(module, name):
    return f"c{module}\n{name}\n".encode()


def op_value(value):
    """The opcodes that push `value` (a protocol-2 pickle minus its PROTO header and STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def op_tensor(key, numel, offset, size, stride, storage_type="FloatStorage"):
    """The opcodes torch writes for one tensor: _rebuild_tensor_v2(persistent storage id, ...)."""
    storage_id = b"(" + op_value("storage") + op_global("torch", storage_type)
    storage_id += op_value(key) + op_value("cpu") + op_value(numel) + b"tQ"  # TUPLE, BINPERSID
    hooks = op_global("collections", "OrderedDict") + b")R"
    args = storage_id + b"".join(op_value(v) for v in (offset, tuple(size), tuple(stride), False))
    return op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + hooks + b"tR"


def torch_like_pickle(entries):
    """A pickled dict of name -> opcodes (as from op_tensor)."""
    return b"\x80\x02}(" + b"".join(op_value(k) + v for k, v in entries.items()) + b"u."


# --- malicious pickles --------------------------------------------------------------------


class Reduce:
    """Pickles as `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self):  # pickle insists that the callable of a reduce be callable
        raise NotImplementedError


def payloads(marker):
    """name -> (object whose unpickling creates `marker`, regex of the global to refuse)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    os_system = Reduce(os.system, f"touch {marker}")
    popen = Reduce(subprocess.Popen, ["touch", str(marker)])
    get_system = Reduce(builtins.getattr, Reduce(importlib.import_module, "os"), "system")
    return {
        "os.system": (os_system, r"(posix|os)\.system"),
        "eval": (Reduce(builtins.eval, touch), r"(builtins|__builtin__)\.eval"),
        "exec": (Reduce(builtins.exec, touch), r"(builtins|__builtin__)\.exec"),
        # protocols < 3 write Python 2 names: subprocess.Popen becomes commands.Popen
        "Popen": (popen, r"(subprocess|commands)\.Popen"),
        "nested pickle": (Reduce(pickle.loads, pickle.dumps(os_system)), r"pickle\.loads"),
        "getattr": (Reduce(get_system, f"touch {marker}"), r"(builtins|__builtin__)\.getattr"),
    }


PAYLOAD_NAMES = list(payloads("unused"))


def run_unpickled(data):
    result = pickle.loads(data)
    if isinstance(result, subprocess.Popen):
        result.wait()


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_payloads_really_run_under_plain_pickle(tmp_path, name):
    """Control: the payloads are live, so their refusal below means something."""
    marker = tmp_path / "marker"
    run_unpickled(pickle.dumps(payloads(marker)[name][0], protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("layout", ["zip", "legacy", "legacy header"])
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_malicious_pickles_are_refused_before_running(tmp_path, name, layout, protocol):
    marker = tmp_path / "marker"
    payload, refused = payloads(marker)[name]
    checkpoint = {"epoch": 1, "model": OrderedDict(weight=payload)}
    pickled = pickle.dumps(checkpoint, protocol=protocol)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        write_zip(path, pickled)
    elif layout == "legacy":
        write_legacy(path, pickled)
    else:
        write_legacy(path, pickle.dumps(0), header=[pickled])
    with pytest.raises(UnsafePickleError, match=refused) as info:
        load_torch_file(path)
    assert str(path) in str(info.value)
    assert "never executes code" in str(info.value)
    assert not marker.exists()


def test_hand_written_os_system_global_is_refused(tmp_path):
    marker = tmp_path / "marker"
    pickled = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        load_torch_file(write_zip(tmp_path / "evil.pth", pickled))
    assert not marker.exists()


def test_numpy_reconstruct_is_refused(tmp_path):
    pickled = pickle.dumps({"w": np.arange(3)}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"numpy\..*_reconstruct"):
        load_torch_file(write_zip(tmp_path / "np.pth", pickled))


# --- BUILD (setstate) and stray objects ---------------------------------------------------

BUILD_CASES = {
    "on a list": b"\x80\x02]}b.",
    "on a tensor": b"\x80\x02" + op_tensor("0", 2, 0, (2,), (1,)) + b"}b.",
    "on a stand-in": b"\x80\x02" + op_global("torch._utils", "_rebuild_tensor_v2")
    + op_value({"__defaults__": (1,)}) + b"b.",
    "tuple state on OrderedDict": b"\x80\x02" + op_global("collections", "OrderedDict")
    + b")R" + op_value((None, {"x": 1})) + b"b.",
}


@pytest.mark.parametrize("case", list(BUILD_CASES))
def test_build_is_refused(tmp_path, case):
    path = write_zip(tmp_path / "build.pth", BUILD_CASES[case], {"0": b"\0" * 8})
    with pytest.raises(WeightFileError, match=str(path)):
        load_torch_file(path)
    load_torch_file(GOLDEN[0])  # and the reader still works afterwards


def test_ordered_dict_metadata_from_build_is_dropped(tmp_path):
    state = OrderedDict(a=1, b="x")
    state._metadata = {"": {"version": 1}}
    loaded = load_torch_file(write_zip(tmp_path / "sd.pth", pickle.dumps(state, protocol=2)))
    assert type(loaded) is OrderedDict and loaded == {"a": 1, "b": "x"}
    assert not hasattr(loaded, "_metadata")


def test_a_bare_allowed_global_is_not_plain_data(tmp_path):
    pickled = b"\x80\x02" + op_global("collections", "OrderedDict") + b"."
    with pytest.raises(WeightFileError, match="neither a tensor nor a plain container"):
        load_torch_file(write_zip(tmp_path / "global.pth", pickled))


# --- golden files written by real torch ---------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_checkpoint(path):
    loaded = load_torch_file(path)
    assert {k: v for k, v in loaded.items() if k != "model"} == {
        "epoch": 7, "arch": "efficientformer-tiny", "tag": b"\x00\xffnp", "input_size": (3, 8, 8)
    }
    model = loaded["model"]
    assert type(model) is OrderedDict
    with np.load(FIXTURES / "expected.npz") as expected:
        assert list(model) == list(expected.files)
        for name in expected.files:
            assert model[name].dtype == expected[name].dtype, name
            np.testing.assert_array_equal(model[name], expected[name], err_msg=name)
            assert model[name].flags.c_contiguous and model[name].flags.writeable
    assert model["bfloat16"].dtype == np.float32
    assert not np.shares_memory(model["base"], model["sliced"])


def test_any_archive_prefix_is_accepted(tmp_path):
    path = tmp_path / "renamed.pth"
    with zipfile.ZipFile(GOLDEN[0]) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr("my_model/" + info.filename.split("/", 1)[1], source.read(info))
    np.testing.assert_array_equal(
        load_torch_file(path)["model"]["float32"], load_torch_file(GOLDEN[0])["model"]["float32"]
    )


def test_big_endian_zip(tmp_path):
    values = np.arange(6, dtype=np.float32)
    pickled = torch_like_pickle({"w": op_tensor("0", 6, 0, (2, 3), (3, 1))})
    storages = {"0": values.astype(">f4").tobytes()}
    path = write_zip(tmp_path / "big.pth", pickled, storages, byteorder=b"big")
    loaded = load_torch_file(path)["w"]
    assert loaded.dtype == np.float32 and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, values.reshape(2, 3))


def test_hand_written_legacy_file(tmp_path):
    pickled = torch_like_pickle({"w": op_tensor("a", 4, 1, (3,), (1,), "LongStorage")})
    path = write_legacy(tmp_path / "legacy.pth", pickled, {"a": np.array([9, 1, 2, 3])})
    np.testing.assert_array_equal(load_torch_file(path)["w"], [1, 2, 3])


# --- corrupt files ------------------------------------------------------------------------


def rewrite_golden_zip(path, replace):
    """A copy of the golden zip with some members replaced (bytes) or dropped (None)."""
    with zipfile.ZipFile(GOLDEN[0]) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            member = info.filename.split("/", 1)[1]
            raw = replace.get(member, source.read(info))
            if raw is not None:
                target.writestr(info.filename, raw)
    return path


def one_tensor_zip(path, size, stride, offset=0, storage_type="FloatStorage"):
    """A zip holding {"w": tensor} over a 4-element storage."""
    pickled = torch_like_pickle({"w": op_tensor("0", 4, offset, size, stride, storage_type)})
    return write_zip(path, pickled, {"0": b"\0" * 16})


def golden_pickle():
    with zipfile.ZipFile(GOLDEN[0]) as archive:
        return archive.read(archive.namelist()[0])


CORRUPT = {  # case -> (writes the broken file at a path, regex the error must match)
    "truncated zip": (lambda p: p.write_bytes(GOLDEN[0].read_bytes()[:2000]), "malformed"),
    "truncated legacy": (lambda p: p.write_bytes(GOLDEN[1].read_bytes()[:-10]), "truncated"),
    "random bytes": (lambda p: p.write_bytes(b"#" + os.urandom(999)), "neither a zip"),
    "random pickle-like bytes": (lambda p: p.write_bytes(b"\x80\x02" + os.urandom(999)), "neither"),
    "empty file": (lambda p: p.write_bytes(b""), "empty"),
    "missing data.pkl": (lambda p: rewrite_golden_zip(p, {"data.pkl": None}), "data.pkl"),
    "truncated data.pkl": (
        lambda p: rewrite_golden_zip(p, {"data.pkl": golden_pickle()[:100]}), "malformed"
    ),
    "missing storage": (lambda p: rewrite_golden_zip(p, {"data/0": None}), "data/0 is missing"),
    "short storage": (lambda p: rewrite_golden_zip(p, {"data/0": b"12"}), "has 2 bytes"),
    "bad byteorder": (lambda p: rewrite_golden_zip(p, {"byteorder": b"middle"}), "byte order"),
    "tensor beyond storage": (lambda p: one_tensor_zip(p, (2,), (3,), 1), "needs element 4"),
    "negative stride": (lambda p: one_tensor_zip(p, (2,), (-1,)), "bad tensor geometry"),
    "unsupported storage dtype": (
        lambda p: one_tensor_zip(p, (), (), storage_type="QInt8Storage"),
        r"unsupported storage dtype torch\.QInt8Storage",
    ),
    "legacy storage never stored": (
        lambda p: write_legacy(p, torch_like_pickle({"w": op_tensor("k", 1, 0, (), ())})),
        "storage 'k' is missing",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_files_raise_weight_file_error(tmp_path, case):
    make, message = CORRUPT[case]
    path = tmp_path / "broken.pth"
    make(path)
    with pytest.raises(WeightFileError, match=message) as info:
        load_torch_file(path)
    assert type(info.value) is WeightFileError
    assert str(path) in str(info.value)


def test_unknown_storage_type_object(tmp_path):
    storage_id = b"(" + op_value("storage") + op_value("FloatStorage") + op_value("0")
    storage_id += op_value("cpu") + op_value(1) + b"tQ."
    with pytest.raises(WeightFileError, match="unknown storage dtype 'FloatStorage'"):
        load_torch_file(write_zip(tmp_path / "x.pth", b"\x80\x02" + storage_id, {"0": b"\0" * 4}))


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(WeightFileError, match="no such file"):
        load_torch_file(tmp_path / "absent.pth")
    with pytest.raises(WeightFileError, match="directory"):
        load_torch_file(tmp_path)


# --- flatten_state_dict -------------------------------------------------------------------


def test_flatten_state_dict_picks_the_model():
    state = flatten_state_dict(load_torch_file(GOLDEN[0]), GOLDEN[0])
    assert type(state) is dict and "float32" in state and "epoch" not in state
    array = np.zeros(2)
    assert flatten_state_dict({"state_dict": {"w": array}, "epoch": 3}, "x") == {"w": array}
    assert flatten_state_dict(OrderedDict(w=array), "x") == {"w": array}


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"model": {"w": np.zeros(1), "n": 3}}, "entry 'n' is a int"),
        ({"w": {"nested": np.zeros(1)}}, "entry 'w' is a dict"),
        ([np.zeros(1)], "holds a list"),
    ],
)
def test_flatten_state_dict_refuses_non_arrays(obj, message):
    with pytest.raises(WeightFileError, match=message):
        flatten_state_dict(obj, "ckpt.pth")


# --- oracle: torch.save -> load_torch_file == torch.load ----------------------------------

DTYPES = ["float32", "float64", "float16", "bfloat16", "complex64",
          "int64", "int32", "int16", "int8", "uint8", "bool"]  # fmt: skip
SHAPES = [(), (0,), (1,), (7,), (2, 3), (2, 0, 4), (3, 4, 5)]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def random_tensor(torch, dtype, shape, generator):
    dtype = getattr(torch, dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    low = 0 if dtype == torch.uint8 else -100
    return torch.randint(low, 100, shape, generator=generator, dtype=dtype)


def state_dict_of(torch, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    state = {f"shape{i}": random_tensor(torch, dtype, s, generator) for i, s in enumerate(SHAPES)}
    cube = state[f"shape{len(SHAPES) - 1}"]
    state["transposed"] = cube.transpose(0, 2)
    state["sliced"] = cube[1:, ::2, 3]
    state["expanded"] = state["shape3"][:, None].expand(7, 3)  # stride 0
    state["parameter"] = torch.nn.Parameter(cube.clone(), requires_grad=cube.is_floating_point())
    return state


def as_numpy(torch, tensor):
    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def assert_same_as_torch(torch, path):
    ours = load_torch_file(path)
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        expected = as_numpy(torch, tensor)
        assert ours[name].dtype == expected.dtype, name
        assert ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


@pytest.mark.oracle
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_against_torch_load(torch, tmp_path, dtype, legacy):
    path = tmp_path / "state.pth"
    for seed in range(3):
        state = state_dict_of(torch, dtype, seed)
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        assert_same_as_torch(torch, path)


@pytest.mark.oracle
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_transformers_efficientformer_state_dict(torch, tmp_path, legacy):
    transformers = pytest.importorskip("transformers")
    config = transformers.EfficientFormerConfig(
        depths=[1, 1, 1, 2], hidden_sizes=[16, 16, 32, 32], dim=32, num_meta3d_blocks=1,
        hidden_size=32, num_labels=10, key_dim=8, attention_ratio=2, num_attention_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.EfficientFormerForImageClassificationWithTeacher(config)
    path = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    assert_same_as_torch(torch, path)
    state = flatten_state_dict(load_torch_file(path), path)
    assert state.keys() == model.state_dict().keys()
