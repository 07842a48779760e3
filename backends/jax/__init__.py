"""JAX/Flax backend: Flax linen modules with hand-written BatchNorm and Dropout (docs/design.md).

Linen rather than nnx: its explicit 'params' / 'batch_stats' collections and pure `apply` make the
whole training state one pytree, so the step is a pure function that jits once and donates its
buffers, and the canonical <-> Flax conversion (convert.py) is a plain mapping of nested dicts.

    from netspec.protocol.backend import load_backend
    model = load_backend("jax").compile(network, seed=0)
"""
from __future__ import annotations

from .backend import BACKEND, JaxBackend, resolve_device
from .builders import BUILDERS, SpecNet
from .model import JaxData, JaxModel

__all__ = ["BACKEND", "BUILDERS", "JaxBackend", "JaxData", "JaxModel", "SpecNet", "resolve_device"]
