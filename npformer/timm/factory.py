"""timm's `create_model` for npformer's families: every timm name of EfficientFormer, SwiftFormer
and EfficientFormerV2 (`Family.timm_names`, pretrained tag `Family.timm_tag`), with timm's weights
read from the Hugging Face cache where timm keeps them.

    >>> model = create_model("efficientformer_l1.snap_dist_in1k", pretrained=True)   # repo timm/<name>
    >>> logits = model(pixel_values)                                                   # [B, 1000], as timm's

How a name is read, as timm reads it:

* `efficientformer_l1` or `efficientformer_l1.snap_dist_in1k`: the model, its pretrained tag
  (the family's, when none is given), timm's built-in `pretrained_cfg` for it, and with
  `pretrained=True` the weights of hub repo `timm/<name>.<tag>` (model.safetensors, else
  pytorch_model.bin) through `npformer.hub` (cache, offline mode and downloading are
  huggingface_hub's).
* `hf-hub:timm/efficientformer_l1.snap_dist_in1k` (or `@revision` after it): the repo's
  `config.json` names the model and gives its `pretrained_cfg`.
* `pretrained_cfg_overlay=dict(file=...)` or `checkpoint_path=...`: a local weight file instead of
  the hub (any checkpoint npformer reads: timm's, the original repos', an npformer file).

`create_model` returns a `TimmModel`: calling it returns the logits array (timm's eval forward:
the mean of the two heads), `forward_features` the final norm's output, `pretrained_cfg` what
`npformer.timm.data.resolve_model_data_config` reads. `pretrained=False` gives seeded weights
(timm's are random). Options that would change what the weights compute (a new head size, another
input size, channels) are refused by name; training-only options (drop rates) are accepted and
have no effect, as in timm's eval mode.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path

import numpy as np

from ..arguments import flag, model_dtype, source_path
from ..checkpoints.convert import load_any
from ..checkpoints.export import timm_pretrained_cfg, timm_variant_config
from ..errors import CheckpointMismatchError, ConfigError, InputError
from ..hub import TIMM_FILES, resolve
from ..jsonfile import read_json_object
from ..models.classes import model_class
from ..models.registry import Family, family_of, timm_models, variant_name
from ..trace import Trace

HUB_PREFIXES = ("hf-hub:", "hf_hub:")
BY_HAND = "pass checkpoint_path= (or pretrained_cfg_overlay=dict(file=...)) naming its weight file"
# timm arguments that only matter when training (or to torch's compilers): accepted, no effect
_NO_EFFECT = ("drop_rate", "drop_path_rate", "drop_block_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate",
              "scriptable", "exportable", "no_jit")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def list_models(filter: str = "", pretrained: bool = False) -> list[str]:
    """The timm model names npformer builds, as timm's `list_models`.

    Parameters
    ----------
    filter : str, default ""
        A wildcard pattern such as `"swiftformer*"`; "" lists every name.
    pretrained : bool, default False
        List `<name>.<tag>` (e.g. `efficientformer_l1.snap_dist_in1k`), as timm does.

    Returns
    -------
    list of str
        The names, sorted.
    """
    names = sorted(f"{name}.{fam.timm_tag}" if pretrained else name for name, (fam, _) in timm_models().items())
    return [n for n in names if not filter or fnmatch.fnmatch(n, filter)]


def lookup(architecture: str) -> tuple[Family, str]:
    """(family, variant) of a timm model name without its tag, or a ConfigError listing the names."""
    names = timm_models()
    if architecture not in names:
        raise ConfigError(f"unknown model {architecture!r}: npformer has timm's {', '.join(sorted(names))}")
    return names[architecture]


def _hub_config(hub_id: str, revision, cache_dir) -> tuple[str, dict, dict]:
    """(architecture, pretrained_cfg, model_args) of an `hf-hub:` repo, read from its config.json
    as timm's `_parse_model_cfg` reads it (the recorded in_chans and img_size set the input size)."""
    local = resolve(hub_id, [(("config.json",), True)], revision=revision, cache_dir=cache_dir, instead=BY_HAND)
    file = local / "config.json"
    config = read_json_object(file)
    architecture = config.get("architecture")
    if not isinstance(architecture, str):
        raise ConfigError(f"{file}: not a timm hub config (its 'architecture' is {architecture!r}, not a model name)")
    for key in ("pretrained_cfg", "model_args"):
        if not isinstance(config.get(key) or {}, dict):
            raise ConfigError(f"{file}: {key} must be a JSON object, got {type(config[key]).__name__}")
    pretrained_cfg = dict(config.get("pretrained_cfg") or {}, hf_hub_id=hub_id, source="hf-hub")
    model_args = dict(config.get("model_args") or {})
    if "num_classes" in config:
        pretrained_cfg["num_classes"] = config["num_classes"]
    size = pretrained_cfg.get("input_size", (3, 224, 224))
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(_is_int(n) and n > 0 for n in size)):
        raise ConfigError(f"{file}: pretrained_cfg input_size must be [channels, height, width], got {size!r}")
    if model_args.get("in_chans") is not None:
        pretrained_cfg["input_size"] = size = (model_args["in_chans"], *size[1:])
    if model_args.get("img_size") is not None and pretrained_cfg.get("fixed_input_size", False):
        side = model_args["img_size"]
        pretrained_cfg["input_size"] = (size[0], *((side, side) if isinstance(side, int) else tuple(side)))
    return architecture, pretrained_cfg, model_args


