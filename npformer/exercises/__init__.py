"""Course exercises with a checker that names the mistake.

    from npformer.exercises import check
    check("pool_mixer", my_pool_mixer)
    # pool_mixer: wrong (max abs error 1.1) — your border divides by the full window, k² (9 for 3×3):
    # that is count_include_pad=True. EfficientFormer averages only the real pixels under the window ...

`check(name, fn)` runs `fn` (which takes the same arguments as npformer's function `name`) on
random and edge-case inputs (odd sizes, borders, batch > 1, float32 and float64), compares it with
npformer's reference and returns a `CheckResult` (`passed`, `max_abs_error`, `diagnosis`), printing
a one-line verdict. A wrong output is matched against a catalogue of known-wrong variants, at least
two per exercise; `names()` lists the exercises, `exercise(name)` gives one with its mistakes.

The notebooks in `notebooks/exercises/` (nbgrader format) are built on this; `student` makes their
student versions. Needs only numpy (no matplotlib, no torch).
"""

from .assemble import block_weights
from .catalog import EXERCISES, exercise, names
from .checker import CheckResult, check

__all__ = ["CheckResult", "EXERCISES", "block_weights", "check", "exercise", "names"]
