"""timm's data-config pair, for npformer: `resolve_data_config` / `resolve_model_data_config` read
a model's `pretrained_cfg` (and overrides) into timm's data config, `create_transform` turns it
into timm's eval transform — an image in, float32 [3, H, W] out, as torchvision's ToTensor +
Normalize would give it, bit for bit (tests/test_timm_compat.py checks both against timm).

    >>> data_config = resolve_model_data_config(model)
    {'input_size': (3, 224, 224), 'interpolation': 'bicubic', 'mean': (0.485, 0.456, 0.406),
     'std': (0.229, 0.224, 0.225), 'crop_pct': 0.95, 'crop_mode': 'center'}
    >>> transform = create_transform(**data_config)        # Resize(235, bicubic) -> CenterCrop(224) -> ...
    >>> transform(image).shape
    (3, 224, 224)

The eval transform is timm's `transforms_imagenet_eval` for crop_mode "center" with a square
input size (what every pretrained_cfg of these families says): shortest side to
floor(size / crop_pct), centre crop (torchvision's rounding), ToTensor, Normalize; it runs on
`npformer.preprocess.TorchvisionEvalTransform`. Training transforms and the other crop modes are
refused by name (ConfigError); training-only arguments are ignored in eval, as timm ignores them.
"""

from __future__ import annotations

import logging

import numpy as np

from ...errors import ConfigError
from ...preprocess import constants
from ...preprocess.steps import timm_scale_size
from ...preprocess.torchvision import TorchvisionEvalTransform

_logger = logging.getLogger(__name__)
IMAGENET_DEFAULT_MEAN = tuple(constants.IMAGENET_DEFAULT_MEAN)  # timm.data.constants: tuples
IMAGENET_DEFAULT_STD = tuple(constants.IMAGENET_DEFAULT_STD)
DEFAULT_CROP_PCT = 0.875  # timm.data.constants
DEFAULT_CROP_MODE = "center"
# timm's interpolation names -> PIL's filter codes (torchvision passes them to PIL for PIL images)
INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
# create_transform's training-time arguments: unused by its eval transform
TRAINING_ONLY = ("no_aug", "train_crop_mode", "scale", "ratio", "hflip", "vflip", "color_jitter", "color_jitter_prob",
                 "grayscale_prob", "gaussian_blur_prob", "auto_augment", "re_prob", "re_mode", "re_count",
                 "re_num_splits", "patch_size", "max_seq_len", "patchify_channels_last", "patchify_flatten")
# create_transform's arguments whose non-default values npformer does not implement
NOT_IMPLEMENTED = {"tf_preprocessing": False, "use_prefetcher": False, "normalize": True, "separate": False,
                   "crop_border_pixels": None, "naflex": False, "patchify": False}


def _channels(value, in_chans: int, what: str) -> tuple:
    """timm's mean / std argument: one value per channel (a single value is repeated)."""
    value = tuple(value)
    if len(value) == 1:
        return value * in_chans
    if len(value) != in_chans:
        raise ConfigError(f"{what} has {len(value)} values for {in_chans} channels")
    return value


