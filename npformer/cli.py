"""The `npformer` command line: predict, convert, shapes, parity.

    npformer predict cat.png --weights efficientformer-l1.safetensors
    npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors
    npformer shapes --variant l3
    npformer parity --variants l1 --batch 1

`main(argv)` returns the exit status. Expected errors (every `NpformerError`) print one line,
`npformer: error: <message>`, to stderr and exit with the error's `exit_code`; usage errors
exit 2 as argparse does; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

from . import __version__
from .errors import NpformerError

# The weights `predict` uses without --weights. None until demo weights ship with the package;
# then this becomes their path (e.g. Path(__file__).parent / "data" / "efficientformer-l1.safetensors").
DEFAULT_WEIGHTS: Path | None = None
NO_DEFAULT_WEIGHTS = "no --weights given and no demo weights shipped yet; see weights/README.md"

ORACLE_MISSING = "npformer parity needs the oracle extra: pip install 'npformer[oracle]'"

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


class UsageError(NpformerError):
    """A command line npformer cannot act on (reported like argparse's own usage errors)."""

    exit_code = 2


class MissingExtraError(NpformerError):
    """A command that needs an optional extra (torch, transformers) that is not installed."""

    exit_code = 2


# ---------------------------------------------------------------------------------------------
# helpers


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _table(rows: list[tuple], align: str, indent: str = "") -> list[str]:
    """Rows of cells as aligned lines; `align` has one "<" or ">" per column."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(align))]
    lines = []
    for row in rows:
        cells = [f"{str(cell):{a}{w}}" for cell, a, w in zip(row, align, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int) -> list[tuple[int, float, float]]:
    """(class index, probability, logit) of the k largest logits of one [num_labels] row, best
    first (ties: lower index first)."""
    logits = np.asarray(logits).reshape(-1)
    probs = _softmax(logits)
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:k]
    return [(int(i), float(probs[i]), float(logits[i])) for i in order]


def _weights_path(args) -> Path:
    path = args.weights if args.weights is not None else DEFAULT_WEIGHTS
    if path is None:
        raise UsageError(NO_DEFAULT_WEIGHTS)
    return Path(path)


def _npformer_file_metadata(path: Path) -> dict | None:
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


def make_processor(spec: str | None, weights: Path):
    """The image processor for `predict`: `--processor` if given, else the weights
    directory's preprocessor_config.json, else the published snap-research settings."""
    from .preprocess import PREPROCESSOR_CONFIG_NAME, EfficientFormerImageProcessor

    if spec is None:
        own = weights / PREPROCESSOR_CONFIG_NAME
        if weights.is_dir() and own.is_file():
            return EfficientFormerImageProcessor.from_pretrained(own)
        return EfficientFormerImageProcessor.published()
    if spec == "published":
        return EfficientFormerImageProcessor.published()
    if spec == "default":
        return EfficientFormerImageProcessor()
    return EfficientFormerImageProcessor.from_pretrained(spec)


# ---------------------------------------------------------------------------------------------
# predict


def cmd_predict(args) -> int:
    from . import from_pretrained
    from .errors import CheckpointMismatchError
    from .labels import label_names

    weights = _weights_path(args)
    processor = make_processor(args.processor, weights)
    model = from_pretrained(weights, dtype=np.dtype(args.dtype))
    arch = type(model).__name__
    if model.num_heads == 0 or model.config.num_labels == 0:
        raise CheckpointMismatchError(
            f"{weights}: holds {arch} with no classifier head (num_labels={model.config.num_labels}); "
            "predict needs a classification checkpoint"
        )
    names = label_names(model.config)
    k = min(args.top, model.config.num_labels)

    # decode and preprocess every image first, so a bad file fails before any output
    pixels = [processor(image)["pixel_values"] for image in args.images]  # each [1, 3, h, w]
    results = [top_k(model(x).logits[0], k) for x in pixels]

    rows = [[(f"{rank}.", str(i), names[i], f"{100 * p:.2f}%", "logit", f"{logit:.3f}")
             for rank, (i, p, logit) in enumerate(result, start=1)] for result in results]
    widths = [max(len(row[c]) for image_rows in rows for row in image_rows) for c in range(6)]
    align = ">><>>>"
    for n, (image, image_rows) in enumerate(zip(args.images, rows)):
        if n:
            print()
        print(f"{image}  ({arch}, {args.dtype})")
        for row in image_rows:
            rank, index, label, prob, word, logit = (f"{c:{a}{w}}" for c, a, w in zip(row, align, widths))
            print(f"  {rank} {index} {label}  {prob}  {word} {logit}")
    return 0


# ---------------------------------------------------------------------------------------------
# convert

SOURCE_KINDS = {
    "transformers": "transformers model directory",
    "original": "original snap-research checkpoint",
    "timm": "timm checkpoint",
}


def cmd_convert(args) -> int:
    from . import convert_checkpoint
    from .config import EfficientFormerConfig
    from .weights import count_parameters, metadata_config, read_safetensors

    src, dst = Path(args.src), Path(args.dst)
    if dst.suffix != ".safetensors":
        raise UsageError(f"{dst}: DST must end in .safetensors (npformer weight files are safetensors files)")
    if dst.is_dir():
        raise NpformerError(f"{dst}: is a directory; give the file to write, e.g. {dst / 'model.safetensors'}")
    if dst.exists():
        if not args.force:
            raise NpformerError(f"{dst}: already exists; pass --force to overwrite it")
        if src.exists() and os.path.samefile(src, dst):
            raise NpformerError(f"{dst}: SRC and DST are the same file")
    if not dst.parent.is_dir():
        raise NpformerError(f"{dst.parent}: no such directory to write {dst.name} into")

    src_metadata = _npformer_file_metadata(src)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")  # written whole, then renamed: no half files
    try:
        metadata = convert_checkpoint(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)

    tensors, _ = read_safetensors(dst)
    config = EfficientFormerConfig.from_dict(metadata_config(metadata), source=f"{dst} (metadata config)")
    if src_metadata is not None:
        origin = metadata.get("source", "?")
        source = "npformer weight file" + (
            f", converted from a {SOURCE_KINDS[origin]}" if origin in SOURCE_KINDS else f" (source: {origin})")
    else:
        source = SOURCE_KINDS.get(metadata.get("source"), metadata.get("source", "?"))
    variant = metadata.get("variant")
    variant = f"EfficientFormer-{variant.upper()}" if variant else (
        f"custom (hidden_sizes {config.hidden_sizes}, depths {config.depths}, "
        f"{config.num_meta3d_blocks} attention block{'s' if config.num_meta3d_blocks != 1 else ''})")
    rows = [
        ("source", source),
        ("architecture", metadata["architecture"]),
        ("variant", variant),
        ("num_labels", str(config.num_labels)),
        ("tensors", f"{len(tensors):,}"),
        ("parameters", f"{count_parameters(tensors):,}"),
        ("wrote", f"{dst} ({dst.stat().st_size / 1e6:.1f} MB)"),
    ]
    print(f"converted {src}")
    print("\n".join(_table(rows, "<<", indent="  ")))
    return 0


# ---------------------------------------------------------------------------------------------
# shapes

BLOCK_KINDS = {"meta4d": "Meta4D (pool)", "flat": "Flat", "meta3d": "Meta3D (attention)"}


def stage_level_names(cfg, architecture: str) -> dict[str, str]:
    """{name: kind} of every stage-level output a forward traces, in forward order."""
    from .efficientformer import block_names

    names = {"stem": "stem"}
    for stage in range(4):
        if stage > 0 and cfg.has_downsample(stage):
            names[f"stages.{stage}.downsample"] = "downsample"
        for kind, name in block_names(cfg, stage):
            names[name] = BLOCK_KINDS[kind]
        names[f"stages.{stage}"] = "stage output"
    names["norm"] = "LayerNorm"
    if architecture != "EfficientFormerModel":
        names["pooled"] = "mean over tokens"
        if architecture == "EfficientFormerForImageClassification":
            names["head"] = "head (= logits)"
        else:
            names |= {"head": "head", "head_dist": "distillation head", "logits": "(head + head_dist) / 2"}
    return names


def cmd_shapes(args) -> int:
    from . import EfficientFormerForImageClassificationWithTeacher, Trace, from_pretrained
    from .config import EfficientFormerConfig
    from .convert import variant_name
    from .seeded import seeded_weights
    from .weights import count_parameters

    if args.weights is not None:
        model = from_pretrained(args.weights)
        variant = variant_name(model.config)
        title = f"{args.weights} ({'EfficientFormer-' + variant.upper() if variant else 'custom config'})"
    else:
        cfg = EfficientFormerConfig.variant(args.variant)
        model = EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, num_heads=2))
        title = f"EfficientFormer-{args.variant.upper()} (seeded weights)"
    arch = type(model).__name__
    kinds = stage_level_names(model.config, arch)
    trace = Trace(["*"] if args.all else list(kinds))
    pixels = np.zeros((args.batch, model.config.num_channels, args.size, args.size), dtype=np.float32)
    model(pixels, trace=trace)

    params = count_parameters(model.weights)
    print(f"{title}, {arch}, {params:,} parameters, input {_shape(pixels.shape)}")
    rows = [("name", "kind", "shape", "elements")]
    rows += [(name, kinds.get(name, ""), _shape(x.shape), f"{x.size:,}") for name, x in trace.records.items()]
    lines = _table(rows, "<<<>", indent="  ")
    print(lines[0])
    print("  " + "-" * (max(len(line) for line in lines) - 2))
    print("\n".join(lines[1:]))
    return 0


