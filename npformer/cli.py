"""The `npformer` command line: predict, convert, shapes, parity, trace, compare, for EfficientFormer and SwiftFormer.

    npformer predict cat.png --weights efficientformer-l1.safetensors
    npformer predict cat.png --weights ./swiftformer-xs/               # a transformers directory
    npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors
    npformer convert SwiftFormer_XS.pth swiftformer-xs.safetensors --attention v1
    npformer shapes --variant swiftformer-xs --size 256
    npformer parity --families swiftformer --variants xs --batch 1
    npformer trace cat.png golden.safetensors --dtype float64
    npformer compare port.safetensors golden.safetensors --atol 1e-5

`main(argv)` returns the exit status. Expected errors (every `NpformerError`) print one line,
`npformer: error: <message>`, to stderr and exit with the error's `exit_code`; usage errors
exit 2 as argparse does; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

from . import __version__
from .errors import NpformerError

# The weights `predict` uses without --weights. None until demo weights ship with the package;
# then this becomes their path (e.g. Path(__file__).parent / "data" / "efficientformer-l1.safetensors").
# the demo weights trained on real data by weights/train_demo.py (a source checkout or an editable
# install has them): what `npformer predict IMAGE` uses when no --weights is given
DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "efficientformer-digits.safetensors"
DEFAULT_WEIGHTS: Path | None = DEMO_WEIGHTS if DEMO_WEIGHTS.is_file() else None
NO_DEFAULT_WEIGHTS = (f"no --weights given and the demo weights ({DEMO_WEIGHTS}) are not there: "
                      "install from a source checkout with `pip install -e .`, or pass --weights")

ORACLE_MODULES = ("torch", "transformers", "timm")
ORACLE_MISSING = "npformer parity needs the oracle extra (torch, transformers and timm; missing: {}): " \
                 "pip install 'npformer[oracle]'"
FAMILY_NAMES = ("efficientformer", "swiftformer")
DISPLAY = {"efficientformer": "EfficientFormer", "swiftformer": "SwiftFormer"}
GENERATIONS = ("v1", "v2")

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
    """A command that needs an optional extra (torch, transformers, timm) that is not installed."""

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


# preprocessing `predict` uses without --processor, by where the weights came from (metadata `source`)
SOURCE_RECIPES = {"timm": "timm", "original": "original"}
TRANSFORMERS_RECIPES = {"efficientformer": "efficientformer-hf", "swiftformer": "swiftformer-hf"}


def _processor_class(named: str | None, family: str):
    """The processor class a config names in `image_processor_type`, else the family's (as
    transformers' AutoImageProcessor decides): EfficientFormerImageProcessor, ViTImageProcessor."""
    from .preprocess import EfficientFormerImageProcessor, ViTImageProcessor

    classes = {cls.__name__: cls for cls in (EfficientFormerImageProcessor, ViTImageProcessor)}
    return classes.get(named) or {"efficientformer": EfficientFormerImageProcessor, "swiftformer": ViTImageProcessor}[family]


def _processor_from_config(path: Path, family: str):
    """(processor, description) from a preprocessor_config.json (or a directory holding one)."""
    from .preprocess import PREPROCESSOR_CONFIG_NAME

    file = path / PREPROCESSOR_CONFIG_NAME if path.is_dir() else path
    try:
        named = json.loads(file.read_text()).get("image_processor_type")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):  # from_pretrained says what is wrong
        named = None
    cls = _processor_class(named, family)
    return cls.from_pretrained(file), f"{file} ({cls.__name__})"


def _processor_from_metadata(weights: Path, text: str, family: str):
    """(processor, description) from a weight file's `preprocessor` metadata (a processor's to_dict())."""
    from .errors import WeightFileError

    try:
        config = json.loads(text)
        cls = _processor_class(config.get("image_processor_type"), family)
    except (ValueError, AttributeError) as err:
        raise WeightFileError(f"{weights}: metadata 'preprocessor' is not a JSON object ({err})") from None
    return cls.from_dict(config), f"the weight file's own ({cls.__name__})"


def make_processor(spec: str | None, weights: Path, family: str, metadata: dict):
    """(processor, description) for `predict`.

    `--processor` if given: a recipe name (npformer.preprocess.RECIPES), 'published' / 'default'
    (the family's transformers settings: published checkpoints' / code defaults), or a
    preprocessor_config.json file or a directory holding one. Without it: the weights directory's
    preprocessor_config.json, else the weight file's own (metadata `preprocessor`, as the demo
    weights carry), else the recipe of the weights' source (metadata `source`):
    transformers → the family's published transformers settings, timm → 'timm', original →
    'original', anything else (npformer, seeded) → the family's transformers settings."""
    from .preprocess import PREPROCESSOR_CONFIG_NAME, RECIPES, ViTImageProcessor, recipe

    if spec is None:
        if weights.is_dir() and (weights / PREPROCESSOR_CONFIG_NAME).is_file():
            return _processor_from_config(weights / PREPROCESSOR_CONFIG_NAME, family)
        if "preprocessor" in metadata:
            return _processor_from_metadata(weights, metadata["preprocessor"], family)
        spec = SOURCE_RECIPES.get(metadata.get("source"), TRANSFORMERS_RECIPES[family])
    if spec == "published":
        spec = TRANSFORMERS_RECIPES[family]
    if spec == "default":
        if family == "swiftformer":
            return ViTImageProcessor(), "default (ViTImageProcessor code defaults)"
        spec = "efficientformer-hf-default"
    if spec in RECIPES:
        return recipe(spec), spec
    return _processor_from_config(Path(spec), family)


def load_model(weights: Path, dtype, attention_generation=None):
    """(model, metadata) of any checkpoint `from_pretrained` reads."""
    from . import architectures
    from .convert import load_any

    config, tensors, metadata = load_any(weights, attention_generation)
    return architectures()[metadata["architecture"]](config, tensors, dtype=dtype), metadata


# ---------------------------------------------------------------------------------------------
# predict


def cmd_predict(args) -> int:
    from .errors import CheckpointMismatchError
    from .labels import label_names

    weights = _weights_path(args)
    model, metadata = load_model(weights, np.dtype(args.dtype), args.attention)
    model = model.fuse()  # the fast path: BatchNorms folded into their convolutions
    processor, preprocessing = make_processor(args.processor, weights, model.family, metadata)
    arch = type(model).__name__
    if model.num_heads == 0 or model.config.num_labels == 0:
        raise CheckpointMismatchError(
            f"{weights}: holds {arch} with no classifier head (num_labels={model.config.num_labels}); "
            "predict needs a classification checkpoint"
        )
    names = label_names(model.config)
    k = min(args.top, model.config.num_labels)
    describe = arch + (f", attention {model.config.attention_generation}" if model.family == "swiftformer" else "")

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
        print(f"{image}  ({describe}, {args.dtype}, preprocessing: {preprocessing})")
        for row in image_rows:
            rank, index, label, prob, word, logit = (f"{c:{a}{w}}" for c, a, w in zip(row, align, widths))
            print(f"  {rank} {index} {label}  {prob}  {word} {logit}")
    return 0


# ---------------------------------------------------------------------------------------------
# convert

SOURCE_KINDS = {
    "transformers": "transformers model directory",
    "original": {"efficientformer": "original snap-research checkpoint",
                 "swiftformer": "original Amshaker/SwiftFormer checkpoint"},
    "timm": "timm checkpoint",
}


def _file_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _source_kind(source: str, family: str) -> str | None:
    kind = SOURCE_KINDS.get(source)
    return kind[family] if isinstance(kind, dict) else kind


def _architecture_summary(config) -> str:
    """"custom (...)": the sizes of a config that is not a published variant."""
    if config.model_type == "swiftformer":
        return f"custom (embed_dims {config.embed_dims}, depths {config.depths})"
    return (f"custom (hidden_sizes {config.hidden_sizes}, depths {config.depths}, "
            f"{config.num_meta3d_blocks} attention block{'s' if config.num_meta3d_blocks != 1 else ''})")


def _attention_summary(generation: str, origin: str, from_file: bool, requested: str | None) -> str:
    """"v1 (why we know): what it computes" for convert's report."""
    from .config import ATTENTION_GENERATIONS

    if from_file:
        why = "as the npformer file records"
    elif origin in ("transformers", "timm"):
        why = f"{origin} checkpoints are always {generation}"
    else:
        why = f"given by --attention {requested}"
    return f"{generation} ({why}): {ATTENTION_GENERATIONS[generation]}"


def cmd_convert(args) -> int:
    from . import convert_checkpoint
    from .convert import FAMILIES
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
        metadata = convert_checkpoint(src, tmp, attention_generation=args.attention)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)

    tensors, _ = read_safetensors(dst)
    family = metadata["family"]
    config = FAMILIES[family][0].from_dict(metadata_config(metadata), source=f"{dst} (metadata config)")
    origin = metadata.get("source", "?")
    if src_metadata is not None:
        kind = _source_kind(origin, family)
        article = "an" if kind and kind[0] in "aeiou" else "a"
        source = "npformer weight file" + (f", converted from {article} {kind}" if kind else f" (source: {origin})")
    else:
        source = _source_kind(origin, family) or origin
    variant = metadata.get("variant")
    rows = [
        ("source", source),
        ("architecture", metadata["architecture"]),
        ("variant", f"{DISPLAY[family]}-{variant.upper()}" if variant else _architecture_summary(config)),
    ]
    if family == "swiftformer":
        rows.append(("attention", _attention_summary(config.attention_generation, origin, src_metadata is not None,
                                                     args.attention)))
    rows += [
        ("num_labels", str(config.num_labels)),
        ("tensors", f"{len(tensors):,}"),
        ("parameters", f"{count_parameters(tensors):,}"),
        ("wrote", f"{dst} ({_file_size(dst.stat().st_size)})"),
    ]
    print(f"converted {src}")
    print("\n".join(_table(rows, "<<", indent="  ")))
    return 0


# ---------------------------------------------------------------------------------------------
# shapes

BLOCK_KINDS = {"meta4d": "Meta4D (pool)", "flat": "Flat", "meta3d": "Meta3D (attention)",
               "conv_encoder": "ConvEncoder", "encoder": "encoder (additive attention)"}

# --variant names: bare l1 l3 l7 are EfficientFormer (as before SwiftFormer arrived); every
# variant also has its family-prefixed name (l1 and l3 exist in both families)
SHAPE_VARIANTS = {
    **{v: ("efficientformer", v) for v in ("l1", "l3", "l7")},
    **{f"efficientformer-{v}": ("efficientformer", v) for v in ("l1", "l3", "l7")},
    **{f"swiftformer-{v}": ("swiftformer", v) for v in ("xs", "s", "l1", "l3")},
}


def stage_level_names(cfg, architecture: str) -> dict[str, str]:
    """{name: kind} of every stage-level output a forward traces, in forward order."""
    from . import efficientformer, swiftformer

    module = swiftformer if cfg.model_type == "swiftformer" else efficientformer
    names = {"stem": "stem"}
    for stage in range(4):
        if stage > 0 and cfg.has_downsample(stage):
            names[f"stages.{stage}.downsample"] = "downsample"
        for kind, name in module.block_names(cfg, stage):
            names[name] = BLOCK_KINDS[kind]
        names[f"stages.{stage}"] = "stage output"
    if cfg.model_type == "swiftformer":
        if architecture != "SwiftFormerModel":
            names |= {"norm": "BatchNorm", "pooled": "mean over positions", "head": "head",
                      "head_dist": "distillation head", "logits": "(head + head_dist) / 2"}
        return names
    names["norm"] = "LayerNorm"
    if architecture != "EfficientFormerModel":
        names["pooled"] = "mean over tokens"
        if architecture == "EfficientFormerForImageClassification":
            names["head"] = "head (= logits)"
        else:
            names |= {"head": "head", "head_dist": "distillation head", "logits": "(head + head_dist) / 2"}
    return names


def _input_size(size: list[int]) -> tuple[int, int]:
    if len(size) > 2:
        raise UsageError(f"--size takes one side (square input) or HEIGHT WIDTH, got {len(size)} numbers")
    return (size[0], size[-1])


def cmd_shapes(args) -> int:
    from . import architectures
    from .config import EfficientFormerConfig, SwiftFormerConfig
    from .convert import variant_name
    from .errors import ConfigError
    from .seeded import seeded_weights
    from .trace import Trace
    from .weights import count_parameters

    height, width = _input_size(args.size)
    if args.weights is not None:
        model, _ = load_model(Path(args.weights), np.float32, args.attention)
        variant = variant_name(model.config)
        name = f"{DISPLAY[model.family]}-{variant.upper()}" if variant else f"custom {DISPLAY[model.family]} config"
        title = f"{args.weights} ({name})"
    else:
        family, variant = SHAPE_VARIANTS[args.variant]
        if family == "swiftformer":
            cfg = SwiftFormerConfig.variant(variant, attention_generation=args.attention or "v1")
            arch = "SwiftFormerForImageClassification"
        elif args.attention is not None:
            raise ConfigError(f"--attention applies to SwiftFormer only, {args.variant} is an EfficientFormer")
        else:
            cfg = EfficientFormerConfig.variant(variant)
            arch = "EfficientFormerForImageClassificationWithTeacher"
        model = architectures()[arch](cfg, seeded_weights(cfg, num_heads=2))
        title = f"{DISPLAY[family]}-{variant.upper()} (seeded weights)"
    arch = type(model).__name__
    kinds = stage_level_names(model.config, arch)
    trace = Trace(["*"] if args.all else list(kinds))
    pixels = np.zeros((args.batch, model.config.num_channels, height, width), dtype=np.float32)
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


