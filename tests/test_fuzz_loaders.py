"""Property-based fuzzing of the weight loaders (hypothesis): random byte overwrites, insertions
and truncations of valid small files. Each mutated file either raises an NpformerError subclass
or loads exactly what its bytes say; nothing else (no KeyError, IndexError, struct.error, ...).

* npformer .safetensors files have no checksum, so a flipped data byte that stays a finite number
  loads as that number: the property compares with an independent reading of the mutated bytes
  (a 15-line safetensors parser below), not with the original.
* zip-format .pth files carry a CRC-32 per member: a mutated file loads identically or not at all.
* legacy-format .pth files carry none: a load must equal torch.load(weights_only=True) of the
  same bytes (oracle tier; the torch-free tier checks the result is plain containers and arrays).

Bounded for CI: ~100-200 examples per property, no deadline; the file runs in well under a minute.
"""

import json
import struct
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npformer
from npformer import EfficientFormerConfig, EfficientFormerV2Config, SwiftFormerConfig
from npformer.checkpoints.convert import load_any
from npformer.errors import NpformerError
from npformer.checkpoints.seeded import seeded_weights
from npformer.checkpoints.torchfile import load_torch_file

FIXTURES = Path(__file__).parent / "fixtures"
SMALL_PTH = {"zip": FIXTURES / "torchfile" / "small_zip.pth", "legacy": FIXTURES / "torchfile" / "small_legacy.pth"}
SWIFT_ORIGINAL = FIXTURES / "checkpoints_swiftformer" / "original.pth"  # zip format, 84 kB
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

_SCRATCH = tempfile.TemporaryDirectory(prefix="npformer-fuzz-")
OUTCOMES = {}  # test id -> outcome counts of its examples (read by reports; each test asserts on its own)


def scratch(name, data):
    path = Path(_SCRATCH.name) / name
    path.write_bytes(bytes(data))
    return path


def tiny_npformer_files():
    """Three small valid npformer weight files: an EfficientFormer (with its attention), a SwiftFormer
    and an EfficientFormerV2 (both attentions, built for 64 px)."""
    ef_cfg = EfficientFormerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_meta3d_blocks=1, dim=32,
                                   hidden_size=32, key_dim=8, num_attention_heads=2, num_labels=3)
    sf_cfg = SwiftFormerConfig(embed_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1], num_labels=3)
    v2_cfg = EfficientFormerV2Config(widths=[8, 8, 16, 16], depths=[1, 1, 1, 1], num_vit=1,
                                     mlp_ratios=[[2], [2], [2], [2]], image_size=64, num_labels=3)
    files = {}
    for name, model in (("ef", npformer.EfficientFormerForImageClassificationWithTeacher(ef_cfg, seeded_weights(ef_cfg, 2))),
                        ("sf", npformer.SwiftFormerForImageClassification(sf_cfg, seeded_weights(sf_cfg, 2))),
                        ("v2", npformer.EfficientFormerV2ForImageClassificationWithTeacher(v2_cfg, seeded_weights(v2_cfg, 2)))):
        path = Path(_SCRATCH.name) / f"valid-{name}.safetensors"
        model.save_pretrained(path)
        files[name] = path.read_bytes()
    return files


VALID = tiny_npformer_files()
DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}