def _weight_file(pretrained_cfg: dict, checkpoint_path, revision, cache_dir) -> Path:
    """The weight file to load: `checkpoint_path`, the overlay's `file`, else the hub repo's
    model.safetensors (or pytorch_model.bin)."""
    if checkpoint_path is not None:
        return source_path(checkpoint_path, "checkpoint_path")
    if pretrained_cfg.get("file") is not None:
        return source_path(pretrained_cfg["file"], "pretrained_cfg_overlay['file']")
    local = resolve(pretrained_cfg["hf_hub_id"], TIMM_FILES, revision=revision, cache_dir=cache_dir, instead=BY_HAND)
    return next(local / f for f in TIMM_FILES[0][0] if (local / f).is_file())


def _without_heads(config, tensors: dict) -> tuple:
    """(config, tensors) with num_labels 0: timm's `num_classes=0` (Identity heads, pooled features out)."""
    fam = family_of(config)
    headless = dataclasses.replace(config, num_labels=0, id2label=None)
    keep = set(fam.schema.weight_schema(headless, 2))
    return headless, {k: v for k, v in tensors.items() if k in keep}


def _pretrained_model(fam: Family, variant: str, name: str, path: Path, num_classes, dtype):
    """The npformer model of the checkpoint at `path`, checked to be timm's `name`."""
    config, tensors, metadata = load_any(path)
    if family_of(config) is not fam or variant_name(config) != variant:
        what = f"{family_of(config).display} {variant_name(config) or config.summary()}"
        raise CheckpointMismatchError(f"{path}: holds {what}, not timm's {name}")
    architecture = metadata["architecture"]
    if num_classes == 0 and config.num_labels:
        config, tensors = _without_heads(config, tensors)
    elif num_classes is not None and num_classes != config.num_labels:
        raise ConfigError(f"num_classes={num_classes}: {path} has {config.num_labels} classes, and timm would put a new, "
                          "randomly initialised head on it; npformer runs trained weights only (num_classes=0 gives "
                          "the pooled features)")
    return model_class(architecture)(config, tensors, dtype=dtype)


def _check_options(options: dict, config=None) -> None:
    """Refuse the timm arguments that would change what the weights compute; accept those without effect."""
    if options.pop("device", None) not in (None, "cpu"):
        raise ConfigError("device: npformer runs on the CPU, in NumPy")
    in_chans = options.pop("in_chans", None)
    if in_chans not in (None, 3 if config is None else config.num_channels):
        raise ConfigError(f"in_chans={in_chans}: timm would adapt the stem's weights to {in_chans} channels; npformer "
                          "runs the checkpoint's own (3)")
    if options.pop("global_pool", "avg") != "avg":
        raise ConfigError("global_pool: these models pool by averaging (timm's 'avg') only")
    img_size = options.pop("img_size", None)
    if img_size not in (None, 224, (224, 224), [224, 224]):
        raise ConfigError(f"img_size={img_size!r}: for another input size load the checkpoint with "
                          "npformer.load(path, image_size=..., attention_bias_resize=...)")
    unknown = sorted(k for k in options if k not in _NO_EFFECT)
    if unknown:
        raise ConfigError(f"create_model() got arguments npformer does not take: {', '.join(unknown)}")


