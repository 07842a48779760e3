"""The JAX backend's hand-written layers against PyTorch's own (BatchNorm) and by their statistics
(Dropout), and every builder against the torch.nn layer it stands for."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402

import netspec as ns  # noqa: E402
from backends import get_backend  # noqa: E402
from backends.jax.builders import BUILDERS, flatten_chw  # noqa: E402
from backends.jax.layers import BatchNorm, Dropout  # noqa: E402
from netspec.layers import LAYER_TYPES  # noqa: E402


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def nchw(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def test_registry_covers_every_layer_type() -> None:
    assert set(BUILDERS) == set(LAYER_TYPES)


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


# ---- Dropout by its statistics ----

def dropout_train(rate: float, channelwise: bool, x: jax.Array, seed: int = 0) -> np.ndarray:
    return np.asarray(Dropout(rate, channelwise).apply({}, x, True, rngs={"dropout": jax.random.key(seed)}))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.7])
def test_dropout_statistics(rate: float) -> None:
    x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, (64, 4, 4, 32)).astype(np.float32))
    y = dropout_train(rate, False, x)
    kept = y != 0
    n = kept.size
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)  # keep rate, within 4 sigma
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-6)  # inverted scaling
    assert abs(y.mean() / float(x.mean()) - 1) < 0.02  # mean preserved
    assert not np.all(kept == kept[:, :1, :1, :])  # element-wise: masks vary over H, W
    assert not np.array_equal(kept, dropout_train(rate, False, x, seed=1) != 0)  # its own RNG stream


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout2d_masks_whole_channels(rate: float) -> None:
    x = jnp.asarray(np.random.default_rng(1).uniform(1.0, 2.0, (128, 5, 6, 16)).astype(np.float32))
    kept = dropout_train(rate, True, x) != 0
    assert np.all(kept == kept[:, :1, :1, :])  # NHWC mask (N, 1, 1, C): constant over H and W
    per_channel = kept[:, 0, 0, :]
    assert abs(per_channel.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / per_channel.size)


@pytest.mark.parametrize("channelwise", [False, True])
def test_dropout_eval_and_p0_are_identity(channelwise: bool) -> None:
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 3, 3, 2)).astype(np.float32))
    np.testing.assert_array_equal(Dropout(0.5, channelwise).apply({}, x, False), x)
    # p = 0 in training: identity, and no RNG stream needed (nothing is drawn)
    np.testing.assert_array_equal(Dropout(0.0, channelwise).apply({}, x, True), x)


# ---- every builder against the torch.nn layer it stands for ----

LAYER_CASES = [
    ((3, 7, 6), ns.Conv2d(out_channels=4, kernel_size=3)),
    ((3, 7, 6), ns.Conv2d(out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), bias=False)),
    ((2, 7, 7), ns.MaxPool2d(kernel_size=3)),  # stride defaults to the kernel, not 1
    ((2, 8, 7), ns.MaxPool2d(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1))),  # -inf padding
    ((3, 4, 5), ns.Flatten()),  # C, H, W order
    ((6,), ns.Linear(out_features=3)),
    ((3, 4, 4), ns.ReLU()),
]


def torch_layer(layer: ns.Layer, shape: tuple[int, ...]) -> torch.nn.Module:
    from netspec.layers import pair
    if isinstance(layer, ns.Conv2d):
        return torch.nn.Conv2d(shape[0], layer.out_channels, pair(layer.kernel_size), pair(layer.stride),
                               pair(layer.padding), bias=layer.bias)
    if isinstance(layer, ns.MaxPool2d):
        return torch.nn.MaxPool2d(pair(layer.kernel_size), layer.stride and pair(layer.stride), pair(layer.padding))
    if isinstance(layer, ns.Linear):
        return torch.nn.Linear(shape[0], layer.out_features, bias=layer.bias)
    return {ns.Flatten: torch.nn.Flatten, ns.ReLU: torch.nn.ReLU}[type(layer)]()


@pytest.mark.parametrize("shape,layer", LAYER_CASES, ids=lambda v: getattr(v, "type", None) or str(v))
def test_layer_matches_torch(shape: tuple[int, ...], layer: ns.Layer) -> None:
    """One-layer networks compiled by the JAX backend against torch.nn with the same canonical weights:
    explicit padding (not Flax's SAME), pool stride, Flatten order, kernel layouts."""
    network = ns.Network(input_shape=shape, layers=[layer])
    weights = ns.init_weights(network, seed=3)
    reference = torch_layer(layer, shape)
    reference.load_state_dict({name.split(".", 1)[1]: torch.from_numpy(w) for name, w in weights.items()})
    x = np.random.default_rng(4).standard_normal((3, *shape)).astype(np.float32)
    model = get_backend("jax").compile(network, weights, precision="highest")
    np.testing.assert_allclose(model.forward(x), reference(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_flatten_is_chw_order() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NCHW
    np.testing.assert_array_equal(flatten_chw(jnp.asarray(nhwc(x))), x.reshape(2, -1))
