"""Read PyTorch checkpoints (``.pth``, ``.bin``) with NumPy alone, never running their code.

``torch.save`` writes a Python pickle in which every tensor's data (its *storage*, a flat buffer
of elements) is kept out of the pickle and stored separately. There are two file layouts.

Zip format (torch >= 1.6, the default): an uncompressed zip whose members all sit in one
top-level folder. The folder's name varies (torch uses the file's stem, often "archive"), so we
take it from the first member, as torch does::

    archive/data.pkl        the pickled object, with storages replaced by persistent ids
    archive/data/0, data/1  one raw storage per key
    archive/byteorder       "little" or "big" (missing in old files, which are little-endian)
    archive/version, archive/.data/serialization_id, ...   bookkeeping, ignored here

Legacy format (``_use_new_zipfile_serialization=False``): one stream holding, back to back, a
pickled magic number, a pickled protocol version (1001), a pickled dict of system info, the main
pickle, a pickled list of storage keys, and then for each key an 8-byte little-endian element
count followed by that many raw little-endian elements. As the data comes *after* the main
pickle, tensors are first unpickled as references (in both formats) and become arrays at the end.

Persistent ids: pickle lets the writer replace an object by an id the reader resolves itself.
torch replaces each storage by ``("storage", storage_type, key, location, numel)`` (the legacy
format adds a sixth item, a view description that has been None for years). ``storage_type`` is
a global such as ``torch.FloatStorage`` that only says the element dtype; ``location`` ("cpu",
"cuda:0") does not matter to NumPy. A tensor is pickled as a call
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)``; slices and
transposes are saved as views: a size/stride/offset over a shared storage.

Why the restricted unpickler is safe: unpickling runs a small program. GLOBAL and STACK_GLOBAL
fetch any importable object by name (``os.system``) and REDUCE calls it. Every such name goes
through ``find_class``, which here only hands out the harmless stand-ins of ``_SAFE_GLOBALS``
and raises UnsafePickleError for anything else, before anything is called. The EXT opcodes,
which fetch globals from copyreg's extension cache without find_class, are refused by reading
every pickle's opcodes before it is unpickled. The opcodes that act on existing objects
(SETITEM, APPEND, NEWOBJ, BUILD) can then only reach built-in containers and our stand-ins;
BUILD, which sets attributes, is refused by all of them except OrderedDict, where the
``_metadata`` that ``state_dict()`` attaches is dropped.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from npformer.errors import NpformerError, UnsafePickleError, WeightFileError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STATE_DICT_KEYS = ("model", "state_dict")


class _Sealed:
    """Base of every object a checkpoint's pickle can get from us: BUILD may not modify it."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise ValueError(f"the pickle tries to set attributes on a {type(self).__name__}")


# Non-frozen on purpose: frozen slotted dataclasses get a __setstate__ that would unseal them.
@dataclass(slots=True, eq=False)
class _StorageKind(_Sealed):
    """What a storage global such as torch.FloatStorage tells us: the on-disk element layout."""

    name: str
    dtype: np.dtype  # little-endian; bfloat16 is read as uint16, bool as uint8


@dataclass(slots=True, eq=False)
class _Storage(_Sealed):
    """One storage: `numel` raw elements; `data` is None until a legacy file's data is read."""

    key: str
    kind: _StorageKind
    numel: int
    data: np.ndarray | None


