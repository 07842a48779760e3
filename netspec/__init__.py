"""netspec: networks as data. Layer specs compile to PyTorch or JAX/Flax models.

    import netspec as ns
    net = ns.Network(input_shape=(3, 32, 32), layers=[ns.Conv2d(out_channels=16, kernel_size=3), ...])
    print(net.summary())

Nothing here imports torch or jax; backends live in `netspec_backends` (the checkout's `backends/`) and are loaded on demand by name
(`ns.load_backend("jax")`, through the entry points of pyproject.toml).
"""
from netspec.protocol.backend import backend_names, from_torch, load_backend
from netspec.errors import DataError, NetspecError, SetupError, SpecError
from netspec.spec.experiment import AdamConfig, DataConfig, Experiment, TrainConfig, load
from netspec.spec.layers import (CELU, GELU, LAYER_TYPES, Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, Dropout2d,
                                 Flatten, GlobalPool, Identity, Layer, LeakyReLU, Linear, MaxPool2d, ReLU, Scale, Sigmoid,
                                 SiLU, Softplus, Tanh)
from netspec.spec.network import Network
from netspec.spec.params import Weights, check_weights, init_weights, load_weights, save_weights
from netspec.version import __version__
from netspec.api import TrainResult, train  # last: it imports the rooms above

__all__ = [
    "__version__",
    "Add", "AvgPool2d", "CELU", "Concat", "GELU", "GlobalPool", "Identity", "LeakyReLU", "Scale", "Sigmoid", "SiLU", "Softplus", "Tanh",
    "AdamConfig", "BatchNorm", "Conv2d", "DataConfig", "DataError", "Dropout", "Dropout2d", "Experiment", "Flatten",
    "LAYER_TYPES", "Layer", "Linear", "MaxPool2d", "NetspecError", "Network", "ReLU", "SetupError", "SpecError",
    "TrainConfig", "TrainResult", "Weights", "backend_names", "check_weights", "from_torch", "init_weights", "load",
    "load_backend", "load_weights", "save_weights", "train",
]
