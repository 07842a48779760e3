"""MLflow tracking (`--track mlflow[=URI]`; `netspec[track]`): each run folder as one MLflow run, keyed by run id.

A run is logged from its folder once it is done, replayed from history.json as `--tensorboard` replays a
reused run: the flattened spec as params, every epoch's figures as metrics (step = epoch), and its
figures, metrics.json and (where exported) model.onnx as artifacts. The MLflow run carries netspec's run id in its
name and in the tag `netspec.key` (<backend>/<name>/<run-id>), and is looked up by that tag first, so logging
the same run again (resumed, reused, in another sweep) updates it: params already there are kept, only the
epochs MLflow lacks are added, artifacts are replaced. Sweeps and searches are parent runs (tag `netspec.key`
sweep/<name> or search/<name>/<backend>) of their runs. The default store is OUT/mlflow/mlflow.db with artifacts in
OUT/mlflow/artifacts (deep enough that no artifact folder looks like a run folder to the report): a local
SQLite store, since MLflow 3 refuses new file stores (./mlruns) by default.
"""
from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from netspec.errors import SetupError, missing_package
from netspec.io import parse_json_file, safe_output_dir
from netspec.runs import run_folder
from netspec.runs.records import check_history

KEY_TAG = "netspec.key"
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT = "netspec"
CONNECT_TIMEOUT_S = 5.0
ARTIFACTS = ("acc.png", "loss.png", "lr.png", run_folder.METRICS, "model.onnx")
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds")


def parse_track(text: Optional[str], out_root: Path) -> Optional[str]:
    """--track mlflow[=URI] as a tracking URI (default: a file store OUT/mlruns); None without --track."""
    if text is None:
        return None
    kind, _, uri = text.partition("=")
    if kind != "mlflow":
        raise SetupError(f"--track {text!r}: the one tracker is mlflow (--track mlflow or --track mlflow=URI)")
    if uri:
        return check_uri(uri)
    return f"sqlite:///{safe_output_dir(out_root, 'mlflow').resolve() / 'mlflow.db'}"


URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
"""The tracking stores MLflow 3 opens for new runs (its file store is in maintenance mode and refuses them)."""


def check_uri(uri: str) -> str:
    """A --track URI MLflow can open, else one line (before anything trains): a known scheme, a port that
    parses, and for sqlite a folder that exists (a typo would put the store somewhere unseen)."""
    try:
        parsed = urlparse(uri)
        parsed.port  # noqa: B018 -- raises ValueError for a port that is not a number or an unclosed [IPv6
    except ValueError as err:
        raise SetupError(f"--track mlflow={uri}: not a URI ({err}); give http(s)://HOST:PORT or sqlite:///PATH.db") from None
    if parsed.scheme.split("+")[0] not in URI_SCHEMES:
        raise SetupError(f"--track mlflow={uri}: MLflow opens no new tracking store there; give an http(s) server, "
                         "sqlite:///PATH.db or a database URI (postgresql://...)")
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise SetupError(f"--track mlflow={uri}: the folder {str(folder)!r} does not exist; create it or give "
                             "another sqlite:///PATH.db")
    return uri


def reachable(uri: str) -> None:
    """An http(s) tracking server accepts a connection within CONNECT_TIMEOUT_S, else one line (MLflow's own
    client retries for minutes)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise SetupError(f"--track mlflow={uri}: no tracking server answers there ({err.strerror or err}); start it "
                         "(mlflow server) or check the URI") from None


def flat(value: Any, prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params: dotted path -> JSON text (MLflow keeps params as strings, 6,000 chars at most)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            if k != "$schema":
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flat(v, f"{prefix}.{i}"))
        return out
    return {prefix: json.dumps(value)[:6000]}


class MlflowTracker:
    def __init__(self, uri: str, artifacts: Optional[Path] = None) -> None:
        try:
            import mlflow  # noqa: F401
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise missing_package("--track mlflow", "mlflow", "track") from None
        from mlflow.exceptions import MlflowException
        reachable(uri)
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(EXPERIMENT)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(
                EXPERIMENT, artifact_location=artifacts.resolve().as_uri() if artifacts else None)
        except MlflowException as err:  # something answers, but not as an MLflow tracking store does
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise SetupError(f"--track mlflow={uri}: the tracking store refused netspec ({first}); check the URI "
                             "(an MLflow server: mlflow server --port PORT)") from None

    def _run(self, key: str, name: str, tags: dict[str, str]) -> str:
        """The MLflow run tagged `key`, made the first time."""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=2)
        if runs:
            return runs[0].info.run_id
        return self.client.create_run(self.experiment_id, run_name=name, tags={KEY_TAG: key, **tags}).info.run_id

    def parent(self, key: str, name: str) -> str:
        run_id = self._run(key, name, {})
        self.client.set_terminated(run_id)
        return run_id

    def log_run(self, folder: Path, parent: Optional[str] = None) -> Optional[str]:
        """Log a done run folder (OUT/<name>/<backend>/<run-id>); None for one not done."""
        from mlflow.entities import Metric, Param

        if run_folder.finished_metrics(folder) is None:
            return None
        backend, name, run_id = folder.parent.name, folder.parent.parent.name, folder.name
        history = check_history(parse_json_file(folder / run_folder.HISTORY_JSON), str(folder / run_folder.HISTORY_JSON))
        spec = parse_json_file(folder / run_folder.SPEC)
        tags = {"netspec.run_id": run_id, "netspec.backend": backend, "netspec.name": name}
        mlflow_id = self._run(f"{backend}/{name}/{run_id}", f"{name} [{backend}] {run_id}", tags)
        if parent is not None:
            self.client.set_tag(mlflow_id, PARENT_TAG, parent)
        have = self.client.get_run(mlflow_id).data.params
        params = [Param(k, v) for k, v in flat(spec).items() if k not in have]
        for start in range(0, len(params), 100):  # MLflow takes 100 params a batch
            self.client.log_batch(mlflow_id, params=params[start:start + 100])
        metrics = []
        for field in METRICS:
            logged = {m.step for m in self.client.get_metric_history(mlflow_id, field)}
            metrics += [Metric(field, float(getattr(row, field)), 0, row.epoch) for row in history
                        if row.epoch not in logged and getattr(row, field) is not None
                        and math.isfinite(float(getattr(row, field)))]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(mlflow_id, metrics=metrics[start:start + 1000])
        for artifact in ARTIFACTS:
            if (folder / artifact).is_file():
                self.client.log_artifact(mlflow_id, str(folder / artifact))
        self.client.set_terminated(mlflow_id)
        return mlflow_id

    def log_folders(self, folders: list[Path], parent_key: Optional[str] = None, parent_name: str = "") -> None:
        parent = self.parent(parent_key, parent_name) if parent_key else None
        for folder in dict.fromkeys(folders):
            self.log_run(folder, parent)
