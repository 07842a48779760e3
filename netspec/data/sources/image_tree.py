"""An image-folder tree: `train/<class>/*` and `test/<class>/*`, PNG or JPEG, any number of classes
(folder names sorted = labels, recorded as the class names), grayscale or RGB, any size.

Shape: `data.channels` and `data.image_size` (DataConfig) when set; else 1 channel if every image is
grayscale (3 otherwise) and the images' own size, which must then be one size for all. Resizing
(`images.decode_pixels`: the whole image, bilinear, aspect not kept) happens once, when the cache is built.

Order: a tree has no original order. The files are sorted by class then by filename, and the classes
are then *interleaved* (the first file of each class in label order, then the second of each, ...).
A class-sorted order would make a tail validation set all trucks and the trainer's first epoch (run
in source order) a sequence of single-class blocks; interleaved, the tail is the last files of every
class in equal shares. That is a sound split, but not the report's images: `split="stratified"`
(seeded, class-balanced) is the documented choice for folder trees.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ...progress import track
from ..cache import MAX_CACHE_BYTES
from ..files import Files
from ..images import GREY_MODES, IMAGE_SUFFIXES, decode_pixels, image_header
from ..types import RawImages


@dataclass(frozen=True)
class TreeShape:
    """What the config asks of a tree's images: None = from the images themselves."""

    channels: Optional[int] = None
    size: Optional[tuple[int, int]] = None

    def key(self) -> str:
        """'' when nothing is asked (the key of every cache made before shapes existed), else e.g. '-1x16x16'."""
        if self.channels is None and self.size is None:
            return ""
        size = "x".join(map(str, self.size)) if self.size else "own"
        return f"-{self.channels or 'auto'}x{size}"


def read_tree(files: Files, root: str, where: Path, progress: bool = True,
              shape: TreeShape = TreeShape()) -> RawImages:
    """train/<class>/* and test/<class>/*, classes sorted (= labels), files interleaved across classes."""
    (classes, train), (test_classes, test) = tree_listing(files, root, where)
    only_test = sorted(set(test_classes) - set(classes))
    if only_test:
        raise DataError(f"data.dir: {where}: class {only_test[0]!r} is in test/ but not in train/; add its training "
                        f"images as train/{only_test[0]}/ or remove test/{only_test[0]}/")
    if test_classes != classes:  # a class without test images: its accuracy could not be measured
        missing = sorted(set(classes) - set(test_classes))[0]
        raise DataError(f"data.dir: {where}: class {missing!r} is in train/ but not in test/; add test/{missing}/ "
                        f"with images of it or remove train/{missing}/")
    channels, size = _target_shape(files, [*train, *test], where, shape)
    need = (len(train) + len(test)) * channels * size[0] * size[1]
    if need > MAX_CACHE_BYTES:  # checked before decoding: the arrays and their cache file must fit
        raise DataError(f"data.dir: {where}: {len(train) + len(test):,} images of {channels}x{size[0]}x{size[1]} are "
                        f"{need / 2**30:,.1f} GiB, more than the {MAX_CACHE_BYTES / 2**30:.0f} GiB netspec caches; "
                        "set a smaller data.image_size")
    notes: Counter[str] = Counter()
    train_x, train_y = _decode_all(files, train, channels, size, notes, f"decoding {where.name} train", progress)
    test_x, test_y = _decode_all(files, test, channels, size, notes, f"decoding {where.name} test", progress)
    for note, count in notes.items():  # said once per note, when the cache is built
        print(f"netspec.data: {where}: {count} image(s): {note}", file=sys.stderr)
    resized = f", resized to {size[0]}x{size[1]}" if shape.size else ""
    return RawImages(train_x, train_y, test_x, test_y, classes,
                     origin=f"image-folder tree in {where} ({len(classes)} classes interleaved, files by name, "
                            f"{channels}x{size[0]}x{size[1]}{resized})")


def tree_listing(files: Files, root: str, where: Path) -> list[tuple[list[str], list[tuple[str, int]]]]:
    """For train/ and test/: (class names, [(path, label)] in interleaved order). A class folder without
    images is refused: its label would exist with nothing to learn it from."""
    listing = []
    for part in ("train", "test"):
        classes = [c for c in files.listdir(f"{root}{part}") if not files.is_file(f"{root}{part}/{c}")]
        per_class = [[f"{root}{part}/{c}/{name}" for name in files.listdir(f"{root}{part}/{c}")
                      if name.lower().endswith(IMAGE_SUFFIXES)] for c in classes]
        if not any(per_class):
            raise DataError(f"data.dir: {where}: no PNG or JPEG files in {root}{part}/<class>/")
        empty = next((c for c, items in zip(classes, per_class) if not items), None)
        if empty is not None:
            raise DataError(f"data.dir: {where}: {root}{part}/{empty}/ holds no PNG or JPEG file; add its images "
                            "or remove the folder")
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


def _target_shape(files: Files, items: Sequence[tuple[str, int]], where: Path,
                  shape: TreeShape) -> tuple[int, tuple[int, int]]:
    """(channels, (height, width)) of the arrays: the config's, else read from the headers (nothing decoded)."""
    if shape.channels is not None and shape.size is not None:
        return shape.channels, shape.size
    headers = {rel: image_header(files.read(rel), rel) for rel, _ in items}
    channels = shape.channels or (1 if all(mode in GREY_MODES for _, _, mode in headers.values()) else 3)
    if shape.size is not None:
        return channels, shape.size
    sizes = Counter((h, w) for h, w, _ in headers.values())
    if len(sizes) > 1:
        (common, n), (other, _) = sizes.most_common(2)
        odd = next(rel for rel, (h, w, _) in headers.items() if (h, w) == other)
        raise DataError(f"data.dir: {where}: images of {len(sizes)} sizes ({n} are {common[1]}x{common[0]}, "
                        f"{odd} is {other[1]}x{other[0]}); set data.image_size to [height, width] (every image is "
                        "then scaled to it) or give images of one size")
    return channels, next(iter(sizes))


def _decode_all(files: Files, items: Sequence[tuple[str, int]], channels: int, size: tuple[int, int],
                notes: Counter[str], label: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((len(items), *size, channels), np.uint8)
    for i, (rel, _) in enumerate(track(items, label, progress, note="cached for the next start")):
        pixels, said = decode_image(files.read(rel), rel, channels, size)
        notes.update(said)
        x[i] = pixels
    y = np.array([lab for _, lab in items], dtype=np.int64)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y


def decode_image(data: bytes, name: str, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple[str, ...]]:
    """One tree file as (H, W, channels) at `size`: a size other than the target without data.image_size
    cannot happen here (checked from the headers first), so a resize is always the config's."""
    return decode_pixels(data, name, channels, size)