def resolve_data_config(args=None, pretrained_cfg=None, model=None, use_test_size=False, verbose=False) -> dict:
    """timm's `resolve_data_config`: the data config an eval transform is made from.

    Each of input_size, interpolation, mean, std, crop_pct, crop_mode comes from `args`, else
    `pretrained_cfg`, else `model.pretrained_cfg`, else timm's defaults.

    Parameters
    ----------
    args : dict, optional
        Overrides (`input_size`, `img_size`, `in_chans`, `interpolation`, `mean`, `std`,
        `crop_pct`, `crop_mode`).
    pretrained_cfg : dict, optional
        A model's `pretrained_cfg`.
    model : TimmModel, optional
        A model whose `pretrained_cfg` is read when `pretrained_cfg` is not given.
    use_test_size : bool, default False
        Use the config's `test_input_size` and `test_crop_pct` where it has them.
    verbose : bool, default False
        Log the config (logging, level INFO).

    Returns
    -------
    dict
        `input_size`, `interpolation`, `mean`, `std`, `crop_pct`, `crop_mode`.

    Raises
    ------
    ConfigError
        None of `args`, `pretrained_cfg` and `model`, or a malformed `input_size`, `mean` or
        `std`.
    """
    if not (model or args or pretrained_cfg):
        raise ConfigError("resolve_data_config needs at least one of args, pretrained_cfg or model")
    args = args or {}
    pretrained_cfg = pretrained_cfg or {}
    if not pretrained_cfg and model is not None and hasattr(model, "pretrained_cfg"):
        pretrained_cfg = model.pretrained_cfg
    in_chans = 3
    if args.get("in_chans") is not None:
        in_chans = args["in_chans"]
    elif args.get("chans") is not None:
        in_chans = args["chans"]
    if args.get("input_size") is not None:
        if not isinstance(args["input_size"], (tuple, list)) or len(args["input_size"]) != 3:
            raise ConfigError(f"input_size must be (channels, height, width), got {args['input_size']!r}")
        input_size = tuple(args["input_size"])
        in_chans = input_size[0]
    elif args.get("img_size") is not None:
        input_size = (in_chans, args["img_size"], args["img_size"])
    elif use_test_size and pretrained_cfg.get("test_input_size") is not None:
        input_size = pretrained_cfg["test_input_size"]
    else:
        input_size = pretrained_cfg.get("input_size") or (in_chans, 224, 224)
    config = {"input_size": input_size}
    config["interpolation"] = args.get("interpolation") or pretrained_cfg.get("interpolation") or "bicubic"
    config["mean"] = (_channels(args["mean"], in_chans, "mean") if args.get("mean") is not None
                      else pretrained_cfg.get("mean") or IMAGENET_DEFAULT_MEAN)
    config["std"] = (_channels(args["std"], in_chans, "std") if args.get("std") is not None
                     else pretrained_cfg.get("std") or IMAGENET_DEFAULT_STD)
    test_crop = use_test_size and pretrained_cfg.get("test_crop_pct")
    config["crop_pct"] = args.get("crop_pct") or test_crop or pretrained_cfg.get("crop_pct") or DEFAULT_CROP_PCT
    config["crop_mode"] = args.get("crop_mode") or pretrained_cfg.get("crop_mode") or DEFAULT_CROP_MODE
    if verbose:
        _logger.info("Data processing configuration for current model + dataset:")
        for key, value in config.items():
            _logger.info(f"\t{key}: {value}")
    return config


def resolve_model_data_config(model, args=None, pretrained_cfg=None, use_test_size=False, verbose=False) -> dict:
    """timm's `resolve_model_data_config`: `resolve_data_config` with the model first.

    Parameters
    ----------
    model : TimmModel
        The model whose `pretrained_cfg` is read.
    args : dict, optional
        Overrides.
    pretrained_cfg : dict, optional
        Read instead of the model's.
    use_test_size : bool, default False
        Use the test size where the config has one.
    verbose : bool, default False
        Log the config.

    Returns
    -------
    dict
        The data config (see `resolve_data_config`).
    """
    return resolve_data_config(args=args, pretrained_cfg=pretrained_cfg, model=model, use_test_size=use_test_size,
                               verbose=verbose)


