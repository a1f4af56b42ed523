"""Golden-value fixtures: record every activation of a forward pass, and compare two recordings.

A port of EfficientFormer / SwiftFormer to another framework is checked layer by layer: npformer
writes a *trace fixture* (one safetensors file with the input and every named activation), the
port writes the same names from its own forward pass, and `compare_fixtures` says which tensor
is the first to leave the tolerance — the layer where the port goes wrong.

    >>> trace_to_fixture(model, pixel_values, "golden.safetensors")
    >>> result = compare_fixtures("port.safetensors", "golden.safetensors", atol=1e-4, rtol=1e-4)
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
`format="npformer-trace"`; the other keys, `names` included, are optional for it. A comparison
is a verdict on the port (A, the first file) against the golden fixture (B, the second):

* "first" is always in the golden fixture's forward order (its `names`); a golden fixture
  without `names` is still compared tensor by tensor, but no first diverging tensor is named
  (`first_failure` refuses), never one guessed from alphabetical order;
* tensors are matched by name; two files that share no activation (`input` alone, the pixels
  both were given, says nothing about the port) are refused (`InputError`);
* a NaN or ±inf on either side fails its tensor, reported with its count and first position;
  a shape mismatch fails it; a dtype mismatch is named (values are compared in float64);
* the golden tensors the port lacks are listed (`only_in_b`), as are the port's extras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import ConfigError, InputError, NpformerError, WeightFileError

FIXTURE_FORMAT = "npformer-trace"
FIXTURE_FORMAT_VERSION = 1
INPUT_NAME = "input"
# safetensors dtypes NumPy reads without help (BF16 and the F8 types need ml_dtypes)
NUMPY_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "F32", "F64"}


def trace_to_fixture(model, pixel_values, path, weights_name: str = "") -> dict:
    """Run the model with a full trace and write every activation to a trace fixture.

    The fixture is a safetensors file holding `input` (the pixels, in the model's dtype) and one
    tensor per trace name, in the model's dtype, with the metadata described in the module
    docstring (`format="npformer-trace"`, `names` in forward order, ...).

    Parameters
    ----------
    model : PreTrainedModel
        The model to run (float32 or float64, fused or not).
    pixel_values : array_like of shape [B, 3, H, W]
        The input.
    path : str or os.PathLike
        The file to write.
    weights_name : str, default ""
        Recorded in the metadata (`weights`): the weight file's path or name.

    Returns
    -------
    dict of str to str
        The metadata written.

    Raises
    ------
    InputError
        Pixel values the model cannot take.
    NpformerError
        A file that cannot be written.
    """
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
    """Read a trace fixture.

    Parameters
    ----------
    path : str or os.PathLike
        The safetensors file.
    require_metadata : bool, default True
        Refuse a file whose metadata `format` is not `"npformer-trace"`.

    Returns
    -------
    tensors : dict of str to ndarray
        Every tensor, by name.
    names : list of str
        `input` first when the file has it, then the metadata's `names` (the forward order),
        then any other tensors, sorted.
    metadata : dict of str to str
        The file's metadata.

    Raises
    ------
    WeightFileError
        A missing or unreadable file, not a trace fixture (with `require_metadata`), or a
        `names` entry that is malformed, lists a tensor the file lacks, or lists one twice.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {}
            for key in f.keys():
                # refused whether or not some import (ml_dtypes, with TensorFlow or JAX) has taught NumPy
                # bfloat16 or float8: a verdict must not depend on what else the process imported
                if (dtype := f.get_slice(key).get_dtype()) not in NUMPY_DTYPES:
                    raise WeightFileError(f"{path}: not a readable safetensors file for a comparison (tensor "
                                          f"{key!r} is {dtype}, which NumPy has no type of its own for: save the "
                                          "activations as float32 or float64)")
                tensors[key] = f.get_tensor(key)
    except WeightFileError:
        raise
    except Exception as err:  # safetensors raises its own SafetensorError, OSError, ...
        raise WeightFileError(f"{path}: not a readable safetensors file ({err})") from None
    if require_metadata and metadata.get("format") != FIXTURE_FORMAT:
        raise WeightFileError(
            f"{path}: not an npformer trace fixture (metadata format is {metadata.get('format')!r}, "
            f"expected {FIXTURE_FORMAT!r}; write one with `npformer trace`)"
        )
    listed = _listed_names(path, metadata, tensors)
    order = ([INPUT_NAME] if INPUT_NAME in tensors else []) + [n for n in listed if n != INPUT_NAME]
    order += sorted(set(tensors) - set(order))
    return tensors, order, metadata


def _listed_names(path: Path, metadata: dict, tensors: dict) -> list[str]:
    """The metadata's `names` (the forward order), checked: a JSON list of distinct names of tensors
    the file holds; [] when the file has no `names`."""
    if "names" not in metadata:
        return []
    try:
        listed = json.loads(metadata["names"])
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ValueError("not a list of strings")
    except (ValueError, RecursionError) as err:  # RecursionError: JSON nested too deep
        raise WeightFileError(f"{path}: metadata 'names' is not a JSON list of names ({err})") from None
    missing = [n for n in listed if n not in tensors]
    if missing:
        raise WeightFileError(f"{path}: metadata 'names' lists tensors the file does not hold: {missing[:5]}")
    twice = sorted({n for n in listed if listed.count(n) > 1}) if len(set(listed)) < len(listed) else []
    if twice:
        raise WeightFileError(f"{path}: metadata 'names' lists {len(twice)} names more than once, first {twice[0]!r}")
    return listed


@dataclass
class Row:
    """One compared tensor: A (the port) against B (the golden).

    Attributes
    ----------
    name : str
        The tensor's name.
    shape_a : tuple of int
        A's shape.
    shape_b : tuple of int
        B's shape.
    max_abs : float or None
        max |A − B| over the positions where both are finite; None when the shapes differ or
        no position is finite in both.
    max_rel : float or None
        max |A − B| / |B| over the same positions.
    ok : bool
        Whether |A − B| ≤ atol + rtol·|B| everywhere, the shapes are equal and neither side
        holds a NaN or ±inf.
    dtype_a : str
        A's dtype name.
    dtype_b : str
        B's dtype name.
    nonfinite : str or None
        Where a NaN or ±inf is, on either side ("A: 2 NaN, first at [0, 3, 1, 1]"); it fails
        the row whatever the tolerances.
    """

    name: str
    shape_a: tuple
    shape_b: tuple
    max_abs: float | None
    max_rel: float | None
    ok: bool
    dtype_a: str = ""
    dtype_b: str = ""
    nonfinite: str | None = None

    @property
    def shape_mismatch(self) -> bool:
        """Whether A's and B's shapes differ."""
        return self.shape_a != self.shape_b

    @property
    def dtype_mismatch(self) -> bool:
        """Whether A's and B's dtypes differ (values are compared in float64 either way)."""
        return self.dtype_a != self.dtype_b

    @property
    def note(self) -> str:
        """What besides the figures a reader must know: non-finite values, shapes, dtypes."""
        notes = [self.nonfinite] if self.nonfinite else []
        if self.shape_mismatch:
            notes.append(f"shape {_shape(self.shape_a)} vs {_shape(self.shape_b)}")
        if self.dtype_mismatch:
            notes.append(f"dtype {self.dtype_a} vs {self.dtype_b}")
        return "; ".join(notes)


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


@dataclass
class Comparison:
    """The verdict of `compare_fixtures`: A (the port) against B (the golden), tensor by tensor.

    Attributes
    ----------
    rows : list of Row
        One per tensor both files hold, in B's forward order, `input` first (sorted by name
        when B records no order).
    atol : float
        The absolute tolerance.
    rtol : float
        The relative tolerance, relative to B.
    only_in_a : list of str
        The port's tensors the golden lacks (not compared).
    only_in_b : list of str
        The golden tensors the port lacks (not compared).
    ordered : bool
        Whether B records its forward order (metadata `names`).
    golden : str
        What B is called in messages (its path).
    """

    rows: list[Row]  # in B's forward order, `input` first (sorted by name when B records no order)
    atol: float
    rtol: float
    only_in_a: list[str] = field(default_factory=list)  # the port's extra tensors (not compared)
    only_in_b: list[str] = field(default_factory=list)  # the golden tensors the port lacks (not compared)
    ordered: bool = True  # B records its forward order (metadata `names`)
    golden: str = "B"  # what B is called in messages (its path)

    @property
    def failures(self) -> list[Row]:
        """The rows beyond tolerance, in B's order."""
        return [row for row in self.rows if not row.ok]

    @property
    def first_failure(self) -> Row | None:
        """The first tensor beyond tolerance in the golden's forward order: where the port goes wrong.

        None when every tensor is within tolerance.

        Raises
        ------
        InputError
            Some tensors fail but the golden fixture records no forward order (no `names`
            metadata), so no first one can be named.
        """
        failures = self.failures
        if failures and not self.ordered:
            raise InputError(f"{self.golden}: has no metadata 'names' (the forward order), so no first diverging "
                             f"tensor can be named; {len(failures)} of {len(self.rows)} tensors are beyond tolerance "
                             f"(`failures` lists them); write the golden fixture with `npformer trace`")
        return failures[0] if failures else None

    @property
    def ok(self) -> bool:
        """Whether at least one tensor was compared and every one is within tolerance."""
        return bool(self.rows) and not self.failures


def nonfinite_text(label: str, x: np.ndarray) -> str | None:
    """"A: 2 NaN, 1 +inf, first at [0, 3, 1, 1]" for an array with non-finite values, else None."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    nan, pos = int(np.isnan(x).sum()), int(np.isposinf(x).sum())
    neg = int(bad.sum()) - nan - pos
    counts = ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (pos, "+inf"), (neg, "-inf")) if n)
    first = np.unravel_index(int(np.flatnonzero(bad)[0]), x.shape) if x.ndim else ()
    return f"{label}: {counts}, first at {_shape(first)}"


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> Row:
    """Compare one tensor of the port with the golden one.

    The test is np.allclose's with `b` the reference: |a − b| ≤ atol + rtol·|b| everywhere. A NaN
    or ±inf on either side fails the row (the maxima are then over the positions where both are
    finite); so do unequal shapes. Values are compared in float64.

    Parameters
    ----------
    name : str
        The tensor's name.
    a : ndarray
        The port's tensor.
    b : ndarray
        The golden tensor.
    atol : float
        Absolute tolerance.
    rtol : float
        Relative tolerance, relative to |b|.

    Returns
    -------
    Row
        max |a − b|, max |a − b| / max(|b|, tiny), and the verdict.
    """
    dtypes = (np.dtype(a.dtype).name, np.dtype(b.dtype).name)
    if a.shape != b.shape:
        return Row(name, tuple(a.shape), tuple(b.shape), None, None, False, *dtypes)
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    nonfinite = "; ".join(t for t in (nonfinite_text("A", a64), nonfinite_text("B", b64)) if t) or None
    finite = np.isfinite(a64) & np.isfinite(b64)
    diff = np.abs(a64[finite] - b64[finite])
    scale = np.abs(b64[finite])
    if diff.size == 0:
        return Row(name, a.shape, b.shape, None, None, nonfinite is None, *dtypes, nonfinite)
    with np.errstate(over="ignore"):
        rel = diff / np.maximum(scale, np.finfo(np.float64).tiny)
        within = bool(np.all(diff <= atol + rtol * scale))
    return Row(name, tuple(a.shape), tuple(b.shape), float(diff.max()), float(rel.max()), within and nonfinite is None,
               *dtypes, nonfinite)


def check_tolerances(atol, rtol) -> None:
    """atol and rtol must be finite numbers ≥ 0 (a NaN or negative one fails every tensor)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not np.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def _names_text(names: list[str]) -> str:
    """"3 (stem, stem.conv1, logits)": how many activations a file holds, the first few named."""
    names = [n for n in names if n != INPUT_NAME]
    shown = ", ".join(names[:4]) + (f", ... (+{len(names) - 4} more)" if len(names) > 4 else "")
    return f"{len(names)}" + (f" ({shown})" if names else "")


def compare_fixtures(a_path, b_path, atol: float = 1e-4, rtol: float = 1e-4) -> Comparison:
    """Compare a port's trace fixture with the golden one, tensor by tensor.

    Tensors are matched by name and compared in B's forward order, `input` first; relative
    differences are relative to B. A port's own fixture needs only its tensors under npformer's
    names and the metadata `format="npformer-trace"`.

    Parameters
    ----------
    a_path : str or os.PathLike
        The port's fixture (A).
    b_path : str or os.PathLike
        The golden fixture (B), e.g. one `trace_to_fixture` or `npformer trace` wrote.
    atol : float, default 1e-4
        Absolute tolerance.
    rtol : float, default 1e-4
        Relative tolerance.

    Returns
    -------
    Comparison
        The rows, the tensors only one side has, and `first_failure`.

    Raises
    ------
    ConfigError
        A tolerance that is negative, NaN, infinite or not a number.
    WeightFileError
        A file that is missing, unreadable or not a trace fixture.
    InputError
        Two fixtures that share no activation besides `input`.
    """
    check_tolerances(atol, rtol)
    tensors_a, order_a, _ = read_fixture(a_path)
    tensors_b, order_b, meta_b = read_fixture(b_path)
    shared = [n for n in order_b if n in tensors_a]
    if not [n for n in shared if n != INPUT_NAME]:
        raise InputError(f"{a_path} and {b_path} share no activation"
                         + (" (only `input`, the pixels both were given)" if shared else "")
                         + f", so there is nothing to compare: A holds {_names_text(order_a)}, "
                         f"B holds {_names_text(order_b)}")
    ordered = "names" in meta_b
    rows = [compare_arrays(n, tensors_a[n], tensors_b[n], atol, rtol) for n in shared]
    return Comparison(
        rows=rows, atol=atol, rtol=rtol,
        only_in_a=[n for n in order_a if n not in tensors_b],
        only_in_b=[n for n in order_b if n not in tensors_a],
        ordered=ordered, golden=str(b_path),
    )
