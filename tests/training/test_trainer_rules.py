"""Every rule of the lab protocol the trainer implements, against hand-computed values.

The trainer is driven by tests/scripted.py: a model whose per-step losses and accuracies and
per-epoch validation and test figures are written here, so each expected figure below is worked out
by hand from the script (values are dyadic fractions or integers, so the means are exact and compared
with ==). The end-to-end tests in test_trainer.py show a real run works; these show it follows the
protocol to the digit, including the cases a real run rarely produces (ties, dips, no validation).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

import netspec as ns
from netspec.runs import run_folder
from netspec.training.history import EpochRecord, record_from_dict
from netspec.training.trainer import fit
from netspec.runs.training_run import run_experiment
from tests.scripted import Evaluation, Script, ScriptedBackend, ScriptedModel, ScriptedSplits, scripted_data

EVAL_BATCH = 7
"""An eval batch size no other number here uses, to see it passed through."""


def epoch_script(losses: Sequence[Sequence[float]], accs: Sequence[Sequence[float]] | None = None,
                 val_accs: Sequence[float] | None = None) -> Script:
    """A Script from per-epoch step values. Validation loss of epoch e is 10 + e; test loss and
    accuracy of epoch e are 20 + e and e / 100, so a figure shows which epoch it came from."""
    epochs = len(losses)
    accs = accs if accs is not None else [[0.5] * len(steps) for steps in losses]
    val_accs = val_accs if val_accs is not None else [0.5] * epochs
    return Script(step_losses=[v for steps in losses for v in steps], step_accs=[v for steps in accs for v in steps],
                  val=[(10.0 + e, val_accs[e - 1]) for e in range(1, epochs + 1)],
                  test=[(20.0 + e, e / 100) for e in range(1, epochs + 1)])


def setup(script: Script, n_train: int, batch_size: int, n_val: int = 4, lr: float = 1.0, lr_decay: float = 1.0,
          shuffle_seed: int = 42) -> tuple[ns.Experiment, ScriptedSplits]:
    """An experiment of as many epochs as the script has, and scripted data of the given sizes."""
    network = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)])
    experiment = ns.Experiment(name="scripted", network=network, train=ns.TrainConfig(
        lr=lr, lr_decay=lr_decay, batch_size=batch_size, epochs=len(script.test), eval_batch_size=EVAL_BATCH,
        shuffle_seed=shuffle_seed))
    return experiment, scripted_data(n_train, n_val, 4)


def train(script: Script, progress: bool = False, **sizes: Any) -> tuple[ScriptedModel, list[EpochRecord]]:
    """fit() on the scripted model; returns the model (with its record of calls) and the history."""
    experiment, data = setup(script, **sizes)
    model = ScriptedModel(experiment.network, script)
    return model, fit(model, experiment, data, log=lambda line: None, progress=progress)


@dataclass(frozen=True)
class FinishedRun:
    model: ScriptedModel
    history: list[EpochRecord]
    """As history.json holds it."""
    metrics: dict[str, Any]
    """As metrics.json holds it."""


def run_to_folder(script: Script, out_root: Path, **sizes: Any) -> FinishedRun:
    """A whole run through run_experiment (fit, history, metrics.json, plots), read back from its folder."""
    experiment, data = setup(script, **sizes)
    backend = ScriptedBackend(script)
    _, directory = run_experiment(experiment, backend, out_root, dataset=data, log=lambda line: None, progress=False)
    history = [record_from_dict(row) for row in json.loads((directory / run_folder.HISTORY_JSON).read_text())]
    assert backend.model is not None
    return FinishedRun(backend.model, history, json.loads((directory / run_folder.METRICS).read_text()))


# --- the test split follows the best validation accuracy, ties included ----------------------------

# Epochs 1..8: a first best, a dip, a tie after the dip, a new best, a tie, a dip, a tie, a last dip.
VAL_ACCS = [0.25, 0.125, 0.25, 0.5, 0.5, 0.375, 0.5, 0.25]
TEST_EPOCHS = [1, 3, 4, 5, 7]  # val acc >= every earlier one
BEST_RUN = epoch_script(losses=[[e, e + 1.0] for e in range(1, 9)], accs=[[e / 16, e / 8] for e in range(1, 9)],
                        val_accs=VAL_ACCS)


@pytest.fixture(scope="module")
def best_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    return run_to_folder(BEST_RUN, tmp_path_factory.mktemp("runs"), n_train=8, batch_size=4)


def test_test_split_is_evaluated_exactly_on_best_or_tied_validation(best_run: FinishedRun) -> None:
    model, history = best_run.model, best_run.history
    assert model.epochs_evaluated("test") == TEST_EPOCHS
    assert model.epochs_evaluated("val") == [1, 2, 3, 4, 5, 6, 7, 8]
    expected = []
    for epoch in range(1, 9):  # validation first, then the test split on a best epoch
        expected.append(Evaluation("val", epoch, EVAL_BATCH))
        if epoch in TEST_EPOCHS:
            expected.append(Evaluation("test", epoch, EVAL_BATCH))
    assert model.evaluations == expected
    assert [r.test_acc for r in history] == [0.01, None, 0.03, 0.04, 0.05, None, 0.07, None]
    assert [r.test_loss for r in history] == [21.0, None, 23.0, 24.0, 25.0, None, 27.0, None]
    assert [r.val_acc for r in history] == VAL_ACCS and [r.val_loss for r in history] == [11.0 + i for i in range(8)]


def test_metrics_json_holds_the_seven_figures(best_run: FinishedRun) -> None:
    metrics = best_run.metrics
    # Last epoch (8): steps (8, 9) -> loss 8.5; accs (8/16, 8/8) -> 0.75; val (18, 0.25).
    # Best validation 0.5, last reached in epoch 7: the final test is epoch 7's (27, 0.07).
    figures = {k: metrics[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc",
                                       "test_loss", "test_acc", "best_epoch", "epochs")}
    assert figures == {"train_loss": 8.5, "train_acc": 0.75, "val_loss": 18.0, "val_acc": 0.25, "best_val_acc": 0.5,
                       "test_loss": 27.0, "test_acc": 0.07, "best_epoch": 7, "epochs": 8}
    assert metrics["backend"] == "scripted" and metrics["name"] == "scripted" and len(metrics["epoch_seconds"]) == 8


def test_without_a_validation_split_every_epoch_is_best(tmp_path: Path) -> None:
    run = run_to_folder(epoch_script(losses=[[1.0], [2.0], [3.0]]), tmp_path, n_train=2, batch_size=2, n_val=0)
    assert run.model.epochs_evaluated("val") == [] and run.model.epochs_evaluated("test") == [1, 2, 3]
    assert all(math.isnan(r.val_loss) and math.isnan(r.val_acc) for r in run.history)
    metrics = run.metrics
    assert (metrics["test_loss"], metrics["test_acc"], metrics["best_epoch"]) == (23.0, 0.03, 3)


def test_the_protocol_calls(best_run: FinishedRun) -> None:
    model = best_run.model
    assert [(s.name, s.num_examples) for s in model.placed] == [("train", 8), ("val", 4), ("test", 4)]
    assert len(model.optimizer_configs) == 1 and model.optimizer_configs[0].batch_size == 4
    assert [c.epoch for c in model.train_calls] == [1, 2, 3, 4, 5, 6, 7, 8]  # one call per epoch without progress


# --- training figures are means over the epoch's steps, however the steps are chunked ---------------

@pytest.mark.parametrize("progress", [False, True])
def test_train_loss_and_accuracy_are_means_over_the_steps(progress: bool) -> None:
    # 12 examples, batch 3: 4 steps per epoch. Epoch 1: (1+2+4+1)/4 = 2, (.25+.5+.75+.5)/4 = .5;
    # epoch 2: (.5+.25+.75+.5)/4 = .5, (1+.75+.5+.75)/4 = .75.
    script = epoch_script(losses=[[1.0, 2.0, 4.0, 1.0], [0.5, 0.25, 0.75, 0.5]],
                          accs=[[0.25, 0.5, 0.75, 0.5], [1.0, 0.75, 0.5, 0.75]])
    model, history = train(script, n_train=12, batch_size=3, progress=progress)
    assert [(r.train_loss, r.train_acc) for r in history] == [(2.0, 0.5), (0.5, 0.75)]
    # With the progress bar: one call per step here (4 steps, up to 20 chunks); without: one per epoch.
    assert [len(c.batches) for c in model.train_calls] == ([1] * 8 if progress else [4, 4])


def test_progress_chunks_of_unequal_size_keep_the_means() -> None:
    # 25 steps of batch 1 in 20 chunks: 5 of 2 steps, then 15 of 1. Losses 0..24: mean 12;
    # accuracies 12 zeros and 13 ones: mean 13/25 = 0.52.
    script = epoch_script(losses=[[float(i) for i in range(25)]], accs=[[0.0] * 12 + [1.0] * 13])
    model, history = train(script, n_train=25, batch_size=1, progress=True)
    assert [len(c.batches) for c in model.train_calls] == [2] * 5 + [1] * 15
    np.testing.assert_array_equal(model.batches_of(1), np.arange(25).reshape(25, 1))
    assert (history[0].train_loss, history[0].train_acc) == (12.0, 0.52)


# --- the lr schedule: lr *= decay when an epoch's loss exceeds the max of the three before ----------

@pytest.mark.parametrize("losses, decay, lrs", [
    # rising: epoch 4's loss 4 > max(1, 2, 3): lr halves for epoch 5, and again after epoch 5.
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0.5, [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]),
    ([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 0.5, [1.0] * 6),  # falling: never
    ([2.0] * 6, 0.5, [1.0] * 6),  # flat: equal is not "exceeds"
    # The window is exactly three: epoch 5's 2 < max(3, 1, 1) (two back would decay), epoch 6's
    # 2.5 > max(1, 1, 2) (four back, or all of history, would not): only epoch 7 runs at 0.5.
    ([1.0, 3.0, 1.0, 1.0, 2.0, 2.5, 0.5], 0.5, [1.0] * 6 + [0.5]),
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1.0, [1.0] * 6),  # decay 1.0 is off
], ids=["rising", "falling", "flat", "window", "off"])
def test_lr_schedule(losses: list[float], decay: float, lrs: list[float]) -> None:
    model, history = train(epoch_script(losses=[[v] for v in losses]), n_train=2, batch_size=2, lr_decay=decay)
    assert model.lrs() == lrs and [r.lr for r in history] == lrs
    assert [r.train_loss for r in history] == losses


# --- batch order: file order first, then an in-place RandomState shuffle after every epoch ----------

def lab_orders(n: int, seed: int, epochs: int) -> list[list[int]]:
    """The lab framework's orders, written out independently of netspec.training.trainer.epoch_orders."""
    order, rng, out = list(range(n)), np.random.RandomState(seed), []
    for _ in range(epochs):
        out.append(list(order))
        rng.shuffle(order)  # in place, on the previous epoch's order
    return out


