"""How uint8 pixels become the network's float input: per-channel (x - shift) / scale."""
from __future__ import annotations

import numpy as np


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
