"""Compiled and graphed steps against eager references on a CPU, mask by mask and step by step.
A GPU trains through these paths by default ('auto' compiles there), so each must be checked
against something that does not share its code:

- torch's hashed dropout masks (backends/torch/layers.py, the masks of every step):
  their keep rate within a binomial tolerance, kept values x / (1 - p) and dropped ones 0, masks of
  different seeds or layers independent (P(both kept) = keep^2);
- torch's compiled (and stand-in graphed) steps and jax's scan, through the model's protocol only: two
  dropout layers of one shape in one step drop independently, each step of a call draws its own
  masks, and one step equals torch.nn.functional's eager step with the mask that step used; with
  BatchNorm, torch's compiled steps equal torch.nn.functional's batch_norm and torch.optim.Adam in
  float64, running statistics included;
- jax's scan: a call whose last chunk is padded equals its steps made one call each (the padding rows
  change nothing: no step, no RNG draw).

The mask a compiled step used is read from what it did, not from the code that made it: with a batch
of one, a first Adam step moves exactly the rows of the first Linear whose unit was kept (a row
whose gradient is 0 has a zero first moment, so Adam leaves it where it is).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from tests.helpers import stand_in_cuda_graphs

BACKENDS = installed_backends()
needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
needs_jax = pytest.mark.skipif("jax" not in BACKENDS, reason="needs jax")


def within_binomial(fraction: float, probability: float, n: int, sigmas: float = 5.0) -> bool:
    """True when `fraction` of n Bernoulli(probability) draws is within `sigmas` standard deviations."""
    return abs(fraction - probability) <= sigmas * np.sqrt(probability * (1 - probability) / n)


# ---- torch's hashed masks, mask by mask ---------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("p", [0.1, 0.5, 0.7])
def test_hashed_masks_keep_at_the_rate_and_seeds_and_salts_draw_independently(p: float) -> None:
    import torch

    from netspec_backends.torch.layers import hashed_keep_mask

    from netspec_backends.torch.layers import position_words
    from netspec.protocol.counter_hash import dropout_keys

    keep, n = 1.0 - p, 100_000
    words = position_words((n,), torch.device("cpu"))
    masks = {(seed, salt): hashed_keep_mask(words, torch.tensor(int(dropout_keys(seed, 0, 1, 8)[0, salt].view(np.int32))), p).numpy()
             for seed in (1, 2, 123456789) for salt in (0, 3, 7)}
    for key, mask in masks.items():
        assert mask.dtype == np.bool_ and within_binomial(mask.mean(), keep, n), (key, mask.mean())
        assert within_binomial((mask[1:] & mask[:-1]).mean(), keep**2, n - 1), key  # neighbours independent
    for a, b in [((1, 0), (2, 0)), ((1, 0), (123456789, 0)), ((1, 0), (1, 3)), ((1, 3), (1, 7))]:
        both = (masks[a] & masks[b]).mean()
        assert within_binomial(both, keep**2, n), (a, b, both)  # another seed or layer: an independent mask


@needs_torch
@pytest.mark.parametrize("p", [0.5, 0.3])
@pytest.mark.parametrize("broadcast_dims", [(), (2, 3)])
def test_hashed_dropout_scales_kept_values_by_one_over_keep(p: float, broadcast_dims: tuple[int, ...]) -> None:
    import torch

    from netspec_backends.torch.layers import Dropout

    layer = Dropout(p, broadcast_dims).train()
    x = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 2.0, (64, 8, 6, 6)).astype(np.float32))
    out = layer(x, torch.tensor([12345], dtype=torch.int32)).numpy()
    kept = out != 0
    expected = x.numpy().astype(np.float64) / (1.0 - p)
    np.testing.assert_allclose(out[kept], expected[kept], rtol=2.0**-23)  # x / (1 - p), to float32 rounding
    if p == 0.5:
        np.testing.assert_array_equal(out[kept], 2.0 * x.numpy()[kept])  # exact where the scale is
    if broadcast_dims:
        assert (kept == kept[:, :, :1, :1]).all()  # whole channels
        kept = kept[:, :, 0, 0]
    assert within_binomial(kept.mean(), 1.0 - p, kept.size)
    again = layer(x, torch.tensor([12346], dtype=torch.int32)).numpy() != 0
    assert (again != (out != 0)).any()  # another seed, another mask


# ---- torch's compiled and graphed steps, through the model's protocol -----------------------------------

WIDE = 1024
"""Units of the first Linear: the fraction of its rows a step moves is a keep rate measured over WIDE."""


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile's graph capture without inductor's code generation (30-60 s per graph on a CPU)."""
    monkeypatch.setattr("netspec_backends.torch.model.COMPILE_BACKEND", "aot_eager")


