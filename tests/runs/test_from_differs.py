"""`train --from RUN` of a run whose spec differs names the differing fields and the fix."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.protocol.backend import installed_backends
from netspec.runs.training_run import differing_fields
from tests.helpers import tiny_experiment, write_spec

RUN = {"train": {"lr": 0.001, "epochs": 0, "optimizer": {"type": "adam"}},
       "network": {"layers": [{"type": "linear", "out_features": 16}, {"type": "dropout", "p": 0.5}]}}


def changed(**edits: object) -> dict:
    """A copy of RUN with `a__b__0=value` set (KeyError: deleted)."""
    spec = copy.deepcopy(RUN)
    for path, value in edits.items():
        node = spec
        *parents, last = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return spec


def test_equal_content_has_no_differing_fields() -> None:
    assert differing_fields(RUN, changed()) == ""


def test_a_changed_leaf_is_named_with_both_values() -> None:
    assert differing_fields(RUN, changed(train__lr=0.01)) == "train.lr: the run has 0.001, this spec 0.01"


def test_an_added_and_a_removed_key_show_nothing_on_the_other_side() -> None:
    assert differing_fields(RUN, changed(train__label_smoothing=0.1)) == \
        "train.label_smoothing: the run has nothing, this spec 0.1"
    assert differing_fields(RUN, changed(train__optimizer__type=KeyError)) == \
        'train.optimizer.type: the run has "adam", this spec nothing'


def test_a_changed_list_element_is_named_by_its_index() -> None:
    assert differing_fields(RUN, changed(network__layers__1__p=0.25)) == \
        "network.layers.1.p: the run has 0.5, this spec 0.25"
    longer = changed()
    longer["network"]["layers"].append({"type": "relu"})
    assert differing_fields(RUN, longer) == 'network.layers.2: the run has nothing, this spec {"type": "relu"}'


def test_a_value_of_another_json_type_differs() -> None:
    assert differing_fields({"a": 1}, {"a": 1.0}) == "a: the run has 1, this spec 1.0"
    assert differing_fields({"a": 1}, {"a": True}) == "a: the run has 1, this spec true"


def test_beyond_the_limit_the_rest_is_counted() -> None:
    other = changed(train__lr=0.01, train__epochs=3, train__optimizer__type="sgd", network__layers__0__out_features=8,
                    network__layers__1__p=0.1)
    text = differing_fields(RUN, other)
    assert text == ('train.lr: the run has 0.001, this spec 0.01; train.epochs: the run has 0, this spec 3; '
                    'train.optimizer.type: the run has "adam", this spec "sgd"; +2 more')
    assert differing_fields(RUN, other, limit=5).count(";") == 4 and "more" not in differing_fields(RUN, other, limit=5)


def test_a_long_value_is_cut_short() -> None:
    text = differing_fields({"a": "x" * 100}, {"a": "y"})
    assert text.startswith('a: the run has "xxx') and "..., this spec \"y\"" in text and len(text) < 80


@pytest.mark.skipif("torch" not in installed_backends(), reason="needs torch")
def test_from_a_run_with_another_lr_names_it_and_its_fix_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    first = tiny_experiment(name="first", epochs=1)
    cli = ["--backend", "torch", "--out", str(out), "--device", "cpu"]
    assert main(["train", str(write_spec(tmp_path, first)), *cli]) == 0
    (run,) = [p.parent for p in out.glob("first/torch/*/checkpoint.npz")]
    other = first.model_copy(update={"name": "other", "train": first.train.model_copy(update={"lr": 1e-3, "epochs": 2})})
    capsys.readouterr()
    assert main(["train", str(write_spec(tmp_path, other)), *cli, "--from", str(run)]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert "a run of another experiment" in err
    assert ", differing in train.lr: the run has 0.01, this spec 0.001; --from continues" in err  # epochs aside: lr alone
    fix = f"continue it with its own spec: netspec train {run / 'spec.json'} --from {run}"
    assert err.endswith(fix), err
    assert main(["train", str(run / "spec.json"), *cli, "--from", str(run), "--epochs", "2"]) == 0  # the fix, longer
    (continued,) = [p for p in out.glob("first/torch/*") if "-from-torch-" in p.name]
    assert continued.name.endswith(f"-from-torch-{run.name}") and (continued / "metrics.json").is_file()