def parse_safetensors(data):
    """An independent reading of a safetensors file: (tensors, metadata). Raises on anything odd."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(bytes(data[8 : 8 + n]))
    metadata = header.pop("__metadata__", {})
    body = bytes(data[8 + n :])
    tensors = {}
    for key, entry in header.items():
        start, end = entry["data_offsets"]
        tensors[key] = np.frombuffer(body[start:end], dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return tensors, metadata


def mutations(size, header_end):
    """(kind, argument) describing one mutation. Positions are drawn from the header (or any
    leading structure) and from the rest separately: hypothesis favours small integers, which
    would otherwise keep nearly every mutation in the first bytes."""
    anywhere = st.one_of(st.integers(0, header_end - 1), st.integers(header_end, size - 1))
    overwrite = st.tuples(st.just("overwrite"), st.lists(st.tuples(anywhere, st.integers(0, 255)), min_size=1, max_size=4))
    truncate = st.tuples(st.just("truncate"), anywhere)
    insert = st.tuples(st.just("insert"), st.tuples(anywhere, st.binary(min_size=1, max_size=8)))
    delete = st.tuples(st.just("delete"), st.tuples(anywhere, st.integers(1, 8)))
    return st.one_of(overwrite, truncate, insert, delete)


def mutate(data, mutation):
    kind, arg = mutation
    data = bytearray(data)
    if kind == "overwrite":
        for position, value in arg:
            data[position] = value
    elif kind == "truncate":
        del data[arg:]
    elif kind == "insert":
        data[arg[0] : arg[0]] = arg[1]
    else:
        del data[arg[0] : arg[0] + arg[1]]
    return data


def header_end(data):
    return 8 + struct.unpack("<Q", data[:8])[0]


@pytest.mark.parametrize("family", list(VALID))
def test_fuzz_npformer_safetensors(family):
    valid = VALID[family]
    outcomes = OUTCOMES[f"safetensors-{family}"] = {"refused": 0, "loaded": 0}

    @FUZZ
    @given(mutations(len(valid), header_end(valid)))
    def check(mutation):
        data = mutate(valid, mutation)
        path = scratch(f"mutated-{family}.safetensors", data)
        try:
            config, tensors, metadata = load_any(path)
        except NpformerError:
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        expected, expected_metadata = parse_safetensors(data)  # what the bytes say
        assert metadata == expected_metadata
        assert sorted(tensors) == sorted(expected)
        for key in tensors:
            assert tensors[key].dtype == expected[key].dtype and np.array_equal(tensors[key], expected[key]), key
        assert np.isfinite(np.concatenate([t.ravel() for t in tensors.values()])).all()
        type(npformer.from_pretrained(path))  # and it builds a model

    check()
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes  # both branches were exercised


def same(a, b):
    """Equal values of equal types, recursively (arrays: dtype, shape and every element)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def plain(obj):
    """Only what load_torch_file may return: containers, scalars and arrays."""
    if isinstance(obj, (dict, OrderedDict)):
        return all(plain(k) and plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(map(plain, obj))
    return isinstance(obj, (np.ndarray, str, bytes, int, float, complex, bool, type(None)))


@pytest.mark.parametrize("layout", list(SMALL_PTH))
def test_fuzz_torch_files(layout):
    valid = SMALL_PTH[layout].read_bytes()
    original = load_torch_file(SMALL_PTH[layout])
    outcomes = OUTCOMES[f"pth-{layout}"] = {"refused": 0, "identical": 0, "different": 0}

    @FUZZ
    @given(mutations(len(valid), min(len(valid), 512)))
    def check(mutation):
        path = scratch(f"mutated-{layout}.pth", mutate(valid, mutation))
        try:
            loaded = load_torch_file(path)
        except NpformerError:
            outcomes["refused"] += 1
            return
        assert plain(loaded)
        if same(loaded, original):
            outcomes["identical"] += 1
            return
        outcomes["different"] += 1
        assert layout == "legacy", "a zip member's CRC-32 should have caught this"

    check()
    assert outcomes["refused"] > 0 and outcomes["identical"] > 0, outcomes


def test_fuzz_original_swiftformer_checkpoint():
    valid = SWIFT_ORIGINAL.read_bytes()
    config, tensors, _ = load_any(SWIFT_ORIGINAL, attention_generation="v1")
    outcomes = OUTCOMES["original-swiftformer"] = {"refused": 0, "identical": 0}

    @settings(FUZZ, max_examples=100)
    @given(mutations(len(valid), 1024))
    def check(mutation):
        path = scratch("mutated-original.pth", mutate(valid, mutation))
        try:
            got_config, got, _ = load_any(path, attention_generation="v1")
        except NpformerError:
            outcomes["refused"] += 1
            return
        assert got_config.to_dict() == config.to_dict() and same(got, tensors)  # zip: identical or refused
        outcomes["identical"] += 1

    check()
    assert outcomes["refused"] > 0, outcomes


@pytest.mark.oracle
def test_fuzz_legacy_torch_files_agree_with_torch_load():
    torch = pytest.importorskip("torch")
    valid = SMALL_PTH["legacy"].read_bytes()
    original = load_torch_file(SMALL_PTH["legacy"])
    differing = []
    outcomes = OUTCOMES["pth-legacy-vs-torch"] = {"refused": 0, "identical": 0, "different, equal to torch.load": 0}

    def as_numpy(obj):
        if isinstance(obj, torch.Tensor):
            return (obj.float() if obj.dtype == torch.bfloat16 else obj).numpy()
        if isinstance(obj, dict):
            return type(obj)((k, as_numpy(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(as_numpy(x) for x in obj)
        return obj

    @settings(FUZZ, max_examples=300)
    @given(mutations(len(valid), 512))
    def check(mutation):
        path = scratch("mutated-legacy-oracle.pth", mutate(valid, mutation))
        try:
            loaded = load_torch_file(path)
        except NpformerError:
            outcomes["refused"] += 1
            return
        if same(loaded, original):
            outcomes["identical"] += 1
            return
        differing.append(mutation)
        assert same(loaded, as_numpy(torch.load(path, weights_only=True)))
        outcomes["different, equal to torch.load"] += 1

    check()
    assert differing  # mutated values really were compared with torch's reading


# ---------------------------------------------------------------------------------------------
# configs in metadata: any JSON value in any field -> an NpformerError or a loadable model

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.parametrize("family", list(VALID))
def test_fuzz_metadata_config_values(family):
    from safetensors.numpy import save_file

    tensors, metadata = parse_safetensors(VALID[family])
    config = json.loads(metadata["config"])
    fields = sorted(config)
    outcomes = OUTCOMES[f"config-{family}"] = {"refused": 0, "loaded": 0}

    @FUZZ
    @given(st.sampled_from(fields), JSON_VALUES)
    def check(field, value):
        changed = dict(config, **{field: value})
        path = Path(_SCRATCH.name) / f"config-{family}.safetensors"
        save_file(dict(tensors), str(path), metadata=dict(metadata, config=json.dumps(changed)))
        try:
            model = npformer.from_pretrained(path)
        except NpformerError:
            outcomes["refused"] += 1
            return
        assert model.config.model_type == json.loads(metadata["config"])["model_type"]
        outcomes["loaded"] += 1

    check()
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes
