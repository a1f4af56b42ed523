"""What the commands share: the demo weights, the exit codes, the CLI's own errors, and small
printing and argument helpers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import errors
from ..arguments import source_path
from ..errors import NpformerError
from ..layers import softmax
from ..models.registry import FAMILIES

# the demo weights trained on real data by weights/train_demo.py (a source checkout or an editable
# install has them): what `npformer predict IMAGE` uses when no --weights is given
DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / next(iter(FAMILIES.values())).demo_weights
DEFAULT_WEIGHTS: Path | None = DEMO_WEIGHTS if DEMO_WEIGHTS.is_file() else None
NO_DEFAULT_WEIGHTS = (f"no --weights given and the demo weights ({DEMO_WEIGHTS}) are not there: "
                      "install from a source checkout with `pip install -e .`, or pass --weights")

ORACLE_MODULES = ("torch", "transformers", "timm")
ORACLE_MISSING = "npformer parity needs the oracle extra (torch, transformers and timm; missing: {}): " \
                 "pip install 'npformer[oracle]'"
GENERATIONS = tuple(next(f.attention_generations for f in FAMILIES.values() if f.attention_generations))

EXIT_CODES = """\
exit status:
  0  success
  1  other npformer error (e.g. refusing to overwrite a file)
  2  usage error, or a missing optional extra
  3  config error          (config.json, preprocessor config, metadata, variant)
  4  weight file error     (missing, truncated, corrupt, wrong format)
  5  unsafe pickle refused (a .pth/.bin that references code)
  6  checkpoint mismatch   (missing/unexpected tensors, wrong shapes)
  7  input error           (pixel values the model cannot take)
  8  image error           (image missing or undecodable)
"""


# a command needing an optional extra that is not installed: the library's error (hub ids raise it too)
MissingExtraError = errors.MissingExtraError


class UsageError(NpformerError):
    """A command line npformer cannot act on (reported like argparse's own usage errors)."""

    exit_code = 2


def shape_text(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def table_lines(rows: list[tuple], align: str, indent: str = "") -> list[str]:
    """Rows of cells as aligned lines; `align` has one "<" or ">" per column."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(align))]
    lines = []
    for row in rows:
        cells = [f"{str(cell):{a}{w}}" for cell, a, w in zip(row, align, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def top_k(logits: np.ndarray, k: int) -> list[tuple[int, float, float]]:
    """(class index, probability, logit) of the k largest logits of one [num_labels] row, best
    first (ties: lower index first)."""
    logits = np.asarray(logits).reshape(-1)
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:k]
    return [(int(i), float(probs[i]), float(logits[i])) for i in order]


def weights_path(args) -> Path:
    path = args.weights if args.weights is not None else DEFAULT_WEIGHTS
    if path is None:
        raise UsageError(NO_DEFAULT_WEIGHTS)
    return source_path(path, "--weights")


def npformer_file_metadata(path: Path) -> dict | None:
    """The metadata of an npformer weight file, None for anything else (no tensors read)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception:  # not readable: load_any reports it properly
        return None
    return metadata if metadata.get("format") == "npformer" else None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def one_line(err: BaseException) -> str:
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def input_size(size) -> tuple[int, int] | None:
    """(H, W) from --size's one or two numbers; None when not given."""
    if size is None:
        return None
    if len(size) > 2:
        raise UsageError(f"--size takes one side (square input) or HEIGHT WIDTH, got {len(size)} numbers")
    return (size[0], size[-1])


def built_size(config) -> tuple[int, int]:
    """The input size a model runs as built: EfficientFormerV2's image_size; EfficientFormer 224 px
    when its grid takes it, else the largest side it takes; SwiftFormer (any size) 224 px."""
    if hasattr(config, "image_hw"):
        return config.image_hw
    if hasattr(config, "input_side_range") and config.attention_bias_resize is None:
        lo, hi = config.input_side_range()
        side = 224 if lo <= 224 <= hi else hi
        return (side, side)
    return (224, 224)


def load_at_size(args, path, dtype, fuse=False):
    """(model, metadata) of `path` for the --size and --bias-resize the command line asks for."""
    from ..loading import load

    return load(path, dtype, args.attention, fuse=fuse, image_size=input_size(args.size),
                attention_bias_resize=args.bias_resize)


def image_processor(args, weights, model, metadata):
    """(processor, description) for a command's images: --processor or the checkpoint's own
    (npformer.preprocess.make_processor), made to give --size pixels when that is set."""
    from ..preprocess.selection import make_processor, processor_at_size

    processor, description = make_processor(args.processor, weights, FAMILIES[model.family], metadata)
    size = input_size(args.size)
    if size is None:
        return processor, description
    processor, how = processor_at_size(processor, size)
    return processor, f"{description}, at {size[0]}×{size[1]}: {how}"
