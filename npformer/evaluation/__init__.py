"""Verify a checkpoint or a port on a whole dataset: `npformer evaluate` and its API.

    >>> from npformer.evaluation import evaluate, report_lines, summary
    >>> result = evaluate("tests/fixtures/digits/heldout", "weights/efficientformer-digits.safetensors",
    ...                   output="results.jsonl")
    >>> result.top1_correct, len(result.scored)
    (357, 360)

Modules, in the order a run uses them:

* `datasets`: DATA -> an ordered list of (image path, label): class folders, a CSV/TSV of
  `path,label`, the ImageNet validation folder with Kaggle's LOC_val_solution.csv.
* `run`: `evaluate`: batches fixed by position, worker threads with BLAS held at one thread,
  records written in dataset order, resume, the PyTorch reference in the same run.
* `records`: the JSONL records (header, one line per image), reading them back, and the
  agreement of two sets of predictions (`--compare`, `--reference`).
* `report`: the text report and its last, machine-readable line.
"""

from .datasets import Dataset, Item, read_dataset
from .records import Agreement, Prediction, Record, read_predictions, read_results
from .report import report_lines, summary, summary_line
from .run import EvaluationInterrupted, EvaluationResult, default_workers, evaluate

__all__ = ["evaluate", "EvaluationResult", "EvaluationInterrupted", "default_workers", "Dataset", "Item",
           "read_dataset", "Record", "Prediction", "Agreement", "read_results", "read_predictions", "report_lines",
           "summary", "summary_line"]
