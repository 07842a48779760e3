"""report.md's sections (netspec.sweeps.report puts them together): per sweep, its tables over seeds, paired
differences from the base arm and between backends, result-vs-setting and overlay figures; per experiment,
its table of the seven figures and its curves; the per-seed appendix and the diverged runs."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.io import safe_output_dir
from netspec.runs import run_folder
from netspec.runs.diagram import draw
from netspec.runs.plots import plot_curves, plot_result_vs_setting
from netspec.runs.stats import MIN_PAIRS_TO_MARK
from netspec.runs.tables import fmt_values, markdown_table, md_code, md_text, summary_table
from netspec.spec.network import Network
from netspec.sweeps.report_runs import (COMPARED, FIGURES, Run, Seeds, _diff_text, _link, in_registry_order,
                                        overrides_text, paired, seconds_text, seeds_text, settings_text, values)
from netspec.runs.records import SUMMARY_FIELDS

# ---- sweeps ------------------------------------------------------------------------------------

@dataclass
class Arm:
    """One arm of a sweep under one set of overrides: its runs per backend and seed."""

    label: str
    settings: dict[str, Any]
    base: bool
    seeds: list[int] = field(default_factory=list)
    runs: dict[str, Seeds] = field(default_factory=dict)


def _arms(points: list[dict[str, Any]], backends: list[str], runs: dict[tuple[str, str, str], Run]) -> list[Arm]:
    arms: dict[str, Arm] = {}
    for point in points:
        arm = arms.setdefault(point["label"], Arm(point["label"], point.get("settings", {}), bool(point.get("base"))))
        arm.seeds.append(point.get("seed", 0))
        for backend in backends:
            run = runs.get((point["name"], backend, point["run_id"]))
            if run is not None:
                arm.runs.setdefault(backend, {})[run.replicate[1]] = run
    ordered = list(arms.values())
    if not any(a.base for a in ordered):
        ordered[0].base = True  # manifests from before seeds: the first arm
    return ordered


def _settings_groups(manifest: dict[str, Any]) -> list[tuple[list[str], list[dict[str, Any]]]]:
    """The manifest's points by the overrides they were run with, in the order first asked for."""
    groups: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
    for point in manifest["points"]:
        overrides = point.get("overrides", [])
        groups.setdefault(json.dumps(overrides), (overrides, []))[1].append(point)
    return list(groups.values())


def _sweep_parts(manifest: dict[str, Any], runs: dict[tuple[str, str, str], Run]) -> list[tuple[str, list[str], list[Arm], list[str]]]:
    """(figure stem, overrides, arms, backends) for each set of settings the sweep was run with."""
    backends = in_registry_order(manifest["backends"])
    return [(manifest["name"] if i == 0 else f"{manifest['name']}_{i + 1}", overrides, _arms(points, backends, runs), backends)
            for i, (overrides, points) in enumerate(_settings_groups(manifest))]


def _sweep_brief(manifest: dict[str, Any], runs: dict[tuple[str, str, str], Run], out: Path) -> list[str]:
    """The answer first: per set of settings, the best point, every point's final test accuracy with its
    difference from the base point, and the result-vs-setting figure."""
    lines = []
    for stem, overrides, arms, backends in _sweep_parts(manifest, runs):
        settings = f" ({md_text(overrides_text(overrides))})" if overrides else ""
        lines += [f"### Sweep {md_code(manifest['name'])} in brief{settings}", ""]
        lines += _best_points(arms, backends) + _brief_table(arms, backends)
        lines += _setting_figure(stem, manifest, arms, backends, out)
    return lines


