"""`tf_model.h5`, the file transformers' TensorFlow classes save: read and written with h5py,
without TensorFlow.

The file is Keras 2's HDF5 weights format:

    /                       attributes layer_names (the model's top-level layers), backend, keras_version
    /<layer>                one group per top-level layer (efficientformer, classifier, ...); its
                            attribute weight_names lists the layer's variables by full name,
                            "<model>/<layer>/<path>/<variable>:0", trainable variables first; a list
                            longer than 64,512 bytes is split into weight_names0, weight_names1, ...
    /<layer>/<full name>    one dataset per variable: float32 (EfficientFormer's bias index: int32)

A variable's name is its PyTorch state-dict key spelt the Keras way (`tf_name`):

    PyTorch (transformers)                                          TensorFlow (after "<model>/")
    efficientformer.encoder.intermediate_stages.0.meta4D_layers    efficientformer/encoder/intermediate_stages.0/meta4D_layers/
        .blocks.1.mlp.convolution1.weight  [OC, IC, KH, KW]             blocks.1/mlp/convolution1/kernel:0  [KH, KW, IC, OC]
    ...token_mixer.qkv.weight  [OUT, IN]                            .../token_mixer/qkv/kernel:0  [IN, OUT]
    ...batchnorm_before.{weight, bias, running_mean, running_var}   .../batchnorm_before/{gamma, beta, moving_mean, moving_variance}:0
    efficientformer.layernorm.{weight, bias}                        efficientformer/layernorm/{gamma, beta}:0
    swiftformer.encoder.network.0.blocks.0.layer_scale  [C, 1, 1]   swiftformer/encoder/network_._0/blocks_._0/layer_scale:0  [C]
    swiftformer.patch_embed.patch_embedding.0.weight                swiftformer/patch_embed/patch_embedding/0/kernel:0

List indices are written as each TF port names its layers (`TF_LIST_INDEX`): `blocks.1` in
EfficientFormer, `blocks_._1` in SwiftFormer, `/0` inside a Keras Sequential. PyTorch's BatchNorm
`num_batches_tracked` has no TF counterpart. TF's loader matches variables by these names, so a
file written here loads into transformers' TF classes with nothing missing or unexpected.

Reading is strict, as for every checkpoint: the file's structure is checked before any tensor is
read (no links to other files, soft links, virtual datasets or external storage; the
attributes must list exactly the datasets there are), then its names, shapes and dtypes against
the model's (each missing, unexpected or mis-shaped variable named), then the values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import CheckpointMismatchError, ConfigError, MissingExtraError, WeightFileError
from ..models.registry import family_of
from ..models.schema import _names, key_set_problems
from .keys import foreign_names

TF_WEIGHTS_NAME = "tf_model.h5"
HOW_TO_INSTALL = "pip install 'npformer[h5]'"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Keras splits an attribute larger than this into name0, name1, ... (HDF5's object-header limit)
HDF5_OBJECT_HEADER_LIMIT = 64512
KERAS_VERSION = "2.21.0"  # what tf-keras writes into the files these are checked against

# how each TF port spells an index into a list of layers: (joiner, the lists it applies to);
# any other index (a Keras Sequential's) is a path component of its own
TF_LIST_INDEX = {"efficientformer": (".", ("intermediate_stages", "blocks")),
                 "swiftformer": ("_._", ("network", "blocks"))}
# PyTorch parameter name -> Keras variable name, for normalisation layers and (weight only) convolutions / dense layers
_NORM_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def import_h5py(what: str):
    """h5py, or a MissingExtraError saying what to install."""
    try:
        import h5py
    except ImportError:
        raise MissingExtraError(f"{what} needs h5py (the h5 extra): {HOW_TO_INSTALL}; or convert the checkpoint "
                                "where h5py is installed (`npformer convert DIR model.safetensors`)") from None
    return h5py


# ---------------------------------------------------------------------------------------------
# names and layouts


def tf_name(key: str, is_norm: bool, model_type: str) -> str:
    """The Keras variable name (without "<model>/") of the PyTorch state-dict key `key`;
    `is_norm`: the key belongs to a BatchNorm or LayerNorm (weight -> gamma, bias -> beta)."""
    joiner, lists = TF_LIST_INDEX[model_type]
    parts = key.split(".")
    leaf = parts.pop()
    if is_norm:
        leaf = _NORM_NAMES[leaf]
    elif leaf == "weight":
        leaf = "kernel"
    path = []
    for part in parts:
        if part.isdigit() and path and path[-1] in lists:
            path[-1] += joiner + part
        else:
            path.append(part)
    return "/".join(path + [leaf]) + ":0"


def tf_shape(pt_shape: tuple, name: str) -> tuple:
    """The shape a tensor of PyTorch shape `pt_shape` has in the file, as variable `name`."""
    leaf = name.rsplit("/", 1)[-1].removesuffix(":0")
    if leaf == "kernel" and len(pt_shape) == 4:  # conv: OIHW -> HWIO
        return tuple(pt_shape[i] for i in (2, 3, 1, 0))
    if leaf == "kernel" and len(pt_shape) == 2:  # dense: [out, in] -> [in, out]
        return tuple(pt_shape[::-1])
    if leaf.startswith("layer_scale"):  # SwiftFormer's [C, 1, 1] scales are [C] in TF
        return (int(np.prod(pt_shape)),)
    return tuple(pt_shape)


def to_tf_layout(value: np.ndarray, name: str) -> np.ndarray:
    leaf = name.rsplit("/", 1)[-1].removesuffix(":0")
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value.reshape(tf_shape(value.shape, name))


def from_tf_layout(value: np.ndarray, name: str, pt_shape: tuple) -> np.ndarray:
    leaf = name.rsplit("/", 1)[-1].removesuffix(":0")
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value.reshape(pt_shape)


class Variable:
    """One variable of a TF model: its Keras name, the PyTorch key and shape it stands for, its shape in the file."""

    def __init__(self, name: str, key: str, canonical: str, pt_shape: tuple, integer: bool = False):
        self.name, self.key, self.canonical, self.pt_shape = name, key, canonical, tuple(pt_shape)
        self.shape = tf_shape(self.pt_shape, name)
        self.integer = integer  # EfficientFormer's attention_bias_idxs (int32); every other variable is float32

    @property
    def layer(self) -> str:
        """The top-level Keras layer (the file's group) holding it."""
        return self.name.split("/", 1)[0]

    @property
    def trainable(self) -> bool:
        return not (self.integer or self.name.endswith(("moving_mean:0", "moving_variance:0")))


def tf_variables(config, num_heads: int) -> list[Variable]:
    """Every variable transformers' TF class with `num_heads` heads has for `config`, in checkpoint order."""
    fam = family_of(config)
    if fam.name not in TF_LIST_INDEX:
        raise ConfigError(f"{fam.display} has no TensorFlow port in transformers, so there is no tf_model.h5 for it")
    schema = fam.schema.weight_schema(config, num_heads)
    names = foreign_names(config, num_heads, "transformers")  # {canonical: PyTorch key}
    norms = {k.rsplit(".", 1)[0] for k in names.values() if k.endswith(".running_mean")}
    norms |= {names[c].rsplit(".", 1)[0] for c, shape in schema.items() if c.endswith(".weight") and len(shape) == 1}
    out = [Variable(tf_name(key, key.rsplit(".", 1)[0] in norms, fam.name), key, canon, schema[canon])
           for canon, key in names.items()]
    module = {canon.rsplit(".", 1)[0]: key.rsplit(".", 1)[0] for canon, key in names.items()}
    for canon, value in fam.schema.derived_buffers(config, "transformers").items():
        key = f"{module[canon.rsplit('.', 1)[0]]}.{canon.rsplit('.', 1)[1]}"
        out.append(Variable(tf_name(key, False, fam.name), key, canon, value.shape, integer=True))
    return out


def keras_model_name(class_name: str) -> str:
    """The name Keras gives a model of class `class_name` (its snake case): TFSwiftFormerModel -> tf_swift_former_model."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()


# ---------------------------------------------------------------------------------------------
# reading


def _strings(value, where: str) -> list[str]:
    """A string attribute as a list of str (Keras writes bytes, fixed or variable length)."""
    items = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(items, (list, np.ndarray)) or (isinstance(items, np.ndarray) and items.ndim != 1):
        raise WeightFileError(f"{where} is not a list of names (got {type(value).__name__})")
    out = []
    for item in items:
        if isinstance(item, bytes):
            try:
                item = item.decode("utf8")
            except UnicodeDecodeError:
                raise WeightFileError(f"{where} holds a name that is not UTF-8: {item[:60]!r}") from None
        if not isinstance(item, str):
            raise WeightFileError(f"{where} holds a {type(item).__name__}, not a name")
        out.append(item)
    return out


def _name_list(attrs, name: str, where: str) -> list[str]:
    """Keras's `load_attributes_from_hdf5_group`: attribute `name`, or name0, name1, ... joined."""
    if name in attrs:
        return _strings(attrs[name], f"{where} attribute {name!r}")
    chunks, i = [], 0
    while f"{name}{i}" in attrs:
        chunks += _strings(attrs[f"{name}{i}"], f"{where} attribute '{name}{i}'")
        i += 1
    stray = sorted(k for k in attrs if re.fullmatch(rf"{re.escape(name)}\d+", k) and int(k[len(name):]) >= i)
    if stray:
        raise WeightFileError(f"{where}: attribute {stray[0]!r} follows no complete {name}0..{name}{i - 1} sequence; "
                              "the file's name lists are broken")
    return chunks


def _walk(h5py, group, prefix: str, source: str, found: dict) -> None:
    """Every dataset below `group` by path, through hard links only; refuses any other link."""
    for key in group:
        link = group.get(key, getlink=True)
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(link, h5py.ExternalLink):
            raise WeightFileError(f"{source}: {path!r} is a link to another file ({link.filename}); npformer reads "
                                  "weights from the checkpoint file only")
        if not isinstance(link, h5py.HardLink):
            raise WeightFileError(f"{source}: {path!r} is a soft link; a tf_model.h5 holds its datasets directly")
        obj = group[key]
        if isinstance(obj, h5py.Group):
            _walk(h5py, obj, path, source, found)
        elif isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                raise WeightFileError(f"{source}: {path!r} is a virtual dataset (its data lies in other files); "
                                      "npformer reads weights from the checkpoint file only")
            if obj.external:
                raise WeightFileError(f"{source}: {path!r} keeps its data in external files "
                                      f"({obj.external[0][0]!r}...); npformer reads weights from the checkpoint file only")
            found[path] = obj
        else:
            raise WeightFileError(f"{source}: {path!r} is neither a group nor a dataset")


def _open(h5py, path: Path):
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    with open(path, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise WeightFileError(f"{path}: not an HDF5 file (a tf_model.h5 starts with the HDF5 signature; this one starts "
                              f"with {head!r})")
    try:
        return h5py.File(path, "r")
    except Exception as err:  # h5py raises OSError for truncated and corrupt files
        raise WeightFileError(f"{path}: not a readable HDF5 file ({str(err).strip()[:200]}): truncated or corrupt") from None


def tf_file_variables(f, h5py, source: str) -> tuple[str, dict]:
    """(model name, {variable name without "<model>/": dataset}) of an open tf_model.h5, its
    structure checked: the layer and weight name lists match the datasets exactly."""
    datasets: dict = {}
    _walk(h5py, f, "", source, datasets)
    layers = _name_list(f.attrs, "layer_names", f"{source}: the root")
    if not layers and "layer_names" not in f.attrs and "layer_names0" not in f.attrs:
        raise WeightFileError(f"{source}: no 'layer_names' attribute: not a Keras weights file (transformers' tf_model.h5)")
    variables, models, listed = {}, set(), set()
    for layer in layers:
        link = f.get(layer, getlink=True) if "/" not in layer and layer not in (".", "..") else None
        if not isinstance(link, h5py.HardLink) or not isinstance(f[layer], h5py.Group):
            raise WeightFileError(f"{source}: layer_names lists {layer!r}, which is not a group of the file")
        for full in _name_list(f[layer].attrs, "weight_names", f"{source}: layer {layer!r}"):
            model, _, rest = full.partition("/")
            if not rest.startswith(layer + "/") or not rest.endswith(":0") or "//" in full:
                raise WeightFileError(f"{source}: layer {layer!r} lists {full!r}, not a variable of that layer "
                                      f"('<model>/{layer}/.../<variable>:0')")
            path = f"{layer}/{full}"
            if path not in datasets:
                raise WeightFileError(f"{source}: layer {layer!r} lists {full!r}, which is not a dataset in the file")
            if rest in variables:
                raise WeightFileError(f"{source}: {rest!r} is listed twice")
            models.add(model)
            listed.add(path)
            variables[rest] = datasets[path]
    unlisted = sorted(set(datasets) - listed)
    if unlisted:
        raise WeightFileError(f"{source}: holds {len(unlisted)} datasets its name lists do not mention "
                              f"({_names(unlisted, 3)}); the attributes do not describe the file")
    if len(models) > 1:
        raise WeightFileError(f"{source}: its variables name {len(models)} different models ({', '.join(sorted(models))})")
    return next(iter(models), ""), variables


def pytorch_key(name: str) -> str:
    """The PyTorch state-dict key of a Keras variable name (without "<model>/"): `:0` dropped,
    `_._` and `/` read as `.`, Keras's parameter names as PyTorch's."""
    parts = name.removesuffix(":0").replace("_._", "/").split("/")
    leaf = {"kernel": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
            "moving_variance": "running_var"}.get(parts[-1], parts[-1])
    return ".".join(parts[:-1] + [leaf])


def read_tf_state(path, config, heads_of) -> tuple[dict, int]:
    """({PyTorch key: array in PyTorch's layout}, heads) of a tf_model.h5 for a model of `config`;
    `heads_of(keys)`: the classifier heads a transformers state dict with these keys has.

    Raises WeightFileError (not a readable Keras weights file, links out of the file, attributes
    that do not describe it, unreadable data) or CheckpointMismatchError (variables missing,
    unexpected, of the wrong shape or dtype, each named as in the file)."""
    h5py = import_h5py(f"reading {Path(path).name}")
    path = Path(path)
    source = str(path)
    with _open(h5py, path) as f:
        try:
            model, found = tf_file_variables(f, h5py, source)
            num_heads = heads_of({pytorch_key(name): None for name in found})
            expected = {v.name: v for v in tf_variables(config, num_heads)}
            problems = key_set_problems(expected, found, "variables")
            for name in sorted(set(found) & set(expected)):
                want, got = expected[name], found[name]
                if tuple(got.shape) != want.shape:
                    problems.append(f"{name}: expected shape {want.shape}, got {tuple(got.shape)}")
                elif want.integer and got.dtype.kind not in "iu":
                    problems.append(f"{name}: expected an integer index, got {got.dtype}")
                elif not want.integer and got.dtype.kind != "f":
                    problems.append(f"{name}: expected a floating-point tensor, got {got.dtype}")
            if problems:
                raise CheckpointMismatchError(f"{source} ({model or 'no model'}): " + "; ".join(problems))
            state = {}
            for name, variable in expected.items():
                try:
                    value = found[name][()]
                except Exception as err:  # h5py: OSError for data cut off or corrupt
                    raise WeightFileError(f"{source}: cannot read {name} ({str(err).strip()[:200]}): truncated or "
                                          "corrupt") from None
                state[variable.key] = from_tf_layout(np.asarray(value), name, variable.pt_shape)
        except (WeightFileError, CheckpointMismatchError, ConfigError):
            raise
        except Exception as err:  # anything else h5py meets in a corrupt file
            raise WeightFileError(f"{source}: not a readable tf_model.h5 ({type(err).__name__}: "
                                  f"{str(err).strip()[:200]})") from None
    return state, num_heads


# ---------------------------------------------------------------------------------------------
# writing


def _write_names(h5py, attrs, name: str, names: list[str]) -> None:
    """Keras's `save_attributes_to_hdf5_group`: the names as bytes, split into name0, name1, ...
    while a part is larger than HDF5_OBJECT_HEADER_LIMIT bytes."""
    data = np.asarray([n.encode("utf8") for n in names], dtype=bytes) if names else np.zeros(0, dtype="S1")
    chunks = 1
    while any(part.nbytes > HDF5_OBJECT_HEADER_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        attrs[name] = data
    else:
        for i, part in enumerate(np.array_split(data, chunks)):
            attrs[f"{name}{i}"] = part


def write_tf_weights(path, config, weights: dict, num_heads: int, model_name: str) -> Path:
    """Write `weights` (canonical names) as the tf_model.h5 of transformers' TF class with
    `num_heads` heads, whose Keras name is `model_name`; written whole, then renamed into place."""
    h5py = import_h5py(f"writing {TF_WEIGHTS_NAME}")
    path = Path(path)
    variables = tf_variables(config, num_heads)
    derived = family_of(config).schema.derived_buffers(config, "transformers")
    layers: dict[str, list[Variable]] = {}
    for v in sorted(variables, key=lambda v: not v.trainable):  # trainable first, as Keras lists them
        layers.setdefault(v.layer, []).append(v)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            _write_names(h5py, f.attrs, "layer_names", list(layers))
            f.attrs["backend"] = b"tensorflow"
            f.attrs["keras_version"] = KERAS_VERSION.encode()
            for layer, members in layers.items():
                group = f.create_group(layer)
                _write_names(h5py, group.attrs, "weight_names", [f"{model_name}/{v.name}" for v in members])
                for v in members:
                    if v.integer:
                        value = np.asarray(derived[v.canonical], dtype=np.int32)
                    else:
                        value = to_tf_layout(np.asarray(weights[v.canonical], dtype=np.float32), v.name)
                    group.create_dataset(f"{model_name}/{v.name}", data=np.ascontiguousarray(value))
            _write_names(h5py, f.create_group("top_level_model_weights").attrs, "weight_names", [])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
