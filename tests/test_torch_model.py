"""The torch backend's Model protocol (backends/base.py) on a small network with every layer type."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netspec.trainer import batch_index_matrix
from backends.torch import BACKEND, resolve_device
from backends.torch.model import TorchModel
from netspec import (BatchNorm, Conv2d, Dropout, Dropout2d, Flatten, Linear, MaxPool2d, Network, ReLU, SpecError,
                     TrainConfig, init_weights)


CLASSES = 3
NETWORK = Network(input_shape=(3, 8, 8), layers=[
    Conv2d(out_channels=4, kernel_size=3, padding=1), BatchNorm(), ReLU(), Dropout2d(p=0.2), MaxPool2d(kernel_size=2),
    Flatten(), Linear(out_features=16), BatchNorm(momentum=0.3), ReLU(), Dropout(p=0.3), Linear(out_features=CLASSES),
])


def learnable_data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class is the channel with a raised mean: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=count)
    x = rng.standard_normal((count, *NETWORK.input_shape)).astype(np.float32)
    x[np.arange(count), y] += 0.5
    return x, y


def compile_model(seed: int = 0, **kwargs) -> TorchModel:
    return BACKEND.compile(NETWORK, seed=seed, device="cpu", **kwargs)


def trained(seed: int, epochs: int = 2, lr: float = 1e-2) -> tuple[TorchModel, list[tuple[float, float]]]:
    x, y = learnable_data(240)
    model = compile_model(seed)
    data = model.to_device(x, y)
    model.setup_optimizer(TrainConfig(lr=lr))
    rng = np.random.default_rng(42)
    history = [model.train_steps(data, batch_index_matrix(rng.permutation(len(y)), 24), lr) for _ in range(epochs)]
    return model, history


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_compile_starts_from_the_canonical_initialization() -> None:
    assert_same_weights(compile_model(seed=5).get_weights(), init_weights(NETWORK, 5))
    assert compile_model().device == "cpu"


def test_weights_round_trip_and_are_copies() -> None:
    rng = np.random.default_rng(1)
    weights = {name: rng.standard_normal(info.shape).astype(info.dtype) for name, info in NETWORK.param_infos().items()}
    weights["1.num_batches_tracked"] = np.array(7, dtype=np.int64)
    model = compile_model(weights=weights)
    got = model.get_weights()
    assert_same_weights(got, weights)
    assert got["1.num_batches_tracked"].dtype == np.int64 and got["0.weight"].dtype == np.float32
    got["0.weight"][...] = 0  # a copy: the model is untouched
    assert_same_weights(model.get_weights(), weights)
    model.set_weights(init_weights(NETWORK, 3))
    assert_same_weights(model.get_weights(), init_weights(NETWORK, 3))


def test_set_weights_rejects_a_wrong_shape() -> None:
    weights = init_weights(NETWORK, 0)
    weights["0.weight"] = weights["0.weight"][:2]
    with pytest.raises(SpecError, match="'0.weight' has shape"):
        compile_model().set_weights(weights)


def test_loss_and_grads_changes_nothing() -> None:
    model = compile_model()
    x, y = learnable_data(10)
    before = model.get_weights()
    first = model.loss_and_grads(x, y)
    assert_same_weights(model.get_weights(), before)
    second = model.loss_and_grads(x, y)  # the dropout RNG is restored too: the same masks again
    assert first[0] == second[0]
    trainable = [name for name, info in NETWORK.param_infos().items() if info.trainable]
    assert list(first[1]) == trainable
    for name in trainable:
        assert first[1][name].shape == before[name].shape
        np.testing.assert_array_equal(first[1][name], second[1][name])


def test_forward_updates_running_statistics_only_in_training() -> None:
    model = compile_model()
    x = learnable_data(6)[0]
    before = model.get_weights()
    eval_logits = model.forward(x)
    assert eval_logits.shape == (6, CLASSES) and eval_logits.dtype == np.float32
    assert_same_weights(model.get_weights(), before)
    model.forward(x, train=True)
    after = model.get_weights()
    assert after["1.num_batches_tracked"] == 1 and after["7.num_batches_tracked"] == 1
    assert not np.array_equal(after["1.running_mean"], before["1.running_mean"])
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])


def test_batch_of_one_in_training_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        compile_model().forward(learnable_data(1)[0], train=True)


def test_input_of_the_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"takes \(N, 3, 8, 8\)"):
        compile_model().to_device(np.zeros((4, 3, 8, 9), np.float32), np.zeros(4, np.int64))


def test_train_steps_learns_and_reports_sums() -> None:
    model, history = trained(seed=0, epochs=5)
    steps = 240 // 24
    (first_loss, first_acc), (last_loss, last_acc) = history[0], history[-1]
    assert last_loss < 0.7 * first_loss
    assert last_acc > first_acc and 0 <= first_acc <= steps and last_acc <= steps
    assert model.get_weights()["1.num_batches_tracked"] == 5 * steps


def test_train_steps_needs_an_optimizer_and_uses_the_lr_given() -> None:
    model = compile_model()
    x, y = learnable_data(20)
    data = model.to_device(x, y)
    with pytest.raises(RuntimeError, match="setup_optimizer"):
        model.train_steps(data, np.arange(20).reshape(2, 10), 1e-3)
    model.setup_optimizer(TrainConfig())
    before = model.get_weights()
    model.train_steps(data, np.arange(20).reshape(2, 10), 0.0)  # lr 0: parameters stay, statistics move
    after = model.get_weights()
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    assert after["1.num_batches_tracked"] == 2


def test_same_seed_same_run_other_seed_other_masks() -> None:
    first, history = trained(seed=3)
    second, again = trained(seed=3)
    assert history == again
    assert_same_weights(first.get_weights(), second.get_weights())
    # Same weights, other dropout seed: the masks and so the run differ.
    x, y = learnable_data(240)
    other = BACKEND.compile(NETWORK, weights=init_weights(NETWORK, 3), seed=4, device="cpu")
    other.setup_optimizer(TrainConfig(lr=1e-2))
    rng = np.random.default_rng(42)
    data = other.to_device(x, y)
    assert other.train_steps(data, batch_index_matrix(rng.permutation(240), 24), 1e-2) != history[0]


def test_evaluate_any_split_size_matches_forward() -> None:
    model, _ = trained(seed=0)
    x, y = learnable_data(37, seed=1)
    loss, accuracy = model.evaluate(model.to_device(x, y), batch_size=10)  # last batch of 7
    logits = model.forward(x).astype(np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    assert loss == pytest.approx(-log_probs[np.arange(37), y].mean(), rel=1e-5)
    assert accuracy == pytest.approx((logits.argmax(1) == y).mean())


@pytest.mark.parametrize("name", [None, "cpu", "CPU", "cpu:0"])
def test_device_resolution_on_this_machine(name: str | None) -> None:
    expected = "cuda" if name is None and torch.cuda.is_available() else "cpu"
    assert resolve_device(name).type == expected


@pytest.mark.parametrize("name", ["tpu", "mps", "cuda:x"])
def test_unknown_device_is_a_clear_error(name: str) -> None:
    with pytest.raises(SpecError, match="unknown device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("name", ["gpu", "cuda", "cuda:1"])
def test_gpu_without_a_gpu_is_a_clear_error(name: str) -> None:
    with pytest.raises(SpecError, match="sees no GPU"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_alias() -> None:
    assert resolve_device("gpu") == resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    model = BACKEND.compile(NETWORK, device="gpu")
    assert model.device.startswith("cuda:") and model.evaluate(model.to_device(*learnable_data(8)), 4)


def test_highest_precision_turns_tf32_off() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        compile_model(precision="highest")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with pytest.raises(SpecError, match="unknown precision"):
            compile_model(precision="fast")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_describe_names_versions_and_devices() -> None:
    info = BACKEND.describe()
    assert info["backend"] == "torch" and info["torch"] == torch.__version__ and info["devices"]


def test_a_network_without_parameters_has_no_gradients() -> None:
    model = BACKEND.compile(Network(input_shape=(4,), layers=[ReLU()]), device="cpu")
    loss, grads = model.loss_and_grads(np.ones((2, 4), np.float32), np.array([0, 3]))
    assert grads == {} and loss == pytest.approx(np.log(4))
