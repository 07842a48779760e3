"""The layer graph: specs with ids and inputs, shape inference with one line per bad graph, the summary,
chains unchanged (JSON, weight names, run ids), and graphs on both backends against torch.nn built-ins
and the numpy reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.cli import main
from netspec.runs.run_folder import run_id
from tests.helpers import tiny_experiment

ROOT = Path(__file__).resolve().parents[2]

RESIDUAL = ns.Network(input_shape=(3, 8, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, padding=1, bias=False, id="stem"), ns.BatchNorm(), ns.ReLU(),
    ns.Conv2d(out_channels=4, kernel_size=3, padding="same", bias=False), ns.BatchNorm(train_weight=False), ns.GELU(),
    ns.Add(inputs=["stem", 5], id="sum"),
    ns.Conv2d(out_channels=2, kernel_size=1, inputs=["input"]), ns.Concat(inputs=["sum", 7]),
    ns.AvgPool2d(kernel_size=2), ns.GlobalPool(mode="max"), ns.Linear(out_features=3, bias=False), ns.Scale(factor=0.125),
])
"""A residual block, a branch from the network's input joined by Concat, and new layer types."""


def test_a_chain_keeps_its_json_weight_names_and_run_id() -> None:
    """Every spec file reads back to its own JSON (no new field appears), and run ids made before graphs
    existed are unchanged (pinned: computed on the commit before the graph)."""
    for path in sorted((ROOT / "specs").glob("*.json")):
        raw = json.loads(path.read_text())
        if "base" in raw or {"blocks", "params"} & set(raw["network"]):
            continue  # the short form (blocks, bases): tests/spec/test_blocks.py checks its flat equivalent
        assert ns.Experiment.load(path).network.model_dump(mode="json") == raw["network"], path.name
    assert run_id(tiny_experiment()) == "a5d9691831"
    cnn = ns.Experiment.load(ROOT / "specs/cnn.json").model_copy(update={"data": tiny_experiment().data})
    assert run_id(cnn) == "57d558a28d"
    assert list(cnn.network.param_infos())[:3] == ["0.weight", "0.bias", "1.weight"] and cnn.network.is_chain


def test_graph_shapes_names_and_json_round_trip() -> None:
    assert not RESIDUAL.is_chain
    assert RESIDUAL.shapes()[1:] == [(4, 8, 8)] * 7 + [(2, 8, 8), (6, 8, 8), (6, 4, 4), (6,), (3,), (3,)]
    assert [n.inputs for n in RESIDUAL.nodes()][6:9] == [(0, 5), (-1,), (6, 7)]
    assert "4.weight" in RESIDUAL.param_infos() and not RESIDUAL.param_infos()["4.weight"].trainable
    again = ns.Network.model_validate_json(RESIDUAL.model_dump_json())
    assert again == RESIDUAL
    assert json.loads(RESIDUAL.model_dump_json())["layers"][6] == {"id": "sum", "inputs": ["stem", 5], "type": "Add"}


def test_the_summary_shows_ids_and_inputs() -> None:
    lines = RESIDUAL.summary().splitlines()
    assert lines[0].split() == ["#", "id", "layer", "inputs", "output", "shape", "params"]
    add = next(line for line in lines if "Add()" in line)
    assert add.split()[:4] == ["6", "sum", "Add()", "stem,"] and "(4, 8, 8)" in add
    assert "input" in next(line for line in lines if line.lstrip().startswith("7 "))
    assert "# " in ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)]).summary()  # a chain: as before
    assert "inputs" not in ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)]).summary()


