"""Test machinery: random valid layers and networks, for the contract suite, the cross-check tests and
fuzzing. RANDOM_LAYERS has one generator per layer type (tests/spec/test_layer_tables.py checks that it
covers netspec.spec.layers.LAYER_TYPES), so a new layer type is drawn into every random network."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from netspec.spec.layers import (INPUT, LAYER_TYPES, Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout,
                                 Dropout2d, Flatten, GlobalPool, LayerSpec, Linear, MaxPool2d, Shape, activations, pair)
from netspec.spec.network import Network

RandomLayer = Callable[[np.random.Generator, Shape], LayerSpec]
"""(rng, input shape) -> a layer of one type with a random configuration (it may not fit the shape)."""


def _random_pair(rng: np.random.Generator, low: int, high: int) -> int | tuple[int, int]:
    """An int in [low, high], or (one time in four) a pair of them."""
    if rng.random() < 0.25:
        return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    return int(rng.integers(low, high + 1))


def _conv2d(rng: np.random.Generator, shape: Shape) -> Conv2d:
    kernel = _random_pair(rng, 1, 3)
    padding = tuple(int(rng.integers(0, k)) for k in pair(kernel)) if rng.random() < 0.5 else 0
    return Conv2d(out_channels=int(rng.integers(1, 6)), kernel_size=kernel, stride=_random_pair(rng, 1, 2),
                  padding=padding, bias=bool(rng.random() < 0.8))


def _max_pool2d(rng: np.random.Generator, shape: Shape) -> MaxPool2d:
    kernel = _random_pair(rng, 1, 3)
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in pair(kernel))
    return MaxPool2d(kernel_size=kernel, stride=None if rng.random() < 0.5 else _random_pair(rng, 1, 2), padding=padding)


def _batch_norm(rng: np.random.Generator, shape: Shape) -> BatchNorm:
    momentum = 0.1 if rng.random() < 0.5 else float(rng.uniform(0.01, 1.0))
    kind = rng.random()
    return BatchNorm(momentum=momentum, eps=float(rng.choice([1e-5, 1e-3])), affine=bool(kind >= 0.15),
                     train_weight=bool(not 0.15 <= kind < 0.3))


def _avg_pool2d(rng: np.random.Generator, shape: Shape) -> AvgPool2d:
    pool = _max_pool2d(rng, shape)
    return AvgPool2d(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                     count_include_pad=bool(rng.random() < 0.5))


def _same_conv(rng: np.random.Generator, shape: Shape, channels: int) -> Conv2d:
    """A stride-1 'same' conv (odd or even kernel) keeping H and W, with `channels` outputs."""
    return Conv2d(out_channels=channels, kernel_size=_random_pair(rng, 1, 3), padding="same", bias=bool(rng.random() < 0.5))


def _merge(kind: type[LayerSpec]) -> RandomLayer:
    """A merge of the network's input with itself (for a one-layer network; random_network builds real
    branches)."""
    return lambda rng, shape: kind(inputs=[INPUT] * int(rng.integers(2, 4)))


def _from_values(kind: type[LayerSpec]) -> RandomLayer:
    """A layer of `kind` with each field drawn from kind.random_values (the rest at their defaults)."""
    def draw(rng: np.random.Generator, shape: Shape) -> LayerSpec:
        return kind(**{name: values[int(rng.integers(len(values)))] for name, values in kind.random_values.items()})
    return draw


GENERATORS: dict[type[LayerSpec], RandomLayer] = {
    Conv2d: _conv2d,
    BatchNorm: _batch_norm,
    MaxPool2d: _max_pool2d,
    AvgPool2d: _avg_pool2d,
    Add: _merge(Add),
    Concat: _merge(Concat),
}
"""The types whose fields depend on each other or on the input: each has a generator of its own."""

RANDOM_LAYERS: dict[type[LayerSpec], RandomLayer] = {kind: GENERATORS.get(kind) or _from_values(kind) for kind in LAYER_TYPES}
"""One random-configuration generator per layer type: its own, or one drawing from its random_values."""

_ACTIVATIONS = tuple(kind for kind in LAYER_TYPES if kind.__module__ == activations.__name__)
"""Every type of the activations family, in the union's order (a residual block ends in one)."""
_IMAGE_KINDS = tuple(kind for kind in LAYER_TYPES for _ in range(kind.drawn.get("image", 0)))
_FLAT_KINDS = tuple(kind for kind in LAYER_TYPES for _ in range(kind.drawn.get("flat", 0)))
"""What a random network draws single-input layers from, on images and on flat features: each type as
often as its `drawn` says."""


