"""Hugging Face hub ids: `snap-research/efficientformer-l1-300`, `MBZUAI/swiftformer-xs`,
`timm/efficientformerv2_s0.snap_dist_in1k` ... resolved to the local files of one snapshot.

    >>> local = resolve("snap-research/efficientformer-l1-300", MODEL_FILES)   # a directory
    >>> resolve("weights/efficientformer-digits.safetensors", MODEL_FILES)      # a local path: unchanged

Everything about the hub belongs to `huggingface_hub`, the optional `hub` extra
(`pip install "npformer[hub]"`): the cache layout (`models--org--name/blobs/`,
`snapshots/<commit>/`, `refs/<branch>`), where the cache is (`HF_HUB_CACHE`, `HF_HOME`, or
`cache_dir=`), offline mode (`HF_HUB_OFFLINE=1`, or `local_files_only=True`), revisions (a branch,
tag or commit: `revision=`), tokens for private repos (`token=`) and downloading when online.
npformer asks it for the few files a checkpoint needs, one `hf_hub_download` each, and reads them
from the snapshot directory they land in exactly as it reads a directory given by path. It is
imported only when a hub id is given: local paths never need it.

A string is a hub id when no file or directory of that name exists and it is spelt like one:
`org/name` of letters, digits, `_`, `-` and `.` (and not ending in a checkpoint suffix such as
`.pth`, which is a missing local file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .arguments import FILE_SUFFIXES, hub_options, source_path
from .errors import MissingExtraError, WeightFileError

# what each use needs from a repo: a list of (alternatives in order of preference, required)
# a model's weights: the first of these the repo has (they hold the same weights; PyTorch's first, then
# the TensorFlow classes' tf_model.h5, which a repo may hold alone; the order of
# checkpoints/convert.py's TRANSFORMERS_WEIGHT_FILES)
MODEL_FILES = [(("config.json",), True), (("model.safetensors", "pytorch_model.bin", "tf_model.h5"), True),
               (("preprocessor_config.json",), False)]
CONFIG_FILES = [(("config.json",), True)]
PROCESSOR_FILES = [(("preprocessor_config.json", "config.json"), True), (("config.json",), False)]
PREPROCESSOR_CONFIG_FILES = [(("preprocessor_config.json",), True)]
TIMM_FILES = [(("model.safetensors", "pytorch_model.bin"), True), (("config.json",), False)]

_REPO_ID = re.compile(r"[A-Za-z0-9_][\w.-]*/[\w.-]*[A-Za-z0-9_]")

HOW_TO_INSTALL = "pip install 'npformer[hub]'"


def is_hub_id(path) -> bool:
    """True when `path` names no local file or directory and is spelt like a hub repo id (`org/name`)."""
    if not isinstance(path, str) or os.path.exists(path):
        return False
    return (bool(_REPO_ID.fullmatch(path)) and "--" not in path and ".." not in path
            and not path.lower().endswith(FILE_SUFFIXES))


INSTEAD = "pass that directory's path instead of the id"


def _by_hand(repo_id: str, files, instead: str = INSTEAD) -> str:
    names = " and ".join(" or ".join(alternatives) for alternatives, required in files if required)
    return (f"or put the repo's files ({names}) in a directory by hand, e.g. from "
            f"https://huggingface.co/{repo_id}/tree/main, and {instead}")


def _hub_module(repo_id: str, files, instead: str):
    """huggingface_hub, or a MissingExtraError saying what to install and how to do without it."""
    try:
        import huggingface_hub
    except ImportError:
        raise MissingExtraError(
            f"{repo_id!r} is no local file or directory, so it is read as a Hugging Face hub id, and resolving a hub id "
            f"needs huggingface_hub (the hub extra): {HOW_TO_INSTALL}; {_by_hand(repo_id, files, instead)}"
        ) from None
    return huggingface_hub


def _where(cache_dir, local_files_only: bool) -> str:
    """Where the files were looked for, and why they were not downloaded."""
    from huggingface_hub import constants

    cache = cache_dir if cache_dir is not None else constants.HF_HUB_CACHE
    if local_files_only:
        why = "local_files_only=True forbids downloading them"
    elif constants.HF_HUB_OFFLINE:
        why = "offline mode (HF_HUB_OFFLINE=1) forbids downloading them"
    else:
        why = "the hub could not be reached to download them"
    return f"the hub cache {cache} ({why})"


def _download(hub, repo_id: str, alternatives, required: bool, options: dict, files, instead: str) -> Path | None:
    """The local path of the first of `alternatives` the repo has, downloading it when allowed;
    None for an optional file it lacks. Raises WeightFileError for a required one."""
    from huggingface_hub import utils as hub_errors

    revision = options.get("revision") or "main"
    not_cached = []
    for filename in alternatives:
        try:
            return Path(hub.hf_hub_download(repo_id, filename, **options))
        except hub_errors.GatedRepoError:
            raise WeightFileError(f"{repo_id}: a gated repo; accept its terms on huggingface.co and pass token=... "
                                  "(or log in with `huggingface-cli login`)") from None
        except hub_errors.RepositoryNotFoundError:
            raise WeightFileError(f"{repo_id}: no such repository on the Hugging Face hub (or a private one: pass "
                                  "token=...)") from None
        except hub_errors.RevisionNotFoundError:
            raise WeightFileError(f"{repo_id}: has no revision {revision!r} (a branch, tag or commit)") from None
        except hub_errors.LocalEntryNotFoundError:  # not in the cache, and not downloadable now
            not_cached.append(filename)
        except hub_errors.EntryNotFoundError:  # the repo has no such file
            continue
        except (hub_errors.HfHubHTTPError, OSError, ValueError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WeightFileError(f"{repo_id}: the hub refused {filename}: {first_line}") from None
    if not required:
        return None
    wanted = " or ".join(alternatives)
    if not_cached:
        where = _where(options.get("cache_dir"), options.get("local_files_only", False))
        raise WeightFileError(f"{repo_id} (revision {revision}): {wanted} not found in {where}; run once online, "
                              f"pass cache_dir= where the files are cached, {_by_hand(repo_id, files, instead)}")
    raise WeightFileError(f"{repo_id} (revision {revision}): the repo has no {wanted}")


def resolve(path, files, *, revision=None, cache_dir=None, local_files_only=False, token=None,
            instead: str = INSTEAD, name: str = "path") -> Path:
    """`path` as a local Path: a local file or directory unchanged; a hub id as the snapshot
    directory holding the `files` it needs (MODEL_FILES, CONFIG_FILES, PROCESSOR_FILES ...),
    downloaded by huggingface_hub unless they are cached or downloading is off.

    `revision`, `cache_dir`, `local_files_only`, `token`: passed to `huggingface_hub.hf_hub_download`
    as they are. Raises MissingExtraError (huggingface_hub not installed) or WeightFileError (no
    such repo, revision or file; not cached while offline), each naming the repo and what to do
    (`instead`: how the caller takes files put in place by hand).

    Every entry point that takes a checkpoint passes here first, so the argument checks of
    npformer/arguments.py run here: `path` (the argument `name`: None, "", a number, bytes, a
    trailing "/" on a file, a dangling symlink) and the hub options' types, whether or not `path`
    is a hub id (ConfigError naming the argument).
    """
    options = hub_options(revision, cache_dir, local_files_only, token)
    local = source_path(path, name)
    if not is_hub_id(path):
        return local
    repo_id = path
    hub = _hub_module(repo_id, files, instead)
    found = [_download(hub, repo_id, alternatives, required, options, files, instead)
             for alternatives, required in files]
    return next(p for p in found if p is not None).parent  # snapshots/<commit>/: every file of the revision