# ---------------------------------------------------------------------------------------------
# parity


def oracle_available() -> bool:
    """Whether torch and transformers (the oracle extra) can be imported."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_parity(args) -> int:
    if not oracle_available():
        raise MissingExtraError(ORACLE_MISSING)
    from .parity import parity_table

    parity_table(variants=tuple(args.variants), batches=tuple(args.batch))
    return 0


# ---------------------------------------------------------------------------------------------
# the parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _wrap(text: str, width: int = 88) -> str:
    """Fill each paragraph of a description (the raw formatter keeps the epilog examples as written)."""
    return "\n\n".join(
        "\n".join(textwrap.fill(line, width) for line in para.split("\n")) for para in text.split("\n\n")
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="npformer",
        description=_wrap("EfficientFormer in pure NumPy: classify images, convert checkpoints, inspect shapes, "
                    "check parity with transformers."),
        epilog="examples:\n"
               "  npformer predict cat.png --weights efficientformer-l1.safetensors\n"
               "  npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors\n"
               "  npformer shapes --variant l3\n"
               "  npformer parity --variants l1 --batch 1\n\n"
               "run 'npformer COMMAND --help' for a command's options.\n\n" + EXIT_CODES,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"npformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    weights_help = ("an npformer .safetensors file, a transformers model directory (config.json + "
                    "model.safetensors or pytorch_model.bin), or an original / timm .pth checkpoint")

    p = sub.add_parser(
        "predict", help="classify images: top-K classes with probabilities",
        description=_wrap("Classify images with an EfficientFormer checkpoint and print the top-K classes: rank, class "
                    "index, probability (softmax of the logits), logit and label.\n\n"
                    "Preprocessing: the weights directory's preprocessor_config.json if it has one, else the "
                    "published snap-research settings (shortest edge 256, bicubic, center crop 224, ImageNet "
                    "mean/std); --processor overrides.\n"
                    "Labels: the config's id2label if it has real names, else the ImageNet-1k names for a "
                    "1000-class model, else 'class N'."),
        epilog="example:\n"
               "  npformer predict two_cats.png chelsea.jpg --weights efficientformer-l1.safetensors --top 3\n\n"
               "prints, per image, a header line 'IMAGE  (model class, dtype)' and then K lines:\n"
               "  rank. class-index label  probability%  logit value",
        formatter_class=fmt,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--weights", metavar="PATH",
                   help=f"the checkpoint: {weights_help} (required until demo weights ship)")
    p.add_argument("--top", "-k", type=_positive_int, default=5, metavar="K", help="classes to show (default 5)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="compute dtype of the forward pass (default float32)")
    p.add_argument("--processor", metavar="PATH_OR_NAME",
                   help="preprocessing: a preprocessor_config.json file or a directory holding one, or "
                        "'published' (snap-research settings) or 'default' (transformers' code defaults: "
                        "squash to 224×224)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "convert", help="convert a checkpoint to an npformer .safetensors weight file",
        description=_wrap(f"Convert a checkpoint to an npformer weight file (safetensors, timm key names, with the "
                    f"config and provenance in its metadata). SRC: {weights_help}. Reading a .pth never runs "
                    f"code from it."),
        epilog="example:\n"
               "  npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors\n"
               "  npformer convert ./efficientformer-l1-300/ l1.safetensors --force",
        formatter_class=fmt,
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint to convert")
    p.add_argument("dst", metavar="DST", help="the .safetensors file to write")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "shapes", help="tensor shape of every stage of a model",
        description=_wrap("Run a model on zeros and print the shape of every stage-level output (stem, downsamples, "
                    "each block with its kind, stage outputs, norm, pooled, heads, logits) and its element "
                    "count. Uses seeded weights for --variant, or a real checkpoint's config with --weights."),
        epilog="example:\n"
               "  npformer shapes --variant l7 --batch 4\n"
               "  npformer shapes --weights efficientformer-l1.safetensors --all",
        formatter_class=fmt,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--variant", choices=("l1", "l3", "l7"), default="l1", help="published variant (default l1)")
    which.add_argument("--weights", metavar="PATH", help=f"use this checkpoint instead: {weights_help}")
    p.add_argument("--size", type=_positive_int, default=224, help="input height and width in pixels (default 224)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--all", action="store_true", help="print every traced sub-layer, not only stage-level outputs")
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser(
        "parity", help="max |npformer − transformers| on seeded weights (needs torch)",
        description=_wrap("Compare npformer with transformers 4.40.2 on seeded weights and seeded pixels, for each "
                    "variant, model class and batch size, in float32 and float64, and print the largest absolute "
                    "differences of the logits, hidden states and attentions. Needs the oracle extra: "
                    "pip install 'npformer[oracle]'."),
        epilog="example:\n"
               "  npformer parity --variants l1 --batch 1",
        formatter_class=fmt,
    )
    p.add_argument("--variants", nargs="+", choices=("l1", "l3", "l7"), default=["l1", "l3", "l7"],
                   metavar="VARIANT", help="any of l1 l3 l7 (default: all three)")
    p.add_argument("--batch", nargs="+", type=_positive_int, default=[1, 4], metavar="B",
                   help="batch sizes (default: 1 4)")
    p.set_defaults(func=cmd_parity)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def main(argv=None) -> int:
    """Run the CLI on `argv` (default sys.argv[1:]) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    try:
        return args.func(args)
    except NpformerError as err:
        print(f"npformer: error: {_one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("npformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `npformer shapes --all | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
