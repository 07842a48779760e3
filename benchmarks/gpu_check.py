"""The prepared GPU check: one command, every stage in its own try, everything under --out.

    python -m benchmarks.gpu_check --out DIR [--tiny] [--data-dir PATH] [--budget-s 470]

In order, within --budget-s seconds overall:
  (a) the GPU-only tests (`pytest -m gpu tests/backends/test_gpu.py`: no host sync in a graphed epoch, TF32 and
      bf16 switches on the GPU, compiled vs eager and CUDA-graphed vs ungraphed steps), at most 95 s;
  (b) the benchmark table (benchmarks/epoch_time.py: both backends, tf32/bf16, compiled/eager, against
      the frameworks' built-in layers), at most 150 s, on --bench-size images per epoch;
  (b') a profile of 20 eager steps of the report's CNN (torch, tf32): operators by device time, top 25;
  (c) specs/cnn.json on the torch and the jax backend, precision tf32, on the JPEG CIFAR-10 copy, for as
      many of its 50 epochs as the time left allows (estimated from the benchmark's epoch time; a guard
      stops a run that overruns), then the same with torch.nn built-ins in a plain loop
      (benchmarks/plain_torch.py: the reference the copy's README asks a result to be compared with),
      then bf16 runs if time is still left.
Files (few, one folder deep, so that they come back from a device machine): DIR/summary.json (all that
matters: environment, test outcome, the table, each run's metrics and per-epoch history), DIR/log.txt
(everything printed), DIR/tests.txt, DIR/bench.json, DIR/bench.txt, DIR/profile.txt. Run folders go to
--runs-dir.

--tiny runs the same stages on a CPU in well under a minute (synthetic data, a narrow CNN, one or two
epochs, the tiny benchmark); the test suite runs it that way (tests/project/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = (ROOT / ".data" / "cifar10-jpeg-q75.tar.gz", ROOT.parent / "shared" / "data" / "cifar10-jpeg-q75.tar.gz")


HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "seconds")
PLAIN = "plain torch.nn"
"""The reference run's name among the backends of the training stage."""


class OutOfTime(Exception):
    """Raised from a run's log after an epoch once its share of the budget is spent."""


class Check:
    """The check's clock, log and summary."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.budget_s, self.start = out, budget_s, time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "log.txt", "a", buffering=1)
        self.summary: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget_s, "stages": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, line: str) -> None:
        text = f"[{self.elapsed():6.1f}s] {line}"
        print(text, flush=True)
        self.log_file.write(text + "\n")

    def save(self) -> None:
        self.summary["elapsed_s"] = self.elapsed()
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=_jsonable))

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one stage; its result or its error goes into the summary, which is saved after it."""
        self.log(f"== stage {name} ({self.left():.0f} s of the budget left)")
        began = time.perf_counter()
        entry: dict[str, Any] = {}
        try:
            entry["result"] = fn()
            entry["ok"] = True
        except Exception as err:  # a failed stage is recorded; the next stages still run
            entry.update(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
            self.log(f"stage {name} FAILED: {type(err).__name__}: {err}")
        entry["seconds"] = time.perf_counter() - began
        self.summary["stages"][name] = entry
        self.log(f"== stage {name} done in {entry['seconds']:.1f} s")
        self.save()
        return entry.get("result")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ---- (0) environment --------------------------------------------------------------------------------

def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch
        env.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except Exception as err:  # each framework is optional here
        env["torch_error"] = repr(err)
    try:
        import jax
        env.update(jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()])
        import flax
        import optax
        env.update(flax=flax.__version__, optax=optax.__version__)
    except Exception as err:
        env["jax_error"] = repr(err)
    try:
        from netspec.protocol.backend import installed_backends
        env["backends"] = list(installed_backends())
    except Exception as err:
        env["backends_error"] = repr(err)
    return env


# ---- (a) the GPU-only tests -------------------------------------------------------------------------

