"""Issue 36: a --track URI MLflow cannot open is one line before anything trains (runs/tracking.check_uri)."""
from __future__ import annotations

from pathlib import Path

import pytest

from netspec.errors import SetupError
from netspec.runs.tracking import parse_track


@pytest.mark.parametrize("uri, words", [
    ("http://[::1", "not a URI"),                      # urlparse: Invalid IPv6 URL
    ("http://host:port", "not a URI"),                 # a port that is not a number
    ("ftp://x", "MLflow opens no new tracking store"),
    ("file:./mlruns", "MLflow opens no new tracking store"),  # MLflow 3's file store refuses new runs
    ("sqlite:///nowhere/x/y.db", "does not exist"),
])
def test_a_uri_mlflow_cannot_open_is_one_line(uri: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(SetupError) as err:
        parse_track(f"mlflow={uri}", tmp_path)
    assert words in str(err.value) and "\n" not in str(err.value) and uri in str(err.value)


def test_the_uris_mlflow_opens_pass(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert parse_track(f"mlflow={db}", tmp_path) == db
    assert parse_track("mlflow=http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    assert parse_track("mlflow=postgresql+psycopg2://u@h/db", tmp_path).startswith("postgresql")
