"""Small experiments on synthetic data shared by the end-to-end tests (fast on 2 CPU cores)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

import netspec as ns

TINY_DATA = ns.DataConfig(source="synthetic", train_size=1000, val_size=200, test_size=200)


def tiny_experiment(name: str = "tiny", epochs: int = 3, dropout: float = 0.0, batch_size: int = 50) -> ns.Experiment:
    """A small CNN with every layer type; learns the synthetic classes in a few epochs.

    No bias before BatchNorm: BN cancels it, so its gradient is rounding noise that Adam turns into
    lr-sized steps of random sign, different in each backend; the running mean follows that walk and
    eval-mode results would differ between backends for no fault of either."""
    network = ns.Network(input_shape=(3, 32, 32), layers=[
        ns.Conv2d(out_channels=6, kernel_size=5, stride=2, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=dropout),
        ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=32, bias=False), ns.BatchNorm(), ns.ReLU(),
        ns.Dropout(p=dropout), ns.Linear(out_features=10),
    ])
    return ns.Experiment(name=name, network=network, data=TINY_DATA,
                         train=ns.TrainConfig(lr=1e-2, batch_size=batch_size, epochs=epochs, eval_batch_size=128))


def write_spec(directory: Path, experiment: ns.Experiment) -> Path:
    path = directory / f"{experiment.name}.json"
    experiment.save(path)
    return path


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


class ReplayByCalling:
    """A stand-in for torch.cuda.CUDAGraph on a CPU: replay() runs the captured call again on the same
    static tensors (the model refills them before each replay, as for a real graph)."""

    def __init__(self, step: Callable[[Any, Any], None], index: Any, seed: Any) -> None:
        self.step, self.index, self.seed = step, index, seed

    def replay(self) -> None:
        self.step(self.index, self.seed)


def stand_in_cuda_graphs(monkeypatch: pytest.MonkeyPatch) -> list[ReplayByCalling]:
    """Make the torch backend's step capture (backends/torch/step_graph.py) a stand-in that warms up as
    the real one does and replays by calling; returns the captures made. Also torch.compile without
    inductor's code generation (30-60 s per graph on a CPU)."""
    from netspec_backends.torch import step_graph

    made: list[ReplayByCalling] = []

    def capture(step: Callable[[Any, Any], None], index: Any, seed: Any) -> ReplayByCalling:
        for _ in range(step_graph.WARMUP_STEPS):
            step(index, seed)
        made.append(ReplayByCalling(step, index, seed))
        return made[-1]
    monkeypatch.setattr(step_graph, "capture", capture)
    monkeypatch.setattr("netspec_backends.torch.model.COMPILE_BACKEND", "aot_eager")
    return made
