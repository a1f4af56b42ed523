"""Agreement between two sets of predictions of the same images: npformer's records against a
port's file, another run, or the PyTorch reference of the same run (`evaluate --compare`,
`--reference`). Every difference is taken over finite values only where both sides are finite;
a NaN is never hidden by a max: records.py refuses non-finite values before they get here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .records import Prediction, Record, read_predictions


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
    if ours.logits is not None and theirs.logits is not None:
        if ours.logits.shape != theirs.logits.shape:  # the readers check K; this is a caller's mistake
            raise InputError(f"two predictions of one image with {ours.logits.size} and {theirs.logits.size} logits")
        dl = float(np.abs(ours.logits.astype(np.float64) - theirs.logits).max())
        return dl, float(np.abs(softmax64(ours.logits) - softmax64(theirs.logits)).max()), "every class"
    if ours.top5_prob is not None and theirs.top5_prob is not None:
        mine = dict(zip(ours.top5, ours.top5_prob.tolist()))
        shared = [abs(mine[c] - p) for c, p in zip(theirs.top5, theirs.top5_prob.tolist()) if c in mine]
        return None, (_worst(shared) if shared else None), "the classes both top-5 lists name"
    return None, None, ""


def _worst(values) -> float | None:
    """The largest of `values` (None ignored), NaN if any is NaN: Python's max() would hide a NaN."""
    values = [v for v in values if v is not None]
    return float(np.max(values)) if values else None


def _probability(pred: Prediction) -> float | None:
    return None if pred.top5_prob is None else float(pred.top5_prob[0])


def agreement(pairs, other: str, only_ours: int = 0, only_theirs: int = 0, listed: int = 5) -> Agreement:
    """Aggregate (path, ours, theirs, (max |Δ logit|, max |Δ prob|, scope) or None) pairs, in dataset order."""
    agree, logit_diffs, prob_diffs, scopes, first = 0, [], [], set(), []
    n = 0
    for path, ours, theirs, diffs in pairs:
        n += 1
        if ours.top1 == theirs.top1:
            agree += 1
        elif len(first) < listed:
            first.append((path, ours.top1, _probability(ours), theirs.top1, _probability(theirs)))
        dl, dp, scope = diffs if diffs is not None else prediction_diffs(ours, theirs)
        logit_diffs.append(dl)
        if dp is not None:
            prob_diffs.append(dp)
            scopes.add(scope)
    scope = scopes.pop() if len(scopes) == 1 else ("mixed: every class where both have logits" if scopes else "")
    return Agreement(other, n, agree, _worst(logit_diffs), _worst(prob_diffs), scope, first, only_ours, only_theirs)




def compare_with(records: list[Record], theirs: dict[str, Prediction], other: str) -> Agreement:
    """Agreement of this run's records with another run's (or a port's) predictions, by path."""
    ours = {r.path: r.prediction for r in records if r.prediction is not None}
    pairs = ((p, ours[p], theirs[p], None) for p in ours if p in theirs)
    common = sum(p in theirs for p in ours)
    return agreement(pairs, other, only_ours=len(ours) - common, only_theirs=len(theirs) - common)


def compare_with_file(records: list[Record], path, dtype=np.float64, num_labels: int | None = None) -> Agreement:
    """Agreement of this run's records with the predictions a file holds (`read_predictions`)."""
    return compare_with(records, read_predictions(path, dtype, num_labels), str(path))


def reference_agreement(records: list[Record], other: str) -> Agreement:
    """Agreement of this run's records with the reference run beside them (`--reference`)."""
    pairs = ((r.path, r.prediction, r.reference, (*r.diffs, "every class")) for r in records if r.reference is not None)
    return agreement(pairs, other)
