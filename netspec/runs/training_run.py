"""One training run end to end: data, compile, fit, and every output file of the run's folder.

A run is resumable: after every epoch the trainer's whole state goes to the folder's checkpoint, and
running the same experiment again goes on from it (bit-identical to never having stopped). A longer
run of the same trajectory (the same experiment but for train.epochs) starts from the checkpoint of
the longest shorter one, copied into its own folder, so finished folders are never changed. A run may
also continue another run's checkpoint, of any backend (`source`, `netspec train --from RUN_DIR`): the
dropout stream and every other piece of the state are framework-neutral, so the result is
the source's run continued; it gets its own folder, `<run-id>-from-<backend>-<source run id>`, and
records its source in env.json and metrics.json.
"""
from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from netspec.runs import run_folder
from netspec.protocol.backend import Backend, Model
from netspec.data import load_dataset
from netspec.errors import DivergedError, NetspecError, SetupError, SpecError
from netspec.spec.experiment import Experiment
from netspec.runs.lr_plot import LR_PLOT, lr_png
from netspec.spec.params import check_memory, check_trainable
from netspec.runs.plots import Switch, plot_run
from netspec.runs.identity import DEFAULTS_NOT_IN_IDENTITY, initial_weights, run_identity
from netspec.runs.run_folder import RunFolder, Trajectory
from netspec.runs.tables import metrics_table, plural
from netspec.runs.tensorboard import EVENTS_DIR, SCALARS, TensorBoardLog
from netspec.training.schedules import schedule_beyond_the_run, schedule_spans_the_run
from netspec.training.history import record_from_dict
from netspec.training.trainer import TrainerState, check_classes, early_stop, fit

Log = Callable[[str], None]


def run_experiment(experiment: Experiment, backend: Backend, out_root: str | Path = "runs",
                   device: Optional[str] = None, force: bool = False, dataset: Any = None,
                   log: Log = print, progress: bool | None = None, tensorboard: bool = False,
                   table: bool = True, source: Optional[str | Path] = None,
                   watch: Optional[Callable[[list[Any]], None]] = None) -> tuple[dict[str, Any], Path]:
    """Train `experiment` on `backend` (a netspec.protocol.backend.Backend, e.g. `load_backend("jax")`) and write
    runs/<name>/<backend>/<run-id>/. Returns (metrics, folder).

    A finished run with the same resolved experiment is reused unless `force`; an unfinished one goes
    on from its checkpoint. `force` trains from scratch in an attempt folder that replaces the run only
    when it finishes. A run that diverges raises DivergedError (also when reused as diverged).
    `dataset` may be given to share one loaded dataset across runs (a sweep). `tensorboard` also writes
    TensorBoard event files; `table` logs the seven figures at the end (a sweep prints one table of all
    its runs instead). `source`: a run folder (of any backend) whose checkpoint this run continues, in
    a folder of its own (see the module docstring). `watch(history)` runs after each epoch is saved (a
    search's pruner: it may raise to stop the run, which then stays resumable from that epoch's checkpoint).
    """
    trajectory = Trajectory.of(experiment)  # once per run: its checkpoints and every one it may start from
    origin = _origin(experiment, trajectory, Path(source), log) if source is not None else None
    options = _Options(log, progress, tensorboard, table, origin, watch)
    backend.device(device)  # a device asked for and absent is a SetupError, even where a finished run exists
    folder = RunFolder.of(out_root, experiment, backend.name)
    if origin is not None:
        folder = RunFolder(folder.path.with_name(f"{folder.path.name}-from-{origin.backend}-{origin.run_id}"), out_root)
    with folder.lock(log):
        folder.recover(log)
        done = None if force else folder.read_metrics(log)
        if done is not None:
            metrics = _reused(experiment, backend.name, folder, done, log)
            if tensorboard:
                _events_from_history(folder, log)
            return metrics, folder.path
        check_trainable(experiment.network)
        check_memory(experiment.network, experiment.train.batch_size)  # the real batch: activations scale with it
        data = dataset if dataset is not None else load_dataset(experiment.data)
        check_classes(experiment.network, data)  # before any folder or model is made
        if not force:
            start = _start_state(experiment, trajectory, folder, log, origin)
            return _train(experiment, trajectory, backend, folder, data, start, device, options), folder.path
        attempt = folder.new_attempt()
        try:  # the attempt takes the run's place when it is done: the user is told the run's folder
            start = origin.state if origin is not None else None
            metrics = _train(experiment, trajectory, backend, attempt, data, start, device, options, shown_as=folder.path)
        except DivergedError:
            folder.replace_with(attempt)  # a diverged forced run is a result too
            raise
        folder.replace_with(attempt)
        return metrics, folder.path


