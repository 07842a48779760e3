"""What the data package hands out: `RawImages` (a source's uint8 images) and `Dataset` (split and
scaled for training), and the shape and class names of CIFAR-10."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SHAPE = (3, 32, 32)
"""Channels, height, width of every image (NCHW arrays)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images float32 NCHW (N, C, H, W: the data's channels and size), normalized; labels int64 in 0..len(classes)-1."""

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
    shift: np.ndarray
    """Per-channel shift of the scaling, x = (pixels - shift) / scale; recorded because 'per_channel'
    statistics come from the training split, which a user of the trained model does not have."""
    scale: np.ndarray
    """Per-channel scale of the scaling (see `shift`)."""


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
