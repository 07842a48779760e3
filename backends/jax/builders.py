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

from netspec.spec import layers as spec
from netspec.protocol.backend import Site, builder_for
from netspec.spec.layers import LayerSpec, Shape, pair

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
    """netspec.protocol.backend.Site with how this network's matmuls and convolutions compute."""

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
    pads = s.pads()  # ((top, bottom), (left, right)); 'same' may be uneven
    conv = nn.Conv(s.out_channels, pair(s.kernel_size), strides=pair(s.stride), padding="VALID", use_bias=s.bias,
                   precision=site.compute.precision, dtype=site.compute.dtype, name=site.name)
    return _stateless(lambda x: conv(jnp.pad(x, ((0, 0), *pads, (0, 0)))))


def _max_pool(s: spec.MaxPool2d, site: JaxSite) -> LayerFn:
    # Stride written out (Flax's max_pool defaults to 1, the spec to the kernel); nn.max_pool pads
    # with -inf (reduce_window's init value), as PyTorch does.
    window, stride, padding = pair(s.kernel_size), s.effective_stride, _explicit_padding(s.padding)
    return _stateless(lambda x: nn.max_pool(x, window, stride, padding))


def _avg_pool(s: spec.AvgPool2d, site: JaxSite) -> LayerFn:
    # Zero padding; count_include_pad as PyTorch's (Flax's default is the same, written out anyway).
    window, stride, padding = pair(s.kernel_size), s.effective_stride, _explicit_padding(s.padding)
    return _stateless(lambda x: nn.avg_pool(x, window, stride, padding, count_include_pad=s.count_include_pad))


def _global_pool(s: spec.GlobalPool, site: JaxSite) -> LayerFn:
    if s.mode == "avg":
        return _stateless(lambda x: jnp.mean(x, axis=(1, 2)))
    # The max as a max pool over the whole image: a tie sends its gradient to one position, as PyTorch's.
    return _stateless(lambda x: nn.max_pool(x, x.shape[1:3]).reshape(x.shape[0], x.shape[3]))


def _merge(fn: Callable[[list[jax.Array]], jax.Array]) -> Callable[[list[jax.Array], bool], jax.Array]:
    return lambda xs, train: fn(xs)


BUILDERS: dict[type[LayerSpec], Builder] = {
    spec.Linear: _linear,
    spec.Conv2d: _conv,
    spec.BatchNorm: lambda s, site: BatchNorm(s.momentum, s.eps, s.affine, s.train_weight, name=site.name),
    spec.ReLU: lambda s, site: _stateless(nn.relu),
    spec.Dropout: lambda s, site: Dropout(s.p, name=site.name),
    spec.Dropout2d: lambda s, site: Dropout(s.p, broadcast_dims=(1, 2), name=site.name),  # NHWC: per channel
    spec.MaxPool2d: _max_pool,
    spec.Flatten: lambda s, site: _stateless(flatten_chw),
    spec.AvgPool2d: _avg_pool,
    spec.GlobalPool: _global_pool,
    spec.Identity: lambda s, site: _stateless(lambda x: x),
    spec.Scale: lambda s, site: _stateless(lambda x: x * jnp.asarray(s.factor, x.dtype)),
    spec.GELU: lambda s, site: _stateless(lambda x: jax.nn.gelu(x, approximate=s.approximate == "tanh")),
    spec.CELU: lambda s, site: _stateless(lambda x: jax.nn.celu(x, s.alpha)),
    spec.LeakyReLU: lambda s, site: _stateless(lambda x: jax.nn.leaky_relu(x, s.negative_slope)),
    spec.Tanh: lambda s, site: _stateless(jnp.tanh),
    spec.Sigmoid: lambda s, site: _stateless(jax.nn.sigmoid),
    spec.Add: lambda s, site: _merge(lambda xs: sum(xs[1:], xs[0])),
    spec.Concat: lambda s, site: _merge(lambda xs: jnp.concatenate(xs, axis=-1)),  # NHWC: channels last
    spec.SiLU: lambda s, site: _stateless(jax.nn.silu),
    spec.Softplus: lambda s, site: _stateless(lambda x: jnp.where(s.beta * x > s.threshold, x, jax.nn.softplus(s.beta * x) / s.beta)),
}
"""Spec class -> builder; tests/spec/test_layer_tables.py checks it covers netspec.spec.layers.LAYER_TYPES."""


class SpecNet(nn.Module):
    """A network's layers applied to NHWC (or flat) input: in order (a chain), or each to the outputs its
    `inputs` name (a graph)."""

    layers: tuple[LayerSpec, ...]
    precision: Optional[jax.lax.Precision] = None
    """Precision of every matmul and conv (HIGHEST for parity: no TF32/bf16 passes on GPUs)."""
    dtype: Optional[Any] = None
    """Compute dtype of every matmul and conv (jnp.bfloat16 for bf16; None: the input's)."""
    overrides: tuple[tuple[type[LayerSpec], Builder], ...] = ()
    """(spec class, builder) pairs used instead of BUILDERS' (the benchmark's Flax built-in layers)."""
    inputs: tuple[tuple[int, ...], ...] = ()
    """Each layer's input indices (-1: the network's input), for a graph; () for a chain."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        builders = {**BUILDERS, **dict(self.overrides)}
        compute = Compute(self.precision, self.dtype)
        outputs = {-1: x}
        for index, layer in enumerate(self.layers):
            xs = [outputs[i] for i in self.inputs[index]] if self.inputs else [x]
            site = JaxSite(index, tuple(map(_spec_shape, xs)), compute)
            x = builder_for(builders, layer, index, "jax")(layer, site)(xs if layer.merges else xs[0], train)
            if self.inputs:
                outputs[index] = x
        return x


def check_builders(layers: tuple[LayerSpec, ...]) -> None:
    """A layer type without a builder is the one SetupError line at compile time, not at the first trace."""
    for index, layer in enumerate(layers):
        builder_for(BUILDERS, layer, index, "jax")


def _spec_shape(x: jax.Array) -> Shape:
    """The spec's shape of an NHWC (or (N, F)) batch: (C, H, W) or (F,)."""
    return (x.shape[-1], *x.shape[1:-1]) if x.ndim == 4 else tuple(x.shape[1:])
