"""The arguments every entry point takes, checked in one place: paths to read and to write, the
hub options, the model dtype and on/off flags. `hub.resolve` (which `npformer.from_pretrained`,
`npformer.load`, every class's and Auto class's `from_pretrained` and `create_model` call first),
`load_any` (convert, export) and the writers (`save_weights`, the exporters) use them, so each
entry point refuses the same values with the same message:

    >>> source_path("", "path")
    ConfigError: path='': an empty path; name a file or directory ("." for the current directory)
    >>> output_file("out/", "path")
    NpformerError: out/: names a directory, and npformer's own format is one file: ...

What is refused, and why each is never taken as something else:

* `None`, numbers, bytes, lists: not a path (pathlib would raise its own TypeError, or `str(None)`
  would write a file called "None").
* `""`: pathlib reads it as ".", the current directory, so a forgotten argument would load (or
  overwrite) whatever the current directory holds. "." says that on purpose and is taken.
* a path with a NUL byte: no file can have that name (the OS raises ValueError).
* reading: a file named with a trailing "/" (the caller thought it a directory), a symlink that
  leads nowhere (dangling, or a loop). A missing path is the loader's to report (it may be a hub id).
* writing one file: an existing directory, a trailing "/", a missing or non-directory parent, and a
  name without the suffix the readers recognise the format by.
* writing a directory: an existing file, a name with a weight-file suffix (`x.safetensors` as a
  directory is a mistake for the one-file format).

Values of the wrong type or out of range are `ConfigError`s (also `ValueError`s) naming the
argument, what it takes and what it got; a place that cannot be written is an `NpformerError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, NpformerError, WeightFileError

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what npformer's models compute in
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".json", ".tar", ".npz", ".h5")
_SEPARATORS = tuple(s for s in (os.sep, os.altsep) if s)


def _shown(value) -> str:
    """`value` for a message: its repr, cut to one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def path_text(value, name: str) -> str:
    """The text of a path argument (a str or an os.PathLike giving a str), or a ConfigError
    naming `name`: None, "", bytes, numbers and paths with a NUL byte are refused."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str):
            if text == "":
                raise ConfigError(f"{name}='': an empty path; name a file or directory (\".\" for the current "
                                  "directory)")
            if "\x00" in text:
                raise ConfigError(f"{name}={_shown(text)}: a path cannot contain a NUL byte")
            return text
    raise ConfigError(f"{name}={_shown(value)}: expected a file or directory path (a str or pathlib.Path), "
                      f"got {type(value).__name__}")


def _names_a_directory(text: str) -> bool:
    return text.endswith(_SEPARATORS)


def source_path(value, name: str = "path") -> Path:
    """A path to read from, as a Path. Beyond `path_text`: a trailing "/" on a file and a symlink
    to nothing are refused; whether the path exists is the loader's to say (it may be a hub id)."""
    text = path_text(value, name)
    path = Path(text)
    if _names_a_directory(text) and path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={_shown(text)}: ends in {text[-1]!r}, a directory, but {path} is a file; drop the "
                          f"{text[-1]!r} to read the file")
    if path.is_symlink() and not path.exists():
        raise WeightFileError(f"{path}: a symbolic link to nothing (its target {_link_target(path)} is missing, "
                              "or the links form a loop)")
    return path


def _link_target(path: Path) -> str:
    try:
        return repr(os.readlink(path))
    except OSError:
        return "(unreadable)"


def output_file(value, name: str = "path", suffix: str = ".safetensors", instead: str = "") -> Path:
    """A file to write, as a Path: its parent must be an existing directory, the path no directory
    and its name must end in `suffix` (what readers recognise the format by). `instead`: what to
    do for a directory (e.g. "or format='transformers' to write one")."""
    text = path_text(value, name)
    path = Path(text)
    example = f"e.g. {Path(text.rstrip(''.join(_SEPARATORS)) or '.') / ('model' + suffix)}"
    if _names_a_directory(text) or path.is_dir():
        why = "ends in a path separator" if _names_a_directory(text) else "is an existing directory"
        raise NpformerError(f"{name}={_shown(text)}: {why}, and this writes one {suffix} file, not a directory: "
                            f"pass the file's path ({example}){instead}")
    if path.suffix != suffix:
        raise ConfigError(f"{name}={_shown(text)}: the file must end in {suffix} (npformer recognises the format by "
                          f"its suffix, so a file named otherwise could not be loaded back)")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise NpformerError(f"{name}={_shown(text)}: its directory {parent} {what}; create it first")
    return path


def output_directory(value, name: str = "directory", formats: str = "this format", create: bool = True) -> Path:
    """A directory to write into, as a Path, created with its parents when missing (`create`).
    Refused: an existing file, a name ending in a weight-file suffix (`out.safetensors` as a
    directory is a mistake for npformer's one-file format), a parent that is a file."""
    text = path_text(value, name)
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise NpformerError(f"{path}: exists and is not a directory; {formats} are directories")
    if not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
        raise ConfigError(f"{name}={_shown(text)}: names a {path.suffix} file, but {formats} are directories: pass a "
                          f"directory name (e.g. {path.with_suffix('')}), or format='npformer' for one weight file")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, no permission, read-only file system
        raise NpformerError(f"{path}: cannot create the directory ({err.strerror or err})") from None
    return path


# ---------------------------------------------------------------------------------------------
# options


def flag(value, name: str) -> bool:
    """A True / False option; anything else (1, "no", None) is refused rather than read as truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ConfigError(f"{name}={_shown(value)}: expected True or False, got {type(value).__name__}")


def model_dtype(value, name: str = "dtype") -> np.dtype:
    """The dtype a model computes in: np.float32 or np.float64 (also as "float32", np.dtype(...)).
    None (NumPy would read float64), bfloat16, float16 and anything else are refused."""
    try:
        dtype = np.dtype(value) if value is not None else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not any(dtype == d for d in DTYPES):  # (np.dtype == None is True: NumPy reads None as float64)
        raise ConfigError(f"{name}={_shown(value)}: npformer computes in np.float32 or np.float64"
                          + (f", not {dtype}" if dtype is not None else ""))
    return dtype


def hub_options(revision=None, cache_dir=None, local_files_only=False, token=None) -> dict:
    """The options passed to huggingface_hub for a hub id, each checked for its type (a wrong one
    would surface as a TypeError deep in huggingface_hub, or be silently read as another value)."""
    if revision is not None and (not isinstance(revision, str) or not revision or "\x00" in revision):
        raise ConfigError(f"revision={_shown(revision)}: expected a branch, tag or commit name (a non-empty str), "
                          f"got {type(revision).__name__}")
    if cache_dir is not None:
        cache = Path(path_text(cache_dir, "cache_dir"))
        if cache.exists() and not cache.is_dir():
            raise ConfigError(f"cache_dir={_shown(os.fspath(cache_dir))}: is a file; expected the hub cache directory")
    if token is not None and not isinstance(token, (str, bool)) or token == "":
        raise ConfigError(f"token={_shown(token)}: expected a Hugging Face token (a non-empty str), True (the "
                          f"stored login) or False, got {type(token).__name__}")
    return {"revision": revision, "cache_dir": cache_dir, "local_files_only": flag(local_files_only, "local_files_only"),
            "token": token}
