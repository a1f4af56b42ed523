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
    """What every npformer model class shares: a config, weights in one dtype, and the forward.

    `Class(config)` builds a model with seeded weights (transformers' `Class(config)` has random
    ones); `Class.from_pretrained(path)` loads a checkpoint. Calling the model runs the forward
    (each class documents its own arguments and outputs). Weights are held read-only.

    Parameters
    ----------
    config : ClassifierConfig
        An `EfficientFormerConfig`, `SwiftFormerConfig` or `EfficientFormerV2Config`, of the
        class's family.
    weights : dict of str to ndarray, optional
        Every tensor the class needs, under timm's names (`stem.conv1.weight`, ...), with the
        shapes the config gives; `None` gives seeded weights (`npformer.models.seeded`).
    dtype : numpy dtype, default np.float32
        `np.float32` or `np.float64`: the dtype of the weights and of every intermediate.

    Attributes
    ----------
    config : ClassifierConfig
        The architecture.
    dtype : numpy.dtype
        float32 or float64.
    weights : mapping of str to ndarray
        The tensors, read-only, under timm's names.
    fused : bool
        True once `fuse` has folded the BatchNorms into the convolutions.

    Raises
    ------
    CheckpointMismatchError
        `weights` with missing, unexpected or mis-shaped tensors, or non-float ones.
    WeightFileError
        `weights` holding NaN, inf, values beyond float32's range or negative BatchNorm variances.
    ConfigError
        A `dtype` other than float32 or float64.
    """

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
        # C order whatever the source's layout (tf_model.h5's kernels arrive transposed): a product's rounding
        # depends on its operands' memory order, and the outputs must not depend on where the weights came from
        self._set_weights({k: np.array(v, dtype=self.dtype, order="C", copy=True) for k, v in weights.items()})

    def __call__(self, pixel_values, *args, **kwargs):
        """Run the model on a batch of pixel values.

        BLAS is held at one thread inside the forward (`npformer.parallel`). A batch of B ≥ 2
        runs as B forwards of one image each, on npformer's threads: an image's outputs are
        bit-identical alone or at any place in any batch, with any thread count.

        Parameters
        ----------
        pixel_values : array_like of shape [B, C, H, W]
            Normalised floating-point pixels (float16, float32 or float64; any strides, byte
            order or nested lists), copied into the model's dtype.
        *args
            The class's forward arguments, in order (see its `__call__`).
        **kwargs
            The same, by name: `labels`, `output_hidden_states`, `output_attentions`, `trace`.

        Returns
        -------
        ModelOutput
            The class's output, with transformers' field names.

        Raises
        ------
        InputError
            Pixel values the model cannot take: not 4-D, the wrong channel count, an integer,
            bool, complex or empty array, NaN or inf values, or a size whose attention grid the
            model is not built for.
        """
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
        """Channels, total stride and module name of each stage's output, as timm's `feature_info`.

        A list of four dicts `{"num_chs", "reduction", "module"}` (strides 4, 8, 16, 32 for the
        published variants), with timm's accessors `channels()`, `reduction()`, `module_name()`.
        """
        from .features import feature_info

        return feature_info(self.config)

    def forward_intermediates(self, pixel_values, indices=None, norm=False, intermediates_only=False):
        """The stage outputs as NCHW feature maps, as timm's `forward_intermediates`.

        Parameters
        ----------
        pixel_values : array_like of shape [B, C, H, W]
            Normalised pixel values.
        indices : int or list of int, optional
            The stages to return: all four (None), the last n (an int n), or those listed
            (negative indices count from the end).
        norm : bool, default False
            Return the last stage's map after the final norm (timm applies it to the last stage
            only).
        intermediates_only : bool, default False
            Return the list of maps alone.

        Returns
        -------
        final : ndarray
            timm's `forward_features`: EfficientFormer's normalised tokens [B, N, C];
            EfficientFormerV2's and SwiftFormer's last map [B, C, H/32, W/32] (after the final
            norm where the model has one).
        maps : list of ndarray, each of shape [B, C_i, H_i, W_i]
            The selected stages' outputs (EfficientFormer's last-stage tokens laid back on their
            grid).

        Raises
        ------
        InputError
            An index out of range, or `norm=True` for a model without a final norm.
        """
        from .features import forward_intermediates

        return forward_intermediates(self, pixel_values, indices, norm, intermediates_only)

    def features_only(self, out_indices=(0, 1, 2, 3)):
        """A model that returns the stage maps `out_indices` selects, as timm's `features_only=True`.

        Parameters
        ----------
        out_indices : sequence of int, default (0, 1, 2, 3)
            The stages whose outputs the model returns.

        Returns
        -------
        FeatureListModel
            Calling it on pixel values [B, C, H, W] returns a list of NCHW maps; its
            `feature_info` describes them.
        """
        from .features import FeatureListModel

        return FeatureListModel(self, out_indices)

    def eval(self):
        """Return the model itself: npformer models only run in inference mode.

        There for code written for transformers and timm, which calls `model.eval()`.

        Returns
        -------
        PreTrainedModel
            This model.
        """
        return self

    def fuse(self):
        """A copy of this model with each BatchNorm folded into its convolution: the fast path.

        One pass over each feature map fewer; the same outputs to float32 rounding
        (`npformer.fuse`). A trace of the fused model records each folded pair under the
        BatchNorm's name, so it has fewer entries than the unfused model's. A fused model cannot
        be saved.

        Returns
        -------
        PreTrainedModel
            The fused copy (this model, when it is fused already).
        """
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
        """Load a checkpoint into this class.

        Heads the checkpoint has beyond the class's are dropped, as transformers does (a
        two-head checkpoint loads into `...ForImageClassification` with its class head, into
        `...Model` with none).

        Parameters
        ----------
        path : str or os.PathLike
            An npformer weight file, a transformers or timm model directory, an original or timm
            checkpoint file, or a Hugging Face hub id (see `npformer.load`).
        dtype : numpy dtype, default np.float32
            `np.float32` or `np.float64`.
        attention_generation : str, optional
            SwiftFormer's attention generation, "v1" or "v2"; required for original SwiftFormer checkpoints.
        fuse : bool, default False
            Return the fused fast path (`fuse`).
        image_size : int or tuple of int, optional
            The input size to run at, one side or `(H, W)` (see `npformer.load`).
        attention_bias_resize : str, optional
            How the attention biases follow another grid, "table" or "pairwise" (see `npformer.load`).
        revision : str, optional
            Hub ids only: the branch, tag or commit.
        cache_dir : str or os.PathLike, optional
            Hub ids only: the Hugging Face cache.
        local_files_only : bool, default False
            Hub ids only: never download.
        token : str or bool, optional
            Hub ids only: a token for a private repo.

        Returns
        -------
        PreTrainedModel
            A model of this class.

        Raises
        ------
        InputError
            A checkpoint of another family.
        NpformerError
            The subclasses `npformer.load` raises, for the same reasons; a checkpoint with fewer
            heads than the class needs is a `CheckpointMismatchError`.
        """
        return CHECKPOINT_IO["load_into"](cls, path, dtype, attention_generation, fuse, image_size,
                                          attention_bias_resize, revision=revision, cache_dir=cache_dir,
                                          local_files_only=local_files_only, token=token)

    def save_pretrained(self, path, source="npformer", checkpoint="", format="npformer", **options) -> None:
        """Save the model: an npformer weight file, or a directory transformers or timm loads.

        Parameters
        ----------
        path : str or os.PathLike
            `format="npformer"`: the file to write, whose name must end in `.safetensors` and
            whose directory must exist (an existing file is replaced). Other formats: the
            directory to write, created when missing.
        source : str, default "npformer"
            Recorded in the npformer file's metadata (`source`).
        checkpoint : str, default ""
            Recorded in the npformer file's metadata (`checkpoint`).
        format : {"npformer", "transformers", "tf", "timm"}, default "npformer"
            `"transformers"`: `config.json`, `model.safetensors`, `preprocessor_config.json`;
            `"tf"`: the same with `tf_model.h5` (needs h5py); `"timm"`: timm's hub layout,
            `config.json` and `model.safetensors`. Each loads to the same logits in its library.
        **options
            `image_processor=` for "transformers" and "tf" (the processor whose settings
            `preprocessor_config.json` gets), `strict=False` for "timm" (accept timm's LayerNorm
            eps 1e-5 for EfficientFormer weights run with 1e-12).

        Raises
        ------
        InputError
            A fused model (it has no BatchNorm weights left to save).
        ConfigError
            A path or format npformer cannot write (a name without `.safetensors`, a directory
            named like a weight file), or a model the format cannot hold (EfficientFormerV2 in
            transformers, SwiftFormer attention v2 in transformers or v1 in timm, a config timm
            builds under no name).
        NpformerError
            An existing directory or a trailing separator for the one-file npformer format, a
            missing parent directory, an existing file for a directory format.
        """
        CHECKPOINT_IO["save"](self, path, source, checkpoint, format, **options)