PARITY_VARIANTS = ("l1", "l3", "l7", "xs", "s")  # parity.CASES' variant names (l1 and l3 in both families)
REFERENCES = ("transformers", "timm")


def missing_extras() -> list[str]:
    """Which of torch, transformers and timm (the oracle extra) cannot be imported.

    Without torch the other two are only looked up, not imported (transformers would warn on stderr)."""
    missing = []
    try:
        importlib.import_module("torch")
    except ImportError:
        missing.append("torch")
    for name in ORACLE_MODULES[1:]:
        try:
            if "torch" in missing:
                if importlib.util.find_spec(name) is None:
                    missing.append(name)
            elif name == "timm":
                from .oracle import import_timm

                import_timm()  # timm with the torchvision workaround; parity_table then finds it imported
            else:
                importlib.import_module(name)
        except (ImportError, ValueError):  # ValueError: find_spec of a module set to None in sys.modules
            missing.append(name)
    return missing


def oracle_available() -> bool:
    """Whether torch, transformers and timm (the oracle extra) can all be imported."""
    return not missing_extras()


def cmd_parity(args) -> int:
    from .parity import CASES

    families, references = tuple(args.families), tuple(args.references)
    variants = tuple(args.variants) if args.variants else None
    if not any(f in families and r in references and (variants is None or v in variants) for f, v, r, _ in CASES):
        raise UsageError(f"no parity case is a {' or '.join(families)} variant among {', '.join(variants or ())}; "
                         "EfficientFormer has l1 l3 l7, SwiftFormer xs s l1 l3")
    missing = missing_extras()
    if missing:
        raise MissingExtraError(ORACLE_MISSING.format(", ".join(missing)))
    from .parity import parity_table

    parity_table(families=families, variants=variants, references=references, batches=tuple(args.batch))
    return 0


# ---------------------------------------------------------------------------------------------
# trace, compare (golden-value fixtures, see npformer.oracle_tools)


