"""The compiled torch model (netspec.backend.Model): an nn.Sequential, its Adam and its dropout RNG."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from netspec.backend import (AdamMoments, Precision, check_batches, check_inputs, check_labels, pack_training_state,
                             unpack_training_state)
from netspec.errors import SpecError
from netspec.experiment import TrainConfig
from netspec.network import Network
from netspec.params import Weights, check_weights

from .builders import build_module
from .layers import Dropout


def set_precision(precision: Precision) -> None:
    """'highest' and 'float64' turn TF32 off for matmuls and cuDNN convs (process-wide: torch has no
    per-model switch). 'default' leaves torch's settings as they are."""
    if precision not in ("default", "highest", "float64"):
        raise SpecError(f"unknown precision {precision!r}; use 'default', 'highest' or 'float64'")
    if precision != "default":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


@dataclass(frozen=True)
class TorchData:
    """A split on the model's device: x (N, *input_shape) float32, y (N,) int64."""

    x: Tensor
    y: Tensor

    @property
    def num_examples(self) -> int:
        return int(self.y.shape[0])


class TorchModel:
    """A network compiled to an nn.Sequential, with its optimizer and dropout RNG. Built by
    TorchBackend.compile, which resolves the device."""

    def __init__(self, network: Network, weights: Weights, seed: int, device: torch.device, device_name: str,
                 precision: Precision) -> None:
        set_precision(precision)
        self.network = network
        self.torch_device = device
        self.device = device_name
        self.float_dtype = "float64" if precision == "float64" else "float32"
        """numpy name of the dtype of parameters, statistics and inputs."""
        self.module = build_module(network).to(self.torch_device, getattr(torch, self.float_dtype))
        self.set_weights(weights)
        # One generator for every dropout layer, on the model's device: the same seed gives the same
        # masks, and torch's global RNG (which user code may also draw from) is left alone.
        self.generator = torch.Generator(device=self.torch_device)
        self.generator.manual_seed(seed)
        for layer in self.module.modules():
            if isinstance(layer, Dropout):
                layer.generator = self.generator
        self.optimizer: Optional[torch.optim.Optimizer] = None

    # -- numpy in, numpy out -------------------------------------------------------------------------

    # Input validation, in one place: the checks and messages of netspec.backend, as in every backend.

    def _tensor(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor(check_inputs(self.network, x, self.float_dtype), device=self.torch_device)

    def _labels(self, y: np.ndarray, count: int) -> Tensor:
        y = check_labels(self.network, y, count)
        return torch.as_tensor(y.astype(np.int64, copy=False), device=self.torch_device)

    def _batches(self, batches: np.ndarray, data: TorchData) -> Tensor:
        batches = check_batches(batches, data.num_examples)
        return torch.as_tensor(batches.astype(np.int64, copy=False), device=self.torch_device)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        inputs = self._tensor(x)
        self.module.train(train)
        with torch.no_grad():
            return self.module(inputs).cpu().numpy()

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        inputs = self._tensor(x)
        labels = self._labels(y, len(inputs))
        buffers = {name: b.clone() for name, b in self.module.named_buffers()}
        rng = self.generator.get_state()
        params = dict(self.module.named_parameters())
        self.module.train()
        try:
            loss = F.cross_entropy(self.module(inputs), labels)
            grads = torch.autograd.grad(loss, list(params.values()), materialize_grads=True) if params else ()
        finally:
            # The protocol promises no side effect: undo the running-statistics update and the draw.
            with torch.no_grad():
                for name, b in self.module.named_buffers():
                    b.copy_(buffers[name])
            self.generator.set_state(rng)
        return float(loss.detach()), {name: g.cpu().numpy() for name, g in zip(params, grads)}

    # -- weights -------------------------------------------------------------------------------------

    def get_weights(self) -> Weights:
        state = {name: t.cpu().numpy() for name, t in self.module.state_dict().items()}
        return check_weights(self.network, state, "torch model", self.float_dtype)  # copies, in canonical order

    def set_weights(self, weights: Weights) -> None:
        checked = check_weights(self.network, weights, float_dtype=self.float_dtype)
        # load_state_dict copies into the existing tensors, so an optimizer keeps its references.
        self.module.load_state_dict({name: torch.from_numpy(v) for name, v in checked.items()}, strict=True)

    # -- training state: weights, fused Adam's state and the dropout generator, as plain arrays ------

    def get_training_state(self) -> dict[str, np.ndarray]:
        return pack_training_state(self.get_weights(), self._adam_moments(), self.generator.get_state().numpy())

    def _adam_moments(self) -> Optional[AdamMoments]:
        """Adam's state by canonical name; zeros and step 0 before the first step (torch creates its
        state lazily, at the first step)."""
        if self.optimizer is None:
            return None
        avg, avg_sq, step = {}, {}, 0
        for name, p in self.module.named_parameters():
            state = self.optimizer.state.get(p) or {}
            zeros = np.zeros(tuple(p.shape), self.float_dtype)
            avg[name] = state["exp_avg"].cpu().numpy().copy() if state else zeros
            avg_sq[name] = state["exp_avg_sq"].cpu().numpy().copy() if state else zeros.copy()
            step = int(state["step"]) if state else 0
        return AdamMoments(avg, avg_sq, step)

    def set_training_state(self, state: dict[str, np.ndarray]) -> None:
        weights, adam, rng = unpack_training_state(self.network, state)
        self.set_weights(weights)
        self.generator.set_state(torch.from_numpy(np.array(rng, np.uint8)))
        if adam is None:
            return
        if self.optimizer is None:
            raise RuntimeError("set_training_state with Adam state needs setup_optimizer(config) first")
        for name, p in self.module.named_parameters():
            if adam.step == 0:  # no step taken: leave the state to Adam's own lazy initialization
                self.optimizer.state.pop(p, None)
                continue
            # As fused Adam creates it: a float32 step on the parameter's device, moments like p.
            self.optimizer.state[p] = {
                "step": torch.tensor(float(adam.step), dtype=torch.float32, device=p.device),
                "exp_avg": torch.tensor(np.asarray(adam.exp_avg[name]), dtype=p.dtype, device=p.device),
                "exp_avg_sq": torch.tensor(np.asarray(adam.exp_avg_sq[name]), dtype=p.dtype, device=p.device),
            }

    # -- training ------------------------------------------------------------------------------------

    def to_device(self, x: np.ndarray, y: np.ndarray) -> TorchData:
        # On the CPU a float32 array is shared, not copied: the model only ever reads it.
        inputs = self._tensor(x)
        return TorchData(inputs, self._labels(y, len(inputs)))

    def setup_optimizer(self, config: TrainConfig) -> None:
        beta1, beta2 = config.optimizer.betas
        # fused: one kernel per step for all tensors; on a CPU it is about 10x the default loop.
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=config.lr, betas=(beta1, beta2),
                                          eps=config.optimizer.eps, weight_decay=0.0, fused=True)

    def train_steps(self, data: TorchData, batches: np.ndarray, lr: float) -> tuple[float, float]:
        if self.optimizer is None:
            raise RuntimeError("train_steps needs an optimizer: call setup_optimizer(config) first")
        rows = self._batches(batches, data)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.module.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        for index in rows:  # rows of a device tensor: no host round trip per step
            x, y = data.x.index_select(0, index), data.y.index_select(0, index)
            logits = self.module(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
        totals = torch.stack([loss_sum, correct.double()]).tolist()  # the one host read
        return totals[0], totals[1] / max(rows.shape[1], 1)

    def evaluate(self, data: TorchData, batch_size: int) -> tuple[float, float]:
        count = data.num_examples
        if count == 0:
            raise ValueError("evaluate got an empty split")
        self.module.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        with torch.inference_mode():
            for start in range(0, count, batch_size):
                x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
                logits = self.module(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
        totals = torch.stack([loss_sum, correct.double()]).tolist()
        return totals[0] / count, totals[1] / count
