"""Model outputs with transformers' field names.

Fields are read as attributes (`out.logits`), as keys (`out["logits"]`) or by position
(`out[0]`, counting only the fields that are set, as transformers' ModelOutput does).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


class ModelOutput:
    """What every output class shares: fields read as attributes, keys or positions.

    `out.logits`, `out["logits"]` and `out[0]` (counting only the fields that are set, as
    transformers' `ModelOutput` does) give the same array.
    """

    def to_tuple(self) -> tuple:
        """The fields that are set (not None), in order.

        Returns
        -------
        tuple
            Their values.
        """
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list:
        """The names of the fields that are set (not None), in order.

        Returns
        -------
        list of str
            Their names.
        """
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]


@dataclass
class BaseModelOutput(ModelOutput):
    """A backbone's output (`EfficientFormerModel`, `EfficientFormerV2Model`), as transformers'.

    Attributes
    ----------
    last_hidden_state : ndarray
        EfficientFormer: [B, N, C] tokens after the final LayerNorm; EfficientFormerV2:
        [B, C, H/32, W/32] after the final BatchNorm.
    hidden_states : tuple of ndarray or None
        With `output_hidden_states=True`: EfficientFormer's 8 (stem, downsamples, stages),
        EfficientFormerV2's 4 (stages).
    attentions : tuple of ndarray or None
        With `output_attentions=True`: each attention block's probabilities, [B, h, N, N].
    """

    last_hidden_state: np.ndarray = None  # EfficientFormer: [B, N, C] after the final LayerNorm
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class ImageClassifierOutput(ModelOutput):
    """A one-head classifier's output (`...ForImageClassification`), as transformers'.

    Attributes
    ----------
    loss : numpy.floating or None
        The loss, a NumPy scalar, when `labels` were given.
    logits : ndarray of shape [B, num_labels]
        The class head's logits.
    hidden_states : tuple of ndarray or None
        With `output_hidden_states=True`, as in `BaseModelOutput`.
    attentions : tuple of ndarray or None
        With `output_attentions=True`, as in `BaseModelOutput`.
    """

    loss: np.ndarray | None = None
    logits: np.ndarray = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class EfficientFormerForImageClassificationWithTeacherOutput(ModelOutput):
    """A two-head classifier's output (EfficientFormer's and EfficientFormerV2's `...WithTeacher`).

    Attributes
    ----------
    logits : ndarray of shape [B, num_labels]
        (`cls_logits` + `distillation_logits`) / 2.
    cls_logits : ndarray of shape [B, num_labels]
        The class head's (`head`) logits.
    distillation_logits : ndarray of shape [B, num_labels]
        The distillation head's (`head_dist`) logits.
    hidden_states : tuple of ndarray or None
        With `output_hidden_states=True`, as in `BaseModelOutput`.
    attentions : tuple of ndarray or None
        With `output_attentions=True`, as in `BaseModelOutput`.
    """

    logits: np.ndarray = None  # (cls_logits + distillation_logits) / 2
    cls_logits: np.ndarray = None
    distillation_logits: np.ndarray = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class BaseModelOutputWithNoAttention(ModelOutput):
    """SwiftFormer's backbone output (`SwiftFormerModel`), as transformers'.

    Attributes
    ----------
    last_hidden_state : ndarray of shape [B, C, H/32, W/32]
        The last stage's output (no final norm).
    hidden_states : tuple of ndarray or None
        With `output_hidden_states=True`: 8 maps (stem, downsamples, stages).
    """

    last_hidden_state: np.ndarray = None  # SwiftFormer: [B, C, H, W], the last stage's output
    hidden_states: tuple | None = None


@dataclass
class ImageClassifierOutputWithNoAttention(ModelOutput):
    """SwiftFormer's classifier output (`SwiftFormerForImageClassification`), as transformers'.

    Attributes
    ----------
    loss : numpy.floating or None
        The loss, a NumPy scalar, when `labels` were given.
    logits : ndarray of shape [B, num_labels]
        The mean of the two heads' logits.
    hidden_states : tuple of ndarray or None
        With `output_hidden_states=True`, as in `BaseModelOutputWithNoAttention`.
    """

    loss: np.ndarray | None = None
    logits: np.ndarray = None
    hidden_states: tuple | None = None
