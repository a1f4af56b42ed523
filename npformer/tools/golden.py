"""Golden-value fixtures: record every activation of a forward pass, and compare two recordings.

A port of EfficientFormer / SwiftFormer to another framework is checked layer by layer: npformer
writes a *trace fixture* (one safetensors file with the input and every named activation), the
port writes the same names from its own forward pass, and `compare_fixtures` says which tensor
is the first to leave the tolerance — the layer where the port goes wrong.

    >>> trace_to_fixture(model, pixel_values, "golden.safetensors")
    >>> result = compare_fixtures("golden.safetensors", "port.safetensors", atol=1e-4, rtol=1e-4)
    >>> result.first_failure.name
    'stages.0.blocks.0.mlp.fc2'

A trace fixture is a safetensors file whose tensors are `input` (the pixel values the model saw,
in its compute dtype) and one tensor per trace name (`stem.conv1`, `stages.0.blocks.0.mlp`, ...,
`logits`), in the model's dtype, and whose metadata (strings) is:

    format            "npformer-trace"
    format_version    "1"
    names             the trace names in forward order (JSON list; safetensors keeps no order)
    model_class       e.g. "EfficientFormerForImageClassificationWithTeacher"
    family            the model's family (npformer.models.registry: "efficientformer", ...)
    config            the model config (JSON)
    weights           the weight file's path or name ("" if not given)
    dtype             "float32" or "float64"
    npformer_version

A port's own fixture needs only the tensors under the same names and metadata
`format="npformer-trace"`; the other keys, `names` included, are optional for the second file
of a comparison (the order is always taken from the first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import NpformerError, WeightFileError

FIXTURE_FORMAT = "npformer-trace"
FIXTURE_FORMAT_VERSION = 1
INPUT_NAME = "input"


def trace_to_fixture(model, pixel_values, path, weights_name: str = "") -> dict:
    """Run `model(pixel_values)` with a full trace and write a trace fixture to `path`.

    Returns the metadata written. Tensors keep the model's dtype (float32 or float64)."""
    from safetensors.numpy import save_file

    from ..trace import Trace

    trace = Trace()
    pixels = np.asarray(pixel_values)
    model(pixels, trace=trace)
    dtype = np.dtype(model.dtype)
    names = list(trace.records)
    if INPUT_NAME in names:  # cannot happen with npformer's names; guard the fixture's layout anyway
        raise ValueError(f"a trace name collides with the fixture's input tensor name {INPUT_NAME!r}")
    tensors = {INPUT_NAME: np.ascontiguousarray(pixels, dtype=dtype)}
    for name in names:
        tensors[name] = np.ascontiguousarray(trace.records[name])
    metadata = {
        "format": FIXTURE_FORMAT,
        "format_version": str(FIXTURE_FORMAT_VERSION),
        "names": json.dumps(names),
        "model_class": type(model).__name__,
        "family": str(getattr(model, "family", "")),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "weights": str(weights_name),
        "dtype": dtype.name,
        "npformer_version": __version__,
    }
    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as err:  # OSError, safetensors' own errors
        raise NpformerError(f"{path}: cannot write the trace fixture ({err})") from None
    return metadata


def read_fixture(path, require_metadata: bool = True) -> tuple[dict, list[str], dict]:
    """(tensors, names in order, metadata) of a trace fixture.

    `names` starts with `input` when the file has it, then the metadata's `names` order; tensors
    the metadata does not list (or every tensor, for a file without `names`) follow sorted.
    With `require_metadata`, a file that is not an npformer trace fixture is refused."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError, OSError, ...
        raise WeightFileError(f"{path}: not a readable safetensors file ({err})") from None
    if require_metadata and metadata.get("format") != FIXTURE_FORMAT:
        raise WeightFileError(
            f"{path}: not an npformer trace fixture (metadata format is {metadata.get('format')!r}, "
            f"expected {FIXTURE_FORMAT!r}; write one with `npformer trace`)"
        )
    listed: list[str] = []
    if "names" in metadata:
        try:
            listed = json.loads(metadata["names"])
            if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
                raise ValueError("not a list of strings")
        except ValueError as err:
            raise WeightFileError(f"{path}: metadata 'names' is not a JSON list of names ({err})") from None
        missing = [n for n in listed if n not in tensors]
        if missing:
            raise WeightFileError(f"{path}: metadata 'names' lists tensors the file does not hold: {missing[:5]}")
    order = ([INPUT_NAME] if INPUT_NAME in tensors else []) + [n for n in listed if n != INPUT_NAME]
    order += sorted(set(tensors) - set(order))
    return tensors, order, metadata


@dataclass
class Row:
    """One compared tensor. `max_abs` / `max_rel` are None when the shapes differ."""

    name: str
    shape_a: tuple
    shape_b: tuple
    max_abs: float | None
    max_rel: float | None
    ok: bool

    @property
    def shape_mismatch(self) -> bool:
        return self.shape_a != self.shape_b


@dataclass
class Comparison:
    rows: list[Row]
    atol: float
    rtol: float
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> Row | None:
        return next((row for row in self.rows if not row.ok), None)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and self.first_failure is None


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> Row:
    """Row for one tensor: max |a−b|, max |a−b| / max(|b|, tiny) and whether |a−b| ≤ atol + rtol·|b|
    everywhere (np.allclose's test, with b the reference; NaN anywhere fails)."""
    if a.shape != b.shape:
        return Row(name, tuple(a.shape), tuple(b.shape), None, None, False)
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if a64.size == 0:
        return Row(name, a.shape, b.shape, 0.0, 0.0, True)
    diff = np.abs(a64 - b64)
    scale = np.abs(b64)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = diff / np.maximum(scale, np.finfo(np.float64).tiny)
        ok = bool(np.all(diff <= atol + rtol * scale))  # NaN compares False: a failure
    return Row(name, tuple(a.shape), tuple(b.shape), float(np.max(diff)), float(np.max(rel)), ok)


def compare_fixtures(a_path, b_path, atol: float = 1e-4, rtol: float = 1e-4) -> Comparison:
    """Compare fixture A (e.g. a port's) with fixture B (the reference, e.g. npformer's), tensor by
    tensor in A's forward order (`input` first), over the names both hold; relative differences
    are relative to B. Both must be trace fixtures (metadata format "npformer-trace")."""
    tensors_a, order_a, _ = read_fixture(a_path)
    tensors_b, order_b, _ = read_fixture(b_path)
    rows = [compare_arrays(n, tensors_a[n], tensors_b[n], atol, rtol) for n in order_a if n in tensors_b]
    return Comparison(
        rows=rows, atol=atol, rtol=rtol,
        only_in_a=[n for n in order_a if n not in tensors_b],
        only_in_b=[n for n in order_b if n not in tensors_a],
    )
