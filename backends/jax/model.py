"""The compiled JAX model (netspec.backend.Model) on a Flax linen module.

State (parameters, running statistics, Adam moments, dropout key) is one pytree, `TrainState`. The
training step is a pure function jitted once per model with the state's buffers donated; it takes
the device-resident split and one row of indices, so batches never leave the device and the loss
and accuracy sums stay there until the one read at the end of `train_steps`.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any, ContextManager, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netspec.backend import Compile, Precision, compiles
from netspec.experiment import TrainConfig
from netspec.model_base import AdamMoments, ModelBase
from netspec.network import Network
from netspec.params import Weights

from . import convert
from .builders import SpecNet, check_builders

_MATMUL_PRECISION: dict[str, Optional[jax.lax.Precision]] = {
    "default": None,                       # the platform's fast default (TF32 on recent GPUs)
    "float32": jax.lax.Precision.HIGHEST,  # true float32 in every matmul and conv of this model
    "tf32": None,                          # DEFAULT: TF32 passes for float32 on GPUs that have them
    "bf16": None,                          # bf16 inputs and kernels (SpecNet's dtype): one bf16 pass
    "float64": jax.lax.Precision.HIGHEST,  # float64 (x64 on during the model's calls only)
}
"""Canonical precision (netspec.backend.canonical_precision) -> the precision of every matmul and conv."""

TRACES: collections.Counter[str] = collections.Counter()
"""How many times each jitted function has been traced (over all models); tests use it to prove
that the step and the evaluation are compiled once, whatever the lr or a short last batch."""


@dataclass(frozen=True)
class JaxData:
    """A split on the model's device: x as NHWC (or (N, F)) float32, y as int32."""

    x: jax.Array
    y: jax.Array
    num_examples: int


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    """optax Adam state, or None before setup_optimizer."""
    key: jax.Array
    """The dropout RNG; split once per training forward pass."""


def _nhwc(x: jax.Array) -> jax.Array:
    """NCHW images -> NHWC (the layout XLA's convs prefer); flat (N, F) input unchanged."""
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def _nchw(y: jax.Array) -> jax.Array:
    """A network output back in PyTorch's layout (only a network that ends on images needs it)."""
    return jnp.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y