@dataclass(slots=True, eq=False)
class _TensorRef(_Sealed):
    """A tensor as pickled: a view of `storage`, in elements. Becomes an array at the end."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(slots=True, eq=False)
class _StandIn(_Sealed):
    """An allow-listed global. A wrapper, not the bare function: BUILD could set a function's
    attributes (such as __defaults__) and so change how later files load."""

    function: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _PickledOrderedDict(OrderedDict):
    """collections.OrderedDict as the pickle builds it; BUILD state (`_metadata`) is dropped."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"unexpected OrderedDict state of type {type(state).__name__}")


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise ValueError(f"a tensor is built on a {type(storage).__name__}, not a storage")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(map(_is_count, (offset, *size, *stride))):
        raise ValueError(f"bad tensor geometry: offset {offset!r} size {size!r} stride {stride!r}")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise ValueError(
                f"a tensor of size {size}, stride {stride}, offset {offset} needs element {last} "
                f"of storage {storage.key!r}, which holds only {storage.numel} elements"
            )
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    if metadata and any(metadata.values()):
        raise ValueError(f"tensors with conjugate/negative view bits are not supported: {metadata}")
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    if not isinstance(data, _TensorRef):
        raise ValueError(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data  # requires_grad, hooks and Python attributes (state) mean nothing to NumPy


def _encode_latin1(text: object, encoding: object) -> bytes:
    """Protocol-2 pickles (torch's default) store bytes b as _codecs.encode(str, "latin1")."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """Protocol-2 pickles store b"" as a call of bytes() with no argument."""
    return b""


_STORAGE_KINDS = {
    name: _StorageKind(name, np.dtype(code))
    for name, code in [
        ("FloatStorage", "<f4"), ("DoubleStorage", "<f8"), ("HalfStorage", "<f2"),
        ("BFloat16Storage", "<u2"), ("ComplexFloatStorage", "<c8"),
        ("ComplexDoubleStorage", "<c16"), ("LongStorage", "<i8"), ("IntStorage", "<i4"),
        ("ShortStorage", "<i2"), ("CharStorage", "i1"), ("ByteStorage", "u1"),
        ("BoolStorage", "u1"), ("UntypedStorage", "u1"),
    ]
}  # fmt: skip

_SAFE_GLOBALS: dict[tuple[str, str], _Sealed] = {
    ("collections", "OrderedDict"): _StandIn(_PickledOrderedDict),
    ("torch", "Size"): _StandIn(tuple),
    ("torch._utils", "_rebuild_tensor"): _StandIn(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _StandIn(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _StandIn(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _StandIn(_rebuild_parameter),
    ("_codecs", "encode"): _StandIn(_encode_latin1),
    ("__builtin__", "bytes"): _StandIn(_empty_bytes),
    ("builtins", "bytes"): _StandIn(_empty_bytes),
    ("torch.storage", "UntypedStorage"): _STORAGE_KINDS["UntypedStorage"],
    **{("torch", name): kind for name, kind in _STORAGE_KINDS.items()},
    **{("torch.cuda", name): kind for name, kind in _STORAGE_KINDS.items()},  # old GPU files
}

# Reads a storage's data given (key, kind, numel); None means "filled in later" (legacy format).
_StorageReader = Callable[[str, _StorageKind, int], np.ndarray] | None


_OPCODES = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_EXTENSION_OPCODES = ("EXT1", "EXT2", "EXT4")
# the byte count and signedness of a counted argument's length prefix, by pickletools' `n` code
_COUNT_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                 pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}


def _opcodes(file: IO[bytes], end: int):
    """(opcode name, raw argument) of each opcode of the pickle at `file`'s position, up to STOP.

    Like pickletools.genops, but arguments are not decoded (no warnings from odd strings) and
    counted ones (bytes, strings) are skipped by seeking, never read: a bogus length cannot make
    anything allocate. Raises ValueError for bytes that are not a whole pickle.
    """
    while True:
        code = file.read(1)
        if code not in _OPCODES:
            raise ValueError(f"no pickle opcode at byte {file.tell() - len(code)} ({code!r})")
        op = _OPCODES[code]
        arg = b""
        if op.arg is not None and op.arg.n >= 0:
            arg = file.read(op.arg.n)
        elif op.arg is not None and op.arg.n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if op.arg.name.endswith("_pair") else 1):  # GLOBAL, INST: module and name lines
                arg += file.readline()
        elif op.arg is not None:
            width, signed = _COUNT_PREFIX[op.arg.n]
            count = int.from_bytes(file.read(width), "little", signed=signed)
            if count < 0 or file.tell() + count > end:
                raise ValueError(f"{op.name} at byte {file.tell() - width - 1} claims {count} bytes past the end")
            file.seek(count, os.SEEK_CUR)
        if file.tell() > end or (op.arg is not None and op.arg.n > 0 and len(arg) < op.arg.n):
            raise ValueError(f"the pickle ends inside {op.name}")
        yield op.name, arg
        if op.name == "STOP":
            return


def _refuse_extension_opcodes(file: IO[bytes], path: str) -> None:
    """Read the next pickle's opcodes (up to STOP) and rewind; refuse the extension-registry ones.

    EXT1/EXT2/EXT4 name a global by a number registered with copyreg.add_extension. Once a number
    has been resolved anywhere in the process, pickle takes the object from copyreg's cache
    without asking find_class, so the allow-list would be bypassed (and a stand-in of ours would
    be cached for everyone else). torch never writes these opcodes. Bytes that are not a whole
    pickle raise ValueError (reported as a malformed file), not UnsafePickleError.
    """
    start = file.tell()
    end = file.seek(0, os.SEEK_END)
    file.seek(start)
    extension = None
    for name, arg in _opcodes(file, end):
        if name in _EXTENSION_OPCODES and extension is None:
            extension = f"{name} (code {int.from_bytes(arg, 'little', signed=name == 'EXT4')})"
    if extension:  # only a well-formed pickle is called unsafe; garbage is reported as garbage
        raise UnsafePickleError(
            f"refusing to load {path}: its pickle uses the extension-registry opcode {extension}, which torch "
            "never writes and which can fetch a global past the allow-list; npformer never executes code "
            "from a checkpoint"
        )
    file.seek(start)


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves globals only from _SAFE_GLOBALS and storages via `read`."""

    def __init__(self, file: IO[bytes], path: str, read: _StorageReader = None) -> None:
        super().__init__(file)
        self.file = file
        self.path = path
        self.read = read
        self.storages: dict[str, _Storage] = {}

    def load(self) -> object:
        _refuse_extension_opcodes(self.file, self.path)
        return super().load()

    def find_class(self, module: str, name: str) -> _Sealed:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module.startswith("torch") and name.endswith("Storage"):
            raise WeightFileError(
                f"cannot load {self.path}: unsupported storage dtype {module}.{name}"
            )
        raise UnsafePickleError(
            f"refusing to load {self.path}: its pickle references {module}.{name}, which is not "
            "a tensor or a plain container; npformer never executes code from a checkpoint"
        )

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r}")
        _, kind, key, _location, numel, *view = pid
        if not isinstance(kind, _StorageKind):
            raise WeightFileError(f"cannot load {self.path}: unknown storage dtype {kind!r}")
        if not isinstance(key, str) or not _is_count(numel) or (view and view[0] is not None):
            raise ValueError(f"unsupported storage id {pid!r}")
        storage = self.storages.get(key)
        if storage is None:
            data = self.read(key, kind, numel) if self.read else None
            storage = self.storages[key] = _Storage(key, kind, numel, data)
        elif storage.kind is not kind or storage.numel != numel:
            raise ValueError(f"storage {key!r} is described in two different ways")
        return storage


