"""The protocol's promises (netspec/protocol/backend.py, docs/design.md "What the protocol promises"), checked
on every installed backend by name: a third backend passes by adding its entry point.

Promises:
  - compile starts from the canonical initialization of the seed; weights round-trip exactly, as copies;
  - forward in both modes: eval deterministic and stateless, train updates the running statistics;
  - loss_and_grads has no side effect (weights, running statistics, the dropout RNG);
  - evaluate on any split size matches forward (a short last batch, a batch larger than the split);
  - train_steps returns sums (== its rows one call at a time), uses the lr given, needs
    setup_optimizer, and learns learnable data;
  - seeded dropout masks repeat (same seed same masks, other seed other masks);
  - devices: one parser, one-line SetupErrors; device(None) works; describe names backend and versions;
  - the builder registry covers netspec.spec.layers.LAYER_TYPES; no framework BatchNorm/Dropout is used;
  - inputs, labels and batch matrices are validated, with the same messages in every backend;
  - a layer harness (after Keras's run_layer_test): every layer type, as a one-layer network
    compiled through the protocol, against a numpy statement of the spec's semantics.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from netspec.errors import SetupError, SpecError
from netspec.spec.layers import LAYER_TYPES
from netspec.training.trainer import batch_index_matrix
from netspec.spec import reference as ref
from netspec.check.random_networks import random_layer

BACKENDS = installed_backends()
CLASSES = 3
NETWORK = ns.Network(input_shape=(2, 6, 6), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3, padding=1), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=0.3),
    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=8), ns.BatchNorm(momentum=0.3), ns.ReLU(),
    ns.Dropout(p=0.3), ns.Linear(out_features=CLASSES),
])
"""Every layer type, both BatchNorm kinds, both dropouts; small enough to compile in a second."""
PLAIN = ns.Network(input_shape=NETWORK.input_shape, layers=[l for l in NETWORK.layers if "Dropout" not in l.type])
BN = ("1", "7")
"""The BatchNorm layers of NETWORK."""


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest):
    return load_backend(request.param)


def data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class is marked by a raised mean on one pixel row: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=count)
    x = rng.standard_normal((count, *NETWORK.input_shape)).astype(np.float32)
    x[np.arange(count), 0, y] += 1.5
    return x, y


def random_weights(network: ns.Network, seed: int) -> ns.Weights:
    rng = np.random.default_rng(seed)
    weights = {name: rng.standard_normal(info.shape).astype(info.dtype) for name, info in network.param_infos().items()}
    for name in weights:
        if name.endswith("running_var"):
            weights[name] = rng.uniform(0.5, 1.5, weights[name].shape).astype(np.float32)
        if name.endswith("num_batches_tracked"):
            weights[name] = np.array(7, dtype=np.int64)
    return weights


def assert_same_weights(a: ns.Weights, b: ns.Weights, names=None) -> None:
    assert list(a) == list(b)
    for name in names or a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---- weights ---------------------------------------------------------------------------------------

def test_compile_starts_from_the_canonical_initialization(backend) -> None:
    model = backend.compile(NETWORK, seed=5, device="cpu")
    assert_same_weights(model.get_weights(), ns.init_weights(NETWORK, 5))
    assert model.device == "cpu" and model.network is NETWORK


def test_weights_round_trip_exactly_as_copies(backend) -> None:
    weights = random_weights(NETWORK, 1)
    model = backend.compile(NETWORK, weights, device="cpu")
    got = model.get_weights()
    assert_same_weights(got, weights)
    assert got["1.num_batches_tracked"].dtype == np.int64 and got["1.num_batches_tracked"].shape == ()
    got["0.weight"][...] = 0  # a copy: the model is untouched
    assert_same_weights(model.get_weights(), weights)
    model.set_weights(ns.init_weights(NETWORK, 3))
    assert_same_weights(model.get_weights(), ns.init_weights(NETWORK, 3))
    wrong = ns.init_weights(NETWORK, 0)
    wrong["0.weight"] = wrong["0.weight"][:2]
    with pytest.raises(SpecError, match="'0.weight' has shape"):
        model.set_weights(wrong)


# ---- forward, loss_and_grads ---------------------------------------------------------------------------

def test_forward_in_both_modes(backend) -> None:
    model = backend.compile(NETWORK, seed=0, device="cpu")
    x, _ = data(8)
    before = model.get_weights()
    logits = model.forward(x)
    assert logits.shape == (8, CLASSES) and logits.dtype == np.float32
    np.testing.assert_array_equal(model.forward(x), logits)  # eval: deterministic
    assert_same_weights(model.get_weights(), before)  # and changes nothing
    first, second = model.forward(x, train=True), model.forward(x, train=True)
    assert not np.array_equal(first, second)  # new dropout masks each pass
    after = model.get_weights()
    for layer in BN:
        assert int(after[f"{layer}.num_batches_tracked"]) == 2
        assert not np.array_equal(after[f"{layer}.running_mean"], before[f"{layer}.running_mean"])
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])  # no parameter update


def test_loss_and_grads_has_no_side_effects(backend) -> None:
    x, y = data(10)
    model, untouched = (backend.compile(NETWORK, seed=4, device="cpu") for _ in range(2))
    before = model.get_weights()
    loss, grads = model.loss_and_grads(x, y)
    assert_same_weights(model.get_weights(), before)  # parameters and running statistics
    again, grads_again = model.loss_and_grads(x, y)  # same masks again
    assert again == loss and np.isfinite(loss)
    assert list(grads) == [name for name, info in NETWORK.param_infos().items() if info.trainable]
    for name, grad in grads.items():
        assert grad.shape == before[name].shape and grad.dtype == np.float32, name
        np.testing.assert_array_equal(grad, grads_again[name], err_msg=name)
    # The dropout RNG was not advanced: the next training pass draws the masks it would have drawn.
    np.testing.assert_array_equal(model.forward(x, train=True), untouched.forward(x, train=True))


def test_a_network_without_parameters_has_no_gradients(backend) -> None:
    model = backend.compile(ns.Network(input_shape=(4,), layers=[ns.ReLU()]), device="cpu")
    loss, grads = model.loss_and_grads(np.ones((2, 4), np.float32), np.array([0, 3]))
    assert grads == {} and loss == pytest.approx(np.log(4))


# ---- evaluate, train_steps ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(backend):
    """A model trained for six epochs on learnable data, with its split and its losses per epoch."""
    x, y = data(240)
    model = backend.compile(NETWORK, seed=0, device="cpu")
    split = model.to_device(x, y)
    model.setup_optimizer(ns.TrainConfig(lr=1e-2))
    rng = np.random.default_rng(42)
    history = [model.train_steps(split, batch_index_matrix(rng.permutation(240), 24), 1e-2) for _ in range(6)]
    return model, split, history


def test_train_steps_learns_learnable_data(trained) -> None:
    model, split, history = trained
    steps = 10
    (first_loss, _), (last_loss, last_acc) = history[0], history[-1]
    assert last_loss < 0.7 * first_loss and last_acc / steps > 0.7, history
    assert int(model.get_weights()["1.num_batches_tracked"]) == 6 * steps
    assert model.evaluate(split, 100)[1] > 0.7


@pytest.mark.parametrize("count, batch_size", [(37, 10), (37, 64), (37, 37), (1, 8)],
                         ids=["short-last-batch", "batch-larger-than-split", "one-batch", "one-example"])
def test_evaluate_any_split_size_matches_forward(trained, count: int, batch_size: int) -> None:
    model = trained[0]
    x, y = data(count, seed=1)
    loss, accuracy = model.evaluate(model.to_device(x, y), batch_size)
    logits = model.forward(x)
    assert loss == pytest.approx(ref.cross_entropy(logits, y).mean(), rel=1e-5)
    assert accuracy == pytest.approx(np.mean(logits.argmax(1) == y))


def test_train_steps_returns_sums_of_its_rows_one_by_one(backend) -> None:
    x, y = data(12)
    rows = np.random.default_rng(1).permutation(12).reshape(3, 4)
    together, apart = (backend.compile(NETWORK, seed=5, device="cpu") for _ in range(2))
    for model in (together, apart):
        model.setup_optimizer(ns.TrainConfig())
    sums = together.train_steps(together.to_device(x, y), rows, 1e-3)
    apart_data = apart.to_device(x, y)
    one_by_one = np.sum([apart.train_steps(apart_data, row[None], 1e-3) for row in rows], axis=0)
    assert sums == pytest.approx(tuple(one_by_one), rel=1e-6)
    assert 0 <= sums[1] <= 3  # a sum of three batch accuracies
    assert_same_weights(together.get_weights(), apart.get_weights())


def test_train_steps_needs_an_optimizer_and_uses_the_lr_given(backend) -> None:
    """Also: a step's loss is the train-mode loss of its batch before the update (loss_and_grads')."""
    model = backend.compile(PLAIN, seed=0, device="cpu")
    x, y = data(20)
    split = model.to_device(x, y)
    rows = np.arange(20).reshape(2, 10)
    with pytest.raises(RuntimeError, match="setup_optimizer"):
        model.train_steps(split, rows, 1e-3)
    model.setup_optimizer(ns.TrainConfig(lr=1e-2))
    before = model.get_weights()
    expected_loss, _ = model.loss_and_grads(x[:10], y[:10])
    loss, accuracy = model.train_steps(split, rows[:1], 0.0)  # lr 0, not the config's: parameters stay
    assert loss == pytest.approx(expected_loss, rel=1e-6) and 0 <= accuracy <= 1
    model.train_steps(split, rows[1:], 0.0)
    after = model.get_weights()
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    assert int(after["1.num_batches_tracked"]) == 2  # statistics move
    model.train_steps(split, rows, 1e-2)
    assert not np.array_equal(model.get_weights()["0.weight"], before["0.weight"])


def test_seeded_dropout_masks_repeat(backend) -> None:
    network = ns.Network(input_shape=(2, 4, 4), layers=[ns.Dropout2d(p=0.5), ns.Flatten(), ns.Dropout(p=0.5)])
    x = np.ones((8, 2, 4, 4), np.float32)
    models = [backend.compile(network, seed=s, device="cpu") for s in (3, 3, 4)]
    first = [m.forward(x, train=True) for m in models]
    second = [m.forward(x, train=True) for m in models]
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(second[0], second[1])  # the sequence of masks, not only the first
    assert not np.array_equal(first[0], first[2]) and not np.array_equal(first[0], second[0])


# ---- devices, describe, registry ---------------------------------------------------------------------

def test_device_none_and_cpu(backend) -> None:
    assert isinstance(backend.device(None), str) and backend.device(None)
    assert backend.device("cpu") == backend.device(" CPU ") == "cpu"


@pytest.mark.parametrize("name", ["tpu", "mps", "cuda:x", "cpu:1", "gpu:-1", ""])
def test_unknown_device_is_a_one_line_setup_error(backend, name: str) -> None:
    for call in (lambda: backend.device(name), lambda: backend.compile(PLAIN, device=name)):
        with pytest.raises(SetupError, match="unknown device") as err:
            call()
        assert "\n" not in str(err.value)


def test_absent_gpu_is_a_one_line_setup_error(backend) -> None:
    with pytest.raises(SetupError, match="GPU") as err:
        backend.device("gpu:99")  # out of range, or no GPU at all
    assert "\n" not in str(err.value)
    if backend.device(None) != "cpu":
        pytest.skip("this machine has a GPU: the absent-GPU case cannot happen here")
    for name in ("gpu", "cuda", "gpu:0", "cuda:1"):
        with pytest.raises(SetupError, match="sees no GPU"):
            backend.device(name)
        with pytest.raises(SetupError, match="sees no GPU"):
            backend.compile(PLAIN, device=name)


def test_a_run_checks_its_device_first(backend, tmp_path) -> None:
    """`--device gpu` without a GPU is the one-line error before a run looks for a finished one (which
    it would otherwise reuse, silently, whatever device trained it)."""
    if backend.device(None) != "cpu":
        pytest.skip("this machine has a GPU")
    from netspec.runs.training_run import run_experiment
    from tests.helpers import tiny_experiment

    with pytest.raises(SetupError, match="sees no GPU"):
        run_experiment(tiny_experiment(), backend, tmp_path, device="gpu", log=lambda line: None)
    assert not any(tmp_path.iterdir())  # nothing looked up, loaded or written


def test_unknown_precision_is_a_spec_error(backend) -> None:
    with pytest.raises(SpecError, match="unknown precision .fp8."):
        backend.compile(PLAIN, device="cpu", precision="fp8")


def test_describe_names_the_backend_and_versions(backend) -> None:
    info = backend.describe()
    assert info["backend"] == backend.name
    version = info[backend.name]  # the framework's version under the backend's name
    assert isinstance(version, str) and version[0].isdigit()
    assert info["devices"]


def _package(backend) -> Path:
    return Path(importlib.import_module(type(backend).__module__).__file__).parent


def borrowed_layers(source: str) -> list[str]:
    """Uses of a framework's own BatchNorm / Dropout: an attribute of a name imported from an outside
    package (torch, flax, jax, ...), or imported from one by name."""
    tree = ast.parse(source)
    outside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            outside |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("netspec")}
        if isinstance(node, ast.ImportFrom) and node.level == 0 and not (node.module or "").startswith("netspec"):
            outside |= {a.asname or a.name for a in node.names}

    def forbidden(name: str) -> bool:
        lowered = name.lower()
        return "batchnorm" in lowered or "batch_norm" in lowered or "dropout" in lowered

    def root(node: ast.AST) -> str:
        while isinstance(node, ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else ""

    found = [f"line {n.lineno}: .{n.attr}" for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and forbidden(n.attr) and root(n) in outside]
    found += [f"line {n.lineno}: from {n.module} import {a.name}" for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.level == 0 and not (n.module or "").startswith("netspec")
              for a in n.names if forbidden(a.name)]
    return found


IMPORTERS = {"fx_import.py"}
"""Backend files that read other frameworks' models into specs (backends/torch/fx_import.py)."""