def gpu_tests(check: Check, timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests" / "backends" / "test_gpu.py")]
    check.log(" ".join(command))
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output, code = f"{err.stdout or ''}{err.stderr or ''}\ntimed out after {timeout_s:.0f} s", -1
    (check.out / "tests.txt").write_text(output if isinstance(output, str) else output.decode(errors="replace"))
    tail = [line for line in str(output).splitlines() if line.strip()][-12:]
    for line in tail:
        check.log(f"  {line}")
    return {"returncode": code, "passed": code == 0, "tail": tail}


# ---- (b) the benchmark table ------------------------------------------------------------------------

def benchmark(check: Check, budget_s: float, train_size: int, repeats: int, tiny: bool) -> dict[str, Any]:
    from benchmarks import epoch_time

    args = ["--budget-s", str(budget_s), "--train-size", str(train_size), "--repeats", str(repeats),
            "--json", str(check.out / "bench.json")] + (["--tiny"] if tiny else [])
    check.log("python -m benchmarks.epoch_time " + " ".join(args))
    doc = epoch_time.main(args)
    text = epoch_time.format_table(doc)
    (check.out / "bench.txt").write_text(text + "\n")
    for line in text.splitlines():
        check.log_file.write(line + "\n")
    for row in doc["rows"]:  # the goals are per 40,000-image epoch
        if row["s_per_epoch"]:
            row["s_per_40k_images"] = row["s_per_epoch"] * 40_000 / (row["steps"] * row["batch_size"])
    return doc


def run_estimate(bench: Optional[dict[str, Any]], backend: str, precision: str, train_images: int) -> tuple[float, float]:
    """(seconds per training epoch, seconds to compile) of a CNN run, from the benchmark's row for the
    same backend and precision (netspec compiled; the plain reference: torch.nn built-ins eager), with
    margins for evaluation; pessimistic guesses where the benchmark has no such row."""
    wanted = ([("cnn", "torch", impl, precision, "eager") for impl in ("builtin", "netspec")] if backend == PLAIN
              else [("cnn", backend, "netspec", precision, "compiled")])
    rows = {(r["net"], r["backend"], r["impl"], r["precision"], r["mode"]): r for r in (bench or {}).get("rows", []) if r["s_per_epoch"]}
    row = next((rows[key] for key in wanted if key in rows), None)
    if row is None:
        return 2.5, (5.0 if backend == PLAIN else 45.0 if backend == "torch" else 20.0)
    epoch = row["s_per_epoch"] * train_images / (row["steps"] * row["batch_size"])
    return 1.15 * epoch + 0.15, 1.2 * (row["compile_s"] or 0.0) + 5.0


# ---- (b') where a step's time goes -------------------------------------------------------------------

def profile(check: Check, tiny: bool, steps: int = 20) -> dict[str, Any]:
    """torch.profiler over `steps` eager training steps of the report's CNN (netspec torch, tf32, batch
    100): the operators by device time (host time on a CPU), top 25, in DIR/profile.txt. Eager, so each
    kernel shows (a graphed step is one launch): what to fuse or replace next."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity

    import netspec as ns
    from netspec.protocol.backend import load_backend

    experiment = cnn_experiment(tiny, None, "tf32", 1)
    batch = experiment.train.batch_size
    model = load_backend("torch").compile(experiment.network, seed=0, precision="tf32", compiled="off")
    rng = np.random.default_rng(0)
    data = model.to_device(rng.standard_normal((steps * batch, *experiment.network.input_shape), dtype=np.float32),
                           rng.integers(0, 10, steps * batch))
    model.setup_optimizer(ns.TrainConfig(batch_size=batch))
    rows = np.arange(steps * batch).reshape(steps, batch)
    model.train_steps(data, rows[:3], 1e-3)  # cuDNN's algorithm search and allocations, before profiling
    gpu = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        model.train_steps(data, rows, 1e-3)
    table = prof.key_averages().table(sort_by="device_time_total" if gpu else "cpu_time_total", row_limit=25)
    (check.out / "profile.txt").write_text(f"{model.device}; {steps} eager steps of batch {batch}\n{table}\n")
    for line in table.splitlines()[:12]:
        check.log_file.write(line + "\n")
    return {"device": model.device, "steps": steps, "batch_size": batch, "file": "profile.txt"}


# ---- (c) the report's CNN, trained ------------------------------------------------------------------

def cnn_experiment(tiny: bool, data_dir: Optional[str], precision: str, epochs: int) -> Any:
    import netspec as ns

    experiment = ns.Experiment.load(ROOT / "specs" / "cnn.json")
    train = experiment.train.model_copy(update={"epochs": epochs, "precision": precision})
    if tiny:
        network = experiment.network.model_copy(update={"layers": [
            l.model_copy(update={"out_channels": 4}) if isinstance(l, ns.Conv2d) else l for l in experiment.network.layers]})
        data = ns.DataConfig(source="synthetic", train_size=300, val_size=100, test_size=100)
        return experiment.model_copy(update={"network": network, "data": data, "train": train.model_copy(update={"batch_size": 50})})
    return experiment.model_copy(update={"data": experiment.data.model_copy(update={"dir": data_dir}), "train": train})


def train_runs(check: Check, tiny: bool, data_dir: Optional[str], runs_dir: Path, bench: Optional[dict[str, Any]],
               precisions: list[str]) -> dict[str, Any]:
    from netspec.protocol.backend import installed_backends
    from netspec.data import load_dataset

    backends = [b for b in ("torch", "jax") if b in installed_backends()]
    began = time.perf_counter()
    dataset = load_dataset(cnn_experiment(tiny, data_dir, "tf32", 1).data, progress=False)
    results: dict[str, Any] = {"data_seconds": time.perf_counter() - began, "train_images": len(dataset.train_y), "runs": []}
    check.log(f"data: {len(dataset.train_y):,} train / {len(dataset.val_y):,} val / {len(dataset.test_y):,} test images "
              f"in {results['data_seconds']:.1f} s")
    # The reference a result on this JPEG copy is to be compared with (its README): torch.nn built-ins in
    # a plain loop, same split, weights and batch order, at the first precision, after both backends.
    reference = [(precisions[0], PLAIN)] if "torch" in backends and precisions else []
    jobs = [(p, b) for p in precisions[:1] for b in backends] + reference + [(p, b) for p in precisions[1:] for b in backends]
    for index, (precision, backend) in enumerate(jobs):
        share = check.left() / max(len([j for j in jobs[index:] if j[0] == precision]), 1) - 10.0
        if index >= len(backends) + len(reference) and share < 60:  # later precisions only with real time left
            results["runs"].append({"backend": backend, "precision": precision, "skipped": "budget"})
            continue
        per_epoch, compile_s = run_estimate(bench, backend, precision, len(dataset.train_y))
        epochs = 1 if tiny and index else (2 if tiny else int(max(1, min(50, (share - compile_s) // per_epoch))))
        deadline = time.perf_counter() + max(share, 30.0)
        check.log(f"{backend} {precision}: {epochs} epochs (estimates {per_epoch:.2f} s/epoch, {compile_s:.0f} s to compile; "
                  f"share {share:.0f} s)")
        results["runs"].append(train_one(check, backend, precision, epochs, tiny, data_dir, runs_dir, dataset, deadline))
        check.save()
    return results


def train_one(check: Check, backend: str, precision: str, epochs: int, tiny: bool, data_dir: Optional[str],
              runs_dir: Path, dataset: Any, deadline: float) -> dict[str, Any]:
    from netspec.protocol.backend import load_backend
    from netspec.runs.training_run import run_experiment

    experiment = cnn_experiment(tiny, data_dir, precision, epochs)
    entry: dict[str, Any] = {"backend": backend, "precision": precision, "epochs_planned": epochs}
    lines: list[str] = []

    def log(line: str) -> None:
        check.log(f"  [{backend} {precision}] {line}")
        lines.append(line)
        if line.startswith("epoch ") and time.perf_counter() > deadline:
            raise OutOfTime(f"out of time after: {line.split('  ')[0]}")

    began = time.perf_counter()
    if backend == PLAIN:
        return train_plain_reference(entry, experiment, dataset, log, began)
    try:
        metrics, folder = run_experiment(experiment, load_backend(backend), runs_dir, dataset=dataset, log=log,
                                         progress=False, force=True)
        entry.update(metrics=metrics, folder=str(folder))
        history = folder / "history.json"
    except OutOfTime as err:
        entry["stopped"] = str(err)
        from netspec.runs.run_folder import RunFolder
        folder = RunFolder.of(runs_dir, experiment, backend).path
        history = next(iter(sorted(folder.parent.glob("*/history.json"), key=lambda p: p.stat().st_mtime, reverse=True)), folder / "history.json")
    entry["seconds"] = time.perf_counter() - began
    if history.exists():
        rows = json.loads(history.read_text())
        entry["history"] = [{k: r.get(k) for k in HISTORY_FIELDS} for r in rows]
        entry["epochs_done"] = len(rows)
    return entry


def train_plain_reference(entry: dict[str, Any], experiment: Any, dataset: Any, log: Callable[[str], None],
                          began: float) -> dict[str, Any]:
    """The plain torch.nn loop (benchmarks/plain_torch.py) on the same data; its history kept in memory."""
    import torch

    from benchmarks.plain_torch import train_plain

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    history: list[Any] = []
    try:
        entry["metrics"] = train_plain(experiment, dataset, device, log=log, history=history)[0]
    except OutOfTime as err:
        entry["stopped"] = str(err)
    entry["seconds"] = time.perf_counter() - began
    entry["history"] = [{k: vars(r).get(k) for k in HISTORY_FIELDS} for r in history]
    entry["epochs_done"] = len(history)
    return entry


def data_path(given: Optional[str]) -> Optional[str]:
    if given:
        return given
    return next((str(p) for p in DATA_CANDIDATES if p.exists()), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for summary.json, log.txt and the tables")
    parser.add_argument("--tiny", action="store_true", help="the same stages on a CPU in about a minute")
    parser.add_argument("--data-dir", default=None, help="the CIFAR-10 copy (default: .data/ or ../shared/data/cifar10-jpeg-q75.tar.gz)")
    parser.add_argument("--budget-s", type=float, default=470.0, help="wall time of the whole check")
    parser.add_argument("--bench-size", type=int, default=None, help="benchmark images per epoch (default 20,000; --tiny 100)")
    parser.add_argument("--runs-dir", default=None, help="run folders (default: a folder beside --out, not in it)")
    parser.add_argument("--precisions", default="tf32,bf16", help="training precisions, in order (later ones only if time is left)")
    parser.add_argument("--skip", default="", help="comma list of stages to skip: tests, bench, profile, train")
    args = parser.parse_args(argv)
    if args.tiny:
        os.environ.setdefault("NETSPEC_CACHE", str(Path(args.out).resolve().parent / "netspec-cache"))
    out = Path(args.out)
    check = Check(out, args.budget_s)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    runs_dir = Path(args.runs_dir) if args.runs_dir else out.resolve().parent / f"{out.name}-runs"
    data_dir = None if args.tiny else data_path(args.data_dir)
    check.summary.update(command=sys.argv, tiny=args.tiny, data_dir=data_dir, runs_dir=str(runs_dir))
    check.summary["environment"] = check.stage("environment", environment)
    if "tests" not in skip:
        check.stage("tests", lambda: gpu_tests(check, min(95.0, max(10.0, 0.21 * check.left()))))
    bench = None
    if "bench" not in skip:
        bench_budget = min(150.0, 0.38 * check.left()) if not args.tiny else min(25.0, 0.4 * check.left())
        bench = check.stage("bench", lambda: benchmark(check, bench_budget, args.bench_size or (100 if args.tiny else 20_000),
                                                       2 if args.tiny else 3, args.tiny))
    if "profile" not in skip:
        check.stage("profile", lambda: profile(check, args.tiny))
    if "train" not in skip:
        if not args.tiny and data_dir is None:
            check.log("no CIFAR-10 copy found (--data-dir); the training stage is skipped")
            check.summary["stages"]["train"] = {"ok": False, "error": "no data: give --data-dir"}
        else:
            precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
            check.stage("train", lambda: train_runs(check, args.tiny, data_dir, runs_dir, bench,
                                                    precisions[:1] if args.tiny else precisions))
    check.summary["ok"] = all(stage.get("ok") for stage in check.summary["stages"].values())
    check.save()
    check.log(f"done in {check.elapsed():.1f} s; summary in {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
