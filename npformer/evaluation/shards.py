"""One evaluation on many machines without a scheduler (a job array, a CI matrix): part I of N
of the batches on each, then one file.

    npformer evaluate DATA --weights W --shard 1/4 --output part1.jsonl     # on machine 1 … 4
    npformer evaluate --merge part1.jsonl part2.jsonl part3.jsonl part4.jsonl --output all.jsonl

Part I holds a contiguous run of whole batches (`records.shard_images`), so its records are the
very lines one run writes for those images, and its header is one run's with `"shard": [I, N]`
added. Merging checks that the parts are one run's (the same header but for the shard and the
paths as typed), that they are parts 1 … N of N, each once, and that each is complete; it writes
the first part's header without the shard, then the parts' record lines as they are: the file one
run on one machine writes, byte for byte. `npformer evaluate DATA --output all.jsonl --resume`
then reports on it without running a batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError, NpformerError
from .records import MAY_DIFFER, header_images, read_results


def parse_shard(shard) -> tuple[int, int] | None:
    """(I, N) of "I/N" (or of a pair): part I of N, 1 ≤ I ≤ N; None for None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        part, sep, parts = shard.strip().partition("/")
        if not sep or not part.isdigit() or not parts.isdigit():
            raise ConfigError(f"shard {shard!r}: expected I/N, part I of N, e.g. 2/4")
        shard = (int(part), int(parts))
    if (not isinstance(shard, (tuple, list)) or len(shard) != 2 or any(type(v) is not int for v in shard)
            or not 1 <= shard[0] <= shard[1]):
        raise ConfigError(f"shard {shard!r}: expected part I of N with 1 ≤ I ≤ N, e.g. 2/4")
    return int(shard[0]), int(shard[1])


@dataclass
class Merged:
    """What `merge_shards` wrote.

    Attributes
    ----------
    output : pathlib.Path
        The merged results file.
    parts : int
        Parts merged.
    records : int
        Records written.
    header : dict
        The merged file's header.
    """

    output: Path
    parts: int
    records: int
    header: dict


def _one_run(a: dict, b: dict) -> list[str]:
    """The header fields in which two parts differ (the shard and the paths as typed aside)."""
    return [k for k in sorted(set(a) | set(b)) if k not in ("shard", *MAY_DIFFER) and a.get(k) != b.get(k)]


def merge_shards(parts, output, force: bool = False) -> Merged:
    """Join the results files of parts 1 … N of one sharded run into the file one run writes.

    Parameters
    ----------
    parts : sequence of str or os.PathLike
        The parts' results files, in any order.
    output : str or os.PathLike
        The merged file.
    force : bool, default False
        Overwrite an existing `output`.

    Returns
    -------
    Merged
        What was written.

    Raises
    ------
    InputError
        A missing file, a whole run's file, parts of different runs, a part given twice or
        missing.
    ConfigError
        No parts, or an `output` that is one of them.
    NpformerError
        An existing `output` without `force`, an unfinished part.
    """
    parts = [Path(p) for p in parts]
    if not parts:
        raise ConfigError("merge needs the parts' results files")
    output = Path(output)
    if output.exists() and not force:
        raise NpformerError(f"{output}: already exists; pass --force to overwrite it")
    if output.resolve() in {p.resolve() for p in parts if p.exists()}:
        raise ConfigError(f"{output}: is one of the parts; write the merged file elsewhere")
    found = {}  # part number -> (path, header, byte range of its records)
    for path in parts:
        if not path.is_file():
            raise InputError(f"{path}: no such results file to merge" if not path.exists() else
                             f"{path}: not a results file to merge")
        header, records, ends = read_results(path, header_dtype(path))
        if header is None:
            raise InputError(f"{path}: empty, not an npformer evaluate results file")
        if "shard" not in header:
            raise InputError(f"{path}: is a whole run's results (its header has no shard), not a part to merge")
        part, count = header["shard"]
        images = header_images(header)
        if len(records) != len(images):
            raise NpformerError(f"{path}: part {part}/{count} holds {len(records)} of its {len(images)} records; "
                                "finish it with --resume before merging")
        if part in found:
            raise InputError(f"{path}: part {part}/{count} again (also {found[part][0]})")
        first = next(iter(found.values()), None)
        if first is not None:
            if first[1]["shard"][1] != count:
                raise InputError(f"{path}: part {part} of {count}, but {first[0]} is part {first[1]['shard'][0]} of "
                                 f"{first[1]['shard'][1]}")
            differ = _one_run(first[1], header)
            if differ:
                shown = "; ".join(f"{k}: {first[0].name} {first[1].get(k)!r}, {path.name} {header.get(k)!r}"
                                  for k in differ[:3])
                raise InputError(f"{path}: not a part of the same run as {first[0]} ({shown})")
        found[part] = (path, header, (ends[0], ends[-1]))
    count = next(iter(found.values()))[1]["shard"][1]
    missing = [str(i) for i in range(1, count + 1) if i not in found]
    if missing:
        raise InputError(f"parts {', '.join(missing)} of {count} are missing (given: "
                         f"{', '.join(str(i) for i in sorted(found))})")
    header = dict(found[1][1])
    del header["shard"]
    _write_merged(output, header, [found[i] for i in range(1, count + 1)])
    return Merged(output, count, header["images"], header)


def header_dtype(path: Path) -> str:
    """The dtype a results file's header names (what its values are read back in), float32 if none."""
    with open(path, "rb") as f:
        try:
            header = json.loads(f.readline())
        except ValueError:
            return "float32"  # read_results says what is wrong with the first line
    dtype = header.get("dtype") if isinstance(header, dict) else None
    return dtype if dtype in ("float32", "float64") else "float32"


def _write_merged(output: Path, header: dict, parts) -> None:
    """The header line, then each part's record lines as they are, into a new file put in place at the end."""
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as out:
            out.write((json.dumps(header, separators=(",", ":")) + "\n").encode())
            for path, _, (start, end) in parts:
                with open(path, "rb") as f:
                    f.seek(start)
                    out.write(f.read(end - start))
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
