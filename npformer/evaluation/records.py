"""The per-image records of an evaluation: one JSON object per line (JSONL), written as batches
complete, read back to resume a run or to compare two runs.

    {"format": "npformer-evaluate", "format_version": 1, "weights": ..., "data": ..., ...}   the header
    {"index": 0, "path": "0/1000.png", "label": 0, "top5": [0, 6, 8, 2, 5], "top5_prob": [0.93, ...]}
    {"index": 7, "path": "3/bad.png", "label": 3, "error": "...: cannot decode image ..."}

`top5_prob` (and `logits`, on request: every class) are the model's values exactly as computed in
its dtype (float32 by default), widened exactly to double in the JSON text: `np.float32(value)`
gives the computed bits back. With a PyTorch reference in the same run a record also holds
`"reference": {"top5": ..., "top5_prob": ..., "max_abs_logit_diff": ..., "max_abs_prob_diff": ...}`.

The header names everything the records depend on (the model: the sha256 of its config and
tensors; the dataset: the sha256 of its item list; batch size, dtype, preprocessing, reference,
limit); a resumed run must find it unchanged. It has no time stamp or worker count: a run's file
is byte-identical for any worker count or backend, interrupted and resumed or not. A part of a
sharded run (`--shard I/N`) adds `"shard": [I, N]` last; its records are those of its images
(`shard_images`: a contiguous run of whole batches), indexed as in the whole run.

A file name that is not UTF-8 (a POSIX name of arbitrary bytes) is stored reversibly: `path`
holds it for reading, each undecodable byte as `\\xNN`, and `path_bytes` the name's bytes in hex
(`"path":"3/caf\\xe9.png","path_bytes":"332f636166e92e706e67"`); a record of a UTF-8 name has
no `path_bytes`. A reader takes the name from `path_bytes` when it is there (in Python,
`bytes.fromhex(h).decode("utf-8", "surrogateescape")`, the name as `os.listdir` gives it).

Records are a schema, checked field by field when a file is read back (`--resume`, `--compare`);
a line that breaks it is refused with the file, the line and the field:

    index       an integer ≥ 0, its record's position in the file (npformer's files)
    path        a non-empty string, each path once; `path_bytes` (optional) hex, matching `path`
    label       null or a class index 0 … K − 1 (K: the model's class count)
    error       a string; an error record has no prediction fields
    top5        1 to min(5, K) distinct class indices 0 … K − 1, best first (npformer writes
                exactly min(5, K)); a JSON string such as "01234" is not a list
    top5_prob   as many finite probabilities in [0, 1] as `top5`
    logits      exactly K finite numbers; with `top5` too, `top5` must be their best-first order
    reference   (npformer's files) top5 / top5_prob / logits as above, and max_abs_logit_diff
                and max_abs_prob_diff, finite numbers ≥ 0

NaN and ±inf (which Python's JSON reader accepts) are refused wherever a number is due, with
their position. An npformer file's records may hold no other field.

A file from elsewhere (a port's exported predictions) needs only `path` and `logits` or `top5`
(`top5_prob` optional) on each line; other fields are ignored, as are lines holding neither a
`path` nor a prediction (e.g. the port's own header) and blank lines.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, NpformerError

FORMAT = "npformer-evaluate"
FORMAT_VERSION = 1
TOP_K = 5


# ---------------------------------------------------------------------------------------------
# the schema: each field of a line, checked


def shown(text: str) -> str:
    """`text` as valid UTF-8, for a record's message or a report: the bytes of a file name that
    are not UTF-8 (surrogate-escaped, as os.listdir gives them) as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (a Windows name)
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def path_fields(path: str) -> dict:
    """{"path": ...} of a record, with "path_bytes" (hex) when the name is not UTF-8."""
    readable = shown(path)
    if readable == path:
        return {"path": path}
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (a Windows name)
        raw = path.encode("utf-8", "surrogatepass")
    return {"path": readable, "path_bytes": raw.hex()}


def _value(value) -> str:
    """A field's value as JSON writes it (NaN, Infinity), shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return shown(text if len(text) <= 40 else text[:37] + "...")


def _field_error(where: str, key: str, problem: str) -> InputError:
    return InputError(f"{where}: field {key!r} {problem}")


def read_path(obj: dict, where: str) -> str:
    """The image path of a line: `path`, or the name `path_bytes` holds."""
    path = obj.get("path")
    if type(path) is not str or not path:
        raise _field_error(where, "path", f"must be a non-empty string, got {_value(path)}")
    if "path_bytes" not in obj:
        return path
    raw = obj["path_bytes"]
    try:
        name = bytes.fromhex(raw).decode("utf-8", "surrogateescape")
    except (TypeError, ValueError):
        raise _field_error(where, "path_bytes", f"must be the name's bytes in hex, got {_value(raw)}") from None
    if shown(name) != path:
        raise _field_error(where, "path_bytes", f"holds the name {shown(name)!r}, not the `path` {path!r}")
    return name


def _integer(value, where: str, key: str, high: int | None) -> int:
    """An integer 0 … high − 1 (any ≥ 0 for high None); bools and floats such as 1.0 are refused."""
    if type(value) is not int:
        raise _field_error(where, key, f"must be an integer, got {_value(value)}")
    if value < 0 or (high is not None and value >= high):
        bound = f"a class index 0–{high - 1} (the model has {high} classes)" if high is not None else "≥ 0"
        raise _field_error(where, key, f"is {value}; expected {bound}")
    return value


def _numbers(value, where: str, key: str, dtype, length: int | None = None, what: str = "") -> np.ndarray:
    """A list of finite numbers as an array of `dtype` (finite there too), of `length` when given."""
    if type(value) is not list or not value:
        raise _field_error(where, key, f"must be a non-empty list of numbers, got {_value(value)}")
    if length is not None and len(value) != length:
        raise _field_error(where, key, f"has {len(value)} values; expected {length}{what}")
    if not set(map(type, value)) <= {int, float}:
        i = next(i for i, v in enumerate(value) if type(v) not in (int, float))
        raise _field_error(where, f"{key}[{i}]", f"is {_value(value[i])}, not a number")
    try:
        array = np.array(value, dtype=np.float64)
        with np.errstate(over="ignore"):
            array = array.astype(dtype)
    except OverflowError:  # an integer beyond float64
        array = np.full(len(value), np.inf)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        i = int(bad[0])
        raise _field_error(where, f"{key}[{i}]", f"is {_value(value[i])}: not a finite {np.dtype(dtype).name} "
                                                 f"({bad.size} of {len(value)} values are not)")
    return array


def _classes(value, where: str, key: str, num_labels: int | None, exact: bool) -> tuple[int, ...]:
    """1 to min(5, K) distinct class indices (exactly min(5, K) for `exact`)."""
    most = TOP_K if num_labels is None else min(TOP_K, num_labels)
    if type(value) is not list or not 1 <= len(value) <= most or (exact and len(value) != most):
        expected = f"{most}" if exact else f"1 to {most}"
        raise _field_error(where, key, f"must be a list of {expected} class indices, best first, got {_value(value)}")
    classes = tuple(_integer(c, where, f"{key}[{i}]", num_labels) for i, c in enumerate(value))
    if len(set(classes)) < len(classes):
        raise _field_error(where, key, f"names a class more than once: {list(classes)}")
    return classes


PREDICTION_FIELDS = ("top5", "top5_prob", "logits")
RECORD_FIELDS = ("index", "path", "path_bytes", "label", "error", *PREDICTION_FIELDS, "reference")
REFERENCE_FIELDS = (*PREDICTION_FIELDS, "max_abs_logit_diff", "max_abs_prob_diff")


@dataclass
class Prediction:
    """What a model said about one image.

    Attributes
    ----------
    top5 : tuple of int
        Its top-5 classes, best first.
    top5_prob : ndarray of shape [5], optional
        Their probabilities, in the model's dtype.
    logits : ndarray of shape [num_labels], optional
        Every logit, when kept.
    """

    top5: tuple[int, ...]
    top5_prob: np.ndarray | None = None  # [5] in the model's dtype
    logits: np.ndarray | None = None  # [num_labels] in the model's dtype

    @property
    def top1(self) -> int:
        """The best class."""
        return self.top5[0]

    def to_json(self) -> dict:
        out = {"top5": list(self.top5)}
        if self.top5_prob is not None:
            out["top5_prob"] = self.top5_prob.tolist()  # float32 -> the exactly equal Python float
        if self.logits is not None:
            out["logits"] = self.logits.tolist()
        return out

    @classmethod
    def from_json(cls, obj: dict, dtype, where: str, num_labels: int | None = None,
                  exact: bool = False) -> "Prediction":
        """The prediction of a line, its fields checked (see the module docstring); `num_labels`:
        the model's class count, which `logits` and the class indices must fit; `exact`: top5 has
        exactly min(5, K) classes, as npformer writes it."""
        if "top5" not in obj and "logits" not in obj:
            raise InputError(f"{where}: a prediction needs the field 'top5' or 'logits'")
        logits = None
        if "logits" in obj:
            what = " (the model's classes)" if num_labels is not None else ""
            logits = _numbers(obj["logits"], where, "logits", dtype, num_labels, what)
        if "top5" in obj:
            top5 = _classes(obj["top5"], where, "top5", num_labels if num_labels is not None else (
                None if logits is None else len(logits)), exact)
            if logits is not None:
                _check_order(top5, logits, where)
        else:
            top5 = tuple(int(c) for c in np.argsort(-logits.astype(np.float64), kind="stable")[:TOP_K])
        prob = None
        if "top5_prob" in obj:
            if "top5" not in obj:
                raise _field_error(where, "top5_prob", "needs the field 'top5' (the classes it gives probabilities of)")
            prob = _numbers(obj["top5_prob"], where, "top5_prob", dtype, len(top5), " (one per top5 class)")
            if prob.min() < 0 or prob.max() > 1:
                i = int(np.flatnonzero((prob < 0) | (prob > 1))[0])
                raise _field_error(where, f"top5_prob[{i}]", f"is {_value(obj['top5_prob'][i])}; a probability is in "
                                                             "[0, 1]")
        return cls(top5, prob, logits)


def _check_order(top5: tuple[int, ...], logits: np.ndarray, where: str) -> None:
    """`top5` must be the logits' classes best first (ties in any order)."""
    values = logits[list(top5)]
    rest = np.delete(logits, list(top5))
    if np.any(values[:-1] < values[1:]) or (rest.size and rest.max() > values[-1]):
        best = [int(c) for c in np.argsort(-logits.astype(np.float64), kind="stable")[:len(top5)]]
        raise _field_error(where, "top5", f"is {list(top5)}, but the line's logits rank the classes {best}")


