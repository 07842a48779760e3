"""A counter-based random number: a pure function of integer coordinates, the same on every backend.

Random draws that must be identical across frameworks, and resumable without any RNG state, are made
here in numpy rather than by a framework's generator: augmentation (netspec.protocol.augment) hashes
(seed, stream, epoch, image, slot), and dropout masks reuse it.

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

Dropout masks, the same bits in numpy (keep_mask, the reference), torch and jax:

    key(seed, step, layer) = hash32(seed, STREAM_DROPOUT, step, layer)
                             (seed: the run's train.seed; step: the model's count of training passes,
                             0 at the start of a run, carried by checkpoints; layer: the spec index)
    keep at position i     = fmix32(key ^ (i * 0x9E3779B9 + 0x7F4A7C15)) < keep_threshold(p)
                           = hash32(seed, STREAM_DROPOUT, step, layer, i) < floor((1 - p) * 2**32)

i is the C-order index into the mask in PyTorch's layout: (N, F), or (N, C, H, W) for element-wise
dropout of images, or (N, C, 1, 1) for channel dropout (one draw per sample and channel). A backend
whose data is NHWC (jax) computes the same i from its own coordinates. Keys are hashed on the host
(a few words per step); only the last round, one fmix32 per mask value, runs on the device. A kept
value is multiplied by (1 / (1 - p)) rounded to the data's dtype, a dropped one is 0.
"""
from __future__ import annotations

import numpy as np

GOLDEN = np.uint32(0x9E3779B9)
"""2**32 / the golden ratio: spreads consecutive integers over the word before mixing."""
OFFSET = np.uint32(0x7F4A7C15)
STREAM_AUGMENT = 1
"""The stream word of augmentation draws (netspec.protocol.augment)."""
STREAM_DROPOUT = 2
"""The stream word of dropout masks (keep_mask)."""


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


# ---- dropout masks ------------------------------------------------------------------------------------

def dropout_keys(seed: int, first_step: int, steps: int, layers: int) -> np.ndarray:
    """The keys of `steps` consecutive steps from `first_step` for layers 0..layers-1: a (steps, layers)
    uint32 array, key[s, l] = hash32(seed, STREAM_DROPOUT, first_step + s, l)."""
    step = np.arange(first_step, first_step + steps, dtype=np.int64)[:, None]
    return np.broadcast_to(hash32(seed, STREAM_DROPOUT, step, np.arange(layers)[None, :]), (steps, layers)).copy()


def keep_threshold(p: float) -> int:
    """A mask value keeps its unit when its hash is below this: floor((1 - p) * 2**32), p in [0, 1).
    P(keep) = threshold / 2**32, within 2**-32 of 1 - p."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate p={p} is outside [0, 1)")
    return min(int((1.0 - p) * 2.0**32), 2**32 - 1)


def mask_shape(shape: tuple[int, ...], per_channel: bool) -> tuple[int, ...]:
    """The mask's shape in PyTorch's layout for data of `shape` (N, F) or (N, C, H, W): the data's own for
    element-wise dropout, (N, C, 1, 1) for channel dropout."""
    if per_channel:
        if len(shape) != 4:
            raise ValueError(f"channel dropout needs (N, C, H, W) data, got shape {shape}")
        return (shape[0], shape[1], 1, 1)
    return tuple(shape)


def keep_mask(seed: int, step: int, layer: int, shape: tuple[int, ...], p: float, per_channel: bool = False) -> np.ndarray:
    """The reference keep-mask (bool, mask_shape(shape, per_channel)) of dropout layer `layer` at `step`."""
    shape = mask_shape(tuple(shape), per_channel)
    key = dropout_keys(seed, step, 1, layer + 1)[0, layer]
    position = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    return _last_round(key, position) < keep_threshold(p)


def _last_round(key: np.ndarray | int, position: np.ndarray) -> np.ndarray:
    """fmix32(key ^ (position * GOLDEN + OFFSET)): hash32's round for one more word, on a given key."""
    with np.errstate(over="ignore"):
        return fmix32(np.uint32(key) ^ (_words(position) * GOLDEN + OFFSET))
