"""A local copy (`data.dir`): a folder or a .tar.gz/.tgz/.tar, holding the python batches or an
image-folder tree at its root or one folder down; decoded once, then read from the cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError
from ..cache import cached
from ..files import ArchiveFiles, Files, open_files
from ..types import RawImages
from .image_tree import TreeShape, read_tree, tree_files
from .python_batches import BATCH_FILES, batch_files, read_batches


@dataclass(frozen=True)
class Layout:
    """What a local copy holds: `kind` 'batches' or 'folders', under `root` ('' or 'name/')."""

    kind: str
    root: str


def find_layout(files: Files, where: Path) -> Layout:
    """Python batches or an image-folder tree, at the root or one folder down (a parent folder,
    or an archive that holds the folder)."""
    for root in ["", *(f"{name}/" for name in files.listdir(""))]:
        if files.is_file(root + BATCH_FILES[0]):
            return Layout("batches", root)
        if files.listdir(root + "train") and files.listdir(root + "test"):
            return Layout("folders", root)
    raise DataError(f"data.dir: no CIFAR-10 in {where}: expected cifar-10-batches-py (data_batch_1..5, test_batch) "
                    "or image folders train/<class>/*, test/<class>/* (or a .tar.gz of either)")


def load_local(path: Path, cache: Path, progress: bool = True, shape: TreeShape = TreeShape()) -> RawImages:
    """A local copy (folder or archive), decoded once and then read from the cache. `shape`: the
    channels and size an image tree is decoded to (part of the cache key when asked for)."""
    files = open_files(path)
    # An archive is identified by its own size and mtime, known without reading it (a cached start
    # never opens it); a folder by the size and mtime of each file it holds.
    rels = [] if isinstance(files, ArchiveFiles) else local_files(files, find_layout(files, path), path)
    return cached(cache, f"local-{files.fingerprint(rels)}{shape.key()}",
                  lambda: _read_local(files, path, progress, shape))


def local_files(files: Files, layout: Layout, where: Path) -> list[str]:
    """The files of the copy the loader reads (what the cache's fingerprint and the data identity cover)."""
    if layout.kind == "batches":
        return batch_files(files, layout.root)
    return tree_files(files, layout.root, where)


def _read_local(files: Files, path: Path, progress: bool, shape: TreeShape) -> RawImages:
    layout = find_layout(files, path)
    if layout.kind == "batches":
        if shape.key():
            raise DataError(f"data.dir: {path} holds CIFAR-10's python batches (3x32x32); drop data.image_size "
                            "and data.channels, which shape image-folder trees only")
        return read_batches(files, layout.root, path)
    return read_tree(files, layout.root, path, progress, shape)