def _best_points(arms: list[Arm], backends: list[str]) -> list[str]:
    """The point with the highest mean best validation accuracy per backend (the choice a validation split
    is for: the test figure is shown, never used to choose)."""
    words = []
    for backend in backends:
        scored = [(sum(v) / len(v), a) for a in arms if (v := values(a.runs.get(backend, {}), "best_val_acc"))]
        if scored:
            best = max(scored, key=lambda pair: pair[0])[1]
            test = fmt_values(values(best.runs[backend], "test_acc"))
            words.append(f"{md_text(backend)} {md_text(best.label)} (final test accuracy {test})")
    if not words:
        return ["No point has finished yet.", ""]
    return ["Best point by mean best validation accuracy: " + "; ".join(words) + ".", ""]


def _brief_table(arms: list[Arm], backends: list[str]) -> list[str]:
    base = next(a for a in arms if a.base)
    header = ["point", *(h for b in backends for h in (f"{md_text(b)}: final test accuracy", f"{md_text(b)}: - base"))]
    rows = [[md_text(a.label) + (" (base)" if a is base else ""),
             *(c for b in backends for c in (fmt_values(values(a.runs.get(b, {}), "test_acc")),
                                             "-" if a is base else _diff_text(paired(a.runs.get(b, {}), base.runs.get(b, {}), "test_acc"))))]
            for a in arms]
    return [markdown_table(header, rows), ""]


def _sweep_section(manifest: dict[str, Any], runs: dict[tuple[str, str, str], Run], out: Path) -> list[str]:
    lines = [f"### Sweep {md_code(manifest['name'])}", ""]
    if manifest.get("description"):
        lines += [md_text(manifest["description"], line_start=True), ""]
    for stem, overrides, arms, backends in _sweep_parts(manifest, runs):
        lines += _group_intro(manifest, overrides, arms)
        lines += _arm_tables(arms, backends)
        lines += _base_differences(arms, backends)
        lines += _overlay_figures(stem, arms, backends, out)
        lines += _backend_comparison(arms, backends)
    return lines


def _group_intro(manifest: dict[str, Any], overrides: list[str], arms: list[Arm]) -> list[str]:
    some_run = next((r for a in arms for by_seed in a.runs.values() for r in by_seed.values()), None)
    base = next(a.label for a in arms if a.base)
    rule = "the first variant" if manifest.get("variants") and not manifest.get("axes") else \
        "the point whose settings equal the base spec's, else the first"
    seeds = sorted({s for a in arms for s in a.seeds})
    return [f"Settings: {md_text(overrides_text(overrides))}; {seeds_text(seeds)} per point.", "",
            f"Runs: {md_text(settings_text(some_run.spec))}." if some_run else "Runs: none finished yet.", "",
            f"Base: {md_code(base)} ({rule}).", ""]


def _arm_tables(arms: list[Arm], backends: list[str]) -> list[str]:
    lines = []
    for backend in backends:
        done = sum(len(a.runs.get(backend, {})) for a in arms)
        total = sum(len(a.seeds) for a in arms)
        columns = {md_text(a.label): {k: values(a.runs.get(backend, {}), k) for k in SUMMARY_FIELDS} for a in arms}
        lines += [f"**{md_text(backend)}** ({done}/{total} points finished)", "", summary_table(columns), ""]
    return lines


def _base_differences(arms: list[Arm], backends: list[str]) -> list[str]:
    """Every arm minus the base arm, paired by seed, per backend."""
    base = next(a for a in arms if a.base)
    others = [a for a in arms if a is not base]
    if not others:
        return []
    lines = []
    for backend in backends:
        reference = base.runs.get(backend, {})
        rows = [[md_text(a.label), len(set(a.runs.get(backend, {})) & set(reference)),
                 *(_diff_text(paired(a.runs.get(backend, {}), reference, k)) for k in COMPARED)] for a in others]
        lines += [f"{md_text(backend, line_start=True)}: difference from {md_code(base.label)}, paired by seed (95% bootstrap CI; * = the interval "
                  f"excludes zero, with {MIN_PAIRS_TO_MARK} pairs or more):", "", markdown_table(["point", "pairs", *COMPARED.values()], rows), ""]
    return lines


