"""What `npformer evaluate` prints: a report for a person, then one JSON line for a program.

    npformer evaluate DATA  (model, dtype, preprocessing)
      weights  ...
      data     class folders, 360 images in 10 classes (folder names = the weights' class names)
      top-1    99.17%  (357 of 360)
      top-5   100.00%  (360 of 360)
      ... per-class top-1 (the ten worst), the most-confused pairs, undecodable images, speed,
      agreement with --compare / --reference ...
    {"top1": 0.9916666666666667, "top5": 1.0, "images": 360, ...}          <- the last line
"""

from __future__ import annotations

import json
from pathlib import Path

from .agreement import Agreement
from .records import header_images, shown
from .run import EvaluationResult

WORST_CLASSES = 10
CONFUSED_PAIRS = 10
ERRORS_SHOWN = 10


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:6.2f}%  ({part:,} of {whole:,})" if whole else "     —  (no labelled images)"


def _g(value) -> str:
    return "—" if value is None else f"{value:.2g}"


def _name(result: EvaluationResult, c: int) -> str:
    name = result.class_names[c]
    return name if name == str(c) else f"{c} {name}"


def _relative(path: str) -> str:
    """A path relative to the working directory when it lies below it (the demo weights' default is absolute)."""
    try:
        return shown(Path(path).relative_to(Path.cwd()).as_posix())
    except ValueError:
        return shown(path)


def _table(rows: list[tuple], align: str, indent: str = "    ") -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(align))]
    return [(indent + "  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(row, align, widths))).rstrip() for row in rows]


def agreement_lines(agreement: Agreement) -> list[str]:
    lines = [f"  agreement with {agreement.other}: {agreement.images:,} images"
             + (f" ({agreement.only_ours:,} only here, {agreement.only_theirs:,} only there)"
                if agreement.only_ours or agreement.only_theirs else "")]
    lines.append(f"    top-1 agreement  {_percent(agreement.top1_agree, agreement.images).strip()}")
    if agreement.max_abs_logit is not None:
        lines.append(f"    max |Δ logit|        {_g(agreement.max_abs_logit)}")
    if agreement.max_abs_prob is not None:
        lines.append(f"    max |Δ probability|  {_g(agreement.max_abs_prob)}  ({agreement.prob_scope})")
    if agreement.first_disagreements:
        lines.append("    first disagreeing images (ours vs theirs: top-1 class, probability):")
        for path, a, pa, b, pb in agreement.first_disagreements:
            lines.append(f"      {shown(path)}: {a} ({_g(pa)}) vs {b} ({_g(pb)})")
    return lines


def report_lines(result: EvaluationResult) -> list[str]:
    """The text report `npformer evaluate` prints, without its last (JSON) line.

    Parameters
    ----------
    result : EvaluationResult
        What `evaluate` returned.

    Returns
    -------
    list of str
        The lines: data and weights, top-1 and top-5, the worst classes, the most confused
        pairs, undecodable images, speed, agreements, the records file.
    """
    h = result.header
    attention = f", attention {h['attention']}" if h.get("attention") else ""
    lines = [f"npformer evaluate {shown(h['data'])}  ({h['model']}{attention}, {h['dtype']}, "
             f"preprocessing: {h['preprocessing']})",
             f"  weights  {_relative(h['weights'])}",
             f"  data     {result.dataset.describe()}"]
    scored = len(result.scored)
    if "shard" in h:
        images = header_images(h)
        span = f"images {images.start:,} … {images.stop - 1:,}" if images else "no images"
        lines.append(f"  shard    part {h['shard'][0]} of {h['shard'][1]}: {span} (the parts join with "
                     "npformer evaluate --merge)")
    lines += [f"  top-1   {_percent(result.top1_correct, scored)}",
              f"  top-5   {_percent(result.top5_correct, scored)}"]
    per_class = result.per_class()
    if per_class:
        worst = per_class[:WORST_CLASSES]
        title = "the ten worst" if len(per_class) > WORST_CLASSES else f"all {len(per_class)}, worst first"
        lines.append(f"  per-class top-1 ({title}):")
        rows = [("class", "images", "top-1")] + [(_name(result, c), f"{n:,}", f"{100 * k / n:.2f}%")
                                                  for c, n, k in worst]
        lines += _table(rows, "<>>")
    confusions = result.confusions()
    if confusions:
        lines.append("  most confused (true -> predicted: images):")
        lines += [f"    {_name(result, t)} -> {_name(result, p)}: {n:,}" for t, p, n in confusions[:CONFUSED_PAIRS]]
    errors = result.errors
    lines.append(f"  undecodable images: {len(errors):,}" + (" (not counted in the accuracies)" if errors else ""))
    lines += [f"    {shown(r.path)}: {shown(r.error)}" for r in errors[:ERRORS_SHOWN]]
    if len(errors) > ERRORS_SHOWN:
        lines.append(f"    ... and {len(errors) - ERRORS_SHOWN:,} more (the records file lists each)")
    resumed = len(result.records) - result.computed
    speed = (f"{result.computed:,} images in {result.seconds:.2f} s, {result.images_per_second:.1f} images/s"
             if result.images_per_second else "no images run")
    started = f", started in {result.startup:.2f} s" if result.startup >= 0.005 else ""
    lines.append(f"  speed    {speed} ({result.ran_on or f'{result.workers} workers'}{started}, batch {h['batch_size']})"
                 + (f"; {resumed:,} read back from the results file" if resumed else ""))
    for agreement in result.agreements:
        lines += agreement_lines(agreement)
    if result.output is not None:
        lines.append(f"  records  {shown(str(result.output))}")
    return lines


def summary(result: EvaluationResult) -> dict:
    """The machine-readable summary: the report's last line, as a dict.

    Parameters
    ----------
    result : EvaluationResult
        What `evaluate` returned.

    Returns
    -------
    dict
        `top1`, `top5`, `images`, `scored`, `top1_correct`, `top5_correct`, `undecodable`,
        `computed`, `seconds`, `images_per_second`, `workers`, `backend`, `startup_seconds`,
        `batch_size`, `weights`, `data`, `output`, `agreement`.
    """
    return {
        "top1": result.top1, "top5": result.top5, "images": len(result.records), "scored": len(result.scored),
        "top1_correct": result.top1_correct, "top5_correct": result.top5_correct,
        "undecodable": len(result.errors), "computed": result.computed, "seconds": round(result.seconds, 3),
        "images_per_second": None if result.images_per_second is None else round(result.images_per_second, 2),
        "workers": result.workers, "backend": result.backend, "startup_seconds": round(result.startup, 3),
        "batch_size": result.header["batch_size"], "weights": result.header["weights"],
        "data": result.header["data"], "output": None if result.output is None else str(result.output),
        "agreement": [a.to_json() for a in result.agreements],
    }


def summary_line(result: EvaluationResult) -> str:
    """`summary(result)` as one line of JSON: the last line `npformer evaluate` prints.

    Parameters
    ----------
    result : EvaluationResult
        What `evaluate` returned.

    Returns
    -------
    str
        The JSON text.
    """
    text = json.dumps(summary(result), ensure_ascii=False)
    return text if shown(text) == text else json.dumps(summary(result))  # a non-UTF-8 name: \udcXX escapes
