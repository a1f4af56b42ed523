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
is byte-identical for any worker count, interrupted and resumed or not.

A file from elsewhere (a port's exported predictions) needs only `path` and `logits` or `top5`
(class indices, best first; `top5_prob` optional) on each line; lines without `path` are skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, NpformerError

FORMAT = "npformer-evaluate"
FORMAT_VERSION = 1
TOP_K = 5


@dataclass
class Prediction:
    """What a model said about one image: its top-5 classes (best first) with their
    probabilities, and every logit when kept."""

    top5: tuple[int, ...]
    top5_prob: np.ndarray | None = None  # [5] in the model's dtype
    logits: np.ndarray | None = None  # [num_labels] in the model's dtype

    @property
    def top1(self) -> int:
        return self.top5[0]

    def to_json(self) -> dict:
        out = {"top5": list(self.top5)}
        if self.top5_prob is not None:
            out["top5_prob"] = self.top5_prob.tolist()  # float32 -> the exactly equal Python float
        if self.logits is not None:
            out["logits"] = self.logits.tolist()
        return out

    @classmethod
    def from_json(cls, obj: dict, dtype, where: str) -> "Prediction":
        if "top5" not in obj and "logits" not in obj:
            raise InputError(f"{where}: a record needs `top5` or `logits`")
        try:
            logits = np.asarray(obj["logits"], dtype=dtype) if "logits" in obj else None
            if "top5" in obj:
                top5 = tuple(int(c) for c in obj["top5"])
            else:
                top5 = tuple(int(c) for c in np.argsort(-logits.astype(np.float64), kind="stable")[:TOP_K])
            prob = np.asarray(obj["top5_prob"], dtype=dtype) if "top5_prob" in obj else None
        except (TypeError, ValueError) as err:
            raise InputError(f"{where}: top5 / top5_prob / logits are not numbers ({err})") from None
        if not top5 or (logits is not None and logits.ndim != 1):
            raise InputError(f"{where}: top5 must name at least one class and logits must be one flat list")
        return cls(top5, prob, logits)


@dataclass
class Record:
    """One image's line: where it is, its label, and the prediction (or why there is none)."""

    index: int
    path: str
    label: int | None
    prediction: Prediction | None = None
    error: str | None = None  # the image could not be decoded
    reference: Prediction | None = None  # the PyTorch reference on the same pixels (--reference)
    diffs: tuple[float, float] | None = None  # (max |Δ logit|, max |Δ probability|) against the reference

    def to_json(self) -> str:
        out = {"index": self.index, "path": self.path, "label": self.label}
        if self.error is not None:
            out["error"] = self.error
        else:
            out.update(self.prediction.to_json())
        if self.reference is not None:
            out["reference"] = {**self.reference.to_json(), "max_abs_logit_diff": self.diffs[0],
                                "max_abs_prob_diff": self.diffs[1]}
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, obj: dict, dtype, where: str) -> "Record":
        try:
            index, path, label = int(obj["index"]), str(obj["path"]), obj["label"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: not an npformer evaluate record (needs index, path, label)") from None
        if "error" in obj:
            return cls(index, path, label, error=str(obj["error"]))
        reference = diffs = None
        if "reference" in obj:
            ref = obj["reference"]
            reference = Prediction.from_json(ref, dtype, where)
            diffs = (float(ref["max_abs_logit_diff"]), float(ref["max_abs_prob_diff"]))
        return cls(index, path, label, Prediction.from_json(obj, dtype, where), reference=reference, diffs=diffs)


def make_header(**fields) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **fields}


