"""`netspec train` (an experiment, a sweep, or one continued from a checkpoint) and `netspec search`."""
from __future__ import annotations

import argparse
from pathlib import Path

from netspec.protocol.backend import Backend, backend_names
from netspec.errors import SpecError, require
from netspec.commands.inspection import _crosscheck, _summary
from netspec.commands.options import (PROG, _backends, _experiment_only, _is_sweep, _overrides, _Parser, _spec_options,
                                      _threads_option, _track_option, _tracker)


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
