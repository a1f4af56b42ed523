"""Verify a checkpoint or a port on a whole dataset: `npformer evaluate` and its API.

    >>> from npformer.evaluation import evaluate, report_lines, summary
    >>> result = evaluate("tests/fixtures/digits/heldout", "weights/efficientformer-digits.safetensors",
    ...                   output="results.jsonl")
    >>> result.top1_correct, len(result.scored)
    (357, 360)

Modules, in the order a run uses them:

* `datasets`: DATA -> an ordered list of (image path, label): class folders, a CSV/TSV of
  `path,label`, the ImageNet validation folder with Kaggle's LOC_val_solution.csv.
* `run`: `evaluate`: batches fixed by position, records written in dataset order, resume, the
  PyTorch reference in the same run.
* `batch`: the model a run computes with and the records of one batch, the same code on every
  path; what a worker needs to load the model by itself.
* `backends`: where the batches run: threads, worker processes (the default), a Dask cluster.
* `shards`: part I of N of a run on each of N machines, and the merge into one run's file.
* `records`: the JSONL records (header, one line per image), reading them back, and the
  agreement of two sets of predictions (`--compare`, `--reference`).
* `report`: the text report and its last, machine-readable line.
"""

from .datasets import Dataset, Item, read_dataset
from .agreement import Agreement
from .records import Prediction, Record, read_predictions, read_results
from .report import report_lines, summary, summary_line
from .run import EvaluationInterrupted, EvaluationResult, default_workers, evaluate
from .shards import merge_shards

__all__ = ["evaluate", "EvaluationResult", "EvaluationInterrupted", "default_workers", "merge_shards", "Dataset",
           "Item", "read_dataset", "Record", "Prediction", "Agreement", "read_results", "read_predictions",
           "report_lines", "summary", "summary_line"]
