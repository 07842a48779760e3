"""Hand-written BatchNorm and Dropout for the JAX backend (Flax linen), with PyTorch's semantics.

None of flax.linen.BatchNorm / Dropout or nnx.BatchNorm / Dropout is used here: the point of the
project is that these layers are written out and checked against PyTorch's own (tests/). Data is
NHWC on the device, so the channel axis is always the last one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from netspec.protocol.counter_hash import keep_threshold


def _nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
    """An NHWC shape written as PyTorch would print it (N, C, H, W), for error messages."""
    return (shape[0], shape[-1], *shape[1:-1]) if len(shape) == 4 else tuple(shape)


class BatchNorm(nn.Module):
    """BatchNorm over (N, F) or (N, H, W, C), PyTorch's conventions (not Flax's).

    Training normalizes with the biased batch variance and updates, in the 'batch_stats' collection,
    running = (1 - momentum) * running + momentum * batch, with the *unbiased* variance for
    running_var, and counts num_batches_tracked (kept so canonical weights round-trip). Evaluation
    normalizes with the running statistics. Leaves are named as torch's state_dict suffixes.
    """

    momentum: float = 0.1
    """Weight of the new batch statistic (PyTorch's meaning; Flax's `momentum` is the old one's)."""
    eps: float = 1e-5
    affine: bool = True
    """A learnable scale and shift; False: constants 1 and 0, no variables (PyTorch's affine=False)."""
    train_weight: bool = True
    """False: the scale is a 'batch_stats' variable (kept, never trained), as a canonical buffer."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        if not self.affine:
            weight, bias = jnp.ones((c,), jnp.float32), jnp.zeros((c,), jnp.float32)
        else:
            weight = (self.param("weight", nn.initializers.ones, (c,), jnp.float32) if self.train_weight
                      else self.variable("batch_stats", "weight", jnp.ones, (c,), jnp.float32).value)
            bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        running_mean = self.variable("batch_stats", "running_mean", jnp.zeros, (c,), jnp.float32)
        running_var = self.variable("batch_stats", "running_var", jnp.ones, (c,), jnp.float32)
        # int32: JAX keeps 64-bit integers off by default; the canonical dict holds it as int64.
        tracked = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)
        dtype = x.dtype
        if dtype in (jnp.bfloat16, jnp.float16):
            x = x.astype(jnp.float32)  # bf16 compute: statistics and normalization in float32
        if not train:
            centred, var = x - running_mean.value, running_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            n = x.size // c
            if n <= 1:  # shapes are static: fail at trace time, as PyTorch does, instead of a NaN
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {_nchw(x.shape)}")
            # float32 far from 0 has few digits left for the deviations (PyTorch's CPU kernels keep
            # the mean in float64). Centre on the first sample instead, which is exact (Sterbenz),
            # so the mean and the deviations are sums of small numbers; and take the variance
            # around the mean in a second pass, never as E[x^2] - E[x]^2.
            shift = jax.lax.stop_gradient(x[(0,) * len(axes)])
            deviation = x - shift
            deviation_mean = jnp.mean(deviation, axes)
            centred = deviation - deviation_mean
            var = jnp.mean(jnp.square(centred), axes)
            if not self.is_initializing():
                m = self.momentum
                mean = jax.lax.stop_gradient(shift + deviation_mean)
                running_mean.value = (1.0 - m) * running_mean.value + m * mean
                running_var.value = (1.0 - m) * running_var.value + (m * n / (n - 1)) * jax.lax.stop_gradient(var)
                tracked.value = tracked.value + 1
        return (centred * (weight * jax.lax.rsqrt(var + self.eps)) + bias).astype(dtype)


GOLDEN, OFFSET = np.uint32(0x9E3779B9), np.uint32(0x7F4A7C15)
DROPOUT_KEYS = "dropout_keys"
"""The variable collection that hands each Dropout layer its key of the step: {layer name: {"key": uint32}}."""


def fmix32(h: jax.Array) -> jax.Array:
    """netspec.protocol.counter_hash.fmix32 on uint32 arrays (XLA's uint32 arithmetic wraps; shifts are logical)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def position_words(shape: tuple[int, ...]) -> jax.Array:
    """position * GOLDEN + OFFSET (mod 2**32) for a mask of NHWC (or (N, F)) `shape`, where position is the
    C-order index of the same value in PyTorch's layout (N, C, H, W): counter_hash.keep_mask's word."""
    canonical = (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape)
    strides = [int(np.prod(canonical[i + 1:])) for i in range(len(canonical))]
    if len(shape) == 4:  # NHWC axes' strides in NCHW order: n, h, w, c
        strides = [strides[0], strides[2], strides[3], strides[1]]
    position = jnp.zeros(shape, jnp.uint32)
    for axis, stride in enumerate(strides):
        if shape[axis] > 1:
            position = position + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    return position * GOLDEN + OFFSET


def hashed_keep_mask(shape: tuple[int, ...], key: jax.Array, p: float) -> jax.Array:
    """counter_hash.keep_mask for a mask of NHWC (or (N, F)) `shape`: fmix32(key ^ word) < keep_threshold(p)."""
    return fmix32(position_words(shape) ^ key.astype(jnp.uint32)) < np.uint32(keep_threshold(p))


class Dropout(nn.Module):
    """Inverted dropout: kept values scaled by 1/(1-p) in training, identity in evaluation; p = 0 adds
    nothing to the graph.

    One mask value per position of the dims not in `broadcast_dims`, shared along those (as
    flax.linen.Dropout): () drops values one by one (spec Dropout); (1, 2) drops whole channels of
    NHWC data, one draw per sample and channel (spec Dropout2d). The mask is
    netspec.protocol.counter_hash.keep_mask's, bit for bit (the torch backend's too): the model hands each layer
    its key of the step in the DROPOUT_KEYS collection.
    """

    rate: float = 0.5
    broadcast_dims: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        if self.broadcast_dims and max(self.broadcast_dims) >= x.ndim:
            raise ValueError(f"Dropout broadcast over dims {self.broadcast_dims} needs more dims than input size {_nchw(x.shape)}")
        key = self.get_variable(DROPOUT_KEYS, "key")
        if key is None:
            raise ValueError(f"Dropout {self.name} in training needs its key of the step in the {DROPOUT_KEYS!r} collection")
        shape = tuple(1 if dim in self.broadcast_dims else size for dim, size in enumerate(x.shape))
        mask = hashed_keep_mask(shape, key, self.rate)
        return x * (mask.astype(x.dtype) * (1.0 / (1.0 - self.rate)))