@dataclass
class Record:
    """One image's line of a results file: where it is, its label, and the prediction.

    Attributes
    ----------
    index : int
        The image's position in the dataset.
    path : str
        Its path, relative to the dataset.
    label : int or None
        Its class index (None: unlabelled).
    prediction : Prediction or None
        What the model said (None for an error record).
    error : str or None
        Why the image could not be decoded.
    reference : Prediction or None
        The PyTorch reference's prediction on the same pixels (`reference=`).
    diffs : tuple of float or None
        (max |Δ logit|, max |Δ probability|) against the reference.
    """

    index: int
    path: str
    label: int | None
    prediction: Prediction | None = None
    error: str | None = None  # the image could not be decoded
    reference: Prediction | None = None  # the PyTorch reference on the same pixels (--reference)
    diffs: tuple[float, float] | None = None  # (max |Δ logit|, max |Δ probability|) against the reference

    def to_json(self) -> str:
        out = {"index": self.index, **path_fields(self.path), "label": self.label}
        if self.error is not None:
            out["error"] = shown(self.error)
        else:
            out.update(self.prediction.to_json())
        if self.reference is not None:
            out["reference"] = {**self.reference.to_json(), "max_abs_logit_diff": self.diffs[0],
                                "max_abs_prob_diff": self.diffs[1]}
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, obj, dtype, where: str, num_labels: int | None = None) -> "Record":
        """A record of an npformer results file, every field checked (see the module docstring)."""
        if not isinstance(obj, dict):
            raise InputError(f"{where}: not an npformer evaluate record (a JSON object), got {_value(obj)}")
        unknown = [k for k in obj if k not in RECORD_FIELDS]
        if unknown:
            raise _field_error(where, unknown[0], f"is not a field of an npformer evaluate record "
                                                  f"({', '.join(RECORD_FIELDS)})")
        for key in ("index", "path", "label"):
            if key not in obj:
                raise _field_error(where, key, "is missing (a record has index, path and label)")
        index = _integer(obj["index"], where, "index", None)
        path = read_path(obj, where)
        label = None if obj["label"] is None else _integer(obj["label"], where, "label", num_labels)
        if "error" in obj:
            if type(obj["error"]) is not str:
                raise _field_error(where, "error", f"must be a string, got {_value(obj['error'])}")
            extra = [k for k in (*PREDICTION_FIELDS, "reference") if k in obj]
            if extra:
                raise _field_error(where, extra[0], "is not allowed in an error record (the image had no prediction)")
            return cls(index, path, label, error=obj["error"])
        reference = diffs = None
        if "reference" in obj:
            reference, diffs = _reference(obj["reference"], dtype, where, num_labels)
        prediction = Prediction.from_json(obj, dtype, where, num_labels, exact=True)
        return cls(index, path, label, prediction, reference=reference, diffs=diffs)