def test_first_epoch_in_file_order_then_reshuffled() -> None:
    model, _ = train(epoch_script(losses=[[1.0, 1.0]] * 3), n_train=10, batch_size=5)
    seen = [model.batches_of(e).ravel().tolist() for e in (1, 2, 3)]
    assert seen == [list(range(10)), [8, 1, 5, 0, 7, 2, 9, 4, 3, 6], [8, 1, 3, 2, 0, 7, 4, 6, 9, 5]]
    assert seen == lab_orders(10, 42, 3)
    assert model.batches_of(1).tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # consecutive slices


def test_shuffle_seed_is_used() -> None:
    model, _ = train(epoch_script(losses=[[1.0, 1.0]] * 2), n_train=10, batch_size=5, shuffle_seed=7)
    assert model.batches_of(2).ravel().tolist() == [8, 5, 0, 2, 1, 9, 7, 3, 6, 4] == lab_orders(10, 7, 2)[1]


def test_last_partial_batch_is_dropped() -> None:
    # 10 examples, batch 3: 3 steps; index 9 never seen in epoch 1, index 6 (10th of epoch 2's order) in epoch 2.
    script = epoch_script(losses=[[1.0, 2.0, 6.0]] * 2, accs=[[0.0, 0.5, 1.0]] * 2)
    model, history = train(script, n_train=10, batch_size=3)
    assert model.batches_of(1).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert model.batches_of(2).tolist() == [[8, 1, 5], [0, 7, 2], [9, 4, 3]]
    assert [(r.train_loss, r.train_acc) for r in history] == [(3.0, 0.5), (3.0, 0.5)]


