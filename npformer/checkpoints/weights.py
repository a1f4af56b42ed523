"""npformer weight files: one canonical safetensors layout, self-describing, strictly checked.

A weight file is a safetensors file whose tensors use timm's key names (the cleanest of the
three schemas, e.g. `stages.3.blocks.4.token_mixer.qkv.weight`) without derived buffers
(`attention_bias_idxs`, `num_batches_tracked`), and whose metadata (strings, as safetensors
requires) says what it is:

    format          "npformer"
    format_version  "1"
    family          "efficientformer", "swiftformer" or "efficientformerv2" (npformer.models.registry)
    attention_generation  SwiftFormer only: "v1" or "v2" (also in the config; the two must agree)
    architecture    "EfficientFormerForImageClassificationWithTeacher" (or ...ForImageClassification, ...Model)
    config          the transformers config.json, as JSON
    source          where the tensors came from ("transformers", "original", "timm", "seeded", ...)
    recipe          converted checkpoints: the preprocessing recipe their source publishes (npformer.preprocess.RECIPES)
    variant         converted checkpoints of a published variant: "l1", "xs", "s0", ... (checked against the config)
    checkpoint      the checkpoint's name or path
    converted       conversion date (ISO 8601, UTC)
    npformer_version

and optionally, for weights npformer trained itself (the demo weights):

    preprocessor    the image processor's settings (its to_dict(), JSON); `predict` uses them
    dataset, split, heldout_accuracy_pytorch, training    where the weights came from

The expected key set and shapes for a config come from the model module (`weight_schema`); the
check here reports every missing key, unexpected key, shape and dtype mismatch by name
(CheckpointMismatchError), then refuses values no trained model has: NaN, ±inf, values beyond
float32's range, negative BatchNorm variances (WeightFileError, each tensor with its count).
"""

from __future__ import annotations

import datetime
import json
import re
import struct
from pathlib import Path

import numpy as np

from .._version import __version__
from ..arguments import output_file
from ..errors import ConfigError, WeightFileError
from ..jsonfile import parse_json_object
from ..models.schema import check_tensors, check_values  # noqa: F401 (the contract's own check, used by every reader)

FORMAT = "npformer"
FORMAT_VERSION = 1


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
    """Write tensors (made contiguous) and metadata to a safetensors file at `path`.

    An npformer weight file is one file whose name ends in .safetensors (the suffix is how every
    loader recognises it; a directory given to a loader is read as a transformers or timm model
    directory). So `path` must name a file in an existing directory: an existing directory, a
    trailing "/", a missing parent or another suffix is refused (npformer/arguments.py's
    `output_file`) before anything is written. An existing file is replaced."""
    from safetensors.numpy import save_file

    path = output_file(path, "path", instead=", or save with format='transformers', which writes a directory")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


# safetensors dtype names npformer reads, and how: NumPy has no bfloat16, so BF16 tensors are read
# from the raw bytes (a bfloat16 is the top half of a float32: exact). Anything else (F8_*, F4, ...)
# is refused by name; integer, bool and complex tensors load and are refused by `check_tensors`.
_SAFETENSORS_DTYPES = ("F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64",
                       "BOOL", "C64", "C128")


def _read_bf16(path: Path, key: str, shape) -> np.ndarray:
    """A BF16 tensor as float32, read from the file's own header and data offsets."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(n))[key]
        start, end = entry["data_offsets"]
        f.seek(8 + n + start)
        raw = f.read(end - start)
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


def read_safetensors(path) -> tuple[dict, dict]:
    """All tensors and the metadata of any safetensors file, with errors that name the file (and
    the key, for a tensor npformer cannot read)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if size < 8:
        raise WeightFileError(f"{path}: not a readable safetensors file ({size} bytes; the header length alone takes 8)")
    (header_length,) = struct.unpack("<Q", head)
    if 8 + header_length > size:
        raise WeightFileError(
            f"{path}: not a readable safetensors file (its header length {header_length:,} is larger than the "
            f"{size:,}-byte file: truncated, or not a safetensors file)"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {}
            for key in f.keys():
                dtype, shape = f.get_slice(key).get_dtype(), f.get_slice(key).get_shape()
                if dtype not in _SAFETENSORS_DTYPES:
                    raise WeightFileError(
                        f"{path}: tensor {key!r} has dtype {dtype}, which npformer cannot read "
                        "(it reads F16, BF16, F32 and F64 weights)"
                    )
                tensors[key] = _read_bf16(path, key, shape) if dtype == "BF16" else f.get_tensor(key)
    except WeightFileError:
        raise
    except Exception as err:  # safetensors raises its own SafetensorError and OSError/ValueError/TypeError
        raise WeightFileError(f"{path}: not a readable safetensors file ({err})") from None
    return tensors, metadata


def validate_metadata(path, metadata: dict) -> None:
    """Refuse files that are not npformer weight files, have no, a malformed or an unknown (older or
    future) format version, or lack a config."""
    if metadata.get("format") != FORMAT:
        raise WeightFileError(
            f"{path}: not an npformer weight file (metadata format={metadata.get('format')!r}); "
            "convert it first with `npformer convert SRC DST`"
        )
    version = metadata.get("format_version")
    if version is None:
        raise WeightFileError(f"{path}: metadata has no format_version; convert the source checkpoint again")
    if not re.fullmatch(r"[0-9]{1,18}", version):
        raise WeightFileError(f"{path}: metadata format_version {version!r} is not a version number")
    if int(version) > FORMAT_VERSION:
        raise WeightFileError(
            f"{path}: npformer format version {version!r} is newer than this npformer understands "
            f"({FORMAT_VERSION}); upgrade npformer"
        )
    if int(version) < 1:
        raise WeightFileError(f"{path}: npformer format version {version!r} never existed (versions start at 1)")
    if "config" not in metadata:
        raise WeightFileError(f"{path}: metadata has no 'config'")
    try:
        parse_json_object(metadata["config"], "metadata 'config'")
    except ConfigError as err:
        raise WeightFileError(f"{path}: metadata has no valid 'config': {err}") from None


def load_weights(path) -> tuple[dict, dict]:
    """Tensors and (string-valued) metadata of an npformer weight file; refuses other files and future formats."""
    tensors, metadata = read_safetensors(path)
    validate_metadata(path, metadata)
    return tensors, metadata


def metadata_config(metadata: dict) -> dict:
    """The config dict stored (as JSON) in a weight file's metadata."""
    return parse_json_object(metadata["config"], "metadata config")


def count_parameters(tensors: dict) -> int:
    """Learned parameters, as PyTorch counts them: BatchNorm running statistics are buffers, not
    parameters (L1 with both heads: 12,289,928, timm's published count)."""
    return sum(int(v.size) for k, v in tensors.items() if not k.endswith(("running_mean", "running_var")))
