"""Searches: an Optuna study over spec fields (a search file, netspec.spec.search_file), each trial ordinary runs.

`netspec search specs/searches/mlp_lr_dropout.json --backend torch` keeps its study in
OUT/searches/<name>/study.db, one Optuna study per backend ('<name>:<backend>'), beside <backend>.json
(every trial, for the report, readable without Optuna) and best-<backend>.json (the best point as an
experiment file: `netspec train` on it finds the best trial's run again).

- Sampler: TPE, seeded; pruner: median or successive halving on the per-epoch objective of the trial's
  first seed (seeds run one after the other, and seed 0 is the same offset in every trial, so the curves
  the pruner compares are paired; a trial whose seed 0 survives runs its other seeds in full).
- Storage: SQLite through Optuna's RDBStorage, not the journal file: one file that `optuna.load_study`,
  optuna-dashboard and plain sqlite3 open, with transactions, so the Ray workers of one machine report
  into it at once. (A search folder on NFS should use a journal file instead: SQLite's locks are unsafe there.)
- A trial is its runs, found by run id: a trial's values give an experiment, the experiment its run
  folder. A killed search resumes: finished trials are in the study and are not asked again; a trial the
  kill interrupted is marked failed and its values asked again first, so its runs go on from their
  checkpoints. Running a finished search again asks for nothing and trains nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from netspec.errors import DivergedError, SetupError, SpecError, missing_package
from netspec.data import load_dataset
from netspec.io import parse_json_file, safe_output_dir, write_json
from netspec.protocol.backend import Backend, load_backend
from netspec.runs import run_folder
from netspec.runs.records import check_history
from netspec.runs.training_run import run_experiment
from netspec.sweeps.launchers import RayLauncher
from netspec.spec.experiment import Experiment
from netspec.spec.search_file import Objective, Pruner, Search, SearchSpec, load_search, search_dir

Log = Callable[[str], None]
STUDY_DB = "study.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
FINGERPRINT = "netspec_fingerprint"
DIVERGED = "diverged"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise missing_package("netspec search", "optuna", "search") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # netspec logs each trial itself
    return optuna


def fingerprint(spec: SearchSpec, base: Experiment) -> str:
    """What a study of this search is of: the base experiment (its run id), the space, objective, seeds and
    pruner. The trial count is left out: raising it continues the same study."""
    content = {"base": run_folder.run_id(base), "space": [p.model_dump(mode="json") for p in spec.space],
               "objective": spec.objective.model_dump(), "seeds": spec.seed_list(), "pruner": spec.pruner.model_dump()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def storage_url(folder: Path) -> str:
    return f"sqlite:///{(folder / STUDY_DB).resolve()}"


def study_name(spec: SearchSpec, backend: str) -> str:
    return f"{spec.name}:{backend}"


def check_database(path: Path) -> None:
    """A study.db already there is a SQLite file with Optuna's tables, else one line: Optuna would add its
    tables to any SQLite file (a foreign database) or fail with a traceback on a damaged one."""
    if not path.exists() and not path.is_symlink():
        return
    import sqlite3

    if path.is_symlink() or not path.is_file():
        raise SetupError(f"{path}: not a plain file where the search keeps its study; remove it or choose another --out")
    with open(path, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise SetupError(f"{path}: damaged or not a SQLite database (a search's study); move it away to start the "
                         "study over (the trials' run folders are kept and found again)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as err:
        raise SetupError(f"{path}: damaged SQLite database ({err}); move it away to start the study over") from None
    if not {"studies", "trials", "version_info"} <= tables:
        raise SetupError(f"{path}: a SQLite database of something else (no Optuna study tables); move it away or "
                         "choose another --out")


def make_pruner(optuna: Any, pruner: Pruner) -> Any:
    if pruner.type == "median":
        # Optuna prunes from step n_warmup_steps on; the epochs are steps 1, 2, ...: warmup_epochs are never pruned.
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs + 1)
    if pruner.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner.min_epochs,
                                                     reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(search: Search, backend: str, folder: Path, sampler_offset: bool = True) -> Any:
    """The search's study for `backend` in folder/study.db: created on the first run, else loaded and checked
    to be a study of this search (same base experiment, space, objective, seeds and pruner)."""
    optuna = _optuna()
    path = folder / STUDY_DB
    check_database(path)
    spec, name = search.spec, study_name(search.spec, backend)
    key = fingerprint(spec, search.base)
    try:
        storage = optuna.storages.RDBStorage(storage_url(folder), engine_kwargs={"connect_args": {"timeout": 60}})
        existing = {s.study_name: s for s in storage.get_all_studies()}
    except Exception as err:  # noqa: BLE001 - sqlalchemy's and Optuna's many errors for a bad file: one line
        raise SetupError(f"{path}: cannot open the study ({_first_line(err)}); move it away to start over") from None
    if name in existing and existing[name].user_attrs.get(FINGERPRINT) != key:
        raise SpecError(f"{path}: holds a study {name!r} of another search (another base experiment, space, objective, "
                        "seeds or pruner); its trials would not mean what this search asks: rename the search, or "
                        "choose another --out")
    pruner = make_pruner(optuna, spec.pruner)
    trials_so_far = _trial_count(storage, existing.get(name))
    startup = min(10, max(2, spec.trials // 3))  # TPE's random start: a third of a small search, at most 10
    # Seeded by the trials the study holds: a resumed search must not replay the first trials' random draws.
    sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed + (trials_so_far if sampler_offset else 0),
                                         n_startup_trials=startup)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction=spec.objective.direction, load_if_exists=True)
    if name not in existing:
        study.set_user_attr(FINGERPRINT, key)
        study.set_user_attr("search", spec.name)
        study.set_user_attr("backend", backend)
    return study


def _trial_count(storage: Any, summary: Any) -> int:
    if summary is None:
        return 0
    return storage.get_n_trials(storage.get_study_id_from_name(summary.study_name))


def finished(trial: Any) -> bool:
    """Complete, pruned, or failed as diverged (a result too): a rerun never asks for such a trial again."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and bool(trial.user_attrs.get(DIVERGED)))


