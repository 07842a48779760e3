"""Whole networks: every spec in specs/ compiled by the torch backend against the same network
assembled from torch.nn built-ins (benchmarks.epoch_time.torch_nn_network), same weights, dropout off."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends import get_backend
from backends.torch import BACKEND, BUILDERS, build_module
from benchmarks.epoch_time import load_into, torch_nn_network
from netspec import AdamConfig, Experiment, Network, TrainConfig, init_weights
from netspec.layers import LAYER_TYPES


SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.json"))
BATCH = 4  # the CNN specs have 256 channels: a small batch keeps the whole file to a few seconds


def without_dropout(network: Network) -> Network:
    """The same network with every dropout rate set to 0 (masks cannot match across implementations)."""
    data = network.model_dump()
    for layer in data["layers"]:
        if layer["type"].startswith("Dropout"):
            layer["p"] = 0.0
    return Network.model_validate(data)


def test_registry_covers_every_layer_type() -> None:
    assert set(BUILDERS) == set(LAYER_TYPES)


def test_get_backend_returns_this_backend() -> None:
    assert get_backend("torch") is BACKEND and BACKEND.name == "torch"


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def case(request: pytest.FixtureRequest) -> tuple[Network, dict]:
    network = without_dropout(Experiment.load(request.param).network)
    return network, init_weights(network, seed=1)


def test_state_dict_names_are_canonical(case: tuple[Network, dict]) -> None:
    network, _ = case
    names = list(network.param_infos())
    assert list(build_module(network).state_dict()) == names
    assert list(torch_nn_network(network).state_dict()) == names  # the reference is the same network


def test_network_matches_torch_nn(case: tuple[Network, dict]) -> None:
    """Logits in eval and train mode, loss and gradients, running statistics, and the parameters after
    two Adam steps through train_steps against the plain loop on the torch.nn network."""
    network, weights = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3 * BATCH, *network.input_shape)).astype(np.float32)
    y = rng.integers(0, network.output_shape[0], size=3 * BATCH)
    ours = BACKEND.compile(network, weights, device="cpu")
    ref = load_into(torch_nn_network(network), weights)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tol = dict(rtol=1e-4, atol=1e-5)

    logits = ours.forward(x[:BATCH])
    np.testing.assert_allclose(logits, ref.eval()(xt[:BATCH]).detach().numpy(), **tol)
    assert logits.shape == (BATCH, *network.output_shape)

    loss, grads = ours.loss_and_grads(x[:BATCH], y[:BATCH])
    probe = copy.deepcopy(ref)  # loss_and_grads changes nothing; the reference's pass would
    ref_loss = F.cross_entropy(probe.train()(xt[:BATCH]), yt[:BATCH])
    ref_loss.backward()
    np.testing.assert_allclose(loss, ref_loss.item(), **tol)
    for name, param in probe.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), **tol, err_msg=name)

    np.testing.assert_allclose(ours.forward(x[:BATCH], train=True), ref.train()(xt[:BATCH]).detach().numpy(), **tol)
    _assert_weights_close(ours.get_weights(), ref, tol)  # the running statistics of one train pass

    # A bias followed by BatchNorm has a true gradient of 0: what is left is rounding noise, which
    # Adam's default eps (1e-8) would turn into steps of about lr, different in each implementation.
    # eps=1e-3 keeps such noise from moving anything, and shows that the configured eps is used.
    config = TrainConfig(lr=1e-3, optimizer=AdamConfig(eps=1e-3))
    ours.setup_optimizer(config)
    optimizer = torch.optim.Adam(ref.parameters(), lr=config.lr, eps=1e-3, fused=True)
    batches = np.arange(BATCH, 3 * BATCH).reshape(2, BATCH)
    ours.train_steps(ours.to_device(x, y), batches, config.lr)
    for index in torch.from_numpy(batches):
        optimizer.zero_grad()
        F.cross_entropy(ref(xt[index]), yt[index]).backward()
        optimizer.step()
    _assert_weights_close(ours.get_weights(), ref, dict(rtol=1e-4, atol=1e-5))


def _assert_weights_close(weights: dict, ref: torch.nn.Module, tol: dict) -> None:
    for name, value in ref.state_dict().items():
        np.testing.assert_allclose(weights[name], value.numpy(), **tol, err_msg=name)