class JaxModel(ModelBase):
    """A network compiled to Flax (netspec.backend.Model). Built by JaxBackend.compile, which resolves
    the device. The protocol's checks, errors and read-back rule are ModelBase's; this class holds the
    state and the steps.

    compiled ('on', or 'auto' on a GPU): the steps of a train_steps call run as jitted scans of
    `_chunk_rows` steps (one dispatch per chunk); otherwise one jitted step per row (one dispatch per
    step), which on a CPU is as fast for the MLP and ~7x faster for the CNN (netspec.backend.compiles).
    compile_error is never set: a jitted scan has no fallback (a failure to compile it is an error)."""

    backend_name = "jax"

    def __init__(self, network: Network, weights: Weights, seed: int, device: jax.Device, device_name: str,
                 precision: Precision, compiled: Compile = "auto") -> None:
        super().__init__(network, precision, device_name, compiles(compiled, device.platform != "cpu"))
        self._device = device
        self._chunk_rows: Optional[int] = None
        """Steps per scan, fixed by warmup or the first train_steps call: one compiled program per run
        (a call's rows are cut into chunks of this length, the last padded with rows that are skipped)."""
        check_builders(tuple(network.layers))
        self._module = self._build_module(_MATMUL_PRECISION[self.precision], jnp.bfloat16 if self.precision == "bf16" else None)
        self._state = TrainState({}, {}, None, jax.device_put(jax.random.key(seed), device))
        self.set_weights(weights)
        self._forward_eval = jax.jit(self._forward_eval_fn)
        self._forward_train = jax.jit(self._forward_train_fn)
        self._loss_and_grads_jit = jax.jit(self._loss_and_grads_fn)
        self._eval_step = jax.jit(self._eval_step_fn, static_argnames="batch_size", donate_argnums=0)
        self._train_step = None  # built by setup_optimizer: it closes over the Adam settings
        self._train_chunk = None
        self._program: Any = None
        """(batch size, the program compiled ahead of time by warmup for it): the chunk's scan when
        compiled, else the single step; None before warmup."""

    def _build_module(self, precision: Optional[jax.lax.Precision], dtype: Any = None) -> nn.Module:
        """The Flax module run by every step (benchmarks swap in one of Flax's built-in layers)."""
        inputs = () if self.network.is_chain else tuple(n.inputs for n in self.network.nodes())
        return SpecNet(tuple(self.network.layers), precision, dtype, inputs=inputs)

    # ---- pure functions (traced by jax.jit; TRACES counts the traces) ----

    def _run(self, params: Any, stats: Any, x: jax.Array, train: bool,
             key: Optional[jax.Array]) -> tuple[jax.Array, Any]:
        """Logits and the running statistics after this pass, for NHWC (or flat) x."""
        variables = {"params": params, "batch_stats": stats}
        if not train:  # logits in the input's dtype: bf16 compute keeps the loss in float32
            return self._module.apply(variables, x, False).astype(x.dtype), stats
        logits, updated = self._module.apply(variables, x, True, rngs={"dropout": key}, mutable=["batch_stats"])
        return logits.astype(x.dtype), updated.get("batch_stats", stats)

    def _loss(self, params: Any, stats: Any, x: jax.Array, y: jax.Array,
              key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, stats = self._run(params, stats, x, True, key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, stats)

    def _forward_eval_fn(self, params: Any, stats: Any, x: jax.Array) -> jax.Array:
        TRACES["forward_eval"] += 1
        return _nchw(self._run(params, stats, _nhwc(x), False, None)[0])

    def _forward_train_fn(self, params: Any, stats: Any, x: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]:
        TRACES["forward_train"] += 1
        logits, stats = self._run(params, stats, _nhwc(x), True, key)
        return _nchw(logits), stats

    def _loss_and_grads_fn(self, params: Any, stats: Any, x: jax.Array, y: jax.Array,
                           key: jax.Array) -> tuple[jax.Array, Any]:
        TRACES["loss_and_grads"] += 1
        (loss, _), grads = jax.value_and_grad(self._loss, has_aux=True)(params, stats, _nhwc(x), y, key)
        return loss, grads

    def _train_step_fn(self, adam: optax.GradientTransformation, state: TrainState, sums: jax.Array,
                       x_all: jax.Array, y_all: jax.Array, idx: jax.Array, lr: jax.Array) -> tuple[TrainState, jax.Array]:
        """One Adam step on the batch x_all[idx]; adds (loss, number correct) to `sums` (counts stay
        exact in float32). lr is traced, so a new learning rate reuses the compiled step."""
        TRACES["train_step"] += 1
        x, y = x_all[idx], y_all[idx]
        key, sub = jax.random.split(state.key)
        (loss, (logits, stats)), grads = jax.value_and_grad(self._loss, has_aux=True)(state.params, state.batch_stats, x, y, sub)
        # optax's scale_by_adam is torch.optim.Adam's direction (eps outside the sqrt, eps_root=0);
        # lr is applied here rather than by optax.adam so that it stays a traced argument.
        updates, opt_state = adam.update(grads, state.opt_state)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y).astype(loss.dtype)
        return TrainState(params, stats, opt_state, key), sums + jnp.stack([loss, correct])

    def _train_chunk_fn(self, adam: optax.GradientTransformation, state: TrainState, sums: jax.Array,
                        x_all: jax.Array, y_all: jax.Array, rows: jax.Array, valid: jax.Array,
                        lrs: jax.Array) -> tuple[TrainState, jax.Array]:
        """The steps of `rows` (chunk_rows, batch) as one scan, step i at learning rate lrs[i]; a row whose
        `valid` is False (padding of a short call) is skipped (a cond: no step, no RNG draw), so one
        program serves every call."""
        TRACES["train_chunk"] += 1

        def body(carry: tuple[TrainState, jax.Array], row: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[tuple[TrainState, jax.Array], None]:
            idx, ok, lr = row
            step = lambda c: self._train_step_fn(adam, c[0], c[1], x_all, y_all, idx, lr)
            return jax.lax.cond(ok, step, lambda c: c, carry), None

        (state, sums), _ = jax.lax.scan(body, (state, sums), (rows, valid, lrs))
        return state, sums

    def _eval_step_fn(self, sums: jax.Array, params: Any, stats: Any, x_all: jax.Array, y_all: jax.Array,
                      start: jax.Array, batch_size: int) -> jax.Array:
        """Adds (sum of losses, number correct) of the batch at `start` to `sums`. The batch shape is
        fixed: past the end, indices repeat the last example and are masked out, so a short last
        batch does not trace a second program."""
        TRACES["eval_step"] += 1
        idx = start + jnp.arange(batch_size)
        valid = (idx < x_all.shape[0]).astype(x_all.dtype)
        idx = jnp.minimum(idx, x_all.shape[0] - 1)
        logits, _ = self._run(params, stats, x_all[idx], False, None)
        y = y_all[idx]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(x_all.dtype)
        return sums + jnp.stack([jnp.sum(losses * valid), jnp.sum(correct * valid)])

    # ---- the hooks of ModelBase: numpy in (already checked), numpy or device sums out ----

    def _scope(self) -> ContextManager[Any]:
        """x64 is process-wide configuration in jax, so a float64 model turns it on for its own calls only
        (jit caches per setting) and every other model in the process stays float32."""
        return jax.enable_x64(True) if self.float_dtype == "float64" else contextlib.nullcontext()

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        s = self._state
        if not train:
            return np.asarray(self._forward_eval(s.params, s.batch_stats, x))
        key, sub = jax.random.split(s.key)
        logits, stats = self._forward_train(s.params, s.batch_stats, x, sub)
        self._state = s._replace(batch_stats=stats, key=key)
        return np.asarray(logits)

    def _loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        s = self._state
        loss, grads = self._loss_and_grads_jit(s.params, s.batch_stats, x, y.astype(np.int32),  # labels < classes: int32 is exact
                                               jax.random.split(s.key)[1])  # the state's key is not advanced
        return float(loss), convert.to_canonical(self.network, {"params": grads}, trainable_only=True)

    def _get_weights(self) -> Weights:
        s = self._state
        return convert.to_canonical(self.network, {"params": s.params, "batch_stats": s.batch_stats})

    def _set_weights(self, weights: Weights) -> None:
        variables = jax.device_put(convert.to_flax(self.network, weights, np.dtype(self.float_dtype).type), self._device)
        self._state = self._state._replace(params=variables["params"], batch_stats=variables["batch_stats"])

    # ---- training state: optax's ScaleByAdamState and the dropout key, as plain arrays ----

    def _rng_state(self) -> np.ndarray:
        return np.asarray(jax.random.key_data(self._state.key))

    def _set_rng_state(self, rng: np.ndarray) -> None:
        key = jax.device_put(jax.random.wrap_key_data(np.asarray(rng, np.uint32)), self._device)
        self._state = self._state._replace(key=key)

    def _adam_moments(self) -> AdamMoments:
        opt = self._state.opt_state
        moments = [convert.to_canonical(self.network, {"params": tree}, trainable_only=True) for tree in (opt.mu, opt.nu)]
        return AdamMoments(moments[0], moments[1], int(opt.count))

    def _set_adam_moments(self, adam: AdamMoments) -> None:
        opt_state = optax.ScaleByAdamState(count=np.asarray(adam.step, np.int32), mu=self._params_tree(adam.exp_avg),
                                           nu=self._params_tree(adam.exp_avg_sq))
        self._state = self._state._replace(opt_state=jax.device_put(opt_state, self._device))

    def _params_tree(self, canonical: Weights) -> dict[str, dict[str, np.ndarray]]:
        """Trainable tensors by canonical name -> the layout of the 'params' collection."""
        tree: dict[str, dict[str, np.ndarray]] = {}
        for name, slot in convert.slots(self.network).items():
            if slot.collection == "params":
                tree.setdefault(slot.layer, {})[slot.leaf] = slot.to_flax(canonical[name], np.dtype(self.float_dtype).type)
        return tree

    def _to_device(self, x: np.ndarray, y: np.ndarray) -> JaxData:
        return JaxData(_nhwc(jax.device_put(x, self._device)), jax.device_put(y.astype(np.int32), self._device), len(y))

    def _setup_optimizer(self, config: TrainConfig) -> None:
        b1, b2 = config.optimizer.betas
        adam = optax.scale_by_adam(b1=b1, b2=b2, eps=config.optimizer.eps, eps_root=0.0)
        self._state = self._state._replace(opt_state=jax.device_put(adam.init(self._state.params), self._device))
        self._train_step = jax.jit(partial(self._train_step_fn, adam), donate_argnums=(0, 1))
        self._train_chunk = jax.jit(partial(self._train_chunk_fn, adam), donate_argnums=(0, 1))
        self._program = None

    def _chunk_args(self, rows: np.ndarray, lrs: np.ndarray) -> list[tuple[Any, ...]]:
        """(rows, valid, lrs) device arrays for each scan of a call: chunks of _chunk_rows, the last padded."""
        length = self._chunk_rows
        out = []
        for start in range(0, len(rows), length):
            part, part_lrs = rows[start:start + length], lrs[start:start + length]
            valid = np.arange(length) < len(part)
            if len(part) < length:
                part = np.concatenate([part, np.zeros((length - len(part), rows.shape[1]), part.dtype)])
                part_lrs = np.concatenate([part_lrs, np.zeros(length - len(part_lrs), part_lrs.dtype)])
            out.append(tuple(jax.device_put(a, self._device) for a in (part, valid, part_lrs)))
        return out

    def _warmup(self, data: JaxData, batch_size: int, rows: int = 1) -> None:
        """Compile the training program ahead of time (jit's lower and compile: nothing runs, the state
        is untouched), so that no epoch pays for it: the scan for calls of `rows` rows of `batch_size`
        when compiled, else the one-batch step."""
        shape, dtype = jax.ShapeDtypeStruct, np.dtype(self.float_dtype)
        head = (self._state, shape((2,), dtype), data.x, data.y)
        if self.compiled:
            self._chunk_rows = self._chunk_rows or max(1, int(rows))
            args = head + (shape((self._chunk_rows, batch_size), np.int32), shape((self._chunk_rows,), np.bool_),
                           shape((self._chunk_rows,), dtype))
            self._program = (batch_size, self._train_chunk.lower(*args).compile())
        else:
            self._program = (batch_size, self._train_step.lower(*head, shape((batch_size,), np.int32), shape((), dtype)).compile())

    def _run_steps(self, data: JaxData, rows: np.ndarray, lr: float | np.ndarray) -> jax.Array:
        """The optimizer steps of train_steps (step i at learning rate lr[i], or lr for all), with the
        sums left on the device: only explicit transfers to the device here (tests run it under
        jax.transfer_guard('disallow'))."""
        rows = np.asarray(rows, np.int32)
        lrs = np.broadcast_to(np.asarray(lr, self.float_dtype), (len(rows),))
        sums = jax.device_put(np.zeros(2, self.float_dtype), self._device)
        warm = self._program is not None and self._program[0] == rows.shape[1]
        if self.compiled:
            self._chunk_rows = self._chunk_rows or max(1, len(rows))
            program = self._program[1] if warm else self._train_chunk
            for part, valid, part_lrs in self._chunk_args(rows, lrs):
                # The old state's buffers are donated: keep self._state pointing at live ones.
                self._state, sums = program(self._state, sums, data.x, data.y, part, valid, part_lrs)
        else:
            program = self._program[1] if warm else self._train_step
            # One lr on the device per distinct value in a row of equal ones: a constant lr is one transfer.
            changes = np.flatnonzero(np.r_[True, lrs[1:] != lrs[:-1]]) if len(lrs) else []
            lr_at = {int(i): jax.device_put(np.asarray(lrs[i]), self._device) for i in changes}
            lr_device = None
            for step, row in enumerate(jax.device_put(rows, self._device)):
                lr_device = lr_at.get(step, lr_device)
                self._state, sums = program(self._state, sums, data.x, data.y, row, lr_device)
        return sums

    def _read_back(self, sums: jax.Array) -> tuple[float, float]:
        loss_sum, correct = np.asarray(sums)
        return float(loss_sum), float(correct)

    def _evaluate(self, data: JaxData, batch_size: int) -> jax.Array:
        sums = jax.device_put(np.zeros(2, self.float_dtype), self._device)
        s = self._state
        for start in range(0, data.num_examples, batch_size):
            sums = self._eval_step(sums, s.params, s.batch_stats, data.x, data.y, np.int32(start), batch_size=batch_size)
        return sums