@contextmanager
def search_lock(out_root: Path, name: str) -> Iterator[None]:
    """One process per search folder: the stale trials of a killed run are only known stale if no one else runs it."""
    from filelock import FileLock, Timeout

    lock_dir = safe_output_dir(out_root, run_folder.LOCKS, "searches")
    lock = FileLock(str(lock_dir / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SetupError(f"search {name!r}: another process is running it in {out_root}; wait for it, or use another --out") from None
    try:
        yield
    finally:
        lock.release()


class TrialPruned(Exception):
    """Raised by the pruner's watch inside a run: the run stops after that epoch's checkpoint."""


@dataclass
class TrialResult:
    state: str
    """'complete', 'pruned' or 'diverged'."""
    values: list[float]
    """The objective of each seed's run (complete trials)."""
    run_ids: list[str]
    epoch: int = 0
    """The epoch a pruned trial stopped after."""
    trained: bool = True
    """False when every run was found finished (re-used)."""


def run_trial(trial: Any, experiments: list[Experiment], backend: Backend, out_root: Path, objective: Objective,
              device: Optional[str] = None, log: Log = print, progress: bool | None = None, dataset: Any = None) -> TrialResult:
    """Run a trial's seeds. Seed 0 reports its objective so far after every epoch (and, for a run found
    finished, its whole history), and stops when the pruner says so; the other seeds run only if it survives."""
    reported: set[int] = set()

    def watch(history: list[Any]) -> None:
        for n in range(1, len(history) + 1):
            if n not in reported:
                value = objective.value(history[:n])
                if math.isfinite(value):
                    trial.report(value, n)
                reported.add(n)
        if trial.should_prune():
            raise TrialPruned(len(history))

    run_ids = [run_folder.run_id(e) for e in experiments]
    trained = not all(run_folder.finished_metrics(run_folder.run_dir(out_root, e, backend.name)) for e in experiments)
    values: list[float] = []
    for i, experiment in enumerate(experiments):
        try:
            _, folder = run_experiment(experiment, backend, out_root, device=device, log=log, progress=progress,
                                       table=False, dataset=dataset, watch=watch if i == 0 else None)
            history = read_history(folder)
            if i == 0:
                watch(history)  # a run found finished: its epochs are reported now, and may prune the trial
        except TrialPruned as stop:
            return TrialResult("pruned", values, run_ids[:1], epoch=int(stop.args[0]), trained=trained)  # seed 0 ran
        except DivergedError:
            return TrialResult(DIVERGED, values, run_ids, trained=trained)
        values.append(objective.value(history))
    return TrialResult("complete", values, run_ids, trained=trained)


def read_history(folder: Path) -> list[Any]:
    """A finished run's history.json, validated (the objective is read from it)."""
    path = folder / run_folder.HISTORY_JSON
    try:
        return check_history(parse_json_file(path), str(path))
    except ValueError as err:
        raise SetupError(f"{path}: does not read back ({str(err)[:200]}); remove the run folder to train it again") from None


def tell(study: Any, trial: Any, result: TrialResult) -> None:
    """Record a trial's result in the study (its runs and per-seed values as user attributes)."""
    optuna = _optuna()
    trial.set_user_attr("run_ids", result.run_ids)
    trial.set_user_attr("seed_values", result.values)
    if result.state == "complete":
        study.tell(trial, statistics.fmean(result.values))
    elif result.state == "pruned":
        trial.set_user_attr("pruned_after_epoch", result.epoch)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        trial.set_user_attr(DIVERGED, True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def requeue_interrupted(study: Any, log: Log) -> int:
    """Trials left running by a killed search: failed, and their values asked again first (their runs resume)."""
    optuna = _optuna()
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"resumes_trial": trial.number})
    if stale:
        log(f"{len(stale)} trial(s) interrupted by a kill: asked again with the same values (their runs resume)")
    return len(stale)


def run_search(path: str | Path, backend: Backend, out_root: str | Path = "runs", overrides: Optional[list[str]] = None,
               device: Optional[str] = None, log: Log = print, progress: bool | None = None,
               trials: Optional[int] = None, launcher: Any = None) -> dict[str, Any]:
    """Run the search until its study holds `trials` (default: the file's) finished trials; returns the record
    written to OUT/searches/<name>/<backend>.json. `launcher`: a RayLauncher runs the trials as Ray tasks."""
    search = load_search(path, overrides)
    spec = search.spec
    if trials is not None and not 1 <= trials <= 1_000:
        raise SpecError(f"--trials {trials}: must be 1 to 1,000")
    wanted = trials or spec.trials
    out_root = Path(out_root)
    folder = safe_output_dir(out_root, "searches", spec.name)
    with search_lock(out_root, spec.name):
        study = open_study(search, backend.name, folder)
        requeue_interrupted(study, log)
        done = [t for t in study.get_trials(deepcopy=False) if finished(t)]
        todo = max(wanted - len(done), 0)
        log(f"search {spec.name} [{backend.name}]: {len(done)} of {wanted} trials already finished in {folder / STUDY_DB} "
            f"(re-used, not trained again); {todo} to run")
        dataset = None
        if todo and isinstance(launcher, RayLauncher):
            _run_on_ray(launcher, study, search, backend, out_root, todo, device, log)
        for k in range(todo if not isinstance(launcher, RayLauncher) else 0):
            trial = study.ask()
            values = suggest(trial, spec)
            experiments = search.seeded(values)
            log(f"trial {trial.number} ({len(done) + k + 1}/{wanted}): {_values_text(values)}")
            if dataset is None and not all(run_folder.finished_metrics(run_folder.run_dir(out_root, e, backend.name))
                                           for e in experiments):
                dataset = load_dataset(search.base.data)  # the space edits no data field: one load for all trials
            result = run_trial(trial, experiments, backend, out_root, spec.objective, device, log, progress,
                               dataset if _same_data(search, experiments) else None)
            _after_trial(study, search, trial, result, out_root, backend, log)
        record = write_record(study, search, backend.name, folder, log)
    return record


def trial_task(storage: str, name: str, trial_id: int, experiments: list[str], backend: str, out_root: str,
               device: Optional[str], objective: str, pruner: str) -> dict[str, Any]:
    """A Ray task's body: one trial in a worker, reporting each epoch into the shared study (so the pruner,
    which reads every trial from the storage, decides as in one process). Plain arguments: it pickles
    without torch or jax."""
    import dataclasses

    optuna = _optuna()
    study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(optuna, Pruner.model_validate_json(pruner)))
    trial = optuna.trial.Trial(study, trial_id)
    result = run_trial(trial, [Experiment.model_validate_json(e) for e in experiments], load_backend(backend),
                       Path(out_root), Objective.model_validate_json(objective), device, log=lambda line: None, progress=False)
    return dataclasses.asdict(result)