def _reused(experiment: Experiment, backend: str, folder: RunFolder, metrics: dict[str, Any], log: Log) -> dict[str, Any]:
    if metrics.get("status") == run_folder.DIVERGED:
        raise DivergedError(f"{experiment.name} [{backend}]: recorded as diverged in epoch {metrics.get('epoch')} "
                            f"in {folder.path} (--force trains again)", int(metrics.get("epoch") or 0))
    log(f"{experiment.name} [{backend}]: finished run found in {folder.path}, reusing it (--force trains again)")
    return metrics


@dataclass(frozen=True)
class Origin:
    """The run a continued run starts from: its folder, backend, run id and checkpoint."""

    folder: Path
    backend: str
    run_id: str
    state: TrainerState

    def record(self) -> dict[str, Any]:
        """What env.json and metrics.json say of it ('continued_from')."""
        return {"folder": str(self.folder), "backend": self.backend, "run_id": self.run_id, "epoch": self.state.epoch}


def _origin(experiment: Experiment, trajectory: Trajectory, source: Path, log: Log) -> Origin:
    """The checkpoint of the run folder `source` (OUT/<name>/<backend>/<run-id>), checked to be a state of
    this experiment's trajectory no longer than it; one line (SetupError / SpecError) otherwise."""
    folder = RunFolder(source.resolve())
    if not folder.path.is_dir():
        raise SetupError(f"--from {source}: no such run folder; give OUT/<name>/<backend>/<run-id> of a run to continue")
    checkpoint = folder.read_checkpoint(log, experiment.network)
    if checkpoint is None:
        raise SetupError(f"--from {source}: no checkpoint to continue (a run writes {run_folder.CHECKPOINT} after its "
                         f"first epoch; a damaged one is not trusted)")
    if checkpoint.trajectory != trajectory.id:
        raise SpecError(f"--from {source}: a run of another experiment (trajectory {checkpoint.trajectory}, this spec's "
                        f"{trajectory.id}){_how_it_differs(experiment, folder, source, checkpoint.trajectory)}")
    if checkpoint.state.epoch > trajectory.epochs:
        raise SpecError(f"--from {source}: its checkpoint is after epoch {checkpoint.state.epoch}, beyond this run's "
                        f"{trajectory.epochs} epochs; raise train.epochs")
    backend = folder.path.parent.name
    log(f"{experiment.name}: continuing {folder.path} ({backend}, after epoch {checkpoint.state.epoch})")
    return Origin(folder.path, backend, folder.path.name, checkpoint.state)


