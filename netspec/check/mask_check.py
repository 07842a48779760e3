"""Each dropout layer's mask, read from what the layer does in a training pass of a backend, against the
numpy reference (netspec.protocol.counter_hash.keep_mask): the cross-check's first rows.

A unit whose input is not 0 and whose output is 0 was dropped; a unit whose input is 0 says nothing
and is not counted. Masks are integers: equal or wrong, so any differing unit fails. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netspec.protocol.backend import Backend
from netspec.protocol.counter_hash import keep_mask
from netspec.spec.layers import Dropout, Dropout2d
from netspec.spec.network import Network
from netspec.spec.params import init_weights


def dropout_layers(network: Network) -> list[int]:
    """The indices of the layers that drop units in training."""
    return [i for i, layer in enumerate(network.layers) if isinstance(layer, (Dropout, Dropout2d)) and layer.p > 0]


def _train_pass(backend: Backend, network: Network, layers: int, x: np.ndarray, seed: int, precision: str) -> np.ndarray:
    """The output of the network's first `layers` layers in a first training pass (step 0 of the stream)."""
    if layers == 0:
        return x.astype(np.float64)
    head = Network(input_shape=network.input_shape, layers=network.layers[:layers])
    return backend.compile(head, init_weights(head, seed), seed=seed, precision=precision).forward(x, train=True)


@dataclass(frozen=True)
class MaskCheck:
    """One dropout layer in one backend: how many of the units seen differ from the reference."""

    backend: str
    layer: str
    """'<index>.<type>'."""
    wrong: int
    seen: int


def check_masks(network: Network, backends: tuple[Backend, ...], x: np.ndarray, seed: int, precision: str) -> list[MaskCheck]:
    """Every dropout layer's step-0 mask in every backend against counter_hash.keep_mask."""
    checks = []
    for index in dropout_layers(network):
        layer = network.layers[index]
        per_channel = isinstance(layer, Dropout2d)
        for backend in backends:
            before = _train_pass(backend, network, index, x, seed, precision)
            after = _train_pass(backend, network, index + 1, x, seed, precision)
            reference = keep_mask(seed, 0, index, before.shape, layer.p, per_channel)
            seen, kept = before != 0, after != 0
            if per_channel:  # a channel is seen where any of its values is, kept where any survives
                seen, kept = seen.any(axis=(2, 3), keepdims=True), kept.any(axis=(2, 3), keepdims=True)
            checks.append(MaskCheck(backend.name, f"{index}.{layer.type}", int(np.sum(seen & (kept != reference))),
                                    int(np.sum(seen))))
    return checks
