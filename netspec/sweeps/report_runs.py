"""The runs a report reads back: every run folder and sweep manifest under a runs folder, validated
(a damaged one is one line and left out), and the words that describe a run's data, settings and seeds."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence
from urllib.parse import quote

from netspec.errors import SpecError
from netspec.io import parse_json_file, validate
from netspec.protocol.backend import backend_names
from netspec.runs import records, run_folder
from netspec.runs.run_folder import RunFolder
from netspec.runs.stats import Difference, paired_difference, summarize
from netspec.runs.tables import plural
from netspec.spec.experiment import Experiment, recipe_text
from netspec.spec.sweep_file import SWEEPS_DIR, replicate_key

FIGURES = "figures"
RUNS_CSV = "runs.csv"
COMPARED = {"test_acc": "final test accuracy", "best_val_acc": "best validation accuracy"}
"""The figures a sweep compares its arms on (differences, result-vs-setting figure)."""


@dataclass(frozen=True)
class Run:
    name: str
    backend: str
    run_id: str
    directory: Path
    metrics: dict[str, Any]

    def history(self) -> list[dict[str, Any]]:
        """history.json, validated (netspec.runs.records); DamagedError when it is not one."""
        path = self.directory / run_folder.HISTORY_JSON
        try:
            rows = parse_json_file(path)
            records.check_history(rows, run_folder.HISTORY_JSON)
        except ValueError as err:  # UnreadableJSON too
            raise run_folder.DamagedError(f"{run_folder.HISTORY_JSON}: {err}") from None
        return rows

    @cached_property
    def spec(self) -> dict[str, Any]:
        """spec.json when it is a valid experiment, else {} (collect_runs leaves such a run out)."""
        return {} if self.spec_problem else self._spec[0]

    @cached_property
    def spec_problem(self) -> Optional[str]:
        return self._spec[1]

    @cached_property
    def _spec(self) -> tuple[dict[str, Any], Optional[str]]:
        path = self.directory / run_folder.SPEC
        try:
            data = parse_json_file(path)
            validate(Experiment, data, run_folder.SPEC)
        except (ValueError, SpecError) as err:  # UnreadableJSON, or not an experiment
            return {}, f"{run_folder.SPEC}: {err}"
        return data, None

    @cached_property
    def replicate(self) -> tuple[str, int]:
        """(replicate key, seed): runs that are seeds of one experiment share the key."""
        return replicate_key(self.spec)


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


Seeds = dict[int, Run]
"""A figure's runs by seed (train.seed)."""


def collect_runs(root: Path, log: Callable[[str], None] = _warn) -> dict[tuple[str, str, str], Run]:
    """Every done run under root/<name>/<backend>/<run-id>/ (finished or diverged), by (name, backend,
    run id). Attempt folders (`<run-id>.attempt-...`) are not runs; a damaged run is one line to `log`
    and left out, so it never breaks the report."""
    runs = {}
    for path in sorted(root.glob(f"*/*/*/{run_folder.METRICS}")):
        directory = path.parent
        if "." in directory.name:
            continue
        metrics = RunFolder(directory).read_metrics(log)
        if metrics is not None:
            name, backend, rid = directory.relative_to(root).parts
            run = Run(name, backend, rid, directory, metrics)
            if run.spec_problem:
                log(f"{directory}: {run.spec_problem[:300]}; the run is left out")
                continue
            runs[(name, backend, rid)] = run
    return runs


def finished(runs: dict[tuple[str, str, str], Run]) -> dict[tuple[str, str, str], Run]:
    """The runs that are results (a diverged run never is)."""
    return {key: run for key, run in runs.items() if run.metrics.get("status", run_folder.FINISHED) == run_folder.FINISHED}


