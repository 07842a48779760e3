"""An experiment file names a base (relative to itself) and overrides sections of it;
objects merge key by key, a changed "type" replaces; a chain is bounded and a cycle is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec.errors import SpecError
from netspec.runs.run_folder import run_id
from netspec.spec.experiment import Experiment

SPECS = Path(__file__).resolve().parents[2] / "specs"
MLP = {"name": "mlp", "network": {"input_shape": [4], "layers": [{"type": "Linear", "out_features": 3}]},
       "data": {"source": "synthetic"}, "train": {"lr": 0.01, "optimizer": {"type": "adam", "betas": [0.8, 0.9]}}}


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_base_is_merged_under_the_file(tmp_path: Path) -> None:
    write(tmp_path / "family" / "mlp.json", MLP)
    child = write(tmp_path / "child.json", {"base": "family/mlp.json", "name": "child", "train": {"epochs": 3}})
    merged = Experiment.load(child)
    assert (merged.name, merged.train.epochs, merged.train.lr, merged.train.optimizer.betas) == ("child", 3, 0.01, (0.8, 0.9))
    sgd = write(tmp_path / "sgd.json", {"base": "family/mlp.json", "train": {"optimizer": {"type": "sgd"}}})
    assert Experiment.load(sgd).train.optimizer.type == "sgd"  # a new type keeps none of Adam's fields


def test_the_shipped_recipe_equals_its_flat_form() -> None:
    recipe = Experiment.load(SPECS / "resnet9_recipe.json", ["data.source=synthetic"])
    assert run_id(recipe) == "16abc38e59"
    assert recipe.network == Experiment.load(SPECS / "resnet9.json").network
    assert recipe.train.schedule.knots == [(0.0, 0.0), (5.0, 1.0), (24.0, 0.0)]


def test_a_cycle_of_bases_is_one_line(tmp_path: Path) -> None:
    write(tmp_path / "a.json", {"base": "b.json", "train": {"epochs": 1}})
    write(tmp_path / "b.json", {"base": "a.json", "train": {"epochs": 2}})
    with pytest.raises(SpecError, match=r"cycle of bases \(a.json -> b.json -> a.json\)"):
        Experiment.load(tmp_path / "a.json")


def test_a_long_chain_and_a_missing_base_are_one_line(tmp_path: Path) -> None:
    write(tmp_path / "c0.json", MLP)
    for i in range(1, 12):
        write(tmp_path / f"c{i}.json", {"base": f"c{i - 1}.json", "train": {"epochs": i}})
    with pytest.raises(SpecError, match="more than 8 bases"):
        Experiment.load(tmp_path / "c11.json")
    assert Experiment.load(tmp_path / "c5.json").train.epochs == 5
    write(tmp_path / "lost.json", {"base": "nowhere.json", "train": {"epochs": 1}})
    with pytest.raises(SpecError, match=r"lost.json: base 'nowhere.json' \(resolved to"):
        Experiment.load(tmp_path / "lost.json")


# ---- which kind of file: a file with only a base is an experiment (its base's kind) ---------------------

def test_a_file_with_only_a_base_trains_and_summarises_as_an_experiment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import netspec as ns
    from netspec.cli import main
    from tests.helpers import tiny_experiment, write_spec

    base = write_spec(tmp_path, tiny_experiment("small", epochs=1))
    again = write(tmp_path / "again.json", {"base": base.name, "name": "small_again", "description": "all from its base"})
    assert main(["summary", str(again)]) == 0
    assert "trainable parameters" in capsys.readouterr().out
    out = tmp_path / "runs"
    assert main(["train", str(again), "--out", str(out)]) == 0
    (folder,) = (out / "small_again" / "torch").iterdir()  # an experiment's run folder, under the file's own name
    assert not (out / "sweeps").exists()  # no sweep manifest
    saved = json.loads((folder / "spec.json").read_text())
    assert saved["name"] == "small_again" and saved["network"] == json.loads(base.read_text())["network"]
    result = ns.train(again, out=out, log=lambda _: None)  # the API: the same experiment, found again
    assert result.folder == folder and result.experiment.name == "small_again"


def test_a_sweep_file_with_a_base_stays_a_sweep(tmp_path: Path) -> None:
    from netspec.commands.options import _is_sweep
    from tests.helpers import tiny_experiment, write_spec

    base = write_spec(tmp_path, tiny_experiment("small"))
    for sweep_only in ({"axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.1]}]}, {"seeds": 2},
                       {"mode": "one_at_a_time"}):
        sweep = write(tmp_path / "s.json", {"name": "s", "base": base.name, **sweep_only})
        assert _is_sweep(str(sweep)), sweep_only
        with pytest.raises(SpecError, match=r"s.json is a sweep file, not an experiment; run it with: netspec train"):
            Experiment.load(sweep)
    assert not _is_sweep(str(write(tmp_path / "e.json", {"name": "e", "base": base.name})))


def test_a_base_that_is_a_sweep_file_is_one_line(tmp_path: Path) -> None:
    from tests.helpers import tiny_experiment, write_spec

    base = write_spec(tmp_path, tiny_experiment("small"))
    write(tmp_path / "s.json", {"name": "s", "base": base.name, "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.1]}]})
    write(tmp_path / "e.json", {"name": "e", "base": "s.json"})
    with pytest.raises(SpecError, match=r"e.json: base 's.json' is a sweep file, not an experiment"):
        Experiment.load(tmp_path / "e.json")


def test_the_kind_keys_are_the_fields_only_that_kind_has() -> None:
    from netspec.spec.bases import EXPERIMENT_SECTIONS, SEARCH_KEYS, SWEEP_KEYS
    from netspec.spec.search_file import SearchSpec
    from netspec.spec.sweep_file import SweepSpec

    experiment, sweep, search = (set(m.model_fields) for m in (Experiment, SweepSpec, SearchSpec))
    assert EXPERIMENT_SECTIONS == experiment - sweep - search
    assert SWEEP_KEYS == sweep - experiment - {"base"}
    assert SEARCH_KEYS == search - sweep - experiment


@pytest.mark.parametrize("command", ["train", "summary"])
def test_a_missing_base_of_an_experiment_file_names_the_experiment_file(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netspec.cli import main

    lost = write(tmp_path / "lost.json", {"base": "nowhere.json", "name": "lost"})
    assert main([command, str(lost), "--out", str(tmp_path / "runs")] if command == "train" else [command, str(lost)]) == 2
    err = capsys.readouterr().err
    resolved = (tmp_path / "nowhere.json").resolve()
    assert err.startswith(f"error: {lost}: base 'nowhere.json' (resolved to {resolved}, relative to the experiment "
                          "file): cannot read the file") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_chain_of_nine_bases_says_the_limit_before_any_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netspec.cli import main

    write(tmp_path / "c0.json", MLP)
    for i in range(1, 10):  # c9 -> c8 -> ... -> c0: nine bases, none of the files with a name or a section
        write(tmp_path / f"c{i}.json", {"base": f"c{i - 1}.json"})
    chain = " -> ".join(f"c{i}.json" for i in range(9, -1, -1))
    for command in (["train", str(tmp_path / "c9.json"), "--out", str(tmp_path / "runs")], ["summary", str(tmp_path / "c9.json")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err == f"error: {tmp_path / 'c9.json'}: more than 8 bases in a chain ({chain}); flatten some " \
                      "(copy a base's fields into the file that names it)\n", err
    with pytest.raises(SpecError, match=r"more than 8 bases in a chain \(c9.json -> "):
        Experiment.load(tmp_path / "c9.json")
    assert Experiment.load(tmp_path / "c8.json").name == "mlp"  # eight bases are allowed


def test_a_search_takes_a_short_form_base_with_its_own_base(tmp_path: Path) -> None:
    """A search over specs/resnet9_recipe.json (a base, blocks, parameters, knot fractions): its space may
    name a network parameter, and a trial's network is the one the parameter gives (read from the file
    by hand: the prep conv has $width channels, layer1's conv 2*$width)."""
    from netspec.spec.search_file import load_search

    search = write(tmp_path / "search.json", {"name": "narrow", "base": str(SPECS / "resnet9_recipe.json"), "space": [
        {"name": "width", "paths": ["network.params.width"], "type": "categorical", "choices": [16, 32]},
        {"name": "lr", "paths": ["train.lr"], "type": "loguniform", "low": 0.01, "high": 1.0}]})
    loaded = load_search(search, ["data.source=synthetic"])
    assert run_id(loaded.base) == "16abc38e59"  # the recipe's own run id (test_the_shipped_recipe_equals_its_flat_form)
    trial = loaded.point({"width": 16, "lr": 0.2})
    convs = [layer.out_channels for layer in trial.network.layers if layer.type == "Conv2d"]
    assert convs[:2] == [16, 32] and trial.train.lr == 0.2
    assert trial.train.schedule.knots == [(0.0, 0.0), (5.0, 1.0), (24.0, 0.0)]
    with pytest.raises(SpecError, match=r"space 'w': path 'network.params.widht': no field 'widht'"):
        load_search(write(tmp_path / "bad.json", {"name": "bad", "base": str(SPECS / "resnet9_recipe.json"), "space": [
            {"name": "w", "paths": ["network.params.widht"], "type": "categorical", "choices": [16]}]}))
