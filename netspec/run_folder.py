"""A run's folder: runs/<spec>/<backend>/<run-id>/ and the files in it.

The run id is a hash of the resolved experiment, so the same experiment on the same backend always
lands in the same folder: a finished run (metrics.json present) is found again instead of being
trained twice, which is what lets a killed sweep resume.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .experiment import Experiment
from .identity import run_identity
from .trainer import EpochRecord, summarize

METRICS, HISTORY_JSON, HISTORY_CSV = "metrics.json", "history.json", "history.csv"
SPEC, ENV, WEIGHTS = "spec.json", "env.json", "best_weights.npz"
PREPROCESS = "preprocess.json"
PREPROCESS_INPUT = "NCHW float32 = (pixels - shift) / scale per channel"


def run_id(experiment: Experiment) -> str:
    """Short content hash of everything that determines a run's result (name and description excluded)."""
    data = run_identity(experiment)  # netspec.identity: data by content, eval_batch_size and words left out
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def run_dir(root: str | Path, experiment: Experiment, backend: str) -> Path:
    return Path(root) / experiment.name / backend / run_id(experiment)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a killed run never leaves half a file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_preprocess(directory: Path, data: Any) -> None:
    """preprocess.json: the class names and the input scaling of the run's data (a netspec.data.Dataset),
    so the trained model can be used (evaluate, predict, an exported model) without its training split:
    'per_channel' statistics depend on it. A dataset without them (a test's scripted splits) writes nothing."""
    if getattr(data, "shift", None) is None:
        return
    write_json_atomic(directory / PREPROCESS, {
        "classes": list(data.classes), "shift": np.asarray(data.shift, np.float64).tolist(),
        "scale": np.asarray(data.scale, np.float64).tolist(), "input": PREPROCESS_INPUT,
    })


def finished_metrics(directory: Path) -> Optional[dict[str, Any]]:
    """The metrics of a finished run in `directory`, or None."""
    path = directory / METRICS
    return json.loads(path.read_text()) if path.is_file() else None


def write_history(directory: Path, history: list[EpochRecord]) -> None:
    rows = [dataclasses.asdict(r) for r in history]
    write_json_atomic(directory / HISTORY_JSON, rows)
    tmp = directory / (HISTORY_CSV + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(EpochRecord)])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, directory / HISTORY_CSV)


def write_metrics(directory: Path, history: list[EpochRecord], extra: dict[str, Any]) -> dict[str, Any]:
    metrics = {**summarize(history), **extra}
    write_json_atomic(directory / METRICS, metrics)
    return metrics


def environment(backend_info: dict[str, Any], data_source: str) -> dict[str, Any]:
    import pydantic

    from . import __version__
    return {
        "netspec": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "numpy": np.__version__, "pydantic": pydantic.__version__,
        "data": data_source, **backend_info,
    }
