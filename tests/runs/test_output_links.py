"""Writes never follow a link planted in a tree from elsewhere.

A symbolic link is planted at every name a run, an export, an evaluation, a sweep manifest and a
report write, each pointing at a file outside the output folder; after they all ran, every file
outside is byte for byte what it was, and the names hold the new files. Output folders that are links
are refused in one line. Every temporary file is made beside its target (a rename within one folder),
never in the system's temporary folder."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("torch")

import netspec as ns  # noqa: E402
from netspec import io as nio  # noqa: E402
from netspec.runs import run_folder  # noqa: E402
from netspec.protocol.backend import load_backend  # noqa: E402
from netspec.errors import SetupError  # noqa: E402
from netspec.runs.training_run import run_experiment  # noqa: E402
from tests.helpers import tiny_experiment  # noqa: E402

RUN_FILES = ["spec.json", "env.json", "preprocess.json", "history.json", "history.csv", "checkpoint.npz",
             "best_weights.npz", "acc.png", "loss.png", "metrics.json"]
"""Every file a run writes into its folder."""


@dataclass
class Outcome:
    outside: Path
    before: dict[str, str]
    after: dict[str, str] = field(default_factory=dict)
    planted: list[Path] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    """Output folder -> the one line that refused it."""
    renames: list[tuple[str, str]] = field(default_factory=list)
    temp_dir: Path = Path()


EXPECTED: dict[str, str] = {}
"""Every file outside the output folders, as the test made it."""


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def plant(name: Path, outside: Path, content: bytes = b"precious") -> Path:
    """A link at `name` to a precious file outside of the same name (an outside file the test compares
    at the end with what it was made with)."""
    target = outside / ("_".join(name.parts[-3:]) or name.name)
    target.write_bytes(content)
    EXPECTED[str(target.relative_to(outside))] = hashlib.sha256(content).hexdigest()
    name.parent.mkdir(parents=True, exist_ok=True)
    name.symlink_to(target)
    return name


def refused(call, outcome: Outcome, what: str) -> None:
    with pytest.raises(SetupError) as err:
        call()
    assert "\n" not in str(err.value)
    outcome.refused[what] = str(err.value)


def _everything(tmp: Path) -> Outcome:
    from netspec.deploy.export import export_run
    from netspec.deploy.inference import evaluate_run
    from netspec.sweeps.sweep import record_invocation, write_report
    from netspec.spec.sweep_file import SweepSpec
    from netspec.runs.tensorboard import TensorBoardLog

    outside = tmp / "outside"
    outside.mkdir()
    elsewhere = outside / "a_folder"
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("precious")
    EXPECTED.clear()
    EXPECTED["a_folder/kept.txt"] = hashlib.sha256(b"precious").hexdigest()
    root = tmp / "runs"
    experiment = tiny_experiment("linked", epochs=1).model_copy(
        update={"data": ns.DataConfig(source="synthetic", train_size=200, val_size=100, test_size=100)})
    directory = run_folder.run_dir(root, experiment, "torch")
    planted = [plant(directory / name, outside) for name in RUN_FILES]
    planted.append(plant(run_folder.RunFolder.of(root, experiment, "torch").lock_path, outside))
    outcome = Outcome(outside, EXPECTED, planted=planted)

    # a run: every file through a link, then the run folder's tensorboard folder as a link
    torch = load_backend("torch")
    run_experiment(experiment, torch, root, device="cpu", log=lambda line: None, progress=False, table=False)
    (directory / "tensorboard").symlink_to(elsewhere)
    refused(lambda: TensorBoardLog(directory, 1), outcome, "tensorboard")
    # an export
    planted.append(plant(directory / "model.onnx", outside))
    export_run(directory, log=lambda line: None)
    # an evaluation: its folder as a link is refused; a real folder holding links is written through none
    (directory / "evaluation").symlink_to(elsewhere)
    refused(lambda: evaluate_run(directory, torch, device="cpu", log=lambda line: None), outcome, "evaluation")
    (directory / "evaluation").unlink()
    planted += [plant(directory / "evaluation" / name, outside) for name in ("evaluation.json", "confusion.png")]
    evaluate_run(directory, torch, device="cpu", log=lambda line: None)
    # a sweep's manifest, and a report with a figure of that sweep
    sweep = SweepSpec(name="linked_sweep", base="linked.json")
    (root / "sweeps").symlink_to(elsewhere)
    refused(lambda: record_invocation(root, sweep, [], [torch], []), outcome, "sweeps")
    (root / "sweeps").unlink()
    planted.append(plant(root / "sweeps" / "linked_sweep.json", outside, json.dumps(  # a manifest: read, then replaced
        {"name": "linked_sweep", "backends": ["torch"], "invocations": [], "points": []}).encode()))
    record_invocation(root, sweep, [], [torch], [])
    manifest = json.loads((root / "sweeps" / "linked_sweep.json").read_text())
    manifest["points"] = [{"label": "base", "name": "linked", "run_id": directory.name, "seed": 0, "settings": {},
                           "base": True, "overrides": []}]
    run_folder.write_json_atomic(root / "sweeps" / "linked_sweep.json", manifest)
    (root / "figures").symlink_to(elsewhere)
    refused(lambda: write_report(root), outcome, "figures")
    (root / "figures").unlink()
    planted += [plant(root / name, outside) for name in ("report.md", "runs.csv")]
    planted += [plant(root / "figures" / f"linked_sweep_{key}.png", outside)
                for key in ("vs_setting", "torch_val_acc", "torch_val_loss")]
    write_report(root)
    outcome.after = digests(outside)
    return outcome


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    # the export and the TensorBoard log are optional extras (netspec[export], netspec[tensorboard])
    pytest.importorskip("onnx", reason="the export's writes need netspec[export]")
    pytest.importorskip("tensorboardX", reason="the TensorBoard log's writes need netspec[tensorboard]")
    tmp = tmp_path_factory.mktemp("links")
    temp_dir = tmp / "system_temp"
    temp_dir.mkdir()
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str | Path, dst: str | Path) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(temp_dir))  # where a temporary file made without dir= would go
        mp.setattr(nio.os, "replace", recording_replace)
        result = _everything(tmp)
    result.renames, result.temp_dir = renames, temp_dir
    return result


def test_nothing_outside_changes_through_a_planted_link(outcome: Outcome) -> None:
    assert outcome.after == outcome.before
    assert sorted(outcome.after) == sorted(outcome.before)  # nothing added outside either


def test_every_planted_name_now_holds_the_new_file(outcome: Outcome) -> None:
    lock = [p for p in outcome.planted if p.name.endswith(".lock")]
    for path in outcome.planted:
        if path in lock:
            continue  # the lock file is filelock's: the link is removed, a file of its own made
        assert not path.is_symlink() and path.is_file(), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() not in outcome.before.values(), path
    assert all(not p.is_symlink() for p in lock)


def test_output_folders_that_are_links_are_refused_in_one_line(outcome: Outcome) -> None:
    assert set(outcome.refused) == {"tensorboard", "evaluation", "sweeps", "figures"}
    for what, line in outcome.refused.items():
        assert "symbolic link" in line and what in line, line


def test_temporary_files_are_made_beside_their_target(outcome: Outcome) -> None:
    assert len(outcome.renames) > 20  # every file of the run, export, evaluation, manifest and report
    for src, dst in outcome.renames:
        assert Path(src).parent == Path(dst).parent, (src, dst)
        assert Path(src).name.startswith(f".{Path(dst).name}.")
    assert list(outcome.temp_dir.rglob("*.tmp")) == []  # (torch keeps its compiler cache there: not ours)


def test_a_folder_name_leading_out_of_its_parent_is_refused(tmp_path: Path) -> None:
    for name in ("..", "a/../../b", ""):
        with pytest.raises(SetupError, match="not a folder name"):
            nio.safe_output_dir(tmp_path, name)
    assert nio.safe_output_dir(tmp_path, "a", "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
