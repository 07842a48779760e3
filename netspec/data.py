"""CIFAR-10 as numpy arrays, split and scaled as an experiment's `DataConfig` says.

    data = load_dataset(DataConfig(dir="../shared/data/cifar10-jpeg-q75.tar.gz"))
    data.train_x.shape  # (40000, 3, 32, 32) float32, normalized; data.train_y int64

Sources, chosen by the config:

- `source="synthetic"`: seeded, CIFAR-shaped, learnable data made here (no files).
- `dir` set: a local copy, auto-detected: an image-folder tree (`train/<class>/*`, `test/<class>/*`,
  PNG or JPEG), the CIFAR-10 python batches (`cifar-10-batches-py`: the folder itself or its parent),
  or a `.tar.gz` / `.tgz` / `.tar` of either.
- `source="cifar10"` and no `dir`: tensorflow-datasets, prepared once into `<cache>/tfds`.

Decoded images are cached as uint8 arrays in `<cache>/*.npz` (cache: the `cache_dir` argument, else
`$NETSPEC_CACHE`, else `~/.cache/netspec`), so only the first start decodes. The split and the
scaling are applied on every load (they are cheap and depend on the config).

Order. The report's `split="tail"` (validation = the last `val_size` training images) assumes the
source order of the python batches. Each source's order:

- python batches: data_batch_1..5 as stored: the report's order.
- TFDS: its train split is stored in a shuffled order; the loader sorts the examples by their `id`
  field (`train_00000`...), the index in the binary batch files, which hold the images in the python
  batches' order, so TFDS gives the report's split too.
- image-folder tree: there is no original order; the files are sorted by class then by filename, and
  the classes are then *interleaved* (the first file of each class in label order, then the second
  of each, ...). A class-sorted order would make a tail validation set all trucks and the trainer's
  first epoch (run in source order) a sequence of single-class blocks; interleaved, the tail is the
  last files of every class in equal shares. That is a sound split, but not the report's images:
  `split="stratified"` (seeded, class-balanced) is the documented choice for folder trees.
- synthetic: generation order (labels drawn at random).

Python batches are pickles, read with a restricted unpickler (`netspec.safe_unpickle`): a file that
refers to anything but numpy arrays, dicts, lists, bytes and ints is refused, nothing in it run.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import socket
import sys
import tarfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence, TypeVar

import numpy as np
from PIL import Image

from . import safe_unpickle
from .errors import SpecError
from .experiment import DataConfig

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SHAPE = (3, 32, 32)
"""Channels, height, width of every image (NCHW arrays)."""
SYNTHETIC_SIZES = (50_000, 10_000)
"""Default train and test sizes of synthetic data (CIFAR-10's)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")  # the readers PIL may use (JPEG's also opens MPO, a JPEG with extra pictures)
MAX_FILE_BYTES = 256 * 2**20
"""Largest file read from a local copy (folder or archive member); data_batch_1 is 31 MB."""
MAX_ARCHIVE_BYTES = 2 * 2**30
"""Largest total of an archive's files (the python batches are 178 MB, a PNG tree about 150 MB)."""
MAX_ARCHIVE_MEMBERS = 200_000
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TFDS_HOST, TFDS_ARCHIVE = "www.cs.toronto.edu", "cifar-10-binary.tar.gz"
TFDS_HINT = ("give a local copy with --data-dir path/to/cifar-10-batches-py or an image-folder tree (data.dir), "
             "or pip install 'netspec[tfds]' and run once with internet")

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images float32 NCHW (N, 3, 32, 32), normalized; labels int64 in 0..len(classes)-1."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    """Class names; label i is classes[i]."""
    source: str
    """Where the images came from and how they were split and scaled (for the run's environment file)."""


@dataclass(frozen=True, eq=False)
class RawImages:
    """A source's images before splitting and scaling: uint8 NCHW, int64 labels, in source order."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    origin: str
    """Where they came from, in words."""


def load_dataset(config: DataConfig, cache_dir: Path | None = None, progress: bool = True) -> Dataset:
    """Load, split and normalize the data an experiment asks for (see the module docstring).

    `train_size` / `test_size` cap a real source (the first N in source order) and set the sizes of
    synthetic data. `progress` shows a status line on stderr while decoding (first start only).
    Problems a user can fix (no data, a bad folder, a split that does not fit) raise a one-line SpecError.
    """
    raw = load_raw(config, cache_dir, progress)
    train_x, train_y = raw.train_x[: config.train_size], raw.train_y[: config.train_size]
    test_x, test_y = raw.test_x[: config.test_size], raw.test_y[: config.test_size]
    fit_idx, val_idx = split_indices(train_y, config.val_size, config.split, config.seed)
    fit_x = train_x[fit_idx]
    shift, scale = normalization(config.normalize, fit_x)
    return Dataset(
        train_x=scaled(fit_x, shift, scale), train_y=train_y[fit_idx],
        val_x=scaled(train_x[val_idx], shift, scale), val_y=train_y[val_idx],
        test_x=scaled(test_x, shift, scale), test_y=test_y,
        classes=list(raw.classes),
        source=describe(raw.origin, config, len(fit_idx), len(val_idx), len(test_y), shift, scale),
    )


def describe(origin: str, config: DataConfig, n_train: int, n_val: int, n_test: int,
             shift: np.ndarray, scale: np.ndarray) -> str:
    """One line for the run's environment file: origin, split sizes, scaling (with the statistics used)."""
    seed = f", seed {config.seed}" if config.split == "stratified" else ""
    stats = f" (mean {_fmt(shift)}, std {_fmt(scale)})" if config.normalize == "per_channel" else ""
    return (f"{origin}; {n_train} train / {n_val} val ({config.split} split{seed}) / {n_test} test; "
            f"normalize {config.normalize}{stats}")


def load_raw(config: DataConfig, cache_dir: Path | None = None, progress: bool = True) -> RawImages:
    """The uint8 images of the source the config names, uncapped and unsplit (synthetic: at the config's sizes)."""
    if config.source == "synthetic":
        if config.dir is not None:
            raise SpecError(f"data.dir={config.dir!r} is set but data.source is 'synthetic'; "
                            "drop one of them (a local copy needs data.source=cifar10)")
        return synthetic(config.train_size or SYNTHETIC_SIZES[0], config.test_size or SYNTHETIC_SIZES[1], config.seed)
    cache = cache_root(cache_dir)
    if config.dir is not None:
        return load_local(Path(config.dir).expanduser(), cache, progress)
    return load_tfds(cache, progress)


# --- splitting and scaling ------------------------------------------------------------------------


def split_indices(labels: np.ndarray, val_size: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images, each in ascending (source) order.

    'tail': validation is the last `val_size`. 'stratified': `val_size` drawn at random (seeded) with
    each class's share of validation equal to its share of the data (largest remainders), so equal
    shares for balanced data.
    """
    n = len(labels)
    if val_size >= n:
        raise SpecError(f"data.val_size={val_size} leaves no training images out of {n}; "
                        f"lower data.val_size (or raise data.train_size)")
    if split == "tail":
        return np.arange(n - val_size), np.arange(n - val_size, n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = _largest_remainders(val_size * counts / n)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    is_val = np.zeros(n, dtype=bool)
    is_val[np.concatenate(chosen)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _largest_remainders(shares: np.ndarray) -> np.ndarray:
    """Round `shares` to integers keeping their (integer) sum; ties go to the first entries."""
    floors = np.floor(shares).astype(np.int64)
    missing = int(round(shares.sum())) - int(floors.sum())
    order = np.argsort(-(shares - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors


def normalization(kind: str, train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) per channel, so that x_normalized = (x - shift) / scale.

    'report': 128 and 255 for every channel, as the lab's framework. 'per_channel': the mean and the
    (population) standard deviation of each channel over the training split only, so nothing is
    learned from validation or test images.
    """
    if kind == "report":
        return np.full(3, 128.0), np.full(3, 255.0)
    # A histogram of the 256 pixel values gives exact statistics without a float copy of the images.
    values = np.arange(256, dtype=np.float64)
    counts = np.stack([np.bincount(train_x[:, c].ravel(), minlength=256) for c in range(train_x.shape[1])])
    total = counts.sum(axis=1)
    mean = counts @ values / total
    var = counts @ values**2 / total - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0)) + 1e-8


