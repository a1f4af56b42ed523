"""What every npformer model class shares: weights held read-only in one dtype, the pixel-value
check, and the convolution + BatchNorm pair the families are built from. (The helpers weight
schemas are written with are in `models/schema.py`; how a batch runs, in `models/batching.py`.)

Reading and writing checkpoints is not model code: `from_pretrained` and `save_pretrained` hand
over to `npformer.loading`, the layer above the models, which installs itself in
`CHECKPOINT_IO` when npformer is imported. Model code never imports checkpoint code."""

from __future__ import annotations

import copy
from types import MappingProxyType

import numpy as np

from ..arguments import model_dtype
from ..errors import InputError
from ..fuse import fold_batch_norms, is_folded
from ..layers import batch_norm, conv2d, linear
from ..parallel import blas_held_at_one
from ..params import Params
from .batching import batch_size, per_image
from .schema import check_tensors
from .seeded import seeded_weights

# npformer.loading's `load_into(cls, path, **options)` and `save(model, path, **options)`, set when npformer is imported
CHECKPOINT_IO = {}


def as_pixel_values(pixel_values, num_channels: int, dtype) -> np.ndarray:  # [B, C, H, W] -> [B, C, H, W]
    """A fresh C-contiguous copy of `pixel_values` in the model's dtype, or an InputError saying what is wrong.

    Accepted: anything np.asarray reads as a real floating-point [B, C, H, W] array with B >= 1
    (float16/32/64, any strides or byte order, read-only, nested lists). The copy means a forward
    never writes to the caller's array and sees the same memory layout whatever the input's strides,
    so non-contiguous and read-only inputs give bit-identical outputs.

    Refused (InputError), each for a reason:
    * integer and bool arrays: pixel values are normalised floats; an integer array is most likely
      raw 0..255 pixels, which would give plausible but wrong logits (PyTorch refuses integer
      inputs too). Run the image processor, or cast to float yourself.
    * complex, object, string arrays; masked arrays with masked elements (np.asarray would drop
      the mask and use the values under it);
    * NaN or ±inf anywhere, also from float64 values beyond the model dtype's range: every logit
      would be NaN (PyTorch propagates them silently; `predict` would print class 0).
    * batch size 0 and empty images: there is nothing to classify (transformers' EfficientFormer
      crashes in a reshape on an empty batch).
    """
    if isinstance(pixel_values, np.ma.MaskedArray) and np.ma.is_masked(pixel_values):
        raise InputError(
            f"pixel_values is a masked array with {int(np.ma.count_masked(pixel_values))} masked elements; "
            "the model cannot skip pixels: fill them (e.g. .filled(0)) first"
        )
    try:
        x = np.asarray(pixel_values)
    except (ValueError, TypeError) as err:  # ragged nested lists, objects NumPy cannot convert
        raise InputError(f"pixel_values cannot be read as one [batch, channels, height, width] array: {err}") from None
    if x.ndim != 4:
        given = "" if isinstance(pixel_values, np.ndarray) else f" (from a {type(pixel_values).__name__})"
        raise InputError(f"pixel_values must be [batch, channels, height, width], got shape {x.shape}{given}")
    if x.shape[1] != num_channels:
        raise InputError(
            f"pixel_values has {x.shape[1]} channels (shape {x.shape}), the model expects {num_channels} in NCHW order"
        )
    if x.dtype.kind in "iub":
        raise InputError(
            f"pixel_values has dtype {x.dtype}; the model takes normalised floating-point pixel values. Raw 0..255 "
            "pixels would give wrong logits: run the image processor (npformer.preprocess), or cast to float32"
        )
    if x.dtype.kind != "f":
        raise InputError(f"pixel_values must be a real floating-point array, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise InputError(f"pixel_values has batch size 0 (shape {x.shape}): no images to run")
    if min(x.shape[2:]) < 1:
        raise InputError(f"pixel_values has an empty image: shape {x.shape}")
    source_dtype = x.dtype
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused just below
        x = np.array(x, dtype=dtype, order="C", copy=True)
    finite = np.isfinite(x)
    if not finite.all():
        where = [int(i) for i in np.argwhere(~finite)[0]]
        nan = int(np.isnan(x).sum())
        inf = int(x.size - finite.sum()) - nan
        counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
        if inf and source_dtype.itemsize > x.dtype.itemsize:
            counts += f" (after conversion from {source_dtype} to {x.dtype}, whose range ends at ±{np.finfo(x.dtype).max:.3g})"
        raise InputError(f"pixel_values holds {counts} of {x.size} values, first at index {where}: every logit would be NaN")
    return x


def bn(x, p: Params, name, cfg, trace):  # [B, C, H, W] -> [B, C, H, W]
    """The eval-mode BatchNorm named `name`; the identity once `fuse` has folded it into a convolution."""
    if is_folded(p, name):
        return x
    q = p.scope(name)
    return trace(name, batch_norm(x, q["running_mean"], q["running_var"], q["weight"], q["bias"], cfg.batch_norm_eps))


def conv_bn(x, p: Params, cfg, trace, conv, norm, stride=1, padding=0, groups=1):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """The convolution named `conv`, then the BatchNorm named `norm`. In a fused model they are one
    convolution, whose output is recorded under the BatchNorm's name."""
    y = conv2d(x, p[f"{conv}.weight"], p[f"{conv}.bias"], stride=stride, padding=padding, groups=groups)
    if is_folded(p, norm):
        return trace(norm, y)
    return bn(trace(conv, y), p, norm, cfg, trace)


def check_finite_output(x: np.ndarray, name: str, pixel_values: np.ndarray) -> np.ndarray:
    """x, or an InputError when finite pixel values overflowed inside the model (|x| ~ 1e37 does)."""
    if not np.isfinite(x).all():
        raise InputError(f"the model's {name} are not finite: pixel values up to {np.abs(pixel_values).max():.3g} overflow "
                         f"{x.dtype} inside the network; normalised pixel values are O(1)")
    return x


class PreTrainedModel:
    """Config + weights. Subclasses set `family`, `num_heads` (classifier heads they use) and
    `weight_schema` (config, num_heads) -> {name: shape}, and write the forward as `_forward`
    (pixel_values, ..., trace=None); calling the model runs it as `__call__` says."""

    family = ""
    num_heads = 0
    fused = False  # True once BatchNorms are folded into convolutions (`fuse`)

    @staticmethod
    def weight_schema(config, num_heads):
        raise NotImplementedError

    @staticmethod
    def batch_norm_folds(config):  # -> [(conv, norm, "after" | "before")], see fuse.py
        raise NotImplementedError

    def __init__(self, config, weights: dict | None = None, dtype=np.float32):
        self.config = config
        self.dtype = model_dtype(dtype)  # float32 or float64
        if weights is None:  # like transformers' Model(config): random weights (here seeded, see checkpoints/seeded.py)
            weights = seeded_weights(config, num_heads=self.num_heads)
        check_tensors(weights, self.weight_schema(config, self.num_heads), source=type(self).__name__)
        self._set_weights({k: np.array(v, dtype=self.dtype, copy=True) for k, v in weights.items()})

    def __call__(self, pixel_values, *args, **kwargs):
        """The forward (`_forward`), with BLAS held at one thread (npformer/parallel.py). A batch of
        B ≥ 2 runs as B forwards of one image each (`batching.per_image`): an image's outputs are
        bit-identical alone or at any place in any batch, with any worker count."""
        with blas_held_at_one():
            if batch_size(pixel_values) < 2:
                return self._forward(pixel_values, *args, **kwargs)
            x = as_pixel_values(pixel_values, self.config.num_channels, self.dtype)  # errors name the batch index
            return per_image(self, x, *args, **kwargs)

    def _head(self, pooled, name: str, trace):  # [B, C] -> [B, num_labels]
        """The linear classifier head `name` on pooled features (recorded under its name); the pooled
        features themselves when the config has no labels (transformers' and timm's Identity head)."""
        if self.config.num_labels == 0:
            return pooled
        return trace(name, linear(pooled, self.params[f"{name}.weight"], self.params[f"{name}.bias"]))

    def _set_weights(self, weights: dict) -> None:
        """Own `weights` read-only: neither a forward nor a caller can change or rebind one."""
        for v in weights.values():
            v.flags.writeable = False
        self.weights = MappingProxyType(weights)
        self.params = Params(self.weights)

    @property
    def feature_info(self):
        """Channels, total stride and module of each stage's output, as timm's `feature_info` (models/features.py)."""
        from .features import feature_info

        return feature_info(self.config)

    def forward_intermediates(self, pixel_values, indices=None, norm=False, intermediates_only=False):
        """(final, [NCHW stage maps]) as timm's `forward_intermediates`: `indices` None (all four
        stages), n (the last n) or a list; `norm` normalises the last stage's map. See models/features.py."""
        from .features import forward_intermediates

        return forward_intermediates(self, pixel_values, indices, norm, intermediates_only)

    def features_only(self, out_indices=(0, 1, 2, 3)):
        """A model returning the stage maps `out_indices` selects, as timm's `features_only=True`."""
        from .features import FeatureListModel

        return FeatureListModel(self, out_indices)

    def eval(self):
        """The model (`model.eval()` in transformers and timm code): npformer models only ever run in
        inference mode."""
        return self

    def fuse(self):
        """This model with each BatchNorm folded into its convolution: one pass over each feature map
        fewer, the same outputs to float32 rounding (see fuse.py). The fast path; an oracle trace
        of the unfused model has more entries (each convolution before its BatchNorm)."""
        if self.fused:
            return self
        model = copy.copy(self)
        model._set_weights(fold_batch_norms(self.weights, self.batch_norm_folds(self.config), self.config.batch_norm_eps,
                                            self.dtype))
        model.fused = True
        return model

    @classmethod
    def from_pretrained(cls, path, dtype=np.float32, attention_generation=None, fuse=False, image_size=None,
                        attention_bias_resize=None, *, revision=None, cache_dir=None, local_files_only=False,
                        token=None):
        """Load an npformer weight file, a transformers model directory or an original / timm
        checkpoint into this class (dropping heads it does not use, as transformers does);
        `fuse=True` gives the fused fast path (`fuse`); `image_size` and `attention_bias_resize`
        as `npformer.load`. `path` may be a Hugging Face hub id (`revision`, `cache_dir`,
        `local_files_only`, `token`: see npformer/hub.py). npformer.loading reads it (`load_into`)."""
        return CHECKPOINT_IO["load_into"](cls, path, dtype, attention_generation, fuse, image_size,
                                          attention_bias_resize, revision=revision, cache_dir=cache_dir,
                                          local_files_only=local_files_only, token=token)

    def save_pretrained(self, path, source="npformer", checkpoint="", format="npformer", **options) -> None:
        """Write an npformer weight file (float32); `format="transformers"`, `"timm"` or `"tf"`: a directory
        those libraries load to the same logits (`options`: see npformer/checkpoints/export.py).
        npformer.loading writes it (`save`)."""
        CHECKPOINT_IO["save"](self, path, source, checkpoint, format, **options)