BAD_GRAPHS = [
    ([{"type": "Linear", "out_features": 3}, {"type": "ReLU", "inputs": [2]}, {"type": "ReLU", "inputs": [0]}],
     "layer 1 (ReLU): input 2 is layer 2, which comes later"),
    ([{"type": "Linear", "out_features": 3, "inputs": [0]}], "layer 0 (Linear): input 0 names the layer itself"),
    ([{"type": "Linear", "out_features": 3, "inputs": ["nope"]}], "input 'nope' names no layer"),
    ([{"type": "Linear", "out_features": 3, "inputs": [5]}], "input 5 names no layer (the network has 1"),
    ([{"type": "Linear", "out_features": 4, "id": "a", "inputs": ["b"]}, {"type": "ReLU", "id": "b"}],
     "input 'b' makes a cycle (0 -> 1 -> 0)"),
    ([{"type": "Linear", "out_features": 3}, {"type": "Linear", "out_features": 4}, {"type": "Add", "inputs": [0, 1]}],
     "layer 2 (Add): Add needs inputs of one shape but gets (3,), (4,)"),
    ([{"type": "Linear", "out_features": 3}, {"type": "ReLU", "inputs": [0, 0]}], "layer 1 (ReLU): takes one input but lists 2"),
    ([{"type": "Linear", "out_features": 3}, {"type": "Add"}], "layer 1 (Add): Add merges two or more inputs but has 1"),
    ([{"type": "Linear", "out_features": 3}, {"type": "Linear", "out_features": 4, "inputs": ["input"]}],
     "layer 0 (Linear): nothing takes its output and it is not the last layer (a dead branch)"),
    ([{"type": "Linear", "out_features": 3, "id": "a"}, {"type": "ReLU", "id": "a"}], "layer 1 (ReLU): id 'a' is used twice"),
    ([{"type": "Linear", "out_features": 3, "id": "input"}], "id 'input' names the network's input"),
    ([{"type": "Linear", "out_features": 3, "id": "1st"}], "id"),
]
IMAGE_GRAPHS = [
    ([{"type": "Conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "Concat", "inputs": ["input", 0]}],
     "layer 1 (Concat): Concat joins channels and needs one spatial size but gets (3, 6, 6), (2, 4, 4)"),
    ([{"type": "Conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": "same"}],
     "layer 0 (Conv2d): Conv2d padding 'same' needs stride 1"),
    ([{"type": "Flatten"}, {"type": "Concat", "inputs": ["input", 0]}], "images and flat features do not mix"),
]


@pytest.mark.parametrize("layers, message", BAD_GRAPHS + [(layers, m) for layers, m in IMAGE_GRAPHS],
                         ids=[f"bad{i}" for i in range(len(BAD_GRAPHS) + len(IMAGE_GRAPHS))])
def test_every_bad_graph_is_one_line_and_exit_2(layers: list, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    shape = [3, 6, 6] if any(l["type"] in ("Conv2d", "Flatten") for l in layers) else [4]
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"name": "bad", "network": {"input_shape": shape, "layers": layers}}))
    assert main(["summary", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_graph_trains_and_resumes_bit_identically(backend: str) -> None:
    """train_steps on a graph with dropout moves its weights; a training state taken between two calls
    and loaded into a fresh model continues bit-identically (the float64 cross-check of random graphs is
    in tests/check/test_crosscheck.py)."""
    from netspec.protocol.backend import load_backend

    network = ns.Network(input_shape=RESIDUAL.input_shape, layers=[
        *RESIDUAL.layers[:6], ns.Dropout2d(p=0.3), ns.Add(inputs=["stem", 6], id="sum"),
        ns.Conv2d(out_channels=2, kernel_size=1, inputs=["input"]), ns.Concat(inputs=["sum", 8]), *RESIDUAL.layers[9:]])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, 24)
    rows = [rng.permutation(24).reshape(4, 6) for _ in range(2)]
    impl = load_backend(backend)
    first, second = (impl.compile(network, seed=1, device="cpu") for _ in range(2))
    for model in (first, second):
        model.setup_optimizer(ns.TrainConfig(lr=1e-2))
    data = first.to_device(x, y)
    before = first.get_weights()
    first.train_steps(data, rows[0], 1e-2)
    assert not np.array_equal(first.get_weights()["0.weight"], before["0.weight"])
    second.set_training_state(first.get_training_state())
    expected = first.train_steps(data, rows[1], 1e-2), first.get_weights()
    got = second.train_steps(second.to_device(x, y), rows[1], 1e-2), second.get_weights()
    assert got[0] == expected[0]
    for name in expected[1]:
        np.testing.assert_array_equal(got[1][name], expected[1][name], err_msg=name)


@pytest.mark.slow
def test_a_graph_runs_an_epoch_on_both_backends(tmp_path: Path) -> None:
    """A 1-epoch synthetic run of a residual graph through run_experiment on each backend."""
    from netspec.protocol.backend import load_backend
    from netspec.runs.training_run import run_experiment

    network = ns.Network(input_shape=(3, 32, 32), layers=[
        ns.Conv2d(out_channels=6, kernel_size=5, stride=2, bias=False, id="a"), ns.BatchNorm(), ns.ReLU(),
        ns.Conv2d(out_channels=6, kernel_size=3, padding="same", bias=False), ns.BatchNorm(), ns.Dropout2d(p=0.2),
        ns.Add(inputs=["a", 5]), ns.MaxPool2d(kernel_size=2), ns.GlobalPool(mode="max"), ns.Linear(out_features=10),
        ns.Scale(factor=0.5),
    ])
    experiment = tiny_experiment(epochs=1).model_copy(update={"network": network, "name": "graph"})
    for backend in ("torch", "jax"):
        metrics, folder = run_experiment(experiment, load_backend(backend), tmp_path, device="cpu", log=lambda line: None,
                                         progress=False)
        assert np.isfinite(metrics["train_loss"]) and (folder / "best_weights.npz").exists(), backend
