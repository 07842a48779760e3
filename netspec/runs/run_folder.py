"""A run's folder, runs/<spec>/<backend>/<run-id>/, as one object: `RunFolder`.

The run id is a hash of the resolved experiment, so the same experiment on the same backend always
lands in the same folder and a finished run is found instead of trained twice (how sweeps resume).
Everything that writes into a run folder goes through RunFolder, which keeps its promises:

- every file is written atomically (a unique temporary name in the same folder, then a rename): a
  kill leaves the old file or the new one, never half of one, and two writers never share a name;
- `metrics.json` is written last and marks the run done (status "finished" or "diverged"); a folder
  whose metrics.json, history.json or best weights do not read back is not done, whatever it holds;
- `checkpoint.npz` holds the trainer's whole state after the last epoch (plain arrays, no pickles),
  so an unfinished run goes on from it, and a longer run of the same trajectory starts from it;
- one process at a time trains a run: a lock out of the runs tree (`OUT/.locks/<name>/<backend>/<run-id>.lock`,
  its holder's pid and host in `<run-id>.lock.holder` beside it); another process waits, saying once who holds it;
- `--force` trains in a sibling attempt folder (`<run-id>.attempt-<hex>`) that replaces the run only
  once it is finished, so a killed forced run never touches the finished one.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import secrets
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from netspec.runs import checkpoint, records
from netspec.runs.checkpoint import CHECKPOINT, Checkpoint, NotFit
from netspec.errors import SetupError
from netspec.spec.experiment import Experiment
from netspec.runs.identity import run_identity
from netspec.io import (  # noqa: F401 - atomic_write: the one writer, re-exported
    UnreadableJSON,
    atomic_write,
    json_text,
    npz_bytes,
    open_regular,
    parse_json_file,
    safe_output_dir,
    strict,
    write_bytes_atomic,
)
from netspec.spec.network import Network
from netspec.spec.params import Weights
from netspec.training.schedules import schedule_spans_the_run
from netspec.spec.sweep_file import SWEEPS_DIR, is_sweep_file
from netspec.training.history import EpochRecord
from netspec.training.trainer import TrainerState
from netspec.version import __version__

METRICS, HISTORY_JSON, HISTORY_CSV = "metrics.json", "history.json", "history.csv"
SPEC, ENV, WEIGHTS = "spec.json", "env.json", "best_weights.npz"
PREPROCESS = "preprocess.json"
PREPROCESS_INPUT = "NCHW float32 = (pixels - shift) / scale per channel"
FINISHED, DIVERGED = "finished", "diverged"
_ATTEMPT, _OLD = ".attempt-", ".old-"
LOCKS = ".locks"
"""The folder of the output root that holds the runs' lock files."""
Log = Callable[[str], None]


def _silent(line: str) -> None:
    pass


# ---- names ---------------------------------------------------------------------------------------

def run_id(experiment: Experiment) -> str:
    """Short content hash of everything that determines a run's result (name and description excluded)."""
    data = run_identity(experiment)  # netspec.runs.identity: data by content, eval_batch_size and words left out
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def trajectory_id(experiment: Experiment) -> str:
    """The run id with the number of epochs left out: runs that differ only in their length follow one
    trajectory, the shorter a prefix of the longer (the trainer never looks ahead at `epochs`), unless
    its lr schedule spans the run (onecycle, cosine): then every length is its own trajectory."""
    if schedule_spans_the_run(experiment.train):
        return run_id(experiment)
    return run_id(experiment.model_copy(update={"train": experiment.train.model_copy(update={"epochs": 0})}))


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A run's trajectory id and length, computed once per run: its checkpoint records both, and a
    checkpoint continues a run only when it is of the same trajectory and no longer."""

    id: str
    epochs: int

    @classmethod
    def of(cls, experiment: Experiment) -> "Trajectory":
        return cls(trajectory_id(experiment), experiment.train.epochs)


def run_dir(root: str | Path, experiment: Experiment, backend: str) -> Path:
    return RunFolder.of(root, experiment, backend).path


# ---- atomic JSON files ------------------------------------------------------------------

def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON (no NaN literals), written atomically."""
    write_bytes_atomic(Path(path), json_text(data).encode())


