"""The training recipe on both backends against independent references.

- Optimizers, parameter groups, per-step lrs, label smoothing and augmentation in one: a backend's
  train_steps call in float64 against torch.nn built-ins stepped by torch.optim's own SGD/Adam/AdamW
  (param groups by the spec's rules), F.cross_entropy(label_smoothing=...) and the plain pad/crop/
  flip/cutout of benchmarks/plain_torch.py, step by step.
- Augmented images: each backend's gather bit-for-bit against netspec.protocol.augment's numpy reference.
- Flip test-time augmentation: evaluate(flip=True) against the mean of the logits of forward(x) and
  forward(mirrored x), cross entropy in numpy.
- The float64 cross-check with each optimizer, weight decay, parameter groups, schedule, label
  smoothing and augmentation: the two backends agree.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netspec as ns
from benchmarks.plain_torch import pad_split, plain_augment, plain_optimizer
from netspec.protocol.augment import apply_plan, batch_draws, draw, plan as index_plan
from netspec.protocol.backend import installed_backends, load_backend
from netspec.check.crosscheck import run_crosscheck
from netspec.spec.params import init_weights
from netspec.training.schedules import learning_rates
from tests.references import load_into, torch_nn_network

BACKENDS = installed_backends()
NET = ns.Network(input_shape=(3, 8, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, padding=1, bias=False), ns.BatchNorm(), ns.ReLU(),
    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=5)])
STEPS, BATCH = 4, 6

RECIPES: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": {"type": "sgd", "weight_decay": 0.01}, "lr": 0.2},
    "sgd-momentum": {"optimizer": {"type": "sgd", "momentum": 0.9, "weight_decay": 5e-4}, "lr": 0.1,
                     "schedule": {"type": "step", "step_epochs": 1, "gamma": 0.5}},
    "sgd-nesterov-groups-smoothing-augment": {
        "optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-3}, "lr": 0.4,
        "schedule": {"type": "piecewise_linear", "knots": [[0, 0.1], [1, 1], [2, 0]]}, "label_smoothing": 0.2,
        "param_groups": {"decay_norm": False, "decay_bias": False, "norm_bias_lr_scale": 8.0},
        "augment": {"crop_padding": 2, "pad_mode": "reflect", "flip": True, "cutout": 3}},
    "adam-l2": {"optimizer": {"type": "adam", "weight_decay": 0.1}, "lr": 0.01, "schedule": {"type": "onecycle"}},
    "adamw-groups-cosine": {"optimizer": {"type": "adamw", "weight_decay": 0.1, "betas": [0.8, 0.99]}, "lr": 0.01,
                            "schedule": {"type": "cosine", "warmup_epochs": 0.5},
                            "param_groups": {"decay_norm": False, "norm_bias_lr_scale": 2.0},
                            "augment": {"crop_padding": 1, "flip": True}},
}


def experiment(recipe: str) -> ns.Experiment:
    train = ns.TrainConfig.model_validate({"batch_size": BATCH, "epochs": 2, **RECIPES[recipe]})
    return ns.Experiment(network=NET, train=train)


def data(n: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((n, *NET.input_shape)) + rng.uniform(-1, 1, (1, 3, 1, 1))).astype(np.float32)
    return x, rng.integers(0, 5, n), np.stack([rng.permutation(n)[:BATCH] for _ in range(STEPS)])


def torch_reference(exp: ns.Experiment, x: np.ndarray, y: np.ndarray, rows: np.ndarray, lrs: np.ndarray) -> dict[str, np.ndarray]:
    """STEPS steps of torch.nn + torch.optim in float64, as benchmarks/plain_torch.py trains (epoch 1)."""
    cfg = exp.train
    module = load_into(torch_nn_network(NET), init_weights(NET, 0)).double().train()
    optimizer, scales = plain_optimizer(module, exp)
    x_all, y_all = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)
    padded = pad_split(x_all, cfg.augment)
    for step, row in enumerate(rows):
        index = torch.from_numpy(row)
        xb = (plain_augment(padded, index, draw(cfg.augment, cfg.seed, 1, row, 8, 8), cfg.augment, 8, 8)
              if cfg.augment.active else x_all[index])
        loss = F.cross_entropy(module(xb), y_all[index], label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = float(lrs[step]) * scale
        optimizer.step()
    return {name: p.detach().numpy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_recipes_steps_match_torch_optim_and_torch_losses_in_float64(backend_name: str, recipe: str) -> None:
    exp = experiment(recipe)
    x, y, rows = data()
    lrs = learning_rates(np.arange(STEPS), STEPS // 2, exp.train)
    model = load_backend(backend_name).compile(NET, init_weights(NET, 0), seed=0, device="cpu", precision="float64")
    model.setup_optimizer(exp.train)
    extra = {"augment": batch_draws(exp.train.augment, exp.train.seed, 1, rows, 8, 8)} if exp.train.augment.active else {}
    model.train_steps(model.to_device(x, y), rows, lrs, **extra)  # one call: per-step lrs within it
    want = torch_reference(exp, x, y, rows, lrs)
    got = model.get_weights()
    for name, value in want.items():
        scale = max(np.abs(value).max(), exp.train.lr)
        assert np.abs(got[name] - value).max() <= 1e-10 * scale, name


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_label_smoothing_is_pytorchs_in_the_training_loss(backend_name: str) -> None:
    x, y, rows = data()
    train = ns.TrainConfig(optimizer={"type": "sgd"}, lr=0.1, label_smoothing=0.3)
    model = load_backend(backend_name).compile(NET, init_weights(NET, 0), seed=0, device="cpu", precision="float64")
    model.setup_optimizer(train)
    logits = model.forward(x[rows[0]], train=True)  # the step's logits: batch statistics, the same weights
    loss, _ = model.train_steps(model.to_device(x, y), rows[:1], 0.1)
    want = F.cross_entropy(torch.from_numpy(np.array(logits)), torch.from_numpy(y[rows[0]]), label_smoothing=0.3).item()
    assert loss == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
def test_augmented_images_are_bit_identical_to_the_numpy_reference(backend_name: str, pad_mode: str) -> None:
    from importlib import import_module

    recipe = import_module(f"netspec_backends.{backend_name}.recipe")
    config = ns.spec.experiment.AugmentConfig(crop_padding=3, pad_mode=pad_mode, flip=True, cutout=4)
    x, y, rows = data(40)
    x[0, 0, 0, 0] = -0.0  # a negative zero must stay one (a select, not a multiplication)
    draws = batch_draws(config, 9, 4, rows, 8, 8)
    got = recipe.augmented_batches(x, rows, draws, config)  # the backend's own maps and gather, as its step runs them
    for step, row in enumerate(rows):
        step_draws = type(draws)(*(getattr(draws, f)[step] for f in draws.__dataclass_fields__))
        assert got[step].tobytes() == apply_plan(x[row], index_plan(config, step_draws, 8, 8)).tobytes()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_flip_test_time_augmentation_averages_the_logits_of_both_views(backend_name: str) -> None:
    x, y, _ = data(13)
    model = load_backend(backend_name).compile(NET, init_weights(NET, 1), seed=0, device="cpu", precision="float64")
    logits = (model.forward(x) + model.forward(x[..., ::-1].copy())) / 2
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    loss, acc = model.evaluate(model.to_device(x, y), 5, flip=True)
    assert loss == pytest.approx(-log_p[np.arange(13), y].mean(), rel=1e-12)
    assert acc == np.mean(logits.argmax(1) == y)
    assert model.evaluate(model.to_device(x, y), 5) != (loss, acc)  # without flip: another figure


SUITE_CROSSCHECK = "sgd-nesterov-groups-smoothing-augment"
"""The recipe cross-checked in the default suite (each ~8 s on 2 cores); the others run with --runslow
(the per-backend references above cover every recipe in the default suite)."""


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")
@pytest.mark.parametrize("recipe", [r if r == SUITE_CROSSCHECK else pytest.param(r, marks=pytest.mark.slow) for r in RECIPES])
def test_the_float64_crosscheck_covers_the_recipe(recipe: str) -> None:
    backends = [load_backend(name) for name in BACKENDS[:2]]
    report = run_crosscheck(NET, *backends, batch_size=BATCH, steps=STEPS, train_config=experiment(recipe).train,
                            tiers=("float64",))
    assert report.ok, report.table()


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
def test_a_graphed_torch_recipe_step_reads_its_lrs_and_plans_from_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-graph path on a CPU (a stand-in capture, tests/helpers.py): per-group lr tensors refilled
    per step from one device table, the plan from one static tensor; equal to ungraphed compiled steps."""
    from tests.helpers import stand_in_cuda_graphs

    captures = stand_in_cuda_graphs(monkeypatch)
    exp = experiment("sgd-nesterov-groups-smoothing-augment")
    x, y, rows = data()
    lrs = np.array([2.0**-7, 2.0**-8, 2.0**-6, 2.0**-7])  # exact in float32, as a graph's lr tensor holds them
    draws = batch_draws(exp.train.augment, 0, 1, rows, 8, 8)
    results = []
    for graphed in (True, False):
        model = load_backend("torch").compile(NET, init_weights(NET, 0), seed=0, device="cpu", compiled="on")
        model.graphed = graphed
        model.setup_optimizer(exp.train)
        d = model.to_device(x, y)
        model.warmup(d, BATCH, STEPS)
        results.append((model.train_steps(d, rows, lrs, augment=draws), model.get_training_state()))
    assert len(captures) == 1 and results[0][0] == results[1][0]
    for name, value in results[1][1].items():
        np.testing.assert_array_equal(results[0][1][name], value, err_msg=name)