def _reference(ref, dtype, where: str, num_labels: int | None) -> tuple[Prediction, tuple[float, float]]:
    where = f"{where}, reference"
    if not isinstance(ref, dict):
        raise InputError(f"{where}: must be a JSON object, got {_value(ref)}")
    unknown = [k for k in ref if k not in REFERENCE_FIELDS]
    if unknown:
        raise _field_error(where, unknown[0], f"is not a field of a reference ({', '.join(REFERENCE_FIELDS)})")
    diffs = []
    for key in REFERENCE_FIELDS[3:]:
        value = ref.get(key)
        if type(value) not in (int, float) or not np.isfinite(value) or value < 0:
            raise _field_error(where, key, f"must be a finite number >= 0, got {_value(value)}")
        diffs.append(float(value))
    return Prediction.from_json(ref, dtype, where, num_labels, exact=True), tuple(diffs)


def make_header(**fields) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **fields}


BLANK = object()  # what _json_lines gives for a blank line (JSON's null is None)


def _json_lines(path: Path, torn_last_line: bool):
    """(line number, parsed JSON or BLANK, end offset, "file: line N") of every
    line of a file. With `torn_last_line`, a last line without its newline (an interrupted write)
    is left out; without, it is read like the others. A line that is not JSON is refused."""
    offset = 0
    try:
        f = open(path, "rb")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n") and torn_last_line:
                return
            offset += len(raw)
            where = f"{path}: line {number}"
            if not raw.strip():
                yield number, BLANK, offset, where
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
                cut = "" if raw.endswith(b"\n") else ", the last line, cut short?"
                why = "nested too deep" if isinstance(err, RecursionError) else (
                    "not UTF-8" if isinstance(err, UnicodeDecodeError) else f"{err}")
                raise InputError(f"{where}: not JSON ({why}{cut})") from None
            yield number, obj, offset, where