# ---- the folder ------------------------------------------------------------------------------------

class DamagedError(Exception):
    """A file of a run folder that does not read back as what netspec wrote; str() is one line."""


class RunFolder:
    """runs/<name>/<backend>/<run-id>/: its files, its lock, its checkpoint and its finished marker."""

    def __init__(self, path: str | Path, root: Optional[str | Path] = None) -> None:
        self.path = Path(path)
        self.root = Path(root) if root is not None else None
        """The output root (--out) above it, when known: the folders between are netspec's, never links."""

    @classmethod
    def of(cls, root: str | Path, experiment: Experiment, backend: str) -> "RunFolder":
        return cls(Path(root) / experiment.name / backend / run_id(experiment), root)

    def _made(self, path: Path) -> Path:
        """`path` (this folder or its parent) made, refusing a link on the way (netspec.io.safe_output_dir):
        below the output root when it is known, else below the folder the user named."""
        if self.root is not None and path.is_relative_to(self.root):
            return safe_output_dir(self.root, *path.relative_to(self.root).parts)
        return safe_output_dir(path.parent, path.name) if path == self.path else safe_output_dir(path)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- writing (always atomic) ------------------------------------------------------------------

    def write_bytes(self, name: str, data: bytes) -> None:
        self._made(self.path)
        write_bytes_atomic(self.file(name), data)

    def write_json(self, name: str, data: Any) -> None:
        self.write_bytes(name, json_text(data).encode())

    def write_spec(self, experiment: Experiment) -> None:
        self.write_bytes(SPEC, (experiment.model_dump_json(indent=2) + "\n").encode())

    def write_weights(self, weights: Weights) -> None:
        self.write_bytes(WEIGHTS, npz_bytes(dict(weights)))

    def write_history(self, history: list[EpochRecord]) -> None:
        rows = [strict(dataclasses.asdict(r)) for r in history]
        self.write_json(HISTORY_JSON, rows)
        text = io.StringIO()
        fields = [fl.name for fl in dataclasses.fields(EpochRecord)]
        # no validation split (data.val_size 0): no empty val columns in the table (history.json keeps its nulls)
        fields = [f for f in fields if not (f.startswith("val_") and all(row[f] is None for row in rows))]
        writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        self.write_bytes(HISTORY_CSV, text.getvalue().encode())

    def write_checkpoint(self, state: TrainerState, trajectory: Trajectory) -> None:
        """The trainer's state after its last epoch (netspec.runs.checkpoint)."""
        self.write_bytes(CHECKPOINT, checkpoint.encode(Checkpoint(state, trajectory.id, trajectory.epochs)))

    def write_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """metrics.json, the last file of a run: from here on the run is done."""
        self.write_json(METRICS, metrics)
        return metrics

    def write_finished(self, history: list[EpochRecord], extra: dict[str, Any]) -> dict[str, Any]:
        return self.write_metrics({"status": FINISHED, **records.summarize(history), **extra})

    def write_diverged(self, epoch: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        return self.write_metrics({"status": DIVERGED, "epoch": epoch, "epochs_done": epoch - 1, "message": message, **extra})

    # -- reading (damage is reported, never trusted) -----------------------------------------------

    def read_metrics(self, log: Log = _silent) -> Optional[dict[str, Any]]:
        """The metrics of a done run (status 'finished' or 'diverged'), or None: not done, or damaged
        (then one line to `log`). A finished run's history must read back too: the report draws it."""
        if not self.file(METRICS).exists():
            return None
        try:
            return self._checked_metrics()
        except DamagedError as err:
            log(f"{self.path}: {err}; the run is not taken as done")
            return None

    def _checked_metrics(self) -> dict[str, Any]:
        metrics = _read_json(self.file(METRICS))
        _checked(lambda: records.check(records.Metrics, metrics, METRICS))  # a wrong type or range: not trusted
        status = metrics.setdefault("status", FINISHED)  # runs from before the status field were finished
        if status == DIVERGED:
            return metrics
        history = _read_json(self.file(HISTORY_JSON))
        _checked(lambda: records.check_history(history, HISTORY_JSON, metrics["epochs"]))
        return metrics

    def read_checkpoint(self, log: Log = _silent, network: Optional[Network] = None) -> Optional[Checkpoint]:
        """The checkpoint, or None when there is none or it is damaged, or does not fit `network` (then one
        line to `log`, naming the file and what happens next)."""
        path = self.file(CHECKPOINT)
        if not path.exists():
            return None
        try:
            return checkpoint.load(path, network)
        except NotFit as err:
            log(f"{path}: this checkpoint does not fit the network ({err}); it is not trusted: the run does not "
                "resume from it")
        except checkpoint.DAMAGED as err:
            log(f"{path}: damaged checkpoint ({_first_line(err)}); it is not trusted: the run does not resume from it")
        return None

    def checkpoint_header(self) -> Optional[dict[str, Any]]:
        """The checkpoint's JSON part alone (cheap: one member of the zip), or None."""
        return checkpoint.header(self.file(CHECKPOINT))

    # -- one process per run -------------------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        # Outside the folder, since a --force swap renames it and the lock must outlive that; and out of
        # the runs tree, in OUT/.locks/<name>/<backend>/, since filelock leaves its (empty) file behind
        # (unlinking it on release would let two processes hold two files of the same name).
        if self.root is None or not self.path.is_relative_to(self.root):
            return self.path.with_name(self.name + ".lock")
        return self.root / LOCKS / self.path.parent.relative_to(self.root) / f"{self.name}.lock"

    @contextmanager
    def lock(self, log: Log = print) -> Iterator[None]:
        """Hold the run's lock; if another process holds it, say once which one and wait for it."""
        from filelock import FileLock, Timeout

        self._made(self.path.parent)
        self._made(self.lock_path.parent)
        if self.lock_path.is_symlink():  # filelock opens with O_TRUNC: it would empty the link's target
            self.lock_path.unlink()
        lock = FileLock(str(self.lock_path))
        holder = self.lock_path.with_name(self.lock_path.name + ".holder")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"waiting for run {self.path}: {_holder_words(holder)} is training it")
            lock.acquire()
        try:
            write_json_atomic(holder, {"pid": os.getpid(), "host": socket.gethostname()})
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

    # -- attempts of --force, and what a kill leaves behind ------------------------------------------

    def new_attempt(self) -> "RunFolder":
        """An empty sibling folder to train a forced run in."""
        attempt = RunFolder(self.path.with_name(f"{self.name}{_ATTEMPT}{secrets.token_hex(4)}"), self.root)
        self._made(self.path.parent)
        attempt.path.mkdir()
        return attempt

    def replace_with(self, attempt: "RunFolder") -> None:
        """Put a finished attempt in this folder's place. Two renames: a kill between them leaves the
        old run as '<id>.old-<hex>' and the attempt, which `recover` sorts out."""
        old = self.path.with_name(f"{self.name}{_OLD}{secrets.token_hex(4)}")
        if self.path.exists():
            os.rename(self.path, old)
        os.rename(attempt.path, self.path)
        shutil.rmtree(old, ignore_errors=True)

    def recover(self, log: Log = print) -> None:
        """Under the lock: finish or undo what a killed process left (a half-done swap, stale attempts,
        temporary files). Nobody else can be writing them: the lock says so."""
        siblings = sorted(self.path.parent.glob(f"{self.name}.*-*"))
        real = [p for p in siblings if p.is_dir() and not p.is_symlink()]  # a planted link is never put in place
        attempts = [RunFolder(p, self.root) for p in real if _ATTEMPT in p.name]
        olds = [p for p in real if _OLD in p.name]
        if not self.path.exists():
            done = [a for a in attempts if a.read_metrics() is not None]
            if done:
                os.rename(done[0].path, self.path)
                log(f"{self.path}: a forced run finished before a kill; put in place")
            elif olds:
                os.rename(olds[0], self.path)
                log(f"{self.path}: restored the finished run a killed --force was replacing")
        for leftover in [a.path for a in attempts] + olds:
            if leftover.exists() and leftover != self.path:
                shutil.rmtree(leftover, ignore_errors=True)
        for tmp in self.path.glob(".*.tmp") if self.path.is_dir() else ():
            tmp.unlink(missing_ok=True)

    def siblings(self) -> list["RunFolder"]:
        """The other runs of the same spec name and backend (attempts and leftovers excluded)."""
        return [RunFolder(p, self.root) for p in sorted(self.path.parent.iterdir())
                if p.is_dir() and not p.is_symlink() and p != self.path and "." not in p.name]


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DamagedError(f"{path.name} is missing")
    try:
        return parse_json_file(path)
    except UnreadableJSON as err:
        raise DamagedError(f"{path.name} is damaged ({err})") from None


