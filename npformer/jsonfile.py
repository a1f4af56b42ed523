"""The JSON npformer reads — config.json, preprocessor_config.json, a timm hub config, a weight
file's metadata config — read strictly, so that a file is either taken as exactly what it says or
refused with a ConfigError naming it:

* not UTF-8 (JSON text is UTF-8, RFC 8259), a byte order mark, not JSON, or not an object at the
  top level;
* nested deeper than `MAX_DEPTH` (Python's reader raises RecursionError near 1,000 levels, and
  copying a nested dict does too; a config is a few levels deep);
* integers beyond Python's 4,300-digit conversion limit (a ValueError of its own);
* a key twice in one object: Python keeps the last silently, so the file says two things.

`NaN`, `Infinity` and numbers beyond float range (`1e400`, read as inf) are read as Python and
transformers read them: every setting that changes a forward is then checked for a finite value by
the config that holds it, which names the field (`layer_norm_eps=nan must be > 0 and finite`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError

MAX_DEPTH = 64


def _depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside strings (one pass, no recursion); 0
    when the text has too few brackets to nest beyond MAX_DEPTH."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # nearly every file: no need to walk it
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
        raise ConfigError(f"an integer of {len(text):,} digits") from None


def _unique_keys(pairs: list) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice in one object: which value is meant?")
        seen[key] = value
    return seen


def parse_json_object(text, source: str) -> dict:
    """The JSON object in `text` (str, or bytes that must be UTF-8), or a ConfigError naming `source`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not a readable JSON config (not UTF-8: byte {err.start} is "
                              f"{text[err.start:err.start + 1]!r}; JSON files are UTF-8)") from None
    if text.startswith("\ufeff"):
        raise ConfigError(f"{source}: not a readable JSON config (it starts with a byte order mark; JSON files are "
                          "plain UTF-8: save it without)")
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(f"{source}: not a readable JSON config (nested {depth:,} levels deep; a config is a few "
                          f"levels deep, and at most {MAX_DEPTH} are read)")
    try:
        value = json.loads(text, parse_int=_int, object_pairs_hook=_unique_keys)
    except ConfigError as err:  # from the hooks above, which do not know the file
        raise ConfigError(f"{source}: not a readable JSON config ({err})") from None
    except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"{source}: not a readable JSON config (not valid JSON: {err})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{source} is not a JSON object {{...}} but a {type(value).__name__}")
    return value


def read_json_object(path) -> dict:
    """The JSON object in the file at `path`, or a ConfigError naming it (missing, a directory,
    unreadable, or any of the module docstring's refusals)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a JSON file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    return parse_json_object(data, str(path))