def test_backend_never_uses_the_frameworks_batch_norm_or_dropout(backend) -> None:
    assert borrowed_layers("import torch\nfrom torch import nn\nx = torch.nn.functional.dropout(y)\nm = nn.BatchNorm2d(3)")
    assert borrowed_layers("import flax.linen as nn\nd = nn.Dropout(0.5)")
    assert not borrowed_layers("from .layers import BatchNorm, Dropout\nd = Dropout(0.5)")
    sources = sorted(_package(backend).rglob("*.py"))
    # The torch.fx importer names torch.nn's BatchNorm and Dropout to recognise them in a user's module
    # (and reads their fields); it never builds or runs one. Every other file of a backend is scanned.
    modelling = [p for p in sources if p.name not in IMPORTERS]
    offenders = {p.name: found for p in modelling if (found := borrowed_layers(p.read_text()))}
    assert sources and not offenders, offenders


# ---- validation -----------------------------------------------------------------------------------------

def test_inputs_of_the_wrong_shape_are_value_errors(backend) -> None:
    model = backend.compile(PLAIN, device="cpu")
    for bad in (np.zeros((4, 2, 6, 7), np.float32), np.zeros((2, 6, 6), np.float32), np.zeros((4, 72), np.float32)):
        for call in (lambda: model.forward(bad), lambda: model.to_device(bad, np.zeros(len(bad), int)),
                     lambda: model.loss_and_grads(bad, np.zeros(len(bad), int))):
            with pytest.raises(ValueError, match=r"does not fit the network: it takes \(N, 2, 6, 6\)"):
                call()


