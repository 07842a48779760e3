"""The Python API: `ns.train(experiment_or_path, backend="torch", **options)` -> `TrainResult`.

    import netspec as ns
    result = ns.train("specs/cnn.json", backend="torch", tiny=True, epochs=1)
    result.metrics["test_acc"], result.folder, result.history[-1].val_loss

It is `netspec train` for one experiment on one backend, in the caller's process: the CLI's thread rule
(netspec.training.threads: every backend computes with `threads` CPU threads, default the physical cores less
the machine's load), the CLI's one-line errors (a bad spec is an `ns.SpecError` whose `details` carry
pydantic's error list), the same run folders, ids and reuse of finished runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from netspec.errors import SpecError, did_you_mean
from netspec.io import read_json
from netspec.protocol.backend import backend_names, load_backend
from netspec.runs import run_folder
from netspec.runs.training_run import run_experiment
from netspec.spec.experiment import Experiment
from netspec.spec.overrides import apply_overrides
from netspec.training.threads import check_threads
from netspec.training.history import EpochRecord, record_from_dict

TINY = {"train_size": 2_500, "val_size": 500, "test_size": 500}
"""What `tiny` makes of any experiment's data: 2,000 training, 500 validation and 500 test images (a spec
without a validation split, val_size 0, keeps none), so a first try of any spec takes seconds an epoch."""


def tiny_overrides(spec: Experiment | dict[str, Any], overrides: Sequence[str] = (), source: str = "--tiny") -> list[str]:
    """The --set items that shrink an experiment (its train, validation and test splits together, TINY):
    the one statement of the rule, for `tiny=True` and the CLI's --tiny. `spec`: an Experiment, or an
    experiment's JSON as its file says it (bases merged: the val_size a base gives counts). The caller's
    `overrides` of the data section count as the spec's own (`--set data.val_size=0` keeps no validation
    split); they still win over these items, coming after them."""
    data = spec.model_dump(mode="json") if isinstance(spec, Experiment) else spec
    edits = [o for o in overrides if o.partition("=")[0].strip().split(".")[0] == "data"]
    data = apply_overrides(data if isinstance(data, dict) else {}, edits, source)
    section = data.get("data")
    val_size = section.get("val_size") if isinstance(section, dict) else None  # None: the default, not 0
    val = 0 if val_size == 0 else TINY["val_size"]
    train = TINY["train_size"] - TINY["val_size"] + val
    return [f"data.train_size={train}", f"data.val_size={val}", f"data.test_size={TINY['test_size']}"]


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns: the run's figures, its folder and its per-epoch history."""

    metrics: dict[str, Any]
    """metrics.json: train_loss/acc, val_loss/acc, best_val_acc, test_loss/acc (the final test), best_epoch,
    epochs, epoch_seconds, median_epoch_seconds, backend, device, ..."""
    folder: Path
    """The run folder OUT/<name>/<backend>/<run-id> (spec.json, history.csv, acc.png, weights ...)."""
    history: list[EpochRecord]
    """One record per epoch (train/val/test loss and accuracy, lr, seconds, images per second)."""
    experiment: Experiment
    """The experiment as run (options applied)."""
    backend: str

    @property
    def test_acc(self) -> Optional[float]:
        """The final test accuracy (at the last best validation accuracy)."""
        return self.metrics.get("test_acc")

    def figure(self, name: str = "acc") -> Any:
        """One of the run's figures ('acc', 'loss', 'lr') as an image that Jupyter shows inline."""
        from IPython.display import Image  # only in a notebook, which has IPython
        return Image(filename=str(self.folder / f"{name}.png"))


def train(experiment: Experiment | str | Path, backend: str = "torch", *, out: str | Path = "runs",
          device: Optional[str] = None, threads: Optional[int] = None, tiny: bool = False,
          epochs: Optional[int] = None, seed: Optional[int] = None, overrides: Optional[list[str]] = None,
          force: bool = False, source: Optional[str | Path] = None, progress: Optional[bool] = None,
          tensorboard: bool = False, log: Callable[[str], None] = print) -> TrainResult:
    """Train one experiment (an `ns.Experiment`, or the path of a spec file) on one backend.

    out: the runs folder; device: 'cpu' or 'gpu[:N]' (default: a GPU when there is one); threads: CPU
    threads (default as the CLI); tiny: shrink train, validation and test together (TINY); epochs, seed:
    as --epochs/--seed; overrides: --set items ('train.lr=0.01'); force: train again though a finished
    identical run exists; source: a run folder to continue (--from); progress: the epoch bar (default:
    on a terminal, or in a notebook); log: where the run's lines go. Bad input raises one-line
    NetspecErrors (SpecError, DataError, SetupError), as the CLI prints them.
    """
    known = backend_names()
    if backend not in known:
        raise SpecError(f"backend {backend!r}: unknown{did_you_mean(backend, known)}; use one of {', '.join(known)}")
    resolved = _experiment(experiment, tiny, epochs, seed, overrides or [])
    chosen = load_backend(backend)
    chosen.set_threads(check_threads(threads))  # None: the CLI's default, not torch's spinning one per core
    metrics, folder = run_experiment(resolved, chosen, out_root=out, device=device, force=force, log=log,
                                     progress=progress, tensorboard=tensorboard, source=source)
    return TrainResult(metrics, folder, _history(folder), resolved, backend)


def _experiment(experiment: Experiment | str | Path, tiny: bool, epochs: Optional[int], seed: Optional[int],
                overrides: list[str]) -> Experiment:
    if isinstance(experiment, (str, Path)):
        resolved = Experiment.load(experiment)
    elif isinstance(experiment, Experiment):
        resolved = experiment
    else:
        raise SpecError(f"train takes an ns.Experiment or the path of a spec file, not {type(experiment).__name__}")
    short = [f"{k}={json.dumps(v)}" for k, v in (("train.epochs", epochs), ("train.seed", seed)) if v is not None]
    items = short + list(overrides)
    if tiny:  # sized after the caller's overrides (their val_size counts), which still win over it
        items = tiny_overrides(resolved, items) + items
    return resolved.with_overrides(items) if items else resolved


def _history(folder: Path) -> list[EpochRecord]:
    """The run's history.json read back (validated: each row a record)."""
    rows = read_json(folder / run_folder.HISTORY_JSON)  # bounded in size and depth
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{folder / run_folder.HISTORY_JSON}: not a list of epoch records")
    return [record_from_dict(row) for row in rows]
