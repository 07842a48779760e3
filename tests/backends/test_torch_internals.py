"""What is internal to the torch backend (the protocol's promises are tests/protocol/test_backend_contract.py):
the hand-written BatchNorm's forward and hand-written backward number by number against
torch.nn.BatchNorm1d/2d (large means included), the Dropout module, whole networks against the same
networks assembled from torch.nn built-ins (tests/references.py), the dropout generator's isolation
from torch's global RNG, fused Adam, TF32 switches, and no torch.nn BatchNorm/Dropout module in a
compiled network.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netspec_backends.torch import BACKEND, build_module
from netspec_backends.torch.layers import BatchNorm, Dropout
from netspec import AdamConfig, Experiment, Network, TrainConfig, init_weights
from netspec.check.random_networks import without_dropout
from tests.references import load_into, torch_nn_network

STEPS = 3  # training steps before the running statistics and the eval pass are compared


def _pair(shape: tuple[int, ...], momentum: float) -> tuple[BatchNorm, nn.Module]:
    """Ours and torch's, with the same random affine parameters and running statistics."""
    channels = shape[1]
    ours = BatchNorm(channels, momentum=momentum)
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(channels, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean"):
            value = torch.randn(channels, generator=gen)
            getattr(ours, name).copy_(value)
            getattr(ref, name).copy_(value)
        value = torch.rand(channels, generator=gen) + 0.5
        ours.running_var.copy_(value)
        ref.running_var.copy_(value)
    return ours, ref


def _step(module: nn.Module, x: Tensor, grad: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
    """One forward and backward; returns the output and the gradients, as float64."""
    module.zero_grad(set_to_none=True)
    x = x.to(dtype).clone().requires_grad_()
    out = module(x)
    out.backward(grad.to(dtype))
    return {"out": out, "grad_x": x.grad, "grad_weight": module.weight.grad, "grad_bias": module.bias.grad}


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {name: module.state_dict()[name] for name in ("running_mean", "running_var", "num_batches_tracked")}


def _assert_close(ours: dict[str, Tensor], ref: dict[str, Tensor], atol: float, rtol: float, where: str) -> None:
    for name in ref:
        torch.testing.assert_close(ours[name].double(), ref[name].double(), atol=atol, rtol=rtol,
                                   msg=lambda m: f"{where}, {name}: {m}")


BN_CASES = [
    ((2, 5), 0.1, 0.0), ((7, 16), 0.1, 0.0), ((64, 32), 0.3, 0.0), ((64, 32), 1.0, 0.0), ((16, 8), 0.1, 1000.0),
    ((2, 3, 4, 4), 0.1, 0.0), ((5, 4, 3, 7), 0.5, 0.0), ((3, 6, 5, 5), 0.1, 1000.0), ((1, 3, 2, 2), 0.1, 0.0),
]


@pytest.mark.parametrize("shape, momentum, offset", BN_CASES)
def test_batch_norm_matches_torch(shape: tuple[int, ...], momentum: float, offset: float) -> None:
    """Train-mode output and gradients per step, running statistics after the steps, eval output and
    gradients: against torch's float32 layer (its own rounding, looser at a large mean) and against
    its float64 layer (the exact answer, to float32 precision)."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(shape, generator=gen) * 3 + offset for _ in range(STEPS + 1)]
    grads = [torch.randn(shape, generator=gen) for _ in range(STEPS + 1)]
    ours, ref32 = _pair(shape, momentum)
    ref64 = _pair(shape, momentum)[1].double()
    # torch's float32 layer loses ~1e-4 to cancellation at a mean of 1000 (ours does not: see layers.py).
    tol32 = 1e-5 if offset == 0 else 2e-3
    for step in range(STEPS + 1):
        training = step < STEPS
        for module in (ours, ref32, ref64):
            module.train(training)
        got = _step(ours, xs[step], grads[step], torch.float32)
        where = f"{'train step ' + str(step) if training else 'eval'}"
        _assert_close(got, _step(ref32, xs[step], grads[step], torch.float32), tol32, 1e-4, where + " vs float32")
        _assert_close(got, _step(ref64, xs[step], grads[step], torch.float64), 1e-5, 1e-5, where + " vs float64")
        _assert_close(_state(ours), _state(ref64), 1e-5, 1e-5, where + " running statistics")
    assert int(ours.num_batches_tracked) == STEPS


def test_batch_norm_buffers_and_parameters() -> None:
    bn = BatchNorm(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == torch.int64
    assert list(bn.state_dict()) == list(nn.BatchNorm1d(4).state_dict())


@pytest.mark.parametrize("shape", [(1, 5), (1, 5, 1, 1)])
def test_batch_norm_one_value_per_channel_is_an_error(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(5)
    with pytest.raises(ValueError) as expected:
        ref(x)
    bn = BatchNorm(5)
    with pytest.raises(ValueError) as got:
        bn(x)
    assert str(got.value) == str(expected.value)  # word for word, with the input size
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_var, torch.ones(5))
    bn.eval()
    assert torch.isfinite(bn(x)).all()  # one sample is fine in evaluation


def test_batch_norm_rejects_other_ranks() -> None:
    with pytest.raises(ValueError, match=r"\(N, F\) or \(N, C, H, W\)"):
        BatchNorm(3)(torch.randn(2, 3, 4))


# -- Dropout (its statistics and masks: the contract suite's layer harness) ---------------------------


@pytest.mark.parametrize("broadcast_dims", [(), (2, 3)])
def test_dropout_gradient_is_the_mask(broadcast_dims: tuple[int, ...]) -> None:
    module = Dropout(0.4, broadcast_dims)
    x = torch.rand(6, 4, 3, 3, requires_grad=True)
    out = module.train()(x, torch.tensor([12345], dtype=torch.int32))
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / 0.6)


def test_dropout_identity_is_the_input_itself() -> None:
    x = torch.randn(4, 3, 2, 2)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x  # p = 0: no mask, no copy, no RNG draw


def test_dropout_rejects_a_bad_rate_and_too_few_dims() -> None:
    with pytest.raises(ValueError, match="outside"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="broadcast over dims"):
        Dropout(0.5, (2, 3)).train()(torch.ones(4, 3))


# -- the compiled model ------------------------------------------------------------------------------

NETWORK = Network(input_shape=(3, 8, 8), layers=[
    {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "BatchNorm"}, {"type": "ReLU"},
    {"type": "Dropout2d", "p": 0.2}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
    {"type": "Linear", "out_features": 16}, {"type": "BatchNorm"}, {"type": "Dropout", "p": 0.3},
    {"type": "Linear", "out_features": 3},
])


def test_compiled_module_has_no_torch_nn_batch_norm_or_dropout() -> None:
    module = BACKEND.compile(NETWORK, device="cpu").module
    borrowed = [m for m in module.modules()
                if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))]
    assert not borrowed and any(isinstance(m, BatchNorm) for m in module.modules())


def test_dropout_masks_leave_torchs_global_rng_alone() -> None:
    model = BACKEND.compile(NETWORK, seed=0, device="cpu")
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model.forward(x, train=True)
    model.loss_and_grads(x, np.zeros(4, np.int64))
    assert torch.equal(torch.rand(3), expected)
    assert [m.layer for m in model.module.modules() if isinstance(m, Dropout)] == [3, 8]  # hashed by spec index


def test_adam_is_fused_with_the_configs_settings() -> None:
    model = BACKEND.compile(NETWORK, device="cpu")
    model.setup_optimizer(TrainConfig(lr=3e-3, optimizer=AdamConfig(betas=(0.8, 0.9), eps=1e-6)))
    defaults = model.optimizer.defaults
    assert defaults["fused"] and defaults["betas"] == (0.8, 0.9) and defaults["eps"] == 1e-6


def test_highest_precision_turns_tf32_off_during_its_calls() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        model = BACKEND.compile(NETWORK, device="cpu", precision="highest")
        seen = []
        model.module[0].register_forward_hook(
            lambda *_: seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)))
        model.forward(np.zeros((2, *NETWORK.input_shape), np.float32))
        assert seen == [(False, False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored after
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_alias() -> None:
    assert BACKEND.device("gpu") == BACKEND.device("cuda")
    model = BACKEND.compile(NETWORK, device="gpu")
    assert model.device.startswith("cuda:") and model.torch_device.type == "cuda"


# -- whole networks against torch.nn built-ins --------------------------------------------------------

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.json"))
BATCH = 4  # the CNN specs have 256 channels: a small batch keeps the whole file to a few seconds


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


@pytest.mark.parametrize("seed", range(4))
def test_random_graphs_match_torch_nn(seed: int) -> None:
    """Random graphs (residual blocks, concatenations, every layer type: netspec.check.random_networks) against the same
    network from torch.nn built-ins (tests/references.py): eval and train logits, loss and gradients,
    running statistics. The same state_dict names in both."""
    from netspec.check.random_networks import random_network

    rng = np.random.default_rng(900 + seed)
    network = random_network(rng)
    network = Network(input_shape=network.input_shape,
                      layers=[l.model_copy(update={"p": 0.0}) if "Dropout" in l.type else l for l in network.layers])
    weights = init_weights(network, seed)
    ours = BACKEND.compile(network, weights, device="cpu")
    ref = load_into(torch_nn_network(network), weights)
    assert list(ref.state_dict()) == list(network.param_infos()) == list(ours.get_weights())
    x = rng.standard_normal((6, *network.input_shape)).astype(np.float32)
    y = rng.integers(0, network.output_shape[0], size=6)
    xt = torch.from_numpy(x)
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.forward(x), ref.eval()(xt).detach().numpy(), **tol, err_msg=network.model_dump_json())
    loss, grads = ours.loss_and_grads(x, y)
    probe = copy.deepcopy(ref)
    ref_loss = F.cross_entropy(probe.train()(xt), torch.from_numpy(y))
    ref_loss.backward()
    np.testing.assert_allclose(loss, ref_loss.item(), **tol)
    trained = {name: p for name, p in probe.named_parameters() if p.requires_grad}
    assert list(grads) == list(trained)
    for name, param in trained.items():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), **tol, err_msg=name)
    np.testing.assert_allclose(ours.forward(x, train=True), ref.train()(xt).detach().numpy(), **tol)
    _assert_weights_close(ours.get_weights(), ref, tol)