def _check_header(obj, path: Path) -> dict:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"{path}: not an npformer evaluate results file (its first line has no "
                         f"\"format\": \"{FORMAT}\")")
    if obj.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: line 1: format_version {_value(obj.get('format_version'))}; this npformer "
                         f"reads format_version {FORMAT_VERSION}")
    if "shard" in obj:
        shard, images, batch_size = obj["shard"], obj.get("images"), obj.get("batch_size")
        if (type(shard) is not list or len(shard) != 2 or any(type(v) is not int for v in shard)
                or not 1 <= shard[0] <= shard[1]):
            raise _field_error(f"{path}: line 1", "shard", f"must be [I, N], part I of N (1 ≤ I ≤ N), got "
                                                           f"{_value(shard)}")
        if type(images) is not int or images < 0 or type(batch_size) is not int or batch_size < 1:
            raise InputError(f"{path}: line 1: a shard's header needs `images` (≥ 0) and `batch_size` (≥ 1), got "
                             f"{_value(images)} and {_value(batch_size)}")
    return obj


def shard_images(part: int, parts: int, images: int, batch_size: int) -> range:
    """The images part `part` of `parts` (1-based) holds: a contiguous run of whole batches (batch k
    is images k·B … k·B + B − 1), the batches shared out as evenly as whole numbers allow. Parts
    1 … N, one after the other, are every image once, in dataset order."""
    batches = -(-images // batch_size)
    first, end = (part - 1) * batches // parts, part * batches // parts
    return range(min(first * batch_size, images), min(end * batch_size, images))


def header_images(header: dict) -> range:
    """The images a results file's records are (its shard's, or all), from its checked header."""
    if "shard" in header:
        return shard_images(*header["shard"], header["images"], header["batch_size"])
    return range(header.get("images") if type(header.get("images")) is int else 0)


def read_results(path, dtype=np.float32, num_labels: int | None = None) -> tuple[dict | None, list[Record], list[int]]:
    """Read an `npformer evaluate` results file, every record checked against the schema.

    A torn last line (an interrupted write) is ignored; anything else malformed is refused.

    Parameters
    ----------
    path : str or os.PathLike
        The results file.
    dtype : numpy dtype, default np.float32
        The dtype the probabilities and logits are read back in (the run's).
    num_labels : int, optional
        The model's class count, which the class indices and logits must fit.

    Returns
    -------
    header : dict or None
        The header line (None for an empty file).
    records : list of Record
        The records, in order.
    ends : list of int
        The byte offset after the header and after each record's line.

    Raises
    ------
    InputError
        A line that breaks the schema, named with file, line and field.
    """
    path = Path(path)
    header, records, ends, seen = None, [], [], set()
    first = 0
    for number, obj, end, where in _json_lines(path, torn_last_line=True):
        if number == 1:
            header, ends = _check_header(obj, path), [end]
            first = header_images(header).start if "shard" in header else 0
            continue
        if obj is BLANK:
            raise InputError(f"{where}: a blank line in an npformer evaluate results file")
        record = Record.from_json(obj, dtype, where, num_labels)
        if record.index != first + len(records):
            origin = f"its shard's first image, {first}" if "shard" in header else "0"
            raise _field_error(where, "index", f"is {record.index}; expected {first + len(records)} (records are "
                                               f"written in dataset order from {origin})")
        if record.path in seen:
            raise _field_error(where, "path", f"{shown(record.path)!r} appears twice")
        seen.add(record.path)
        records.append(record)
        ends.append(end)
    return header, records, ends


# header fields a resumed run may change: the paths as typed (the sha256s say what they hold)
MAY_DIFFER = ("weights", "data")


def check_same_run(found: dict | None, expected: dict, path: Path) -> None:
    """Refuse to resume `path` unless its header equals this run's (paths aside, see MAY_DIFFER)."""
    if found is None:
        raise NpformerError(f"{path}: empty or not an npformer evaluate results file; cannot resume it "
                            "(pass --force to overwrite it)")
    differ = [k for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k) and k not in MAY_DIFFER]
    if differ:
        shown = "; ".join(f"{k}: file {found.get(k)!r}, this run {expected.get(k)!r}" for k in differ[:4])
        raise NpformerError(f"{path}: was written by a different run, cannot resume it ({shown}); use another "
                            f"--output, or --force to start it again")


