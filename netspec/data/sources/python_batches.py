"""The CIFAR-10 python batches (`cifar-10-batches-py`): data_batch_1..5, test_batch, batches.meta.

Order: data_batch_1..5 as stored: the report's order. The batches are pickles, read with a
restricted unpickler (`netspec.data.safe_unpickle`): a file that refers to anything but numpy
arrays, dicts, lists, bytes and ints is refused, nothing in it run; what it holds is then checked
against what CIFAR-10's files hold.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from .. import safe_unpickle
from ..files import Files
from ..types import CIFAR10_CLASSES, IMAGE_SHAPE, RawImages

BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
OTHER_FILES = ("test_batch", "batches.meta")


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
        raise DataError(f"data.dir: {where}: {rel} is missing; a copy of cifar-10-batches-py needs "
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


def _not_cifar(name: str, reason: str, what: str = "batch") -> DataError:
    return DataError(f"{name}: not a CIFAR-10 {what}: {reason}; "
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


def batch_files(files: Files, root: str) -> list[str]:
    """The copy's batch files that exist (what the cache's fingerprint covers)."""
    return [rel for rel in (root + name for name in (*BATCH_FILES, *OTHER_FILES)) if files.is_file(rel)]
