"""Which training images are held out for validation: the 'tail' and 'stratified' splits."""
from __future__ import annotations

import numpy as np

from ..errors import SpecError


def split_indices(labels: np.ndarray, val_size: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images, each in ascending (source) order.

    'tail': validation is the last `val_size` (the report's split, in the python batches' order; see
    each source's docstring for its order). 'stratified': `val_size` drawn at random (seeded) with
    each class's share of validation equal to its share of the data (largest remainders), so equal
    shares for balanced data.
    """
    n = len(labels)
    if val_size >= n:
        raise SpecError(f"data.val_size={val_size} leaves no training images out of {n}; "
                        f"lower data.val_size (or raise data.train_size)")
    if split == "tail":
        return np.arange(n - val_size), np.arange(n - val_size, n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = _largest_remainders(val_size * counts / n)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    is_val = np.zeros(n, dtype=bool)
    is_val[np.concatenate(chosen)] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _largest_remainders(shares: np.ndarray) -> np.ndarray:
    """Round `shares` to integers keeping their (integer) sum; ties go to the first entries."""
    floors = np.floor(shares).astype(np.int64)
    missing = int(round(shares.sum())) - int(floors.sum())
    order = np.argsort(-(shares - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors
