"""JAX/Flax backend: Flax linen modules with hand-written BatchNorm and Dropout.

Linen rather than nnx: its explicit 'params' / 'batch_stats' collections and pure `apply` make the
whole training state one pytree, so the step is a pure function that jits once and donates its
buffers, and the canonical <-> Flax conversion is a plain mapping of nested dicts.
"""
from __future__ import annotations

from .builders import BUILDERS, SpecNet
from .model import JaxBackend, JaxData, JaxModel

BACKEND = JaxBackend()

__all__ = ["BACKEND", "BUILDERS", "JaxBackend", "JaxData", "JaxModel", "SpecNet"]
