"""npformer weight files: one canonical safetensors layout, self-describing, strictly checked.

A weight file is a safetensors file whose tensors use timm's key names (the cleanest of the
three schemas, e.g. `stages.3.blocks.4.token_mixer.qkv.weight`) without derived buffers
(`attention_bias_idxs`, `num_batches_tracked`), and whose metadata (strings, as safetensors
requires) says what it is:

    format          "npformer"
    format_version  "1"
    family          "efficientformer" or "swiftformer"
    attention_generation  SwiftFormer only: "v1" or "v2" (also in the config; the two must agree)
    architecture    "EfficientFormerForImageClassificationWithTeacher" (or ...ForImageClassification, ...Model)
    config          the transformers config.json, as JSON
    source          where the tensors came from ("transformers", "original", "timm", "seeded", ...)
    checkpoint      the checkpoint's name or path
    converted       conversion date (ISO 8601, UTC)
    npformer_version

and optionally, for weights npformer trained itself (the demo weights):

    preprocessor    the image processor's settings (its to_dict(), JSON); `predict` uses them
    dataset, split, heldout_accuracy_pytorch, training    where the weights came from

The expected key set and shapes for a config come from the model module (`weight_schema`); the
check here reports every missing key, unexpected key, shape and dtype mismatch by name.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from . import __version__
from .errors import CheckpointMismatchError, WeightFileError

FORMAT = "npformer"
FORMAT_VERSION = 1


class Params:
    """A read-only view of a flat {name: array} dict under a dotted prefix.

    >>> p = Params({"stem.conv1.weight": w}); p.scope("stem.conv1")["weight"] is w
    True
    """

    def __init__(self, tensors: dict, prefix: str = ""):
        self.tensors = tensors
        self.prefix = prefix

    def __getitem__(self, key: str) -> np.ndarray:
        return self.tensors[self.prefix + key]

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.tensors

    def scope(self, name: str) -> "Params":
        return Params(self.tensors, self.prefix + name + ".")


def make_metadata(family: str, architecture: str, config: dict, source: str, checkpoint: str) -> dict:
    """The metadata block of a new weight file."""
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "family": family,
        "architecture": architecture,
        "config": json.dumps(config, sort_keys=True),
        "source": source,
        "checkpoint": str(checkpoint),
        "converted": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "npformer_version": __version__,
    }
    if "attention_generation" in config:  # SwiftFormer: which additive attention the weights need
        meta["attention_generation"] = config["attention_generation"]
    return meta


def save_weights(path, tensors: dict, metadata: dict) -> None:
    """Write tensors (made contiguous) and metadata to a safetensors file."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


def read_safetensors(path) -> tuple[dict, dict]:
    """All tensors and the metadata of any safetensors file, with errors that name the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError and OSError/ValueError/TypeError
        raise WeightFileError(f"{path}: not a readable safetensors file ({err})") from None
    return tensors, metadata


def validate_metadata(path, metadata: dict) -> None:
    """Refuse files that are not npformer weight files, come from a future format, or lack a config."""
    if metadata.get("format") != FORMAT:
        raise WeightFileError(
            f"{path}: not an npformer weight file (metadata format={metadata.get('format')!r}); "
            "convert it first with `npformer convert SRC DST`"
        )
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise WeightFileError(
            f"{path}: npformer format version {version!r} is newer than this npformer understands "
            f"({FORMAT_VERSION}); upgrade npformer"
        )
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{path}: metadata has no valid 'config' ({err})") from None
    if not isinstance(config, dict):
        raise WeightFileError(f"{path}: metadata 'config' is not a JSON object")


def load_weights(path) -> tuple[dict, dict]:
    """Tensors and (string-valued) metadata of an npformer weight file; refuses other files and future formats."""
    tensors, metadata = read_safetensors(path)
    validate_metadata(path, metadata)
    return tensors, metadata


def metadata_config(metadata: dict) -> dict:
    """The config dict stored (as JSON) in a weight file's metadata."""
    return json.loads(metadata["config"])


def check_tensors(tensors: dict, schema: dict, source: str) -> None:
    """Strict check of tensors against a schema {name: (shape, dtype kind)}; every problem by name."""
    problems = []
    missing = sorted(set(schema) - set(tensors))
    unexpected = sorted(set(tensors) - set(schema))
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    for name in sorted(set(schema) & set(tensors)):
        shape = tuple(schema[name])
        got = tensors[name]
        if tuple(got.shape) != shape:
            problems.append(f"{name}: expected shape {shape}, got {tuple(got.shape)}")
        elif got.dtype.kind != "f":
            problems.append(f"{name}: expected a floating-point tensor, got {got.dtype}")
    if problems:
        raise CheckpointMismatchError(f"{source}: " + "; ".join(problems))


def count_parameters(tensors: dict) -> int:
    """Learned parameters, as PyTorch counts them: BatchNorm running statistics are buffers, not
    parameters (L1 with both heads: 12,289,928, timm's published count)."""
    return sum(int(v.size) for k, v in tensors.items() if not k.endswith(("running_mean", "running_var")))
