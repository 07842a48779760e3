"""`netspec summary`, `crosscheck`, `schema` and `report`: looking at a spec, two backends, the file formats and finished runs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netspec.protocol.backend import backend_names
from netspec.errors import SpecError
from netspec.commands.options import PROG, _backends, _experiment_only, _overrides, _Parser, _spec_options


def cmd_summary(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} summary", description="Print a network's layers, output shapes and parameter counts.")
    _spec_options(p)
    p.add_argument("--diagram", metavar="FILE", help="also draw the graph: FILE (.png or .svg) and its Mermaid text "
                   "beside it (.mmd)")
    p.add_argument("--expand", action="store_true", help="print the flat network JSON that blocks and params expand to")
    return _summary(p.parse_args(argv))


def _summary(args: argparse.Namespace) -> int:
    from netspec.spec.experiment import Experiment

    _experiment_only(args.spec, "summary")
    experiment = Experiment.load(args.spec, _overrides(args))
    print(f"{args.spec}: {experiment.name}" + (f" - {experiment.description}" if experiment.description else ""))
    print(experiment.network.summary())
    _print_block_uses(args.spec, _overrides(args))
    if getattr(args, "expand", False):
        print(json.dumps(experiment.network.model_dump(mode="json", exclude_defaults=True)["layers"], indent=1))
    if getattr(args, "diagram", None):
        from netspec.runs.diagram import write_diagram
        print("wrote " + ", ".join(map(str, write_diagram(experiment.network, args.diagram))))
    return 0


def _print_block_uses(path: str, overrides: list[str]) -> None:
    """Which flat layers each block use of the file became (nothing for a flat network)."""
    from netspec.io import read_json
    from netspec.spec.blocks import block_uses
    from netspec.spec.expand import short_form
    from netspec.spec.overrides import apply_overrides

    data, _ = short_form(read_json(path), path, overrides, path, apply_overrides)
    uses = block_uses(data.get("network") if isinstance(data, dict) else None, path)
    if uses:
        print("block uses (their flat layers above; --expand prints them):")
        for first, last, text in uses:
            print(f"  {f'{first}-{last}' if last > first else str(first):<8} {text}")


def cmd_crosscheck(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} crosscheck", description="Compare two backends on a network, number "
                                "by number (same weights, the same dropout masks); exit 1 if a difference exceeds its tolerance.")
    _spec_options(p)
    p.add_argument("--backend", help="the reference backend and the one checked against it (default: the first two "
                   "registered, torch,jax)")
    p.add_argument("--steps", type=int, nargs="?", const=20, metavar="N", help="trajectory mode: train both backends N "
                   "steps (default 20) from the same state in float64, dropout on, and print each step's largest difference")
    p.add_argument("--verbose", "-v", action="store_true", help="print every compared row (the full table), not "
                   "the summary of the worst row per tier")
    return _crosscheck(p.parse_args(argv))


def _crosscheck(args: argparse.Namespace) -> int:
    from netspec.check.crosscheck import run_crosscheck
    from netspec.spec.experiment import Experiment

    _experiment_only(args.spec, "crosscheck")
    experiment = Experiment.load(args.spec, _overrides(args))
    pair = _backends(args.backend or ",".join(backend_names()[:2]))
    if len(pair) != 2 or pair[0].name == pair[1].name:
        raise SpecError(f"crosscheck compares two different backends, got --backend {args.backend!r}; e.g. torch,jax")
    if getattr(args, "steps", None) is not None:
        from netspec.check.trajectory import run_trajectory
        trajectory = run_trajectory(experiment.network, pair[0], pair[1], seed=experiment.train.seed, steps=args.steps,
                                    train_config=experiment.train)
        print(trajectory.table())
        return 0 if trajectory.ok else 1
    report = run_crosscheck(experiment.network, pair[0], pair[1], seed=experiment.train.seed, train_config=experiment.train)
    # runner.py's historical --crosscheck (no --verbose option) prints the full table, as it always has
    verbose = getattr(args, "verbose", True)
    print(report.table() if verbose else report.summary() + f"\n(every one of the {len(report.rows)} rows: --verbose)")
    if not report.ok:
        from netspec.check.bisection import locate
        parting = locate(experiment.network, pair[0], pair[1], seed=experiment.train.seed, train_config=experiment.train)
        print(parting.line(pair[0].name, pair[1].name) if parting else "bisection: the float64 passes agree layer by layer; "
              "the difference is in what the table names (evaluate() or after the lr change)")
        print(f"crosscheck FAILED: worst tensor {report.worst}", file=sys.stderr)
        return 1
    if verbose:
        print(f"crosscheck passed: {pair[0].name} and {pair[1].name} agree within tolerance")
    return 0


def cmd_schema(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} schema", description="Write the JSON Schemas of experiment, sweep and search files "
                                "(editors validate a spec whose \"$schema\" points to them).")
    p.add_argument("-o", "--out", help="a folder: writes experiment.schema.json, sweep.schema.json and search.schema.json there "
                   "(default: print the experiment schema)")
    args = p.parse_args(argv)
    from netspec.spec.schema import SCHEMAS, write_schemas
    if not args.out:
        sys.stdout.write(json.dumps(SCHEMAS["experiment"](), indent=2) + "\n")
        return 0
    for path in write_schemas(Path(args.out)):
        print(f"wrote {path}")
    return 0


def cmd_report(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} report", description="Write report.md (tables and figures) over finished runs.")
    p.add_argument("runs", nargs="?", default="runs", help="the runs folder (default: runs)")
    p.add_argument("-o", "--out", help="where to write report.md (default: <runs>/report.md)")
    args = p.parse_args(argv)
    from netspec.sweeps.sweep import write_report
    print(f"wrote {write_report(args.runs, args.out)}")
    return 0
