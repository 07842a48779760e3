"""CIFAR-10 from tensorflow-datasets (`source="cifar10"` and no `data.dir`), prepared once into
`<cache>/tfds` (array_record), then cached like any source.

Order: TFDS stores its train split in a shuffled order; the loader sorts the examples by their `id`
field (`train_00000`...), the index in the binary batch files, which hold the images in the python
batches' order, so TFDS gives the report's split too.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ...errors import SetupError
from ...progress import track
from ..cache import cached, digest
from ..types import CIFAR10_CLASSES, RawImages

TFDS_HOST, TFDS_ARCHIVE = "www.cs.toronto.edu", "cifar-10-binary.tar.gz"
LOCAL_COPY_HINT = ("give a local copy with --data-dir PATH (data.dir): the cifar-10-batches-py folder, an image-folder "
                   "tree (train/<class>/*, test/<class>/*), or a .tar.gz of either (cifar-10-python.tar.gz as "
                   "downloaded, or an image tree's archive such as cifar10-jpeg-q75.tar.gz)")


def ways_out(tfds_installed: bool) -> str:
    """What the user can do next; installing netspec[tfds] is advice only when it is not installed."""
    return f"{LOCAL_COPY_HINT}, or " + ("run once with internet" if tfds_installed else
                                        "pip install 'netspec[tfds]' and run once with internet")


def load_tfds(cache: Path, progress: bool = True) -> RawImages:
    """CIFAR-10 from tensorflow-datasets, prepared once in `<cache>/tfds` (array_record), then cached.

    Preparing needs TensorFlow and internet, or cifar-10-binary.tar.gz in `<cache>/tfds/downloads/manual`
    (TFDS's manual folder); reading uses `tfds.data_source` and needs neither. The train split is
    stored shuffled; sorting by `id` restores the batch files' order (see the module docstring).
    """
    data_dir = cache / "tfds"
    return cached(cache, f"tfds-cifar10-{digest([str(data_dir.resolve())])}",
                  lambda: _read_tfds(data_dir, progress))


def _read_tfds(data_dir: Path, progress: bool) -> RawImages:
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise SetupError(f"CIFAR-10 is not available (tensorflow-datasets is not installed): {ways_out(False)}")
    manual_dir = data_dir / "downloads" / "manual"
    # Decided before tensorflow_datasets is imported: its import alone logs framework warnings, and a
    # set-up error should be the only line the user sees.
    reason = None if _prepared(data_dir) else tfds_blocker(manual_dir)
    if reason is not None:
        raise _cannot_prepare(reason, manual_dir)
    with _removed_on_failure(data_dir):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow_datasets as tfds

        builder = tfds.builder("cifar10", data_dir=str(data_dir), file_format="array_record")
        if not builder.is_prepared():
            _prepare_tfds(builder, tfds.download.DownloadConfig(manual_dir=str(manual_dir)), manual_dir)
        train, test = tfds.data_source("cifar10", split=["train", "test"], data_dir=str(data_dir), download=False,
                                       builder_kwargs={"file_format": "array_record"})
    train_x, train_y = _tfds_arrays(train, "reading TFDS cifar10 train", progress)
    test_x, test_y = _tfds_arrays(test, "reading TFDS cifar10 test", progress)
    return RawImages(train_x, train_y, test_x, test_y, list(CIFAR10_CLASSES),
                     origin=f"tensorflow-datasets cifar10 in {data_dir} (ordered by id)")


def _prepared(data_dir: Path) -> bool:
    """TFDS has prepared cifar10 here before (its dataset_info.json is written last)."""
    return any(data_dir.glob("cifar10/*/dataset_info.json"))


@contextlib.contextmanager
def _removed_on_failure(data_dir: Path) -> Iterator[None]:
    """A failed first preparation leaves no folder behind (TFDS creates its tree before it downloads)."""
    existed = data_dir.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise


def _cannot_prepare(reason: str, manual_dir: Path) -> SetupError:
    return SetupError(f"CIFAR-10 could not be prepared with tensorflow-datasets ({reason}): {ways_out(True)}, "
                      f"or put {TFDS_ARCHIVE} in {manual_dir}")


def _prepare_tfds(builder: object, download_config: object, manual_dir: Path) -> None:
    """download_and_prepare, or one SetupError line that says how else to provide the data."""
    try:
        builder.download_and_prepare(download_config=download_config)  # type: ignore[attr-defined]
    except Exception as err:  # a checksum, a full disk, a dropped connection: the user's way out is the same
        raise _cannot_prepare((str(err).strip().splitlines() or [type(err).__name__])[0][:160], manual_dir) from None


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
    for i in track(range(n), label, progress, note="cached for the next start"):
        example = source[i]
        x[i], y[i] = example["image"], example["label"]
        ids.append(str(example["id"].decode() if isinstance(example["id"], bytes) else example["id"]))
    order = np.argsort(np.array(ids), kind="stable")
    return np.ascontiguousarray(x[order].transpose(0, 3, 1, 2)), y[order]
