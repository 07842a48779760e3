"""One dropout stream for both backends: every mask is netspec.protocol.counter_hash.keep_mask's, bit for
bit, in torch and jax, eager and compiled; the stream's state is (seed, step), framework-neutral.

The reference is numpy: keep_mask, itself checked here against hash32 of the five words written in
counter_hash's docstring (a path that does not share keep_mask's shortcut of hashing the key once).
Masks are read from what a layer did to an all-positive input (a kept value is x / (1 - p), a
dropped one 0), so the backends' own code is checked, not a helper they share.
"""
from __future__ import annotations

import numpy as np
import pytest

from netspec.protocol.backend import installed_backends, load_backend
from netspec.protocol.counter_hash import STREAM_DROPOUT, dropout_keys, hash32, keep_mask, keep_threshold
from netspec.errors import SpecError
from netspec.spec.experiment import TrainConfig
from netspec.spec.network import Network

BACKENDS = installed_backends()
needs_both = pytest.mark.skipif(not {"torch", "jax"} <= set(BACKENDS), reason="needs torch and jax")

CASES = [  # (input shape without N, dropout layer, per channel)
    ((7,), {"type": "Dropout", "p": 0.3}, False),
    ((33,), {"type": "Dropout", "p": 0.5}, False),
    ((3, 4, 5), {"type": "Dropout", "p": 0.5}, False),
    ((3, 4, 5), {"type": "Dropout2d", "p": 0.25}, True),
    ((5, 2, 3), {"type": "Dropout2d", "p": 0.7}, True),
]