def _how_it_differs(experiment: Experiment, folder: RunFolder, source: Path, trajectory: str) -> str:
    """The end of the line refusing a --from run of another trajectory: the fields in which its spec.json
    differs from this experiment (in the content the trajectory id hashes) and the command that continues
    it with its own spec; only the old advice when spec.json does not read back as the checkpoint's spec."""
    fallback = "; --from continues a run of the same spec (train.epochs aside)"
    try:
        theirs = Experiment.load(folder.file(run_folder.SPEC))  # validated, as `netspec train RUN/spec.json` reads it
        if run_folder.trajectory_id(theirs) != trajectory:  # edited, or of an older netspec: no honest diff
            return fallback
        fields = differing_fields(_trajectory_content(theirs), _trajectory_content(experiment))
    except (NetspecError, OSError, ValueError):  # unreadable or invalid spec.json, or its data no longer there
        return fallback
    if not fields:
        return fallback
    spec = shlex.quote(str(source / run_folder.SPEC))
    return (f", differing in {fields}; --from continues a run of the same spec (train.epochs aside): continue it with "
            f"its own spec: netspec train {spec} --from {shlex.quote(str(source))}")


def _trajectory_content(experiment: Experiment) -> dict[str, Any]:
    """What run_folder.trajectory_id hashes (run_identity, train.epochs zeroed unless the schedule spans the
    run), with the defaults run_identity drops put back, so a field left at its default shows its value."""
    if not schedule_spans_the_run(experiment.train):
        experiment = experiment.model_copy(update={"train": experiment.train.model_copy(update={"epochs": 0})})
    return _with_defaults(run_identity(experiment), DEFAULTS_NOT_IN_IDENTITY)


