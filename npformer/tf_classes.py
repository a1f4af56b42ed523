"""transformers' TensorFlow class names, on npformer's NumPy models: the TF documentation's code
runs with `from transformers import` changed to `from npformer import` and `return_tensors="tf"`
to "np" (with TensorFlow installed, `tf.math.argmax` takes the NumPy logits as they are).

    >>> from npformer import AutoImageProcessor, TFEfficientFormerForImageClassification
    >>> model = TFEfficientFormerForImageClassification.from_pretrained("snap-research/efficientformer-l1-300")
    >>> logits = model(**processor(image, return_tensors="np"), training=False).logits   # NumPy [1, 1000]

Each class is the PyTorch-named npformer class with TF's call signature: `training=False`
accepted (npformer only runs inference, so `training=True` is refused), `return_dict` and the
`output_*` flags default to the config's as in transformers, and `return_dict=False` returns TF's
tuple, whose layout differs from PyTorch's in one place: TFEfficientFormer's hidden states come out
NHWC ([B, H, W, C]; the last, [B, N, C], as it is), where the output object and PyTorch give NCHW.
They load every checkpoint npformer reads (tf_model.h5 too; `from_pt` means nothing here and is
accepted). TF's loss (per-example, Keras's) is not implemented: `labels` is refused.

The module is not called `tf` so that it never reads as TensorFlow beside `import tensorflow as tf`.
"""

from __future__ import annotations

import copy

import numpy as np

from .errors import InputError
from .models.efficientformer.model import (
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
)
from .models.swiftformer.model import SwiftFormerForImageClassification, SwiftFormerModel


class TFModelCalls:
    """TF's call conventions over an npformer model class (mixed in before it)."""

    hidden_states_nhwc_in_tuples = False  # TFEfficientFormer returns NHWC hidden states when return_dict=False

    @classmethod
    def from_pretrained(cls, path, *args, from_pt=False, **options):
        """As the npformer class's from_pretrained; `from_pt` (TF's switch for PyTorch files) is
        accepted and means nothing: npformer reads PyTorch and TensorFlow files alike."""
        return super().from_pretrained(path, *args, **options)

    def _tf_call(self, pixel_values, labels, training, return_dict, **flags):
        if isinstance(pixel_values, dict) or hasattr(pixel_values, "keys"):  # Keras style: model(inputs)
            inputs = dict(pixel_values)
            pixel_values = inputs.pop("pixel_values", None)
            if inputs:
                raise InputError(f"{type(self).__name__} takes pixel_values only, got inputs {sorted(inputs)}")
        if pixel_values is None:
            raise InputError("You have to specify pixel_values")
        if training:
            raise InputError(f"training={training!r}: npformer runs inference only (every dropout and drop-path off, "
                             "BatchNorm with its running statistics); call with training=False")
        if labels is not None:
            raise InputError("labels: the TF classes' loss (Keras's per-example loss) is not implemented; the "
                             f"PyTorch-named {type(self).__name__.removeprefix('TF')} computes transformers' PyTorch loss")
        extra = self.config.extra
        flags = {k: bool(extra.get(k, False)) if v is None else v for k, v in flags.items()}
        out = super(TFModelCalls, self).__call__(np.asarray(pixel_values), **flags)  # the npformer class's forward
        if return_dict if return_dict is not None else extra.get("return_dict", True):
            return out
        values = out.to_tuple()
        if self.hidden_states_nhwc_in_tuples and out.hidden_states is not None:
            nhwc = tuple(h.transpose(0, 2, 3, 1) if h.ndim == 4 else h for h in out.hidden_states)
            values = tuple(nhwc if v is out.hidden_states else v for v in values)
        return values

    def save_pretrained(self, path, *args, **kwargs):
        """As the npformer class's save_pretrained (format="tf" writes tf_model.h5), under the PyTorch
        class name that config.json records, as TF's save_pretrained writes it."""
        numpy_class = type(self).__mro__[type(self).__mro__.index(TFModelCalls) + 1]
        plain = copy.copy(self)
        plain.__class__ = numpy_class
        return plain.save_pretrained(path, *args, **kwargs)

    def call(self, *args, **kwargs):
        """Keras's name for the forward: the same as calling the model."""
        return self(*args, **kwargs)


class TFEfficientFormerModel(TFModelCalls, EfficientFormerModel):
    """transformers' TFEfficientFormerModel: `last_hidden_state` [B, N, C] after the final LayerNorm."""

    hidden_states_nhwc_in_tuples = True

    def __call__(self, pixel_values=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                 training=False):
        return self._tf_call(pixel_values, None, training, return_dict, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states)


class TFEfficientFormerForImageClassification(TFModelCalls, EfficientFormerForImageClassification):
    """transformers' TFEfficientFormerForImageClassification: the class head only."""

    hidden_states_nhwc_in_tuples = True

    def __call__(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, training=False):
        return self._tf_call(pixel_values, labels, training, return_dict, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states)


class TFEfficientFormerForImageClassificationWithTeacher(TFModelCalls, EfficientFormerForImageClassificationWithTeacher):
    """transformers' TFEfficientFormerForImageClassificationWithTeacher: logits = the mean of both heads."""

    hidden_states_nhwc_in_tuples = True

    def __call__(self, pixel_values=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                 training=False):
        return self._tf_call(pixel_values, None, training, return_dict, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states)


class TFSwiftFormerModel(TFModelCalls, SwiftFormerModel):
    """transformers' TFSwiftFormerModel (transformers 4.41+): `last_hidden_state` [B, C, H/32, W/32]."""

    def __call__(self, pixel_values=None, output_hidden_states=None, return_dict=None, training=False):
        return self._tf_call(pixel_values, None, training, return_dict, output_hidden_states=output_hidden_states)


class TFSwiftFormerForImageClassification(TFModelCalls, SwiftFormerForImageClassification):
    """transformers' TFSwiftFormerForImageClassification (transformers 4.41+): logits = the mean of both heads."""

    def __call__(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, training=False):
        return self._tf_call(pixel_values, labels, training, return_dict, output_hidden_states=output_hidden_states)


TF_CLASSES = {cls.__name__: cls for cls in (
    TFEfficientFormerModel, TFEfficientFormerForImageClassification, TFEfficientFormerForImageClassificationWithTeacher,
    TFSwiftFormerModel, TFSwiftFormerForImageClassification)}
