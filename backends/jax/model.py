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
from functools import partial, wraps
from typing import Any, Callable, NamedTuple, Optional, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from netspec.backend import (AdamMoments, Compile, Precision, canonical_precision, check_batches, check_inputs,
                             check_labels, compiles, pack_training_state, unpack_training_state)
from netspec.experiment import TrainConfig
from netspec.network import Network
from netspec.params import Weights, check_weights

from . import convert
from .builders import SpecNet

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


Method = TypeVar("Method", bound=Callable[..., Any])


def _scoped_x64(method: Method) -> Method:
    """Runs a JaxModel method with jax's 64-bit mode on if the model is float64. x64 is process-wide
    configuration in jax, so a float64 model turns it on for its own calls only (jit caches per
    setting) and every other model in the process stays float32."""
    @wraps(method)
    def wrapper(self: "JaxModel", *args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True) if self.float_dtype == "float64" else contextlib.nullcontext():
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _nhwc(x: jax.Array) -> jax.Array:
    """NCHW images -> NHWC (the layout XLA's convs prefer); flat (N, F) input unchanged."""
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def _nchw(y: jax.Array) -> jax.Array:
    """A network output back in PyTorch's layout (only a network that ends on images needs it)."""
    return jnp.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y


class JaxModel:
    """A network compiled to Flax (netspec.backend.Model). Built by JaxBackend.compile, which resolves
    the device."""

    def __init__(self, network: Network, weights: Weights, seed: int, device: jax.Device, device_name: str,
                 precision: Precision, compiled: Compile = "auto") -> None:
        self.precision = canonical_precision(precision)
        self.network = network
        self.device = device_name
        self._device = device
        self.float_dtype = "float64" if self.precision == "float64" else "float32"
        """numpy name of the dtype of parameters, statistics, Adam state and inputs."""
        self.compiled = compiles(compiled, device.platform != "cpu")
        """Compiled ('on', or 'auto' on a GPU): the steps of a train_steps call run as jitted scans of
        `_chunk_rows` steps (one dispatch per chunk); otherwise one jitted step per row (one dispatch per
        step), which on a CPU is as fast for the MLP and ~7x faster for the CNN (netspec.backend.compiles)."""
        self.compile_error: Optional[str] = None
        """Never set: a jitted scan has no fallback (a failure to compile it is an error)."""
        self._chunk_rows: Optional[int] = None
        """Steps per scan, fixed by warmup or the first train_steps call: one compiled program per run
        (a call's rows are cut into chunks of this length, the last padded with rows that are skipped)."""
        self._module = self._build_module(_MATMUL_PRECISION[self.precision], jnp.bfloat16 if self.precision == "bf16" else None)
        self._state = TrainState({}, {}, None, jax.device_put(jax.random.key(seed), device))
        self.set_weights(weights)
        self._forward_eval = jax.jit(self._forward_eval_fn)
        self._forward_train = jax.jit(self._forward_train_fn)
        self._loss_and_grads = jax.jit(self._loss_and_grads_fn)
        self._eval_step = jax.jit(self._eval_step_fn, static_argnames="batch_size", donate_argnums=0)
        self._train_step = None  # built by setup_optimizer: it closes over the Adam settings
        self._train_chunk = None
        self._program: Any = None
        """(batch size, the program compiled ahead of time by warmup for it): the chunk's scan when
        compiled, else the single step; None before warmup."""

    def _build_module(self, precision: Optional[jax.lax.Precision], dtype: Any = None) -> nn.Module:
        """The Flax module run by every step (benchmarks swap in one of Flax's built-in layers)."""
        return SpecNet(tuple(self.network.layers), precision, dtype)

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
                        lr: jax.Array) -> tuple[TrainState, jax.Array]:
        """The steps of `rows` (chunk_rows, batch) as one scan; a row whose `valid` is False (padding of
        a short call) is skipped (a cond: no step, no RNG draw), so one program serves every call."""
        TRACES["train_chunk"] += 1

        def body(carry: tuple[TrainState, jax.Array], row: tuple[jax.Array, jax.Array]) -> tuple[tuple[TrainState, jax.Array], None]:
            idx, ok = row
            step = lambda c: self._train_step_fn(adam, c[0], c[1], x_all, y_all, idx, lr)
            return jax.lax.cond(ok, step, lambda c: c, carry), None

        (state, sums), _ = jax.lax.scan(body, (state, sums), (rows, valid))
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

    # ---- the protocol ----

    # Input validation, in one place: the checks and messages of netspec.backend, as in every backend.

    def _batch(self, x: np.ndarray) -> np.ndarray:
        return check_inputs(self.network, x, self.float_dtype)

    def _labels(self, y: np.ndarray, count: int) -> np.ndarray:
        return check_labels(self.network, y, count).astype(np.int32)  # labels < classes: int32 is exact

    @_scoped_x64
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        s = self._state
        if not train:
            return np.asarray(self._forward_eval(s.params, s.batch_stats, self._batch(x)))
        key, sub = jax.random.split(s.key)
        logits, stats = self._forward_train(s.params, s.batch_stats, self._batch(x), sub)
        self._state = s._replace(batch_stats=stats, key=key)
        return np.asarray(logits)

    @_scoped_x64
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        s = self._state
        x = self._batch(x)
        loss, grads = self._loss_and_grads(s.params, s.batch_stats, x, self._labels(y, len(x)),
                                           jax.random.split(s.key)[1])  # the state's key is not advanced
        return float(loss), convert.to_canonical(self.network, {"params": grads}, trainable_only=True)

    @_scoped_x64
    def get_weights(self) -> Weights:
        s = self._state
        return convert.to_canonical(self.network, {"params": s.params, "batch_stats": s.batch_stats})

    @_scoped_x64
    def set_weights(self, weights: Weights) -> None:
        variables = jax.device_put(convert.to_flax(self.network, check_weights(self.network, weights, float_dtype=self.float_dtype),
                                                   np.dtype(self.float_dtype).type), self._device)
        self._state = self._state._replace(params=variables["params"], batch_stats=variables["batch_stats"])

    # ---- training state: weights, optax's ScaleByAdamState and the dropout key, as plain arrays ----

    @_scoped_x64
    def get_training_state(self) -> dict[str, np.ndarray]:
        s = self._state
        adam = None
        if s.opt_state is not None:
            moments = [convert.to_canonical(self.network, {"params": tree}, trainable_only=True) for tree in (s.opt_state.mu, s.opt_state.nu)]
            adam = AdamMoments(moments[0], moments[1], int(s.opt_state.count))
        return pack_training_state(self.get_weights(), adam, np.asarray(jax.random.key_data(s.key)))

    @_scoped_x64
    def set_training_state(self, state: dict[str, np.ndarray]) -> None:
        weights, adam, rng = unpack_training_state(self.network, state)
        self.set_weights(weights)
        key = jax.device_put(jax.random.wrap_key_data(np.asarray(rng, np.uint32)), self._device)
        self._state = self._state._replace(key=key)
        if adam is None:
            return
        if self._state.opt_state is None:
            raise RuntimeError("set_training_state with Adam state needs setup_optimizer(config) first")
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

    @_scoped_x64
    def to_device(self, x: np.ndarray, y: np.ndarray) -> JaxData:
        x = self._batch(x)
        y = self._labels(y, len(x))
        return JaxData(_nhwc(jax.device_put(x, self._device)), jax.device_put(y, self._device), len(y))

    @_scoped_x64
    def setup_optimizer(self, config: TrainConfig) -> None:
        b1, b2 = config.optimizer.betas
        adam = optax.scale_by_adam(b1=b1, b2=b2, eps=config.optimizer.eps, eps_root=0.0)
        self._state = self._state._replace(opt_state=jax.device_put(adam.init(self._state.params), self._device))
        self._train_step = jax.jit(partial(self._train_step_fn, adam), donate_argnums=(0, 1))
        self._train_chunk = jax.jit(partial(self._train_chunk_fn, adam), donate_argnums=(0, 1))
        self._program = None

    def _chunk_args(self, data: JaxData, rows: np.ndarray, lr: float) -> list[tuple[Any, ...]]:
        """(rows, valid) device arrays for each scan of a call: chunks of _chunk_rows, the last padded."""
        length = self._chunk_rows
        out = []
        for start in range(0, len(rows), length):
            part = rows[start:start + length]
            valid = np.arange(length) < len(part)
            if len(part) < length:
                part = np.concatenate([part, np.zeros((length - len(part), rows.shape[1]), part.dtype)])
            out.append((jax.device_put(part, self._device), jax.device_put(valid, self._device)))
        return out

    @_scoped_x64
    def warmup(self, data: JaxData, batch_size: int, rows: int = 1) -> None:
        """Compile the training program ahead of time (jit's lower and compile: nothing runs, the state
        is untouched), so that no epoch pays for it: the scan for calls of `rows` rows of `batch_size`
        when compiled, else the one-batch step."""
        if self._train_step is None:
            return
        shape, dtype = jax.ShapeDtypeStruct, np.dtype(self.float_dtype)
        head = (self._state, shape((2,), dtype), data.x, data.y)
        if self.compiled:
            self._chunk_rows = self._chunk_rows or max(1, int(rows))
            args = head + (shape((self._chunk_rows, batch_size), np.int32), shape((self._chunk_rows,), np.bool_), shape((), dtype))
            self._program = (batch_size, self._train_chunk.lower(*args).compile())
        else:
            self._program = (batch_size, self._train_step.lower(*head, shape((batch_size,), np.int32), shape((), dtype)).compile())

    @_scoped_x64
    def train_steps(self, data: JaxData, batches: np.ndarray, lr: float) -> tuple[float, float]:
        if self._train_step is None:
            raise RuntimeError("call setup_optimizer(config) before train_steps")
        rows = check_batches(batches, data.num_examples).astype(np.int32)
        sums = self._steps(data, rows, lr)
        loss_sum, correct = np.asarray(sums)  # the one host read of the call
        return float(loss_sum), float(correct) / max(rows.shape[1], 1)

    def _steps(self, data: JaxData, rows: np.ndarray, lr: float) -> jax.Array:
        """The optimizer steps of train_steps, with the sums left on the device: only explicit
        transfers to the device here (tests run it under jax.transfer_guard('disallow'))."""
        lr_device = jax.device_put(np.asarray(lr, self.float_dtype), self._device)
        sums = jax.device_put(np.zeros(2, self.float_dtype), self._device)
        warm = self._program is not None and self._program[0] == rows.shape[1]
        if self.compiled:
            self._chunk_rows = self._chunk_rows or max(1, len(rows))
            program = self._program[1] if warm else self._train_chunk
            for part, valid in self._chunk_args(data, rows, lr):
                # The old state's buffers are donated: keep self._state pointing at live ones.
                self._state, sums = program(self._state, sums, data.x, data.y, part, valid, lr_device)
        else:
            program = self._program[1] if warm else self._train_step
            for row in jax.device_put(rows, self._device):
                self._state, sums = program(self._state, sums, data.x, data.y, row, lr_device)
        return sums

    @_scoped_x64
    def evaluate(self, data: JaxData, batch_size: int) -> tuple[float, float]:
        n = data.num_examples
        if n == 0:
            raise ValueError("evaluate got an empty split")
        batch_size = min(batch_size, n)
        sums = jax.device_put(np.zeros(2, self.float_dtype), self._device)
        s = self._state
        for start in range(0, n, batch_size):
            sums = self._eval_step(sums, s.params, s.batch_stats, data.x, data.y, np.int32(start), batch_size=batch_size)
        loss_sum, correct = np.asarray(sums)
        return float(loss_sum) / n, float(correct) / n
