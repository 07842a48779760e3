"""PyTorch backend: hand-written BatchNorm and Dropout, torch.nn for the rest (docs/design.md).

    from netspec.protocol.backend import load_backend
    model = load_backend("torch").compile(network, seed=0)
"""
from .backend import BACKEND, TorchBackend, resolve_device
from .builders import BUILDERS, build_module
from .model import TorchData, TorchModel

__all__ = ["BACKEND", "BUILDERS", "TorchBackend", "TorchData", "TorchModel", "build_module", "resolve_device"]