def _storage_array(raw: bytes, kind: _StorageKind, numel: int, order: str, where: str):
    """The first `numel` elements of `raw`; `order` is "<" (little-endian) or ">"."""
    needed = numel * kind.dtype.itemsize
    if len(raw) < needed:
        raise ValueError(f"{where} has {len(raw)} bytes; {numel} {kind.name} items need {needed}")
    return np.frombuffer(raw, dtype=kind.dtype.newbyteorder(order), count=numel)


def _load_zip(file: IO[bytes], path: str) -> object:
    with zipfile.ZipFile(file) as archive:
        members = archive.namelist()
        names = set(members)
        prefix = members[0].split("/")[0] if members else ""
        if f"{prefix}/data.pkl" not in names:
            raise WeightFileError(f"cannot load {path}: a zip archive without {prefix}/data.pkl")
        order = "<"
        if f"{prefix}/byteorder" in names:
            marker = archive.read(f"{prefix}/byteorder")
            if marker not in (b"little", b"big"):
                raise WeightFileError(f"cannot load {path}: unknown byte order {marker!r}")
            order = "<" if marker == b"little" else ">"

        def read_storage(key: str, kind: _StorageKind, numel: int) -> np.ndarray:
            name = f"{prefix}/data/{key}"
            if name not in names:
                raise WeightFileError(f"cannot load {path}: storage {name} is missing")
            return _storage_array(archive.read(name), kind, numel, order, f"storage {name}")

        pickled = io.BytesIO(archive.read(f"{prefix}/data.pkl"))  # seekable: its opcodes are checked first
        return _RestrictedUnpickler(pickled, path, read_storage).load()


def _read_exactly(file: IO[bytes], count: int, path: str) -> bytes:
    remaining = os.fstat(file.fileno()).st_size - file.tell()
    if count > remaining:
        raise WeightFileError(f"cannot load {path}: truncated ({count} wanted, {remaining} left)")
    return file.read(count)


