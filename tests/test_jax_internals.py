"""The JAX backend's model behind the protocol of backends/base.py: canonical weights both ways, no
side effects where the protocol promises none, compiled once, device data, devices."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import netspec as ns  # noqa: E402
from backends import get_backend  # noqa: E402
from backends.jax import convert  # noqa: E402
from backends.jax.builders import SpecNet  # noqa: E402
from backends.jax.model import TRACES, pick_device  # noqa: E402
from netspec.errors import SpecError  # noqa: E402

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


def assert_same_weights(a: ns.Weights, b: ns.Weights) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def model():
    return get_backend("jax").compile(NETWORK, seed=0)


def test_canonical_weights_round_trip() -> None:
    weights = ns.init_weights(NETWORK, seed=1)
    weights["1.num_batches_tracked"] = np.array(7, dtype=np.int64)
    m = get_backend("jax").compile(NETWORK, weights)
    out = m.get_weights()
    assert_same_weights(out, weights)
    assert out["1.num_batches_tracked"].dtype == np.int64 and out["1.num_batches_tracked"].shape == ()
    out["0.weight"][...] = 0  # a copy: the model is untouched
    assert np.any(m.get_weights()["0.weight"] != 0)


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


def test_set_weights_checks_the_network(model) -> None:
    weights = ns.init_weights(NETWORK)
    weights["0.weight"] = weights["0.weight"][:, :1]
    with pytest.raises(SpecError, match="0.weight"):
        model.set_weights(weights)


def test_loss_and_grads_changes_nothing() -> None:
    m = get_backend("jax").compile(NETWORK, seed=0)
    x, y = batch(8)
    before = m.get_weights()
    loss, grads = m.loss_and_grads(x, y)
    assert_same_weights(m.get_weights(), before)  # no running-statistics update
    again, grads_again = m.loss_and_grads(x, y)  # the dropout key was not advanced either
    assert again == loss
    assert list(grads) == [n for n, i in NETWORK.param_infos().items() if i.trainable]
    for name, g in grads.items():
        assert g.shape == before[name].shape and g.dtype == np.float32
        np.testing.assert_array_equal(g, grads_again[name])


def test_forward_modes() -> None:
    m = get_backend("jax").compile(NETWORK, seed=0)
    x, _ = batch(8)
    before = m.get_weights()
    np.testing.assert_array_equal(m.forward(x), m.forward(x))  # eval: deterministic, no state change
    assert_same_weights(m.get_weights(), before)
    first, second = m.forward(x, train=True), m.forward(x, train=True)
    assert not np.array_equal(first, second)  # new dropout masks each pass
    after = m.get_weights()
    assert int(after["1.num_batches_tracked"]) == int(after["7.num_batches_tracked"]) == 2
    assert not np.array_equal(after["1.running_mean"], before["1.running_mean"])


def test_dropout_masks_follow_the_seed() -> None:
    x, _ = batch(8)
    a, b, c = (get_backend("jax").compile(NETWORK, seed=s).forward(x, train=True) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_and_evaluate_compile_once() -> None:
    """The step is traced once whatever the lr or the number of rows; evaluation once per batch size,
    although the last batch is short."""
    m = get_backend("jax").compile(NETWORK, seed=0)
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


def test_train_steps_is_its_rows_one_by_one() -> None:
    """Several rows in one call, or one row per call: the same steps, bit for bit (dropout included)."""
    x, y = batch(12)
    rows = np.random.default_rng(1).permutation(12).reshape(3, 4)
    models = [get_backend("jax").compile(NETWORK, seed=5) for _ in range(2)]
    for m in models:
        m.setup_optimizer(ns.TrainConfig())
    data = [m.to_device(x, y) for m in models]
    together = models[0].train_steps(data[0], rows, 1e-3)
    apart = np.sum([models[1].train_steps(data[1], row[None], 1e-3) for row in rows], axis=0)
    assert together == pytest.approx(tuple(apart), rel=1e-6)
    assert_same_weights(models[0].get_weights(), models[1].get_weights())


def test_train_steps_donate_the_old_state() -> None:
    m = get_backend("jax").compile(NETWORK, seed=0)
    x, y = batch(8)
    data = m.to_device(x, y)
    m.setup_optimizer(ns.TrainConfig())
    old = jax.tree.leaves(m._state.params)
    m.train_steps(data, np.arange(8).reshape(2, 4), 1e-3)
    assert all(leaf.is_deleted() for leaf in old)  # updated in place, not copied


def test_train_steps_sums_and_evaluate_match_one_pass() -> None:
    """Without dropout: one step's loss is loss_and_grads' loss and its accuracy that of the
    train-mode logits; evaluate() is the per-example mean over a split with a short last batch."""
    m = get_backend("jax").compile(PLAIN, seed=0)
    x, y = batch(11)
    data = m.to_device(x, y)
    expected_loss, _ = m.loss_and_grads(x[:8], y[:8])
    logits = get_backend("jax").compile(PLAIN, seed=0).forward(x[:8], train=True)
    m.setup_optimizer(ns.TrainConfig())
    loss, acc = m.train_steps(data, np.arange(8)[None, :], 1e-3)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y[:8]))
    logits = m.forward(x)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    eval_loss, eval_acc = m.evaluate(data, 4)  # batches of 4, 4, 3
    assert eval_loss == pytest.approx(-log_probs[np.arange(11), y].mean(), rel=1e-5)
    assert eval_acc == pytest.approx(np.mean(logits.argmax(1) == y))


def test_to_device_is_nhwc_on_the_model_device(model) -> None:
    x, y = batch(5)
    data = model.to_device(x, y)
    assert data.num_examples == 5 and data.x.shape == (5, 6, 5, 2) and data.y.dtype == np.int32
    assert data.x.devices() == {pick_device()}
    np.testing.assert_array_equal(np.asarray(data.x), x.transpose(0, 2, 3, 1))


def test_devices() -> None:
    assert pick_device("cpu").platform == "cpu"
    assert get_backend("jax").compile(PLAIN, device="cpu").device == "cpu"
    for bad in ("tpu9", "cpu:7"):
        with pytest.raises(SpecError, match="device"):
            pick_device(bad)
    if not any(d.platform == "gpu" for d in jax.devices()):
        assert pick_device().platform == "cpu"
        with pytest.raises(SpecError, match="no gpu device"):
            pick_device("cuda")
    with pytest.raises(SpecError, match="precision"):
        get_backend("jax").compile(PLAIN, precision="bf16")


def test_describe() -> None:
    info = get_backend("jax").describe()
    assert info["backend"] == "jax" and info["devices"] and {"jax", "jaxlib", "flax", "optax"} <= set(info)