def test_batch_larger_than_the_training_split_is_a_spec_error() -> None:
    with pytest.raises(ns.SpecError, match="batch_size 11 is larger than the training split"):
        train(epoch_script(losses=[[1.0]]), n_train=10, batch_size=11)


# --- a long first epoch on a CPU is announced ------------------------------------------------------

def test_a_long_first_epoch_on_a_cpu_is_projected_from_its_first_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    import netspec.training.trainer as trainer

    monkeypatch.setattr(trainer, "LONG_EPOCH_S", 0.0)  # every epoch counts as long
    script = epoch_script([[1.0] * 20, [1.0] * 20])
    experiment, data = setup(script, n_train=20, batch_size=1)
    model = ScriptedModel(experiment.network, script)
    model.device = "cpu"
    lines: list[str] = []
    history = fit(model, experiment, data, log=lines.append, progress=False)
    projections = [line for line in lines if "per epoch" in line]
    assert len(projections) == 1 and projections[0].startswith("epoch 1/2 on cpu: about ")
    assert "for the 2 epochs to go (projected from 3 steps)" in projections[0]
    # epoch 1: 3 warm-up steps, 3 timed steps, then the rest in one call; epoch 2: one call
    assert [len(c.batches) for c in model.train_calls] == [3, 3, 14, 20]
    assert [r.train_loss for r in history] == [1.0, 1.0]


