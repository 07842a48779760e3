#!/usr/bin/env python
"""netspec's command line: train a spec, print its summary, cross-check backends, write the schema
or the report.

    python runner.py specs/cnn_no_bn.json --backend torch       # train, write runs/cnn_no_bn/torch/<id>/
    python runner.py specs/cnn.json --summary                   # layers, output shapes, parameters
    python runner.py specs/cnn.json --crosscheck                # torch vs jax, number by number
    python runner.py specs/mlp.json --set train.lr=0.01 --set network.layers.3.p=0.3
    python runner.py schema -o experiment.schema.json           # JSON Schema for editors
    python runner.py report runs/                               # report.md over every finished run

Bad input gives one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netspec.backend import Backend, backend_names, load_backend
from netspec.errors import NetspecError, SpecError

EXIT_BAD_INPUT = 2


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="an experiment spec (specs/*.json) or a sweep (specs/sweeps/*.json)")
    p.add_argument("--backend", default="torch", help="torch, jax, or both as torch,jax (default: torch)")
    p.add_argument("--summary", action="store_true", help="print the network's layers, output shapes and parameter counts, then exit")
    p.add_argument("--crosscheck", action="store_true", help="compare the torch and jax backends on this network "
                   "(same weights, dropout off, float64 and float32); exit 1 if a difference exceeds its tolerance")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field of the spec by its dotted path, e.g. train.lr=0.01 or network.layers.3.p=0.3 (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    p.add_argument("--seed", type=int, help="shorthand for --set train.seed=N (weights and dropout)")
    p.add_argument("--data", choices=["cifar10", "synthetic"], help="shorthand for --set data.source=...")
    p.add_argument("--data-dir", help="a local CIFAR-10 copy: cifar-10-batches-py, an image-folder tree "
                   "(train/<class>/*, test/<class>/*) or a .tar.gz of either (shorthand for --set data.dir=...)")
    p.add_argument("--out", default="runs", help="root folder of the outputs (default: runs)")
    p.add_argument("--device", help="cpu or gpu (default: a GPU when there is one)")
    p.add_argument("--force", action="store_true", help="train again even if an identical finished run exists")
    return p


def _overrides(args: argparse.Namespace) -> list[str]:
    """The shorthand flags as --set items (one override mechanism), before the explicit --set ones."""
    short = {"train.epochs": args.epochs, "train.seed": args.seed, "data.source": args.data, "data.dir": args.data_dir}
    return [f"{k}={json.dumps(v)}" for k, v in short.items() if v is not None] + args.overrides


def _backends(text: str) -> list[Backend]:
    """--backend torch,jax as backend objects, resolved through the registry."""
    known = backend_names()
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in known]
    if bad or not names:
        raise SpecError(f"--backend {text!r}: unknown backend {bad[0] if bad else ''!r}; use one of {', '.join(known)} "
                        f"or several, comma-separated")
    return [load_backend(name) for name in names]


def cmd_train(argv: list[str]) -> int:
    from netspec.experiment import Experiment

    args = _train_parser().parse_args(argv)
    overrides = _overrides(args)
    if _is_sweep(args.spec):
        from netspec.sweep import run_sweep
        run_sweep(args.spec, _backends(args.backend), out_root=args.out, overrides=overrides, device=args.device, force=args.force)
        return 0
    experiment = Experiment.load(args.spec, overrides)
    if args.summary:
        print(f"{args.spec}: {experiment.name}" + (f" - {experiment.description}" if experiment.description else ""))
        print(experiment.network.summary())
        return 0
    if args.crosscheck:
        from netspec.crosscheck import run_crosscheck
        report = run_crosscheck(experiment.network, seed=experiment.train.seed, train_config=experiment.train)
        print(report.table())
        if not report.ok:
            print(f"crosscheck FAILED: worst tensor {report.worst}", file=sys.stderr)
            return 1
        print("crosscheck passed: torch and jax agree within tolerance")
        return 0
    from netspec.training_run import run_experiment
    for backend in _backends(args.backend):
        run_experiment(experiment, backend, out_root=args.out, device=args.device, force=args.force)
    return 0


def _is_sweep(path: str) -> bool:
    from netspec.io import read_json
    from netspec.sweep import is_sweep_file
    return is_sweep_file(read_json(path))


def cmd_schema(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="runner.py schema", description="Write the JSON Schema of experiment spec files.")
    p.add_argument("-o", "--out", help="file to write (default: stdout)")
    args = p.parse_args(argv)
    from netspec.schema import experiment_schema
    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="runner.py report", description="Write report.md (tables and figures) over finished runs.")
    p.add_argument("runs", nargs="?", default="runs", help="the runs folder (default: runs)")
    p.add_argument("-o", "--out", help="where to write report.md (default: <runs>/report.md)")
    args = p.parse_args(argv)
    from netspec.sweep import write_report
    path = write_report(args.runs, args.out)
    print(f"wrote {path}")
    return 0


COMMANDS = {"schema": cmd_schema, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else cmd_train(argv)
    except NetspecError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished epochs and runs are kept in their folders", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
