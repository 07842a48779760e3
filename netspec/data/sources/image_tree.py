"""An image-folder tree: `train/<class>/*` and `test/<class>/*`, PNG or JPEG, classes sorted (= labels).

Order: a tree has no original order. The files are sorted by class then by filename, and the classes
are then *interleaved* (the first file of each class in label order, then the second of each, ...).
A class-sorted order would make a tail validation set all trucks and the trainer's first epoch (run
in source order) a sequence of single-class blocks; interleaved, the tail is the last files of every
class in equal shares. That is a sound split, but not the report's images: `split="stratified"`
(seeded, class-balanced) is the documented choice for folder trees.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ...progress import track
from ..files import Files
from ..images import IMAGE_SUFFIXES, decode_image
from ..types import RawImages


def read_tree(files: Files, root: str, where: Path, progress: bool = True) -> RawImages:
    """train/<class>/* and test/<class>/*, classes sorted (= labels), files interleaved across classes."""
    (classes, train), (test_classes, test) = tree_listing(files, root, where)
    if test_classes != classes:
        raise DataError(f"data.dir: {where}: train/ has classes {classes} but test/ has {test_classes}")
    train_x, train_y = _decode_all(files, train, f"decoding {where.name} train", progress)
    test_x, test_y = _decode_all(files, test, f"decoding {where.name} test", progress)
    return RawImages(train_x, train_y, test_x, test_y, classes,
                     origin=f"image-folder tree in {where} (classes interleaved, files by name)")


def tree_listing(files: Files, root: str, where: Path) -> list[tuple[list[str], list[tuple[str, int]]]]:
    """For train/ and test/: (class names, [(path, label)] in interleaved order)."""
    listing = []
    for part in ("train", "test"):
        classes = [c for c in files.listdir(f"{root}{part}") if files.listdir(f"{root}{part}/{c}")]
        per_class = [[f"{root}{part}/{c}/{name}" for name in files.listdir(f"{root}{part}/{c}")
                      if name.lower().endswith(IMAGE_SUFFIXES)] for c in classes]
        if not any(per_class):
            raise DataError(f"data.dir: {where}: no PNG or JPEG files in {root}{part}/<class>/")
        listing.append((classes, interleave(per_class)))
    return listing


def tree_files(files: Files, root: str, where: Path) -> list[str]:
    """The tree's image files (what the cache's fingerprint covers)."""
    return [rel for _, items in tree_listing(files, root, where) for rel, _ in items]


def interleave(per_class: Sequence[Sequence[str]]) -> list[tuple[str, int]]:
    """[(item, label)]: the first item of each class in label order, then the second of each, ...
    (classes that run out are skipped)."""
    ranked = [(rank, label, item) for label, items in enumerate(per_class) for rank, item in enumerate(items)]
    return [(item, label) for _, label, item in sorted(ranked)]


def _decode_all(files: Files, items: Sequence[tuple[str, int]], label: str,
                progress: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((len(items), 32, 32, 3), np.uint8)
    for i, (rel, _) in enumerate(track(items, label, progress, note="cached for the next start")):
        x[i] = decode_image(files.read(rel), rel)
    y = np.array([lab for _, lab in items], dtype=np.int64)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y
