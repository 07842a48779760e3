"""One training run end to end: data, compile, fit, and every output file of the run's folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from . import run_folder
from .backend import Backend
from .experiment import Experiment
from .params import save_weights
from .plots import plot_run
from .tables import metrics_table
from .trainer import EpochRecord, fit


def run_experiment(experiment: Experiment, backend: Backend, out_root: str | Path = "runs",
                   device: Optional[str] = None, force: bool = False, dataset: Any = None,
                   log: Callable[[str], None] = print, progress: bool | None = None) -> tuple[dict[str, Any], Path]:
    """Train `experiment` on `backend` (a netspec.backend.Backend, e.g. `load_backend("jax")`) and write
    runs/<name>/<backend>/<run-id>/. Returns (metrics, folder).

    A finished run with the same resolved experiment is reused unless `force`.
    `dataset` may be given to share one loaded dataset across runs (a sweep).
    """
    from .data import load_dataset

    name = backend.name
    backend.device(device)  # a device asked for and absent is a SetupError, even where a finished run exists
    directory = run_folder.run_dir(out_root, experiment, name)
    done = None if force else run_folder.finished_metrics(directory)
    if done is not None:
        log(f"{experiment.name} [{name}]: finished run found in {directory}, reusing it (--force trains again)")
        return done, directory
    data = dataset if dataset is not None else load_dataset(experiment.data)
    model = backend.compile(experiment.network, seed=experiment.train.seed, device=device)
    directory.mkdir(parents=True, exist_ok=True)
    experiment.save(directory / run_folder.SPEC)
    run_folder.write_preprocess(directory, data)
    run_folder.write_json_atomic(directory / run_folder.ENV, run_folder.environment(backend.describe() | {"device": model.device}, data.source))
    log(f"{experiment.name} [{name} on {model.device}]: {len(data.train_y):,} train / {len(data.val_y):,} val / "
        f"{len(data.test_y):,} test images, {experiment.network.num_params():,} parameters -> {directory}")
    history: list[EpochRecord] = []

    def on_epoch(record: EpochRecord, is_best: bool) -> None:
        history.append(record)
        run_folder.write_history(directory, history)  # every epoch: a killed run keeps what it did
        if is_best:
            save_weights(model.get_weights(), directory / run_folder.WEIGHTS)

    fit(model, experiment, data, on_epoch=on_epoch, log=log, progress=progress)
    plot_run(history, directory, f"{experiment.name} ({name})")
    metrics = run_folder.write_metrics(directory, history, {"backend": name, "device": model.device, "name": experiment.name})
    log(metrics_table({f"{experiment.name} [{name}]": metrics}))
    log(f"median epoch {metrics['median_epoch_seconds']:.2f}s; files in {directory}")
    return metrics, directory
