"""Backends compile a netspec Network into a framework model behind one small protocol.

Imported lazily (einops-style): `get_backend("torch")` imports torch only, `get_backend("jax")`
imports jax only, so a user of one framework never needs the other installed.
"""
from __future__ import annotations

import importlib

from netspec.errors import SpecError

from .base import Backend, DeviceData, Model

BACKENDS = ("torch", "jax")
_MODULES = {"torch": "backends.torch", "jax": "backends.jax"}
_INSTALL = {"torch": "pip install 'netspec[torch]'", "jax": "pip install 'netspec[jax]'"}


def get_backend(name: str) -> Backend:
    """The backend called `name` ('torch' or 'jax'); one clear error if unknown or not installed."""
    if name not in _MODULES:
        raise SpecError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as err:
        raise SpecError(f"backend {name!r} needs a package that is not installed ({err.name}); run: {_INSTALL[name]}") from None
    return module.BACKEND


__all__ = ["BACKENDS", "Backend", "DeviceData", "Model", "get_backend"]
