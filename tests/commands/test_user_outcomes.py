"""What a user would lose, each checked against an independent reference.

- the best weights: a run whose last epoch is not its best keeps the best epoch's model in
  best_weights.npz, and evaluate, predict and export use it (the reference: the model's weights
  recorded at each epoch's validation pass, by a wrapper around the real backend);
- seeds: `--seeds 3` gives three folders, each with its own seeds recorded and its own results;
- resume with lr decays: a run stopped and resumed while the lab's lr rule is decaying gets the lrs a
  hand computation of the rule gives, as the uninterrupted run does;
- temporary files: every write of a run creates its temporary file beside its target (a `runs/` on
  another file system than the system's temp folder must work) and nothing in the temp folder;
- the paired bootstrap: a constant difference gives the interval [c, c], known data scipy's interval;
- a sweep over data.val_size: each point trained on its own data (the reference: each point run alone);
- export: a pool with different paddings in height and width matches the backend.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from PIL import Image

import netspec as ns
import runner
from netspec.protocol.backend import installed_backends, load_backend
from netspec.deploy.inference import evaluate_run, load_run, predict, softmax
from netspec.spec.params import load_weights
from netspec.runs.run_folder import HISTORY_JSON, METRICS, SPEC, WEIGHTS, RunFolder
from netspec.runs.stats import paired_difference
from netspec.sweeps.sweep import write_report
from netspec.runs.training_run import run_experiment
from tests.helpers import TINY_DATA, write_json, write_spec
from tests.scripted import Script, ScriptedBackend, scripted_data

BACKENDS = installed_backends()
needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
quiet = lambda line: None  # noqa: E731


def mlp_experiment(name: str, epochs: int = 1, data: ns.DataConfig = TINY_DATA) -> ns.Experiment:
    """A small MLP (fast in both backends) on tiny synthetic data."""
    network = ns.Network(input_shape=(3, 32, 32), layers=[
        ns.Flatten(), ns.Linear(out_features=32, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.2),
        ns.Linear(out_features=10)])
    return ns.Experiment(name=name, network=network, data=data,
                         train=ns.TrainConfig(lr=1e-2, batch_size=50, epochs=epochs, eval_batch_size=128))


# ---- best weights: the best validation epoch's model, not the last one ----------------------------------

RUINED_EPOCH = 3
RUIN_FACTOR = 300.0
"""The last epoch's steps run at this multiple of the lr: Adam steps of ~3 wreck the model, so the best
validation epoch is an earlier one, on any CPU."""
VAL_SIZE = 150
"""Not the test split's size (200): the recording wrapper tells the splits apart by size."""


class _RecordingModel:
    """A real backend's model whose steps in epoch RUINED_EPOCH use RUIN_FACTOR x the lr, and which keeps a
    copy of its weights at each validation pass (the weights of that epoch's model)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.snapshots: list[ns.Weights] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def train_steps(self, data: Any, batches: np.ndarray, lr: float) -> tuple[float, float]:
        epoch = len(self.snapshots) + 1
        return self._model.train_steps(data, batches, lr * (RUIN_FACTOR if epoch == RUINED_EPOCH else 1.0))

    def evaluate(self, data: Any, batch_size: int) -> tuple[float, float]:
        if data.num_examples == VAL_SIZE:
            self.snapshots.append(self._model.get_weights())
        return self._model.evaluate(data, batch_size)


class _RecordingBackend:
    """The named real backend, its models wrapped in _RecordingModel; the run folder is that backend's."""

    def __init__(self, name: str) -> None:
        self._backend = load_backend(name)
        self.name = name
        self.model: Optional[_RecordingModel] = None

    def compile(self, *args: Any, **kwargs: Any) -> _RecordingModel:
        self.model = _RecordingModel(self._backend.compile(*args, **kwargs))
        return self.model

    def describe(self) -> dict[str, Any]:
        return self._backend.describe()

    def device(self, name: Optional[str] = None) -> str:
        return self._backend.device(name)


@pytest.fixture(scope="module")
def ruined_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ns.Weights]]:
    """A torch run of 3 epochs whose last epoch is ruined; (its folder, its weights after each epoch)."""
    data = TINY_DATA.model_copy(update={"val_size": VAL_SIZE})
    experiment = mlp_experiment("ruined", epochs=RUINED_EPOCH, data=data)
    backend = _RecordingBackend("torch")
    _, folder = run_experiment(experiment, backend, tmp_path_factory.mktemp("ruined"), device="cpu", log=quiet, progress=False)
    assert backend.model is not None and len(backend.model.snapshots) == RUINED_EPOCH
    return folder, backend.model.snapshots