def _load_legacy(file: IO[bytes], path: str) -> object:
    try:
        magic = _RestrictedUnpickler(file, path).load()
    except NpformerError:
        raise
    except Exception:
        magic = None  # not even a pickle
    if magic != _LEGACY_MAGIC:
        raise WeightFileError(f"cannot load {path}: neither a zip archive nor a legacy torch file")
    version = _RestrictedUnpickler(file, path).load()
    if version != _LEGACY_PROTOCOL:
        raise WeightFileError(f"cannot load {path}: unknown legacy protocol version {version!r}")
    _RestrictedUnpickler(file, path).load()  # system info; legacy storages are little-endian
    main = _RestrictedUnpickler(file, path)
    obj = main.load()
    keys = _RestrictedUnpickler(file, path).load()
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        raise ValueError(f"the storage key list is a {type(keys).__name__}, not a list of str")
    for key in keys:
        storage = main.storages.get(key)
        if storage is None:
            raise ValueError(f"storage {key!r} is listed but no tensor uses it")
        (count,) = struct.unpack("<q", _read_exactly(file, 8, path))
        if count != storage.numel:
            raise ValueError(f"storage {key!r} has {count} elements, its id says {storage.numel}")
        raw = _read_exactly(file, count * storage.kind.dtype.itemsize, path)
        storage.data = _storage_array(raw, storage.kind, count, "<", f"storage {key!r}")
    return obj


def _tensor_to_array(ref: _TensorRef, path: str) -> np.ndarray:
    storage = ref.storage
    if storage.data is None:
        raise WeightFileError(f"cannot load {path}: the data of storage {storage.key!r} is missing")
    native = storage.data.dtype.newbyteorder("=")
    if 0 in ref.size:
        values = np.empty(ref.size, dtype=native)
    else:
        itemsize = storage.data.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage.data[ref.offset :],
            shape=ref.size,
            strides=tuple(step * itemsize for step in ref.stride),
            writeable=False,
        )
        values = np.array(view, dtype=native, order="C")  # a copy: owns its data
    if storage.kind.name == "BFloat16Storage":  # bfloat16 is the top half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32)
    if storage.kind.name == "BoolStorage":
        return values != 0
    return values


_PLAIN_SCALARS = (str, bytes, int, float, complex, bool, type(None))


def _materialize(obj: object, path: str) -> object:
    """Turn every tensor reference into an array; refuse anything that is not plain data."""
    if isinstance(obj, _TensorRef):
        return _tensor_to_array(obj, path)
    if isinstance(obj, _Storage):  # a storage saved on its own: all its elements
        return _tensor_to_array(_TensorRef(obj, 0, (obj.numel,), (1,)), path)
    if type(obj) in (_PickledOrderedDict, dict):
        container = OrderedDict if type(obj) is _PickledOrderedDict else dict
        return container((_materialize(k, path), _materialize(v, path)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_materialize(item, path) for item in obj)
    if type(obj) in _PLAIN_SCALARS:
        return obj
    raise WeightFileError(
        f"cannot load {path}: its pickle produced a {type(obj).__name__}, which is neither a "
        "tensor nor a plain container or scalar"
    )


def load_torch_file(path: str | os.PathLike[str]) -> object:
    """Read a torch.save file into plain Python containers with numpy arrays in place of tensors.

    Works without torch and never executes code from the file. Each tensor becomes a fresh,
    writable, C-contiguous array (views that shared a storage in torch no longer share memory).
    bfloat16 becomes float32, as NumPy has no bfloat16. OrderedDicts stay OrderedDicts (their
    `_metadata` attribute is dropped), dicts, lists and tuples keep their type.

    Raises UnsafePickleError if the pickle references anything but tensors and plain
    containers, and WeightFileError for a missing, truncated or malformed file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightFileError(f"cannot load {path}: no such file")
    if os.path.isdir(path):
        raise WeightFileError(f"cannot load {path}: a directory, not a checkpoint file")
    try:
        with open(path, "rb") as file:
            head = file.read(512)
            file.seek(0)
            if head.startswith(b"PK"):
                obj = _load_zip(file, path)
            elif head:
                obj = _load_legacy(file, path)
            else:
                raise WeightFileError(f"cannot load {path}: the file is empty")
        return _materialize(obj, path)
    except NpformerError:
        raise
    except Exception as exc:  # a broken file can break zipfile, pickle or numpy in many ways
        raise WeightFileError(
            f"cannot load {path}: malformed or truncated ({type(exc).__name__}: {exc})"
        ) from exc


def flatten_state_dict(obj: object, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The flat name -> array state dict in a loaded checkpoint.

    `obj` is either the state dict itself or a training checkpoint (a dict holding it under
    "model" or "state_dict", next to epochs, optimizer state and so on).
    """
    path = os.fspath(path)
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key in _STATE_DICT_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise WeightFileError(
                f"{path}: state dict entry {name!r} is a {type(value).__name__}, not a tensor"
            )
        state[name] = value
    return state
