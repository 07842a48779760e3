"""The `netspec` command: subcommands, refusals in one line, and the same command three ways."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netspec.cli import COMMANDS, main
from tests.helpers import tiny_experiment, write_spec

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_help_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: netspec {" + ",".join(COMMANDS) + "}")
    assert list(COMMANDS)[:3] == ["train", "search", "summary"]
    assert all(f"\n  {name} " in usage for name in COMMANDS)


@pytest.mark.parametrize("how", [[sys.executable, "-m", "netspec"], [sys.executable, "runner.py"]])
def test_the_module_and_the_runner_are_the_same_command(how: list[str]) -> None:
    done = subprocess.run([*how, "summary", "specs/mlp.json"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "trainable parameters: 3,159,050" in done.stdout


@pytest.mark.parametrize("argv", [["summary", "specs/sweeps/mlp_lr.json"], ["crosscheck", "specs/sweeps/mlp_lr.json"],
                                  ["specs/sweeps/mlp_lr.json", "--summary"], ["specs/sweeps/mlp_lr.json", "--crosscheck"]])
def test_modes_for_one_experiment_refuse_a_sweep_file(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "is a sweep file" in one_error_line(capsys)


def test_unknown_options_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "specs/mlp.json", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in one_error_line(capsys)


def test_crosscheck_needs_two_different_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crosscheck", "specs/mlp.json", "--backend", "torch"]) == 2
    assert "two different backends" in one_error_line(capsys)


def test_an_output_path_the_system_refuses_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    spec = write_spec(tmp_path, tiny_experiment(epochs=1))
    assert main([str(spec), "--out", str(a_file), "--device", "cpu"]) == 2
    assert "a file where an output folder goes" in one_error_line(capsys)
    assert main(["schema", "-o", str(a_file / "schemas")]) == 2
    assert "a_file" in one_error_line(capsys)


def test_several_runs_end_with_one_compact_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, tiny_experiment(epochs=1))
    assert main([str(spec), "--seeds", "2", "--out", str(tmp_path / "runs"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-4].startswith("| run | backend | status | final test acc |")
    rows = out[-2:]
    assert [row.split(" | ")[0] for row in rows] == ["| tiny", "| tiny seed 1"]
    assert all(" | torch | finished | 0." in row for row in rows)
