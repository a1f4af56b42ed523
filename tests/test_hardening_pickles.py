"""Malicious and garbage pickles in .pth/.bin files, beyond tests/test_torchfile.py.

tests/test_torchfile.py builds os.system, eval, exec, subprocess.Popen, nested-pickle and getattr
payloads in every layout. Here: the payloads it does not build (a class with `__setstate__`, a
class whose `__reduce__` names a module function, INST/OBJ opcodes, extension-registry opcodes,
a payload in the legacy storage-key list), random garbage, and payloads reaching the user-facing
entry points (from_pretrained on a transformers directory, `npformer predict/convert/shapes`).
Each payload is first shown to run under plain pickle (it creates a marker file); then npformer
must refuse it and the marker must not exist. No torch.
"""

import copyreg
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer import cli
from npformer.errors import UnsafePickleError, WeightFileError
from npformer.checkpoints.torchfile import load_torch_file

ROOT = Path(__file__).resolve().parent.parent
DIGIT = ROOT / "tests" / "fixtures" / "digits" / "digit_3_705.png"
HF_DIR = ROOT / "tests" / "fixtures" / "checkpoints" / "hf_bin"


class SetStatePayload:
    """No __reduce__ of its own: pickled by copyreg as (copyreg._reconstructor / __newobj__, BUILD);
    unpickling calls __setstate__, which would create the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).touch()


class ReducePayload:
    """A class whose __reduce__ names a function of this test module."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return touch, (self.marker,)


def touch(path):
    Path(path).touch()


def write_zip(path, pickled):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/version", b"3\n")
    return path


def write_legacy(path, main, keys):
    magic = [pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})]
    path.write_bytes(b"".join(magic) + main + keys)
    return path


def payload_pickles(marker):
    """name -> (pickle bytes whose plain unpickling creates `marker`, the global npformer must refuse)."""
    command = f"touch {marker}".encode()
    return {
        "__setstate__ (protocol 2)": (pickle.dumps({"w": SetStatePayload(marker)}, protocol=2), "SetStatePayload"),
        "__setstate__ (protocol 4)": (pickle.dumps({"w": SetStatePayload(marker)}, protocol=4), "SetStatePayload"),
        "__reduce__ to a module function": (pickle.dumps({"w": ReducePayload(marker)}, protocol=2), ".touch"),
        "INST opcode": (b"(S'" + command + b"'\nios\nsystem\n.", "os.system"),
        "OBJ opcode": (b"(cos\nsystem\nS'" + command + b"'\no.", "os.system"),
    }


@pytest.mark.parametrize("name", list(payload_pickles("m")))
def test_payloads_run_under_plain_pickle(tmp_path, name):
    """Control: each payload really runs when unpickled normally, so its refusal below means something."""
    marker = tmp_path / "marker"
    pickle.loads(payload_pickles(marker)[name][0])
    assert marker.exists()


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("name", list(payload_pickles("m")))
def test_more_payloads_are_refused_before_running(tmp_path, name, layout):
    marker = tmp_path / "marker"
    pickled, refused = payload_pickles(marker)[name]
    path = tmp_path / "evil.pth"
    write_zip(path, pickled) if layout == "zip" else write_legacy(path, pickled, pickle.dumps([], protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        load_torch_file(path)
    assert refused in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_a_payload_in_the_legacy_storage_key_list(tmp_path):
    marker = tmp_path / "marker"
    path = write_legacy(tmp_path / "evil.pth", pickle.dumps({}, protocol=2),
                        pickle.dumps(ReducePayload(marker), protocol=2))
    with pytest.raises(UnsafePickleError, match="touch"):
        load_torch_file(path)
    assert not marker.exists()


def test_extension_opcodes_are_refused_even_when_copyreg_has_the_global_cached(tmp_path):
    """EXT1/EXT2/EXT4 fetch a global through copyreg's extension registry; once a code has been
    resolved in the process, pickle (C and Python) takes it from copyreg's cache without calling
    find_class. Before npformer scanned opcodes, this ran os.system through load_torch_file."""
    marker = tmp_path / "marker"
    command = pickle.dumps(f"touch {marker}", protocol=2)[2:-1]
    code = 0x7A11
    pickled = b"\x80\x02\x83" + struct.pack("<H", code) + command + b"\x85R."  # EXT2, TUPLE1, REDUCE
    copyreg.add_extension("os", "system", code)
    try:
        pickle.loads(pickled)  # control: it runs, and leaves os.system in copyreg's cache
        assert marker.exists() and copyreg._extension_cache[code] is os.system
        marker.unlink()
        for layout in ("zip", "legacy"):
            path = tmp_path / f"ext-{layout}.pth"
            write_zip(path, pickled) if layout == "zip" else write_legacy(path, pickled, pickle.dumps([], protocol=2))
            with pytest.raises(UnsafePickleError, match=r"extension-registry opcode EXT2 \(code 31249\)"):
                load_torch_file(path)
            assert not marker.exists()
    finally:
        copyreg.remove_extension("os", "system", code)  # also empties the cache
    with pytest.raises(UnsafePickleError, match="EXT2"):  # and without a registration
        load_torch_file(tmp_path / "ext-zip.pth")
    assert not marker.exists()


def test_random_bytes_are_reported_as_garbage_not_as_unsafe(tmp_path):
    """1,000 seeded random files: all WeightFileError (exit 4), none UnsafePickleError (exit 5) --
    about 1 in 200 random streams holds an EXT opcode before it stops being a pickle."""
    rng = np.random.default_rng(0)
    path = tmp_path / "garbage.pth"
    kinds = set()
    for _ in range(1000):
        path.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
        with pytest.raises(WeightFileError) as info:
            load_torch_file(path)
        kinds.add(type(info.value))
    assert kinds == {WeightFileError}


def test_allowed_globals_do_not_leak_into_copyregs_cache(tmp_path):
    code = 0x7A12
    pickled = b"\x80\x02\x83" + struct.pack("<H", code) + b")R."  # OrderedDict() via an extension code
    copyreg.add_extension("collections", "OrderedDict", code)
    try:
        with pytest.raises(UnsafePickleError, match="EXT2"):
            load_torch_file(write_zip(tmp_path / "ext.pth", pickled))
        assert code not in copyreg._extension_cache  # npformer's stand-in was never cached for others
    finally:
        copyreg.remove_extension("collections", "OrderedDict", code)


def _evil_transformers_dir(tmp_path, marker):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_bytes((HF_DIR / "config.json").read_bytes())
    checkpoint = {"efficientformer.layernorm.weight": ReducePayload(marker)}
    write_zip(target / "pytorch_model.bin", pickle.dumps(checkpoint, protocol=2))
    return target


def test_entry_points_refuse_payloads_with_nothing_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    model_dir = _evil_transformers_dir(tmp_path, marker)
    with pytest.raises(UnsafePickleError, match=r"pytorch_model\.bin.*\.touch"):
        npformer.from_pretrained(model_dir)
    for argv in (["predict", DIGIT, "--weights", model_dir], ["convert", model_dir, tmp_path / "o.safetensors"],
                 ["shapes", "--weights", model_dir]):
        assert cli.main([str(a) for a in argv]) == 5
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "pytorch_model.bin" in err and "never executes code" in err
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()
    assert os.listdir(tmp_path) == ["model"]
