"""Divergence bisection: where two backends part, not only that they do.

When the float64 cross-check fails, `locate` walks the training computation in order and stops at the
first quantity that differs, on the cross-check's inputs, weights and dropout stream (same seed):

1. activations: each layer's output, first in eval mode, then in train mode. A chain's layer k is
   compared by compiling, on both backends, the prefix network layers[:k+1] from the same canonical
   weights (a fresh model draws the same step-0 masks, so the prefixes see what the whole network does).
   A graph is not cut into sub-networks: it is located by tensor (steps 2 and 3) only.
2. gradients: every trainable tensor's, in canonical (= layer) order, with the cross-check's scale.
3. after steps: one train_steps call per step, then every parameter and running statistic; the
   parting is in the optimizer step or the running statistics' update.

Each quantity uses the cross-check's tolerance for it (F64_RTOL for one pass, F64_STEPS_RTOL after
steps) and its scale rule. numpy only: the core never imports a framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from netspec.protocol.backend import Backend
from netspec.check.crosscheck import (F64_RTOL, F64_STEPS_RTOL, GRAD_FLOOR, TINY, _augmentation, _max_abs, _recipe_lrs, _scales,
                         synthetic_batch)
from netspec.spec.experiment import TrainConfig
from netspec.spec.network import Network
from netspec.spec.params import Weights, init_weights

PRECISION = "float64"


@dataclass(frozen=True)
class Parting:
    """The first quantity where the backends differ beyond its tolerance."""

    quantity: str
    """'activation (eval)', 'activation (train)', 'gradient' or 'tensor after a step'."""
    layer: int
    layer_type: str
    tensor: str
    """The compared tensor: the layer's output for an activation, else its canonical name."""
    step: int
    """0 for one pass, else the number of optimizer steps taken."""
    rel: float
    tolerance: float
    position: tuple[int, ...]
    """Where the difference is largest (batch index first for an activation)."""
    reference: float
    other: float

    def line(self, reference: str = "reference", other: str = "other") -> str:
        where = f"after step {self.step}, " if self.step else ""
        return (f"backends part at layer {self.layer} ({self.layer_type}), {where}{self.quantity} {self.tensor}: "
                f"rel {self.rel:.2e} > {self.tolerance:.0e}; largest at {list(self.position)}: "
                f"{reference} {self.reference:.17g}, {other} {self.other:.17g}")


def _compare(a: np.ndarray, b: np.ndarray, scale: float, tolerance: float) -> Optional[tuple[float, tuple[int, ...]]]:
    """(rel, position of the largest difference) when `a` (other) and `b` (reference) differ beyond
    tolerance at `scale`; a shape mismatch counts as differing everywhere (position ())."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf"), ()
    diff = np.abs(a - b)
    rel = _max_abs(diff) / (scale + TINY)
    if rel <= tolerance:
        return None
    return rel, tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else ()


def _parting(quantity: str, network: Network, layer: int, tensor: str, step: int, a: np.ndarray, b: np.ndarray,
             found: tuple[float, tuple[int, ...]], tolerance: float) -> Parting:
    rel, position = found
    value = (lambda t: float(np.asarray(t, np.float64)[position]) if position or np.ndim(t) == 0 else float("nan"))
    return Parting(quantity, layer, type(network.layers[layer]).__name__, tensor, step, rel, tolerance, position,
                   value(b), value(a))


def _layer_of(name: str) -> int:
    """The layer index of a canonical weight name ('3.running_var' -> 3)."""
    return int(name.split(".", 1)[0])


def prefix(network: Network, k: int) -> Network:
    """The chain's first k + 1 layers as a network (canonical weight names keep their indices)."""
    return Network(input_shape=network.input_shape, layers=network.layers[:k + 1])


