"""`npformer predict`, `convert` and `shapes`: what a user of a checkpoint runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import macs
from ..arguments import path_text, source_path
from ..errors import CheckpointMismatchError, NpformerError
from ..models.attention_bias import at_image_size
from ..models.registry import FAMILIES
from .common import (UsageError, built_size, image_processor, input_size, load_at_size, npformer_file_metadata,
                     shape_text, table_lines, top_k, weights_path)


def cmd_predict(args) -> int:
    from ..labels import label_names

    weights = weights_path(args)
    model, metadata = load_at_size(args, weights, np.dtype(args.dtype), fuse=True)  # fused: the fast path
    processor, preprocessing = image_processor(args, weights, model, metadata)
    arch = type(model).__name__
    if model.num_heads == 0 or model.config.num_labels == 0:
        raise CheckpointMismatchError(
            f"{weights}: holds {arch} with no classifier head (num_labels={model.config.num_labels}); "
            "predict needs a classification checkpoint"
        )
    names = label_names(model.config)
    k = min(args.top, model.config.num_labels)
    generation = getattr(model.config, "attention_generation", None)
    describe = arch + (f", attention {generation}" if generation else "")

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


def _file_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _attention_summary(fam, generation: str, origin: str, from_file: bool, requested: str | None) -> str:
    """"v1 (why we know): what it computes" for convert's report."""
    if from_file:
        why = "as the npformer file records"
    elif origin in ("transformers", "timm"):
        why = f"{origin} checkpoints are always {generation}"
    else:
        why = f"given by --attention {requested}"
    return f"{generation} ({why}): {fam.attention_generations[generation]}"


def cmd_convert(args) -> int:
    from ..checkpoints.convert import convert_checkpoint
    from ..checkpoints.weights import count_parameters, metadata_config, read_safetensors

    src, dst = source_path(args.src, "SRC"), Path(path_text(args.dst, "DST"))
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

    src_metadata = npformer_file_metadata(src)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp{dst.suffix}")  # written whole, then renamed: no half files
    try:
        metadata = convert_checkpoint(src, tmp, attention_generation=args.attention)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)

    tensors, _ = read_safetensors(dst)
    fam = FAMILIES[metadata["family"]]
    config = fam.config.from_dict(metadata_config(metadata), source=f"{dst} (metadata config)")
    origin = metadata.get("source", "?")
    if src_metadata is not None:
        kind = fam.source_kinds.get(origin)
        article = "an" if kind and kind[0] in "aeiou" else "a"
        source = "npformer weight file" + (f", converted from {article} {kind}" if kind else f" (source: {origin})")
    else:
        source = fam.source_kinds.get(origin) or origin
    variant = metadata.get("variant")
    rows = [
        ("source", source),
        ("architecture", metadata["architecture"]),
        ("variant", f"{fam.display}-{variant.upper()}" if variant else f"custom ({config.summary()})"),
    ]
    if fam.attention_generations:
        rows.append(("attention", _attention_summary(fam, config.attention_generation, origin, src_metadata is not None,
                                                     args.attention)))
    rows += [
        ("num_labels", str(config.num_labels)),
        ("tensors", f"{len(tensors):,}"),
        ("parameters", f"{count_parameters(tensors):,}"),
        ("wrote", f"{dst} ({_file_size(dst.stat().st_size)})"),
    ]
    print(f"converted {src}")
    print("\n".join(table_lines(rows, "<<", indent="  ")))
    return 0


def _shape_variants() -> dict[str, tuple[str, str]]:
    """--variant names: every variant by its family-prefixed name (efficientformer-l1, swiftformer-xs,
    ...), and by its bare name for the first registered family that has it (l1 l3 l7 are
    EfficientFormer's, as before SwiftFormer arrived)."""
    prefixed = {f"{name}-{v}": (name, v) for name, f in FAMILIES.items() for v in f.variants}
    bare = {}
    for name, f in FAMILIES.items():
        for v in f.variants:
            bare.setdefault(v, (name, v))
    return {**{v: bare[v] for v in bare if bare[v][0] == next(iter(FAMILIES))}, **prefixed}


SHAPE_VARIANTS = _shape_variants()


def stage_level_names(cfg, architecture: str) -> dict[str, str]:
    """{name: kind} of every stage-level output a forward traces, in forward order (the family's `traced_names`)."""
    return FAMILIES[cfg.model_type].schema.traced_names(cfg, architecture)


def cmd_shapes(args) -> int:
    from ..models.seeded import seeded_weights
    from ..checkpoints.weights import count_parameters
    from ..errors import ConfigError
    from ..models.classes import model_class
    from ..models.registry import variant_name
    from ..trace import Trace

    size = input_size(args.size)
    if args.weights is not None:
        model, _ = load_at_size(args, source_path(args.weights, "--weights"), np.float32)
        fam, variant = FAMILIES[model.family], variant_name(model.config)
        name = f"{fam.display}-{variant.upper()}" if variant else f"custom {fam.display} config"
        title = f"{args.weights} ({name})"
    else:
        name, variant = SHAPE_VARIANTS[args.variant]
        fam = FAMILIES[name]
        if fam.attention_generations:
            cfg = fam.config.variant(variant, attention_generation=args.attention or "v1")
        elif args.attention is not None:
            raise ConfigError(f"--attention applies to SwiftFormer only, {args.variant} is {fam.article} {fam.display}")
        else:
            cfg = fam.config.variant(variant)
        heads = max(fam.schema.ARCHITECTURES)  # the full classifier
        if size is not None:  # the variant built for that size ("table") or resizing its bias ("pairwise")
            cfg, _ = at_image_size(cfg, seeded_weights(cfg, num_heads=heads), size, args.bias_resize)
        model = model_class(fam.architecture(heads))(cfg, seeded_weights(cfg, num_heads=heads))
        title = f"{fam.display}-{variant.upper()} (seeded weights)"
    height, width = size or built_size(model.config)
    arch = type(model).__name__
    kinds = stage_level_names(model.config, arch)
    trace = Trace(["*"] if args.all else list(kinds))
    pixels = np.zeros((args.batch, model.config.num_channels, height, width), dtype=np.float32)
    model(pixels, trace=trace)

    params = count_parameters(model.weights)
    print(f"{title}, {arch}, {params:,} parameters, input {shape_text(pixels.shape)}")
    rows = [("name", "kind", "shape", "elements")]
    rows += [(name, kinds.get(name, ""), shape_text(x.shape), f"{x.size:,}") for name, x in trace.records.items()]
    lines = table_lines(rows, "<<<>", indent="  ")
    print(lines[0])
    print("  " + "-" * (max(len(line) for line in lines) - 2))
    print("\n".join(lines[1:]))
    print()
    print(macs.count(model, (height, width)))  # its own forward, batch 1: MACs per image
    return 0
