"""Small experiments on synthetic data shared by the end-to-end tests (fast on 2 CPU cores)."""
from __future__ import annotations

import json
from pathlib import Path

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
