"""PyTorch backend: hand-written BatchNorm and Dropout, torch.nn for the rest (see DESIGN.md).

    from backends import get_backend
    model = get_backend("torch").compile(network, seed=0)
"""
from .build import BUILDERS, build_module
from .layers import BatchNorm, Dropout, Dropout2d
from .model import BACKEND, TorchBackend, TorchData, TorchModel, resolve_device

__all__ = ["BACKEND", "BUILDERS", "BatchNorm", "Dropout", "Dropout2d", "TorchBackend", "TorchData", "TorchModel",
           "build_module", "resolve_device"]
