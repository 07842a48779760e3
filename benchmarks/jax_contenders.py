"""JAX contenders of benchmarks/epoch_time.py: the JAX backend, and the same model and loop with
Flax's own BatchNorm and Dropout in place of the hand-written ones.

Both run JaxModel's loop (one jitted step with donated buffers per index batch, metrics summed on the
device, one read per epoch), so the ratio between them is the cost of the hand-written layers alone.
Each function returns an epoch function; epoch_time.py times it.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from backends.jax import BACKEND
from backends.jax.builders import LayerFn, SpecNet
from backends.jax.backend import device_words, resolve_device
from backends.jax.model import JaxModel
from netspec import layers as spec
from netspec.params import Weights

Epoch = Callable[[np.ndarray], object]


def _flax_batch_norm(layer: spec.BatchNorm, name: str, precision: Any) -> LayerFn:
    # Flax's momentum weighs the old value: 1 - PyTorch's.
    norm = nn.BatchNorm(momentum=1.0 - layer.momentum, epsilon=layer.eps, name=name)
    return lambda x, train: norm(x, use_running_average=not train)


def _flax_dropout(layer: spec.Dropout | spec.Dropout2d, name: str, precision: Any) -> LayerFn:
    # Dropout2d: one draw per sample and channel of NHWC, broadcast over H and W.
    drop = nn.Dropout(layer.p, broadcast_dims=(1, 2) if isinstance(layer, spec.Dropout2d) else (), name=name)
    return lambda x, train: drop(x, deterministic=not train)


FLAX_BUILTINS = ((spec.BatchNorm, _flax_batch_norm), (spec.Dropout, _flax_dropout), (spec.Dropout2d, _flax_dropout))
"""flax.linen's own BatchNorm and Dropout, as SpecNet overrides (a reference: never in the backend)."""


class FlaxBuiltinModel(JaxModel):
    """JaxModel's loop around the network with FLAX_BUILTINS; its variables come from Flax's init (names differ from
    the canonical ones, which timing does not need)."""

    def _build_module(self, precision: Optional[jax.lax.Precision]) -> nn.Module:
        return SpecNet(tuple(self.network.layers), precision, overrides=FLAX_BUILTINS)

    def set_weights(self, weights: Weights) -> None:
        shape = tuple(self.network.input_shape)
        x = jnp.zeros((2, *shape[1:], shape[0]) if len(shape) == 3 else (2, *shape))  # NHWC
        variables = jax.device_put(self._module.init(jax.random.key(0), x, False), self._device)
        self._state = self._state._replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))


def _epoch(model: JaxModel, workload: Any) -> Epoch:
    data = model.to_device(workload.x, workload.y)
    model.setup_optimizer(workload.train)
    return lambda batches: model.train_steps(data, batches, workload.train.lr)


def netspec_jax(workload: Any) -> Epoch:
    """The JAX backend as the trainer uses it."""
    return _epoch(BACKEND.compile(workload.network, workload.weights, workload.seed, workload.device), workload)


def flax_builtin(workload: Any) -> Epoch:
    """The same network and loop with flax.linen.BatchNorm / Dropout."""
    device = resolve_device(workload.device)
    model = FlaxBuiltinModel(workload.network, workload.weights, workload.seed, device, device_words(device), "default")
    return _epoch(model, workload)
