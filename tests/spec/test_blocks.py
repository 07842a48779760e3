"""Blocks and network parameters expand at load into the flat layers a hand-written
spec states (the same layer ids, weight names and run id); every bad use is one SpecError line naming
the use, the block and the field; fuzzed block files end in a SpecError, never a traceback or a hang."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from netspec.errors import SpecError
from netspec.runs.run_folder import run_id
from netspec.spec.experiment import Experiment

CONV = {"type": "Conv2d", "kernel_size": 3, "padding": 1, "bias": False}
BLOCKS = {
    "conv_bn": {"params": ["c"], "layers": [{**CONV, "out_channels": "$c"}, {"type": "BatchNorm"}, {"type": "ReLU"}]},
    "residual": {"params": ["c"], "layers": [{"use": "conv_bn", "c": "$c", "id": "a"},
                                             {"type": "Add", "inputs": ["input", "a"]}]},
}


def short(layers: list, params: dict | None = None, blocks: dict | None = None) -> dict:
    network = {"input_shape": [3, 8, 8], "params": params or {"width": 4}, "blocks": blocks or BLOCKS, "layers": layers}
    return {"name": "t", "network": network, "data": {"source": "synthetic"}}


def load(tmp_path: Path, data: dict, overrides: list[str] | None = None) -> Experiment:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return Experiment.load(path, overrides)


def hand_written(width: int) -> dict:
    """The flat equivalent, written out by hand."""
    layers = [{**CONV, "out_channels": width}, {"type": "BatchNorm"}, {"id": "stem", "type": "ReLU"},
              {**CONV, "out_channels": width}, {"type": "BatchNorm"}, {"type": "ReLU"},
              {"type": "Add", "inputs": ["stem", 5]},
              {"type": "GlobalPool", "mode": "max"}, {"type": "Linear", "out_features": 10}]
    return {"name": "t", "network": {"input_shape": [3, 8, 8], "layers": layers}, "data": {"source": "synthetic"}}


SHORT = [{"use": "conv_bn", "c": "$width", "id": "stem"}, {"use": "residual", "c": "$width"},
         {"type": "GlobalPool", "mode": "max"}, {"type": "Linear", "out_features": 10}]


def test_blocks_expand_to_the_hand_written_flat_spec(tmp_path: Path) -> None:
    blocked = load(tmp_path, short(SHORT))
    flat = load(tmp_path, hand_written(4))
    assert blocked == flat and run_id(blocked) == run_id(flat)
    assert [layer.id for layer in blocked.network.layers] == [None, None, "stem", None, None, None, None, None, None]
    assert list(blocked.network.param_infos()) == list(flat.network.param_infos())
    assert "3.weight" in blocked.network.param_infos()


def test_summary_shows_where_each_block_use_landed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hand-written flat spec above puts conv_bn at layers 0-2 and residual (conv_bn + Add) at 3-6."""
    from netspec.cli import main

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(short(SHORT)))
    assert main(["summary", str(path), "--set", "network.params.width=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    uses = out[out.index("block uses (their flat layers above; --expand prints them):") + 1:]
    assert [line.split() for line in uses] == [["0-2", "conv_bn(c=2)"], ["3-6", "residual(c=2)"]]
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(hand_written(2)))
    assert main(["summary", str(flat)]) == 0
    assert "block uses" not in capsys.readouterr().out


def test_set_network_params_changes_the_width_before_expansion(tmp_path: Path) -> None:
    narrow = load(tmp_path, short(SHORT), ["network.params.width=2"])
    assert narrow == load(tmp_path, hand_written(2))
    by_id = load(tmp_path, short(SHORT), ["network.layers.stem.type=Identity"])  # a layer path: the flat form
    assert by_id.network.layers[2].type == "Identity"


def test_arithmetic_on_parameters(tmp_path: Path) -> None:
    for text, expected in (("2*$width", 8), ("$width*3", 12), ("$width/2", 2)):
        e = load(tmp_path, short([{**CONV, "out_channels": text}, {"type": "Flatten"}]))
        assert e.network.layers[0].out_channels == expected


def test_shipped_resnet9_quarter_width() -> None:
    spec = Path(__file__).resolve().parents[2] / "specs" / "resnet9.json"
    full = Experiment.load(spec, ["data.source=synthetic"])
    quarter = Experiment.load(spec, ["data.source=synthetic", "network.params.width=16"])
    assert full.network.num_params() == 6_573_120
    assert [getattr(layer, "out_channels", None) for layer in quarter.network.layers if layer.type == "Conv2d"] == \
        [16, 32, 32, 32, 64, 128, 128, 128]


@pytest.mark.parametrize("layers, blocks, words", [
    ([{"use": "nope", "c": 1}], None, ["layer 0", "unknown block 'nope'"]),
    ([{"use": "conv_bn"}], None, ["layer 0 (use of block 'conv_bn')", "missing parameter 'c'"]),
    ([{"use": "conv_bn", "c": 4, "d": 1}], None, ["layer 0 (use of block 'conv_bn')", "unknown parameter 'd'"]),
    ([{"use": "loop", "c": 4}], {"loop": {"params": ["c"], "layers": [{"use": "loop", "c": "$c"}]}},
     ["block 'loop' uses itself", "loop -> loop"]),
    ([{"type": "Flatten"}, {"use": "conv_bn", "c": "$wdth"}], None, ["layer 1 (use of block 'conv_bn')", "no parameter 'wdth'",
                                                                       "did you mean 'width'"]),
    ([{**CONV, "out_channels": "$width/3"}], None, ["layer 0 (Conv2d): out_channels", "not a multiple of 3"]),
    ([{"use": "bad", "c": 4}], {"bad": {"params": ["c"], "layers": [{"type": "Add", "inputs": ["input", 0]}]}},
     ["block 'bad' layer 0", "not by index"]),
    ([{"use": "bad", "c": 4}], {"bad": {"params": ["c"], "layers": [{"type": "Add", "inputs": ["input", "x"]}]}},
     ["block 'bad' layer 0", "'x' names no earlier layer"]),
])
def test_every_bad_use_is_one_line_naming_use_block_field(tmp_path: Path, layers: list, blocks: dict | None,
                                                          words: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        load(tmp_path, short(layers, blocks={**BLOCKS, **(blocks or {})}))
    line = str(err.value)
    assert "\n" not in line and "spec.json" in line
    for word in words:
        assert word in line, line


def test_expansion_is_bounded(tmp_path: Path) -> None:
    """Ten blocks each using the one below twice would expand to 2**10 layers; depth 9 nests too deep."""
    blocks = {f"b{i}": {"params": [], "layers": [{"use": f"b{i - 1}"}, {"use": f"b{i - 1}"}]} for i in range(1, 11)}
    blocks["b0"] = {"params": [], "layers": [{"type": "ReLU"}]}
    with pytest.raises(SpecError, match="nest more than 8|more than 1,000 layers"):
        load(tmp_path, short([{"type": "Flatten"}, {"use": "b10"}], blocks=blocks))


def _mutate(value: object, rng: random.Random) -> object:
    choices = [None, 0, -1, 1.5, "x", "$c", "$nope", "input", [], {}, [1], {"use": "conv_bn"}, "residual", True]
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        return {**value, key: _mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate(value[i], rng), *value[i + 1:]]
    return rng.choice(choices)


def test_fuzzed_block_files_end_in_one_line_never_a_traceback(tmp_path: Path) -> None:
    rng = random.Random(31)
    base = short(SHORT)
    for _ in range(300):
        data = _mutate(base, rng)
        try:
            load(tmp_path, data)  # type: ignore[arg-type]
        except SpecError as err:
            assert "\n" not in str(err)
