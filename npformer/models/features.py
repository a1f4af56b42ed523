"""npformer models as backbones, with timm's feature API.

Detection and segmentation heads take a pyramid of feature maps at strides 4, 8, 16 and 32: the
four stage outputs. timm exposes them three ways, and so does every npformer model:

    model.feature_info                           [{num_chs, reduction, module}] per stage
    final, maps = model.forward_intermediates(x, indices=None, norm=False)
    model.features_only(out_indices=(1, 3))(x)   -> [maps]   (timm's features_only=True)

The maps are the `stages.{i}` outputs the forward traces anyway (NCHW; EfficientFormer's last stage
works on tokens and is laid back on its grid), so the backbone is the same forward, not a second
one. `final` is what timm's `forward_features` returns: EfficientFormer's normalised tokens
[B, N, C], EfficientFormerV2's and SwiftFormer's normalised last map [B, C, H, W].
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import InputError
from .registry import family_of


class FeatureInfo(list):
    """[{num_chs, reduction, module}] per stage, with timm's FeatureInfo accessors."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


def feature_info(config) -> FeatureInfo:
    """Channels, total stride and module name of each stage's output (timm's `feature_info`)."""
    _, stride, _ = config.downsample_conv
    info, reduction = FeatureInfo(), 4  # the stem: two stride-2 convolutions
    for stage in family_of(config).schema.stages(config):
        reduction *= stride if stage.downsample else 1
        info.append(dict(num_chs=config.stage_widths[stage.index], reduction=reduction, module=f"stages.{stage.index}"))
    return info


def take_indices(num_stages: int, indices) -> list[int]:
    """The stages to return: all (None), the last n (an int n), or those listed (negative from the end)."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        if not 0 < indices <= num_stages:
            raise InputError(f"indices={indices}: the last n stages need 1 <= n <= {num_stages}")
        return list(range(num_stages - indices, num_stages))
    taken = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -num_stages <= i < num_stages:
            raise InputError(f"indices={list(indices)}: each must be a stage index in {-num_stages}..{num_stages - 1}")
        taken.append(int(i) % num_stages)
    return taken


BLOCK_OUTPUT = re.compile(r"(stem|stages\.\d+(\.downsample|\.blocks\.\d+)?)$")  # the stem, a downsample, a block, a stage


class StageRecorder:
    """A trace that keeps the stage outputs and the final norm, each with the grid of the latest
    feature map before it (to lay EfficientFormer's last-stage tokens back on their grid)."""

    def __init__(self, wanted):
        self.wanted, self.records, self.grid = set(wanted), {}, None

    def __call__(self, name, x):
        if x.ndim == 4 and BLOCK_OUTPUT.match(name):  # a feature map (not, say, attention probabilities)
            self.grid = x.shape[2:]
        if name in self.wanted:
            self.records[name] = (x, self.grid)
        return x

    def map(self, name):  # -> [B, C, H, W]
        """The output recorded as `name`, as an NCHW map: tokens (n = row·W + col) laid back on their grid."""
        x, grid = self.records[name]
        if x.ndim == 4:
            return x
        B, N, C = x.shape
        return np.ascontiguousarray(x.transpose(0, 2, 1).reshape(B, C, *grid))


def forward_intermediates(model, pixel_values, indices=None, norm=False, intermediates_only=False):
    """(final, [maps of the stages `indices` selects]) as timm's `forward_intermediates`; only the
    maps with `intermediates_only`. `norm`: the last stage's map after the final norm (timm applies
    it to the last stage only). `final` is timm's `forward_features`: the normalised last stage."""
    info = model.feature_info
    taken = take_indices(len(info), indices)
    has_norm = any(name.startswith("norm.") for name in model.weights)
    if norm and not has_norm:
        raise InputError(f"{type(model).__name__} has no final norm (transformers' backbone ends at the last stage): "
                         "norm=True needs a model with one")
    recorder = StageRecorder([f["module"] for f in info] + ["norm"])
    model(pixel_values, trace=recorder)
    last = len(info) - 1
    maps = [recorder.map("norm" if norm and i == last else info[i]["module"]) for i in taken]
    if intermediates_only:
        return maps
    return recorder.records["norm" if has_norm else info[last]["module"]][0], maps


class FeatureListModel:
    """The stage maps `out_indices` selects, as a list: timm's `features_only=True` model."""

    def __init__(self, model, out_indices=(0, 1, 2, 3)):
        self.model = model
        self.out_indices = take_indices(len(model.feature_info), list(out_indices))
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)

    def __call__(self, pixel_values) -> list[np.ndarray]:
        return forward_intermediates(self.model, pixel_values, self.out_indices, intermediates_only=True)