def torch_model(network: ns.Network, graphed: bool, monkeypatch: pytest.MonkeyPatch, precision: str = "float32",
                lr: float = 1e-3, seed: int = 0):
    """A compiled torch model on the CPU (a stand-in graph capture when `graphed`, as a GPU would
    replay), its optimizer set up."""
    monkeypatch.setattr("netspec_backends.torch.model.COMPILE_BACKEND", "aot_eager")
    if graphed:
        stand_in_cuda_graphs(monkeypatch)
    model = load_backend("torch").compile(network, seed=seed, device="cpu", precision=precision, compiled="on")
    model.graphed = graphed  # what a GPU sets; before setup_optimizer, which makes Adam capturable for it
    model.setup_optimizer(ns.TrainConfig(lr=lr))
    return model


PATHS = [pytest.param("torch", "compiled", marks=needs_torch), pytest.param("torch", "graphed", marks=needs_torch),
         pytest.param("jax", "scan", marks=needs_jax)]
"""The steps a GPU runs by default: torch compiled, torch compiled and replayed from a (stand-in) CUDA
graph, jax's jitted scan."""


def fast_model(backend: str, path: str, network: ns.Network, monkeypatch: pytest.MonkeyPatch, precision: str = "float32",
               lr: float = 1e-3, seed: int = 0):
    """A model whose steps take `path` (PATHS), its optimizer set up."""
    if backend == "torch":
        return torch_model(network, path == "graphed", monkeypatch, precision, lr, seed)
    model = load_backend(backend).compile(network, seed=seed, device="cpu", precision=precision, compiled="on")
    model.setup_optimizer(ns.TrainConfig(lr=lr))
    return model


def rows_moved(before: ns.Weights, after: ns.Weights, name: str = "0.weight") -> np.ndarray:
    return np.any(after[name] != before[name], axis=1)


