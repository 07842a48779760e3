"""What data an experiment trains on, as a fingerprint of its content: `data_identity(config)`.

The run id hashes it instead of the spelling of `data.dir` (netspec.runs.identity.run_identity), so the
same copy named by a relative or absolute path, through `~`, a symlink or with a trailing slash is
one run, and a relabelled, edited or added image is another.

- A local archive: the sha256 of its bytes (the 20 MB JPEG copy: a fraction of a second).
- A local folder: the files the loader reads (python batches, or the image tree), each as its path
  relative to the copy's root, its size and the sha256 of its bytes.
- Synthetic: its generator's parameters. TFDS: the package version, which fixes the dataset version,
  the set's name and the split names. An image tree's requested shape (data.image_size, data.channels)
  is in the run id through the data config itself.

Hashing content costs a full read, so a result is remembered in `<cache>/identity/`, keyed by the
resolved path and, for every file, its size, mtime, ctime and inode. mtime alone is not trusted: a
tool can write a file and set its mtime back, but the kernel sets ctime on every write, rename or
utime call and no user program can set it; so an unchanged key means unchanged content, and any
doubt (a `touch`, a `chmod`) only costs one more read.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Iterable

from ..errors import SetupError
from netspec.spec.data_config import DataConfig
from ..io import write_bytes_atomic
from .cache import cache_root, digest
from .files import ArchiveFiles, Files, open_files
from .sources.local import find_layout, local_files
from .sources.synthetic import SYNTHETIC_SIZES

IDENTITY_DIR = "identity"
_CHUNK = 2**20
_memo: dict[str, str] = {}
"""Stat key -> identity, for this process (a sweep asks for its data's identity once per point)."""


def data_identity(config: DataConfig, cache_dir: Path | None = None) -> str:
    """A short string that changes exactly when the images or labels the config resolves to change."""
    if config.source == "synthetic":
        train, test = config.train_size or SYNTHETIC_SIZES[0], config.test_size or SYNTHETIC_SIZES[1]
        return f"synthetic train={train} test={test} seed={config.seed}"
    if config.dir is None:
        return f"tensorflow-datasets {_package_version('tensorflow-datasets')} {config.source} train,test"
    return local_identity(Path(config.dir), cache_root(cache_dir))


def local_identity(path: Path, cache: Path) -> str:
    """'archive sha256:...' or 'folder sha256:...' of a local copy, remembered under its stat key."""
    resolved = path.expanduser().resolve()
    files = open_files(resolved)  # a missing or unreadable path: one DataError line
    if isinstance(files, ArchiveFiles):
        key = _stat_key(str(resolved), [resolved])
        return _remembered(cache, key, lambda: f"archive sha256:{_file_sha256(resolved)}")
    layout = find_layout(files, resolved)
    rels = local_files(files, layout, resolved)
    # Paths relative to the copy's root: naming its parent folder or the folder itself is the same data.
    key = _stat_key(str(resolved), (resolved / rel for rel in rels))
    return _remembered(cache, key, lambda: f"folder sha256:{_folder_sha256(files, rels, len(layout.root))}")


def _stat_key(where: str, paths: Iterable[Path]) -> str:
    parts = [where]
    for path in paths:
        st = os.stat(path)
        parts.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}")
    return digest(parts)


def _remembered(cache: Path, key: str, compute) -> str:
    """The identity stored under `key` in this process or in the cache folder, else `compute()` it and
    store it (a read-only cache folder only costs the next process a read of the data)."""
    if key in _memo:
        return _memo[key]
    stored = cache / IDENTITY_DIR / f"{key}.txt"
    try:
        identity = stored.read_text().strip()
    except OSError:
        identity = ""
    if not identity:
        identity = compute()
        _store(stored, identity)
    _memo[key] = identity
    return identity


def _store(path: Path, identity: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (identity + "\n").encode())
    except (OSError, SetupError):
        pass


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _folder_sha256(files: Files, rels: list[str], root_length: int) -> str:
    """sha256 over every file's relative path, size and content hash, in the loader's order."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        data = files.read(rel)  # size-checked like the loader's reads
        h.update(f"{rel[root_length:]}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return h.hexdigest()


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