def _with_defaults(content: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(content)
    for key, default in defaults.items():
        if isinstance(default, dict):
            section = out.get(key, {})
            if isinstance(section, dict):
                out[key] = _with_defaults(section, default)
        elif key not in out:
            out[key] = default
    return out


_ABSENT = object()


def differing_fields(a: dict[str, Any], b: dict[str, Any], limit: int = 3) -> str:
    """The dotted paths ('train.lr', 'network.layers.3.p') where the JSON-like `a` (a run's) and `b` (this
    spec's) differ, the first `limit` with both values, then '+N more': "train.lr: the run has 0.001, this
    spec 0.01; ...". A key or list element on one side only is one path ('nothing' on the other); '' when equal."""
    found: list[tuple[str, Any, Any]] = []

    def walk(path: str, x: Any, y: Any) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in [*x, *(k for k in y if k not in x)]:
                walk(f"{path}.{key}" if path else str(key), x.get(key, _ABSENT), y.get(key, _ABSENT))
        elif isinstance(x, list) and isinstance(y, list):
            for i in range(max(len(x), len(y))):
                walk(f"{path}.{i}" if path else str(i), x[i] if i < len(x) else _ABSENT, y[i] if i < len(y) else _ABSENT)
        elif x is _ABSENT or y is _ABSENT or _json(x) != _json(y):
            found.append((path, x, y))

    walk("", a, b)
    shown = [f"{path}: the run has {_shown(x)}, this spec {_shown(y)}" for path, x, y in found[:limit]]
    more = [f"+{len(found) - limit} more"] if len(found) > limit else []
    return "; ".join(shown + more)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # 1 and 1.0, or 1 and true, hash differently


def _shown(value: Any, width: int = 40) -> str:
    if value is _ABSENT:
        return "nothing"
    text = _json(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _start_state(experiment: Experiment, trajectory: Trajectory, folder: RunFolder, log: Log,
                 origin: Optional[Origin] = None) -> Optional[TrainerState]:
    """Where an unforced run starts: its own checkpoint, else the run it continues (`origin`), else that of
    the longest shorter run of the same trajectory (a finished run being extended), else nothing (epoch 0)."""
    epochs = trajectory.epochs
    own = folder.read_checkpoint(log, experiment.network)
    if own is not None and own.trajectory == trajectory.id and own.state.epoch <= epochs:
        log(f"{experiment.name}: resuming {folder.path} after epoch {own.state.epoch} of {epochs}")
        return own.state
    if own is not None:
        log(f"{folder.path}: its checkpoint is of another run; starting over")
    if origin is not None:
        return origin.state
    shorter = [(header["epoch"], sibling) for sibling in folder.siblings()
               if (header := sibling.checkpoint_header()) is not None
               and header.get("trajectory") == trajectory.id and isinstance(header.get("epoch"), int) and header["epoch"] < epochs]
    for done, sibling in sorted(shorter, key=lambda pair: -pair[0]):
        source = sibling.read_checkpoint(log, experiment.network)
        if source is not None:
            log(f"{experiment.name}: extending {sibling.path} ({done} epochs) to {epochs} epochs in {folder.path}")
            return source.state
    return None


def _events_from_history(folder: RunFolder, log: Log) -> None:
    """--tensorboard on a finished run found again: its event files, written now from history.json
    unless it has them already (the events are a view of the history, as the figures are)."""
    events = folder.file(EVENTS_DIR)
    if any(events.glob("events.out.tfevents.*")):
        log(f"its TensorBoard events are in {events}")
        return
    try:
        records = [record_from_dict(row) for row in json.loads(folder.file(run_folder.HISTORY_JSON).read_text())]
        if not all(isinstance(getattr(r, field), (int, float)) for r in records for field in SCALARS.values()
                   if getattr(r, field) is not None):
            raise ValueError("a figure that is not a number")
    except (OSError, ValueError, TypeError, AttributeError) as err:
        log(f"no TensorBoard events written: {folder.file(run_folder.HISTORY_JSON)} does not read back ({err})")
        return
    writer = TensorBoardLog(folder.path, 1)
    try:
        for record in records:
            writer.epoch(record)
    finally:
        writer.close()
    log(f"wrote the TensorBoard events of its {plural(len(records), 'epoch')} (from its history.json) to {events}")


@dataclass(frozen=True)
class _Options:
    """How a run reports itself; none of it changes the run's numbers or id."""

    log: Log
    progress: bool | None
    tensorboard: bool
    table: bool
    origin: Optional[Origin] = None
    """The run this one continues (recorded in env.json and metrics.json), or None."""
    watch: Optional[Callable[[list[Any]], None]] = None
    """Called with the history after each saved epoch (see run_experiment)."""


def _train(experiment: Experiment, trajectory: Trajectory, backend: Backend, folder: RunFolder, data: Any, start: Optional[TrainerState],
           device: Optional[str], options: _Options, shown_as: Optional[Path] = None) -> dict[str, Any]:
    """Train into `folder` from `start` (None: from scratch); write every file, metrics.json last.
    `shown_as`: the folder named to the user, when `folder` is an attempt that will take its place."""
    shown = shown_as or folder.path
    log, progress = options.log, options.progress
    name = backend.name
    # train.init_weights (train --weights): the run starts from them (a checkpoint's state, if any, replaces them)
    initial = initial_weights(experiment) if experiment.train.init_weights is not None else None
    model = backend.compile(experiment.network, initial, seed=experiment.train.seed, device=device,
                            precision=experiment.train.precision, compiled=experiment.train.compile)
    env = _write_setup(experiment, backend, model, folder, data, options.origin)
    threads = env.get("cpu_threads") if model.device == "cpu" else None
    where = f"{model.device}, {plural(threads, 'thread')}" if isinstance(threads, int) else model.device
    log(f"{experiment.name} [{name} on {where}]: {len(data.train_y):,} train / {len(data.val_y):,} val / "
        f"{len(data.test_y):,} test images, {experiment.network.num_params():,} parameters -> {shown}")
    beyond = schedule_beyond_the_run(experiment.train)
    if beyond is not None:
        log(f"warning: {beyond}")
    if start is not None:  # the folder's views of the state it starts from (a copied one included)
        folder.write_checkpoint(start, trajectory)
        _write_views(folder, start, True)

    events = TensorBoardLog(folder.path, (start.epoch if start else 0) + 1) if options.tensorboard else None

    def on_epoch(state: TrainerState, is_best: bool) -> None:
        folder.write_checkpoint(state, trajectory)  # first: the views below are rebuilt from it
        _write_views(folder, state, is_best)
        if events is not None:
            events.epoch(state.history[-1])
        if options.watch is not None:  # last: everything of the epoch is saved when it stops the run
            options.watch(state.history)

    extra: dict[str, Any] = {"backend": name, "device": model.device, "name": experiment.name, **_compute(model)}
    if options.origin is not None:
        extra["continued_from"] = options.origin.record()
    timings: dict[str, float] = {}
    try:
        history = fit(model, experiment, data, on_epoch=on_epoch, log=log, progress=progress, state=start, timings=timings)
    except DivergedError as err:
        folder.write_diverged(err.epoch, str(err), {**extra, **timings})
        raise
    finally:
        if events is not None:
            events.close()
    extra.update(timings, **_compute(model))  # again after training: a failed compile falls back to eager
    switch = _switch(options.origin, name)
    if switch is not None:  # a median over both backends' epochs would describe neither
        extra["median_epoch_seconds_by_backend"] = _medians_by_backend(history, switch)
    plot_run(history, folder.path, f"{experiment.name} ({name})", switch=switch)
    cfg = experiment.train
    folder.write_bytes(LR_PLOT, lr_png(history, cfg, len(data.train_y) // cfg.batch_size, f"{experiment.name} ({name})",
                                       switch=switch))
    stopped = early_stop(history, cfg.early_stopping_patience) if len(history) < cfg.epochs else None
    if stopped is not None:  # only then: a run of every epoch keeps today's metrics.json
        extra["stopped_early"] = {"epoch": len(history), "reason": stopped}
    metrics = folder.write_finished(history, extra)  # last: the run is finished from here on
    if options.table:
        log(metrics_table({f"{experiment.name} [{name}]": metrics}))
    by_backend = extra.get("median_epoch_seconds_by_backend")
    medians = f" ({', '.join(f'{b} {t:.2f}s' for b, t in by_backend.items())})" if by_backend else ""
    log(f"median epoch {metrics['median_epoch_seconds']:.2f}s{medians}; files in {shown}")
    return metrics


def _switch(origin: Optional[Origin], backend: str) -> Optional[Switch]:
    """Where a continued run changed backend: after the source's last epoch (None: not continued, or the same backend)."""
    if origin is None or origin.backend == backend or origin.state.epoch == 0:
        return None
    return Switch(origin.state.epoch, origin.backend, backend)


def _medians_by_backend(history: list[Any], switch: Switch) -> dict[str, float]:
    """The median epoch seconds of the epochs up to the switch (the source's backend) and after it (this one)."""
    before = [r.seconds for r in history if r.epoch <= switch.after_epoch]
    after = [r.seconds for r in history if r.epoch > switch.after_epoch]
    return {b: float(statistics.median(t)) for b, t in ((switch.before, before), (switch.after, after)) if t}


def _write_setup(experiment: Experiment, backend: Backend, model: Model, folder: RunFolder, data: Any,
                 origin: Optional[Origin] = None) -> dict[str, Any]:
    """spec.json, the preprocessing and env.json (versions, device, CPU threads, the run it continues);
    returns the latter."""
    folder.write_spec(experiment)
    run_folder.write_preprocess(folder.path, data)
    env = run_folder.environment(backend.describe() | {"device": model.device} | _compute(model), data.source)
    if origin is not None:
        env["continued_from"] = origin.record()
    folder.write_json(run_folder.ENV, env)
    return env


def _compute(model: Model) -> dict[str, Any]:
    """How the model computes, for env.json and metrics.json: its precision, whether it is compiled, and
    why not fully, if a compiler or graph capture failed."""
    return {"precision": model.precision, "compiled": model.compiled, "compile_error": model.compile_error}


def _write_views(folder: RunFolder, state: TrainerState, is_best: bool) -> None:
    """history.json/.csv every epoch (a killed run shows what it did), the best weights when they change."""
    folder.write_history(state.history)
    if is_best and state.best_weights is not None:
        folder.write_weights(state.best_weights)
