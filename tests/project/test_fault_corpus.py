"""The fault corpus (tools/fault_corpus.py) as an opt-in test set: every bad input and fault it holds
must end clean (the expected exit code, one `error:` line, no traceback, nothing written outside the
output folder, finished runs intact). About half an hour on 2 cores, so it runs only when asked:
`pytest --runslow -m fault_corpus`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.fault_corpus
def test_every_case_of_the_fault_corpus_is_clean(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "tools/fault_corpus.py", "--jobs", "2", "--out", str(tmp_path / "corpus.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
