"""The decode-once cache: a source's `RawImages` as an uncompressed `<cache>/<key>.npz`.

The cache folder is the `cache_dir` argument, else `$NETSPEC_CACHE`, else `~/.cache/netspec`. Keys
name the source and a fingerprint of its files (`digest`), so a changed copy is decoded again.
"""
from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import SetupError
from ..io import atomic_write, load_npz
from .types import RawImages


def cache_root(cache_dir: Path | None = None) -> Path:
    """`cache_dir`, else $NETSPEC_CACHE, else ~/.cache/netspec."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("NETSPEC_CACHE") or "~/.cache/netspec").expanduser()


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
MAX_CACHE_BYTES = 8 * 2**30
"""Largest cache file read back (its arrays' declared sizes, checked first): a million 32x32 images are 3 GB."""


def cached(cache: Path, key: str, build: Callable[[], RawImages]) -> RawImages:
    """The images stored under `key`, else `build()` them and store them (uncompressed .npz: loads in
    well under a second; written to a temporary name then renamed, so concurrent runs never read half a file)."""
    path = cache / f"{key}.npz"
    try:
        npz = load_npz(path, MAX_CACHE_BYTES)
        return RawImages(*(npz[name] for name in _ARRAYS), classes=[str(c) for c in npz["classes"]],
                         origin=str(npz["origin"]))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        # a damaged (truncated, empty) or old cache file: built again, and replaced
        reason = getattr(err, "reason", None) or str(err)[:200]
        print(f"netspec.data: damaged cache {path} ({reason}); ignored, decoding the data again", file=sys.stderr)
    raw = build()
    _store(path, raw)
    return raw


def _store(path: Path, raw: RawImages) -> None:
    # Through the one atomic writer: concurrent runs never read half a file, and a link at the name is replaced.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **{name: getattr(raw, name) for name in _ARRAYS},
                                              classes=np.array(raw.classes), origin=np.array(raw.origin)))
    except (OSError, SetupError) as err:  # a read-only home must not stop a run: it only costs the next start's decode
        print(f"netspec.data: cannot write the cache {path} ({err}); the next start decodes again", file=sys.stderr)


def digest(parts: Iterable[str]) -> str:
    """A short stable hash of `parts`, for cache keys."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]