def _best_and_last(folder: Path) -> tuple[int, dict[str, Any]]:
    metrics = json.loads((folder / METRICS).read_text())
    history = json.loads((folder / HISTORY_JSON).read_text())
    # the premise: the best validation epoch is not the last, by a clear margin
    assert metrics["best_epoch"] < RUINED_EPOCH
    assert history[-1]["val_acc"] < metrics["best_val_acc"] - 0.05
    return metrics["best_epoch"], metrics


def _differ(a: ns.Weights, b: ns.Weights) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


@needs_torch
def test_best_weights_are_the_best_epochs_model_not_the_last(ruined_run: tuple[Path, list[ns.Weights]]) -> None:
    folder, snapshots = ruined_run
    best, _ = _best_and_last(folder)
    network = ns.Experiment.load(folder / SPEC).network
    saved = load_weights(folder / WEIGHTS, network)
    assert not _differ(saved, snapshots[best - 1]), "best_weights.npz is not the best epoch's model"
    assert _differ(saved, snapshots[-1])


@needs_torch
def test_evaluate_and_predict_use_the_best_epochs_model(ruined_run: tuple[Path, list[ns.Weights]], tmp_path: Path) -> None:
    folder, snapshots = ruined_run
    best, metrics = _best_and_last(folder)
    evaluation, _ = evaluate_run(folder, "torch", out_dir=tmp_path / "evaluation", device="cpu", log=quiet)
    # the final test figures were measured during training, by the best epoch's model
    assert evaluation.accuracy == pytest.approx(metrics["test_acc"], abs=1e-12)
    assert evaluation.loss == pytest.approx(metrics["test_loss"], rel=1e-5)
    saved = load_run(folder, quiet)
    network = saved.experiment.network
    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(paths[-1])
    predictions = predict(folder, "torch", paths, device="cpu", log=quiet)
    inputs = saved.preprocess.apply(pixels).reshape(len(pixels), *network.input_shape)

    def probabilities(weights: ns.Weights) -> np.ndarray:
        model = load_backend("torch").compile(network, weights, device="cpu")
        return softmax(model.forward(inputs.astype(np.float32), train=False).astype(np.float64))

    expected, last = probabilities(snapshots[best - 1]), probabilities(snapshots[-1])
    got = np.stack([p.probabilities for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - last).max() > 1e-3


@needs_torch
def test_export_uses_the_best_epochs_model(ruined_run: tuple[Path, list[ns.Weights]], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from netspec.deploy import export

    folder, snapshots = ruined_run
    best, _ = _best_and_last(folder)
    path = export.export_run(folder, tmp_path / "model.onnx", log=quiet)
    network = ns.Experiment.load(folder / SPEC).network
    x = np.random.default_rng(1).standard_normal((5, *network.input_shape)).astype(np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([export.OUTPUT], {export.INPUT: x})
    backend = load_backend("torch")
    expected = backend.compile(network, snapshots[best - 1], device="cpu").forward(x)
    last = backend.compile(network, snapshots[-1], device="cpu").forward(x)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(got - last).max() > 1e-2


# ---- seeds: three seeds, three folders, three results -----------------------------------------------

@needs_torch
def test_seeds_3_trains_three_seeds_into_three_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = mlp_experiment("seeded")
    spec = write_spec(tmp_path, experiment)
    out = tmp_path / "runs"
    assert runner.main(["train", str(spec), "--backend", "torch", "--out", str(out), "--device", "cpu", "--seeds", "3"]) == 0
    folders = sorted(p for p in (out / "seeded" / "torch").iterdir() if p.is_dir())
    assert len(folders) == 3
    recorded = {}
    for folder in folders:
        train = json.loads((folder / SPEC).read_text())["train"]
        recorded[train["seed"]] = folder
        assert train["shuffle_seed"] == experiment.train.shuffle_seed + train["seed"]
        assert json.loads((folder / METRICS).read_text())["status"] == "finished"
    assert sorted(recorded) == [0, 1, 2]
    # each seed's folder is the one of the experiment written with that seed by hand
    for seed, folder in recorded.items():
        by_hand = experiment.model_copy(update={"train": experiment.train.model_copy(
            update={"seed": seed, "shuffle_seed": experiment.train.shuffle_seed + seed})})
        assert RunFolder.of(out, by_hand, "torch").path == folder
    results = [json.loads((recorded[s] / METRICS).read_text()) for s in range(3)]
    assert len({r["train_loss"] for r in results}) == 3, "three seeds gave the same training"
    weights = [load_weights(recorded[s] / WEIGHTS, experiment.network) for s in range(3)]
    assert _differ(weights[0], weights[1]) and _differ(weights[1], weights[2]) and _differ(weights[0], weights[2])


# ---- resume while the lr schedule decays ---------------------------------------------------------------

LOSSES = [1.0, 0.9, 0.8, 1.5, 0.7, 1.6, 0.6]
"""One step per epoch. The lab's rule (lr *= decay when a loss exceeds the max of the three before) fires
after epoch 4 (1.5 > 1.0) and after epoch 6 (1.6 > max(0.8, 1.5, 0.7)): the second decay depends on
losses from before the resume point (epoch 5)."""
LR, DECAY = 0.1, 0.5
EXPECTED_LRS = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025]


def _decay_script(epochs: int) -> Script:
    return Script(step_losses=LOSSES[:epochs], step_accs=[0.5] * epochs, val=[(1.0, 0.5)] * epochs,
                  test=[(1.0, 0.5)] * epochs)


def _decay_experiment() -> ns.Experiment:
    network = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)])
    return ns.Experiment(name="decaying", network=network, train=ns.TrainConfig(
        lr=LR, lr_decay=DECAY, batch_size=4, epochs=len(LOSSES), eval_batch_size=4))