def within_binomial(fraction: float, probability: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(fraction - probability) <= sigmas * np.sqrt(probability * (1 - probability) / n)


def test_keep_mask_is_the_written_recipe() -> None:
    shape = (4, 3, 2, 5)
    position = np.arange(np.prod(shape)).reshape(shape)
    for seed, step, layer, p in [(0, 0, 0, 0.5), (7, 123, 4, 0.3), (2**40 + 3, 2**33, 11, 0.9)]:
        expected = hash32(seed, STREAM_DROPOUT, step, layer, position) < np.floor((1 - p) * 2**32)
        np.testing.assert_array_equal(keep_mask(seed, step, layer, shape, p), expected)
    assert keep_threshold(0.5) == 2**31 and keep_threshold(0.0) == 2**32 - 1
    np.testing.assert_array_equal(keep_mask(1, 2, 3, shape, 0.4, per_channel=True),
                                  keep_mask(1, 2, 3, (4, 3, 1, 1), 0.4))
    keys = dropout_keys(9, 5, 3, 4)
    assert keys.shape == (3, 4) and keys.dtype == np.uint32 and keys[2, 3] == hash32(9, STREAM_DROPOUT, 7, 3)


@needs_both
@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("shape,layer,per_channel", CASES)
def test_a_training_pass_drops_the_reference_units_step_after_step(backend: str, shape: tuple[int, ...],
                                                                    layer: dict, per_channel: bool) -> None:
    net = Network(input_shape=shape, layers=[{"type": "ReLU"}, layer])
    model = load_backend(backend).compile(net, seed=11, device="cpu")
    x = np.random.default_rng(0).uniform(0.5, 2.0, (6, *shape)).astype(np.float32)
    for step in range(3):
        out = model.forward(x, train=True)
        mask = np.broadcast_to(keep_mask(11, step, 1, x.shape, layer["p"], per_channel), x.shape)
        np.testing.assert_array_equal(out != 0, mask)
        np.testing.assert_array_equal(out[mask], x[mask] * np.float32(1.0 / (1.0 - layer["p"])))  # rescale exact
    assert model.get_training_state()["rng.dropout"].tolist() == [11, 3]


@needs_both
@pytest.mark.parametrize("shape,layer,per_channel", CASES)
def test_compiled_torch_and_scanned_jax_masks_are_the_reference(shape: tuple[int, ...], layer: dict, per_channel: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import jax
    import jax.numpy as jnp
    import torch

    from netspec_backends.jax.layers import hashed_keep_mask as jax_mask
    from netspec_backends.torch.layers import Dropout

    p, n = layer["p"], 4
    x = torch.rand(n, *shape) + 0.5
    keys = dropout_keys(3, 0, 4, 2)  # steps 0..3, layers 0..1: layer 1's
    torch_layer = Dropout(p, (2, 3) if per_channel else (), layer=1).train()
    compiled = torch.compile(lambda x, k: torch_layer(x, k), backend="aot_eager", fullgraph=True)
    nhwc = (n, *shape[1:], shape[0]) if len(shape) == 3 else (n, *shape)
    mask_nhwc = tuple(1 if per_channel and axis in (1, 2) else size for axis, size in enumerate(nhwc))
    scanned = jax.jit(lambda ks: jax.lax.scan(lambda c, k: (c, jax_mask(mask_nhwc, k[1], p)), 0, ks)[1])(jnp.asarray(keys))
    for step in range(4):
        reference = np.broadcast_to(keep_mask(3, step, 1, x.shape, p, per_channel), x.shape)
        out = compiled(x, torch.from_numpy(keys[step].view(np.int32))).numpy()
        np.testing.assert_array_equal(out != 0, reference)
        mask = np.asarray(scanned[step])
        mask = np.transpose(mask, (0, 3, 1, 2)) if mask.ndim == 4 else mask
        np.testing.assert_array_equal(np.broadcast_to(mask, x.shape), reference)


@needs_both
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_compile_no_longer_changes_a_runs_masks(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETSPEC_TORCH_COMPILE_BACKEND", "aot_eager")
    import netspec_backends.torch.model as torch_model

    monkeypatch.setattr(torch_model, "COMPILE_BACKEND", "aot_eager")
    net = Network(input_shape=(6,), layers=[{"type": "Linear", "out_features": 16}, {"type": "Dropout", "p": 0.5},
                                            {"type": "Linear", "out_features": 3}])
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((12, 6)).astype(np.float32), rng.integers(0, 3, 12)
    rows = np.array([rng.permutation(12)[:4] for _ in range(5)])
    weights = {}
    for compiled in ("off", "on"):
        model = load_backend(backend).compile(net, seed=2, device="cpu", precision="float64", compiled=compiled)
        model.setup_optimizer(TrainConfig(lr=0.05))
        data = model.to_device(x, y)
        model.train_steps(data, rows[:2], 0.05)
        model.train_steps(data, rows[2:], 0.05)
        assert model.compile_error is None
        assert model.get_training_state()["rng.dropout"].tolist() == [2, 5]  # one step of the stream per row
        weights[compiled] = model.get_weights()
    for name, value in weights["off"].items():
        np.testing.assert_allclose(weights["on"][name], value, rtol=1e-12, atol=1e-15, err_msg=name)


@needs_both
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keep_rate_and_channels_are_binomial_and_p0_is_identity(backend: str) -> None:
    net = Network(input_shape=(8, 6, 6), layers=[{"type": "ReLU"}, {"type": "Dropout", "p": 0.3}, {"type": "Dropout2d", "p": 0.6}])
    model = load_backend(backend).compile(net, seed=5, device="cpu")
    x = np.ones((64, 8, 6, 6), np.float32)
    kept = model.forward(x, train=True) != 0
    channels = kept.any(axis=(2, 3))  # a channel Dropout2d kept (element-wise dropout leaves none all 0: 0.3**36)
    assert within_binomial(channels.mean(), 0.4, channels.size)
    assert within_binomial(kept[channels].mean(), 0.7, int(channels.sum()) * 36)
    identity = load_backend(backend).compile(Network(input_shape=(5,), layers=[{"type": "Dropout", "p": 0.0}]), device="cpu")
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(identity.forward(x, train=True), x)


@needs_both
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_loss_and_grads_draws_the_next_steps_masks_without_advancing(backend: str) -> None:
    net = Network(input_shape=(5,), layers=[{"type": "Linear", "out_features": 4}, {"type": "Dropout", "p": 0.5},
                                            {"type": "Linear", "out_features": 2}])
    model = load_backend(backend).compile(net, seed=0, device="cpu")
    x, y = np.ones((3, 5), np.float32), np.array([0, 1, 0])
    first = model.loss_and_grads(x, y)[1]
    np.testing.assert_array_equal(model.loss_and_grads(x, y)[1]["0.weight"], first["0.weight"])
    kept = keep_mask(0, 0, 1, (3, 4), 0.5)
    assert ((first["0.weight"] != 0).any(axis=1) <= kept.any(axis=0)).all()  # a unit dropped for all rows has no gradient
    assert model.get_training_state()["rng.dropout"].tolist() == [0, 0]


@needs_both
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_stream_state_is_seed_and_step_and_old_framework_bytes_are_refused(backend: str) -> None:
    net = Network(input_shape=(5,), layers=[{"type": "Dropout", "p": 0.5}])
    model = load_backend(backend).compile(net, seed=4, device="cpu")
    model.forward(np.ones((2, 5), np.float32), train=True)
    state = model.get_training_state()
    assert state["rng.dropout"].dtype == np.int64 and state["rng.dropout"].tolist() == [4, 1]
    other = load_backend(backend).compile(net, seed=9, device="cpu")
    other.set_training_state({**state, "rng.dropout": np.array([4, 7], np.int64)})
    x = np.ones((2, 5), np.float32)
    np.testing.assert_array_equal(other.forward(x, train=True) != 0, keep_mask(4, 7, 0, (2, 5), 0.5))
    for old in (np.zeros(5056, np.uint8), np.array([0, 42], np.uint32)):  # torch's generator bytes, a threefry key
        with pytest.raises(SpecError, match="framework's own RNG bytes"):
            other.set_training_state({**state, "rng.dropout": old})
    with pytest.raises(SpecError, match="step -1"):
        other.set_training_state({**state, "rng.dropout": np.array([4, -1], np.int64)})


def test_a_torch_dropout_layer_in_training_needs_the_keys() -> None:
    torch = pytest.importorskip("torch")
    from netspec_backends.torch.layers import Dropout

    with pytest.raises(ValueError, match="needs the step's keys"):
        Dropout(0.5).train()(torch.ones(2, 3))
