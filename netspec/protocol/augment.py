"""Training-set augmentation: the random draws, made in numpy on the host, and what they mean.

Draws are a pure function of (train.seed, epoch, image index in the training split) through the counter
hash (netspec.protocol.counter_hash), so both backends see the same augmented images and a resumed run needs no
RNG state. Per image: crop offsets dy, dx in [0, 2 * padding], a flip bit, the cutout's top-left corner
(cy, cx) inside the image. Order (Page's cifar10-fast): pad and crop, then flip, then cutout.

A backend gets the draws (`packed`: five int32 per image, once per train_steps call) and applies them
on its device by the functions here (`augment_batch` over its own array namespace; `plan` and
`apply_plan` are the same functions run by numpy): for output row r and column k,

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
from typing import Any, Optional, Protocol

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


PACKED = ("dy", "dx", "flip", "cut_y", "cut_x")
"""The order of an image's five draws in `packed`."""


def packed(draws: Draws) -> np.ndarray:
    """The draws as one int32 array (..., 5) in PACKED's order: what a backend puts on its device once per
    train_steps call (five numbers per image; the index maps are built on the device)."""
    return np.stack([np.asarray(getattr(draws, name), np.int32) for name in PACKED], axis=-1)


# ---- the index maps, written once over an array namespace ----------------------------------------------
# numpy (the reference below), torch and jax.numpy run these very functions: `xp` is the namespace. numpy
# and jax.numpy are passed as they are; torch passes a small adapter whose `arange` makes its tensor on
# the draws' device. Only integer index arithmetic and comparisons happen here, never a pixel.

class IndexOps(Protocol):
    """The array functions the index maps use, numpy's names (a module such as numpy or jax.numpy fits)."""

    def arange(self, stop: int) -> Any: ...
    def where(self, condition: Any, x: Any, y: Any) -> Any: ...
    def abs(self, x: Any) -> Any: ...
    def clip(self, x: Any, low: int, high: int) -> Any: ...


def axis_source(xp: IndexOps, offset: Any, size: int, pad: int, mode: str, flip: Any = None) -> tuple[Any, Any]:
    """Along one axis of `size`: the source index (clamped into the image) of each output position and
    whether it lies inside the image, for crop offsets `offset` (any leading shape; the result adds an
    axis of `size`), an optional flip (bool or 0/1 of the same shape) and `pad` padding in `mode`."""
    position = xp.arange(size)
    if flip is not None:
        position = xp.where(flip[..., None] != 0, size - 1 - position, position)
    source = offset[..., None] + position - pad  # in the unpadded image's coordinates
    if mode == "reflect":  # PyTorch's 'reflect' (numpy's too): -1 -> 1, size -> size - 2; pad < size
        source = xp.abs(source)
        source = xp.where(source > size - 1, 2 * (size - 1) - source, source)
    # 'zeros' keeps what falls inside; a reflected index always does (the spec holds pad < size).
    inside = (source >= 0) & (source < size)
    return xp.clip(source, 0, size - 1), inside


def window(xp: IndexOps, start: Any, size: int, cutout: int) -> Any:
    """Along one axis of `size`: whether each position lies in the cutout square starting at `start`."""
    position = xp.arange(size)
    return (position >= start[..., None]) & (position < start[..., None] + cutout)


def keep_mask(keep_rows: Any, keep_cols: Any, cut: Optional[tuple[Any, Any]] = None) -> Any:
    """(..., H, W): the pixels that keep their source value (inside the image and, with `cut` (the cutout's
    row and column windows), outside the cutout square); the others become zeros."""
    keep = keep_rows[..., :, None] & keep_cols[..., None, :]
    if cut is not None:
        keep = keep & ~(cut[0][..., :, None] & cut[1][..., None, :])
    return keep


def gather(x: Any, index: Any, rows: Any, cols: Any, channels_last: bool) -> Any:
    """(B, H, W, C): image index[b]'s pixel (rows[b, r], cols[b, k]) at (b, r, k) for x (N, C, H, W), or
    (N, H, W, C) when `channels_last` (advanced indices first, so both layouts give the same order)."""
    if channels_last:
        return x[index[:, None, None], rows[:, :, None], cols[:, None, :]]
    return x[index[:, None, None], :, rows[:, :, None], cols[:, None, :]]


def augment_batch(xp: IndexOps, x: Any, index: Any, draws: Any, config: AugmentConfig, channels_last: bool,
                  zero: Any) -> Any:
    """The augmented batch x[index] as (B, H, W, C), from its packed draws (B, 5) (see `packed`): what
    a backend's training step runs on its device (`zero`: a zero of x's dtype there). Without a cutout
    no window is built."""
    height, width = x.shape[1:3] if channels_last else x.shape[-2:]
    pad, mode = config.crop_padding, config.pad_mode
    dy, dx, flip, cut_y, cut_x = [draws[:, i] for i in range(len(PACKED))]  # PACKED's order
    rows, keep_rows = axis_source(xp, dy, height, pad, mode)
    cols, keep_cols = axis_source(xp, dx, width, pad, mode, flip)
    cut = (window(xp, cut_y, height, config.cutout), window(xp, cut_x, width, config.cutout)) if config.cutout else None
    return xp.where(keep_mask(keep_rows, keep_cols, cut)[..., None], gather(x, index, rows, cols, channels_last), zero)


def plan(config: AugmentConfig, draws: Draws, height: int, width: int) -> Plan:
    """The index maps of `draws` (see Plan), by numpy."""
    pad, mode = config.crop_padding, config.pad_mode
    rows, keep_rows = axis_source(np, draws.dy, height, pad, mode)
    cols, keep_cols = axis_source(np, draws.dx, width, pad, mode, draws.flip)
    return Plan(rows.astype(np.int32), cols.astype(np.int32), keep_rows, keep_cols,
                window(np, draws.cut_y, height, config.cutout), window(np, draws.cut_x, width, config.cutout))


def batch_draws(config: AugmentConfig, seed: int, epoch: int, batches: np.ndarray, height: int, width: int) -> Draws:
    """The draws of a (steps, batch_size) index matrix of the training split in `epoch`."""
    return draw(config, seed, epoch, batches, height, width)


def batch_plan(config: AugmentConfig, seed: int, epoch: int, batches: np.ndarray, height: int, width: int) -> Plan:
    """The plan (index maps) of a (steps, batch_size) index matrix of the training split in `epoch`."""
    return plan(config, batch_draws(config, seed, epoch, batches, height, width), height, width)


def apply_plan(x: np.ndarray, p: Plan) -> np.ndarray:
    """The augmented images: x (N, C, H, W), p of leading shape (N,); the reference the backends match."""
    gathered = gather(x, np.arange(len(x)), p.rows, p.cols, channels_last=False)
    keep = keep_mask(p.keep_rows, p.keep_cols, (p.cut_rows, p.cut_cols))
    return np.where(keep[..., None], gathered, np.zeros((), x.dtype)).transpose(0, 3, 1, 2)