def test_an_epoch_line_says_which_figure_is_which() -> None:
    record = EpochRecord(3, 1.77489, 0.37371, 1.6, 0.42, 1e-3, 3.14, 12903.0, test_loss=1.5, test_acc=0.43)
    assert record.line(50) == ("epoch  3/50  train loss 1.7749 acc 0.3737  val loss 1.6000 acc 0.4200  "
                               "test loss 1.5000 acc 0.4300  3.1s 12,903 img/s")


# --- the recipe: per-step lrs, augmentation plans, early stopping, flip TTA ---------------

def recipe_train(script: Script, train: dict[str, Any], progress: bool = False, n_train: int = 8,
                 batch_size: int = 2) -> tuple[ScriptedModel, list[EpochRecord], ns.Experiment]:
    """fit() on images of shape (1, 2, 2) (augmentation needs images) with recipe fields in `train`."""
    network = ns.Network(input_shape=(1, 2, 2), layers=[ns.Flatten(), ns.Linear(out_features=2)])
    config = ns.TrainConfig.model_validate({"batch_size": batch_size, "epochs": len(script.test),
                                            "eval_batch_size": EVAL_BATCH, "lr": 1.0, **train})
    experiment = ns.Experiment(name="recipe", network=network, train=config)
    model = ScriptedModel(network, script)
    return model, fit(model, experiment, scripted_data(n_train, 4, 4), log=lambda line: None, progress=progress), experiment


@pytest.mark.parametrize("progress", [False, True])
def test_a_step_schedule_hands_every_step_its_own_lr(progress: bool) -> None:
    # 4 steps per epoch, knots 0 -> 1 at epoch 1 -> 0 at epoch 2: step s of the run at s / 4 of an epoch.
    script = epoch_script(losses=[[1.0] * 4, [1.0] * 4])
    model, history, _ = recipe_train(script, {"schedule": {"type": "piecewise_linear", "knots": [[0, 0], [1, 1], [2, 0]]}},
                                     progress=progress)
    assert model.step_lrs(1).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert model.step_lrs(2).tolist() == [1.0, 0.75, 0.5, 0.25]
    assert [r.lr for r in history] == [0.75, 0.25]  # the record: the epoch's last step's lr


def test_a_constant_lr_is_handed_as_one_float_as_before() -> None:
    model, _, _ = recipe_train(epoch_script(losses=[[1.0] * 4]), {})
    assert all(type(call.lr) is float and call.augment is None for call in model.train_calls)


def test_augmentation_plans_follow_seed_epoch_and_the_calls_rows() -> None:
    from netspec.protocol.augment import draw

    train = {"augment": {"crop_padding": 1, "flip": True, "cutout": 1}, "seed": 5}
    model, _, experiment = recipe_train(epoch_script(losses=[[1.0] * 4] * 2), train, progress=True)
    assert len(model.train_calls) == 8  # one per step with a progress bar: each call its own rows
    for call in model.train_calls:
        want = draw(experiment.train.augment, 5, call.epoch, call.batches, 2, 2)
        for field in want.__dataclass_fields__:
            assert np.array_equal(getattr(call.augment, field), getattr(want, field)), field
    first, second = (np.concatenate([c.augment.dx for c in model.train_calls if c.epoch == e]) for e in (1, 2))
    assert not np.array_equal(first, second)  # a new draw every epoch