@pytest.mark.parametrize("labels, message", [
    (np.zeros((4, 1), int), "labels must be 4 integers"),
    (np.zeros(3, int), "labels must be 4 integers"),
    (np.zeros(4, np.float32), "labels must be 4 integers"),
    (np.array([0, 1, 3, 2]), r"label 3 is outside \[0, 3\)"),
    (np.array([0, -1, 2, 2]), r"label -1 is outside \[0, 3\)"),
], ids=["2-D", "count", "float", "too-large", "negative"])
def test_bad_labels_are_value_errors(backend, labels: np.ndarray, message: str) -> None:
    model = backend.compile(PLAIN, device="cpu")
    x = data(4)[0]
    with pytest.raises(ValueError, match=message):
        model.to_device(x, labels)
    with pytest.raises(ValueError, match=message):
        model.loss_and_grads(x, labels)


@pytest.mark.parametrize("batches, message", [
    (np.arange(8), "batches must be a"),
    (np.zeros((2, 4), np.float32), "batches must be a"),
    (np.array([[0, 1], [2, 10]]), r"batch indices must be in \[0, 10\)"),
    (np.array([[0, -1]]), r"batch indices must be in \[0, 10\)"),
], ids=["1-D", "float", "too-large", "negative"])
def test_bad_batch_matrices_are_value_errors(backend, batches: np.ndarray, message: str) -> None:
    model = backend.compile(PLAIN, device="cpu")
    split = model.to_device(*data(10))
    model.setup_optimizer(ns.TrainConfig())
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.train_steps(split, batches, 1e-3)
    assert_same_weights(model.get_weights(), before)  # refused before any step