def _run_on_ray(launcher: RayLauncher, study: Any, search: Search, backend: Backend, out_root: Path, todo: int,
                device: Optional[str], log: Log) -> None:
    """Optuna trials as Ray tasks, as many at once as the cluster has room for: the driver asks and tells, the
    workers train and report. Chosen over Ray Tune: the study stays the one SQLite study a local search
    keeps, so a search may switch launchers between invocations and resume either way."""
    import ray

    started = launcher.connect(ray)
    try:
        remote = launcher.remote(ray, trial_task)
        room = max(int(ray.cluster_resources().get("CPU", 1) // launcher.cpus_per_run), 1)
        spec, folder = search.spec, search_dir(out_root, search.spec.name)
        inflight: dict[Any, Any] = {}
        asked = 0
        while asked < todo or inflight:
            while asked < todo and len(inflight) < room:
                trial = study.ask()
                values = suggest(trial, spec)
                log(f"trial {trial.number} (ray): {_values_text(values)}")
                ref = remote.remote(storage_url(folder), study.study_name, trial._trial_id,
                                    [e.model_dump_json() for e in search.seeded(values)], backend.name, str(out_root),
                                    device, spec.objective.model_dump_json(), spec.pruner.model_dump_json())
                inflight[ref] = trial
                asked += 1
            ready, _ = ray.wait(list(inflight), num_returns=1)
            trial = inflight.pop(ready[0])
            _after_trial(study, search, trial, TrialResult(**ray.get(ready[0])), out_root, backend, log)
    finally:
        if started:
            ray.shutdown()


def _same_data(search: Search, experiments: list[Experiment]) -> bool:
    return all(e.data == search.base.data for e in experiments)


def _after_trial(study: Any, search: Search, trial: Any, result: TrialResult, out_root: Path, backend: Backend,
                 log: Log) -> None:
    tell(study, trial, result)
    how = "trained" if result.trained else "re-used its finished runs"
    what = (f"objective {statistics.fmean(result.values):.4f} (seeds: {', '.join(f'{v:.4f}' for v in result.values)})"
            if result.state == "complete" else f"pruned after epoch {result.epoch}" if result.state == "pruned"
            else "diverged")
    log(f"trial {trial.number}: {what}; {how}")
    folder = search_dir(out_root, search.spec.name)
    write_record(study, search, backend.name, folder, log, with_importances=False)


def suggest(trial: Any, spec: SearchSpec) -> dict[str, Any]:
    """The trial's value of every parameter, drawn by the sampler."""
    values: dict[str, Any] = {}
    for p in spec.space:
        if p.type == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.type == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1))
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.type == "loguniform", step=p.step)
    return values


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def param_importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the complete trials; {} with fewer than two or where the
    evaluator cannot work (every trial the same value, say)."""
    optuna = _optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len(study.best_trial.params) == 0:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ImportError, RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: float(v) for k, v in found.items()}


def write_record(study: Any, search: Search, backend: str, folder: Path, log: Log, with_importances: bool = True) -> dict[str, Any]:
    """OUT/searches/<name>/<backend>.json (every trial: values, state, runs, per-epoch objective) and, once a
    trial is complete, best-<backend>.json (the best point as an experiment file). Read by the report."""
    spec = search.spec
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "PRUNED", "FAIL"):
            continue
        if t.state.name == "FAIL" and not t.user_attrs.get(DIVERGED):
            continue  # an interrupted trial, asked again under another number
        trials.append({"number": t.number, "state": "diverged" if t.state.name == "FAIL" else t.state.name.lower(),
                       "params": t.params, "value": t.value if t.state.name == "COMPLETE" else None, "seed_values": t.user_attrs.get("seed_values", []),
                       "run_ids": t.user_attrs.get("run_ids", []),
                       "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())}})
    record: dict[str, Any] = {
        "name": spec.name, "description": spec.description, "backend": backend, "experiment": search.base.name,
        "fingerprint": fingerprint(spec, search.base), "objective": spec.objective.model_dump(),
        "direction": spec.objective.direction, "seeds": spec.seed_list(),
        "space": [p.model_dump(mode="json", exclude_none=True) for p in spec.space], "pruner": spec.pruner.model_dump(),
        "trials": trials, "best": None, "importances": {},
    }
    complete = [t for t in trials if t["state"] == "complete"]
    if complete:
        best = study.best_trial
        best_file = folder / f"best-{backend}.json"
        write_json(search.point(best.params), best_file)
        record["best"] = {"number": best.number, "params": best.params, "value": best.value, "file": best_file.name,
                          "run_ids": best.user_attrs.get("run_ids", [])}
        if with_importances:
            record["importances"] = param_importances(study)
    run_folder.write_json_atomic(folder / f"{backend}.json", record)
    return record


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__