def _untimed(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    timing = {"seconds", "images_per_s", "epoch_seconds", "median_epoch_seconds", "compile_seconds"}
    history = [{k: v for k, v in row.items() if k not in timing} for row in json.loads((folder / HISTORY_JSON).read_text())]
    return history, {k: v for k, v in json.loads((folder / METRICS).read_text()).items() if k not in timing}


def test_a_run_resumed_while_the_lr_decays_gets_the_lrs_of_the_rule(tmp_path: Path) -> None:
    experiment = _decay_experiment()
    whole = ScriptedBackend(_decay_script(len(LOSSES)))
    run_experiment(experiment, whole, tmp_path / "whole", dataset=scripted_data(4, 2, 2), log=quiet, progress=False)
    assert whole.model is not None and whole.model.lrs() == pytest.approx(EXPECTED_LRS, rel=1e-15)

    stopped = ScriptedBackend(_decay_script(5))  # asking for epoch 6's step stops the run there
    with pytest.raises(AssertionError, match="step 6 asked for"):
        run_experiment(experiment, stopped, tmp_path / "resumed", dataset=scripted_data(4, 2, 2), log=quiet, progress=False)
    resumed = ScriptedBackend(_decay_script(len(LOSSES)))
    lines: list[str] = []
    _, folder = run_experiment(experiment, resumed, tmp_path / "resumed", dataset=scripted_data(4, 2, 2), log=lines.append,
                               progress=False)
    assert any("resuming" in line and "after epoch 5" in line for line in lines)
    assert resumed.model is not None and resumed.model.lrs() == pytest.approx(EXPECTED_LRS[5:], rel=1e-15)
    history, metrics = _untimed(folder)
    assert [row["lr"] for row in history] == pytest.approx(EXPECTED_LRS, rel=1e-15)
    assert (history, metrics) == _untimed(RunFolder.of(tmp_path / "whole", experiment, "scripted").path)


# ---- temporary files beside their target ---------------------------------------------------------------

def test_every_write_of_a_run_and_its_report_makes_its_temporary_file_beside_its_target(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`runs/` on another file system than the temp folder: a rename across file systems fails, so every
    temporary file must be made in its target's folder. Here the temp folder is an empty folder of its
    own (nothing may appear in it) and every rename is recorded."""
    elsewhere = tmp_path / "system-temp"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    renames: list[tuple[Path, Path]] = []
    real_replace, real_rename = os.replace, os.rename

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst, *args, **kwargs)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        renames.append((Path(src), Path(dst)))
        real_rename(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    out = tmp_path / "runs"
    run_experiment(_decay_experiment(), ScriptedBackend(_decay_script(len(LOSSES))), out, dataset=scripted_data(4, 2, 2),
                   log=quiet, progress=False)
    folder = RunFolder.of(out, _decay_experiment(), "scripted").path
    write_report(out)
    renamed_into = {dst.name for _, dst in renames}
    assert {METRICS, HISTORY_JSON, WEIGHTS, SPEC, "checkpoint.npz", "env.json", "acc.png", "report.md", "runs.csv"} <= renamed_into
    for src, dst in renames:
        assert src.parent == dst.parent, f"{dst.name}: its temporary file {src} is not beside it"
    assert list(elsewhere.iterdir()) == []
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---- the paired bootstrap ---------------------------------------------------------------------------------

def test_a_constant_difference_has_the_interval_of_that_constant() -> None:
    a, b = [0.61, 0.58, 0.6, 0.57, 0.59], [0.56, 0.53, 0.55, 0.52, 0.54]  # a - b = 0.05 in every seed, to rounding
    d = np.asarray(a) - np.asarray(b)
    result = paired_difference(a, b)
    assert result.mean == pytest.approx(0.05, abs=1e-12)
    assert result.low == pytest.approx(d.min(), abs=1e-12) and result.high == pytest.approx(d.max(), abs=1e-12)
    assert result.low == pytest.approx(0.05, abs=1e-12) and result.marked
    exact = paired_difference([0.5] * 5, [0.25] * 5)  # bit-identical differences: the degenerate case
    assert (exact.mean, exact.low, exact.high, exact.marked) == (0.25, 0.25, 0.25, True)
    negative = paired_difference([0.25] * 5, [0.5] * 5)
    assert (negative.low, negative.high, negative.marked) == (-0.25, -0.25, True)


def test_the_interval_is_scipys_percentile_bootstrap_of_the_paired_differences() -> None:
    from scipy.stats import bootstrap

    # twelve irregular differences: resampled means nearly continuous, so another generator (or none)
    # moves the percentiles, which with a few seeds often fall on the same resampled mean by chance
    rng = np.random.default_rng(11)
    b = list(0.55 + 0.01 * rng.standard_normal(12))
    a = list(np.asarray(b) + 0.004 + 0.006 * rng.standard_normal(12))
    d = np.asarray(a) - np.asarray(b)
    expected = bootstrap((d,), np.mean, n_resamples=9999, confidence_level=0.95, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    result = paired_difference(a, b)
    assert paired_difference(a, b) == result  # the same report, the same intervals
    assert result.n == 12 and result.mean == pytest.approx(d.mean(), abs=1e-15)
    assert (result.low, result.high) == pytest.approx((expected.low, expected.high), abs=1e-15)
    assert d.min() < result.low < result.mean < result.high < d.max()  # not degenerate
    swapped = paired_difference(b, a)
    assert (swapped.low, swapped.high) == pytest.approx((-result.high, -result.low), abs=1e-12)


# ---- a sweep over data.val_size --------------------------------------------------------------------------

@needs_torch
def test_a_sweep_over_the_validation_size_trains_each_point_on_its_own_data(tmp_path: Path) -> None:
    base = write_spec(tmp_path, mlp_experiment("valsize"))
    sweep = write_json(tmp_path / "valsize_sweep.json", {
        "version": 1, "name": "valsize_sweep", "base": base.name, "mode": "grid",
        "axes": [{"name": "val_size", "paths": ["data.val_size"], "values": [100, 300]}]})
    out = tmp_path / "runs"
    assert runner.main(["train", str(sweep), "--backend", "torch", "--out", str(out), "--device", "cpu"]) == 0
    for val_size in (100, 300):
        experiment = ns.Experiment.load(base, [f"data.val_size={val_size}"])
        swept = json.loads((RunFolder.of(out, experiment, "torch").path / METRICS).read_text())
        alone, _ = run_experiment(experiment, load_backend("torch"), tmp_path / f"alone{val_size}", device="cpu",
                                  log=quiet, progress=False)
        for key in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
            assert swept[key] == alone[key], f"val_size={val_size}: {key}"
        assert round(alone["val_acc"] * val_size, 6) == round(alone["val_acc"] * val_size)  # a count of val_size images


# ---- export: a pool padded differently in height and width ----------------------------------------------

ASYMMETRIC = ns.Network(input_shape=(3, 9, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, padding=(0, 1)),
    ns.MaxPool2d(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    ns.MaxPool2d(kernel_size=2, stride=1, padding=(0, 1)),
    ns.Flatten(), ns.Linear(out_features=5)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_export_with_asymmetric_pool_padding_matches_the_backend(backend: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from netspec.deploy import export

    weights = ns.init_weights(ASYMMETRIC, 3)
    session = ort.InferenceSession(export.onnx_model(ASYMMETRIC, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    # negative inputs: a pool's padded cells must never win (-inf padding, not zeros)
    x = (np.random.default_rng(2).standard_normal((3, *ASYMMETRIC.input_shape)) - 2.0).astype(np.float32)
    (got,) = session.run([export.OUTPUT], {export.INPUT: x})
    expected = load_backend(backend).compile(ASYMMETRIC, weights, device="cpu").forward(x)
    assert got.shape == expected.shape == (3, 5)
    assert math.isfinite(float(np.abs(got).max()))
    np.testing.assert_allclose(got, expected, atol=1e-5)
