"""Test machinery: random valid layers and networks, for the contract suite, the cross-check tests and
fuzzing. RANDOM_LAYERS has one generator per layer type (tests/test_layer_tables.py checks that it
covers netspec.layers.LAYER_TYPES), so a new layer type is drawn into every random network."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .layers import (BatchNorm, Conv2d, Dropout, Dropout2d, Flatten, LayerSpec, Linear, MaxPool2d, ReLU,
                     Shape, pair)
from .network import Network

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
    return BatchNorm(momentum=momentum, eps=float(rng.choice([1e-5, 1e-3])))


RANDOM_LAYERS: dict[type[LayerSpec], RandomLayer] = {
    Linear: lambda rng, shape: Linear(out_features=int(rng.integers(1, 9)), bias=bool(rng.random() < 0.8)),
    Conv2d: _conv2d,
    BatchNorm: _batch_norm,
    ReLU: lambda rng, shape: ReLU(),
    Dropout: lambda rng, shape: Dropout(p=float(rng.choice([0.0, 0.3, 0.5]))),
    Dropout2d: lambda rng, shape: Dropout2d(p=float(rng.choice([0.0, 0.3, 0.5]))),
    MaxPool2d: _max_pool2d,
    Flatten: lambda rng, shape: Flatten(),
}
"""One random-configuration generator per layer type."""

_IMAGE_KINDS = (Conv2d, MaxPool2d, Dropout2d, BatchNorm, ReLU, Dropout, Flatten)
_FLAT_KINDS = (Linear, Linear, BatchNorm, ReLU, Dropout, Flatten)
"""What a random network draws from on images and on flat features (Linear twice: flat networks need width)."""


def random_layer(rng: np.random.Generator, shape: Shape, kind: Optional[type[LayerSpec]] = None) -> LayerSpec:
    """A random layer for an input `shape`: of type `kind`, or of a type drawn among those that take it."""
    if kind is None:
        kinds = _IMAGE_KINDS if len(shape) == 3 else _FLAT_KINDS
        kind = kinds[int(rng.integers(len(kinds)))]
    return RANDOM_LAYERS[kind](rng, shape)


def random_network(rng: np.random.Generator, max_layers: int = 7) -> Network:
    """A small random valid network: (C, H, W) or (F,) input, up to `max_layers` random layers
    (kernel sizes, strides, paddings, channel counts, BatchNorm momentum/eps drawn at random),
    then Flatten if needed and a final Linear, so it ends in logits."""
    if rng.random() < 0.75:
        shape: Shape = (int(rng.integers(1, 4)), int(rng.integers(3, 10)), int(rng.integers(3, 10)))
    else:
        shape = (int(rng.integers(2, 11)),)
    layers: list[LayerSpec] = []
    current = shape
    for _ in range(int(rng.integers(1, max_layers + 1))):
        layer = random_layer(rng, current)
        try:
            current = layer.output_shape(current)
        except ValueError:  # e.g. a kernel larger than what is left of the image: draw again
            continue
        layers.append(layer)
    if len(current) == 3:
        layers.append(Flatten())
    layers.append(Linear(out_features=int(rng.integers(2, 6))))
    return Network(input_shape=shape, layers=layers)

