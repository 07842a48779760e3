"""The one implementation of what the Model protocol promises that is not framework code.

Both backends' models subclass `ModelBase`: the checks of inputs, labels and batch matrices, every error
a caller can get (the same text in every backend, because it is written once, here), the
no-optimizer rule, the empty-split rule, the one read-back of `train_steps` and `evaluate`, the
training state as plain arrays, the per-model precision scope and a default `warmup`. A backend's
model keeps only its tensors and its steps: the `_`-prefixed hooks below, which receive checked numpy
and return device values that this class reads back once.

    public method (here)          hook (the backend)
    forward(x, train)             _forward(x, train) -> numpy
    loss_and_grads(x, y)          _loss_and_grads(x, y) -> (float, canonical grads)
    get_weights / set_weights     _get_weights() / _set_weights(checked)
    to_device(x, y)               _to_device(x, y) -> DeviceData
    setup_optimizer(config)       _setup_optimizer(config)
    training state                _optimizer_state() / _set_optimizer_state(state); the dropout stream is kept here
    train_steps(data, rows, lr)   _run_steps(data, rows, lrs, plans) -> device sums (loss, number correct)
    evaluate(data, batch_size)    _evaluate(data, batch_size, flip) -> device sums (loss, number correct)
    warmup(data, batch_size, n)   _warmup(data, batch_size, rows) (default: nothing to compile)
    every call                    _scope(): the model's precision set on entry, restored after

A backend's override of a hook keeps the hook's signature here (the same parameter names, order and
defaults; tests/protocol/test_hook_signatures.py checks it): what it needs besides goes into a private
helper of its own name.

numpy only: the core never imports a framework (docs/design.md).
"""
from __future__ import annotations

import contextlib
from functools import wraps
from typing import Any, Callable, ContextManager, Optional, Sequence, TypeVar

import numpy as np

from netspec.protocol.backend import DeviceData, canonical_precision
from netspec.protocol.counter_hash import dropout_keys
from netspec.errors import SpecError
from netspec.spec.experiment import TrainConfig
from netspec.spec.network import Network
from netspec.protocol.augment import Draws, packed
from netspec.protocol.optimizer_state import DamagedState, OptimizerState, from_arrays as optimizer_from_arrays, to_arrays as optimizer_arrays
from netspec.spec.params import Weights, check_weights

# ---- a model's training state as plain arrays ------------------------------------------------------

DROPOUT_RNG = "rng.dropout"
"""The dropout stream's name in a training state besides the canonical weights and the optimizer's state
(netspec.protocol.optimizer_state names it: 'adam.exp_avg.<name>', 'sgd.momentum_buffer.<name>', ...). It holds
int64 [seed, step], framework-neutral (counter_hash's masks of a step are a function of these two), so
a state of one backend continues on the other."""
OLD_RNG = ("holds a framework's own RNG bytes (a checkpoint of netspec before the shared dropout stream), "
           "which no backend continues with the same masks")


def check_stream(rng: Any) -> tuple[int, int]:
    """(seed, step) of a training state's DROPOUT_RNG; a SpecError line for anything else (an older
    checkpoint's framework bytes, a negative step)."""
    rng = np.asarray(rng)
    if rng.shape != (2,) or rng.dtype != np.int64:
        raise SpecError(f"training state's {DROPOUT_RNG!r} {OLD_RNG}")
    seed, step = (int(v) for v in rng)
    if step < 0:
        raise SpecError(f"training state's {DROPOUT_RNG!r} has step {step}; a count of training passes is >= 0")
    return seed, step


def finite_numbers(value: Any) -> bool:
    """A tensor of a state: finite floats, or integers (a BatchNorm's num_batches_tracked)."""
    value = np.asarray(value)
    return value.dtype.kind in "iu" or (value.dtype.kind == "f" and bool(np.isfinite(value).all()))


def pack_training_state(weights: Weights, optimizer: Optional[OptimizerState], rng: tuple[int, int]) -> dict[str, np.ndarray]:
    """The flat dict get_training_state returns (its pieces already canonical)."""
    state = {name: np.array(value) for name, value in weights.items()}
    if optimizer is not None:
        state.update(optimizer_arrays(optimizer))
    state[DROPOUT_RNG] = np.array(rng, np.int64)
    return state


def unpack_training_state(network: Network, state: dict[str, np.ndarray]) -> tuple[Weights, Optional[OptimizerState], tuple[int, int]]:
    """Split a training state into weights, the optimizer's state (None when it has none) and the dropout
    stream (seed, step); a missing tensor is a SpecError naming it (a checkpoint of another network, or a damaged one)."""
    infos = network.param_infos()
    missing = [n for n in [*infos, DROPOUT_RNG] if n not in state]
    if missing:
        raise SpecError(f"training state lacks {missing[0]!r} ({len(missing)} missing); it is not a state of this network")
    weights = {name: state[name] for name in infos}
    for name, value in weights.items():  # a NaN weight is a damaged state, not a run to go on with
        if not finite_numbers(value):
            raise DamagedState(f"training state's {name!r} is not finite numbers")
    trainable = [n for n, info in infos.items() if info.trainable]
    return weights, optimizer_from_arrays(state, trainable), check_stream(state[DROPOUT_RNG])


# ---- what a model accepts ------------------------------------------------------------------------------

def check_inputs(network: Network, x: Any, dtype: str = "float32") -> np.ndarray:
    """x as an array of `dtype` shaped (N, *network.input_shape); ValueError otherwise."""
    x = np.asarray(x, dtype=dtype)
    expected = tuple(network.input_shape)
    if x.ndim != len(expected) + 1 or x.shape[1:] != expected:
        raise ValueError(f"input of shape {x.shape} does not fit the network: it takes (N, {', '.join(map(str, expected))})")
    return x


def check_labels(network: Network, y: Any, count: int) -> np.ndarray:
    """y as `count` integer class indices in [0, classes), classes = network.output_shape[0]."""
    y = np.asarray(y)
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {count} integers (one per input), got an array of shape {y.shape} and dtype {y.dtype}")
    classes = network.output_shape[0]
    if count and (y.min() < 0 or y.max() >= classes):
        bad = y[(y < 0) | (y >= classes)][0]
        raise ValueError(f"label {bad} is outside [0, {classes}): the network has {classes} outputs")
    return y


def check_batches(batches: Any, num_examples: int) -> np.ndarray:
    """A (steps, batch_size) integer matrix of indices into a split of `num_examples`."""
    batches = np.asarray(batches)
    if batches.ndim != 2 or not np.issubdtype(batches.dtype, np.integer):
        raise ValueError(f"batches must be a (steps, batch_size) integer matrix, got shape {batches.shape} and dtype {batches.dtype}")
    if batches.size and (batches.min() < 0 or batches.max() >= num_examples):
        raise ValueError(f"batch indices must be in [0, {num_examples}) (the split's size), "
                         f"got {batches.min()}..{batches.max()}")
    return batches


def step_lrs(lr: Any, steps: int) -> np.ndarray:
    """The learning rate of each of `steps` steps as a float64 array: a number is every step's, an array
    gives one per step (a per-step schedule). ValueError for any other shape or a non-finite value."""
    lrs = np.asarray(lr, dtype=np.float64)
    if lrs.ndim == 0:
        lrs = np.full(steps, float(lrs))
    if lrs.shape != (steps,):
        raise ValueError(f"lr must be a number or one per step ({steps}), got an array of shape {lrs.shape}")
    if not np.isfinite(lrs).all():
        raise ValueError("lr must be finite")
    return lrs


def check_draws(network: Network, draws: Draws, rows_shape: tuple[int, ...]) -> np.ndarray:
    """Augmentation draws for a (steps, batch_size) matrix of images of the network's input, packed as
    the backends take them (netspec.protocol.augment.packed); ValueError otherwise."""
    shape = tuple(network.input_shape)
    if len(shape) != 3:
        raise ValueError(f"augmentation needs images (C, H, W), the network takes {shape}")
    plans = packed(draws)
    if plans.shape[:-1] != tuple(rows_shape):
        raise ValueError(f"augmentation draws of shape {plans.shape[:-1]} for batches of shape {tuple(rows_shape)}")
    return plans


NO_OPTIMIZER = "{what} needs an optimizer: call setup_optimizer(config) first"
EMPTY_SPLIT = "evaluate got an empty split"

Method = TypeVar("Method", bound=Callable[..., Any])