def one_example_data(features: int, n: int = 4, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.uniform(0.5, 1.5, (n, features)).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize("backend, path", PATHS[:2])  # jax: a key per module by flax's own design
def test_two_dropout_layers_of_one_shape_drop_independently_in_one_step(backend: str, path: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Dropout(0.5) in a row: a unit reaches the loss when both keep it, with probability 1/4;
    the same mask in both layers would keep half."""
    network = ns.Network(input_shape=(16,), layers=[ns.Linear(out_features=WIDE, bias=False), ns.Dropout(p=0.5),
                                                    ns.Dropout(p=0.5), ns.Linear(out_features=10)])
    model = fast_model(backend, path, network, monkeypatch)
    data = model.to_device(*one_example_data(16))
    before = model.get_weights()
    model.train_steps(data, np.array([[0]]), 1e-3)
    moved = rows_moved(before, model.get_weights())
    assert within_binomial(moved.mean(), 0.25, WIDE), moved.mean()


@pytest.mark.parametrize("backend, path", PATHS)
def test_each_step_of_a_call_draws_its_own_masks(backend: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout(0.5), a call of two one-example steps: a row moves when either step kept its unit (Adam's
    momentum carries it on), 3/4 of them; the same mask in both steps would move half."""
    network = ns.Network(input_shape=(16,), layers=[ns.Linear(out_features=WIDE, bias=False), ns.Dropout(p=0.5),
                                                    ns.Linear(out_features=10)])
    model = fast_model(backend, path, network, monkeypatch)
    data = model.to_device(*one_example_data(16))
    model.warmup(data, 1, 2)
    before = model.get_weights()
    model.train_steps(data, np.array([[0], [0]]), 1e-3)
    moved = rows_moved(before, model.get_weights())
    assert within_binomial(moved.mean(), 0.75, WIDE), moved.mean()


def functional_step(network: ns.Network, weights: ns.Weights, x: np.ndarray, y: np.ndarray, batches: np.ndarray,
                    lr: float, masks: Optional[list[np.ndarray]] = None) -> tuple[float, ns.Weights]:
    """The steps in float64 with torch.nn.functional and torch.optim.Adam (lr exact in float32: a graphed step reads it from a float32 tensor; none of netspec's layers):
    (sum of the losses, weights after). `masks`: each Dropout's keep mask of the (single) step, in order."""
    import torch
    import torch.nn.functional as F

    tensors = {k: torch.tensor(v, dtype=torch.float64 if v.dtype.kind == "f" else torch.int64) for k, v in weights.items()}
    infos = network.param_infos()
    trainable = [k for k, info in infos.items() if info.trainable]
    for k in trainable:
        tensors[k].requires_grad_(True)
    optimizer = torch.optim.Adam([tensors[k] for k in trainable], lr=lr, foreach=False)
    total = 0.0
    for rows in batches:
        h = torch.tensor(x[rows], dtype=torch.float64)
        dropouts = iter(masks or [])
        for i, layer in enumerate(network.layers):
            w = lambda name, i=i: tensors.get(f"{i}.{name}")  # noqa: E731
            if isinstance(layer, ns.Linear):
                h = F.linear(h, w("weight"), w("bias"))
            elif isinstance(layer, ns.BatchNorm):
                h = F.batch_norm(h, w("running_mean"), w("running_var"), w("weight"), w("bias"), training=True,
                                 momentum=layer.momentum, eps=layer.eps)
                tensors[f"{i}.num_batches_tracked"] += 1
            elif isinstance(layer, ns.ReLU):
                h = F.relu(h)
            elif isinstance(layer, ns.Dropout) and layer.p > 0:
                h = h * torch.tensor(next(dropouts), dtype=torch.float64) / (1.0 - layer.p)
            elif not isinstance(layer, ns.Dropout):
                raise AssertionError(f"no reference for {layer.type}")
        loss = F.cross_entropy(h, torch.tensor(y[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total, {k: t.detach().numpy() for k, t in tensors.items()}


@needs_torch  # the reference
@pytest.mark.parametrize("backend, path", PATHS)
def test_a_compiled_dropout_step_is_the_eager_step_with_its_mask(backend: str, path: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """float64: the loss and every weight after one step equal the functional step with the mask the
    step used (read from the rows it moved), inverted dropout scaled by 1/(1-p) included."""
    p = 0.25
    network = ns.Network(input_shape=(5,), layers=[ns.Linear(out_features=64, bias=False), ns.Dropout(p=p),
                                                   ns.Linear(out_features=4)])
    model = fast_model(backend, path, network, monkeypatch, precision="float64", lr=2.0**-7, seed=4)
    x, y = one_example_data(5, classes=4)
    data = model.to_device(x.astype(np.float64), y)
    before = model.get_weights()
    loss, _ = model.train_steps(data, np.array([[2]]), 2.0**-7)
    after = model.get_weights()
    kept = rows_moved(before, after)
    assert 0 < kept.sum() < len(kept)
    expected_loss, expected = functional_step(network, before, x.astype(np.float64), y, np.array([[2]]), 2.0**-7,
                                              [kept.astype(np.float64)[None]])
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name, value in expected.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-12, atol=1e-14, err_msg=name)


@needs_torch
@pytest.mark.parametrize("graphed", [False, True], ids=["compiled", "graphed"])
def test_compiled_batchnorm_steps_are_the_functional_ones(graphed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """float64, three steps of eight: BatchNorm's compiled path (batch statistics, the unbiased running
    variance, momentum) and fused Adam against F.batch_norm and torch.optim.Adam."""
    network = ns.Network(input_shape=(6,), layers=[
        ns.Linear(out_features=8, bias=False), ns.BatchNorm(momentum=0.3), ns.ReLU(), ns.Linear(out_features=3)])
    model = torch_model(network, graphed, monkeypatch, precision="float64", lr=2.0**-7, seed=5)
    rng = np.random.default_rng(6)
    x, y = rng.normal(1.0, 2.0, (24, 6)), rng.integers(0, 3, 24)
    data = model.to_device(x, y)
    batches = rng.permutation(24).reshape(3, 8)
    if graphed:
        model.warmup(data, 8, 3)
    before = model.get_weights()
    loss, _ = model.train_steps(data, batches, 2.0**-7)
    expected_loss, expected = functional_step(network, before, x, y, batches, 2.0**-7)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    after = model.get_weights()
    assert set(after) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-10, atol=1e-13, err_msg=name)


# ---- jax's scan: padding rows change nothing --------------------------------------------------------------

@needs_jax
def test_a_padded_scan_equals_its_steps_made_one_by_one() -> None:
    """Chunks of 4 steps: a call of 5 rows is a scan of 4 and a scan of 1 real row and 3 padding rows;
    a call of 2 is one real-and-padded scan. float64, so both paths agree to rounding."""
    network = ns.Network(input_shape=(6,), layers=[
        ns.Linear(out_features=16, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=3)])
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    calls = [rng.permutation(40)[:20].reshape(5, 4), rng.permutation(40)[:8].reshape(2, 4)]
    backend = load_backend("jax")
    scanned = backend.compile(network, seed=2, device="cpu", precision="float64", compiled="on")
    single = backend.compile(network, seed=2, device="cpu", precision="float64", compiled="off")
    data = {}
    for model in (scanned, single):
        data[id(model)] = model.to_device(x, y)
        model.setup_optimizer(ns.TrainConfig(lr=1e-2))
    scanned.warmup(data[id(scanned)], 4, 4)
    for rows in calls:
        loss, acc = scanned.train_steps(data[id(scanned)], rows, 1e-2)
        one_by_one = [single.train_steps(data[id(single)], row[None], 1e-2) for row in rows]
        assert loss == pytest.approx(sum(s[0] for s in one_by_one), rel=1e-12)
        assert acc == pytest.approx(sum(s[1] for s in one_by_one), abs=1e-12)
        for name, value in single.get_weights().items():
            np.testing.assert_allclose(scanned.get_weights()[name], value, rtol=1e-11, atol=1e-13, err_msg=name)
    state, reference = scanned.get_training_state(), single.get_training_state()
    assert [k for k in state if "rng" in k]
    for name in state:
        if "rng" in name or "step" in name:  # the dropout key and Adam's count: as many draws and steps
            np.testing.assert_array_equal(state[name], reference[name], err_msg=name)
