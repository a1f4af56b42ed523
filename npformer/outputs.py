"""Model outputs with transformers' field names.

Fields are read as attributes (`out.logits`), as keys (`out["logits"]`) or by position
(`out[0]`, counting only the fields that are set, as transformers' ModelOutput does).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


class ModelOutput:
    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: np.ndarray = None  # EfficientFormer: [B, N, C] after the final LayerNorm
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class ImageClassifierOutput(ModelOutput):
    loss: np.ndarray | None = None
    logits: np.ndarray = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class EfficientFormerForImageClassificationWithTeacherOutput(ModelOutput):
    logits: np.ndarray = None  # (cls_logits + distillation_logits) / 2
    cls_logits: np.ndarray = None
    distillation_logits: np.ndarray = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class BaseModelOutputWithNoAttention(ModelOutput):
    last_hidden_state: np.ndarray = None  # SwiftFormer: [B, C, H, W], the last stage's output
    hidden_states: tuple | None = None


@dataclass
class ImageClassifierOutputWithNoAttention(ModelOutput):
    loss: np.ndarray | None = None
    logits: np.ndarray = None
    hidden_states: tuple | None = None
