"""The compiled JAX model (netspec.protocol.backend.Model) on a Flax linen module.

State (parameters, running statistics, the optimizer's state) is one pytree, `TrainState`. The training
step is a pure function jitted once per model with the state's buffers donated; it takes the
device-resident split, one row of indices and the step's dropout keys (netspec.protocol.counter_hash: one
uint32 per layer, hashed on the host from the run's seed and step), so batches never leave the device
and the loss and accuracy sums stay there until the one read at the end of `train_steps`.
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

from netspec.protocol.backend import Compile, Precision, compiles
from netspec.spec.experiment import TrainConfig
from netspec.spec.layers import Dropout, Dropout2d
from netspec.protocol.model_base import ModelBase
from netspec.protocol.optimizer_state import OptimizerState
from netspec.protocol.param_groups import tensor_rules
from netspec.spec.network import Network
from netspec.spec.params import Weights

from . import convert, recipe
from .builders import SpecNet, check_builders
from .layers import DROPOUT_KEYS

_MATMUL_PRECISION: dict[str, Optional[jax.lax.Precision]] = {
    "default": None,                       # the platform's fast default (TF32 on recent GPUs)
    "float32": jax.lax.Precision.HIGHEST,  # true float32 in every matmul and conv of this model
    "tf32": None,                          # DEFAULT: TF32 passes for float32 on GPUs that have them
    "bf16": None,                          # bf16 inputs and kernels (SpecNet's dtype): one bf16 pass
    "float64": jax.lax.Precision.HIGHEST,  # float64 (x64 on during the model's calls only)
}
"""Canonical precision (netspec.protocol.backend.canonical_precision) -> the precision of every matmul and conv."""

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
    """The optimizer's state (optax's ScaleByAdamState, or recipe.SgdState), or None before setup_optimizer."""


def _nhwc(x: jax.Array) -> jax.Array:
    """NCHW images -> NHWC (the layout XLA's convs prefer); flat (N, F) input unchanged."""
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def _nchw(y: jax.Array) -> jax.Array:
    """A network output back in PyTorch's layout (only a network that ends on images needs it)."""
    return jnp.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y


class JaxModel(ModelBase):
    """A network compiled to Flax (netspec.protocol.backend.Model). Built by JaxBackend.compile, which resolves
    the device. The protocol's checks, errors and read-back rule are ModelBase's; this class holds the
    state and the steps.

    compiled ('on', or 'auto' on a GPU): the steps of a train_steps call run as jitted scans of
    `_chunk_rows` steps (one dispatch per chunk); otherwise one jitted step per row (one dispatch per
    step), which on a CPU is as fast for the MLP and ~7x faster for the CNN (netspec.protocol.backend.compiles).
    compile_error is never set: a jitted scan has no fallback (a failure to compile it is an error)."""

    backend_name = "jax"

    def __init__(self, network: Network, weights: Weights, seed: int, device: jax.Device, device_name: str,
                 precision: Precision, compiled: Compile = "auto") -> None:
        super().__init__(network, precision, device_name, compiles(compiled, device.platform != "cpu"), seed)
        self._device = device
        self._chunk_rows: Optional[int] = None
        """Steps per scan, fixed by warmup or the first train_steps call: one compiled program per run
        (a call's rows are cut into chunks of this length, the last padded with rows that are skipped)."""
        check_builders(tuple(network.layers))
        self._module = self._build_module(_MATMUL_PRECISION[self.precision], jnp.bfloat16 if self.precision == "bf16" else None)
        self._state = TrainState({}, {}, None)
        self._dropout_layers = tuple(i for i, layer in enumerate(network.layers)
                                     if isinstance(layer, (Dropout, Dropout2d)) and layer.p > 0)
        """The spec indices of the layers that take a key in training."""
        self.set_weights(weights)
        self._forward_eval = jax.jit(self._forward_eval_fn)
        self._forward_train = jax.jit(self._forward_train_fn)
        self._loss_and_grads_jit = jax.jit(self._loss_and_grads_fn)
        self._eval_step = jax.jit(self._eval_step_fn, static_argnames=("batch_size", "flip"), donate_argnums=0)
        self._train_step = None  # built by setup_optimizer: it closes over the optimizer's settings
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
             keys: Optional[jax.Array]) -> tuple[jax.Array, Any]:
        """Logits and the running statistics after this pass, for NHWC (or flat) x; keys: the step's
        dropout key of every layer (uint32, by spec index), for a training pass."""
        variables = {"params": params, "batch_stats": stats}
        if not train:  # logits in the input's dtype: bf16 compute keeps the loss in float32
            return self._module.apply(variables, x, False).astype(x.dtype), stats
        variables[DROPOUT_KEYS] = {str(i): {"key": keys[i]} for i in self._dropout_layers}
        logits, updated = self._module.apply(variables, x, True, mutable=["batch_stats"])
        return logits.astype(x.dtype), updated.get("batch_stats", stats)

    def _loss(self, params: Any, stats: Any, x: jax.Array, y: jax.Array,
              keys: jax.Array, smoothing: float = 0.0) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, stats = self._run(params, stats, x, True, keys)
        return recipe.cross_entropy(logits, y, smoothing), (logits, stats)

    def _forward_eval_fn(self, params: Any, stats: Any, x: jax.Array) -> jax.Array:
        TRACES["forward_eval"] += 1
        return _nchw(self._run(params, stats, _nhwc(x), False, None)[0])

    def _forward_train_fn(self, params: Any, stats: Any, x: jax.Array, keys: jax.Array) -> tuple[jax.Array, Any]:
        TRACES["forward_train"] += 1
        logits, stats = self._run(params, stats, _nhwc(x), True, keys)
        return _nchw(logits), stats

    def _loss_and_grads_fn(self, params: Any, stats: Any, x: jax.Array, y: jax.Array,
                           keys: jax.Array) -> tuple[jax.Array, Any]:
        TRACES["loss_and_grads"] += 1
        (loss, _), grads = jax.value_and_grad(self._loss, has_aux=True)(params, stats, _nhwc(x), y, keys)
        return loss, grads

    def _train_step_fn(self, optimizer: recipe.Optimizer, state: TrainState, sums: jax.Array,
                       x_all: jax.Array, y_all: jax.Array, idx: jax.Array, lr: jax.Array, keys: jax.Array,
                       plan: Optional[jax.Array] = None) -> tuple[TrainState, jax.Array]:
        """One optimizer step on the batch x_all[idx] (augmented by `plan` when given) with the step's
        dropout keys; adds (loss, number correct) to `sums` (counts stay exact in float32). lr is traced,
        so a new learning rate reuses the compiled step."""
        TRACES["train_step"] += 1
        x = x_all[idx] if plan is None else recipe.augment(x_all, idx, plan, optimizer.config.augment)
        y = y_all[idx]
        loss_fn = partial(self._loss, smoothing=optimizer.config.label_smoothing)
        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.batch_stats, x, y, keys)
        # lr is applied by the optimizer's own step rather than inside optax so that it stays traced.
        params, opt_state = optimizer.step(state.params, grads, state.opt_state, lr)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y).astype(loss.dtype)
        return TrainState(params, stats, opt_state), sums + jnp.stack([loss, correct])

    def _train_chunk_fn(self, optimizer: recipe.Optimizer, state: TrainState, sums: jax.Array,
                        x_all: jax.Array, y_all: jax.Array, rows: jax.Array, valid: jax.Array,
                        lrs: jax.Array, keys: jax.Array, plans: Optional[jax.Array] = None) -> tuple[TrainState, jax.Array]:
        """The steps of `rows` (chunk_rows, batch) as one scan, step i at learning rate lrs[i] with the
        dropout keys keys[i] (on images augmented by plans[i] when given); a row whose `valid` is False
        (padding of a short call) is skipped (a cond: no step), so one program serves every call."""
        TRACES["train_chunk"] += 1

        def body(carry: tuple[TrainState, jax.Array], row: tuple[jax.Array, ...]) -> tuple[tuple[TrainState, jax.Array], None]:
            idx, ok, lr, step_keys, plan = row
            step = lambda c: self._train_step_fn(optimizer, c[0], c[1], x_all, y_all, idx, lr, step_keys, plan)
            return jax.lax.cond(ok, step, lambda c: c, carry), None

        (state, sums), _ = jax.lax.scan(body, (state, sums), (rows, valid, lrs, keys, plans))
        return state, sums

    def _eval_step_fn(self, sums: jax.Array, params: Any, stats: Any, x_all: jax.Array, y_all: jax.Array,
                      start: jax.Array, batch_size: int, flip: bool = False) -> jax.Array:
        """Adds (sum of losses, number correct) of the batch at `start` to `sums`. The batch shape is
        fixed: past the end, indices repeat the last example and are masked out, so a short last
        batch does not trace a second program. flip: the logits are the mean of those of the images
        and of their mirror images (NHWC: the W axis is 2)."""
        TRACES["eval_step"] += 1
        idx = start + jnp.arange(batch_size)
        valid = (idx < x_all.shape[0]).astype(x_all.dtype)
        idx = jnp.minimum(idx, x_all.shape[0] - 1)
        logits, _ = self._run(params, stats, x_all[idx], False, None)
        if flip:
            logits = (logits + self._run(params, stats, jnp.flip(x_all[idx], axis=2), False, None)[0]) / 2
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
        logits, stats = self._forward_train(s.params, s.batch_stats, x, self.dropout_keys(1)[0])
        self._state = s._replace(batch_stats=stats)
        return np.asarray(logits)

    def _loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        s = self._state
        loss, grads = self._loss_and_grads_jit(s.params, s.batch_stats, x, y.astype(np.int32),  # labels < classes: int32 is exact
                                               self.dropout_keys(1, advance=False)[0])
        return float(loss), convert.to_canonical(self.network, {"params": grads}, trainable_only=True)

    def _get_weights(self) -> Weights:
        s = self._state
        return convert.to_canonical(self.network, {"params": s.params, "batch_stats": s.batch_stats})

    def _set_weights(self, weights: Weights) -> None:
        variables = jax.device_put(convert.to_flax(self.network, weights, np.dtype(self.float_dtype).type), self._device)
        self._state = self._state._replace(params=variables["params"], batch_stats=variables["batch_stats"])

    # ---- training state: the optimizer's state as plain arrays (the dropout stream is ModelBase's) ----

    def _optimizer_state(self) -> OptimizerState:
        """optax's ScaleByAdamState (Adam, AdamW) or the SGD momentum buffer, by canonical name."""
        opt, kind = self._state.opt_state, self.optimizer_config.optimizer.type
        canonical = lambda tree: convert.to_canonical(self.network, {"params": tree}, trainable_only=True)
        if kind == "sgd":
            slots = {"momentum_buffer": canonical(opt.momentum_buffer)} if opt.momentum_buffer is not None else {}
            return OptimizerState(kind, slots, 0)
        return OptimizerState(kind, {"exp_avg": canonical(opt.mu), "exp_avg_sq": canonical(opt.nu)}, int(opt.count))

    def _set_optimizer_state(self, state: OptimizerState) -> None:
        if state.kind == "sgd":
            buffer = state.slots.get("momentum_buffer")
            opt_state: Any = recipe.SgdState(None if buffer is None else self._params_tree(buffer))
        else:
            opt_state = optax.ScaleByAdamState(count=np.asarray(state.step, np.int32), mu=self._params_tree(state.slots["exp_avg"]),
                                               nu=self._params_tree(state.slots["exp_avg_sq"]))
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

    def _rules_tree(self, config: TrainConfig) -> Any:
        """Every trainable tensor's weight decay and lr multiplier (netspec.protocol.param_groups), as a tree like
        the params."""
        rules = tensor_rules(self.network, config)
        tree: dict[str, dict[str, Any]] = {}
        for name, slot in convert.slots(self.network).items():
            if slot.collection == "params":
                tree.setdefault(slot.layer, {})[slot.leaf] = rules[name]
        return tree

    def _setup_optimizer(self, config: TrainConfig) -> None:
        optimizer = recipe.Optimizer(config, self._rules_tree(config))
        self._state = self._state._replace(opt_state=jax.device_put(optimizer.init(self._state.params), self._device))
        self._train_step = jax.jit(partial(self._train_step_fn, optimizer), donate_argnums=(0, 1))
        self._train_chunk = jax.jit(partial(self._train_chunk_fn, optimizer), donate_argnums=(0, 1))
        self._program = None

    def _chunk_args(self, rows: np.ndarray, lrs: np.ndarray, keys: np.ndarray, plans: Optional[np.ndarray]) -> list[tuple[Any, ...]]:
        """(rows, valid, lrs, keys, plans) device arrays for each scan of a call: chunks of _chunk_rows, the
        last padded (plans None without augmentation)."""
        length = self._chunk_rows
        out = []
        for start in range(0, len(rows), length):
            parts = [a[start:start + length] if a is not None else None for a in (rows, lrs, keys, plans)]
            count = len(parts[0])
            valid = np.arange(length) < count
            if count < length:
                parts = [None if a is None else np.concatenate([a, np.zeros((length - count, *a.shape[1:]), a.dtype)])
                         for a in parts]
            part, part_lrs, part_keys, part_plans = parts
            out.append(tuple(None if a is None else jax.device_put(a, self._device)
                             for a in (part, valid, part_lrs, part_keys, part_plans)))
        return out

    def _warmup(self, data: JaxData, batch_size: int, rows: int) -> None:
        """Compile the training program ahead of time (jit's lower and compile: nothing runs, the state
        is untouched), so that no epoch pays for it: the scan for calls of `rows` rows of `batch_size`
        when compiled, else the one-batch step."""
        shape, dtype = jax.ShapeDtypeStruct, np.dtype(self.float_dtype)
        head = (self._state, shape((2,), dtype), data.x, data.y)
        augmented = self.optimizer_config.augment.active
        layers = len(self.network.layers)
        if self.compiled:
            self._chunk_rows = self._chunk_rows or max(1, int(rows))
            plans = shape((self._chunk_rows, batch_size, 5), np.int32) if augmented else None
            args = head + (shape((self._chunk_rows, batch_size), np.int32), shape((self._chunk_rows,), np.bool_),
                           shape((self._chunk_rows,), dtype), shape((self._chunk_rows, layers), np.uint32), plans)
            self._program = ((batch_size, augmented), self._train_chunk.lower(*args).compile())
        else:
            plan = shape((batch_size, 5), np.int32) if augmented else None
            program = self._train_step.lower(*head, shape((batch_size,), np.int32), shape((), dtype),
                                             shape((layers,), np.uint32), plan).compile()
            self._program = ((batch_size, augmented), program)

    def _run_steps(self, data: JaxData, rows: np.ndarray, lrs: np.ndarray, plans: Optional[np.ndarray]) -> jax.Array:
        """The optimizer steps of train_steps (step i at learning rate lrs[i]; on the images
        augmented by plans[i] when given), with the sums left on the device: only explicit transfers to
        the device here (tests run it under jax.transfer_guard('disallow'))."""
        rows = np.asarray(rows, np.int32)
        lrs = np.asarray(lrs, self.float_dtype)
        sums = jax.device_put(np.zeros(2, self.float_dtype), self._device)
        warm = self._program is not None and self._program[0] == (rows.shape[1], plans is not None)
        keys = self.dropout_keys(len(rows))
        if self.compiled:
            self._chunk_rows = self._chunk_rows or max(1, len(rows))
            program = self._program[1] if warm else self._train_chunk
            for part, valid, part_lrs, part_keys, part_plans in self._chunk_args(rows, lrs, keys, plans):
                # The old state's buffers are donated: keep self._state pointing at live ones.
                self._state, sums = program(self._state, sums, data.x, data.y, part, valid, part_lrs, part_keys, part_plans)
        else:
            program = self._program[1] if warm else self._train_step
            # One lr on the device per distinct value in a row of equal ones: a constant lr is one transfer.
            changes = np.flatnonzero(np.r_[True, lrs[1:] != lrs[:-1]]) if len(lrs) else []
            lr_at = {int(i): jax.device_put(np.asarray(lrs[i]), self._device) for i in changes}
            lr_device = None
            # Iterating a device array slices it on the device; indexing it with a Python int would send the
            # index from the host (a transfer per step).
            step_plans = jax.device_put(plans, self._device) if plans is not None else [None] * len(rows)
            step_keys = jax.device_put(keys, self._device)
            for step, (row, key, plan) in enumerate(zip(jax.device_put(rows, self._device), step_keys, step_plans)):
                lr_device = lr_at.get(step, lr_device)
                self._state, sums = program(self._state, sums, data.x, data.y, row, lr_device, key, plan)
        return sums

    def _read_back(self, sums: jax.Array) -> tuple[float, float]:
        loss_sum, correct = np.asarray(sums)
        return float(loss_sum), float(correct)

    def _evaluate(self, data: JaxData, batch_size: int, flip: bool) -> jax.Array:
        sums = jax.device_put(np.zeros(2, self.float_dtype), self._device)
        s = self._state
        for start in range(0, data.num_examples, batch_size):
            sums = self._eval_step(sums, s.params, s.batch_stats, data.x, data.y, np.int32(start), batch_size=batch_size,
                                   flip=flip)
        return sums
