"""The report's search section: per search and backend, the trials table (each trial's seeds and their
range), the study's history, the parameter importances and a slice plot per parameter.

It reads OUT/searches/<name>/<backend>.json, the record netspec.sweeps.search writes after every trial
(validated here), so a report needs no Optuna: the importances were computed by the search.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict

from netspec.io import parse_json_file, safe_output_dir
from netspec.runs.plots import pyplot, save_figure
from netspec.runs.records import check
from netspec.runs.tables import markdown_table, md_code

FIGURES = "figures"


class _Trial(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    number: int
    state: Literal["complete", "pruned", "diverged"]
    params: dict[str, Any]
    value: Optional[float] = None
    seed_values: list[float] = []
    run_ids: list[str] = []
    intermediate: dict[str, float] = {}


class SearchRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    backend: str
    experiment: str
    direction: Literal["maximize", "minimize"]
    objective: dict[str, str]
    space: list[dict[str, Any]]
    trials: list[_Trial]
    best: Optional[dict[str, Any]] = None
    importances: dict[str, float] = {}


def read_searches(root: Path, log: Callable[[str], None]) -> list[SearchRecord]:
    """Every OUT/searches/<name>/<backend>.json that reads back; one that does not is one line to `log`."""
    found = []
    for path in sorted(root.glob("searches/*/*.json")):
        if path.name.startswith("best-"):
            continue
        try:
            found.append(check(SearchRecord, parse_json_file(path), str(path)))
        except ValueError as err:
            log(f"{path}: not a search record netspec wrote ({str(err)[:200]}); left out of the report")
    return found


def search_sections(root: Path, out: Path, log: Callable[[str], None]) -> list[str]:
    """The report's '## Searches' lines (none without searches), their figures beside report.md."""
    searches = read_searches(root, log)
    if not searches:
        return []
    lines = ["## Searches", ""]
    for record in searches:
        lines += _section(record, out)
    return lines


def _section(record: SearchRecord, out: Path) -> list[str]:
    stem = f"search_{record.name}_{record.backend}"
    metric = f"{record.objective.get('metric')} at the {record.objective.get('at')} epoch"
    states = [t.state for t in record.trials]
    lines = [f"### Search {md_code(record.name)} [{record.backend}]", "",
             f"{len(record.trials)} trials of {md_code(record.experiment)} ({states.count('complete')} complete, "
             f"{states.count('pruned')} pruned, {states.count('diverged')} diverged); objective: {metric} "
             f"({record.direction}d), the mean over the trial's paired seeds.", ""]
    if record.best:
        lines += [f"Best: trial {record.best['number']}, {_values(record.best['params'])}: {record.best['value']:.4f}; "
                  f"its experiment file: {md_code('searches/' + record.name + '/' + record.best['file'])}.", ""]
    names = [p["name"] for p in record.space]
    rows = []
    for t in record.trials:
        interval = f"[{min(t.seed_values):.4f}, {max(t.seed_values):.4f}]" if len(t.seed_values) > 1 else ""
        rows.append([t.number, *[_value(t.params.get(n)) for n in names], t.state,
                     f"{t.value:.4f}" if t.value is not None else "", interval, ", ".join(t.run_ids)])
    lines += [markdown_table(["trial", *names, "state", "objective", "seed range", "run ids"], rows), ""]
    figures = safe_output_dir(out.parent, FIGURES)
    lines += _history(record, figures / f"{stem}_history.png", out)
    lines += _importances(record, figures / f"{stem}_importances.png", out)
    lines += _slices(record, names, figures, stem, out)
    return lines


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items())


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _link(path: Path, out: Path) -> str:
    return f"![{path.stem}]({path.relative_to(out.parent).as_posix()})"


def _history(record: SearchRecord, path: Path, out: Path) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = [t for t in record.trials if t.value is not None]
    for t in complete:
        if len(t.seed_values) > 1:  # the seeds' range, the bar through the mean
            ax.plot([t.number, t.number], [min(t.seed_values), max(t.seed_values)], color="tab:blue", alpha=0.4)
    ax.plot([t.number for t in complete], [t.value for t in complete], "o", label="complete (mean; bar: seeds)")
    pruned = [t for t in record.trials if t.state == "pruned" and t.intermediate]
    ax.plot([t.number for t in pruned], [list(t.intermediate.values())[-1] for t in pruned], "x", color="tab:red",
            label="pruned (its last epoch)")
    best, best_so_far = None, []
    for t in complete:
        better = best is None or (t.value > best if record.direction == "maximize" else t.value < best)
        best = t.value if better else best
        best_so_far.append((t.number, best))
    if best_so_far:
        ax.step(*zip(*best_so_far), where="post", color="black", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(record.objective.get("metric", "objective"))
    ax.set_title(f"{record.name} [{record.backend}]: study history")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return [_link(path, out), ""]


def _importances(record: SearchRecord, path: Path, out: Path) -> list[str]:
    if not record.importances:
        return ["Parameter importances: not computed (they need two complete trials that differ, and scikit-learn).", ""]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 1 + 0.5 * len(record.importances)))
    names = list(record.importances)[::-1]
    ax.barh(names, [record.importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA, share of the objective's variance)")
    ax.set_title(f"{record.name} [{record.backend}]: parameter importances")
    fig.tight_layout()
    save_figure(fig, path)
    return [_link(path, out), ""]


def _slices(record: SearchRecord, names: list[str], figures: Path, stem: str, out: Path) -> list[str]:
    plt = pyplot()
    lines = []
    log_scale = {p["name"]: p.get("type") == "loguniform" for p in record.space}
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        complete = [t for t in record.trials if t.value is not None and name in t.params]
        ax.scatter([t.params[name] for t in complete], [t.value for t in complete], c=[t.number for t in complete],
                   cmap="viridis")
        if log_scale.get(name):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(record.objective.get("metric", "objective"))
        ax.set_title(f"{record.name}: slice over {name} (colour: trial)")
        fig.tight_layout()
        path = figures / f"{stem}_slice_{name}.png"
        save_figure(fig, path)
        lines.append(_link(path, out))
    return [" ".join(lines), ""]
