"""The losses transformers' image classifiers compute when `labels` are given.

The problem type is decided as transformers decides it (and, as there, written back into the
config on first use): one label → regression (MSE); integer labels → single-label
classification (cross-entropy); otherwise multi-label classification (BCE with logits).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def problem_type_for(config, labels: np.ndarray) -> str:
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif config.num_labels > 1 and labels.dtype.kind in "iu":
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    return config.problem_type


def mse_loss(pred, target):
    return np.mean((pred - target) ** 2)


IGNORE_INDEX = -100  # torch's CrossEntropyLoss default: such labels do not count


def cross_entropy(logits, labels):  # [M, K], [M] int -> scalar
    keep = labels != IGNORE_INDEX
    logits, labels = logits[keep], labels[keep]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(labels)), labels])


def bce_with_logits(logits, targets):
    # log(1 + e^-|x|) + max(x, 0) − x·t : the stable form torch uses
    return np.mean(np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits))))


def classification_loss(logits: np.ndarray, labels, config) -> np.ndarray:
    """Loss of `logits` [B, num_labels] against `labels`, as transformers computes it."""
    labels = np.asarray(labels)
    kind = problem_type_for(config, labels)
    if kind == "regression":
        target = labels.astype(logits.dtype)
        if config.num_labels == 1:
            return mse_loss(logits.squeeze(), target.squeeze())
        return mse_loss(logits, target)
    if kind == "single_label_classification":
        flat = labels.reshape(-1)
        counted = flat[flat != IGNORE_INDEX]
        if flat.dtype.kind not in "iu" or counted.size and (counted.min() < 0 or counted.max() >= config.num_labels):
            raise InputError(f"labels must be integers in [0, {config.num_labels}), got {labels!r}")
        return cross_entropy(logits.reshape(-1, config.num_labels), flat)
    return bce_with_logits(logits, labels.astype(logits.dtype))
