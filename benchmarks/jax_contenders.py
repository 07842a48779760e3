"""JAX contenders of benchmarks/epoch_time.py: the JAX backend, and the same model and loop with
Flax's own BatchNorm and Dropout in place of the hand-written ones.

Both run JaxModel's loop (compiled: one jitted scan per chunk of steps; eager: one jitted step per
index batch; donated buffers, metrics summed on the device, one read per epoch), so the ratio between
them is the cost of the hand-written layers alone.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from netspec_backends.jax import BACKEND
from netspec_backends.jax.builders import JaxSite, LayerFn, SpecNet
from netspec_backends.jax.backend import device_words, resolve_device
from netspec_backends.jax.model import JaxModel
from netspec.spec import layers as spec
from netspec.spec.experiment import TrainConfig
from netspec.protocol.param_groups import tensor_rules
from netspec.spec.params import Weights

Epoch = Callable[[np.ndarray], object]


def _flax_batch_norm(layer: spec.BatchNorm, site: JaxSite) -> LayerFn:
    # Flax's momentum weighs the old value: 1 - PyTorch's. dtype: bf16 out for bf16 compute (its
    # statistics are reduced in float32).
    norm = nn.BatchNorm(momentum=1.0 - layer.momentum, epsilon=layer.eps, dtype=site.compute.dtype, name=site.name)
    return lambda x, train: norm(x, use_running_average=not train)


def _flax_dropout(layer: spec.Dropout | spec.Dropout2d, site: JaxSite) -> LayerFn:
    # Dropout2d: one draw per sample and channel of NHWC, broadcast over H and W.
    drop = nn.Dropout(layer.p, broadcast_dims=(1, 2) if isinstance(layer, spec.Dropout2d) else (), name=site.name)
    return lambda x, train: drop(x, deterministic=not train)


FLAX_BUILTINS = ((spec.BatchNorm, _flax_batch_norm), (spec.Dropout, _flax_dropout), (spec.Dropout2d, _flax_dropout))
"""flax.linen's own BatchNorm and Dropout, as SpecNet overrides (a reference: never in the backend)."""


class ThreefryDropoutModel(JaxModel):
    """JaxModel with flax.linen's own Dropout (jax.random.bernoulli on a threefry key, the backend's masks
    before the shared stream): the key made from the step's key of the first layer, so it is still a pure
    function of the dropout stream."""

    def _build_module(self, precision: Optional[jax.lax.Precision], dtype: Any = None) -> nn.Module:
        return SpecNet(tuple(self.network.layers), precision, dtype, overrides=FLAX_BUILTINS[1:])

    def _run(self, params: Any, stats: Any, x: jax.Array, train: bool, keys: Optional[jax.Array]) -> tuple[jax.Array, Any]:
        if not train:
            return super()._run(params, stats, x, train, keys)
        rngs = {"dropout": jax.random.key(keys[0])}
        logits, updated = self._module.apply({"params": params, "batch_stats": stats}, x, True, rngs=rngs, mutable=["batch_stats"])
        return logits.astype(x.dtype), updated.get("batch_stats", stats)


class FlaxBuiltinModel(ThreefryDropoutModel):
    """JaxModel's loop around the network with FLAX_BUILTINS; its variables come from Flax's init (names differ from
    the canonical ones, which timing does not need)."""

    def _build_module(self, precision: Optional[jax.lax.Precision], dtype: Any = None) -> nn.Module:
        inputs = () if self.network.is_chain else tuple(n.inputs for n in self.network.nodes())
        return SpecNet(tuple(self.network.layers), precision, dtype, overrides=FLAX_BUILTINS, inputs=inputs)

    def _rules_tree(self, config: TrainConfig) -> Any:
        # Flax's own layers name their leaves their own way ('scale', 'mean'), so canonical names cannot be
        # looked up; the benchmark times one rule for every tensor (the lab's Adam).
        rules = set(tensor_rules(self.network, config).values())
        if len(rules) != 1:
            raise ValueError("the Flax built-in contender times optimizers with one rule for every tensor")
        rule = rules.pop()
        return jax.tree.map(lambda _: rule, self._state.params)

    def _set_weights(self, weights: Weights) -> None:
        shape = tuple(self.network.input_shape)
        x = jnp.zeros((2, *shape[1:], shape[0]) if len(shape) == 3 else (2, *shape))  # NHWC
        variables = jax.device_put(self._module.init(jax.random.key(0), x, False), self._device)
        self._state = self._state._replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))


def build(impl: str, network: Any, weights: Weights, seed: int, device: Optional[str], precision: str,
          compiled: str) -> JaxModel:
    """'netspec': the JAX backend as the trainer uses it; 'builtin': the same with FLAX_BUILTINS."""
    if impl == "netspec":
        return BACKEND.compile(network, weights, seed, device, precision, compiled)
    where = resolve_device(device)
    return FlaxBuiltinModel(network, weights, seed, where, device_words(where), precision, compiled)
