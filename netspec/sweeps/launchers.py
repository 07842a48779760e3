"""Launchers: how the jobs of a sweep (or of `--seeds`) are run. One interface, two engines:

- `LocalLauncher`: one after the other in this process (the default; it never imports Ray);
- `RayLauncher`: each job a Ray task, on a local Ray or an existing cluster (`--address`), with a GPU
  or a fraction of one per run, retried when its worker dies.

The run folder is the only state. A job whose folder holds metrics.json is finished and is not run
again (nor, on Ray, submitted); a killed job left no metrics.json and runs from the start. The
launcher never touches what a run is: the worker gets the resolved experiment and the backend's
name, and `run_experiment` writes the same folder (same run id) with the same numbers as a sequential
run, given the same number of CPU threads (Ray gives a task as many as its num_cpus, 1 here; torch's
CPU reductions are summed in a thread-count dependent order).
"""
from __future__ import annotations

import itertools
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

from netspec.runs import run_folder
from netspec.protocol.backend import Backend, load_backend
from netspec.data import load_dataset
from netspec.errors import NetspecError, SetupError
from netspec.spec.experiment import Experiment
from netspec.runs.tables import markdown_table
from netspec.runs.training_run import run_experiment

Log = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One experiment on one backend."""

    experiment: Experiment
    backend: Backend
    title: str
    """'mlp_ablation: no BN seed 2': the job in log lines."""

    def directory(self, out_root: str | Path) -> Path:
        return run_folder.run_dir(out_root, self.experiment, self.backend.name)

    def finished(self, out_root: str | Path) -> bool:
        return run_folder.finished_metrics(self.directory(out_root)) is not None


class Launcher(Protocol):
    def run(self, jobs: Sequence[Job], out_root: str | Path, device: Optional[str] = None, force: bool = False,
            log: Log = print, progress: bool | None = None, tensorboard: bool = False) -> list[Job]:
        """Run the jobs that are not finished (all of them with force); returns those it ran.
        tensorboard: each run also writes TensorBoard event files."""
        ...


def jobs_table(jobs: Sequence[Job], out_root: str | Path) -> str:
    """One line per job, as a launch ends: what each run gave (or that it did not finish), so a sweep
    ends with one compact table rather than a table per point scrolled away."""
    rows = []
    for job in jobs:
        metrics = run_folder.finished_metrics(job.directory(out_root)) or {}
        status = metrics.get("status", "not finished") if metrics else "not finished"
        rows.append([job.title, job.backend.name, status, metrics.get("test_acc"), metrics.get("best_val_acc"),
                     metrics.get("epochs"), metrics.get("median_epoch_seconds")])
    return markdown_table(["run", "backend", "status", "final test acc", "best val acc", "epochs", "epoch s"], rows)


def pending(jobs: Sequence[Job], out_root: str | Path, force: bool) -> list[Job]:
    """The jobs still to run, each run folder once: two points of a sweep may be one experiment (an
    'one_at_a_time' axis at its base value), and two workers must not train one folder together."""
    unique = {job.directory(out_root): job for job in reversed(jobs)}  # reversed: the first job wins
    return [job for job in jobs if unique.get(job.directory(out_root)) is job and (force or not job.finished(out_root))]


class LocalLauncher:
    """Jobs one after the other in this process, sharing each loaded dataset between them."""

    def run(self, jobs: Sequence[Job], out_root: str | Path, device: Optional[str] = None, force: bool = False,
            log: Log = print, progress: bool | None = None, tensorboard: bool = False) -> list[Job]:
        todo = pending(jobs, out_root, force)
        to_train = {id(job) for job in todo}
        datasets: dict[str, Any] = {}
        for i, job in enumerate(jobs, start=1):
            log(f"[{i}/{len(jobs)}] {job.title} [{job.backend.name}]")
            dataset = None  # a finished run is reused: no data to load
            if id(job) in to_train:
                key = job.experiment.data.model_dump_json()
                if key not in datasets:
                    datasets[key] = load_dataset(job.experiment.data)
                dataset = datasets[key]
            run_experiment(job.experiment, job.backend, out_root, device=device, force=force and id(job) in to_train,
                           dataset=dataset, log=log, progress=progress, tensorboard=tensorboard,
                           table=len(jobs) == 1)  # several runs end with one table of them all
        return todo


def train_point(experiment_json: str, backend_name: str, out_root: str, device: Optional[str], force: bool,
                tensorboard: bool = False) -> str:
    """A Ray task's body: one run in the worker. Arguments are plain strings (the resolved experiment as
    JSON, the backend by name, resolved in the worker) so the task pickles without torch or jax."""
    experiment = Experiment.model_validate_json(experiment_json)
    _, directory = run_experiment(experiment, load_backend(backend_name), out_root, device=device, force=force,
                                  progress=False, tensorboard=tensorboard, table=False)
    return str(directory)


WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
"""A JAX worker allocates GPU memory as it needs it instead of 75% of the card, so fractional GPUs
(--gpus-per-run 0.5) can share one."""


class RayLauncher:
    """Each job a Ray task: `num_gpus` per run (a fraction packs small runs on one GPU), retried up to
    `max_retries` times when its worker dies (a system failure, which Ray retries by itself) or raises
    OSError (a shared file system's hiccup; other exceptions are deterministic and would fail again)."""

    def __init__(self, address: Optional[str] = None, gpus_per_run: Optional[float] = None, cpus_per_run: float = 1.0,
                 max_retries: int = 3, num_cpus: Optional[int] = None, task: Callable[..., str] = train_point):
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.max_retries, self.num_cpus, self.task = max_retries, num_cpus, task

    def run(self, jobs: Sequence[Job], out_root: str | Path, device: Optional[str] = None, force: bool = False,
            log: Log = print, progress: bool | None = None, tensorboard: bool = False) -> list[Job]:
        todo = pending(jobs, out_root, force)
        log(f"ray: {len(jobs) - len(todo)} of {len(jobs)} runs already finished in {out_root}; submitting {len(todo)}")
        if not todo:
            return []  # nothing to do: not even a connection to the cluster
        import ray

        started_here = self.connect(ray)
        try:
            self._submit_and_wait(ray, todo, out_root, device, force, log, tensorboard)
        finally:
            if started_here:
                ray.shutdown()
        return todo

    def connect(self, ray: Any) -> bool:
        """Join the cluster at `address`, or start a local one; True when this call started it."""
        if ray.is_initialized():
            return False
        if self.address:
            reachable(self.address)
            try:
                ray.init(address=self.address)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
                raise SetupError(f"--address {self.address}: cannot join the Ray cluster ({_first_line(err)}); start it "
                                 "with `ray start --head`, or check the address") from None
        else:
            ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False)
        return True

    def _remote(self, ray: Any) -> Any:
        return self.remote(ray, self.task)

    def remote(self, ray: Any, task: Callable[..., Any]) -> Any:
        """`task` as a Ray remote function with this launcher's resources and retries (a search's trials too)."""
        # Default: one GPU per run on a cluster that has GPUs, none on a CPU-only one.
        gpus = self.gpus_per_run if self.gpus_per_run is not None else float(ray.cluster_resources().get("GPU", 0) > 0)
        check_fits(gpus, self.cpus_per_run, [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")])
        return ray.remote(num_gpus=gpus, num_cpus=self.cpus_per_run, max_retries=self.max_retries,
                          retry_exceptions=[OSError], runtime_env={"env_vars": dict(WORKER_ENV)})(task)

    def _submit_and_wait(self, ray: Any, todo: list[Job], out_root: str | Path, device: Optional[str], force: bool,
                         log: Log, tensorboard: bool = False) -> None:
        remote = self._remote(ray)
        # out_root absolute: a worker's working directory is not the driver's.
        root = str(Path(out_root).resolve())
        refs = {remote.remote(job.experiment.model_dump_json(), job.backend.name, root, device, force, tensorboard): job
                for job in todo}
        failures: list[str] = []
        for done in itertools.count(1):
            if not refs:
                break
            [ref], _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(ref)
            failures += self._collect(ray, ref, job, root, done, len(todo), log)
        if failures:
            raise NetspecError(f"{len(failures)} of {len(todo)} runs failed on Ray: " + "; ".join(failures))

    @staticmethod
    def _collect(ray: Any, ref: Any, job: Job, root: str, done: int, total: int, log: Log) -> list[str]:
        """Log one finished task; its failure as a line, if it failed after its retries."""
        try:
            directory = Path(ray.get(ref))
        except Exception as err:  # noqa: BLE001 - a task's error is reported, the other runs go on
            log(f"[{done}/{total}] FAILED {job.title} [{job.backend.name}]: {type(err).__name__}")
            return [f"{job.title} [{job.backend.name}]: {str(err).splitlines()[0] if str(err) else type(err).__name__}"]
        if directory != job.directory(root):  # the launcher must never move a run
            return [f"{job.title} [{job.backend.name}] wrote {directory}, expected {job.directory(root)}"]
        log(f"[{done}/{total}] done {job.title} [{job.backend.name}] -> {directory}")
        return []


CONNECT_TIMEOUT_S = 10.0
"""How long `--address HOST:PORT` may take to accept a connection before the launch gives up in one line
(ray.init itself retries an unreachable address for minutes)."""


def reachable(address: str) -> None:
    """A HOST:PORT address accepts a TCP connection within CONNECT_TIMEOUT_S, else one line (SetupError).
    'auto' and ray:// addresses are Ray's to resolve."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError, OverflowError) as err:
        raise SetupError(f"--address {address}: no Ray cluster answers there ({_first_line(err)}); start one with "
                         "`ray start --head`, or check the address") from None


def check_fits(gpus: float, cpus: float, nodes: list[dict[str, float]]) -> None:
    """Some node of the cluster has the GPUs and CPUs one run asks for, else one line before anything is
    submitted: Ray would wait forever for a node that cannot exist."""
    if any(node.get("GPU", 0) >= gpus and node.get("CPU", 0) >= cpus for node in nodes):
        return
    most = max((node.get("GPU", 0) for node in nodes), default=0)
    raise SetupError(f"--gpus-per-run {gpus:g}: no node of the Ray cluster has {gpus:g} GPU(s) and {cpus:g} CPU(s) "
                     f"for one run (the most GPUs on a node: {most:g}); lower --gpus-per-run")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def make_launcher(name: Optional[str], address: Optional[str] = None, gpus_per_run: Optional[float] = None) -> Launcher:
    """--launcher/--address/--gpus-per-run as a launcher; 'local' (or none) never imports Ray."""
    if name in (None, "local"):
        if address or gpus_per_run is not None:
            raise NetspecError("--address and --gpus-per-run need --launcher ray")
        return LocalLauncher()
    if name == "ray":
        if gpus_per_run is not None and not (math.isfinite(gpus_per_run) and gpus_per_run >= 0):
            raise NetspecError(f"--gpus-per-run {gpus_per_run}: must be a number, 0 or more (e.g. 1, or 0.5 to pack two "
                               "runs per GPU)")
        return RayLauncher(address=address, gpus_per_run=gpus_per_run)
    raise NetspecError(f"--launcher {name!r}: use local or ray")
