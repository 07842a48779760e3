"""`summary --diagram` writes the graph as a figure and as Mermaid text whose edges are
the graph's (ResNet-9's two residual arcs from layer1 and layer3 to the Adds at 13 and 28)."""
from __future__ import annotations

from pathlib import Path

import pytest

from netspec.cli import main

RESNET9 = str(Path(__file__).resolve().parents[2] / "specs" / "resnet9.json")


def test_summary_diagram_writes_png_and_mermaid(tmp_path: Path) -> None:
    assert main(["summary", RESNET9, "--diagram", str(tmp_path / "r9.png")]) == 0
    assert (tmp_path / "r9.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "r9.mmd").read_text()
    edges = [line.strip() for line in text.splitlines() if "-->" in line]
    assert len(edges) == 32 + 2  # one per chained layer, plus the two residual arcs
    assert "n6 --> n13" in edges and "n12 --> n13" in edges and "n21 --> n28" in edges and "in --> n0" in edges
    assert text.startswith("graph TD")


def test_svg_and_a_bad_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", RESNET9, "--diagram", str(tmp_path / "r9.svg")]) == 0
    assert "<svg" in (tmp_path / "r9.svg").read_text()
    assert main(["summary", RESNET9, "--diagram", str(tmp_path / "r9.gif")]) == 2
    assert ".png or .svg" in capsys.readouterr().err


def test_summary_expand_prints_the_flat_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", RESNET9, "--set", "network.params.width=16", "--expand"]) == 0
    out = capsys.readouterr().out
    assert '"inputs": [\n   "layer1",\n   12\n  ]' in out and '"out_channels": 128' in out and '"use"' not in out


def test_report_shows_each_experiments_network_once(tmp_path: Path) -> None:
    from netspec.sweeps.report import build_report

    spec = str(Path(__file__).resolve().parents[2] / "specs" / "mlp.json")
    overrides = ["data.train_size=200", "data.val_size=50", "data.test_size=50", "train.epochs=1", "train.batch_size=50"]
    args = ["train", spec, "--backend", "torch", "--data", "synthetic", "--out", str(tmp_path / "runs")]
    assert main([*args, *(x for o in overrides for x in ("--set", o))]) == 0
    report = build_report(tmp_path / "runs", tmp_path / "runs" / "report.md").read_text()
    lines = [line for line in report.splitlines() if line.startswith("Network: ![mlp network](figures/network_")]
    assert len(lines) == 1
    figure = tmp_path / "runs" / lines[0].split("(", 1)[1].rstrip(")")
    assert figure.read_bytes()[:4] == b"\x89PNG"