def _activations(network: Network, backends: tuple[Backend, Backend], weights: Weights, seed: int,
                 x: np.ndarray) -> Iterator[Parting]:
    """The first layer whose output differs, eval mode then train mode (chains only). A mode whose
    logits agree is not cut into layers (the pass first, then the layer within it)."""
    def output(k: int, train: bool) -> tuple[np.ndarray, np.ndarray, Optional[tuple[float, tuple[int, ...]]]]:
        sub = prefix(network, k)
        sub_weights = {name: weights[name] for name in sub.param_infos()}
        ref, other = (b.compile(sub, sub_weights, seed=seed, precision=PRECISION).forward(x, train=train)
                      for b in backends)
        return other, ref, _compare(other, ref, _max_abs(ref), F64_RTOL)

    last = len(network.layers) - 1
    for train in (False, True):
        if output(last, train)[2] is None:
            continue
        for k in range(last + 1):
            other, ref, found = output(k, train)
            if found:
                yield _parting(f"activation ({'train' if train else 'eval'})", network, k, "output", 0,
                               other, ref, found, F64_RTOL)
                return


def _gradients(network: Network, models: tuple[Any, Any], x: np.ndarray, y: np.ndarray) -> Iterator[Parting]:
    (_, g_ref), (_, g_other) = (m.loss_and_grads(x, y) for m in models)
    floor = GRAD_FLOOR * max(map(_max_abs, g_ref.values()), default=0.0)
    for name in g_ref:  # canonical order = layer order
        mine = g_other.get(name, np.empty(0))  # a missing gradient differs everywhere
        found = _compare(mine, g_ref[name], max(_max_abs(g_ref[name]), floor), F64_RTOL)
        if found:
            yield _parting("gradient", network, _layer_of(name), name, 0, mine, g_ref[name], found, F64_RTOL)
            return


def _after_steps(network: Network, models: tuple[Any, Any], x_all: np.ndarray, y_all: np.ndarray,
                 batches: np.ndarray, config: TrainConfig) -> Iterator[Parting]:
    """One train_steps call per step; the first step after which a tensor differs, and its first tensor."""
    trainable = frozenset(name for name, info in network.param_infos().items() if info.trainable)
    for m in models:
        m.setup_optimizer(config)
    data = [m.to_device(x_all, y_all) for m in models]
    lrs = _recipe_lrs(config, len(batches))
    reach_scale = max(config.param_groups.norm_bias_lr_scale, 1.0)
    for step in range(len(batches)):
        rows = batches[step:step + 1]
        extra = _augmentation(config, rows, x_all.shape)
        for m, d in zip(models, data):
            m.train_steps(d, rows, lrs[step:step + 1], **extra)
        w_ref, w_other = (m.get_weights() for m in models)
        scales = _scales(w_ref, reach_scale * float(np.sum(lrs[:step + 1])), trainable)
        for name in w_ref:
            found = _compare(w_other[name], w_ref[name], scales[name], F64_STEPS_RTOL)
            if found:
                yield _parting("tensor after a step", network, _layer_of(name), name, step + 1,
                               w_other[name], w_ref[name], found, F64_STEPS_RTOL)
                return


def locate(network: Network, reference: Backend, other: Backend, seed: int = 0, batch_size: int = 8,
           steps: int = 10, train_config: Optional[TrainConfig] = None) -> Optional[Parting]:
    """The first place where `other` parts from `reference` in float64 (see the module docstring), on the
    cross-check's first batch and weights of `seed`; None when they agree throughout."""
    config = train_config or TrainConfig()
    weights = init_weights(network, seed)
    rng = np.random.default_rng(seed)
    x_all, y_all = synthetic_batch(network, 3 * batch_size + 1, rng)
    x, y = x_all[:batch_size], y_all[:batch_size]
    batches = np.array([rng.permutation(len(y_all))[:batch_size] for _ in range(steps)], dtype=np.int64)
    backends = (reference, other)
    if network.is_chain:
        parting = next(_activations(network, backends, weights, seed, x), None)
        if parting:
            return parting
    models = tuple(b.compile(network, weights, seed=seed, precision=PRECISION) for b in backends)
    return next(_gradients(network, models, x, y), None) or next(
        _after_steps(network, models, x_all, y_all, batches, config), None)
