"""Divergence bisection: each parity bug of tests/check/test_crosscheck_mutations.py, injected
into one backend, is located at the layer and quantity it was injected into; identical backends part nowhere.
The expected places are written from the mutations' definitions, not from the bisection's output."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

import netspec as ns  # noqa: E402
from netspec.check.bisection import locate  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.check.crosscheck import synthetic_batch  # noqa: E402
from netspec.spec.params import init_weights  # noqa: E402
from tests.check.test_crosscheck import PAIR  # noqa: E402
from tests.check.test_crosscheck_mutations import MUTATIONS  # noqa: E402
from tests.helpers import write_spec  # noqa: E402

CNN = ns.Network(input_shape=(2, 6, 6), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=0.5), ns.Flatten(),
    ns.Dropout(p=0.3), ns.Linear(out_features=3)])
MLP = ns.Network(input_shape=(12,), layers=[ns.Linear(out_features=16), ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=3)])

CASES = {
    # mutation: (network, layer, layer type, quantity, tensor, step)
    "flatten_hwc": (CNN, 4, "Flatten", "activation (eval)", "output", 0),
    "bn_momentum_flax": (CNN, 1, "BatchNorm", "tensor after a step", "1.running_mean", 1),
    "bn_biased_running_var": (CNN, 1, "BatchNorm", "tensor after a step", "1.running_var", 1),
    "lr_x1.01": (MLP, 0, "Linear", "tensor after a step", "0.weight", 1),
    # Adam's first step is lr * g / (|g| + eps) whatever beta2: beta2 shows from the second step on
    "adam_b2_0.99": (MLP, 0, "Linear", "tensor after a step", "0.weight", 2),
}


@pytest.mark.parametrize("mutation", CASES)
def test_mutation_is_located_at_its_layer(mutation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    network, layer, layer_type, quantity, tensor, step = CASES[mutation]
    MUTATIONS[mutation][0](monkeypatch)
    parting = locate(network, *PAIR, steps=3)
    assert parting is not None
    assert (parting.layer, parting.layer_type, parting.quantity, parting.tensor, parting.step) == (
        layer, layer_type, quantity, tensor, step), parting.line()
    assert parting.reference != parting.other and parting.rel > parting.tolerance


def test_flatten_order_reports_both_values_where_they_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both values against numpy: the reference flattens the layer before's (N, C, H, W) output as C, H, W,
    the mutated jax as H, W, C."""
    MUTATIONS["flatten_hwc"][0](monkeypatch)
    parting = locate(CNN, *PAIR, steps=0)
    assert parting is not None and parting.layer == 4 and len(parting.position) == 2
    x = synthetic_batch(CNN, 3 * 8 + 1, np.random.default_rng(0))[0][:8]
    before = ns.Network(input_shape=CNN.input_shape, layers=CNN.layers[:4])
    image = before.reference_forward(init_weights(before, 0), x)[0]
    assert parting.reference == pytest.approx(image.reshape(8, -1)[parting.position], rel=1e-12)
    assert parting.other == pytest.approx(image.transpose(0, 2, 3, 1).reshape(8, -1)[parting.position], rel=1e-12)
    assert "layer 4 (Flatten)" in parting.line("torch", "jax")


def test_identical_backends_part_nowhere() -> None:
    assert locate(CNN, PAIR[0], PAIR[0], steps=3) is None


def test_agreeing_backends_part_nowhere() -> None:
    assert locate(MLP, *PAIR, steps=3) is None


def test_cli_prints_the_parting_after_a_failing_check(tmp_path, monkeypatch, capsys) -> None:
    MUTATIONS["lr_x1.01"][0](monkeypatch)
    spec = write_spec(tmp_path, ns.Experiment(name="mlp", network=MLP, data=ns.DataConfig(source="synthetic")))
    assert main(["crosscheck", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "backends part at layer 0 (Linear), after step 1, tensor after a step 0.weight" in out


def test_a_wrong_dropout_mask_is_located_at_its_dropout_layer_in_train_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """jax's masks drawn from a key one bit off (tests/check/test_trajectory.py): eval mode agrees, train mode parts at the Dropout."""
    import netspec_backends.jax.layers as jax_layers

    original = jax_layers.hashed_keep_mask
    monkeypatch.setattr(jax_layers, "hashed_keep_mask", lambda shape, key, p: original(shape, key ^ 1, p))
    parting = locate(MLP, *PAIR, steps=0)
    assert parting is not None
    assert (parting.layer, parting.layer_type, parting.quantity) == (2, "Dropout", "activation (train)"), parting.line()
    # one side dropped the unit (0), the other kept it scaled by 1 / (1 - p) = 2
    assert 0.0 in (parting.reference, parting.other)
