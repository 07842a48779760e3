"""The `netspec` command (also `python -m netspec` and `python runner.py`): one subcommand per job.

    netspec train specs/cnn_no_bn.json --backend torch,jax   # train (the default: netspec SPEC ...)
    netspec summary specs/cnn.json                         # layers, output shapes, parameter counts
    netspec crosscheck specs/cnn.json                      # the backends number by number (exit 1 on a mismatch)
    netspec report runs/                                   # runs/report.md: tables and figures
    netspec export RUN_DIR --format onnx                   # the run's best weights as an ONNX model
    netspec import model.onnx -o DIR                       # DIR/<name>.json + DIR/weights.npz, verified
    netspec evaluate RUN_DIR [--data-dir DIR]              # loss, accuracy, per-class accuracy, confusion matrix
    netspec predict RUN_DIR image.png ...                  # top classes with probabilities
    netspec schema -o schemas/                             # JSON Schemas of experiment and sweep files

Any problem a user can fix prints one line on stderr and exits 2 (netspec.errors.NetspecError).
Backends are resolved by name through the registry (netspec.protocol.backend); this module imports none.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Optional

from netspec.protocol.backend import Backend, backend_names, load_backend
from netspec.errors import NetspecError, SpecError, did_you_mean, require
from netspec.training.threads import check_threads

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
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
        section = data.get("data") if isinstance(data, dict) else None
        val_size = section.get("val_size") if isinstance(section, dict) else None
        for item in args.overrides:  # a --set data.val_size=0 counts as the spec's own (--set still wins after)
            if item.partition("=")[0].strip() == "data.val_size":
                val_size = item.partition("=")[2].strip()
        tiny = tiny_overrides(0 if val_size in (0, "0") else val_size)
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
    from netspec.spec.search_file import is_search_file
    from netspec.spec.sweep_file import is_sweep_file
    data = read_json(path)
    if is_search_file(data):
        raise SpecError(f"{path} is a search file; run it with: {PROG} search {path}")
    return is_sweep_file(data)


def _experiment_only(path: str, command: str) -> None:
    """Modes that make sense for one experiment refuse a sweep file in one line."""
    if _is_sweep(path):
        raise SpecError(f"{path} is a sweep file; {command} takes one experiment spec, such as the sweep's base "
                        f"(its \"base\" field); train the sweep with: {PROG} train {path}")


# ---- commands ----------------------------------------------------------------------------------

def _train_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Train an experiment or a sweep on one or more backends; "
                                "outputs in OUT/<name>/<backend>/<run-id>/.")
    _spec_options(p)
    p.add_argument("--backend", help="torch, jax, or several as torch,jax (default: torch; with --crosscheck: torch,jax)")
    p.add_argument("--out", default="runs", help="root folder of the outputs (default: runs)")
    p.add_argument("--device", help="cpu or gpu[:N] (default: a GPU when there is one)")
    p.add_argument("--force", action="store_true", help="train again even if an identical finished run exists")
    p.add_argument("--from", dest="source", metavar="RUN_DIR", help="continue that run's checkpoint (OUT/<name>/<backend>/"
                   "<run-id>, any backend: its weights, optimizer, schedule, shuffle and dropout stream) to train.epochs, "
                   "in a new run folder that records where it came from")
    p.add_argument("--weights", metavar="WEIGHTS.npz", help="start from these canonical weights instead of the seed's "
                   "draw (fine-tuning; e.g. netspec import's DIR/weights.npz); their fingerprint is in the run id "
                   "(shorthand for --set train.init_weights=...)")
    _threads_option(p)
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files into each run "
                   "folder (tensorboard --logdir OUT; needs netspec[tensorboard])")
    _track_option(p)
    p.add_argument("--seeds", type=int, help="repeat every run with seeds 0..N-1 (seed s adds s to train.seed and "
                   "train.shuffle_seed: weights, dropout masks and batch order; seed 0 is the run as written); "
                   "replaces a sweep file's \"seeds\"")
    p.add_argument("--launcher", choices=["local", "ray"], help="local: one run after the other (default); "
                   "ray: each run a Ray task (needs netspec[ray])")
    p.add_argument("--address", help="with --launcher ray: an existing cluster (e.g. auto or HEAD_IP:6379); "
                   "default: a local Ray on this machine's CPUs")
    p.add_argument("--gpus-per-run", type=float, help="with --launcher ray: GPUs per run, a fraction packs "
                   "several runs on a GPU (e.g. 0.5); default 1 on a cluster with GPUs, else 0")
    # runner.py's historical flags: the same jobs as the summary and crosscheck subcommands
    p.add_argument("--summary", action="store_true", help=f"print the network's summary and exit (= {PROG} summary)")
    p.add_argument("--crosscheck", action="store_true", help=f"cross-check the backends and exit (= {PROG} crosscheck)")
    return p


def cmd_train(argv: list[str], prog: str = f"{PROG} train") -> int:
    args = _train_parser(prog).parse_args(argv)
    if args.summary or args.crosscheck:
        return (_summary if args.summary else _crosscheck)(args)
    # The optional packages first: before a backend loads, a line is printed or a run folder exists.
    if args.tensorboard:
        require("tensorboardX", "tensorboard", "--tensorboard")
    if args.launcher == "ray":
        require("ray", "ray", "--launcher ray")
    overrides = _overrides(args)
    backends = _backends(args.backend or backend_names()[0], args.threads)
    if args.seeds is not None and args.seeds < 1:
        raise SpecError(f"--seeds {args.seeds}: must be at least 1 (runs seeds 0..N-1)")
    from netspec.sweeps.launchers import make_launcher
    from netspec.runs.run_folder import check_output_root
    check_output_root(Path(args.out))  # never a file, a source tree or a specs folder
    launcher = make_launcher(args.launcher, args.address, args.gpus_per_run)
    tracker = _tracker(args)
    if args.source is not None:
        if args.weights:
            raise SpecError("--weights starts a new run from given weights, --from continues a run's checkpoint; "
                            "give one of them")
        return _continue(args, overrides, backends)
    if _is_sweep(args.spec):
        from netspec.sweeps.sweep import run_sweep
        manifest = run_sweep(args.spec, backends, out_root=args.out, overrides=overrides, device=args.device,
                             force=args.force, seeds=args.seeds, launcher=launcher, tensorboard=args.tensorboard)
        if tracker is not None:  # the sweep as a parent run, its points as children
            tracker.log_folders([Path(args.out) / p["name"] / b / p["run_id"] for p in manifest["points"]
                                 for b in manifest["backends"]], f"sweep/{manifest['name']}", f"sweep {manifest['name']}")
        return 0
    from netspec.spec.experiment import Experiment
    from netspec.sweeps.sweep import experiment_jobs
    jobs = experiment_jobs(Experiment.load(args.spec, overrides), backends, args.seeds)
    launcher.run(jobs, args.out, device=args.device, force=args.force, tensorboard=args.tensorboard)
    if tracker is not None:
        tracker.log_folders([job.directory(args.out) for job in jobs])
    if len(jobs) > 1:
        from netspec.sweeps.launchers import jobs_table
        print(jobs_table(jobs, args.out))
    return 0


def _continue(args: argparse.Namespace, overrides: list[str], backends: list[Backend]) -> int:
    """train --from RUN_DIR: one experiment on one backend, in this process."""
    _experiment_only(args.spec, "train --from")
    if len(backends) != 1 or args.seeds is not None or args.launcher == "ray":
        raise SpecError("--from continues one run: give one --backend, and no --seeds or --launcher ray")
    from netspec.spec.experiment import Experiment
    from netspec.runs.training_run import run_experiment
    run_experiment(Experiment.load(args.spec, overrides), backends[0], out_root=args.out, device=args.device, force=args.force,
                   tensorboard=args.tensorboard, source=args.source)
    return 0


def cmd_search(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} search", description="An Optuna search over spec fields (a search file, "
                "specs/searches/*.json); its study in OUT/searches/<name>/study.db, each trial ordinary run folders.")
    _spec_options(p)
    p.add_argument("--backend", help="the backend the trials train on (default: torch)")
    p.add_argument("--out", default="runs", help="root folder of the outputs (default: runs)")
    p.add_argument("--device", help="cpu or gpu[:N] (default: a GPU when there is one)")
    p.add_argument("--trials", type=int, help="finished trials the study should hold (default: the file's \"trials\")")
    _threads_option(p)
    _track_option(p)
    p.add_argument("--launcher", choices=["local", "ray"], help="ray: trials as Ray tasks, in parallel, pruning "
                   "still honoured (needs netspec[ray]); default local")
    p.add_argument("--address", help="with --launcher ray: an existing cluster (default: a local Ray)")
    args = p.parse_args(argv)
    require("optuna", "search", f"{PROG} search")  # before anything is loaded, printed or written
    if args.launcher == "ray":
        require("ray", "ray", "--launcher ray")
    tracker = _tracker(args)
    from netspec.sweeps.launchers import make_launcher
    launcher = make_launcher(args.launcher, args.address)
    from netspec.runs.run_folder import check_output_root
    from netspec.sweeps.search import run_search
    backends = _backends(args.backend or backend_names()[0], args.threads)
    if len(backends) != 1:
        raise SpecError(f"--backend {args.backend!r}: a search trains on one backend; run it once per backend")
    check_output_root(Path(args.out))
    record = run_search(args.spec, backends[0], out_root=args.out, overrides=_overrides(args), device=args.device,
                        trials=args.trials, launcher=launcher)
    if tracker is not None:  # the search as a parent run, its trials' runs as children
        tracker.log_folders([Path(args.out) / record["experiment"] / record["backend"] / r for t in record["trials"]
                             for r in t["run_ids"]], f"search/{record['name']}/{record['backend']}",
                            f"search {record['name']} [{record['backend']}]")
    best = record["best"]
    print(f"best trial {best['number']}: {best['params']} objective {best['value']:.4f}; its experiment: "
          f"{Path(args.out) / 'searches' / record['name'] / best['file']}" if best else "no complete trial yet")
    return 0


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


def cmd_export(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} export", description="Write a run's best weights as a model file "
                                "(either backend's run; needs netspec[export]).")
    p.add_argument("run_dir", help="a run folder (OUT/<name>/<backend>/<run-id>)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the model format (default: onnx)")
    p.add_argument("-o", "--out", help="the file to write (default: RUN_DIR/model.onnx)")
    p.add_argument("--backend", help="the backend whose logits the file is checked against (default: the run's own)")
    args = p.parse_args(argv)
    require("onnx", "export", "ONNX export", "the onnx package")  # the words netspec.deploy.export's own check uses
    from netspec.deploy.export import check_export, export_run
    from netspec.deploy.inference import load_run

    path = export_run(args.run_dir, args.out)
    print(f"wrote {path}")
    saved = load_run(args.run_dir, log=lambda line: None)
    check = check_export(path, saved.experiment.network, saved.weights, _run_backend(args.run_dir, args.backend, None))
    if check is None:
        print("not checked against the backend: onnxruntime is not installed (pip install 'netspec[export]')")
        return 0
    print(check.line())
    return 0 if check.ok else 1


def cmd_import(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} import", description="Read an ONNX model into a spec and canonical weights "
                                "(DIR/<name>.json, DIR/weights.npz), verified on every backend against onnxruntime "
                                "(needs netspec[export]).")
    p.add_argument("model", help="an .onnx file (untrusted: bounded, external data refused)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="the folder to write the spec and weights into")
    p.add_argument("--name", help="the spec's name (default: the experiment's in the file, else the file's stem)")
    p.add_argument("--backend", help="the backends that verify it (default: every installed one, e.g. torch,jax)")
    args = p.parse_args(argv)
    require("onnx", "export", "ONNX import", "the onnx package")
    require("onnxruntime", "export", "the import's verification", "the onnxruntime package")
    from netspec.deploy.import_check import cross_layer_note, import_and_verify
    from netspec.protocol.backend import installed_backends

    path, check = import_and_verify(args.model, args.out, _backends(args.backend or ",".join(installed_backends()), None),
                                    args.name)
    for line in check.lines():
        print(line)
    print(cross_layer_note(check))
    if not check.ok:
        print(f"nothing written to {args.out}: the import failed its verification", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_name('weights.npz')}")
    return 0


def _run_backend(run_dir: str, name: Optional[str], threads: Optional[int]) -> Backend:
    """The backend asked for, else the one the run was trained on (env.json), else the reference."""
    if not name:
        from netspec.deploy.inference import trained_backend
        trained_on = trained_backend(Path(run_dir))
        name = trained_on if trained_on in backend_names() else backend_names()[0]
    return _backends(name, threads)[0]


def _inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder (OUT/<name>/<backend>/<run-id>) of either backend")
    p.add_argument("--backend", help="the backend that computes (default: the run's own)")
    p.add_argument("--device", help="cpu or gpu[:N] (default: a GPU when there is one)")
    _threads_option(p)


def cmd_evaluate(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} evaluate", description="Loss, accuracy, per-class accuracy and a "
                                "confusion-matrix figure of a run's best weights.")
    _inference_options(p)
    p.add_argument("--data-dir", help="another local copy (image-folder tree, cifar-10-batches-py or a .tar.gz); "
                   "default: the run's own data")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/evaluation)")
    args = p.parse_args(argv)
    from netspec.deploy.inference import evaluate_run
    evaluation, folder = evaluate_run(args.run_dir, _run_backend(args.run_dir, args.backend, args.threads), data_dir=args.data_dir,
                                      split=args.split, out_dir=args.out, device=args.device)
    print(evaluation.summary())
    print(f"wrote {folder}")
    return 0


def cmd_predict(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} predict", description="The top classes of image files (32x32 PNG or JPEG; "
                "grayscale and RGBA are converted to RGB, and each line says so).")
    _inference_options(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=int, default=3, help="classes shown per image (default: 3)")
    p.add_argument("--resize", action="store_true", help="scale images of another size to 32x32 (the whole image, "
                   "bilinear; the aspect ratio is not kept); without it they are refused")
    args = p.parse_args(argv)
    from netspec.deploy.inference import predict
    for prediction in predict(args.run_dir, _run_backend(args.run_dir, args.backend, args.threads), args.images, top=args.top,
                              device=args.device, resize=args.resize):
        print(prediction.line())
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (cmd_train, "train an experiment or a sweep (the default command)"),
    "search": (cmd_search, "an Optuna search over spec fields (netspec[search])"),
    "summary": (cmd_summary, "layers, output shapes and parameter counts"),
    "crosscheck": (cmd_crosscheck, "two backends number by number"),
    "report": (cmd_report, "report.md over a runs folder"),
    "export": (cmd_export, "a run's best weights as an ONNX model"),
    "import": (cmd_import, "an ONNX model as a spec and weights, verified on every backend"),
    "evaluate": (cmd_evaluate, "a run on a split or another image copy, with a confusion matrix"),
    "predict": (cmd_predict, "the top classes of image files"),
    "schema": (cmd_schema, "JSON Schemas for editors"),
}


def usage(prog: str = PROG) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {prog} {{{','.join(COMMANDS)}}} ...", f"       {prog} SPEC [options]   (= {prog} train SPEC)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {words}" for name, (_, words) in COMMANDS.items()]
    lines += ["", f"`{prog} COMMAND --help` shows a command's options. Bad input: one line on stderr, exit code 2."]
    return "\n".join(lines)


def _looks_like_a_command(word: str) -> bool:
    """A bare word that names no file (`trian`), as against a spec path (`specs/mlp.json`, `my_spec`
    when that file exists): `netspec SPEC` is `netspec train SPEC`, so only such words are commands."""
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", word) is not None and not Path(word).exists()


def main(argv: Optional[list[str]] = None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0 if argv else EXIT_BAD_INPUT
    name = argv[0]
    try:
        if name in COMMANDS:
            return COMMANDS[name][0](argv[1:])
        if _looks_like_a_command(name):
            raise SpecError(f"unknown command {name!r}{did_you_mean(name, COMMANDS)}; use one of "
                            f"{', '.join(COMMANDS)}, or give a spec file ({prog} --help)")
        return cmd_train(argv, prog=prog)
    except NetspecError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_BAD_INPUT)  # DivergedError: 3, a result rather than bad input
    except OSError as err:  # an output path the system refuses (a file where a folder goes, /proc, a full disk)
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}; choose another path (--out / -o) or free the disk", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished epochs and runs are kept in their folders", file=sys.stderr)
        return EXIT_INTERRUPTED
