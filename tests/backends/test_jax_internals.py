"""What is internal to the JAX backend (the protocol's promises are tests/protocol/test_backend_contract.py):
the Flax variable tree and kernel layouts, NHWC device data, jit compiling once per model (whatever the
lr or a short last batch), buffer donation, and the hand-written BatchNorm's forward and gradients
against torch.nn.BatchNorm1d/2d (large means included)."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
try:
    import torch
except ImportError:  # the BatchNorm comparisons need torch; the rest does not
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch.nn.BatchNorm")

import netspec as ns  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from netspec_backends.jax import BACKEND, convert, resolve_device  # noqa: E402
from netspec_backends.jax.builders import SpecNet, flatten_chw  # noqa: E402
from netspec_backends.jax.layers import BatchNorm, Dropout  # noqa: E402
from netspec_backends.jax.model import TRACES  # noqa: E402

NETWORK = ns.Network(input_shape=(2, 6, 5), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3, padding=1), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=0.5),
    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=6), ns.BatchNorm(momentum=0.3),
    ns.Dropout(p=0.2), ns.Linear(out_features=4),
])
"""Every layer type, both BatchNorm kinds, both dropouts."""
PLAIN = ns.Network(input_shape=(2, 6, 5), layers=[layer for layer in NETWORK.layers if "Dropout" not in layer.type])


def batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *NETWORK.input_shape)).astype(np.float32), rng.integers(0, 4, n)


@pytest.fixture(scope="module")
def model():
    return BACKEND.compile(NETWORK, seed=0)


def test_flax_variables_have_the_modules_tree_and_layouts() -> None:
    """convert.to_flax gives exactly the tree SpecNet.init would create (names, shapes, dtypes),
    with kernels in HWIO and [in, out]."""
    variables = convert.to_flax(NETWORK, ns.init_weights(NETWORK))
    x = np.zeros((2, 6, 5, 2), np.float32)  # NHWC
    expected = jax.eval_shape(lambda: SpecNet(tuple(NETWORK.layers)).init(jax.random.key(0), x, False))
    shapes = lambda tree: jax.tree.map(lambda a: (tuple(np.shape(a)), np.dtype(a.dtype)), tree)
    assert shapes(variables) == shapes(expected)
    assert variables["params"]["0"]["kernel"].shape == (3, 3, 2, 3)  # OIHW (3, 2, 3, 3) -> HWIO
    assert variables["params"]["6"]["kernel"].shape == (18, 6)  # [out, in] (6, 18) -> [in, out]


def test_train_and_evaluate_compile_once() -> None:
    """The step is traced once whatever the lr or the number of rows; evaluation once per batch size,
    although the last batch is short."""
    m = BACKEND.compile(NETWORK, seed=0)
    x, y = batch(23)
    data = m.to_device(x, y)
    m.setup_optimizer(ns.TrainConfig())
    before = TRACES.copy()
    order = np.random.default_rng(0).permutation(23)
    m.train_steps(data, order[:20].reshape(5, 4), 1e-3)
    m.train_steps(data, order[:12].reshape(3, 4), 5e-4)
    m.evaluate(data, 5)
    m.evaluate(data, 5)
    assert TRACES["train_step"] - before["train_step"] == 1
    assert TRACES["eval_step"] - before["eval_step"] == 1


def test_train_steps_donate_the_old_state() -> None:
    m = BACKEND.compile(NETWORK, seed=0)
    x, y = batch(8)
    data = m.to_device(x, y)
    m.setup_optimizer(ns.TrainConfig())
    old = jax.tree.leaves(m._state.params)
    m.train_steps(data, np.arange(8).reshape(2, 4), 1e-3)
    assert all(leaf.is_deleted() for leaf in old)  # updated in place, not copied


def test_to_device_is_nhwc_on_the_model_device(model) -> None:
    x, y = batch(5)
    data = model.to_device(x, y)
    assert data.num_examples == 5 and data.x.shape == (5, 6, 5, 2) and data.y.dtype == np.int32
    assert data.x.devices() == {resolve_device()}
    np.testing.assert_array_equal(np.asarray(data.x), x.transpose(0, 2, 3, 1))


def test_dropout_needs_no_rng_at_rate_zero_or_in_evaluation() -> None:
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 3, 3, 2)).astype(np.float32))
    for dims in ((), (1, 2)):
        np.testing.assert_array_equal(Dropout(0.5, dims).apply({}, x, False), x)
        np.testing.assert_array_equal(Dropout(0.0, dims).apply({}, x, True), x)  # no 'dropout' stream given


def test_flatten_is_chw_order() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NCHW
    np.testing.assert_array_equal(flatten_chw(jnp.asarray(x.transpose(0, 2, 3, 1))), x.reshape(2, -1))


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def nchw(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


# ---- BatchNorm against torch.nn.BatchNorm1d / 2d ----

def bn_variables(c: int) -> dict:
    return BatchNorm().init(jax.random.key(0), jnp.zeros((2, c)), train=False)


def torch_bn(shape: tuple[int, ...], momentum: float, eps: float) -> torch.nn.Module:
    cls = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    return cls(shape[1], momentum=momentum, eps=eps)


def bn_train_jax(module: BatchNorm, variables: dict, x: np.ndarray, g: np.ndarray) -> tuple:
    """Train-mode output, (param grads, input grad) for the cotangent g, and the updated statistics,
    all in PyTorch's layout."""
    def forward(params, inputs):
        return module.apply({**variables, "params": params}, inputs, True, mutable=["batch_stats"])

    out, pullback, updated = jax.vjp(forward, variables["params"], jnp.asarray(nhwc(x)), has_aux=True)
    grad_params, grad_x = pullback(jnp.asarray(nhwc(g)))
    return nchw(np.asarray(out)), grad_params, nchw(np.asarray(grad_x)), updated["batch_stats"]


