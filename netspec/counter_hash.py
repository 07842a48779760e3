"""A counter-based random number: a pure function of integer coordinates, the same on every backend.

Random draws that must be identical across frameworks, and resumable without any RNG state, are made
here in numpy rather than by a framework's generator: augmentation (netspec.augment) hashes
(seed, stream, epoch, image, slot), and issue 24 reuses it for dropout masks.

The bit recipe (all arithmetic on unsigned 32-bit words, wrapping modulo 2**32):

    fmix32(h):  h ^= h >> 16;  h *= 0x85EBCA6B;  h ^= h >> 13;  h *= 0xC2B2AE35;  h ^= h >> 16
                (MurmurHash3's finalizer: every input bit flips each output bit with probability ~1/2)
    hash32(w0, w1, ..., wk):
                h = fmix32(w0 ^ 0x9E3779B9)
                for each later word w:  h = fmix32(h ^ (w * 0x9E3779B9 + 0x7F4A7C15))
    below(n, h) = (h * n) >> 32          (a draw in [0, n) from one hash: Lemire's multiply-shift,
                                          computed in 64 bits; its bias is below n / 2**32)

Each coordinate is folded in through its own fmix32 round, so (a, b) and (b, a) hash apart, and
distinct coordinates give uncorrelated words. Any word above 2**32 - 1 is reduced modulo 2**32.
"""
from __future__ import annotations

import numpy as np

GOLDEN = np.uint32(0x9E3779B9)
"""2**32 / the golden ratio: spreads consecutive integers over the word before mixing."""
OFFSET = np.uint32(0x7F4A7C15)
STREAM_AUGMENT = 1
"""The stream word of augmentation draws (netspec.augment)."""
STREAM_DROPOUT = 2
"""Reserved for dropout masks (issue 24)."""


def _words(value: np.ndarray | int) -> np.ndarray:
    return np.asarray(np.asarray(value, np.int64) & 0xFFFFFFFF, np.uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, element-wise on a uint32 array."""
    h = np.asarray(h, np.uint32)
    with np.errstate(over="ignore"):  # the multiplications wrap modulo 2**32 by design
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def hash32(*words: np.ndarray | int) -> np.ndarray:
    """The hash of integer coordinates (arrays broadcast together), as a uint32 array."""
    if not words:
        raise ValueError("hash32 needs at least one word")
    with np.errstate(over="ignore"):
        h = fmix32(_words(words[0]) ^ GOLDEN)
        for word in words[1:]:
            h = fmix32(h ^ (_words(word) * GOLDEN + OFFSET))
    return h


def below(n: int | np.ndarray, h: np.ndarray) -> np.ndarray:
    """An integer in [0, n) from each hash (int64); n >= 1."""
    return ((np.asarray(h, np.uint64) * np.asarray(n, np.uint64)) >> np.uint64(32)).astype(np.int64)
