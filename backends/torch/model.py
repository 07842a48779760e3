"""The compiled torch model (netspec.protocol.model_base.ModelBase's hooks): the network's module (an nn.Sequential
for a chain, a Graph otherwise), its torch.optim optimizer and its dropout keys."""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from netspec.protocol.backend import Compile, Precision, canonical_precision, compiles
from netspec.spec.experiment import AugmentConfig, TrainConfig
from netspec.protocol.augment import batch_draws, packed
from netspec.protocol.model_base import ModelBase
from netspec.protocol.optimizer_state import OptimizerState
from netspec.spec.network import Network
from netspec.spec.params import Weights

from . import recipe, step_graph
from .builders import build_module
from .layers import Dropout, Graph


COMPILE_BACKEND = os.environ.get("NETSPEC_TORCH_COMPILE_BACKEND", "inductor")
"""torch.compile's backend for compiled steps. Tests on a CPU set 'aot_eager' (the same graph capture,
no code generation: inductor costs 30-60 s per graph on 2 cores)."""


def set_precision(precision: Precision) -> str:
    """Set torch's process-wide TF32 switches for `precision` and return its canonical name: 'float32'
    and 'float64' turn TF32 off for matmuls and cuDNN convs, 'tf32' and 'bf16' on (bf16 runs matmuls and
    convs in bf16 under autocast; TF32 serves what is left in float32). 'default' leaves torch's
    settings as they are. Only the legacy switches (allow_tf32) are used: torch refuses a mix of them
    and the newer fp32_precision ones. A model never calls this directly: see precision_scope."""
    canonical = canonical_precision(precision)
    if canonical != "default":
        fast = canonical in ("tf32", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast
    return canonical


@contextlib.contextmanager
def precision_scope(precision: Precision) -> Iterator[None]:
    """torch's TF32 switches set for `precision` inside, restored on exit: torch has no per-model switch,
    so each model sets its own around every call and models of different precisions share a process
    (as jax's x64 is scoped per model)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_precision(precision)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class TorchData:
    """A split on the model's device: x (N, *input_shape) float32, y (N,) int64."""

    x: Tensor
    y: Tensor

    @property
    def num_examples(self) -> int:
        return int(self.y.shape[0])


class TorchModel(ModelBase):
    """A network compiled to a torch module, with its optimizer and dropout stream. Built by
    TorchBackend.compile, which resolves the device. The protocol's checks, errors and read-back rule
    are ModelBase's; this class holds the tensors and the steps."""

    backend_name = "torch"

    def __init__(self, network: Network, weights: Weights, seed: int, device: torch.device, device_name: str,
                 precision: Precision, compiled: Compile = "auto", module: Optional[torch.nn.Module] = None) -> None:
        super().__init__(network, precision, device_name, compiles(compiled, device.type == "cuda"), seed)
        self.torch_device = device
        self.graphed = self.compiled and device.type == "cuda"
        """Steps replayed from one CUDA graph each (step_graph), with or without torch.compile: a step
        then costs one launch. Set before setup_optimizer, which makes Adam capturable for it."""
        # channels_last: the layout of cuDNN's fastest convolutions (a compiled step's graph keeps it).
        self.channels_last = self.compiled and device.type == "cuda" and len(network.input_shape) == 3
        # `module` (benchmarks: torch.nn's own layers) must have the canonical state_dict names.
        self.module = (module if module is not None else build_module(network)).to(self.torch_device, getattr(torch, self.float_dtype))
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.set_weights(weights)
        self._step: Optional[Callable[..., tuple[Tensor, Tensor]]] = None
        """The compiled loss function (built by warmup or the first train_steps when compiled)."""
        self._graph: Optional[step_graph.StepGraph] = None
        self._graph_plan: Optional[Tensor] = None
        """The static plan an augmented captured step reads (refilled before each replay)."""
        self._lr_scales: list[float] = []
        self._label_smoothing = 0.0
        self._augment = AugmentConfig()
        """The captured step of a graphed model (built by warmup or the first train_steps)."""
        # compile_error (ModelBase): why a compiled or graphed step fell back (to fullgraph=False,
        # uncompiled, or ungraphed), in one line; compile_error_detail keeps the whole text (a compiler's
        # subprocess puts the cause last).
        self.compile_error_detail: Optional[str] = None
        # The step's running sums, in place: a graph adds to the same tensors at every replay.
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._correct = torch.zeros((), dtype=torch.int64, device=device)

    def _autocast(self) -> Any:
        """bf16 matmuls and convolutions around a forward pass when the precision is bf16."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        # No cast cache: each weight is cast once per pass anyway, and PyTorch supports autocast in CUDA
        # graphs only without it (torch.cuda.make_graphed_callables refuses the cache).
        return torch.autocast(device_type=self.torch_device.type, dtype=torch.bfloat16, cache_enabled=False)

    def _layers(self, x: Tensor, keys: Optional[Tensor]) -> Tensor:
        """The module's forward pass, handing the step's dropout keys (one int32 per spec layer, see
        _keys) to the hand-written Dropout layers."""
        if keys is None:
            return self.module(x)
        if isinstance(self.module, Graph):
            return self.module(x, keys)
        if not isinstance(self.module, torch.nn.Sequential):
            return self.module(x)
        for layer in self.module:
            x = layer(x, keys) if isinstance(layer, Dropout) else layer(x)
        return x

    def _keys(self, steps: int, advance: bool = True) -> Tensor:
        """The dropout keys of the next `steps` training passes on the device: (steps, layers) int32 with
        the bits of ModelBase.dropout_keys' uint32 words."""
        return torch.from_numpy(self.dropout_keys(steps, advance).view(np.int32)).to(self.torch_device)

    def _loss(self, x_all: Tensor, y_all: Tensor, index: Tensor, keys: Optional[Tensor],
              plan: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Train-mode batch loss (label smoothing as the recipe says) and number correct for x_all[index],
        augmented by `plan` when given: what a compiled step compiles (the backward pass comes with it,
        through AOT autograd)."""
        x = x_all.index_select(0, index) if plan is None else recipe.augment(x_all, index, plan, self._augment)
        y = y_all.index_select(0, index)
        with self._autocast():
            logits = self._layers(x, keys)
        if logits.dtype != x_all.dtype:
            logits = logits.to(x_all.dtype)  # bf16 logits: the loss in float32
        loss = F.cross_entropy(logits, y, label_smoothing=self._label_smoothing)
        return loss, (logits.detach().argmax(1) == y).sum()

    # -- the hooks of ModelBase: numpy in (already checked), numpy or device sums out ----------------

    def _scope(self) -> ContextManager[Any]:
        return precision_scope(self.precision)

    def _tensor(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, device=self.torch_device)

    def _label_tensor(self, y: np.ndarray) -> Tensor:
        return torch.as_tensor(y.astype(np.int64, copy=False), device=self.torch_device)

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        inputs = self._tensor(x)
        self.module.train(train)
        keys = self._keys(1)[0] if train else None
        with torch.no_grad(), self._autocast():
            return self._layers(inputs, keys).to(inputs.dtype).cpu().numpy()

    def _loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        inputs, labels = self._tensor(x), self._label_tensor(y)
        buffers = {name: b.clone() for name, b in self.module.named_buffers()}
        params = dict(self.module.named_parameters())
        self.module.train()
        try:
            with self._autocast():
                logits = self._layers(inputs, self._keys(1, advance=False)[0])
            loss = F.cross_entropy(logits.to(inputs.dtype), labels)
            grads = torch.autograd.grad(loss, list(params.values()), materialize_grads=True) if params else ()
        finally:
            # The protocol promises no side effect: undo the running-statistics update.
            with torch.no_grad():
                for name, b in self.module.named_buffers():
                    b.copy_(buffers[name])
        return float(loss.detach()), {name: g.contiguous().cpu().numpy() for name, g in zip(params, grads)}

    def _get_weights(self) -> Weights:
        return {name: t.contiguous().cpu().numpy() for name, t in self.module.state_dict().items()}

    def _set_weights(self, weights: Weights) -> None:
        # load_state_dict copies into the existing tensors, so an optimizer keeps its references.
        self.module.load_state_dict({name: torch.from_numpy(v) for name, v in weights.items()}, strict=True)

    # -- training state: the optimizer's state as plain arrays (the dropout stream is ModelBase's) ------

    def _optimizer_state(self) -> OptimizerState:
        return recipe.optimizer_state(self.optimizer, self.module, self.optimizer_config, self.float_dtype)

    def _set_optimizer_state(self, state: OptimizerState) -> None:
        recipe.set_optimizer_state(self.optimizer, self.module, state)

    # -- training ------------------------------------------------------------------------------------

    def _to_device(self, x: np.ndarray, y: np.ndarray) -> TorchData:
        # On the CPU a float32 array is shared, not copied: the model only ever reads it.
        inputs = self._tensor(x)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return TorchData(inputs, self._label_tensor(y))

    def _setup_optimizer(self, config: TrainConfig) -> None:
        # fused: one kernel per step for all tensors; on a CPU it is about 10x the default loop. A graphed
        # step reads each group's lr from a device tensor (a float would be baked into the graph).
        self.optimizer, self._lr_scales = recipe.build_optimizer(self.module, self.network, config, self.graphed,
                                                                 self.torch_device)
        self._label_smoothing = float(config.label_smoothing)
        self._augment = config.augment
        self._graph = None

    def _compiled_step(self, fullgraph: bool = True) -> Callable[..., tuple[Tensor, Tensor]]:
        # No 'reduce-overhead' mode: on a GPU the whole step, Adam included, is captured (step_graph).
        return torch.compile(self._loss, backend=COMPILE_BACKEND, fullgraph=fullgraph, dynamic=False)

    def _warmup(self, data: TorchData, batch_size: int, rows: int) -> None:
        """Compile the training step, then on a GPU capture it as a CUDA graph, and put the model's state
        back as it was. Falls back rather than failing a run, with the reason in compile_error: to a
        compiled graph with breaks, then to an uncompiled step; a failed capture leaves steps ungraphed.
        No-op when eager."""
        if not (self.compiled or self.graphed):
            return
        saved = self.get_training_state()
        # Three rows whatever `rows` says: a torch step compiles and captures per batch size, not per call.
        trial = np.arange(3 * batch_size).reshape(3, batch_size) % data.num_examples
        batches, lrs = self._rows(trial), np.zeros(len(trial))
        aug = self.optimizer_config.augment
        plans = (packed(batch_draws(aug, 0, 0, trial, *self.network.input_shape[1:])) if aug.active else None)
        with _uncaptured_adam_expected():
            for fullgraph in (True, False) if self.compiled else ():
                try:
                    self._step = self._compiled_step(fullgraph)
                    self._steps(data, batches, lrs, plans, capture=False)
                    break
                except Exception as err:  # a compiler's failure: report it, train on
                    self._fell_back(f"torch.compile(fullgraph={fullgraph})", err)
            self.compiled = self._step is not None
            if self.graphed:
                try:
                    self._steps(data, batches, lrs, plans, capture=True)
                except Exception as err:
                    self._fell_back("CUDA graph capture", err, keep_step=True)
                    self.graphed = False
        self.set_training_state(saved)

    def _fell_back(self, what: str, err: Exception, keep_step: bool = False) -> None:
        text = str(err)
        self.compile_error = f"{what} failed: {type(err).__name__}: {text.splitlines()[0] if text else ''}"
        self.compile_error_detail = f"{self.compile_error_detail or ''}{what}: {type(err).__name__}: {text[-4000:]}\n"
        warnings.warn(self.compile_error)
        self._graph = None
        if not keep_step:
            self._step = None
            torch._dynamo.reset()

    def _run_steps(self, data: TorchData, rows: np.ndarray | Tensor, lrs: np.ndarray,
                   plans: Optional[np.ndarray]) -> Tensor:
        # rows may already be on the device (a test that must not copy inside a sync-checked region).
        return self._steps(data, self._rows(rows) if isinstance(rows, np.ndarray) else rows, lrs, plans, capture=True)

    def _steps(self, data: TorchData, rows: Tensor, lrs: np.ndarray, plans: Optional[np.ndarray],
               capture: bool) -> Tensor:
        """The optimizer steps of train_steps (step i at learning rate lrs[i], on the images augmented by
        plans[i] when given), with the sums (loss, number correct) left on the device; a graphed model
        replays its captured step (capturing it first if need be) unless `capture` is False (warmup's
        compile). The call's lrs and plans go to the device once; each step then copies its own on the
        device (no host round trip per step)."""
        lrs = np.asarray(lrs, np.float64)
        plan_rows = None if plans is None else torch.as_tensor(plans, device=self.torch_device)
        lr_table = self._lr_table(lrs)
        if self.compiled and self._step is None:
            self._step = self._compiled_step()
        self.module.train()
        self._loss_sum.zero_()
        self._correct.zero_()
        keys = self._keys(len(rows))  # every step's masks, eager or compiled: one transfer per call
        graph = self._graph_for(data, rows, plan_rows) if self.graphed and capture and len(rows) else None
        for step, index in enumerate(rows):  # rows of a device tensor: no host round trip per step
            if step == 0 or lrs[step] != lrs[step - 1]:
                self._set_lr(step, lrs, lr_table)
            plan = plan_rows[step] if plan_rows is not None else None
            if graph is not None:
                if plan is not None:
                    self._graph_plan.copy_(plan)
                graph.run(index, keys[step])
            else:
                self._one_step(data, index, keys[step], plan)
        return torch.stack([self._loss_sum, self._correct.double()])

    def _rows(self, batches: np.ndarray) -> Tensor:
        """A (steps, batch_size) index matrix on the device, as index_select takes it."""
        return torch.as_tensor(batches.astype(np.int64, copy=False), device=self.torch_device)

    def _lr_table(self, lrs: np.ndarray) -> Optional[Tensor]:
        """Each step's lr of each param group (lr times the group's multiplier), on the device in one
        copy, for optimizers whose lr is a device tensor (a graphed step); None otherwise."""
        if not any(isinstance(group["lr"], Tensor) for group in self.optimizer.param_groups):
            return None
        table = np.asarray(lrs, np.float64)[:, None] * np.asarray(self._lr_scales)[None, :]
        return torch.as_tensor(table, dtype=torch.float32, device=self.torch_device)

    def _set_lr(self, step: int, lrs: np.ndarray, table: Optional[Tensor]) -> None:
        for g, (group, scale) in enumerate(zip(self.optimizer.param_groups, self._lr_scales)):
            if table is not None:
                group["lr"].copy_(table[step, g])  # device to device: no host sync, and a graph sees it
            else:
                group["lr"] = float(lrs[step]) * scale

    def _read_back(self, sums: Tensor) -> tuple[float, float]:
        loss_sum, correct = sums.tolist()
        return loss_sum, correct

    def _one_step(self, data: TorchData, index: Tensor, keys: Tensor, plan: Optional[Tensor] = None) -> None:
        """One optimizer step on data.x[index] (augmented by `plan` when given), its loss and hits added to
        the sums: what a graph captures."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, hits = (self._step or self._loss)(data.x, data.y, index, keys, plan)
        loss.backward()
        self.optimizer.step()
        self._loss_sum += loss.detach()
        self._correct += hits

    def _graph_for(self, data: TorchData, rows: Tensor, plans: Optional[Tensor] = None) -> step_graph.StepGraph:
        """The captured step for this split and batch size, augmented or not (captured again when one
        changes), with the model's state as it was before the capture's warm-up steps. An augmented
        step reads its plan from one static tensor (`_graph_plan`), refilled before each replay."""
        key = (*step_graph.graph_key(data.x, data.y, rows.shape[1]), plans is not None)
        if self._graph is None or self._graph.key != key:
            self._graph = None
            saved = self.get_training_state()
            index = rows[0].clone()
            keys = torch.zeros(len(self.network.layers), dtype=torch.int32, device=self.torch_device)
            self._graph_plan = plans[0].clone() if plans is not None else None
            static_plan = self._graph_plan
            with _uncaptured_adam_expected():
                graph = step_graph.capture(lambda i, k: self._one_step(data, i, k, static_plan), index, keys)
            self._graph = step_graph.StepGraph(graph, key, index, keys)
            self.set_training_state(saved)
            self._loss_sum.zero_()
            self._correct.zero_()
        return self._graph

    def _evaluate(self, data: TorchData, batch_size: int, flip: bool) -> Tensor:
        self.module.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        with torch.inference_mode(), self._autocast():
            for start in range(0, data.num_examples, batch_size):
                x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
                logits = self.module(x).to(data.x.dtype)
                if flip:  # flip test-time augmentation: the mean of the logits of both views
                    logits = (logits + self.module(x.flip(-1)).to(data.x.dtype)) / 2
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
        return torch.stack([loss_sum, correct.double()])


@contextlib.contextmanager
def _uncaptured_adam_expected() -> Iterator[None]:
    """Silences capturable Adam's warning that it steps outside a CUDA graph: warm-up steps must."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*capturable=True.*")
        yield
