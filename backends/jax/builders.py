"""One builder per layer spec, and the Flax module that runs a network's layers in order.

Every layer runs on NHWC data (or (N, F) once flat) and is called as `layer(x, train)`. Builders are
called inside `SpecNet.__call__` (a compact method), so the modules they create are named by the
layer's index: the variable tree is {'params': {'0': {...}}, 'batch_stats': {'1': {...}}}, which
backends/jax/convert.py maps to the canonical names ('0.weight', '1.running_mean').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from netspec import layers as spec
from netspec.backend import Site, builder_for
from netspec.layers import LayerSpec, Shape, pair

from .layers import BatchNorm, Dropout

LayerFn = Callable[[jax.Array, bool], jax.Array]
"""A built layer: (x, train) -> y."""


class Compute(NamedTuple):
    """How matmuls and convolutions compute: their precision, and the dtype they cast inputs and kernels to
    (bf16; None: the inputs' own, float32 or float64). Parameters stay in their own dtype."""

    precision: Optional[jax.lax.Precision] = None
    dtype: Optional[Any] = None


@dataclass(frozen=True)
class JaxSite(Site):
    """netspec.backend.Site with how this network's matmuls and convolutions compute."""

    compute: Compute = Compute()


Builder = Callable[[Any, JaxSite], LayerFn]
"""(spec, site) -> layer, the builder signature of every backend; site.name is the layer's index."""


def _stateless(fn: Callable[[jax.Array], jax.Array]) -> LayerFn:
    """A layer that behaves the same in training and evaluation."""
    return lambda x, train: fn(x)


def _explicit_padding(padding: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    # Written out per side: Flax's defaults are 'SAME' (Conv) and 'VALID', the spec means this.
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def flatten_chw(x: jax.Array) -> jax.Array:
    """Flatten in C, H, W order (PyTorch's), so a following Linear takes the canonical weights as they
    are; flattening NHWC directly would give H, W, C order."""
    if x.ndim == 4:
        x = jnp.transpose(x, (0, 3, 1, 2))
    return x.reshape(x.shape[0], -1)


def _linear(s: spec.Linear, site: JaxSite) -> LayerFn:
    return _stateless(nn.Dense(s.out_features, use_bias=s.bias, precision=site.compute.precision, dtype=site.compute.dtype, name=site.name))


def _conv(s: spec.Conv2d, site: JaxSite) -> LayerFn:
    # Zeros padded by jnp.pad, then a VALID conv: the same numbers as padding inside the conv, but
    # XLA (jaxlib 0.10) aborts the process compiling the gradient of some strided convs with inner
    # padding (algebraic_simplifier "Window dimensions do not match RHS shape"), never of these.
    (ph, pw) = pair(s.padding)
    conv = nn.Conv(s.out_channels, pair(s.kernel_size), strides=pair(s.stride), padding="VALID", use_bias=s.bias,
                   precision=site.compute.precision, dtype=site.compute.dtype, name=site.name)
    return _stateless(lambda x: conv(jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))))


def _max_pool(s: spec.MaxPool2d, site: JaxSite) -> LayerFn:
    # Stride written out (Flax's max_pool defaults to 1, the spec to the kernel); nn.max_pool pads
    # with -inf (reduce_window's init value), as PyTorch does.
    window, stride, padding = pair(s.kernel_size), s.effective_stride, _explicit_padding(s.padding)
    return _stateless(lambda x: nn.max_pool(x, window, stride, padding))


BUILDERS: dict[type[LayerSpec], Builder] = {
    spec.Linear: _linear,
    spec.Conv2d: _conv,
    spec.BatchNorm: lambda s, site: BatchNorm(s.momentum, s.eps, name=site.name),
    spec.ReLU: lambda s, site: _stateless(nn.relu),
    spec.Dropout: lambda s, site: Dropout(s.p, name=site.name),
    spec.Dropout2d: lambda s, site: Dropout(s.p, broadcast_dims=(1, 2), name=site.name),  # NHWC: per channel
    spec.MaxPool2d: _max_pool,
    spec.Flatten: lambda s, site: _stateless(flatten_chw),
}
"""Spec class -> builder; tests/test_layer_tables.py checks it covers netspec.layers.LAYER_TYPES."""


class SpecNet(nn.Module):
    """A network's layers applied in order to NHWC (or flat) input."""

    layers: tuple[LayerSpec, ...]
    precision: Optional[jax.lax.Precision] = None
    """Precision of every matmul and conv (HIGHEST for parity: no TF32/bf16 passes on GPUs)."""
    dtype: Optional[Any] = None
    """Compute dtype of every matmul and conv (jnp.bfloat16 for bf16; None: the input's)."""
    overrides: tuple[tuple[type[LayerSpec], Builder], ...] = ()
    """(spec class, builder) pairs used instead of BUILDERS' (the benchmark's Flax built-in layers)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        builders = {**BUILDERS, **dict(self.overrides)}
        compute = Compute(self.precision, self.dtype)
        for index, layer in enumerate(self.layers):
            site = JaxSite(index, (_spec_shape(x),), compute)
            x = builder_for(builders, layer, index, "jax")(layer, site)(x, train)
        return x


def check_builders(layers: tuple[LayerSpec, ...]) -> None:
    """A layer type without a builder is the one SetupError line at compile time, not at the first trace."""
    for index, layer in enumerate(layers):
        builder_for(BUILDERS, layer, index, "jax")


def _spec_shape(x: jax.Array) -> Shape:
    """The spec's shape of an NHWC (or (N, F)) batch: (C, H, W) or (F,)."""
    return (x.shape[-1], *x.shape[1:-1]) if x.ndim == 4 else tuple(x.shape[1:])