def eval_transform(input_size=224, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                   crop_pct=None, crop_mode=None) -> TorchvisionEvalTransform:
    """timm's `transforms_imagenet_eval` as a batch processor ({"pixel_values": [N, 3, H, W]})."""
    side = tuple(input_size[-2:]) if isinstance(input_size, (tuple, list)) else (input_size, input_size)
    if len(side) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in side):
        raise ConfigError(f"input_size={input_size!r}: expected a side in pixels or (channels, height, width)")
    crop_pct = crop_pct or DEFAULT_CROP_PCT  # as timm: 0 and None take the default
    scale = [timm_scale_size(s, crop_pct) for s in side]  # timm: the resize before the crop, floor(side / crop_pct)
    if (crop_mode or DEFAULT_CROP_MODE) != "center":
        raise ConfigError(f"crop_mode {crop_mode!r} is not implemented; npformer implements timm's 'center' (what "
                          "every pretrained_cfg of its families uses)")
    if scale[0] != scale[1]:
        raise ConfigError(f"input size {tuple(side)} is not square: timm then resizes with ResizeKeepRatio, which "
                          "npformer does not implement (every pretrained_cfg of its families is square)")
    if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
                          + (" ('random' is for training)" if interpolation == "random" else ""))
    return TorchvisionEvalTransform(scale[0], tuple(side), INTERPOLATIONS[interpolation], tuple(mean), tuple(std))


class EvalTransform:
    """What timm's eval `create_transform` returns: `transform(image)` gives float32 [3, H, W].

    Add the batch axis with `[None]` where timm code calls `.unsqueeze(0)`. `.processor` is the
    same pipeline as an image processor over a batch (`{"pixel_values": [N, 3, H, W]}`).
    """

    def __init__(self, processor: TorchvisionEvalTransform):
        self.processor = processor

    def __call__(self, image) -> np.ndarray:  # PIL image, array or path -> [3, H, W] float32
        return self.processor(image)["pixel_values"][0]

    def __repr__(self) -> str:
        p = self.processor
        name = {v: k for k, v in INTERPOLATIONS.items()}[p.resample]
        return (f"EvalTransform(Resize({p.resize_short}, interpolation={name}), CenterCrop({p.crop}), ToTensor(), "
                f"Normalize(mean={p.mean}, std={p.std}))")


def create_transform(input_size=224, is_training=False, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN,
                     std=IMAGENET_DEFAULT_STD, crop_pct=None, crop_mode=None, **options) -> EvalTransform:
    """timm's `create_transform(**data_config)` for evaluation, equal to timm's eval transform.

    Shortest side to floor(size / crop_pct), center crop (torchvision's rounding), ToTensor,
    Normalize. Training-only options are ignored, as timm's eval transform ignores them.

    Parameters
    ----------
    input_size : int or tuple of int, default 224
        A side, or (channels, height, width); square.
    is_training : bool, default False
        Must be False: npformer has no training augmentations.
    interpolation : str, default "bilinear"
        "bicubic", "bilinear", "nearest", "lanczos", "box" or "hamming".
    mean : sequence of float, default ImageNet's
        Normalize's mean.
    std : sequence of float, default ImageNet's
        Normalize's std.
    crop_pct : float, optional
        The crop's share of the resized side (default 0.875, timm's).
    crop_mode : str, optional
        Only "center" (the default).
    **options
        timm's other arguments: training-only ones are ignored; those npformer does not
        implement (`tf_preprocessing`, `use_prefetcher`, ...) are refused unless at their
        defaults.

    Returns
    -------
    EvalTransform
        `transform(image)` -> float32 [3, H, W].

    Raises
    ------
    ConfigError
        `is_training=True`, a crop mode other than "center", a non-square size, an unknown
        interpolation or argument.
    """
    if is_training:
        raise ConfigError("create_transform(is_training=True): npformer is inference only and has no training "
                          "augmentations; use is_training=False (the eval transform)")
    for name, value in options.items():
        if name in NOT_IMPLEMENTED:
            if value != NOT_IMPLEMENTED[name] and not (NOT_IMPLEMENTED[name] is None and not value):
                raise ConfigError(f"create_transform({name}={value!r}) is not implemented in npformer")
        elif name not in TRAINING_ONLY:
            raise ConfigError(f"create_transform() got an unexpected argument {name!r}")
    return EvalTransform(eval_transform(input_size, interpolation, mean, std, crop_pct, crop_mode))