def test_early_stopping_after_patience_epochs_without_a_best(tmp_path: Path) -> None:
    # val acc: best at epoch 2, not reached in epochs 3 and 4: patience 2 stops after epoch 4.
    script = epoch_script(losses=[[1.0]] * 6, val_accs=[0.25, 0.5, 0.25, 0.375, 0.5, 0.125])
    model, history, _ = recipe_train(script, {"early_stopping_patience": 2}, n_train=2)
    assert [r.epoch for r in history] == [1, 2, 3, 4] and model.epochs_evaluated("test") == [1, 2]
    model, history, _ = recipe_train(script, {"early_stopping_patience": 3}, n_train=2)
    assert len(history) == 6  # epoch 5 ties the best: it counts, as for the final test
    network = ns.Network(input_shape=(1, 2, 2), layers=[ns.Flatten(), ns.Linear(out_features=2)])
    experiment = ns.Experiment(name="stops", network=network, train=ns.TrainConfig(
        batch_size=2, epochs=6, eval_batch_size=EVAL_BATCH, early_stopping_patience=2))
    _, folder = run_experiment(experiment, ScriptedBackend(script), tmp_path, dataset=scripted_data(2, 4, 4),
                               log=lambda line: None, progress=False)
    metrics = json.loads((folder / run_folder.METRICS).read_text())
    assert metrics["epochs"] == 4 and metrics["stopped_early"]["epoch"] == 4
    assert "patience 2" in metrics["stopped_early"]["reason"] and (folder / "lr.png").stat().st_size > 1000


def test_a_run_of_every_epoch_records_no_early_stop(best_run: FinishedRun) -> None:
    assert "stopped_early" not in best_run.metrics


def test_flip_test_time_augmentation_is_asked_for_every_evaluation() -> None:
    model, _, _ = recipe_train(epoch_script(losses=[[1.0]] * 2, val_accs=[0.5, 0.5]), {"test_time_flip": True}, n_train=2)
    assert model.evaluations and all(e.flip for e in model.evaluations)


def test_the_lr_plot_shows_the_lab_schedules_decayed_lr_per_step() -> None:
    from netspec.runs.lr_plot import run_lrs

    config = ns.TrainConfig(lr=1.0, lr_decay=0.5, epochs=3)
    history = [EpochRecord(e, 1.0, 0.5, 1.0, 0.5, lr, 1.0, 1.0) for e, lr in ((1, 1.0), (2, 1.0), (3, 0.5))]
    x, lrs = run_lrs(history, config, 2)
    assert x.tolist() == [0, 0.5, 1, 1.5, 2, 2.5] and lrs.tolist() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


SCHEDULES = {"lab, decayed": {"lr_decay": 0.5}, "constant": {"schedule": {"type": "constant"}},
             "piecewise_linear": {"schedule": {"type": "piecewise_linear", "knots": [[0, 0], [0.75, 1], [3, 0.1]]}},
             "onecycle": {"schedule": {"type": "onecycle"}}, "cosine": {"schedule": {"type": "cosine", "warmup_epochs": 1}},
             "step": {"schedule": {"type": "step", "step_epochs": 1, "gamma": 0.5}}}


@pytest.mark.parametrize("train", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_the_lr_plot_draws_exactly_the_lrs_the_model_was_handed(train: dict[str, Any]) -> None:
    """What lr.png draws (run_lrs over the history) against what the model received in its train_steps
    calls (the scripted model records them): every step, bit for bit, for every schedule type. The
    losses rise in epoch 4, so the lab rule decays the lr there."""
    script = epoch_script(losses=[[1.0] * 4, [0.9] * 4, [0.8] * 4, [2.0] * 4, [1.0] * 4])
    model, history, experiment = recipe_train(script, train)
    from netspec.runs.lr_plot import run_lrs

    x, drawn = run_lrs(history, experiment.train, 4)
    handed = np.concatenate([model.step_lrs(e) for e in range(1, 6)])
    assert drawn.tolist() == handed.tolist() and x.tolist() == [s / 4 for s in range(20)]
    constant = train.get("schedule", {}).get("type") == "constant"
    assert len(set(handed.tolist())) == 1 if constant else len(set(handed.tolist())) > 1  # the lab one moves by its decay