# ---- the layer harness: each layer type through the protocol against numpy --------------------------------

def one_layer(backend, shape: tuple[int, ...], *layers: ns.Layer, seed: int = 3):
    network = ns.Network(input_shape=shape, layers=list(layers))
    weights = random_weights(network, seed)
    return backend.compile(network, weights, seed=seed, device="cpu", precision="highest"), weights


def inputs(shape: tuple[int, ...], count: int = 5, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


TOL = dict(rtol=1e-5, atol=1e-5)


def tensors(weights: ns.Weights, index: int = 0) -> dict[str, np.ndarray]:
    """Layer `index`'s tensors by suffix, as LayerSpec.reference takes them (floats in float64)."""
    prefix = f"{index}."
    return {n[len(prefix):]: v.astype(np.float64) if v.dtype.kind == "f" else v
            for n, v in weights.items() if n.startswith(prefix)}


HARNESS_SHAPES = [(3, 7, 6), (6,)]
"""Input shapes the harness tries each layer type on (a type takes one or both)."""


@pytest.mark.parametrize("kind", LAYER_TYPES, ids=lambda kind: kind.__name__)
def test_layer_harness(backend, kind: type) -> None:
    """Every layer type, in random configurations (netspec.check.random_networks.RANDOM_LAYERS), as a one-layer network
    through the protocol, against its own numpy meaning (LayerSpec.reference): output in evaluation and
    training mode, and the tensors after a training pass. A dropout's mask is the backend's draw, read
    from the output (inputs are never zero), so the reference checks what the kept values become."""
    rng = np.random.default_rng(0)
    tried = 0
    for _ in range(3):
        for shape in HARNESS_SHAPES:
            layer = random_layer(rng, shape, kind)
            try:
                layer.output_shape(shape)
            except ValueError:
                continue
            tried += 1
            model, w = one_layer(backend, shape, layer, seed=tried)
            x = inputs(shape, count=6, seed=tried)
            x[x == 0] = 1.0
            for train in (False, True):
                before = tensors(model.get_weights())
                out = model.forward(x, train)
                x64 = x.astype(np.float64)
                expected, after = layer.reference([x64] * len(layer.inputs) if layer.merges else x64, before, train,
                                                  mask=out != 0)
                np.testing.assert_allclose(out, expected, **TOL, err_msg=f"{layer!r} train={train}")
                got = tensors(model.get_weights())
                for name, value in after.items():
                    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=f"{layer!r} {name}")
    assert tried >= 3, f"no configuration of {kind.__name__} fits the harness's shapes {HARNESS_SHAPES}"


