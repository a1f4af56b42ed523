"""A real Hugging Face hub cache, built locally for the hub tests (no network anywhere).

`add_repo(cache, repo_id, files)` lays files out exactly as `huggingface_hub.hf_hub_download`
leaves them after a download: `models--org--name/` (huggingface_hub's own `repo_folder_name`)
holding `blobs/<etag>` (the git blob sha1 of a regular file, the sha256 of an LFS file, as the hub's
etags are), `snapshots/<commit>/<filename>` as relative symlinks to the blobs, and
`refs/<revision>` holding the commit hash. `scan_cache_dir` (huggingface_hub's cache scanner)
must then see the repo, its revision and every file: each test checks that it does.

`offline_hub(monkeypatch, root)` points huggingface_hub at `root/hub` the way a user's environment
does (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE=1; huggingface_hub reads them at import, so its
constants are set too) and blocks every socket, so that a test that tried the network would fail.
`offline_env(root)` is the same environment for a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".msgpack", ".h5")

BLOCK_NETWORK = """
import socket as _socket
def _no_network(*args, **kwargs):
    raise OSError("network access in a hub test")
_socket.socket.connect = _no_network
_socket.create_connection = _no_network
"""


def _etag(name: str, data: bytes) -> str:
    """The hub's etag of a file: sha256 for LFS files, the git blob sha1 otherwise."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_repo(cache: Path, repo_id: str, files: dict, revision: str = "main", commit: str | None = None) -> Path:
    """Put `files` ({filename in the repo: local path or bytes}) in the cache as commit `commit`
    (default: derived from the contents) of `repo_id`, with `refs/<revision>` pointing at it.
    Returns the snapshot directory."""
    from huggingface_hub.file_download import repo_folder_name

    repo = Path(cache) / repo_folder_name(repo_id=repo_id, repo_type="model")
    contents = {name: (src if isinstance(src, bytes) else Path(src).read_bytes()) for name, src in files.items()}
    commit = commit or hashlib.sha1(b"".join(name.encode() + _etag(name, data).encode()
                                             for name, data in sorted(contents.items()))).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        blob = repo / "blobs" / _etag(name, data)
        blob.write_bytes(data)
        pointer = snapshot / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def add_directory(cache: Path, repo_id: str, directory: Path, **kwargs) -> Path:
    """Every file of `directory` as one commit of `repo_id`."""
    return add_repo(cache, repo_id, {p.name: p for p in sorted(Path(directory).iterdir()) if p.is_file()}, **kwargs)


def scanned(cache: Path) -> dict:
    """{repo_id: {revision refs: set of filenames}} as huggingface_hub's own scanner sees the cache."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    return {repo.repo_id: {ref: {f.file_name for f in rev.files} for rev in repo.revisions for ref in rev.refs}
            for repo in info.repos}


def offline_hub(monkeypatch, root: Path) -> Path:
    """huggingface_hub pointed at `root/hub`, offline, with every socket blocked; returns the cache."""
    from huggingface_hub import constants

    cache = Path(root) / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    for key, value in offline_env(root).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HOME", str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise OSError("network access in a hub test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache


def offline_env(root: Path) -> dict:
    """The environment variables of an offline user whose Hugging Face home is `root`."""
    return {"HF_HOME": str(root), "HF_HUB_CACHE": str(Path(root) / "hub"), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
