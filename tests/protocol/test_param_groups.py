"""Parameter groups by rule (netspec/protocol/param_groups.py) and the optimizer state's canonical names
(netspec/protocol/optimizer_state.py)."""
from __future__ import annotations

import numpy as np
import pytest

import netspec as ns
from netspec.errors import SpecError
from netspec.protocol.optimizer_state import OptimizerState, from_arrays, slots_of, to_arrays
from netspec.protocol.param_groups import TensorRule, groups_of, tensor_rules

NET = ns.Network(input_shape=(3, 8, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Flatten(),
    ns.Linear(out_features=10)])


def rules(**train: object) -> dict[str, TensorRule]:
    return tensor_rules(NET, ns.TrainConfig.model_validate(train))


def test_every_trainable_tensor_gets_the_optimizers_decay_by_default() -> None:
    got = rules(optimizer={"type": "sgd", "momentum": 0.9, "weight_decay": 5e-4})
    assert list(got) == ["0.weight", "1.weight", "1.bias", "4.weight", "4.bias"]  # no running statistics
    assert set(got.values()) == {TensorRule(5e-4, 1.0)}


def test_no_decay_on_norm_and_bias_and_a_norm_bias_lr_scale() -> None:
    got = rules(optimizer={"type": "adamw", "weight_decay": 0.1},
                param_groups={"decay_norm": False, "decay_bias": False, "norm_bias_lr_scale": 64.0})
    assert got == {"0.weight": TensorRule(0.1, 1.0), "1.weight": TensorRule(0.0, 1.0), "1.bias": TensorRule(0.0, 64.0),
                   "4.weight": TensorRule(0.1, 1.0), "4.bias": TensorRule(0.0, 1.0)}
    only_bias = rules(optimizer={"type": "adam", "weight_decay": 0.1}, param_groups={"decay_bias": False})
    assert [n for n, r in only_bias.items() if r.weight_decay == 0] == ["1.bias", "4.bias"]
    assert groups_of(got)[TensorRule(0.0, 1.0)] == ["1.weight", "4.bias"]


def test_optimizer_state_round_trips_under_canonical_names() -> None:
    names = ["0.weight", "4.bias"]
    state = OptimizerState("sgd", {"momentum_buffer": {n: np.full(2, i, np.float32) for i, n in enumerate(names)}}, 0)
    arrays = to_arrays(state)
    assert sorted(arrays) == ["sgd.momentum_buffer.0.weight", "sgd.momentum_buffer.4.bias"]  # SGD counts no steps
    back = from_arrays(arrays, names)
    assert back.kind == "sgd" and np.array_equal(back.slots["momentum_buffer"]["4.bias"], [1, 1])
    adamw = to_arrays(OptimizerState("adamw", {"exp_avg": {"0.weight": np.ones(1)}, "exp_avg_sq": {"0.weight": np.ones(1)}}, 3))
    assert adamw["adamw.step"] == 3 and from_arrays(adamw, ["0.weight"]).step == 3
    del adamw["adamw.step"]
    with pytest.raises(SpecError, match="lacks 'adamw.step'"):
        from_arrays(adamw, ["0.weight"])
    del arrays["sgd.momentum_buffer.4.bias"]
    with pytest.raises(SpecError, match="lacks 'sgd.momentum_buffer.4.bias'"):
        from_arrays(arrays, names)
    assert from_arrays({"0.weight": np.zeros(2)}, names) is None
    assert slots_of(ns.spec.experiment.SGDConfig()) == () and slots_of(ns.spec.experiment.AdamWConfig()) == ("exp_avg", "exp_avg_sq")


def test_recipe_text_names_what_differs_from_the_lab() -> None:
    from netspec.spec.experiment import recipe_text

    assert recipe_text({}) == "adam, lab"  # a spec.json from before the recipe fields
    page = ns.Experiment.load("specs/resnet9_recipe.json").model_dump(mode="json")["train"]
    assert recipe_text(page) == "sgd m0.9 nesterov wd0.0005, piecewise_linear, crop4 reflect + flip + cutout8"
    airbench = ns.TrainConfig.model_validate({
        "optimizer": {"type": "adamw", "weight_decay": 0.05}, "label_smoothing": 0.2, "test_time_flip": True,
        "param_groups": {"decay_norm": False, "norm_bias_lr_scale": 64}, "early_stopping_patience": 3})
    assert recipe_text(airbench.model_dump(mode="json")) == (
        "adamw wd0.05 no decay on norm norm-bias lr x64, lab, label smoothing 0.2, flip TTA, patience 3")