@pytest.mark.parametrize("bias", [True, False])
def test_layer_linear(backend, bias: bool) -> None:
    model, w = one_layer(backend, (6,), ns.Linear(out_features=4, bias=bias))
    x = inputs((6,))
    expected = model.network.layers[0].reference(x.astype(np.float64), tensors(w))[0]
    for train in (False, True):
        np.testing.assert_allclose(model.forward(x, train), expected, **TOL)


@pytest.mark.parametrize("layer", [
    ns.Conv2d(out_channels=4, kernel_size=3),
    ns.Conv2d(out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), bias=False),
], ids=["plain", "strided-padded-rectangular"])
def test_layer_conv2d(backend, layer: ns.Conv2d) -> None:
    model, w = one_layer(backend, (3, 7, 6), layer)
    x = inputs((3, 7, 6))
    expected = layer.reference(x.astype(np.float64), tensors(w))[0]
    np.testing.assert_allclose(model.forward(x), expected, **TOL)


@pytest.mark.parametrize("layer", [
    ns.MaxPool2d(kernel_size=3),  # stride defaults to the kernel, not 1
    ns.MaxPool2d(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)),  # -inf padding
], ids=["default-stride", "padded"])
def test_layer_max_pool2d(backend, layer: ns.MaxPool2d) -> None:
    model, _ = one_layer(backend, (2, 8, 7), layer)
    x = inputs((2, 8, 7)) - 5.0  # all negative: a zero-padded pool would show
    expected = layer.reference(x.astype(np.float64), {})[0]
    np.testing.assert_array_equal(model.forward(x), expected.astype(np.float32))


