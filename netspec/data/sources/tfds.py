"""Image sets from tensorflow-datasets by name (`data.source`: "cifar10", "mnist", "cifar100", ...; no
`data.dir`), prepared once into `<cache>/tfds` (array_record), then cached like any source. Class
names and shape come from the set's info; only sets with an `image` and a `label` feature and train
and test splits are taken.

Order: TFDS stores its train split in a shuffled order; the loader sorts the examples by their `id`
field (`train_00000`...), the index in the binary batch files, which hold the images in the python
batches' order, so TFDS gives the report's split too.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ...errors import DataError, SetupError, SpecError
from ...progress import track
from ..cache import cached, digest
from ..types import CIFAR10_CLASSES, RawImages

CIFAR10 = "cifar10"
TFDS_HOST, TFDS_ARCHIVE = "www.cs.toronto.edu", "cifar-10-binary.tar.gz"
GCS_HOST = "storage.googleapis.com"
"""Where TFDS downloads most other sets from (its mirror); checked up front as TFDS_HOST is for CIFAR-10."""
LOCAL_COPY_HINT = ("give a local copy with --data-dir PATH (data.dir): the cifar-10-batches-py folder, an image-folder "
                   "tree (train/<class>/*, test/<class>/*), or a .tar.gz of either (cifar-10-python.tar.gz as "
                   "downloaded, or an image tree's archive such as cifar10-jpeg-q75.tar.gz)")


def ways_out(tfds_installed: bool, name: str = "cifar10") -> str:
    """What the user can do next; installing netspec[tfds] is advice only when it is not installed."""
    hint = LOCAL_COPY_HINT if name == CIFAR10 else ("give a local copy as an image-folder tree (train/<class>/*, "
                                                    "test/<class>/*) with --data-dir PATH (data.dir)")
    return f"{hint}, or " + ("run once with internet" if tfds_installed else
                             "pip install 'netspec[tfds]' and run once with internet")


def load_tfds(cache: Path, progress: bool = True, name: str = CIFAR10) -> RawImages:
    """A tensorflow-datasets image set by name, prepared once in `<cache>/tfds` (array_record), then cached.

    Preparing needs TensorFlow and internet (CIFAR-10: or cifar-10-binary.tar.gz in
    `<cache>/tfds/downloads/manual`, TFDS's manual folder); reading uses `tfds.data_source` and needs
    neither. A set with an `id` feature is sorted by it (CIFAR-10: the batch files' order, see the
    module docstring); any other keeps TFDS's stored order.
    """
    data_dir = cache / "tfds"
    key = "cifar10" if name == CIFAR10 else re.sub(r"[^A-Za-z0-9_.]", "_", name)
    return cached(cache, f"tfds-{key}-{digest([str(data_dir.resolve())])}",
                  lambda: _read_tfds(data_dir, progress, name))


def _read_tfds(data_dir: Path, progress: bool, name: str) -> RawImages:
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise SetupError(f"{_title(name)} is not available (tensorflow-datasets is not installed): "
                         f"{ways_out(False, name)}")
    manual_dir = data_dir / "downloads" / "manual"
    # Decided before tensorflow_datasets is imported: its import alone logs framework warnings, and a
    # set-up error should be the only line the user sees. Another name is checked first against TFDS's
    # own catalogue (its code, no download): a misspelt name is not a missing download.
    classes, shape = (list(CIFAR10_CLASSES), (32, 32, 3)) if name == CIFAR10 else _image_set(name, data_dir)
    reason = None if _prepared(data_dir, name) else (
        tfds_blocker(manual_dir) if name == CIFAR10 else tfds_blocker(manual_dir, GCS_HOST))
    if reason is not None:
        raise _cannot_prepare(reason, manual_dir, name)
    with _removed_on_failure(data_dir):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
        if not builder.is_prepared():
            config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
            _prepare_tfds(builder, config, manual_dir) if name == CIFAR10 else _prepare_tfds(builder, config, manual_dir, name)
        train, test = tfds.data_source(name, split=["train", "test"], data_dir=str(data_dir), download=False,
                                       builder_kwargs={"file_format": "array_record"})
    train_x, train_y = _tfds_arrays(train, f"reading TFDS {name} train", progress, shape)
    test_x, test_y = _tfds_arrays(test, f"reading TFDS {name} test", progress, shape)
    for split, y in (("train", train_y), ("test", test_y)):
        bad = np.flatnonzero((y < 0) | (y >= len(classes)))
        if bad.size:
            raise DataError(f"tensorflow-datasets {name} {split}: label {y[bad[0]]} of example {bad[0]} is outside "
                            f"0..{len(classes) - 1} ({len(classes)} classes in its info); the prepared copy in "
                            f"{data_dir} is damaged: delete {data_dir / name.split(':')[0]} and prepare it again")
    order = " (ordered by id)" if name == CIFAR10 else ""
    return RawImages(train_x, train_y, test_x, test_y, classes,
                     origin=f"tensorflow-datasets {name} in {data_dir}{order}")


def _title(name: str) -> str:
    return "CIFAR-10" if name == CIFAR10 else f"tensorflow-datasets {name!r}"


def _image_set(name: str, data_dir: Path) -> tuple[list[str], tuple[int, int, int]]:
    """(class names, (H, W, C)) of TFDS set `name`, from its info (the catalogue's code, or the prepared
    copy's dataset_info.json): one SpecError line for a name that is no such set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    except Exception as err:  # DatasetNotFoundError and friends: the user's fix is the same
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise SpecError(f"data.source {name!r}: not a tensorflow-datasets set ({first}); use a name from "
                        "https://www.tensorflow.org/datasets/catalog such as 'mnist' or 'cifar100'") from None
    features = builder.info.features
    image, label = (features[k] if k in features else None for k in ("image", "label"))
    if not (isinstance(image, tfds.features.Image) and isinstance(label, tfds.features.ClassLabel)):
        have = ", ".join(sorted(features)) if hasattr(features, "keys") else type(features).__name__
        raise SpecError(f"data.source {name!r}: not an image-classification set (netspec needs an 'image' and a "
                        f"'label' class feature; it has {have}); choose an image set such as 'mnist' or 'cifar100'")
    shape = tuple(image.shape)
    if len(shape) != 3 or None in shape or shape[2] not in (1, 3):
        raise SpecError(f"data.source {name!r}: its images are {shape} (height, width, channels), not one size "
                        "with 1 or 3 channels; export it as an image-folder tree and set data.image_size")
    splits = list(builder.info.splits.keys())
    if splits and not {"train", "test"} <= set(splits):  # (a mocked set has no split names: nothing to check)
        raise SpecError(f"data.source {name!r} has the splits {', '.join(splits)}, but netspec trains on 'train' and "
                        "tests on 'test'; carve a test split out: save it as an image-folder tree train/<class>/*, "
                        "test/<class>/* and give it as data.dir")
    names = list(label.names) if label.names else [str(i) for i in range(label.num_classes)]
    return names, shape  # type: ignore[return-value]


def _prepared(data_dir: Path, name: str = CIFAR10) -> bool:
    """TFDS has prepared the set here before (its dataset_info.json is written last)."""
    folder, _, version = name.partition(":")
    return any(data_dir.glob(f"{folder}/{version or '*'}/dataset_info.json"))


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


def _cannot_prepare(reason: str, manual_dir: Path, name: str = CIFAR10) -> SetupError:
    if name != CIFAR10:
        return SetupError(f"{_title(name)} is neither prepared nor downloadable ({reason}): {ways_out(True, name)}, "
                          f"or prepare it where there is internet and copy its folder to {manual_dir.parent.parent / name.split(':')[0]}")
    return SetupError(f"CIFAR-10 could not be prepared with tensorflow-datasets ({reason}): {ways_out(True)}, "
                      f"or put {TFDS_ARCHIVE} in {manual_dir}")


def _prepare_tfds(builder: object, download_config: object, manual_dir: Path, name: str = CIFAR10) -> None:
    """download_and_prepare, or one SetupError line that says how else to provide the data."""
    try:
        builder.download_and_prepare(download_config=download_config)  # type: ignore[attr-defined]
    except Exception as err:  # a checksum, a full disk, a dropped connection: the user's way out is the same
        raise _cannot_prepare((str(err).strip().splitlines() or [type(err).__name__])[0][:160], manual_dir, name) from None


def tfds_blocker(manual_dir: Path, host: str = TFDS_HOST) -> Optional[str]:
    """Why preparing cannot work here, checked up front: without internet TFDS retries for minutes
    before failing, and without TensorFlow it fails only after the 170 MB download."""
    for module, why in (("tensorflow", "TensorFlow, needed once to prepare it, is not installed"),
                        ("importlib_resources", "importlib_resources is not installed (tensorflow/datasets#11212)")):
        if importlib.util.find_spec(module) is None:
            return why
    if not (manual_dir / TFDS_ARCHIVE).is_file() and not _reachable(host):
        return f"no internet: cannot reach {host}"
    return None


def _reachable(host: str, timeout_s: float = 5.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _tfds_arrays(source: Sequence[dict], label: str, progress: bool,
                 shape: tuple[int, int, int] = (32, 32, 3)) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    x = np.empty((n, *shape), np.uint8)
    y = np.empty(n, np.int64)
    ids = []
    # One example at a time: `__getitems__` of tfds.testing.mock_data's sources is broken (TFDS 4.9.10),
    # and this runs once per machine before the cache.
    for i in track(range(n), label, progress, note="cached for the next start"):
        example = source[i]
        x[i], y[i] = example["image"], example["label"]
        if "id" in example:
            ids.append(str(example["id"].decode() if isinstance(example["id"], bytes) else example["id"]))
    order = np.argsort(np.array(ids), kind="stable") if len(ids) == n else np.arange(n)
    return np.ascontiguousarray(x[order].transpose(0, 3, 1, 2)), y[order]