def _backend_comparison(arms: list[Arm], backends: list[str]) -> list[str]:
    """Each further backend against the reference, arm by arm, paired by seed."""
    lines = []
    reference, *others = backends
    for other in others:
        rows = []
        for a in arms:
            r, o = a.runs.get(reference, {}), a.runs.get(other, {})
            rows.append([md_text(a.label), fmt_values(values(r, "test_acc")), fmt_values(values(o, "test_acc")),
                         _diff_text(paired(o, r, "test_acc")), fmt_values(values(r, "best_val_acc")),
                         fmt_values(values(o, "best_val_acc")), seconds_text(values(r, "median_epoch_seconds")),
                         seconds_text(values(o, "median_epoch_seconds"))])
        ref, oth = md_text(reference), md_text(other)
        lines += [f"{md_text(reference, line_start=True)} vs {oth}:", "", markdown_table(
            ["point", f"test acc {ref}", f"test acc {oth}", f"{oth} - {ref}", f"best val {ref}",
             f"best val {oth}", f"epoch s {ref}", f"epoch s {oth}"], rows), ""]
    return lines


def _setting_figure(stem: str, manifest: dict[str, Any], arms: list[Arm], backends: list[str], out: Path) -> list[str]:
    """Final test and best validation accuracy against the swept setting, one line per backend."""
    if not any(a.runs for a in arms):
        return []
    axes = manifest.get("axes", [])
    single = axes[0] if len(axes) == 1 and not manifest.get("variants") else None
    numeric = single is not None and all(isinstance(a.settings.get(single), (int, float)) for a in arms)
    xs = [a.settings[single] if numeric else a.label for a in arms]
    panels = {label: {b: [(x, values(a.runs.get(b, {}), key)) for x, a in zip(xs, arms)] for b in backends}
              for key, label in COMPARED.items()}
    path = _figure(out, f"{stem}_vs_setting.png")
    plot_result_vs_setting(panels, single if numeric else "point", f"{stem}: mean ± std over seeds, dots: seeds",
                           path, categorical=not numeric)
    return [f"![{stem} result vs setting]({_link(path, out.parent)})", ""]


def _figure(out: Path, name: str) -> Path:
    """A figure's path beside report.md: in the report's own figures folder, never through a link there."""
    return safe_output_dir(out.parent, FIGURES) / name


def _overlay_figures(stem: str, arms: list[Arm], backends: list[str], out: Path) -> list[str]:
    """Validation accuracy and loss of every arm (its lowest seed) on one plot per backend, same scale
    across the sweep."""
    histories = {b: {a.label: a.runs[b][min(a.runs[b])].history() for a in arms if a.runs.get(b)} for b in backends}
    ranges = {key: [row[key] for h in histories.values() for rows in h.values() for row in rows if row.get(key) is not None]
              for key in ("val_acc", "val_loss")}  # null: no validation split (data.val_size=0)
    lines = []
    for backend, by_label in histories.items():
        if not by_label:
            continue
        images = []
        for key, ylabel in (("val_acc", "validation accuracy"), ("val_loss", "validation loss")):
            if not ranges[key]:
                continue
            lo, hi = min(ranges[key]), max(ranges[key])
            pad = 0.05 * (hi - lo or 1.0)
            series = {label: ([r["epoch"] for r in rows], [r[key] for r in rows]) for label, rows in by_label.items()}
            path = _figure(out, f"{stem}_{backend}_{key}.png")
            seeds = sorted({min(a.runs[backend]) for a in arms if a.runs.get(backend)})
            shown = f"seed {seeds[0]}" if len(seeds) == 1 else "lowest seed of each"
            plot_curves(series, ylabel, f"{stem} ({backend}, {shown}): {ylabel}", path, ylim=(lo - pad, hi + pad))
            images.append(f"![{stem} {md_text(backend)} {ylabel}]({_link(path, out.parent)})")
        lines += [" ".join(images), ""]
    return lines