def scoped(method: Method) -> Method:
    """Runs a public method inside the model's precision scope (ModelBase._scope)."""
    @wraps(method)
    def wrapper(self: "ModelBase", *args: Any, **kwargs: Any) -> Any:
        with self._scope():
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class ModelBase:
    """A compiled network with its parameters, running statistics, optimizer state and dropout stream:
    netspec.protocol.backend.Model, less the framework. The docstrings here are the one statement of what
    each method promises on every backend (the Protocol points here); the module docstring lists the hooks
    a backend fills. Arrays cross as numpy (NCHW images, canonical weights in PyTorch's state_dict names
    and layouts).

    Every public method runs inside `_scope()`, where a backend sets its process-wide precision
    switches for this model and restores them after (torch's TF32 flags, jax's x64 mode), so several
    models of different precisions live in one process."""

    backend_name = "?"
    """The backend's registry name, for messages."""

    def __init__(self, network: Network, precision: str, device: str, compiled: bool, seed: int = 0) -> None:
        self.network = network
        """The network it computes."""
        self.stream = (int(seed), 0)
        """The dropout stream: (the run's seed, the count of training passes so far). A training pass at
        step s drops the units of counter_hash.keep_mask(seed, s, layer, ...) in every backend."""
        self.precision = canonical_precision(precision)
        """The canonical precision it computes in (netspec.protocol.backend.Precision)."""
        self.device = device
        """Where it runs, in words ('cpu', 'cuda:0 (NVIDIA H100)')."""
        self.compiled = compiled
        """Whether its training steps are compiled (torch.compile; jax: one jitted scan per chunk of steps)."""
        self.float_dtype = "float64" if self.precision == "float64" else "float32"
        """numpy name of the dtype of parameters, statistics, optimizer state and inputs."""
        self.compile_error: Optional[str] = None
        """Why its steps fell back to a less compiled form (a compiler's or a CUDA graph capture's failure,
        in one line), or None: a run records it beside `compiled`, as the run still trains."""
        self.optimizer_config: Optional[TrainConfig] = None
        """The config of setup_optimizer's last call; None before it."""

    # ---- hooks: a backend fills these ----

    def _scope(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray: raise NotImplementedError
    def _loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]: raise NotImplementedError
    def _get_weights(self) -> Weights: raise NotImplementedError
    def _set_weights(self, weights: Weights) -> None: raise NotImplementedError
    def _to_device(self, x: np.ndarray, y: np.ndarray) -> DeviceData: raise NotImplementedError
    def _setup_optimizer(self, config: TrainConfig) -> None: raise NotImplementedError
    def _optimizer_state(self) -> OptimizerState: raise NotImplementedError
    def _set_optimizer_state(self, state: OptimizerState) -> None: raise NotImplementedError
    def _run_steps(self, data: Any, rows: np.ndarray, lrs: np.ndarray, plans: Optional[np.ndarray]) -> Any: raise NotImplementedError
    def _evaluate(self, data: Any, batch_size: int, flip: bool) -> Any: raise NotImplementedError
    def _read_back(self, sums: Any) -> tuple[float, float]: raise NotImplementedError

    def _warmup(self, data: Any, batch_size: int, rows: int) -> None:
        """Nothing to compile ahead of time (an eager model)."""

    def dropout_keys(self, steps: int, advance: bool = True) -> np.ndarray:
        """The (steps, layers) uint32 keys of the next `steps` training passes (counter_hash.dropout_keys),
        one per spec layer; `advance` moves the stream past them (loss_and_grads does not)."""
        seed, step = self.stream
        if advance:
            self.stream = (seed, step + steps)
        return dropout_keys(seed, step, steps, len(self.network.layers))

    # ---- the protocol ----

    @scoped
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits for a numpy batch (N, *input_shape). train=True: batch statistics, dropout active,
        running statistics updated (as a training step's forward pass, without a parameter update)."""
        return self._forward(check_inputs(self.network, x, self.float_dtype), train)

    @scoped
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Train-mode mean cross-entropy and its gradient for every trainable tensor (canonical names
        and layouts). Changes nothing: no parameter update, no running statistics update, no RNG draw."""
        x = check_inputs(self.network, x, self.float_dtype)
        return self._loss_and_grads(x, check_labels(self.network, y, len(x)))

    @scoped
    def get_weights(self, finite: bool = True) -> Weights:
        """Parameters and running statistics as canonical numpy arrays: copies, in canonical order, names,
        layouts and dtypes (checked as any weights are); NaN or inf raise SpecError unless `finite=False`
        (for the cross-check of a run that overflowed)."""
        return check_weights(self.network, self._get_weights(), f"{self.backend_name} model", self.float_dtype, finite)

    @scoped
    def set_weights(self, weights: Weights) -> None:
        """Load canonical weights (checked against the network); get_weights gives them back exactly."""
        self._set_weights(check_weights(self.network, weights, float_dtype=self.float_dtype))

    @scoped
    def to_device(self, x: np.ndarray, y: np.ndarray) -> DeviceData:
        """Put a whole split on the device once: x (N, *input_shape) float32, y (N,) int in
        [0, classes). Bad shapes or labels raise ValueError."""
        x = check_inputs(self.network, x, self.float_dtype)
        return self._to_device(x, check_labels(self.network, y, len(x)))

    @scoped
    def setup_optimizer(self, config: TrainConfig) -> None:
        """Create fresh optimizer state for the current parameters: config.optimizer (adam, adamw or sgd,
        PyTorch's definitions) with config.param_groups' per-tensor weight decay and lr multipliers, and
        config.label_smoothing and config.augment for the training steps (netspec.protocol.param_groups,
        netspec.protocol.augment)."""
        self._setup_optimizer(config)
        self.optimizer_config = config

    @scoped
    def get_training_state(self) -> dict[str, np.ndarray]:
        """Everything training changes, as plain numpy arrays under canonical names (copies): the
        canonical weights, the optimizer's state once setup_optimizer ran (netspec.protocol.optimizer_state:
        'adam.exp_avg.<name>', 'adam.exp_avg_sq.<name>', 'adam.step'; 'adamw.*'; 'sgd.momentum_buffer.<name>'),
        and the dropout stream (DROPOUT_RNG: int64 [seed, step], the same for every backend, so a state
        continues on another backend)."""
        optimizer = self._optimizer_state() if self.optimizer_config is not None else None
        return pack_training_state(self.get_weights(), optimizer, self.stream)

    @scoped
    def set_training_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what get_training_state returned (call setup_optimizer first when it holds optimizer
        state): training on from here is bit-identical to training on without the round trip. A state
        of another network or optimizer is a SpecError naming what does not fit."""
        weights, optimizer, rng = unpack_training_state(self.network, state)
        if optimizer is not None and self.optimizer_config is None:
            raise RuntimeError(NO_OPTIMIZER.format(what="set_training_state with optimizer state"))
        if optimizer is not None and optimizer.kind != self.optimizer_config.optimizer.type:
            raise SpecError(f"training state of a {optimizer.kind} optimizer, but the model trains with "
                            f"{self.optimizer_config.optimizer.type}; it is not a state of this run")
        self.set_weights(weights)
        self.stream = rng
        if optimizer is not None:
            self._set_optimizer_state(optimizer)

    @scoped
    def warmup(self, data: DeviceData, batch_size: int, rows: int = 1) -> None:
        """Compile the training step for calls of train_steps with `rows` rows of `batch_size` (the
        trainer's), leaving the model's state as it was; the trainer times it as the run's
        compile_seconds, so epoch times never include compilation. Nothing for an eager model, or
        before setup_optimizer."""
        if self.optimizer_config is not None:
            self._warmup(data, batch_size, rows)

    @scoped
    def train_steps(self, data: DeviceData, batches: np.ndarray, lr: float | Sequence[float] | np.ndarray,
                    augment: Optional[Draws] = None) -> tuple[float, float]:
        """One optimizer step per row of `batches` (int indices into `data`, shape (steps, batch_size)),
        at learning rate `lr` (a number, or one per step), on the images augmented by `augment`
        (netspec.protocol.augment.Draws of the shape of `batches`, applied on the device bit-identically to
        netspec.protocol.augment's reference) when given. Returns the sums over those steps of the batch mean
        loss and of the batch accuracy, read back once at the end (no host synchronisation per step).
        Changing `lr` or the draws must not recompile. Before setup_optimizer: RuntimeError."""
        if self.optimizer_config is None:
            raise RuntimeError(NO_OPTIMIZER.format(what="train_steps"))
        rows = check_batches(batches, data.num_examples)
        lrs = step_lrs(lr, len(rows))
        plans = None if augment is None else check_draws(self.network, augment, rows.shape)
        loss_sum, correct = self._read_back(self._run_steps(data, rows, lrs, plans))  # the one host read
        return loss_sum, correct / max(rows.shape[1], 1)

    @scoped
    def evaluate(self, data: DeviceData, batch_size: int, flip: bool = False) -> tuple[float, float]:
        """Eval-mode mean loss and accuracy over the whole split, in batches of `batch_size`
        (any split size: the last batch may be short); flip: on the mean of the logits of each image
        and its horizontal mirror image (flip test-time augmentation). An empty split: ValueError."""
        count = data.num_examples
        if count == 0:
            raise ValueError(EMPTY_SPLIT)
        if flip and len(self.network.input_shape) != 3:
            raise ValueError(f"flip test-time augmentation needs images (C, H, W), the network takes {tuple(self.network.input_shape)}")
        loss_sum, correct = self._read_back(self._evaluate(data, min(batch_size, count), flip))
        return loss_sum / count, correct / count