def test_layer_flatten_and_relu(backend) -> None:
    """Flatten in C, H, W order, so a following Linear takes the canonical [out, C*H*W] weight as is."""
    model, _ = one_layer(backend, (3, 4, 5), ns.Flatten())
    x = inputs((3, 4, 5))
    np.testing.assert_array_equal(model.forward(x), x.reshape(5, -1))
    model, w = one_layer(backend, (3, 4, 5), ns.ReLU(), ns.Flatten(), ns.Linear(out_features=2))
    expected = model.network.reference_forward(w, x)[0]
    np.testing.assert_allclose(model.forward(x), expected, **TOL)


@pytest.mark.parametrize("shape", [(5,), (3, 4, 4)], ids=["flat", "images"])
def test_layer_batch_norm(backend, shape: tuple[int, ...]) -> None:
    """Train: biased batch variance; running = (1 - m) * running + m * batch, unbiased running_var,
    num_batches_tracked counted; eval: the running statistics."""
    layer = ns.BatchNorm(momentum=0.3, eps=1e-3)
    model, w = one_layer(backend, shape, layer)
    stats = tensors(w)
    for step in range(2):
        x = (inputs(shape, count=6, seed=step) * 2 + 3).astype(np.float32)
        out, stats = layer.reference(x.astype(np.float64), stats, train=True)
        np.testing.assert_allclose(model.forward(x, train=True), out, **TOL)
        got = model.get_weights()
        np.testing.assert_allclose(got["0.running_mean"], stats["running_mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["0.running_var"], stats["running_var"], rtol=1e-5, atol=1e-6)
        assert int(got["0.num_batches_tracked"]) == 7 + step + 1 == int(stats["num_batches_tracked"])
    x = inputs(shape, seed=9)
    np.testing.assert_allclose(model.forward(x), layer.reference(x.astype(np.float64), stats)[0], **TOL)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        one_layer(backend, (5,), ns.BatchNorm())[0].forward(inputs((5,), count=1), train=True)


DROPOUT_SHAPE = (16, 6, 6)


@pytest.mark.parametrize("kind", ["Dropout", "Dropout2d"])
def test_layer_dropout(backend, kind: str, p: float = 0.3) -> None:
    """Keep rate 1 - p, kept values scaled by 1/(1-p), channel masks constant over H and W but drawn
    per sample and channel, element masks not; identity in evaluation and at p = 0."""
    model, _ = one_layer(backend, DROPOUT_SHAPE, getattr(ns, kind)(p=p))
    x = np.random.default_rng(0).uniform(0.5, 1.5, (64, *DROPOUT_SHAPE)).astype(np.float32)
    out = model.forward(x, train=True)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-6)
    draws = kept[:, :, 0, 0] if kind == "Dropout2d" else kept  # the independent draws
    assert abs(draws.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / draws.size)
    constant_over_hw = np.all(kept == kept[:, :, :1, :1])
    if kind == "Dropout2d":
        assert constant_over_hw, "a channel mask varies over H, W"
        assert not np.all(draws == draws[:1]), "one channel mask for the whole batch"
        assert not np.all(draws == draws[:, :1]), "one mask for all channels of a sample"
    else:
        assert not constant_over_hw, "element-wise dropout dropped whole channels only"
    np.testing.assert_array_equal(model.forward(x), x)  # evaluation: identity
    zero, _ = one_layer(backend, DROPOUT_SHAPE, getattr(ns, kind)(p=0.0))
    np.testing.assert_array_equal(zero.forward(x[:4], train=True), x[:4])


# ---- the same error texts in every backend (they are written once, in netspec.protocol.model_base) --------------

def protocol_errors(backend) -> dict[str, str]:
    """Each protocol error a caller can provoke, as 'exception type: message', on one model (the calls
    before setup_optimizer first)."""
    x, y = data(10)
    model = backend.compile(PLAIN, seed=0, device="cpu")
    split = model.to_device(x, y)
    adam_state = {**model.get_training_state(), "adam.step": np.array(0)}
    calls = {
        "input shape": lambda: model.forward(x[:, :1]),
        "label shape": lambda: model.to_device(x, y[:5]),
        "label range": lambda: model.loss_and_grads(x, np.full(10, CLASSES)),
        "no optimizer": lambda: model.train_steps(split, np.zeros((1, 2), int), 1e-3),
        "adam state without optimizer": lambda: model.set_training_state(adam_state),
        "state of another network": lambda: model.set_training_state({"0.weight": np.zeros(1)}),
        "weights of another network": lambda: model.set_weights({}),
        "empty split": lambda: model.evaluate(model.to_device(x[:0], y[:0]), 4),
        "batch matrix": lambda: (model.setup_optimizer(ns.TrainConfig()), model.train_steps(split, np.arange(4), 1e-3)),
        "batch range": lambda: model.train_steps(split, np.array([[0, 10]]), 1e-3),
        "lr per step": lambda: model.train_steps(split, np.zeros((2, 2), int), [1e-3]),
    }
    out = {}
    for name, call in calls.items():
        with pytest.raises(Exception) as err:
            call()
        out[name] = f"{type(err.value).__name__}: {err.value}"
    return out


def test_every_backend_gives_the_same_error_texts() -> None:
    texts = {name: protocol_errors(load_backend(name)) for name in BACKENDS}
    first, *others = texts.values()
    assert all("\n" not in text for text in first.values()), first
    assert "needs an optimizer" in first["no optimizer"] and "empty split" in first["empty split"]
    for name, other in zip(list(texts)[1:], others):
        assert other == first, name


# ---- random graphs through the protocol against the numpy reference ----------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_random_graphs_match_the_numpy_reference(backend, seed: int) -> None:
    """Random graphs (residual blocks, concatenations, every layer type among them: netspec.check.random_networks) in
    evaluation and training mode, and their running statistics after the training pass, against
    Network.reference_forward in float64."""
    from netspec.check.random_networks import random_network, without_dropout

    rng = np.random.default_rng(500 + seed)
    network = without_dropout(random_network(rng))
    weights = random_weights(network, seed)
    model = backend.compile(network, weights, device="cpu", precision="float64")
    x = rng.standard_normal((5, *network.input_shape))
    for train in (False, True):
        expected, after = network.reference_forward(weights, x, train)
        np.testing.assert_allclose(model.forward(x, train), expected, rtol=1e-9, atol=1e-9, err_msg=network.model_dump_json())
    got = model.get_weights()
    for name, value in after.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-9, atol=1e-9, err_msg=name)
