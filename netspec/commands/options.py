"""What the subcommands share: the parser with the house rule for bad input, the spec options and their
shorthands (one --set mechanism), --track, --threads, --backend resolved through the registry."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from netspec.protocol.backend import Backend, backend_names, load_backend
from netspec.errors import SpecError, did_you_mean, require
from netspec.training.threads import check_threads

PROG = "netspec"


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad input: one line on stderr, exit code 2 (argparse's own
    error prints the whole usage first, and exits where main cannot see it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SpecError(f"{self.prog}: {message}; see {self.prog} --help")


# ---- shared options ----------------------------------------------------------------------------

def _spec_options(p: argparse.ArgumentParser) -> None:
    """What every command that reads an experiment spec takes: the file and its overrides."""
    p.add_argument("spec", help="an experiment spec (specs/*.json); `train` also takes a sweep (specs/sweeps/*.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field of the spec by its dotted path, e.g. train.lr=0.01 or network.layers.3.p=0.3 (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    p.add_argument("--seed", type=int, help="shorthand for --set train.seed=N (weights and dropout)")
    p.add_argument("--data", metavar="SOURCE", help="cifar10, synthetic or a tensorflow-datasets image set such as "
                   "mnist or cifar100 (shorthand for --set data.source=...)")
    p.add_argument("--tiny", action="store_true", help="shrink train, validation and test together to 2,000 / 500 / "
                   "500 images (a spec with val_size 0 keeps none) for a quick try of any spec; a run of its own id")
    p.add_argument("--data-dir", help="a local copy: an image-folder tree (train/<class>/*, test/<class>/*, any "
                   "classes and size), cifar-10-batches-py, or a .tar.gz of either (shorthand for --set data.dir=...)")


def _overrides(args: argparse.Namespace) -> list[str]:
    """The shorthand flags as --set items (one override mechanism), before the explicit --set ones."""
    short = {"train.epochs": args.epochs, "train.seed": args.seed, "data.source": args.data, "data.dir": args.data_dir,
             "train.init_weights": str(Path(args.weights).resolve()) if getattr(args, "weights", None) else None}
    tiny: list[str] = []
    if getattr(args, "tiny", False):
        from netspec.api import tiny_overrides
        from netspec.spec.bases import read_with_bases
        from netspec.io import read_json
        data = read_with_bases(args.spec, read_json(args.spec))  # the val_size a base gives counts too
        tiny = tiny_overrides(data, args.overrides, args.spec)
    return tiny + [f"{k}={json.dumps(v)}" for k, v in short.items() if v is not None] + args.overrides


def _track_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", nargs="?", const="mlflow", metavar="mlflow[=URI]", help="also log each run to MLflow, "
                   "keyed by its run id (default store: OUT/mlflow/mlflow.db; needs netspec[track])")


def _tracker(args: argparse.Namespace):  # -> Optional[MlflowTracker]; the one line before anything is trained
    if args.track is None:
        return None
    require("mlflow", "track", "--track mlflow")
    from netspec.runs.tracking import MlflowTracker, parse_track
    return MlflowTracker(parse_track(args.track, Path(args.out)), Path(args.out) / "mlflow" / "artifacts")


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="CPU threads to compute with (torch: any N; jax: 1, or every core "
                   "for more); default: OMP_NUM_THREADS if set, else for torch the physical cores less the "
                   "machine's load, for jax every core. Never part of the run id; recorded in env.json")


def _backends(text: str, threads: Optional[int] = None) -> list[Backend]:
    """--backend torch,jax as backend objects, resolved through the registry, computing with `threads`
    CPU threads (None: each backend's default)."""
    known = backend_names()
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in known]
    if bad or not names:
        first = bad[0] if bad else ""
        raise SpecError(f"--backend {text!r}: unknown backend {first!r}{did_you_mean(first, known)}; use one of "
                        f"{', '.join(known)} or several, comma-separated")
    threads = check_threads(threads)
    backends = [load_backend(name) for name in names]
    for backend in backends:
        backend.set_threads(threads)
    return backends


def _is_sweep(path: str) -> bool:
    from netspec.io import read_json
    from netspec.spec.bases import file_kind
    kind = file_kind(path, read_json(path))  # a file with only a base is its base's kind: an experiment
    if kind == "search":
        raise SpecError(f"{path} is a search file; run it with: {PROG} search {path}")
    return kind == "sweep"


def _experiment_only(path: str, command: str) -> None:
    """Modes that make sense for one experiment refuse a sweep file in one line."""
    if _is_sweep(path):
        raise SpecError(f"{path} is a sweep file; {command} takes one experiment spec, such as the sweep's base "
                        f"(its \"base\" field); train the sweep with: {PROG} train {path}")