def _json_lines(path: Path):
    """(line number, parsed JSON, end offset, "file: line N") of every complete line of a file; a
    torn last line (no newline) is left out, a line that is not JSON refused."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return
            offset += len(raw)
            where = f"{path}: line {number}"
            try:
                obj = json.loads(raw)
            except ValueError:
                raise InputError(f"{where}: not JSON") from None
            yield number, obj, offset, where


def read_results(path, dtype=np.float32) -> tuple[dict | None, list[Record], list[int]]:
    """(header, records, the byte offset after each record's line) of an npformer evaluate file.
    A torn last line (an interrupted write) is ignored; anything else malformed is refused."""
    path = Path(path)
    header, records, ends = None, [], []
    for number, obj, end, where in _json_lines(path):
        if number == 1:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise InputError(f"{path}: not an npformer evaluate results file (its first line has no "
                                 f"\"format\": \"{FORMAT}\")")
            header, ends = obj, [end]
            continue
        records.append(Record.from_json(obj, dtype, where))
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
        data = memoryview("".join(r.to_json() + "\n" for r in records).encode("utf-8", "surrogateescape"))
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


# ---------------------------------------------------------------------------------------------
# agreement between two sets of predictions


@dataclass
class Agreement:
    """How far two sets of predictions of the same images are apart."""

    other: str  # what we compared with: a results file or "timm 1.0.31 (torch 2.13.0)"
    images: int  # images both predicted
    top1_agree: int
    max_abs_logit: float | None  # over every class, when both have logits
    max_abs_prob: float | None  # over every class with logits, else over the classes both top-5s name
    prob_scope: str
    first_disagreements: list = field(default_factory=list)  # (path, ours top-1, ours p, theirs top-1, theirs p)
    only_ours: int = 0
    only_theirs: int = 0

    def to_json(self) -> dict:
        return {"with": self.other, "images": self.images, "top1_agree": self.top1_agree,
                "top1_agreement": self.top1_agree / self.images if self.images else None,
                "max_abs_logit_diff": self.max_abs_logit, "max_abs_prob_diff": self.max_abs_prob,
                "only_ours": self.only_ours, "only_theirs": self.only_theirs}


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Probabilities of one logit vector, in float64 (so the difference of two is not float32 noise)."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def prediction_diffs(ours: Prediction, theirs: Prediction) -> tuple[float | None, float | None, str]:
    """(max |Δ logit|, max |Δ probability|, over which classes) of two predictions of one image."""
    if ours.logits is not None and theirs.logits is not None and ours.logits.shape == theirs.logits.shape:
        dl = float(np.abs(ours.logits.astype(np.float64) - theirs.logits).max())
        return dl, float(np.abs(softmax64(ours.logits) - softmax64(theirs.logits)).max()), "every class"
    if ours.top5_prob is not None and theirs.top5_prob is not None:
        mine = dict(zip(ours.top5, ours.top5_prob.tolist()))
        shared = [abs(mine[c] - p) for c, p in zip(theirs.top5, theirs.top5_prob.tolist()) if c in mine]
        return None, (max(shared) if shared else None), "the classes both top-5 lists name"
    return None, None, ""


def _probability(pred: Prediction) -> float | None:
    return None if pred.top5_prob is None else float(pred.top5_prob[0])


def agreement(pairs, other: str, only_ours: int = 0, only_theirs: int = 0, shown: int = 5) -> Agreement:
    """Aggregate (path, ours, theirs, (max |Δ logit|, max |Δ prob|, scope) or None) pairs, in dataset order."""
    agree, max_logit, max_prob, scopes, first = 0, None, None, set(), []
    n = 0
    for path, ours, theirs, diffs in pairs:
        n += 1
        if ours.top1 == theirs.top1:
            agree += 1
        elif len(first) < shown:
            first.append((path, ours.top1, _probability(ours), theirs.top1, _probability(theirs)))
        dl, dp, scope = diffs if diffs is not None else prediction_diffs(ours, theirs)
        if dl is not None:
            max_logit = dl if max_logit is None else max(max_logit, dl)
        if dp is not None:
            max_prob = dp if max_prob is None else max(max_prob, dp)
            scopes.add(scope)
    scope = scopes.pop() if len(scopes) == 1 else ("mixed: every class where both have logits" if scopes else "")
    return Agreement(other, n, agree, max_logit, max_prob, scope, first, only_ours, only_theirs)


def read_predictions(path, dtype=np.float64) -> dict[str, Prediction]:
    """{path: prediction} of an npformer evaluate file or a port's exported predictions (JSONL with
    `path` and `logits` or `top5` per line; other lines skipped), read in float64 (no rounding of a
    port's values)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file to compare with")
    out = {}
    for number, obj, _, where in _json_lines(path):
        if not isinstance(obj, dict) or "path" not in obj or "error" in obj:
            continue
        if obj["path"] in out:
            raise InputError(f"{where}: {obj['path']!r} appears twice")
        out[str(obj["path"])] = Prediction.from_json(obj, dtype, where)
    if not out:
        raise InputError(f"{path}: holds no predictions (lines with `path` and `logits` or `top5`)")
    return out


def compare_with_file(records: list[Record], path, dtype=np.float64) -> Agreement:
    """Agreement of this run's records with another run's (or a port's) predictions, by path."""
    theirs = read_predictions(path, dtype)
    ours = {r.path: r.prediction for r in records if r.prediction is not None}
    pairs = ((p, ours[p], theirs[p], None) for p in ours if p in theirs)
    common = sum(p in theirs for p in ours)
    return agreement(pairs, str(path), only_ours=len(ours) - common, only_theirs=len(theirs) - common)


def reference_agreement(records: list[Record], other: str) -> Agreement:
    """Agreement of this run's records with the reference run beside them (`--reference`)."""
    pairs = ((r.path, r.prediction, r.reference, (*r.diffs, "every class")) for r in records if r.reference is not None)
    return agreement(pairs, other)
