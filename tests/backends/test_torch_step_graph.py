"""The torch model's CUDA-graphed steps (backends/torch/step_graph.py), checked on a CPU.

A CPU has no CUDA graphs, so a stand-in capture keeps the real one's contract: warm-up steps first,
then every replay runs the step on the same static tensors (the batch's rows and seed refilled before
each). That checks what a real graph depends on: the static inputs, the tensor learning rate, the
in-place state restore (no tensor a graph holds is ever replaced), the sums, recapture when the split or
batch size changes, and the fallback when capture fails. The real capture runs in tests/backends/test_gpu.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from tests.helpers import ReplayByCalling, stand_in_cuda_graphs

pytestmark = pytest.mark.skipif("torch" not in installed_backends(), reason="needs torch")

NETWORK = ns.Network(input_shape=(3, 8, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, padding=1, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=0.3),
    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=16), ns.BatchNorm(), ns.ReLU(),
    ns.Dropout(p=0.2), ns.Linear(out_features=10)])
LRS = (2.0**-7, 2.0**-8, 2.0**-7)
"""Exact in float32: a graphed step reads lr from a float32 tensor, an ungraphed one as a Python float."""


@pytest.fixture
def captures(monkeypatch: pytest.MonkeyPatch) -> list[ReplayByCalling]:
    return stand_in_cuda_graphs(monkeypatch)


def data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


def epochs(batch: int = 16, n: int = 96) -> list[np.ndarray]:
    return [np.random.default_rng(i).permutation(n)[: n // batch * batch].reshape(-1, batch) for i in range(len(LRS))]


def model_on_cpu(graphed: bool, warm: bool = True):
    model = load_backend("torch").compile(NETWORK, seed=0, device="cpu", compiled="on")
    model.graphed = graphed  # what a GPU sets; before setup_optimizer, which makes Adam capturable for it
    d = model.to_device(*data())
    model.setup_optimizer(ns.TrainConfig(lr=LRS[0]))
    if warm:
        model.warmup(d, 16, 6)
    return model, d


def train(model, d, rows: list[np.ndarray]) -> list[tuple[float, float]]:
    return [model.train_steps(d, r, lr) for r, lr in zip(rows, LRS)]


def test_graphed_steps_match_ungraphed_compiled_steps(captures: list[ReplayByCalling]) -> None:
    """Same seeds, same masks, same updates; the learning rate changes between calls, as a graph must see."""
    graphed, d = model_on_cpu(graphed=True)
    plain, d2 = model_on_cpu(graphed=False)
    assert graphed.graphed and graphed.compiled and graphed.compile_error is None and len(captures) == 1
    lr = graphed.optimizer.param_groups[0]["lr"]
    assert train(graphed, d, epochs()) == train(plain, d2, epochs())
    assert graphed.optimizer.param_groups[0]["lr"] is lr and float(lr) == LRS[-1]  # the tensor the graph reads
    for name, value in plain.get_weights().items():
        np.testing.assert_array_equal(graphed.get_weights()[name], value, err_msg=name)
    assert len(captures) == 1  # captured once by warmup, replayed by every later call


def test_a_capture_leaves_the_state_and_its_tensors_in_place(captures: list[ReplayByCalling]) -> None:
    model, d = model_on_cpu(graphed=True, warm=False)
    model.train_steps(d, epochs()[0][:2], 1e-2)  # the first call captures lazily
    before = model.get_training_state()
    held = [t.data_ptr() for state in model.optimizer.state.values() for t in state.values()]
    held += [p.data_ptr() for p in model.module.parameters()] + [b.data_ptr() for b in model.module.buffers()]
    model._graph = None
    model._graph_for(d, model._rows(epochs()[0]))  # three warm-up steps, then the restore
    after = model.get_training_state()
    assert before.keys() == after.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    now = [t.data_ptr() for state in model.optimizer.state.values() for t in state.values()]
    now += [p.data_ptr() for p in model.module.parameters()] + [b.data_ptr() for b in model.module.buffers()]
    assert now == held


def test_graphed_steps_resume_bit_for_bit(captures: list[ReplayByCalling]) -> None:
    rows = epochs()
    whole, d = model_on_cpu(graphed=True)
    expected = train(whole, d, rows)
    first, d1 = model_on_cpu(graphed=True)
    got = train(first, d1, rows[:1])
    second, d2 = model_on_cpu(graphed=True)
    second.set_training_state(first.get_training_state())
    got += [second.train_steps(d2, r, lr) for r, lr in zip(rows[1:], LRS[1:])]
    assert got == expected


def test_a_new_split_or_batch_size_is_captured_again(captures: list[ReplayByCalling]) -> None:
    model, d = model_on_cpu(graphed=True)
    model.train_steps(d, epochs()[0], 1e-2)
    model.train_steps(d, epochs(batch=8)[0], 1e-2)
    other = model.to_device(*data(48))
    model.train_steps(other, epochs(n=48)[0], 1e-2)
    model.train_steps(other, epochs(n=48)[1], 1e-2)
    assert len(captures) == 3


def test_a_failed_capture_leaves_compiled_ungraphed_steps(captures: list[ReplayByCalling],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from netspec_backends.torch import step_graph

    def refuse(*args: Any) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(step_graph, "capture", refuse)
    with pytest.warns(UserWarning, match="CUDA graph capture failed"):
        model, d = model_on_cpu(graphed=True)
    assert model.compiled and not model.graphed
    assert "CUDA graph capture failed: RuntimeError: operation not permitted" in model.compile_error
    plain, d2 = model_on_cpu(graphed=False)
    assert train(model, d, epochs()) == train(plain, d2, epochs())


def test_the_trainer_runs_graphed_steps_as_it_runs_ungraphed_ones(captures: list[ReplayByCalling]) -> None:
    """fit end to end (warmup, progress chunks, evaluation between epochs): the same history."""
    from netspec.data import load_dataset
    from netspec.training.trainer import fit
    from tests.helpers import tiny_experiment

    experiment = tiny_experiment(epochs=3, dropout=0.2, batch_size=25).with_overrides([f"train.lr={2.0**-7}"])
    dataset = load_dataset(experiment.data, progress=False)
    histories = []
    for graphed in (True, False):
        model = load_backend("torch").compile(experiment.network, seed=0, device="cpu", compiled="on")
        model.graphed = graphed
        histories.append([(r.train_loss, r.train_acc, r.val_loss, r.val_acc)
                          for r in fit(model, experiment, dataset, log=lambda line: None, progress=True)])
        assert model.graphed == graphed
    assert histories[0] == histories[1] and len(captures) == 1
