"""What an exercise is made of: the reference it is checked against, the inputs it is run on, and
the catalogue of known-wrong variants, each with the sentence that names the mistake.

The topic modules (`convolution`, `pointwise`, `attention`, `assemble`) declare their exercises with
these types; `catalog` lists them in course order; `checker.check` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# |yours − reference| ≤ atol + rtol·|reference|, per dtype of the case's inputs. float32 leaves room
# for a different but sound order of summation; float64 for the same at 1e-16.
DEFAULT_TOLERANCE = {"float32": (1e-5, 1e-5), "float64": (1e-10, 1e-10)}
MATCH_FACTOR = 10  # a catalogued mistake matches when yours is within 10× the tolerance of it on every case


@dataclass(frozen=True)
class Case:
    """One input to run the learner's function on: `args` in the reference's parameter order,
    `label` in plain words ("3×3 kernel, stride 2, padding 1, odd sides")."""

    label: str
    args: tuple


@dataclass(frozen=True)
class Mistake:
    """A known-wrong variant of an exercise.

    Attributes
    ----------
    key : str
        Its short name (`CheckResult.mistake`).
    diagnosis : str
        The sentence that names it.
    fn : callable
        Takes the reference's arguments and returns what a learner who made the mistake returns.
    """

    key: str
    diagnosis: str
    fn: Callable


@dataclass(frozen=True)
class Exercise:
    """One exercise: `check(name, fn)` runs `fn` and `reference` on every case of `cases()`.

    Attributes
    ----------
    name : str
        The exercise's name.
    signature : str
        The function to write, as the notebook shows it.
    summary : str
        What it computes, in words.
    reference : callable
        npformer's function.
    cases : callable
        Returns the list of `Case`s to run.
    mistakes : tuple of Mistake
        The catalogued wrong variants, each with the sentence that names it.
    outputs : tuple of str
        What the function returns: one name for a single array, several for a tuple.
    tolerance : dict
        Maps a dtype name to (atol, rtol): |yours − reference| ≤ atol + rtol·|reference|.
    vectorised : bool
        Also time the function on `timing_case()` and fail it when it is far slower than the
        reference (loops where NumPy should work).
    timing_case : callable or None
        The case timed for `vectorised`.
    report : callable or None
        (case, expected, got) -> lines appended to the verdict (e.g. logits side by side).
    """

    name: str
    signature: str
    summary: str
    reference: Callable
    cases: Callable[[], list]
    mistakes: tuple
    outputs: tuple = ("output",)
    tolerance: dict = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    vectorised: bool = False
    timing_case: Callable | None = None
    report: Callable | None = None

    def bounds(self, dtype) -> tuple[float, float]:
        """(atol, rtol) for outputs computed from inputs of `dtype`."""
        return self.tolerance.get(np.dtype(dtype).name, self.tolerance["float32"])


def random(rng: np.random.Generator, shape, dtype=np.float32, scale=1.0) -> np.ndarray:
    """Normal values of standard deviation `scale`, drawn in float64 and rounded to `dtype`."""
    return (rng.normal(0.0, scale, shape)).astype(dtype)


def positive(rng: np.random.Generator, shape, dtype=np.float32, low=0.5, high=2.0) -> np.ndarray:
    """Uniform values in [low, high): variances, scales."""
    return rng.uniform(low, high, shape).astype(dtype)