def read_manifests(root: Path, log: Callable[[str], None] = _warn) -> list[dict[str, Any]]:
    """The sweep manifests under root/sweeps/; a damaged one, or one whose name is not a safe file name
    (figures are named after it), is one line to `log` and left out."""
    manifests = []
    for path in sorted((root / SWEEPS_DIR).glob("*.json")):
        try:
            manifest = parse_json_file(path)
            records.check(records.Manifest, manifest, "")
        except ValueError as err:  # UnreadableJSON too
            log(f"{path}: not a readable sweep manifest ({str(err).removeprefix(': ')[:300]}); left out of the report")
            continue
        manifests.append(manifest)
    return manifests


def _link(path: Path, base: Path) -> str:
    """A relative link target, percent-encoded: a folder name with ')' or a space cannot end the link."""
    return quote(Path(os.path.relpath(path, base)).as_posix())


def in_registry_order(names: Iterable[str]) -> list[str]:
    """Backend names as the registry orders them (the reference backend first); unknown ones last."""
    known = backend_names()
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def values(runs: Seeds, key: str) -> list[float]:
    """One figure of runs, in seed order (missing figures left out)."""
    return [runs[s].metrics[key] for s in sorted(runs) if isinstance(runs[s].metrics.get(key), (int, float))]


def paired(a: Seeds, b: Seeds, key: str) -> Optional[Difference]:
    """a - b over the seeds both have, seed by seed; None when they share none."""
    common = [s for s in sorted(set(a) & set(b)) if all(isinstance(r[s].metrics.get(key), (int, float)) for r in (a, b))]
    if not common:
        return None
    return paired_difference([a[s].metrics[key] for s in common], [b[s].metrics[key] for s in common])


def _diff_text(difference: Optional[Difference]) -> str:
    return difference.text() if difference else "-"


# ---- describing runs ---------------------------------------------------------------------------

def data_text(spec: dict[str, Any]) -> str:
    """The split as a run's header line says it: 'synthetic, 5,000 train / 1,000 val / 1,000 test', or
    'cifar10 from cifar10-jpeg-q75.tar.gz, all images (10,000 training images for validation)'. data.train_size
    counts the images before the validation split, so the training split is train_size - val_size."""
    data = spec.get("data", {})
    source = data.get("source", "?") + (f" from {Path(data['dir']).name}" if data.get("dir") else "")
    val, train, test = data.get("val_size", 0), data.get("train_size"), data.get("test_size")
    if not train and not test:
        return f"{source}, all images ({val:,} training images for validation)"
    train_words = f"{max(train - val, 0):,} train / {val:,} val" if train else f"all training images less {val:,} val"
    return f"{source}, {train_words} / {f'{test:,}' if test else 'all'} test"


def settings_text(spec: dict[str, Any]) -> str:
    """What else a run's numbers depend on most: epochs, batch, lr, the training recipe (optimizer,
    schedule, augmentation: netspec.spec.experiment.recipe_text) and its data."""
    t = spec.get("train", {})
    epochs = t.get("epochs")
    epochs_words = plural(epochs, "epoch") if isinstance(epochs, int) else f"{epochs} epochs"
    return f"{epochs_words}, batch {t.get('batch_size')}, lr {t.get('lr')}; recipe {recipe_text(t)}; data {data_text(spec)}"


def seeds_text(seeds: Iterable[int]) -> str:
    ordered = sorted(seeds)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"seeds {ordered[0]}-{ordered[-1]}"
    return ("seed " if len(ordered) == 1 else "seeds ") + ", ".join(map(str, ordered))


def seconds_text(seconds: Sequence[float]) -> str:
    """Seconds over seeds as fmt_values writes figures, to 2 decimals: '-', '1.23', '1.23 ± 0.04 (3)'."""
    if not seconds:
        return "-"
    summary = summarize(seconds)
    return f"{summary.mean:.2f}" if summary.std is None else f"{summary.mean:.2f} ± {summary.std:.2f} ({summary.n})"


def overrides_text(overrides: Sequence[str]) -> str:
    return " ".join(f"--set {o}" for o in overrides) if overrides else "as written"