def _load_pixels(args, model, weights: Path, metadata: dict) -> tuple[np.ndarray, str]:
    """(pixel values [B, C, H, W], description) from a .npy file or an image preprocessed as `predict` does."""
    from .errors import InputError

    source = Path(args.input)
    if source.suffix.lower() == ".npy":
        try:
            pixels = np.load(source, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
            raise InputError(f"{source}: cannot read as a .npy array ({_one_line(err)})") from None
        if pixels.ndim != 4 or not np.issubdtype(pixels.dtype, np.floating):
            raise InputError(f"{source}: expected NCHW float pixel values [B, C, H, W], "
                             f"got shape {_shape(pixels.shape)} dtype {pixels.dtype}")
        return pixels, "pixel values from .npy"
    processor, preprocessing = make_processor(args.processor, weights, model.family, metadata)
    return processor(source)["pixel_values"], f"preprocessing: {preprocessing}"


def cmd_trace(args) -> int:
    from .oracle_tools import trace_to_fixture

    weights = _weights_path(args)
    model, metadata = load_model(weights, np.dtype(args.dtype), args.attention)
    pixels, how = _load_pixels(args, model, weights, metadata)
    meta = trace_to_fixture(model, pixels, args.out, weights_name=str(weights))
    count = len(json.loads(meta["names"]))
    size = Path(args.out).stat().st_size
    print(f"{args.input}  ({type(model).__name__}, {args.dtype}, input {_shape(pixels.shape)}, {how})")
    print(f"wrote {args.out}: {count + 1} tensors (input + {count} activations), {size:,} bytes "
          f"({size / 2**20:.1f} MiB)")
    return 0


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def cmd_compare(args) -> int:
    from .oracle_tools import compare_fixtures

    result = compare_fixtures(args.a, args.b, atol=args.atol, rtol=args.rtol)
    print(f"A {args.a}  vs  B {args.b}  (atol {args.atol:g}, rtol {args.rtol:g}; rel to |B|)")
    if not result.rows:
        print("no tensor names in common")
        return 1
    first = result.first_failure
    shown = result.rows if args.all or first is None else result.rows[: result.rows.index(first) + 1]
    table = [("name", "shape", "max abs", "max rel", "")]
    for row in shown:
        shape = _shape(row.shape_a) if not row.shape_mismatch else f"{_shape(row.shape_a)} vs {_shape(row.shape_b)}"
        table.append((row.name, shape, _g(row.max_abs), _g(row.max_rel), "OK" if row.ok else "NOT OK"))
    print("\n".join(_table(table, "<<>><", indent="  ")))
    n = len(result.rows)
    if len(shown) < n:
        print(f"  ... {len(shown)} of {n} tensors shown (up to the first beyond tolerance); --all shows every row, "
              f"{sum(not r.ok for r in result.rows)} of {n} are beyond tolerance")
    for label, names in (("only in A", result.only_in_a), ("only in B", result.only_in_b)):
        if names:
            more = f" ... (+{len(names) - 5} more)" if len(names) > 5 else ""
            print(f"{label} ({len(names)}): " + ", ".join(names[:5]) + more)
    if first is None:
        print(f"all {n} tensors within tolerance")
        return 0
    if first.shape_mismatch:
        print(f"first tensor beyond tolerance: {first.name} (shape {_shape(first.shape_a)} vs {_shape(first.shape_b)})")
    else:
        print(f"first tensor beyond tolerance: {first.name} (max abs {_g(first.max_abs)}, max rel {_g(first.max_rel)})")
    return 1


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
        description=_wrap("EfficientFormer (L1, L3, L7) and SwiftFormer (XS, S, L1, L3) in pure NumPy: classify "
                          "images, convert checkpoints, inspect shapes, check parity with transformers and timm."),
        epilog="examples:\n"
               "  npformer predict cat.png --weights efficientformer-l1.safetensors\n"
               "  npformer predict cat.png --weights ./swiftformer-xs/          # a transformers directory\n"
               "  npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors\n"
               "  npformer convert SwiftFormer_XS.pth swiftformer-xs.safetensors --attention v1\n"
               "  npformer shapes --variant l3\n"
               "  npformer shapes --variant swiftformer-xs --size 256\n"
               "  npformer parity --families swiftformer --variants xs --batch 1\n\n"
               "run 'npformer COMMAND --help' for a command's options.\n\n" + EXIT_CODES,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"npformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    weights_help = ("an npformer .safetensors file, a transformers model directory (config.json + "
                    "model.safetensors or pytorch_model.bin), or an original / timm .pth checkpoint")
    attention_help = ("SwiftFormer's attention generation, needed for original Amshaker/SwiftFormer checkpoints, "
                      "which do not record it: v1 for the first release (before 2023-07-26: softmax over a size-1 "
                      "axis), v2 for the retrained ones (L2 normalisation over tokens). transformers checkpoints "
                      "are always v1, timm checkpoints v2, npformer files record theirs")

    p = sub.add_parser(
        "predict", help="classify images: top-K classes with probabilities",
        description=_wrap("Classify images with an EfficientFormer or SwiftFormer checkpoint and print the top-K "
                          "classes: rank, class index, probability (softmax of the logits), logit and label.\n\n"
                          "Preprocessing (named in each header line): --processor if given; else the weights "
                          "directory's preprocessor_config.json if it has one; else the recipe of the checkpoint's "
                          "origin: transformers EfficientFormer 'efficientformer-hf' (shortest edge 256, bicubic, "
                          "center crop 224), transformers SwiftFormer 'swiftformer-hf' (bilinear squash to "
                          "224×224), timm 'timm' (shortest edge 235, bicubic, crop 224), original 'original' "
                          "(shortest edge 256, bicubic, crop 224), anything else the family's transformers "
                          "recipe. All normalise with the ImageNet mean/std.\n"
                          "Input size: EfficientFormer needs 193–224 px inputs (its attention biases fix a 7×7 "
                          "grid); SwiftFormer takes any size.\n"
                          "Labels: the config's id2label if it has real names, else the ImageNet-1k names for a "
                          "1000-class model, else 'class N'.\n"
                          "Speed: the model runs fused (each BatchNorm folded into its convolution; the same "
                          "logits within 1e-5). 'npformer trace' runs it unfused, to record every layer."),
        epilog="examples:\n"
               "  npformer predict two_cats.png chelsea.jpg --weights efficientformer-l1.safetensors --top 3\n"
               "  npformer predict cat.png --weights SwiftFormer_XS.pth --attention v1 --processor original\n\n"
               "prints, per image, a header line\n"
               "  IMAGE  (model class[, attention vN], dtype, preprocessing: RECIPE or CONFIG FILE)\n"
               "and then K lines:\n"
               "  rank. class-index label  probability%  logit value",
        formatter_class=fmt,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--weights", metavar="PATH",
                   help=f"the checkpoint: {weights_help} (required until demo weights ship)")
    p.add_argument("--top", "-k", type=_positive_int, default=5, metavar="K", help="classes to show (default 5)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="compute dtype of the forward pass (default float32)")
    p.add_argument("--processor", metavar="RECIPE_OR_PATH",
                   help="preprocessing: a recipe (efficientformer-hf, efficientformer-hf-default, swiftformer-hf, "
                        "timm, original; see npformer.preprocess.RECIPES), 'published' / 'default' (the model "
                        "family's transformers settings: the published checkpoints' / transformers' code "
                        "defaults), or a preprocessor_config.json file or a directory holding one")
    p.add_argument("--attention", choices=GENERATIONS, help=attention_help)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "convert", help="convert a checkpoint to an npformer .safetensors weight file",
        description=_wrap(f"Convert a checkpoint to an npformer weight file (safetensors, timm key names, with the "
                          f"config, provenance and, for SwiftFormer, the attention generation in its metadata). "
                          f"SRC: {weights_help}. Reading a .pth never runs code from it.\n\n"
                          f"An original SwiftFormer checkpoint does not say which attention it was trained with: "
                          f"pass --attention v1 or v2 (without it, convert stops with exit status 3)."),
        epilog="examples:\n"
               "  npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors\n"
               "  npformer convert ./efficientformer-l1-300/ l1.safetensors --force\n"
               "  npformer convert SwiftFormer_XS.pth swiftformer-xs.safetensors --attention v1\n"
               "  npformer convert swiftformer_xs.dist_in1k.pth swiftformer-xs-timm.safetensors   # timm: v2",
        formatter_class=fmt,
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint to convert")
    p.add_argument("dst", metavar="DST", help="the .safetensors file to write")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.add_argument("--attention", choices=GENERATIONS, help=attention_help)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "shapes", help="tensor shape of every stage of a model",
        description=_wrap("Run a model on zeros and print the shape of every stage-level output (stem, downsamples, "
                          "each block with its kind, stage outputs, norm, pooled, heads, logits) and its element "
                          "count. Uses seeded weights for --variant, or a real checkpoint's config with --weights.\n\n"
                          "Variants: l1 l3 l7 are EfficientFormer (also efficientformer-l1 ...); SwiftFormer's are "
                          "swiftformer-xs, swiftformer-s, swiftformer-l1, swiftformer-l3. EfficientFormer takes "
                          "193–224 px inputs, SwiftFormer any size."),
        epilog="examples:\n"
               "  npformer shapes --variant l7 --batch 4\n"
               "  npformer shapes --variant swiftformer-xs --size 256\n"
               "  npformer shapes --variant swiftformer-l3 --size 192 320\n"
               "  npformer shapes --weights efficientformer-l1.safetensors --all",
        formatter_class=fmt,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--variant", choices=tuple(SHAPE_VARIANTS), default="l1", metavar="VARIANT",
                       help="published variant: " + " ".join(SHAPE_VARIANTS) + " (default l1 = EfficientFormer-L1)")
    which.add_argument("--weights", metavar="PATH", help=f"use this checkpoint instead: {weights_help}")
    p.add_argument("--size", type=_positive_int, nargs="+", default=[224], metavar="PX",
                   help="input side in pixels, or HEIGHT WIDTH (default 224)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--all", action="store_true", help="print every traced sub-layer, not only stage-level outputs")
    p.add_argument("--attention", choices=GENERATIONS,
                   help="SwiftFormer attention generation (shapes do not depend on it; needed to read an "
                        "original SwiftFormer checkpoint)")
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser(
        "parity", help="max |npformer − reference| on seeded weights (needs torch, transformers, timm)",
        description=_wrap("Compare npformer with transformers 4.40.2 and timm on seeded weights and seeded pixels, "
                          "for each variant, model class and batch size, in float32 and float64, and print the "
                          "largest differences of the logits, hidden states and attentions. EfficientFormer: "
                          "transformers (all three classes) and timm. SwiftFormer: transformers (attention v1) and "
                          "timm (attention v2). Needs the oracle extra: pip install 'npformer[oracle]'."),
        epilog="examples:\n"
               "  npformer parity --variants l1 --batch 1                 # EfficientFormer-L1 and SwiftFormer-L1\n"
               "  npformer parity --families swiftformer --references timm\n"
               "  npformer parity --families efficientformer --variants l1 l3 --batch 1 4",
        formatter_class=fmt,
    )
    p.add_argument("--families", nargs="+", choices=FAMILY_NAMES, default=list(FAMILY_NAMES), metavar="FAMILY",
                   help="efficientformer and/or swiftformer (default: both)")
    p.add_argument("--variants", nargs="+", choices=PARITY_VARIANTS, metavar="VARIANT",
                   help="variants within the chosen families: l1 l3 l7 (EfficientFormer), xs s l1 l3 "
                        "(SwiftFormer); l1 and l3 select both families' unless --families narrows it "
                        "(default: all)")
    p.add_argument("--references", nargs="+", choices=REFERENCES, default=list(REFERENCES), metavar="REFERENCE",
                   help="transformers and/or timm (default: both)")
    p.add_argument("--batch", nargs="+", type=_positive_int, default=[1, 4], metavar="B",
                   help="batch sizes (default: 1 4)")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser(
        "trace", help="write a golden-value fixture: the input and every activation of a forward pass",
        description=_wrap("Run a model on one input and write a trace fixture: a safetensors file holding the input "
                          "(`input`) and every traced activation under its name (stem.conv1, "
                          "stages.0.blocks.0.mlp.fc1, ..., logits) in the model's dtype, with the forward order, "
                          "model class, config, weights, dtype and npformer version in its metadata. A port to "
                          "another framework writes the same names and `npformer compare` finds the first layer "
                          "where it diverges.\n\n"
                          "INPUT: an image (preprocessed as `predict` does) or a .npy file of NCHW pixel values."),
        epilog="examples:\n"
               "  npformer trace tests/fixtures/digits/digit_3_705.png golden.safetensors\n"
               "  npformer trace pixels.npy golden64.safetensors --weights l1.safetensors --dtype float64\n"
               "  npformer compare port.safetensors golden.safetensors",
        formatter_class=fmt,
    )
    p.add_argument("input", metavar="IMAGE_OR_NPY", help="an image file, or a .npy file of [B, C, H, W] pixel values")
    p.add_argument("out", metavar="OUT", help="the .safetensors fixture to write (overwritten if it exists)")
    p.add_argument("--weights", metavar="PATH", help=f"the checkpoint: {weights_help} (default: the demo weights)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="compute dtype of the forward pass and of the tensors written (default float32)")
    p.add_argument("--processor", metavar="RECIPE_OR_PATH", help="preprocessing of an image, as for predict")
    p.add_argument("--attention", choices=GENERATIONS, help=attention_help)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser(
        "compare", help="compare two trace fixtures tensor by tensor; find the first beyond tolerance",
        description=_wrap("Compare trace fixture A with B (the reference) tensor by tensor in A's forward order: "
                          "shape, max |A−B|, max |A−B| / |B| and whether |A−B| <= atol + rtol·|B| everywhere "
                          "(np.allclose's test). Prints the rows up to the first tensor beyond tolerance (all "
                          "rows with --all) and that tensor's name. Exit status 0 when every common tensor is "
                          "within tolerance, 1 otherwise, 4 for an unreadable file or one that is not a trace "
                          "fixture."),
        epilog="examples:\n"
               "  npformer compare port.safetensors golden.safetensors\n"
               "  npformer compare a.safetensors b.safetensors --atol 1e-6 --rtol 1e-5 --all",
        formatter_class=fmt,
    )
    p.add_argument("a", metavar="A", help="a trace fixture (e.g. the port's)")
    p.add_argument("b", metavar="B", help="the reference trace fixture (e.g. npformer's)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.add_argument("--all", action="store_true", help="print every row, not only those up to the first failure")
    p.set_defaults(func=cmd_compare)
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
