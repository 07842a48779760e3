"""Training-set augmentation: the random draws, made in numpy on the host, and what they mean.

Draws are a pure function of (train.seed, epoch, image index in the training split) through the counter
hash (netspec.protocol.counter_hash), so both backends see the same augmented images and a resumed run needs no
RNG state. Per image: crop offsets dy, dx in [0, 2 * padding], a flip bit, the cutout's top-left corner
(cy, cx) inside the image. Order (Page's cifar10-fast): pad and crop, then flip, then cutout.

A backend gets the draws (`packed`: five int32 per image, once per train_steps call) and applies them
on its device as index maps, exactly as `plan` here builds them: for output row r and column k,

    source row      dy + r - padding
    source column   dx + (W - 1 - k if flip else k) - padding
    'reflect':      s -> |s|, then s -> 2 (n - 1) - s where s > n - 1    (PyTorch's reflection)
    'zeros':        kept where 0 <= s < n (then clamped into the image)
    cutout:         zero where cy <= r < cy + cutout and cx <= k < cx + cutout

then one gather of the source pixels and one select of zeros. No arithmetic touches a pixel, so the
result is bit-identical on every backend and to `apply_plan` here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netspec.protocol.counter_hash import STREAM_AUGMENT, below, hash32
from netspec.spec.experiment import AugmentConfig

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


def batch_draws(config: AugmentConfig, seed: int, epoch: int, batches: np.ndarray, height: int, width: int) -> Draws:
    """The draws of a (steps, batch_size) index matrix of the training split in `epoch`."""
    return draw(config, seed, epoch, batches, height, width)


def batch_plan(config: AugmentConfig, seed: int, epoch: int, batches: np.ndarray, height: int, width: int) -> Plan:
    """The plan (index maps) of a (steps, batch_size) index matrix of the training split in `epoch`."""
    return plan(config, batch_draws(config, seed, epoch, batches, height, width), height, width)


def apply_plan(x: np.ndarray, p: Plan) -> np.ndarray:
    """The augmented images: x (N, C, H, W), p of leading shape (N,)."""
    n = np.arange(len(x))[:, None, None]
    gathered = x[n, :, p.rows[:, :, None], p.cols[:, None, :]]  # (N, H, W, C): advanced indices first
    keep = p.keep_rows[:, :, None] & p.keep_cols[:, None, :] & ~(p.cut_rows[:, :, None] & p.cut_cols[:, None, :])
    return np.where(keep[..., None], gathered, np.zeros((), x.dtype)).transpose(0, 3, 1, 2)


PACKED = ("dy", "dx", "flip", "cut_y", "cut_x")
"""The order of an image's five draws in `packed`."""


def packed(draws: Draws) -> np.ndarray:
    """The draws as one int32 array (..., 5) in PACKED's order: what a backend puts on its device once per
    train_steps call (five numbers per image; the index maps are built on the device)."""
    return np.stack([np.asarray(getattr(draws, name), np.int32) for name in PACKED], axis=-1)
