"""Tiny finished runs on each backend, trained once per test session, for the export and inference tests."""
from __future__ import annotations

from pathlib import Path

import pytest

import netspec as ns
from netspec.protocol.backend import load_backend
from netspec.runs.training_run import run_experiment
from tests.helpers import tiny_experiment

# 'per_channel': the scaling depends on the training split, so the tests see whether it is recorded.
DATA = ns.DataConfig(source="synthetic", train_size=600, val_size=200, test_size=200, normalize="per_channel")
BACKENDS = ("torch", "jax")

_runs: dict[str, Path] = {}


def experiment() -> ns.Experiment:
    """Two epochs: the best weights may be those of epoch 1, not the last ones."""
    return tiny_experiment("tiny_use", epochs=2).model_copy(update={"data": DATA})


def trained_run(factory: pytest.TempPathFactory, backend: str) -> Path:
    """The run folder of `experiment()` trained on `backend` (once per session)."""
    if backend not in _runs:
        _, folder = run_experiment(experiment(), load_backend(backend), factory.mktemp(f"runs_{backend}"),
                                   device="cpu", log=lambda line: None, progress=False)
        _runs[backend] = folder
    return _runs[backend]