def random_layer(rng: np.random.Generator, shape: Shape, kind: Optional[type[LayerSpec]] = None) -> LayerSpec:
    """A random layer for an input `shape`: of type `kind`, or of a type drawn among those that take it."""
    if kind is None:
        kinds = _IMAGE_KINDS if len(shape) == 3 else _FLAT_KINDS
        kind = kinds[int(rng.integers(len(kinds)))]
    return RANDOM_LAYERS[kind](rng, shape)


def _block(rng: np.random.Generator, shape: Shape, first: int) -> list[LayerSpec]:
    """A residual block (layers keeping the shape, then Add of the block's input and its output) or a
    concatenation (one layer changing the channels or features, then Concat of input and output). The
    block's input is layer `first - 1` (or the network's input); its layers are numbered from `first`."""
    source: int | str = first - 1 if first else INPUT
    spatial = len(shape) == 3
    width = int(rng.integers(1, 5))
    if rng.random() < 0.6:  # residual: same shape in, same shape out
        body: list[LayerSpec] = [_same_conv(rng, shape, shape[0]) if spatial else Linear(out_features=shape[0])]
        if rng.random() < 0.5:
            body.append(_batch_norm(rng, shape))
        body.append(RANDOM_LAYERS[_ACTIVATIONS[int(rng.integers(len(_ACTIVATIONS)))]](rng, shape))
        return [*body, Add(inputs=[source, first + len(body) - 1])]
    branch = _same_conv(rng, shape, width) if spatial else Linear(out_features=width)
    return [branch, Concat(inputs=[source, first] if rng.random() < 0.5 else [first, source])]


def random_network(rng: np.random.Generator, max_layers: int = 7) -> Network:
    """A small random valid network: (C, H, W) or (F,) input, up to `max_layers` random layers or blocks
    (residual blocks ending in Add, branches joined by Concat; kernel sizes, strides, paddings, channel
    counts, BatchNorm settings drawn at random), then Flatten or GlobalPool if needed and a final
    Linear, so it ends in logits. Every layer type occurs among a few hundred of them."""
    if rng.random() < 0.75:
        shape: Shape = (int(rng.integers(1, 4)), int(rng.integers(3, 10)), int(rng.integers(3, 10)))
    else:
        shape = (int(rng.integers(2, 11)),)
    layers: list[LayerSpec] = []
    current = shape
    for _ in range(int(rng.integers(1, max_layers + 1))):
        if rng.random() < 0.25:
            block = _block(rng, current, len(layers))
            current = Network(input_shape=shape, layers=[*layers, *block]).output_shape
            layers += block
            continue
        layer = random_layer(rng, current)
        try:
            current = layer.output_shape(current)
        except ValueError:  # e.g. a kernel larger than what is left of the image: draw again
            continue
        layers.append(layer)
    if len(current) == 3:
        layers.append(Flatten() if rng.random() < 0.5 else GlobalPool(mode="avg" if rng.random() < 0.5 else "max"))
    layers.append(Linear(out_features=int(rng.integers(2, 6))))
    return Network(input_shape=shape, layers=layers)


def without_dropout(network: Network) -> Network:
    """The network with every Dropout / Dropout2d at p = 0, ids and inputs kept: for comparisons with
    implementations that draw their own masks (torch.nn's built-ins, the numpy reference)."""
    layers = [layer.model_copy(update={"p": 0.0}) if isinstance(layer, (Dropout, Dropout2d)) else layer
              for layer in network.layers]
    return Network(input_shape=network.input_shape, layers=layers)
