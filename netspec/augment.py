"""Training-set augmentation: the random draws, made in numpy on the host, and what they mean.

Draws are a pure function of (train.seed, epoch, image index in the training split) through the counter
hash (netspec.counter_hash), so both backends see the same augmented images and a resumed run needs no
RNG state. Per image: crop offsets dy, dx in [0, 2 * padding], a flip bit, the cutout's top-left corner
inside the image. Order (Page's cifar10-fast): pad and crop, then flip, then cutout.

A backend never re-derives these rules: `plan` turns the draws of a batch matrix into index maps,
`Plan` (per image, the source row of each output row and the source column of each output column,
and which output rows and columns are kept), so applying augmentation is one gather and one select:

    out[n, c, r, k] = x[n, c, rows[n, r], cols[n, k]]  if keep_rows[n, r] and keep_cols[n, k]
                                                        and not (cut_rows[n, r] and cut_cols[n, k])
                      0                                 otherwise

(keep_*: inside the image after zero padding; cut_*: inside the cutout square). No arithmetic touches
a pixel, so the result is bit-identical on every backend and to `apply_plan` here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .counter_hash import STREAM_AUGMENT, below, hash32
from .experiment import AugmentConfig

SLOT_DY, SLOT_DX, SLOT_FLIP, SLOT_CUT_Y, SLOT_CUT_X = range(5)
"""The hash's last word for each draw of an image."""


@dataclass(frozen=True)
class Draws:
    """One augmentation draw per image, arrays of the shape of the index matrix they were drawn for."""

    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray
    cut_y: np.ndarray
    cut_x: np.ndarray


def draw(config: AugmentConfig, seed: int, epoch: int, images: np.ndarray, height: int, width: int) -> Draws:
    """The draws for `images` (indices into the training split, any shape) in `epoch` (1-based)."""
    images = np.asarray(images, np.int64)

    def uniform(slot: int, n: int) -> np.ndarray:
        return below(n, hash32(seed, STREAM_AUGMENT, epoch, images, slot)) if n > 1 else np.zeros(images.shape, np.int64)

    pad, cut = config.crop_padding, config.cutout
    return Draws(dy=uniform(SLOT_DY, 2 * pad + 1), dx=uniform(SLOT_DX, 2 * pad + 1),
                 flip=uniform(SLOT_FLIP, 2).astype(bool) if config.flip else np.zeros(images.shape, bool),
                 cut_y=uniform(SLOT_CUT_Y, height - cut + 1), cut_x=uniform(SLOT_CUT_X, width - cut + 1))


@dataclass(frozen=True)
class Plan:
    """Index maps for images of (height, width): rows/cols int32 (..., height) / (..., width); the masks
    bool of the same shapes (see the module docstring)."""

    rows: np.ndarray
    cols: np.ndarray
    keep_rows: np.ndarray
    keep_cols: np.ndarray
    cut_rows: np.ndarray
    cut_cols: np.ndarray


def _source(offset: np.ndarray, size: int, pad: int, mode: str, flip: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Source index (clamped into the image) and validity of each output position along one axis."""
    position = np.arange(size)
    if flip is not None:
        position = np.where(flip[..., None], size - 1 - position, position)
    source = offset[..., None] + position - pad  # in the unpadded image's coordinates
    if mode == "reflect":  # PyTorch's 'reflect' (numpy's too): -1 -> 1, size -> size - 2; pad < size
        source = np.abs(source)
        source = np.where(source > size - 1, 2 * (size - 1) - source, source)
        return source.astype(np.int32), np.ones(source.shape, bool)
    inside = (source >= 0) & (source < size)
    return np.clip(source, 0, size - 1).astype(np.int32), inside


def plan(config: AugmentConfig, draws: Draws, height: int, width: int) -> Plan:
    """The index maps of `draws` (see Plan)."""
    pad = config.crop_padding
    rows, keep_rows = _source(draws.dy, height, pad, config.pad_mode, None)
    cols, keep_cols = _source(draws.dx, width, pad, config.pad_mode, draws.flip)
    cut = config.cutout

    def window(start: np.ndarray, size: int) -> np.ndarray:
        position = np.arange(size)
        return (position >= start[..., None]) & (position < start[..., None] + cut)

    return Plan(rows, cols, keep_rows, keep_cols, window(draws.cut_y, height), window(draws.cut_x, width))


def batch_plan(config: AugmentConfig, seed: int, epoch: int, batches: np.ndarray, height: int, width: int) -> Plan:
    """The plan of a (steps, batch_size) index matrix of the training split in `epoch`."""
    return plan(config, draw(config, seed, epoch, batches, height, width), height, width)


def apply_plan(x: np.ndarray, p: Plan) -> np.ndarray:
    """The augmented images: x (N, C, H, W), p of leading shape (N,)."""
    n = np.arange(len(x))[:, None, None]
    gathered = x[n, :, p.rows[:, :, None], p.cols[:, None, :]]  # (N, H, W, C): advanced indices first
    keep = p.keep_rows[:, :, None] & p.keep_cols[:, None, :] & ~(p.cut_rows[:, :, None] & p.cut_cols[:, None, :])
    return np.where(keep[..., None], gathered, np.zeros((), x.dtype)).transpose(0, 3, 1, 2)


def packed(p: Plan) -> np.ndarray:
    """The plan as one int32 array (..., 3 * H + 3 * W), what a backend puts on its device once per
    train_steps call: [rows | keep_rows | cut_rows | cols | keep_cols | cut_cols] along the last axis
    (masks as 0/1). A backend cuts it apart at H, 2H, 3H, 3H + W, 3H + 2W."""
    return np.concatenate([p.rows, p.keep_rows, p.cut_rows, p.cols, p.keep_cols, p.cut_cols], axis=-1).astype(np.int32)
