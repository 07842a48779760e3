"""The one place where canonical weights (PyTorch names and layouts) meet Flax variables.

Canonical: flat {'0.weight': OIHW conv kernel or [out, in] linear weight, '1.running_mean': ...,
'1.num_batches_tracked': int64 scalar}. Flax: {'params': {'0': {'kernel': HWIO or [in, out],
'bias': ...}}, 'batch_stats': {'1': {'running_mean': ...}}}. Only the two kernels change layout;
every other tensor keeps its name and goes to 'params' if trainable, else to 'batch_stats'. Flatten
needs no weight permutation because the JAX Flatten itself flattens in C, H, W order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from netspec.spec import layers as spec
from netspec.spec.network import Network
from netspec.spec.params import Weights

Variables = dict[str, dict[str, dict[str, Any]]]
"""{collection: {layer index: {leaf name: array}}}."""

_KERNEL_AXES: dict[type, tuple[int, ...]] = {
    spec.Linear: (1, 0),        # [out, in] -> [in, out]
    spec.Conv2d: (2, 3, 1, 0),  # OIHW -> HWIO
}
"""Canonical -> Flax axis order of the 'weight' of these layer types (Flax calls it 'kernel')."""


@dataclass(frozen=True)
class Slot:
    """Where one canonical tensor lives among the Flax variables."""

    collection: str
    """'params' (trainable) or 'batch_stats' (running statistics)."""
    layer: str
    leaf: str
    axes: Optional[tuple[int, ...]]
    """Canonical -> Flax transpose, or None when the layouts agree."""
    dtype: str
    """Canonical dtype ('float32', 'int64')."""

    def to_flax(self, value: np.ndarray, float_dtype: type = np.float32) -> np.ndarray:
        value = np.asarray(value)
        if self.axes is not None:
            value = value.transpose(self.axes)
        # int32 on the device: JAX disables 64-bit integers unless jax_enable_x64 is set.
        return np.array(value, dtype=np.int32 if self.dtype == "int64" else float_dtype, order="C")  # 0-d stays 0-d

    def to_canonical(self, value: Any) -> np.ndarray:
        value = np.asarray(value)
        if self.axes is not None:
            value = value.transpose(np.argsort(self.axes))
        # A copy, in canonical layout; float64 stays float64 (a float64 model's weights).
        return np.array(value, dtype=value.dtype if value.dtype == np.float64 else self.dtype)


def slots(network: Network) -> dict[str, Slot]:
    """Canonical name -> Slot, in state_dict order."""
    out: dict[str, Slot] = {}
    for node in network.nodes():
        index, layer = node.index, node.layer
        for suffix, info in layer.params(node.input_shape).items():
            kernel = suffix == "weight" and type(layer) in _KERNEL_AXES
            out[f"{index}.{suffix}"] = Slot(
                collection="params" if info.trainable else "batch_stats",
                layer=str(index),
                leaf="kernel" if kernel else suffix,
                axes=_KERNEL_AXES[type(layer)] if kernel else None,
                dtype=info.dtype,
            )
    return out


def to_flax(network: Network, weights: Weights, float_dtype: type = np.float32) -> Variables:
    """Canonical weights (already checked against `network`) -> Flax variables, as numpy arrays with
    floats in `float_dtype`."""
    variables: Variables = {"params": {}, "batch_stats": {}}
    for name, slot in slots(network).items():
        variables[slot.collection].setdefault(slot.layer, {})[slot.leaf] = slot.to_flax(weights[name], float_dtype)
    return variables


def to_canonical(network: Network, variables: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 trainable_only: bool = False) -> Weights:
    """Flax variables (or a gradient tree under 'params') -> canonical numpy weights, in state_dict
    order. trainable_only: only the 'params' tensors (for gradients)."""
    return {
        name: slot.to_canonical(variables[slot.collection][slot.layer][slot.leaf])
        for name, slot in slots(network).items()
        if not (trainable_only and slot.collection != "params")
    }