def scaled(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """uint8 NCHW -> float32 (x - shift) / scale: one float array, divided in place."""
    out = np.subtract(x, shift.astype(np.float32).reshape(1, -1, 1, 1), dtype=np.float32)
    out /= scale.astype(np.float32).reshape(1, -1, 1, 1)
    return out


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


# --- synthetic data -------------------------------------------------------------------------------

# Each image: 128 + its class's smooth pattern at a random strength + a smooth random nuisance
# pattern + pixel noise. Class patterns and nuisances live in the same low-frequency space, so the
# classes overlap (no network reaches 100%) while a linear model is already well above chance.
_SYN_GRID = 4            # patterns are random 4x4 grids per channel, upsampled bilinearly to 32x32
_SYN_CLASS_SCALE = 0.5   # class pattern against a nuisance of scale 1 (sets the overlap)
_SYN_PIXELS = 40.0       # pixel units of one standard deviation of a pattern
_SYN_NOISE = 24          # per-pixel noise, uniform integers in [-24, 24] (cheaper to draw than normals)
_SYN_CHUNK = 1024        # images generated per random stream: a smaller set is a prefix of a larger one


def synthetic(train_size: int, test_size: int, seed: int, num_classes: int = 10) -> RawImages:
    """Seeded CIFAR-shaped uint8 images: the same seed gives the same images, and the first N images
    do not depend on the requested size (train and test have their own streams)."""
    patterns = np.random.default_rng([seed, 0]).standard_normal((num_classes, 3, _SYN_GRID, _SYN_GRID))
    train_x, train_y = _synthetic_split(train_size, patterns, seed, stream=1)
    test_x, test_y = _synthetic_split(test_size, patterns, seed, stream=2)
    return RawImages(train_x, train_y, test_x, test_y, [f"class_{i}" for i in range(num_classes)],
                     origin=f"synthetic (seed {seed})")


def _synthetic_split(n: int, patterns: np.ndarray, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = [_synthetic_chunk(patterns, np.random.default_rng([seed, stream, i]))
              for i in range(-(-n // _SYN_CHUNK))]
    return np.concatenate([x for x, _ in chunks])[:n], np.concatenate([y for _, y in chunks])[:n]


def _synthetic_chunk(patterns: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m = _SYN_CHUNK
    labels = rng.integers(0, len(patterns), m)
    strength = rng.uniform(0.5, 1.5, (m, 1, 1, 1))
    # Upsampling is linear: mix class and nuisance on the 4x4 grids, then upsample once.
    grid = _SYN_CLASS_SCALE * strength * patterns[labels] + rng.standard_normal((m, 3, _SYN_GRID, _SYN_GRID))
    x = _smooth(grid * _SYN_PIXELS)
    x += 128.0 - _SYN_NOISE
    x += rng.integers(0, 2 * _SYN_NOISE + 1, x.shape, dtype=np.uint8)
    return np.clip(np.rint(x, out=x), 0, 255, out=x).astype(np.uint8), labels.astype(np.int64)


def _smooth(grid: np.ndarray) -> np.ndarray:
    """(N, C, g, g) -> (N, C, 32, 32) float32 by bilinear upsampling."""
    up = _upsample_matrix(grid.shape[-1], IMAGE_SHAPE[-1])
    return up @ grid.astype(np.float32) @ up.T


def _upsample_matrix(low: int, high: int) -> np.ndarray:
    """(high, low) linear interpolation weights, pixel centres aligned (half-pixel convention)."""
    pos = np.clip((np.arange(high) + 0.5) * low / high - 0.5, 0, low - 1)
    left = np.minimum(np.floor(pos).astype(int), low - 2)
    frac = (pos - left).astype(np.float32)
    m = np.zeros((high, low), np.float32)
    m[np.arange(high), left] = 1 - frac
    m[np.arange(high), left + 1] += frac
    return m


# --- local copies: folders and archives -----------------------------------------------------------


class Files(Protocol):
    """Read-only files by relative posix path ('' is the root): a folder or an archive's members."""

    def listdir(self, rel: str) -> list[str]:
        """Sorted names of the entries of folder `rel` ([] if it is not a folder)."""

    def is_file(self, rel: str) -> bool: ...

    def read(self, rel: str) -> bytes: ...

    def fingerprint(self, rels: Sequence[str]) -> str:
        """Identity of the copy for the cache; changes when the files `rels` may have changed."""


class FolderFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def listdir(self, rel: str) -> list[str]:
        folder = self.root / rel
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def read(self, rel: str) -> bytes:
        path = self.root / rel
        _check_size(str(path), path.stat().st_size)
        return path.read_bytes()

    def fingerprint(self, rels: Sequence[str]) -> str:
        # Every file's size and mtime: a folder's own mtime misses edits inside its subfolders.
        # About 0.3 s for CIFAR-10's 60,000 files.
        stats = (os.stat(self.root / rel) for rel in rels)
        return _digest([str(self.root.resolve()), *(f"{r}:{s.st_size}:{s.st_mtime_ns}" for r, s in zip(rels, stats))])


class ArchiveFiles:
    """A tar archive's members, read into memory once, on first use.

    Reading the members (2.6 s for the 20 MB JPEG copy) is 3x faster than extracting 60,000 small
    files and leaves no extracted tree behind: the decoded .npz is the one cache.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: Optional[dict[str, bytes]] = None
        self._folders: dict[str, set[str]] = {}

    def _load(self) -> dict[str, bytes]:
        if self._files is None:
            try:
                with tarfile.open(self.path) as tar:
                    self._files = self._read_members(tar)
            except (tarfile.TarError, OSError, EOFError) as err:
                raise SpecError(f"{self.path}: cannot read the archive ({err}); check the file") from None
            for name in self._files:  # parent folder -> entries, for listdir
                parts = name.split("/")
                for depth in range(len(parts)):
                    self._folders.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
        return self._files

    def _read_members(self, tar: tarfile.TarFile) -> dict[str, bytes]:
        """The regular files by name, each member checked before it is read (an archive from elsewhere
        may hold links, paths out of its folder, or a small gzip of gigabytes) and the total bounded."""
        files: dict[str, bytes] = {}
        total = 0
        for count, member in enumerate(tar, 1):
            _check_member(self.path, member, count)
            if member.isfile():
                total += member.size
                if total > MAX_ARCHIVE_BYTES:
                    raise SpecError(f"{self.path}: its files add up to more than {MAX_ARCHIVE_BYTES:,} bytes, "
                                    "far more than a CIFAR-10 copy; check the archive")
                files[_clean_member(member.name)] = tar.extractfile(member).read()
        return files

    def listdir(self, rel: str) -> list[str]:
        self._load()
        return sorted(n for n in self._folders.get(rel.strip("/"), ()) if not n.startswith("."))

    def is_file(self, rel: str) -> bool:
        return rel in self._load()

    def read(self, rel: str) -> bytes:
        return self._load()[rel]

    def fingerprint(self, rels: Sequence[str]) -> str:
        stat = self.path.stat()  # the archive as a whole: no need to read it to know it is unchanged
        return _digest([str(self.path.resolve()), f"{stat.st_size}:{stat.st_mtime_ns}"])


def _check_member(archive: Path, member: tarfile.TarInfo, count: int) -> None:
    """One line for a member netspec will not read. Members are never extracted, but a path out of the
    folder or a link is a sign of a hostile archive, and a link would silently hide a missing file."""
    if count > MAX_ARCHIVE_MEMBERS:
        raise SpecError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS:,} members, far more than a CIFAR-10 copy's "
                        "60,000 files; check the archive")
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise SpecError(f"{archive}: member {member.name!r} points outside the archive's folder; "
                        "refusing the archive: repack it with relative paths")
    if not (member.isfile() or member.isdir()):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a device, pipe or other special file")
        target = f" to {member.linkname!r}" if member.issym() or member.islnk() else ""
        raise SpecError(f"{archive}: member {member.name!r} is {kind}{target}; netspec reads only regular "
                        "files from an archive: repack it without links")
    _check_size(f"{archive}: member {member.name!r}", member.size)


def _check_size(name: str, size: int) -> None:
    """Refuse, before reading it, a file larger than any of a CIFAR-10 copy (data_batch_1 is 31 MB)."""
    if size > MAX_FILE_BYTES:
        raise SpecError(f"{name} has {size:,} bytes, more than any file of a CIFAR-10 copy "
                        f"(limit {MAX_FILE_BYTES:,}); check the data")


def _clean_member(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def open_files(path: Path) -> Files:
    if path.is_dir():
        return FolderFiles(path)
    if path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar"))):
        return ArchiveFiles(path)
    what = "does not exist" if not path.exists() else "is neither a folder nor a .tar.gz/.tgz/.tar archive"
    raise SpecError(f"data.dir: {path} {what}; give cifar-10-batches-py, an image-folder tree or a .tar.gz of either")


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
    raise SpecError(f"data.dir: no CIFAR-10 in {where}: expected cifar-10-batches-py (data_batch_1..5, test_batch) "
                    "or image folders train/<class>/*, test/<class>/* (or a .tar.gz of either)")


def load_local(path: Path, cache: Path, progress: bool = True) -> RawImages:
    """A local copy (folder or archive), decoded once and then read from the cache."""
    files = open_files(path)
    # An archive is identified by its own size and mtime, known without reading it (a cached start
    # never opens it); a folder by the size and mtime of each file it holds.
    rels = [] if isinstance(files, ArchiveFiles) else _local_files(files, find_layout(files, path), path)
    return cached(cache, f"local-{files.fingerprint(rels)}", lambda: _read_local(files, path, progress))


def _local_files(files: Files, layout: Layout, where: Path) -> list[str]:
    if layout.kind == "batches":
        return [rel for rel in (layout.root + name for name in (*BATCH_FILES, "test_batch", "batches.meta"))
                if files.is_file(rel)]
    return [rel for _, items in _tree_listing(files, layout.root, where) for rel, _ in items]


def _read_local(files: Files, path: Path, progress: bool) -> RawImages:
    layout = find_layout(files, path)
    if layout.kind == "batches":
        return read_batches(files, layout.root, path)
    return read_tree(files, layout.root, path, progress)


# --- the CIFAR-10 python batches ------------------------------------------------------------------


def read_batches(files: Files, root: str, where: Path) -> RawImages:
    """data_batch_1..5 then test_batch: pickled dicts with b'data' (N, 3072) uint8 in CHW order and b'labels'."""
    train = [_read_batch(files, root + name, where) for name in BATCH_FILES]
    test_x, test_y = _read_batch(files, root + "test_batch", where)
    meta = root + "batches.meta"
    classes = _read_label_names(files, meta, str(where / meta)) if files.is_file(meta) else CIFAR10_CLASSES
    return RawImages(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                     test_x, test_y, classes, origin=f"CIFAR-10 python batches in {where}")


def _read_batch(files: Files, rel: str, where: Path) -> tuple[np.ndarray, np.ndarray]:
    if not files.is_file(rel):
        raise SpecError(f"data.dir: {where}: {rel} is missing; a copy of cifar-10-batches-py needs "
                        "data_batch_1..5 and test_batch")
    name = str(where / rel)
    return _batch_arrays(_unpickle(files, rel, name), name)


def _batch_arrays(batch: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images NCHW, labels int64) from a batch dict, after checking it is what CIFAR-10 holds."""
    data, labels = _entry(batch, b"data", name), _entry(batch, b"labels", name)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == np.prod(IMAGE_SHAPE)):
        raise _not_cifar(name, f"b'data' is {_describe(data)}; it must be a uint8 array of N x 3072 pixels")
    y = _labels(labels, name)
    if len(data) != len(y):
        raise _not_cifar(name, f"it has {len(data)} images but {len(y)} labels")
    return data.reshape(-1, *IMAGE_SHAPE), y


def _labels(labels: object, name: str) -> np.ndarray:
    """N integers in 0..9: a list of ints in the official files, an integer array accepted too."""
    try:
        y = np.asarray(labels) if isinstance(labels, (list, np.ndarray)) else None
    except ValueError:  # a ragged list
        y = None
    if y is None or y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise _not_cifar(name, f"b'labels' is {_describe(labels)}; it must be a list of N integers 0..9")
    bad = np.flatnonzero((y < 0) | (y >= len(CIFAR10_CLASSES)))
    if bad.size:
        raise _not_cifar(name, f"label {y[bad[0]]} at index {bad[0]} is outside 0..9")
    return y.astype(np.int64)


def _read_label_names(files: Files, rel: str, name: str) -> list[str]:
    """batches.meta's b'label_names': the 10 class names, as bytes (str accepted)."""
    names = _entry(_unpickle(files, rel, name), b"label_names", name, "batches.meta")
    if not (isinstance(names, list) and len(names) == len(CIFAR10_CLASSES)
            and all(isinstance(n, (bytes, str)) and n for n in names)):
        raise _not_cifar(name, f"b'label_names' is {_describe(names)}; it must list the 10 class names",
                         "batches.meta")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _entry(content: object, key: bytes, name: str, what: str = "batch") -> object:
    """content[key], or the one line that says why a file holds no such entry."""
    if not isinstance(content, dict):
        raise _not_cifar(name, f"it holds {_describe(content)} instead of a dict", what)
    if key not in content:
        keys = ", ".join(repr(k)[:40] for k in list(content)[:6])
        raise _not_cifar(name, f"it has no {key!r} entry (its keys: {keys or 'none'})", what)
    return content[key]


def _describe(value: object) -> str:
    """A value's kind in a few words, for messages (never its content: it may be huge or hostile)."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _not_cifar(name: str, reason: str, what: str = "batch") -> SpecError:
    return SpecError(f"{name}: not a CIFAR-10 {what}: {reason}; "
                     "use the files of the official cifar-10-python.tar.gz")


def _unpickle(files: Files, rel: str, name: str) -> object:
    """Unpickle a batch file admitting only what CIFAR-10's files contain: a data folder may come from
    anyone, and plain pickle.loads runs whatever callable the file names."""
    data = files.read(rel)
    try:
        return safe_unpickle.loads(data)  # the batches were pickled by Python 2: str read as bytes
    except safe_unpickle.RefusedPickle as err:
        raise _not_cifar(name, f"{err} (refused; nothing in it was run)") from None
    except Exception as err:  # any unpickling failure means the same thing to the user
        raise _not_cifar(name, f"it is not a readable pickle ({type(err).__name__})") from None


# --- image-folder trees ---------------------------------------------------------------------------


def read_tree(files: Files, root: str, where: Path, progress: bool = True) -> RawImages:
    """train/<class>/* and test/<class>/*, classes sorted (= labels), files interleaved across classes."""
    (classes, train), (test_classes, test) = _tree_listing(files, root, where)
    if test_classes != classes:
        raise SpecError(f"data.dir: {where}: train/ has classes {classes} but test/ has {test_classes}")
    train_x, train_y = _decode_all(files, train, f"decoding {where.name} train", progress)
    test_x, test_y = _decode_all(files, test, f"decoding {where.name} test", progress)
    return RawImages(train_x, train_y, test_x, test_y, classes,
                     origin=f"image-folder tree in {where} (classes interleaved, files by name)")


def _tree_listing(files: Files, root: str, where: Path) -> list[tuple[list[str], list[tuple[str, int]]]]:
    """For train/ and test/: (class names, [(path, label)] in interleaved order)."""
    listing = []
    for part in ("train", "test"):
        classes = [c for c in files.listdir(f"{root}{part}") if files.listdir(f"{root}{part}/{c}")]
        per_class = [[f"{root}{part}/{c}/{name}" for name in files.listdir(f"{root}{part}/{c}")
                      if name.lower().endswith(IMAGE_SUFFIXES)] for c in classes]
        if not any(per_class):
            raise SpecError(f"data.dir: {where}: no PNG or JPEG files in {root}{part}/<class>/")
        listing.append((classes, interleave(per_class)))
    return listing


def interleave(per_class: Sequence[Sequence[str]]) -> list[tuple[str, int]]:
    """[(item, label)]: the first item of each class in label order, then the second of each, ...
    (classes that run out are skipped)."""
    ranked = [(rank, label, item) for label, items in enumerate(per_class) for rank, item in enumerate(items)]
    return [(item, label) for _, label, item in sorted(ranked)]


def _decode_all(files: Files, items: Sequence[tuple[str, int]], label: str,
                progress: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((len(items), 32, 32, 3), np.uint8)
    for i, (rel, _) in enumerate(track(items, label, progress)):
        x[i] = decode_image(files.read(rel), rel)
    y = np.array([lab for _, lab in items], dtype=np.int64)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y


def decode_image(data: bytes, name: str = "<image>") -> np.ndarray:
    """PNG/JPEG bytes -> (32, 32, 3) uint8 RGB. The size is checked from the header, before decoding:
    a small file can declare gigapixels."""
    with _open_image(data, name) as image:
        if image.size != (32, 32):
            raise SpecError(f"data.dir: {name} is {image.width}x{image.height}; CIFAR-10 images are 32x32")
        try:
            return np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as err:
            raise SpecError(f"data.dir: cannot decode {name} ({err})") from None


def _open_image(data: bytes, name: str) -> Image.Image:
    """Image.open reads only the header. PNG and JPEG only: PIL's other readers (EPS runs Ghostscript)
    are not needed for an image tree. PIL's decompression-bomb warning becomes an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise SpecError(f"data.dir: cannot decode {name} ({err})") from None


# --- tensorflow-datasets --------------------------------------------------------------------------


def load_tfds(cache: Path, progress: bool = True) -> RawImages:
    """CIFAR-10 from tensorflow-datasets, prepared once in `<cache>/tfds` (array_record), then cached.

    Preparing needs TensorFlow and internet, or cifar-10-binary.tar.gz in `<cache>/tfds/downloads/manual`
    (TFDS's manual folder); reading uses `tfds.data_source` and needs neither. The train split is
    stored shuffled; sorting by `id` restores the batch files' order (see the module docstring).
    """
    data_dir = cache / "tfds"
    return cached(cache, f"tfds-cifar10-{_digest([str(data_dir.resolve())])}",
                  lambda: _read_tfds(data_dir, progress))


def _read_tfds(data_dir: Path, progress: bool) -> RawImages:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise SpecError(f"CIFAR-10 is not available (tensorflow-datasets is not installed): {TFDS_HINT}") from None
    manual_dir = data_dir / "downloads" / "manual"
    builder = tfds.builder("cifar10", data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
        _prepare_tfds(builder, tfds.download.DownloadConfig(manual_dir=str(manual_dir)), manual_dir)
    train, test = tfds.data_source("cifar10", split=["train", "test"], data_dir=str(data_dir), download=False,
                                   builder_kwargs={"file_format": "array_record"})
    train_x, train_y = _tfds_arrays(train, "reading TFDS cifar10 train", progress)
    test_x, test_y = _tfds_arrays(test, "reading TFDS cifar10 test", progress)
    return RawImages(train_x, train_y, test_x, test_y, list(CIFAR10_CLASSES),
                     origin=f"tensorflow-datasets cifar10 in {data_dir} (ordered by id)")


def _prepare_tfds(builder: object, download_config: object, manual_dir: Path) -> None:
    """download_and_prepare, or one SpecError line that says how else to provide the data."""
    reason = tfds_blocker(manual_dir)
    if reason is None:
        try:
            builder.download_and_prepare(download_config=download_config)  # type: ignore[attr-defined]
            return
        except Exception as err:  # a checksum, a full disk, a dropped connection: the user's way out is the same
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    raise SpecError(f"CIFAR-10 could not be prepared with tensorflow-datasets ({reason}): {TFDS_HINT}, "
                    f"or put cifar-10-binary.tar.gz in {manual_dir}")


def tfds_blocker(manual_dir: Path) -> Optional[str]:
    """Why preparing cannot work here, checked up front: without internet TFDS retries for minutes
    before failing, and without TensorFlow it fails only after the 170 MB download."""
    for module, why in (("tensorflow", "TensorFlow, needed once to prepare it, is not installed"),
                        ("importlib_resources", "importlib_resources is not installed (tensorflow/datasets#11212)")):
        if importlib.util.find_spec(module) is None:
            return why
    if not (manual_dir / TFDS_ARCHIVE).is_file() and not _reachable(TFDS_HOST):
        return f"no internet: cannot reach {TFDS_HOST}"
    return None


def _reachable(host: str, timeout_s: float = 5.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _tfds_arrays(source: Sequence[dict], label: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    x = np.empty((n, 32, 32, 3), np.uint8)
    y = np.empty(n, np.int64)
    ids = []
    # One example at a time: `__getitems__` of tfds.testing.mock_data's sources is broken (TFDS 4.9.10),
    # and this runs once per machine before the cache.
    for i in track(range(n), label, progress):
        example = source[i]
        x[i], y[i] = example["image"], example["label"]
        ids.append(str(example["id"].decode() if isinstance(example["id"], bytes) else example["id"]))
    order = np.argsort(np.array(ids), kind="stable")
    return np.ascontiguousarray(x[order].transpose(0, 3, 1, 2)), y[order]


# --- the cache ------------------------------------------------------------------------------------


def cache_root(cache_dir: Path | None = None) -> Path:
    """`cache_dir`, else $NETSPEC_CACHE, else ~/.cache/netspec."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("NETSPEC_CACHE") or "~/.cache/netspec").expanduser()


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def cached(cache: Path, key: str, build: Callable[[], RawImages]) -> RawImages:
    """The images stored under `key`, else `build()` them and store them (uncompressed .npz: loads in
    well under a second; written to a temporary name then renamed, so concurrent runs never read half a file)."""
    path = cache / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return RawImages(*(npz[name] for name in _ARRAYS), classes=[str(c) for c in npz["classes"]],
                             origin=str(npz["origin"]))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError) as err:  # a damaged or old cache file: build it again
        print(f"netspec.data: ignoring unreadable cache {path} ({err})", file=sys.stderr)
    raw = build()
    _store(path, raw)
    return raw


def _store(path: Path, raw: RawImages) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{name: getattr(raw, name) for name in _ARRAYS},
                     classes=np.array(raw.classes), origin=np.array(raw.origin))
        os.replace(tmp, path)
    except OSError as err:  # a read-only home must not stop a run: it only costs the next start's decode
        print(f"netspec.data: cannot write the cache {path} ({err}); the next start decodes again", file=sys.stderr)


# --- progress -------------------------------------------------------------------------------------


def track(items: Sequence[T], label: str, enabled: bool = True, every_s: float = 0.5) -> Iterator[T]:
    """Yield `items`; on a terminal, redraw 'label: i/n' on stderr every `every_s` seconds. A long run
    ends with one summary line (kept in logs too); short ones (tests) print nothing."""
    live = enabled and sys.stderr.isatty()
    start = last = time.perf_counter()
    for i, item in enumerate(items):
        if live and time.perf_counter() - last >= every_s:
            sys.stderr.write(f"\r{label}: {i:,}/{len(items):,}")
            sys.stderr.flush()
            last = time.perf_counter()
        yield item
    seconds = time.perf_counter() - start
    if enabled and seconds >= every_s:
        sys.stderr.write(f"\r{label}: {len(items):,} in {seconds:.1f}s (cached for the next start)\n")
