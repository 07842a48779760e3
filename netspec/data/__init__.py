"""Images as numpy arrays (CIFAR-10, any TFDS image set, any image tree), split and scaled as an
experiment's `DataConfig` says.

    data = load_dataset(DataConfig(dir="../shared/data/cifar10-jpeg-q75.tar.gz"))
    data.train_x.shape  # (40000, 3, 32, 32) float32, normalized; data.train_y int64

A load is: the source's uint8 images (`load_raw`: which source the config names, `sources/`), decoded
once and then read from the cache (`cache`), capped to `train_size` / `test_size`, split into
training and validation (`splits`), and scaled (`normalization`). The split and the scaling are
applied on every load: they are cheap and depend on the config.

- `source="synthetic"`: seeded, CIFAR-shaped data made here (`sources/synthetic.py`).
- `dir` set: a local copy, a folder or a .tar.gz of the python batches or of an image-folder tree
  (`sources/local.py`, read through `files.py`, untrusted: sizes and members checked).
- `source="cifar10"` or any other tensorflow-datasets name, and no `dir`: TFDS (`sources/tfds.py`).

Errors a user can fix are one line: `DataError` for the files, `SpecError` for a config that does
not fit them, `SetupError` for a missing package or network.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import SpecError
from netspec.spec.data_config import DataConfig
from netspec.spec.params import physical_memory
from .cache import cache_root
from .images import decode_image
from .normalization import normalization, scaled
from .sources.image_tree import TreeShape
from .sources.local import load_local
from .sources.synthetic import SYNTHETIC_SIZES, synthetic
from .sources.tfds import load_tfds
from .splits import split_indices
from .types import CIFAR10_CLASSES, IMAGE_SHAPE, Dataset, RawImages

__all__ = ["CIFAR10_CLASSES", "IMAGE_SHAPE", "Dataset", "RawImages", "decode_image", "describe", "load_dataset",
           "load_raw", "scaled"]


def load_dataset(config: DataConfig, cache_dir: Path | None = None, progress: bool = True) -> Dataset:
    """Load, split and normalize the data an experiment asks for (see the module docstring).

    `train_size` / `test_size` cap a real source (the first N in source order) and set the sizes of
    synthetic data. `progress` shows a status line on stderr while decoding (first start only).
    Problems a user can fix (no data, a bad folder, a split that does not fit) raise a one-line
    NetspecError (DataError, SpecError or SetupError).
    """
    raw = load_raw(config, cache_dir, progress)
    check_sizes(config, raw)
    check_normalization(config, raw)
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
        shift=shift, scale=scale,
    )


def check_sizes(config: DataConfig, raw: RawImages) -> None:
    """A cap beyond the source's images is a mistake (a silently smaller run would answer another
    question): one line naming the field and the count there is."""
    for field, cap, have in (("train_size", config.train_size, len(raw.train_y)),
                             ("test_size", config.test_size, len(raw.test_y))):
        if cap is not None and cap > have:
            raise SpecError(f"data.{field}={cap} is more than the {have:,} images of {raw.origin}; "
                            f"lower data.{field} (or leave it out for all {have:,})")


def check_synthetic_memory(train_size: int, test_size: int, available: int | None = None) -> None:
    """Synthetic images are made in memory, then scaled to float32: refuse, before making them, sizes
    this machine cannot hold."""
    available = physical_memory() if available is None else available
    need = (train_size + test_size) * math.prod(IMAGE_SHAPE) * (1 + 4)
    if available and need > available:
        raise SpecError(f"data.train_size={train_size} and data.test_size={test_size}: synthetic images of "
                        f"{need / 2**30:,.1f} GiB (uint8, then float32) do not fit this machine's "
                        f"{available / 2**30:,.1f} GiB; lower them")


def load_raw(config: DataConfig, cache_dir: Path | None = None, progress: bool = True) -> RawImages:
    """The uint8 images of the source the config names, uncapped and unsplit (synthetic: at the config's sizes)."""
    if config.source == "synthetic":
        if config.dir is not None:
            raise SpecError(f"data.dir={config.dir!r} is set but data.source is 'synthetic'; "
                            "drop one of them (a local copy needs data.source=cifar10)")
        sizes = (config.train_size or SYNTHETIC_SIZES[0], config.test_size or SYNTHETIC_SIZES[1])
        check_synthetic_memory(*sizes)
        return synthetic(*sizes, config.seed)
    cache = cache_root(cache_dir)
    if config.dir is not None:
        shape = TreeShape(config.channels, tuple(config.image_size) if config.image_size else None)
        return load_local(Path(config.dir).expanduser(), cache, progress, shape)
    return load_tfds(cache, progress, config.source)


def check_normalization(config: DataConfig, raw: RawImages) -> None:
    """'report' is CIFAR-10's constants (128 and 255 for three channels): for other data (another TFDS set,
    images of another shape; a 32x32 RGB tree is CIFAR-10's shape, as the report's own copies) they are a
    guess nobody made, so they are refused in one line."""
    shape = tuple(raw.train_x.shape[1:])
    other_set = config.dir is None and config.source not in ("cifar10", "synthetic")
    if config.normalize == "report" and (shape != IMAGE_SHAPE or other_set):
        raise SpecError(f"data.normalize 'report' is CIFAR-10's (x - 128) / 255 for its 3x32x32 images, but the data "
                        f"is {raw.origin} ({'x'.join(map(str, shape))}); set data.normalize to 'per_channel' "
                        "(statistics of its training split)")


def describe(origin: str, config: DataConfig, n_train: int, n_val: int, n_test: int,
             shift: np.ndarray, scale: np.ndarray) -> str:
    """One line for the run's environment file: origin, split sizes, scaling (with the statistics used)."""
    seed = f", seed {config.seed}" if config.split == "stratified" else ""
    stats = f" (mean {_fmt(shift)}, std {_fmt(scale)})" if config.normalize == "per_channel" else ""
    return (f"{origin}; {n_train} train / {n_val} val ({config.split} split{seed}) / {n_test} test; "
            f"normalize {config.normalize}{stats}")


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"
