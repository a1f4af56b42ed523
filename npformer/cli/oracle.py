"""`npformer parity`, `trace` and `compare`: the golden-value oracle's commands."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from ..models.registry import FAMILIES
from .common import (ORACLE_MISSING, ORACLE_MODULES, MissingExtraError, UsageError, image_processor, load_at_size,
                     one_line, shape_text, table_lines, weights_path)

REFERENCES = ("transformers", "timm")


def parity_variants() -> tuple[str, ...]:
    """The variant names of the parity cases, each once (l1 and l3 exist in two families)."""
    from ..tools.parity import CASES

    return tuple(dict.fromkeys(variant for _, variant, _, _ in CASES))


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
                from ..tools.oracle import import_timm

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
    from ..tools.parity import CASES

    families, references = tuple(args.families), tuple(args.references)
    variants = tuple(args.variants) if args.variants else None
    if not any(f in families and r in references and (variants is None or v in variants) for f, v, r, _ in CASES):
        have = "; ".join(f"{FAMILIES[f].display} has {' '.join(dict.fromkeys(v for g, v, _, _ in CASES if g == f))}"
                         for f in families)
        raise UsageError(f"no parity case is a {' or '.join(families)} variant among {', '.join(variants or ())}; {have}")
    missing = missing_extras()
    if missing:
        raise MissingExtraError(ORACLE_MISSING.format(", ".join(missing)))
    from ..tools.parity import parity_table

    parity_table(families=families, variants=variants, references=references, batches=tuple(args.batch))
    return 0


def _load_pixels(args, model, weights: Path, metadata: dict) -> tuple[np.ndarray, str]:
    """(pixel values [B, C, H, W], description) from a .npy file or an image preprocessed as `predict` does."""
    from ..errors import InputError

    source = Path(args.input)
    if source.suffix.lower() == ".npy":
        try:
            pixels = np.load(source, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
            raise InputError(f"{source}: cannot read as a .npy array ({one_line(err)})") from None
        if pixels.ndim != 4 or not np.issubdtype(pixels.dtype, np.floating):
            raise InputError(f"{source}: expected NCHW float pixel values [B, C, H, W], "
                             f"got shape {shape_text(pixels.shape)} dtype {pixels.dtype}")
        return pixels, "pixel values from .npy"
    processor, preprocessing = image_processor(args, weights, model, metadata)
    return processor(source)["pixel_values"], f"preprocessing: {preprocessing}"


def cmd_trace(args) -> int:
    from ..tools.golden import trace_to_fixture

    weights = weights_path(args)
    model, metadata = load_at_size(args, weights, np.dtype(args.dtype))
    pixels, how = _load_pixels(args, model, weights, metadata)
    meta = trace_to_fixture(model, pixels, args.out, weights_name=str(weights))
    count = len(json.loads(meta["names"]))
    size = Path(args.out).stat().st_size
    print(f"{args.input}  ({type(model).__name__}, {args.dtype}, input {shape_text(pixels.shape)}, {how})")
    print(f"wrote {args.out}: {count + 1} tensors (input + {count} activations), {size:,} bytes "
          f"({size / 2**20:.1f} MiB)")
    return 0


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def cmd_compare(args) -> int:
    """A (the port) against B (the golden): exit 0 within tolerance, 1 beyond it, 2 when the two
    files share no activation or a tolerance is not a finite number >= 0."""
    from ..errors import ConfigError, InputError
    from ..tools.golden import check_tolerances, compare_fixtures

    try:
        check_tolerances(args.atol, args.rtol)
    except ConfigError as err:  # "atol must be ..."
        raise UsageError(f"--{err}") from None
    try:
        result = compare_fixtures(args.a, args.b, atol=args.atol, rtol=args.rtol)
    except InputError as err:  # the files share no activation: the wrong pair of files
        raise UsageError(str(err)) from None
    print(f"A {args.a}  vs  B {args.b}  (atol {args.atol:g}, rtol {args.rtol:g}; rel to |B|; "
          f"order: {'B' if result.ordered else 'none, B has no names metadata'})")
    failures = result.failures
    if result.ordered:
        first = failures[0] if failures else None
        shown = result.rows if args.all or first is None else result.rows[: result.rows.index(first) + 1]
    else:
        first = None
        shown = result.rows if args.all or not failures else failures
    table = [("name", "shape", "max abs", "max rel", "note", "")]
    for row in shown:
        table.append((row.name, shape_text(row.shape_a), _g(row.max_abs), _g(row.max_rel), row.note,
                      "OK" if row.ok else "NOT OK"))
    print("\n".join(table_lines(table, "<<>><<", indent="  ")))
    n = len(result.rows)
    if len(shown) < n:
        print(f"  ... {len(shown)} of {n} tensors shown ("
              + ("up to the first beyond tolerance" if result.ordered else "those beyond tolerance")
              + f"); --all shows every row, {len(failures)} of {n} are beyond tolerance")
    for label, names in (("only in A (not compared)", result.only_in_a),
                         ("not in A (golden tensors the port lacks, not compared)", result.only_in_b)):
        if names:
            more = f" ... (+{len(names) - 5} more)" if len(names) > 5 else ""
            print(f"{label} ({len(names)}): " + ", ".join(names[:5]) + more)
    if not failures:
        missing = (f"; {len(result.only_in_b)} of B's tensors are not in A and were not compared"
                   if result.only_in_b else "")
        print(f"all {n} {'common ' if missing else ''}tensors within tolerance{missing}")
        return 0
    if first is None:
        swapped = " (A has one: is A the golden? The golden fixture goes second)" if _has_names(args.a) else ""
        print(f"B has no names metadata (its forward order), so no first tensor beyond tolerance can be named"
              f"{swapped}; {len(failures)} of {n} tensors are beyond tolerance: "
              + ", ".join(row.name for row in failures[:5]) + (" ..." if len(failures) > 5 else ""))
    elif first.max_abs is None:
        print(f"first tensor beyond tolerance: {first.name} ({first.note})")
    else:
        note = f"; {first.note}" if first.note else ""
        hint = "; A was given other pixel values" if first.name == "input" else ""
        print(f"first tensor beyond tolerance: {first.name} (max abs {_g(first.max_abs)}, max rel {_g(first.max_rel)}"
              f"{note}){hint}")
    return 1


def _has_names(path) -> bool:
    from ..tools.golden import read_fixture

    return "names" in read_fixture(path)[2]
