"""torch.nn constructions the tests compare the backends with, independent of backends/.

`torch_nn_network` assembles a network from torch.nn built-ins only (torch's own BatchNorm and
Dropout): a second, separate construction of what backends/torch/builders.py builds. The numpy
statement of the spec's semantics lives in the core (netspec/reference.py, LayerSpec.reference).
"""
from __future__ import annotations

import numpy as np

from netspec import layers as spec
from netspec.network import Network
from netspec.params import Weights


def torch_nn_network(network: Network):
    """The network as an nn.Sequential of torch.nn built-ins; state_dict names are the canonical ones."""
    from torch import nn

    modules: list[nn.Module] = []
    for layer, shape in zip(network.layers, network.shapes()):
        if isinstance(layer, spec.Linear):
            modules.append(nn.Linear(shape[0], layer.out_features, bias=layer.bias))
        elif isinstance(layer, spec.Conv2d):
            modules.append(nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                     bias=layer.bias))
        elif isinstance(layer, spec.BatchNorm):
            norm = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
            modules.append(norm(shape[0], eps=layer.eps, momentum=layer.momentum))
        elif isinstance(layer, spec.ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, spec.Dropout):
            modules.append(nn.Dropout(layer.p))
        elif isinstance(layer, spec.Dropout2d):
            modules.append(nn.Dropout2d(layer.p))
        elif isinstance(layer, spec.MaxPool2d):
            modules.append(nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, spec.Flatten):
            modules.append(nn.Flatten())
        else:
            raise NotImplementedError(f"no torch.nn reference for {layer.type}")
    return nn.Sequential(*modules)


def load_into(module, weights: Weights):
    """Canonical weights into any torch module whose state_dict names are the canonical ones."""
    import torch

    module.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
    return module