def create_model(model_name: str, pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                 checkpoint_path=None, cache_dir=None, num_classes=None, features_only=False, out_indices=None,
                 dtype=np.float32, fuse=False, **kwargs):
    """timm's `create_model` for npformer's three families.

    Options that would change what the weights compute (another head size than the
    checkpoint's, another input size, channels) are refused by name; training-only options
    (drop rates) are accepted and have no effect, as in timm's eval mode.

    Parameters
    ----------
    model_name : str
        A timm name, with or without its pretrained tag (`"efficientformer_l1"`,
        `"efficientformer_l1.snap_dist_in1k"`), or `"hf-hub:<repo>"` (`@revision` after it),
        whose config.json names the model.
    pretrained : bool, default False
        Load timm's weights from the Hugging Face hub repo `timm/<name>.<tag>` (the `hub`
        extra); False gives seeded weights (timm's are random).
    pretrained_cfg : dict, optional
        Replaces fields of timm's `pretrained_cfg` for the model.
    pretrained_cfg_overlay : dict, optional
        The same; `file=` names a local weight file to load instead of the hub's.
    checkpoint_path : str or os.PathLike, optional
        A local weight file to load (any checkpoint npformer reads).
    cache_dir : str or os.PathLike, optional
        The Hugging Face cache.
    num_classes : int, optional
        With loaded weights, 0 drops the heads (the pooled features come out) and any other
        count must be the checkpoint's; with seeded weights, the heads' classes (default 1000).
    features_only : bool, default False
        Return the backbone's `features_only(out_indices)` model instead.
    out_indices : sequence of int, optional
        The stages `features_only` returns (default all four).
    dtype : numpy dtype, default np.float32
        npformer's: `np.float32` or `np.float64`.
    fuse : bool, default False
        npformer's: return the fused fast path.
    **kwargs
        Other timm arguments: training-only ones are accepted without effect.

    Returns
    -------
    TimmModel or FeatureListModel
        The model as timm returns it: calling it gives the logits array [B, num_classes].

    Raises
    ------
    ConfigError
        A name npformer does not build, another tag than timm's, an argument that would change
        the weights' results.
    CheckpointMismatchError
        Weights that are not the named model's.
    NpformerError
        The subclasses `npformer.load` raises for the weight file.
    """
    if not isinstance(model_name, str):
        raise ConfigError(f"model_name must be a string, got {type(model_name).__name__}")
    dtype = model_dtype(dtype)
    pretrained, features_only, fuse = flag(pretrained, "pretrained"), flag(features_only, "features_only"), flag(fuse, "fuse")
    for name, value in (("pretrained_cfg", pretrained_cfg), ("pretrained_cfg_overlay", pretrained_cfg_overlay)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r:.80}: expected a dict, got {type(value).__name__}")
    if num_classes is not None and not (_is_int(num_classes) and num_classes >= 0):
        raise ConfigError(f"num_classes={num_classes!r}: expected a class count (an int >= 0) or None")
    hub_name = next((model_name[len(p):] for p in HUB_PREFIXES if model_name.startswith(p)), None)
    revision, model_args = None, {}
    if hub_name is not None:  # the repo's config.json names the model
        hub_id, _, revision = hub_name.partition("@")
        if not hub_id:
            raise ConfigError(f"model_name={model_name!r}: names no hub repo after {model_name[:7]!r} (e.g. "
                              "'hf-hub:timm/efficientformer_l1.snap_dist_in1k')")
        architecture, cfg, model_args = _hub_config(hub_id, revision or None, cache_dir)
        fam, variant = lookup(architecture)
        cfg = {**timm_pretrained_cfg(fam, variant), **cfg}
        if num_classes is None and "num_classes" in model_args:
            num_classes = model_args["num_classes"]
    else:
        architecture, _, tag = model_name.partition(".")
        fam, variant = lookup(architecture)
        if tag and tag != fam.timm_tag:
            raise ConfigError(f"{model_name}: timm has {architecture} weights tagged {fam.timm_tag!r} only")
        cfg = timm_pretrained_cfg(fam, variant)
    cfg = {**cfg, **(pretrained_cfg or {}), **(pretrained_cfg_overlay or {})}
    name = f"{architecture}.{cfg['tag']}" if cfg.get("tag") else architecture
    _check_options({**{k: v for k, v in model_args.items() if k != "num_classes"}, **kwargs})
    if pretrained or checkpoint_path is not None:
        path = _weight_file(cfg, checkpoint_path, revision or None, cache_dir)
        model = _pretrained_model(fam, variant, name, path, num_classes, dtype)
    else:  # timm: random weights; npformer: seeded ones (checkpoints/seeded.py)
        config = timm_variant_config(fam, variant, 1000 if num_classes is None else num_classes)
        model = model_class(fam.architecture(2))(config, dtype=dtype)
    cfg["num_classes"] = model.config.num_labels
    model = model.fuse() if fuse else model
    if features_only:  # the backbone API of models/features.py
        if not hasattr(model, "features_only"):
            raise ConfigError("features_only=True: this npformer has no features-only models")
        return model.features_only(**({} if out_indices is None else {"out_indices": out_indices}))
    return TimmModel(model, cfg)


