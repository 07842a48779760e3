"""Test machinery: random valid networks, for the cross-check tests and fuzzing."""
from __future__ import annotations

import numpy as np

from .layers import BatchNorm, Conv2d, Dropout, Dropout2d, Flatten, LayerSpec, Linear, MaxPool2d, ReLU, Shape, pair
from .network import Network

def _random_pair(rng: np.random.Generator, low: int, high: int) -> int | tuple[int, int]:
    """An int in [low, high], or (one time in four) a pair of them."""
    if rng.random() < 0.25:
        return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    return int(rng.integers(low, high + 1))


def _random_layer(rng: np.random.Generator, shape: Shape) -> LayerSpec:
    spatial = len(shape) == 3
    kinds = ["Conv2d", "MaxPool2d", "Dropout2d", "BatchNorm", "ReLU", "Dropout", "Flatten"] if spatial else \
        ["Linear", "Linear", "BatchNorm", "ReLU", "Dropout", "Flatten"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "Conv2d":
        kernel = _random_pair(rng, 1, 3)
        padding = tuple(int(rng.integers(0, k)) for k in pair(kernel)) if rng.random() < 0.5 else 0
        return Conv2d(out_channels=int(rng.integers(1, 6)), kernel_size=kernel, stride=_random_pair(rng, 1, 2),
                      padding=padding, bias=bool(rng.random() < 0.8))
    if kind == "MaxPool2d":
        kernel = _random_pair(rng, 1, 3)
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in pair(kernel))
        return MaxPool2d(kernel_size=kernel, stride=None if rng.random() < 0.5 else _random_pair(rng, 1, 2), padding=padding)
    if kind == "Linear":
        return Linear(out_features=int(rng.integers(1, 9)), bias=bool(rng.random() < 0.8))
    if kind == "BatchNorm":
        momentum = 0.1 if rng.random() < 0.5 else float(rng.uniform(0.01, 1.0))
        return BatchNorm(momentum=momentum, eps=float(rng.choice([1e-5, 1e-3])))
    if kind in ("Dropout", "Dropout2d"):
        return (Dropout if kind == "Dropout" else Dropout2d)(p=float(rng.choice([0.0, 0.3, 0.5])))
    return ReLU() if kind == "ReLU" else Flatten()


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
        layer = _random_layer(rng, current)
        try:
            current = layer.output_shape(current)
        except ValueError:  # e.g. a kernel larger than what is left of the image: draw again
            continue
        layers.append(layer)
    if len(current) == 3:
        layers.append(Flatten())
    layers.append(Linear(out_features=int(rng.integers(2, 6))))
    return Network(input_shape=shape, layers=layers)