def test_netspec_evaluate_uses_the_runs_flip_tta_as_training_did() -> None:
    """inference.logits_of(flip=True) (netspec evaluate / predict of a run with train.test_time_flip)
    gives the loss and accuracy the model's own evaluate(flip=True) gave during training."""
    from netspec.deploy.inference import logits_of

    x, y, _ = data(11)
    model = load_backend(BACKENDS[0]).compile(NET, init_weights(NET, 2), seed=0, device="cpu", precision="float64")
    logits = logits_of(model, x, 4, flip=True)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    loss, acc = model.evaluate(model.to_device(x, y), 4, flip=True)
    assert -log_p[np.arange(11), y].mean() == pytest.approx(loss, rel=1e-12) and np.mean(logits.argmax(1) == y) == acc


@pytest.mark.skipif("jax" not in BACKENDS, reason="needs jax")
@pytest.mark.parametrize("compiled", ["on", "off"])
def test_jax_recipe_steps_make_no_transfer_but_their_explicit_ones(compiled: str) -> None:
    """Per-step lrs and augmentation draws go to the device once per call, never per step (jax's
    transfer guard refuses any implicit host-to-device copy)."""
    import jax

    from netspec.protocol.augment import packed

    exp = experiment("sgd-nesterov-groups-smoothing-augment")
    x, y, rows = data()
    model = load_backend("jax").compile(NET, init_weights(NET, 0), seed=0, device="cpu", compiled=compiled)
    model.setup_optimizer(exp.train)
    d = model.to_device(x, y)
    lrs = learning_rates(np.arange(STEPS), STEPS // 2, exp.train)
    with jax.transfer_guard("disallow"):
        sums = model._run_steps(d, rows, lrs, packed(batch_draws(exp.train.augment, 0, 1, rows, 8, 8)))
    assert np.isfinite(np.asarray(sums)).all()
