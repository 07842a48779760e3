"""Bad input is one line before any training: safe names, bounded and finite
numbers, resources checked before allocation, and run ids that follow the data's content, not the
spelling of its path. Fast: nothing here trains."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import netspec as ns
import runner
from netspec.data import load_dataset
from netspec.data.identity import data_identity
from netspec.errors import DataError
from netspec.spec.params import check_memory, init_weights
from netspec.runs.run_folder import run_dir, run_id
from netspec.spec.sweep_file import MAX_SWEEP_POINTS, load_sweep, manifest_path
from tests.helpers import tiny_experiment, write_json, write_spec

MLP = {"input_shape": [3072], "layers": [{"type": "Linear", "out_features": 10}]}


def _one_error_line(capsys: pytest.CaptureFixture[str], code: int, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# ---- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../specs/mlp", "a/b", "..", ".hidden", "a\\b", "", "x" * 101, "a b", "caf\u00e9"])
def test_an_unsafe_experiment_name_is_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_json(tmp_path / "e.json", {"name": name, "network": MLP})
    _one_error_line(capsys, runner.main([str(spec), "--summary"]), "name", "not a safe file name")


def test_an_unsafe_sweep_name_is_one_line(tmp_path: Path) -> None:
    write_json(tmp_path / "base.json", {"name": "base", "network": MLP})
    sweep = write_json(tmp_path / "s.json", {"name": "../../specs/mlp", "base": "base.json",
                                             "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.1]}]})
    with pytest.raises(ns.SpecError, match="not a safe file name"):
        load_sweep(sweep)


@pytest.mark.parametrize("name", ["a", "cnn_lr-0.01", "a..b", "-x", "x" * 100, "A.B.C"])
def test_paths_named_after_a_valid_name_stay_under_the_out_root(name: str, tmp_path: Path) -> None:
    root = tmp_path / "out"
    experiment = tiny_experiment().model_copy(update={"name": name})
    ns.Experiment.model_validate(experiment.model_dump())  # valid
    for path in (run_dir(root, experiment, "torch"), manifest_path(root, name)):
        assert path.resolve().is_relative_to(root.resolve()) and name in path.parts[-3:] + (path.stem,)


# ---- numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("train.lr=0", "lr: must be greater than 0"),
    ("train.lr=-0.1", "lr: must be greater than 0"),
    ("train.lr=1e38", "lr: must be less than or equal to 10"),
    ("train.lr=NaN", "lr: must be a finite number, got NaN"),
    ("train.lr=Infinity", "lr: must be a finite number, got Infinity"),
    ("train.lr=true", "lr: must be a number"),
    ('train.lr="0.01"', "lr: must be a number"),
    ("train.optimizer.betas=[0.9,1.0]", "betas: 1: must be less than 1"),
    ("train.optimizer.betas=[-0.1,0.9]", "betas: 0: must be greater than or equal to 0"),
    ("train.optimizer.eps=0", "eps: must be greater than 0"),
    ("train.optimizer.eps=-Infinity", "eps: must be a finite number"),
    ("train.lr_decay=0", "lr_decay: must be greater than 0"),
    ("train.lr_decay=1.5", "lr_decay: must be less than or equal to 1"),
    ("train.seed=-1", "seed: must be greater than or equal to 0, got -1"),
    ("train.seed=4294967296", "seed: must be less than or equal to 4294967295"),
    ("train.shuffle_seed=-5", "shuffle_seed: must be greater than or equal to 0"),
    ("data.seed=1.5", "seed: must be an integer"),
    ("train.batch_size=0", "batch_size: must be greater than 0"),
    ("train.batch_size=1000000", "batch_size: must be less than or equal to 65536"),
    ("train.eval_batch_size=0", "eval_batch_size: must be greater than 0"),
    ("train.epochs=0", "epochs: must be greater than 0"),
    ("train.epochs=10000000", "epochs: must be less than or equal to 100000"),
    ("train.epochs=true", "epochs: must be an integer"),
    ("train.epochs=3.0", "epochs: must be an integer"),
    ("data.val_size=-1", "val_size: must be greater than or equal to 0"),
    ("data.train_size=0", "train_size: must be greater than 0"),
    ("data.test_size=100000000", "test_size: must be less than or equal to 1000000"),
    ("network.layers.1.momentum=0", "layer 1 (BatchNorm): momentum: must be greater than 0"),
    ("network.layers.1.momentum=1.5", "momentum: must be less than or equal to 1"),
    ("network.layers.1.eps=NaN", "layer 1 (BatchNorm): eps: must be a finite number"),
    ("network.layers.1.eps=0", "eps: must be greater than 0"),
    ("network.layers.3.p=NaN", "layer 3 (Dropout2d): p: must be a finite number"),
    ("network.layers.0.out_channels=true", "out_channels: must be an integer"),
    ("network.layers.0.out_channels=100000000", "out_channels: must be less than or equal to 16777216"),
    ("network.layers.0.bias=1", "bias: must be true or false"),
    ("network.input_shape=[3,32,true]", "input_shape: 2: must be an integer"),
])
def test_every_bound_is_one_line_naming_the_field(override: str, expected: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, tiny_experiment())
    _one_error_line(capsys, runner.main([str(spec), "--summary", "--set", override]), expected)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_in_a_spec_file_are_refused(literal: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    text = write_spec(tmp_path, tiny_experiment()).read_text().replace('"lr": 0.01', f'"lr": {literal}')
    (tmp_path / "nan.json").write_text(text)
    _one_error_line(capsys, runner.main([str(tmp_path / "nan.json"), "--summary"]), "lr: must be a finite number")


def test_seed_minus_one_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, tiny_experiment())
    code = runner.main([str(spec), "--seed", "-1", "--out", str(tmp_path / "runs"), "--backend", "torch"])
    _one_error_line(capsys, code, "train: seed: must be greater than or equal to 0, got -1")
    assert not (tmp_path / "runs").exists()


# ---- resources ----------------------------------------------------------------------------------

def test_a_huge_linear_is_refused_before_any_weight_is_allocated() -> None:
    network = ns.Network(input_shape=(3072,), layers=[ns.ReLU(), ns.Linear(out_features=16_000_000), ns.ReLU(),
                                                     ns.Linear(out_features=10)])
    start = time.perf_counter()
    with pytest.raises(ns.SpecError, match=r"layer 1 \(Linear\) is too big: .* GiB"):
        init_weights(network)  # would otherwise ask numpy for 16e6 x 3072 x 8 bytes (393 GB)
    assert time.perf_counter() - start < 0.5


def test_the_memory_check_counts_activations_of_a_batch() -> None:
    network = ns.Network(input_shape=(3, 32, 32), layers=[ns.Conv2d(out_channels=64, kernel_size=3, padding=1)])
    check_memory(network, batch_size=1, available=2**30)
    with pytest.raises(ns.SpecError, match=r"layer 0 \(Conv2d\).*a batch of 4096"):
        check_memory(network, batch_size=4096, available=2**30)


def test_a_huge_sweep_grid_is_refused_before_expansion(tmp_path: Path) -> None:
    write_spec(tmp_path, tiny_experiment("base"))
    axes = [{"name": f"a{i}", "paths": ["train.lr"], "values": [0.001 * (k + 1) for k in range(100)]} for i in range(3)]
    sweep = write_json(tmp_path / "grid.json", {"name": "grid", "base": "base.json", "axes": axes})
    start = time.perf_counter()
    with pytest.raises(ns.SpecError, match=f"1,000,000 points .* more than {MAX_SWEEP_POINTS:,}"):
        load_sweep(sweep)
    assert time.perf_counter() - start < 1.0


def test_a_validation_split_beyond_the_data_is_one_line(tmp_path: Path) -> None:
    config = ns.DataConfig(source="synthetic", train_size=100, test_size=10, val_size=100)
    with pytest.raises(ns.SpecError, match="val_size=100 leaves no training images out of 100"):
        load_dataset(config, cache_dir=tmp_path, progress=False)


def test_a_train_size_beyond_a_local_copy_is_one_line(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "tree")
    with pytest.raises(ns.SpecError, match="data.train_size=50 is more than the 4 images"):
        load_dataset(ns.DataConfig(dir=str(tree), train_size=50, val_size=1), cache_dir=tmp_path / "c", progress=False)


def test_synthetic_data_too_big_for_memory_is_refused_before_it_is_made() -> None:
    from netspec.data import check_synthetic_memory
    with pytest.raises(ns.SpecError, match="do not fit this machine"):
        check_synthetic_memory(1_000_000, 1_000_000, available=2**30)


# ---- run ids ------------------------------------------------------------------------------------

def _image_tree(root: Path) -> Path:
    """train/ and test/ with two classes of two 32x32 PNGs each, every image different."""
    value = 0
    for part in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / part / cls).mkdir(parents=True)
            for i in range(2):
                value += 20
                Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(root / part / cls / f"{i}.png")
    return root


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return _image_tree(tmp_path / "data" / "tree")


def _id(directory: str) -> str:
    return run_id(tiny_experiment().model_copy(update={"data": ns.DataConfig(dir=directory, split="stratified", val_size=1)}))


def test_the_same_data_spelled_differently_is_the_same_run(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tree)
    spellings = [str(tree), str(tree) + "/", "data/tree", "./data/../data/tree/", str(tmp_path / "link"), "link"]
    assert len({_id(s) for s in spellings}) == 1
    shutil.copytree(tree, tmp_path / "copy")  # same content elsewhere: the same data
    assert _id("copy") == _id(str(tree))


def test_relabelled_added_or_edited_images_make_a_new_run(tree: Path) -> None:
    ids = [_id("data/tree")]
    (tree / "train" / "cat" / "0.png").rename(tree / "train" / "dog" / "9.png")  # relabelled
    ids.append(_id("data/tree"))
    shutil.copy(tree / "test" / "cat" / "0.png", tree / "test" / "cat" / "5.png")  # added
    ids.append(_id("data/tree"))
    image = tree / "train" / "cat" / "1.png"
    stat = image.stat()
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(image)  # edited, size and mtime kept
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size
    ids.append(_id("data/tree"))
    assert len(set(ids)) == len(ids)


def test_an_archive_is_identified_by_its_bytes_and_remembered(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="tree")
    (tmp_path / "alias.tar.gz").symlink_to(archive)
    first = _id(str(archive))
    assert _id("alias.tar.gz") == first == _id("tree.tar.gz")
    assert any((tmp_path / "cache" / "identity").iterdir())  # remembered for the next process
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "train", arcname="tree/train")
        tar.add(tree / "train", arcname="tree/test")
    assert _id(str(archive)) != first


def test_a_missing_data_dir_is_one_line_when_the_run_id_is_asked(tree: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        _id("no/such/folder")


def test_what_cannot_change_the_numbers_is_not_in_the_run_id() -> None:
    base = tiny_experiment()
    same = [base.with_overrides(["train.eval_batch_size=7"]), base.with_overrides(["name=other", "description=\"why\""])]
    assert {run_id(e) for e in same} == {run_id(base)}
    different = [base.with_overrides([o]) for o in ("train.lr=0.02", "data.seed=1", "train.epochs=4", "train.seed=1")]
    assert len({run_id(e) for e in different} | {run_id(base)}) == 5


def test_synthetic_data_is_named_by_its_parameters() -> None:
    config = ns.DataConfig(source="synthetic", train_size=1000, test_size=200, seed=3)
    assert data_identity(config) == "synthetic train=1000 test=200 seed=3"
    assert json.dumps(data_identity(ns.DataConfig()))  # TFDS: a version string, no files read


@pytest.mark.parametrize("bad, words", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), ("a", "dtype <U1")])
def test_weights_that_are_not_finite_real_numbers_are_refused(bad: object, words: str) -> None:
    network = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)])
    weights = init_weights(network)
    weights["0.bias"] = np.array([bad, bad])
    with pytest.raises(ns.SpecError, match=f"tensor '0.bias' .*{words}"):
        ns.check_weights(network, weights)