class TimmModel:
    """A model as `timm.create_model` returns it, holding an npformer model.

    `model(x)` returns the logits array; every attribute it does not have itself (`config`,
    `feature_info`, `forward_intermediates`, ...) is the npformer model's.

    Parameters
    ----------
    model : PreTrainedModel
        The two-head npformer classifier (or one without heads, for `num_classes=0`).
    pretrained_cfg : dict
        timm's `pretrained_cfg`: preprocessing (`input_size`, `interpolation`, `crop_pct`,
        `mean`, `std`, ...) and heads, what `npformer.timm.data.resolve_model_data_config` reads.

    Attributes
    ----------
    model : PreTrainedModel
        The npformer model.
    pretrained_cfg : dict
        timm's `pretrained_cfg` (also as `default_cfg`).
    """

    def __init__(self, model, pretrained_cfg: dict):
        self.model = model
        self.pretrained_cfg = pretrained_cfg
        self.default_cfg = pretrained_cfg

    @property
    def num_classes(self) -> int:
        """Classes of the heads (0: no heads)."""
        return self.model.config.num_labels

    @property
    def num_features(self) -> int:
        """Channels of the pooled features (the last stage's width)."""
        return self.model.config.width

    def __call__(self, pixel_values) -> np.ndarray:
        return self.forward(pixel_values)

    def forward(self, pixel_values) -> np.ndarray:  # [B, 3, H, W] -> [B, num_classes]
        """timm's eval forward: the mean of the two heads' logits.

        Parameters
        ----------
        pixel_values : array_like of shape [B, 3, H, W]
            Normalised pixel values.

        Returns
        -------
        ndarray of shape [B, num_classes]
            The logits (the pooled features [B, num_features] for a model without heads).
        """
        return self.model(pixel_values).logits

    def forward_features(self, pixel_values) -> np.ndarray:
        """timm's `forward_features`: stem, stages and the final norm, no pooling, no head.

        Parameters
        ----------
        pixel_values : array_like of shape [B, 3, H, W]
            Normalised pixel values.

        Returns
        -------
        ndarray
            EfficientFormer: tokens [B, N, C]; SwiftFormer and EfficientFormerV2: a map
            [B, C, H/32, W/32].
        """
        trace = Trace(["norm"])
        self.model(pixel_values, trace=trace)
        return trace["norm"]

    def eval(self):
        """Return the model itself: npformer models are always in eval mode.

        Returns
        -------
        TimmModel
            This model.
        """
        return self

    def train(self, mode: bool = True):
        if mode:
            raise InputError("npformer is inference only: there is no training mode (use .eval())")
        return self

    def fuse(self) -> "TimmModel":
        """The same model with each BatchNorm folded into its convolution (the fast path).

        Returns
        -------
        TimmModel
            A new `TimmModel` around the fused npformer model.
        """
        return TimmModel(self.model.fuse(), self.pretrained_cfg)

    def __getattr__(self, name):
        if name == "model":  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"TimmModel({self.pretrained_cfg.get('architecture')}, {type(self.model).__name__}, {self.num_classes} classes)"