# ---- experiments (runs grouped over seeds) -------------------------------------------------------

@dataclass
class Group:
    """The seeds of one experiment, per backend."""

    name: str
    runs: dict[str, Seeds] = field(default_factory=dict)

    def all_runs(self) -> list[Run]:
        return [r for by_seed in self.runs.values() for r in by_seed.values()]

    def first(self) -> Run:
        """The lowest seed's run of the reference backend: the group's heading and curves."""
        backend = in_registry_order(self.runs)[0]
        return self.runs[backend][min(self.runs[backend])]


def group_runs(runs: dict[tuple[str, str, str], Run]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for (name, backend, _), run in runs.items():
        key, seed = run.replicate
        groups.setdefault((name, key), Group(name)).runs.setdefault(backend, {})[seed] = run
    for group in groups.values():
        group.runs = {b: dict(sorted(group.runs[b].items())) for b in in_registry_order(group.runs)}
    return sorted(groups.values(), key=lambda g: (g.name, g.first().run_id))


def _used_in(manifests: list[dict[str, Any]], markdown: bool = True) -> dict[tuple[str, str], list[str]]:
    """(name, run id) -> '`sweep` label (overrides)' for every sweep point: what differs from its base;
    markdown=False: the same unescaped (runs.csv, whose overrides have their own column)."""
    used: dict[tuple[str, str], list[str]] = {}
    for manifest in manifests:
        for point in manifest["points"]:
            if markdown:
                extra = f" ({md_text(overrides_text(point['overrides']))})" if point.get("overrides") else ""
                words = f"{md_code(manifest['name'])} {md_text(point['label'])}{extra}"
            else:
                words = f"`{manifest['name']}` {point['label']}"
            used.setdefault((point["name"], point["run_id"]), []).append(words)
    return used


def _group_section(group: Group, used_in: list[str], out: Path) -> list[str]:
    first = group.first()
    seeds = sorted({s for by_seed in group.runs.values() for s in by_seed})
    lines = [f"### {md_code(group.name)} ({md_text(first.run_id)})", ""]
    if used_in:
        lines += ["In sweeps: " + "; ".join(used_in), ""]
    lines += [f"{md_text(settings_text(first.spec), line_start=True)}; {seeds_text(seeds)}"
              + (f" (run ids {', '.join(md_text(r.run_id) for r in group.runs[first.backend].values())})"
                 if len(seeds) > 1 else ""), ""]
    lines += [_group_table(group), ""]
    lines += _network_diagram(group.name, first, out)
    for backend, by_seed in group.runs.items():
        run = by_seed[min(by_seed)]
        images = [f"![{md_text(group.name)} {md_text(backend)} {k}]({_link(run.directory / f'{k}.png', out.parent)})"
                  for k in ("acc", "loss")]
        lines += [md_text(backend, line_start=True) + (f" (seed {run.replicate[1]})" if len(by_seed) > 1 else "") + ": " + " ".join(images), ""]
    return lines


def _network_diagram(name: str, run: Run, out: Path) -> list[str]:
    """The experiment's network once, as a figure (netspec.runs.diagram); nothing for a spec that does
    not validate (its problem is reported with the run)."""
    try:
        network = Network.model_validate(run.spec["network"])
    except (ValueError, KeyError, TypeError):
        return []
    path = draw(network, _figure(out, f"network_{run.run_id}.png"))
    return [f"Network: ![{md_text(name)} network]({_link(path, out.parent)})", ""]


def _group_table(group: Group) -> str:
    """The seven figures per backend over seeds, and each further backend minus the reference, paired by seed."""
    reference, *others = group.runs
    header = ["result", *map(md_text, group.runs), *(f"{md_text(o)} - {md_text(reference)}" for o in others)]
    rows = [[label, *(fmt_values(values(s, key)) for s in group.runs.values()),
             *(_diff_text(paired(group.runs[o], group.runs[reference], key)) for o in others)]
            for key, label in SUMMARY_FIELDS.items()]
    rows.append(["median epoch seconds", *(seconds_text(values(s, "median_epoch_seconds")) for s in group.runs.values()),
                 *("-" for _ in others)])
    return markdown_table(header, rows)


def _appendix(groups: list[Group]) -> list[str]:
    """Every run's own figures, seed by seed, for the groups with more than one seed (the sweeps a run is
    in are in its experiment's section above, once)."""
    rows = [[f"{md_text(g.name)} ({md_text(g.first().run_id)})", md_text(r.backend), r.replicate[1], md_text(r.run_id),
             r.metrics.get("test_acc"), r.metrics.get("best_val_acc"), r.metrics.get("val_acc")]
            for g in groups if any(len(s) > 1 for s in g.runs.values()) for r in g.all_runs()]
    if not rows:
        return []
    return ["## Appendix: per-seed values", "", markdown_table(
        ["experiment", "backend", "seed", "run id", "final test accuracy", "best validation accuracy",
         "validation accuracy"], rows), ""]


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """A spec as {dotted path: leaf value}; list items by index (network.layers.3.p)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None or not value:
        return {path: value}
    return {k: v for key, item in items for k, v in _flat(item, f"{path}.{key}" if path else str(key)).items()}


_MISSING = object()
SEED_PATHS = {"name", "description", "$schema", "train.seed", "train.shuffle_seed"}
"""Spec paths that never tell experiments of one name apart (the seeds of one are in one row)."""


def _brief_labels(groups: list[Group], shown: int = 2) -> dict[int, str]:
    """id(group) -> what tells it from the other experiments of its name: the spec paths whose values
    differ among them, at most `shown` as `path=value` then `+N more`; the run id when nothing differs
    (the same spec on other data) and for a name that only one experiment has."""
    by_name: dict[str, list[Group]] = {}
    for g in groups:
        by_name.setdefault(g.name, []).append(g)
    labels = {}
    for same in by_name.values():
        flats = [_flat(g.first().spec) for g in same]
        paths = sorted({k for f in flats for k in f} - SEED_PATHS)
        differing = [k for k in paths if len({repr(f.get(k, _MISSING)) for f in flats}) > 1] if len(same) > 1 else []
        for g, f in zip(same, flats):
            text = lambda v: "-" if v is _MISSING else v if isinstance(v, str) else json.dumps(v)  # noqa: E731
            words = [f"{k}={text(f.get(k, _MISSING))}" for k in differing[:shown]] + ([f"+{len(differing) - shown} more"] if len(differing) > shown else [])
            labels[id(g)] = ", ".join(words) if words else g.first().run_id
    return labels


def _experiments_brief(groups: list[Group]) -> list[str]:
    """Every experiment's final test accuracy per backend, over its seeds: one table."""
    backends = in_registry_order({b for g in groups for b in g.runs})
    if not groups:
        return []
    labels = _brief_labels(groups)
    rows = [[f"{md_code(g.name)} ({md_text(labels[id(g)])})", *(fmt_values(values(g.runs.get(b, {}), "test_acc")) for b in backends)]
            for g in groups]
    return ["### Experiments in brief", "", "Final test accuracy; each experiment's section below has the rest.", "",
            markdown_table(["experiment", *map(md_text, backends)], rows), ""]




def _diverged_section(runs: dict[tuple[str, str, str], Run]) -> list[str]:
    rows = [[name, backend, rid, run.metrics.get("epoch"), run.metrics.get("message", "")]
            for (name, backend, rid), run in runs.items() if run.metrics.get("status") == run_folder.DIVERGED]
    if not rows:
        return []
    rows = [[md_text(cell) if isinstance(cell, str) else cell for cell in row] for row in rows]
    return ["## Diverged runs", "", "Stopped on a non-finite training loss; not results, so in no table above.", "",
            markdown_table(["spec", "backend", "run id", "epoch", "message"], rows), ""]
