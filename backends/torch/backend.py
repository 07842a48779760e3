"""The torch Backend object (`BACKEND`): compile, describe, and device resolution."""
from __future__ import annotations

import platform
from typing import Any, Optional

import torch

from netspec.protocol.backend import BackendBase, request_device
from netspec.training.threads import default_threads

from .model import TorchModel


def resolve_device(name: Optional[str] = None) -> torch.device:
    """A device name as a torch.device, by netspec.protocol.backend.request_device's rule; a GPU without an
    index is torch's current one."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    request = request_device(name, count, f"torch {torch.__version__}")
    if request.kind == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device() if request.index is None else request.index)


def device_words(device: torch.device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


class TorchBackend(BackendBase):
    """netspec.protocol.backend.Backend for PyTorch: compile and device are BackendBase's."""

    name = "torch"
    model_class = TorchModel

    def resolve_device(self, name: Optional[str] = None) -> torch.device:
        return resolve_device(name)

    def device_words(self, device: torch.device) -> str:
        return device_words(device)

    def set_threads(self, threads: Optional[int]) -> None:
        """None: the usable cores less the machine's load (netspec.training.threads.default_threads), since
        OpenMP's spinning threads slow each other down on a busy CPU."""
        threads = default_threads() if threads is None else threads
        torch.set_num_threads(threads)
        try:  # settable once per process, before any inter-op work; the intra-op threads are what matter
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass

    def from_torch(self, module: Any, input_shape: tuple[int, ...], verify: bool = True) -> Any:
        """netspec.from_torch: a torch.nn.Module as a Network and canonical weights (fx_import.py)."""
        from .fx_import import from_torch
        return from_torch(module, input_shape, verify)

    def describe(self) -> dict[str, Any]:
        cuda = torch.cuda.is_available()
        return {
            "backend": self.name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "devices": [device_words(torch.device("cuda", i)) for i in range(torch.cuda.device_count())] or ["cpu"],
            "cpu": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }


BACKEND = TorchBackend()
