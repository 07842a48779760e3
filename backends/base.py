"""The protocol every backend implements; the trainer and the cross-check use nothing else.

Arrays cross this boundary as numpy (NCHW images, int labels, canonical weights in PyTorch's
state_dict names and layouts). Anything on the device stays behind `DeviceData` and `Model`.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Protocol

import numpy as np

from netspec.experiment import TrainConfig
from netspec.network import Network
from netspec.params import Weights

Precision = Literal["default", "highest", "float64"]
"""'highest': float32 everywhere (TF32 off in both frameworks), for cross-checks; 'default': the
framework's fast defaults; 'float64': parameters, running statistics, inputs and optimizer state in
float64 (the asserted cross-check), and get_weights / loss_and_grads return float64 arrays."""


class DeviceData(Protocol):
    """One split (images and labels) resident on the model's device; opaque to the trainer."""

    num_examples: int


class Model(Protocol):
    """A compiled network with its parameters, running statistics, optimizer state and RNG."""

    network: Network
    device: str
    """Where it runs, in words ('cpu', 'cuda:0 (NVIDIA H100)')."""

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits for a numpy batch (N, *input_shape). train=True: batch statistics, dropout active,
        running statistics updated (as a training step's forward pass, without a parameter update)."""

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Train-mode mean cross-entropy and its gradient for every trainable tensor (canonical names
        and layouts). Changes nothing: no parameter update, no running statistics update."""

    def get_weights(self) -> Weights:
        """Parameters and running statistics as canonical numpy arrays (copies)."""

    def set_weights(self, weights: Weights) -> None:
        """Load canonical weights (checked against the network)."""

    def to_device(self, x: np.ndarray, y: np.ndarray) -> DeviceData:
        """Put a whole split on the device once: x (N, *input_shape) float32, y (N,) int."""

    def setup_optimizer(self, config: TrainConfig) -> None:
        """Create fresh optimizer state (Adam with config's betas/eps) for the current parameters."""

    def train_steps(self, data: DeviceData, batches: np.ndarray, lr: float) -> tuple[float, float]:
        """One optimizer step per row of `batches` (int indices into `data`, shape (steps, batch_size)).
        Returns the sums over those steps of the batch mean loss and of the batch accuracy, read back
        once at the end (no host synchronisation per step). Changing `lr` must not recompile."""

    def evaluate(self, data: DeviceData, batch_size: int) -> tuple[float, float]:
        """Eval-mode mean loss and accuracy over the whole split, in batches of `batch_size`
        (any split size: the last batch may be short)."""


class Backend(Protocol):
    name: str

    def compile(self, network: Network, weights: Optional[Weights] = None, seed: int = 0,
                device: Optional[str] = None, precision: Precision = "default") -> Model:
        """Build `network`. Weights: the canonical dict, or `init_weights(network, seed)` when None.
        `seed` also seeds the dropout RNG. device: None picks a GPU when there is one, else the CPU."""

    def describe(self) -> dict[str, Any]:
        """Versions and devices, for a run's environment file."""


def batch_index_matrix(order: np.ndarray, batch_size: int) -> np.ndarray:
    """Consecutive slices of `order` as rows of a (steps, batch_size) matrix; the last partial batch
    is dropped (the lab's protocol)."""
    steps = len(order) // batch_size
    return np.ascontiguousarray(order[: steps * batch_size].reshape(steps, batch_size))