class RecordWriter:
    """Appends batches of records to the results file, each batch whole or not at all: a write cut
    short (Ctrl-C, an error) is cut back off, and `abort` leaves the file at its last whole batch."""

    def __init__(self, path: Path, header: dict | None, keep_bytes: int | None = None):
        self.path = path
        if keep_bytes is None:  # a new file: the header first
            with open(path, "wb") as f:
                f.write((json.dumps(header, separators=(",", ":")) + "\n").encode())
        else:  # resuming: drop what follows the last whole batch (a torn line, a partial batch)
            os.truncate(path, keep_bytes)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.committed = os.fstat(self.fd).st_size

    def write(self, records: list[Record]) -> None:
        data = memoryview("".join(r.to_json() + "\n" for r in records).encode("utf-8"))  # to_json: valid UTF-8
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except BaseException:
            os.ftruncate(self.fd, self.committed)
            raise
        self.committed += len(data)

    def close(self) -> None:
        os.close(self.fd)

    def abort(self) -> None:
        os.ftruncate(self.fd, self.committed)
        os.close(self.fd)


def read_predictions(path, dtype=np.float64, num_labels: int | None = None) -> dict[str, Prediction]:
    """Read the predictions of an `npformer evaluate` results file or of a port's JSONL file.

    A port's file needs `path` and `logits` or `top5` (`top5_prob` optional) on each line; other
    fields, and lines with neither a path nor a prediction, are ignored.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    dtype : numpy dtype, default np.float64
        The dtype values are read in (float64: no rounding of a port's values).
    num_labels : int, optional
        The model's class count, which the class indices and logits must fit.

    Returns
    -------
    dict of str to Prediction
        The predictions by image path.

    Raises
    ------
    InputError
        A missing file, no predictions, a path twice, or a field that breaks the schema
        (file, line and field named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file to compare with" if not path.exists() else
                         f"{path}: not a file to compare with")
    out, ours = {}, False
    for number, obj, _, where in _json_lines(path, torn_last_line=False):
        if number == 1 and isinstance(obj, dict) and obj.get("format") == FORMAT:
            ours = _check_header(obj, path) is not None
            continue
        if ours:
            if obj is BLANK:
                raise InputError(f"{where}: a blank line in an npformer evaluate results file")
            record = Record.from_json(obj, dtype, where, num_labels)
            key, prediction = record.path, record.prediction
        else:
            key, prediction = _port_line(obj, dtype, where, num_labels)
        if prediction is None:
            continue
        if key in out:
            raise _field_error(where, "path", f"{shown(key)!r} appears twice")
        out[key] = prediction
    if not out:
        raise InputError(f"{path}: holds no predictions (lines with `path` and `logits` or `top5`)")
    return out


def _port_line(obj, dtype, where: str, num_labels: int | None) -> tuple[str | None, Prediction | None]:
    """(path, prediction) of a line of a port's file; (None, None) for a line with neither (a blank
    line, the port's own header) and for an error line."""
    if obj is BLANK:
        return None, None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a JSON object with `path` and `logits` or `top5`, got {_value(obj)}")
    has_prediction = any(k in obj for k in PREDICTION_FIELDS)
    if "path" not in obj:
        if has_prediction:
            raise _field_error(where, "path", "is missing: a prediction without the image it is of")
        return None, None
    path = read_path(obj, where)
    if "error" in obj and not has_prediction:
        return None, None
    return path, Prediction.from_json(obj, dtype, where, num_labels)
