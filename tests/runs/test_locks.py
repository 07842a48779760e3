"""Locks: a second process that wants a run another process holds says once that it waits, and
for which process (its pid), then gets the lock when the holder lets go."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from netspec.runs.run_folder import RunFolder

HOLDER = """
import sys, time
from pathlib import Path
from netspec.runs.run_folder import RunFolder
folder = RunFolder(Path(sys.argv[1]) / "tiny" / "torch" / "abc", Path(sys.argv[1]))
with folder.lock(log=print):
    Path(sys.argv[2]).write_text("held")
    while Path(sys.argv[2]).exists():  # hold until the test says so
        time.sleep(0.05)
"""


def test_a_second_process_says_once_that_it_waits_and_for_whom(tmp_path: Path) -> None:
    flag = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(flag)])
    try:
        while not flag.exists():  # wait for the holder to hold the lock (no timing asserted)
            assert holder.poll() is None, "the holding process ended early"
            time.sleep(0.05)
        said: list[str] = []

        def log(line: str) -> None:
            said.append(line)
            flag.unlink()  # told once: now let the holder go

        with RunFolder(tmp_path / "tiny" / "torch" / "abc", tmp_path).lock(log=log):
            assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert len(said) == 1, said
    assert said[0].startswith("waiting for run ") and f"process {holder.pid} on " in said[0] and "is training it" in said[0]


def test_an_uncontended_lock_says_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    with RunFolder(tmp_path / "tiny" / "torch" / "abc", tmp_path).lock(log=said.append):
        pass
    assert said == []
