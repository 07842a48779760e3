"""Synthetic data: seeded, CIFAR-shaped, learnable uint8 images made here (no files).

Order: generation order (labels drawn at random). The first N images of a seed do not depend on the
requested size, so a smaller set is a prefix of a larger one.
"""
from __future__ import annotations

import numpy as np

from ..types import IMAGE_SHAPE, RawImages

SYNTHETIC_SIZES = (50_000, 10_000)
"""Default train and test sizes of synthetic data (CIFAR-10's)."""

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