def bn_reference64(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, g: np.ndarray, eps: float) -> dict:
    """BatchNorm's train-mode forward and backward in float64 (the closed forms)."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    view = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    x, g = x.astype(np.float64), g.astype(np.float64)
    n = x.size // x.shape[1]
    mean, var = x.mean(axes), x.var(axes)
    x_hat = (x - mean.reshape(view)) / np.sqrt(var + eps).reshape(view)
    k = (weight / np.sqrt(var + eps)).reshape(view)
    dx = k * (g - g.mean(axes).reshape(view) - x_hat * (g * x_hat).mean(axes).reshape(view))
    return {"out": weight.reshape(view) * x_hat + bias.reshape(view), "dx": dx, "dw": (g * x_hat).sum(axes),
            "db": g.sum(axes), "mean": mean, "var": var * n / (n - 1)}


def setup_bn(c: int, momentum: float, eps: float, rng: np.random.Generator, ndim: int):
    """A torch reference BatchNorm and the JAX one (module, variables) with the same weight and bias."""
    reference = (torch.nn.BatchNorm1d if ndim == 2 else torch.nn.BatchNorm2d)(c, momentum=momentum, eps=eps)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c), dtype=torch.float32))
        reference.bias.copy_(torch.tensor(rng.uniform(-1, 1, c), dtype=torch.float32))
    variables = bn_variables(c)
    variables["params"] = {"weight": jnp.asarray(reference.weight.detach().numpy()),
                           "bias": jnp.asarray(reference.bias.detach().numpy())}
    return reference, BatchNorm(momentum, eps), variables


def torch_bn_train(reference: torch.nn.Module, x: np.ndarray, g: np.ndarray) -> dict:
    xt = torch.tensor(x, requires_grad=True)
    out = reference.train()(xt)
    out.backward(torch.tensor(g))
    result = {"out": out.detach().numpy(), "dx": xt.grad.numpy(), "dw": reference.weight.grad.numpy().copy(),
              "db": reference.bias.grad.numpy().copy()}
    reference.zero_grad()
    return result


SHAPES = [(2, 3), (7, 5), (4, 3, 5, 6), (1, 2, 3, 3)]


@needs_torch
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.5, 1e-3), (1.0, 1e-5)])
def test_batchnorm_matches_torch(shape: tuple[int, ...], momentum: float, eps: float) -> None:
    """Train-mode output and gradients (input, weight, bias), running statistics over several steps,
    then eval-mode output, against torch.nn.BatchNorm1d / 2d."""
    rng = np.random.default_rng(len(shape) + int(10 * momentum))
    reference, module, variables = setup_bn(shape[1], momentum, eps, rng, len(shape))
    for step in range(3):
        x = (rng.uniform(-3, 3) + rng.uniform(0.5, 2.0) * rng.standard_normal(shape)).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        expected = torch_bn_train(reference, x, g)
        out, grad_params, grad_x, variables["batch_stats"] = bn_train_jax(module, variables, x, g)
        np.testing.assert_allclose(out, expected["out"], rtol=1e-5, atol=1e-5)
        # dx is weight / std * (g - its projections): measured against that scale, since over a batch
        # of 2 the projections cancel g almost exactly (x_hat is +-1 whatever x) and leave noise
        axes = (0,) if len(shape) == 2 else (0, 2, 3)
        dx_scale = np.abs(g).max() * np.abs(np.asarray(variables["params"]["weight"]) / np.sqrt(x.var(axes) + eps)).max()
        np.testing.assert_allclose(grad_x, expected["dx"], rtol=1e-4, atol=1e-5 * dx_scale)
        np.testing.assert_allclose(grad_params["weight"], expected["dw"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad_params["bias"], expected["db"], rtol=1e-5, atol=1e-5)
        stats = variables["batch_stats"]
        np.testing.assert_allclose(stats["running_mean"], reference.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["running_var"], reference.running_var.numpy(), rtol=1e-5, atol=1e-6)
        assert int(stats["num_batches_tracked"]) == int(reference.num_batches_tracked) == step + 1
    x = (1.0 + rng.standard_normal(shape)).astype(np.float32)
    out_eval = module.apply(variables, jnp.asarray(nhwc(x)), False)
    np.testing.assert_allclose(nchw(np.asarray(out_eval)), reference.eval()(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


@needs_torch
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_large_mean_as_accurate_as_torch(shape: tuple[int, ...]) -> None:
    """An input at mean 1000 keeps only ~1000 * 2^-24 of absolute precision in float32, in any
    implementation, so both are measured against float64: the JAX BatchNorm must be no less accurate
    than PyTorch's (a one-pass variance E[x^2] - E[x]^2 would be off by ~1e-1 here)."""
    rng = np.random.default_rng(7)
    reference, module, variables = setup_bn(shape[1], 0.1, 1e-5, rng, len(shape))
    x = (1000.0 + rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    exact = bn_reference64(x, np.asarray(variables["params"]["weight"], np.float64),
                           np.asarray(variables["params"]["bias"], np.float64), g, 1e-5)
    torch_out = torch_bn_train(reference, x, g)
    out, grad_params, grad_x, stats = bn_train_jax(module, variables, x, g)
    ours = {"out": out, "dx": grad_x, "dw": np.asarray(grad_params["weight"]), "db": np.asarray(grad_params["bias"])}
    for key in ours:
        scale = np.abs(exact[key]).max()
        err_jax, err_torch = np.abs(ours[key] - exact[key]).max(), np.abs(torch_out[key] - exact[key]).max()
        assert err_jax <= max(2 * err_torch, 1e-5 * scale), (key, err_jax, err_torch)
    np.testing.assert_allclose(stats["running_mean"], 0.9 * 0 + 0.1 * exact["mean"], rtol=1e-6)
    np.testing.assert_allclose(stats["running_var"], 0.9 + 0.1 * exact["var"], rtol=1e-4)


def test_batchnorm_needs_more_than_one_value_per_channel() -> None:
    """PyTorch's error, raised while tracing (shapes are static), instead of a NaN."""
    variables = bn_variables(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        BatchNorm().apply(variables, jnp.ones((1, 3)), True, mutable=["batch_stats"])
    with pytest.raises(ValueError, match=r"input size \(1, 3, 1, 1\)"):
        BatchNorm().apply(variables, jnp.ones((1, 1, 1, 3)), True, mutable=["batch_stats"])
    BatchNorm().apply(variables, jnp.ones((1, 3)), False)  # evaluation uses running statistics: fine


def test_batchnorm_statistics_are_not_trained() -> None:
    """Running statistics live in 'batch_stats', never in 'params' (so no optimizer touches them)."""
    variables = bn_variables(4)
    assert sorted(variables["params"]) == ["bias", "weight"]
    assert sorted(variables["batch_stats"]) == ["num_batches_tracked", "running_mean", "running_var"]
