"""The training recipe in jax, with PyTorch's semantics: Adam (L2 weight decay), AdamW
(decoupled) and SGD (momentum, Nesterov, dampening 0, L2) as small pure functions over the params
tree, per-tensor weight decay and lr multipliers by the spec's rules, label smoothing as
F.cross_entropy's, and the augmentation gather of netspec.protocol.augment's plans.

Adam's direction is optax.scale_by_adam (torch's: eps outside the square root, eps_root 0), so
today's Adam step is unchanged. SGD is written out rather than taken from optax.sgd so that each
operation is torch.optim.SGD's, in its order: g += wd * p; buf = momentum * buf + g (buf = g at the
first step, the same as from zeros); d = g + momentum * buf (Nesterov) or buf; p -= lr * d. (optax's
trace forms the same two expressions; tests/training/test_recipe_parity.py checks the result against
torch.optim in float64.) The augmentation builds netspec.protocol.augment's index maps from the draws on the
device and applies them as an exact gather and select, bit-identical to the numpy reference and to
the torch backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from netspec.protocol.augment import Draws, augment_batch, packed
from netspec.spec.experiment import AugmentConfig, TrainConfig


class SgdState(NamedTuple):
    momentum_buffer: Any
    """A tree like the params (None without momentum)."""


@dataclass(frozen=True)
class Optimizer:
    """train.optimizer as pure functions; `rules` is a tree like the params whose leaves are
    netspec.protocol.param_groups.TensorRule (weight decay, lr multiplier). The jitted steps close over it."""

    config: TrainConfig
    rules: Any

    def _adam(self) -> optax.GradientTransformation:
        b1, b2 = self.config.optimizer.betas
        return optax.scale_by_adam(b1=b1, b2=b2, eps=self.config.optimizer.eps, eps_root=0.0)

    def init(self, params: Any) -> Any:
        opt = self.config.optimizer
        if opt.type == "sgd":
            return SgdState(jax.tree.map(jnp.zeros_like, params) if opt.momentum else None)
        return self._adam().init(params)

    def step(self, params: Any, grads: Any, state: Any, lr: jax.Array) -> tuple[Any, Any]:
        """The parameters after one step at learning rate `lr` (traced: a new lr never recompiles)."""
        opt = self.config.optimizer
        if opt.type != "adamw":  # L2: the decay joins the gradient (torch's Adam and SGD)
            grads = jax.tree.map(lambda g, p, r: g + r.weight_decay * p if r.weight_decay else g, grads, params, self.rules)
        if opt.type == "sgd":
            direction = grads
            if opt.momentum:
                buf = jax.tree.map(lambda b, g: opt.momentum * b + g, state.momentum_buffer, grads)
                direction = jax.tree.map(lambda g, b: g + opt.momentum * b, grads, buf) if opt.nesterov else buf
                state = SgdState(buf)
        else:
            direction, state = self._adam().update(grads, state)
        decoupled = opt.type == "adamw"

        def apply(p: jax.Array, d: jax.Array, rule: Any) -> jax.Array:
            rate = lr if rule.lr_scale == 1.0 else lr * rule.lr_scale
            if decoupled and rule.weight_decay:
                p = p * (1 - rate * rule.weight_decay)  # torch.optim.AdamW: decay first, then the step
            return p - rate * d

        return jax.tree.map(apply, params, direction, self.rules), state


def cross_entropy(logits: jax.Array, y: jax.Array, smoothing: float) -> jax.Array:
    """Mean cross entropy; with label smoothing as PyTorch defines it (the target (1 - s) one-hot + s / K)."""
    if not smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    target = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype), smoothing)
    return optax.softmax_cross_entropy(logits, target).mean()


def augment(x_all: jax.Array, idx: jax.Array, draws: jax.Array, config: AugmentConfig) -> jax.Array:
    """The augmented batch x_all[idx] (NHWC) from its packed draws (netspec.protocol.augment.packed: dy, dx, flip,
    cy, cx per image): netspec.protocol.augment's index maps built on the device by jax.numpy, one gather,
    one select of zeros."""
    return augment_batch(jnp, x_all, idx, draws, config, channels_last=True, zero=jnp.zeros((), x_all.dtype))


def augmented_batches(x: np.ndarray, rows: np.ndarray, draws: Draws, config: AugmentConfig) -> np.ndarray:
    """(steps, batch, C, H, W): what the training steps of `rows` see (for tests)."""
    x_all = jnp.asarray(np.transpose(x, (0, 2, 3, 1)))
    plans = packed(draws)
    out = [np.transpose(np.asarray(augment(x_all, jnp.asarray(row), jnp.asarray(plans[i]), config)), (0, 3, 1, 2))
           for i, row in enumerate(rows)]
    return np.stack(out)