def _checked(check: Callable[[], Any]) -> Any:
    """check() (a netspec.runs.records check of a file read back); its one-line ValueError as a DamagedError."""
    try:
        return check()
    except ValueError as err:
        raise DamagedError(str(err)) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _holder_words(holder: Path) -> str:
    try:
        info = json.loads(holder.read_text())
        return f"process {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# ---- thin helpers for callers that have a path -----------------------------------------------------

def finished_metrics(directory: Path) -> Optional[dict[str, Any]]:
    """The metrics of a done run in `directory` (finished or diverged: see 'status'), or None."""
    return RunFolder(directory).read_metrics()


def write_history(directory: Path, history: list[EpochRecord]) -> None:
    RunFolder(directory).write_history(history)


def write_metrics(directory: Path, history: list[EpochRecord], extra: dict[str, Any]) -> dict[str, Any]:
    return RunFolder(directory).write_finished(history, extra)


SOURCE_TREE = (".git", "pyproject.toml", "setup.py", "setup.cfg", "__init__.py")
"""Files that make a folder a source tree: no output root."""


def check_output_root(root: Path) -> None:
    """--out must be a folder of runs (new, empty, or one netspec wrote), never one whose files a run would
    overwrite that it did not write: a file, a source tree, or a specs folder (its sweeps/ holds sweep
    files, where a sweep's manifest goes). One line (SetupError) naming what is there."""
    if root.exists() and not root.is_dir():
        raise SetupError(f"{root}: a file where an output folder goes; choose another --out (default runs)")
    if not root.is_dir():
        return
    source = next((name for name in SOURCE_TREE if (root / name).exists()), None)
    if source:
        raise SetupError(f"{root}: holds {source}, a source tree, not a folder of runs; choose another --out (default runs)")
    for path in sorted((root / SWEEPS_DIR).glob("*.json")):
        try:
            data = parse_json_file(path)
            records.check(records.Manifest, data, "")
            continue  # a manifest: the folder's own
        except UnreadableJSON:
            continue  # a damaged file: the sweep it belongs to says so, the report leaves it out
        except ValueError:
            pass
        if is_sweep_file(data):
            raise SetupError(f"{root}: a folder of specs ({path} is a sweep file), not a folder of runs: a sweep's "
                             "manifest would overwrite it; choose another --out (default runs)")


def write_preprocess(directory: Path, data: Any) -> None:
    """preprocess.json: the class names and the input scaling of the run's data (a netspec.data.Dataset),
    so the trained model can be used (evaluate, predict, an exported model) without its training split:
    'per_channel' statistics depend on it. A dataset without them (a test's scripted splits) writes nothing."""
    if getattr(data, "shift", None) is None:
        return
    RunFolder(directory).write_json(PREPROCESS, {
        "classes": list(data.classes), "shift": np.asarray(data.shift, np.float64).tolist(),
        "scale": np.asarray(data.scale, np.float64).tolist(), "input": PREPROCESS_INPUT,
        "image_shape": [int(n) for n in np.shape(data.train_x)[1:]],
    })


def environment(backend_info: dict[str, Any], data_source: str) -> dict[str, Any]:
    import pydantic

    return {
        "netspec": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "numpy": np.__version__, "pydantic": pydantic.__version__,
        "data": data_source, **backend_info,
    }
