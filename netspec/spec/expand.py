"""An experiment's JSON from its file to the flat form that is validated and hashed, in one order:
bases merged (netspec.spec.bases), then the `--set` overrides outside network.layers (so
`network.params.width=16` and `train.epochs=2` act on what the file says), then blocks and parameters
expanded (netspec.spec.blocks) and schedule fractions turned into epochs, then the overrides of
network.layers (by flat index or id, as on a flat spec)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from netspec.errors import SpecError
from netspec.spec.bases import read_with_bases
from netspec.spec.blocks import expand_network

FRACTION_PATTERN = r"([0-9]{1,6})/([1-9][0-9]{0,5})"
"""A knot's epoch as a fraction of the run (the JSON Schema's pattern too)."""
_FRACTION = re.compile(FRACTION_PATTERN)
LATE_PREFIX = "network.layers."
"""Overrides under this path apply to the expanded (flat) layers."""


def fraction_epochs(data: Any, default_epochs: int, source: str) -> Any:
    """The schedule's epochs written "p/q" (that fraction of train.epochs) as epochs, so `--epochs N` keeps
    a recipe's shape and the given length its exact epochs: each train.schedule.knots epoch and a cosine's
    warmup_epochs become p * epochs / q; a step schedule's step_epochs, a whole number of epochs (StepLR
    steps per epoch), the nearest one, at least 1 ("1/3" of 10 epochs: 3)."""
    train = data.get("train") if isinstance(data, dict) else None
    schedule = train.get("schedule") if isinstance(train, dict) else None
    if not isinstance(schedule, dict):
        return data
    knots = schedule.get("knots")
    knots = knots if isinstance(knots, list) and any(isinstance(k, list) and k and isinstance(k[0], str)
                                                     for k in knots) else None
    fields = [f for f in ("warmup_epochs", "step_epochs") if isinstance(schedule.get(f), str)]
    epochs = train.get("epochs", default_epochs)
    if (knots is None and not fields) or isinstance(epochs, bool) or not isinstance(epochs, int):
        return data  # nothing to turn, or validation names the bad train.epochs
    out = dict(schedule)
    if knots is not None:
        out["knots"] = [[_fraction(knot[0], f"train.schedule.knots.{i}", source, epochs), *knot[1:]]
                        if isinstance(knot, list) and knot and isinstance(knot[0], str) else knot
                        for i, knot in enumerate(knots)]
    for name in fields:
        p, q = _fraction(schedule[name], f"train.schedule.{name}", source)
        if name == "warmup_epochs":
            out[name] = p * epochs / q
        else:  # nearest whole epoch (halves up), at least 1; "0/q" stays 0 for validation to refuse
            out[name] = max(1, (2 * p * epochs + q) // (2 * q)) if p else 0
    return {**data, "train": {**train, "schedule": out}}


def _fraction(text: str, where: str, source: str, epochs: int | None = None) -> Any:
    """ "p/q" (0 <= p <= q) as (p, q), or as p * epochs / q when `epochs` is given; else one line."""
    match = _FRACTION.fullmatch(text)
    if not match or int(match[1]) > int(match[2]):
        raise SpecError(f"{source}: {where}: {text[:40]!r} is not a fraction of the run; "
                        "write \"p/q\" with 0 <= p <= q (\"5/24\", \"1/1\") or an epoch number")
    p, q = int(match[1]), int(match[2])
    return (p, q) if epochs is None else p * epochs / q


def short_form(data: Any, path: str | Path | None, overrides: list[str], source: str,
               apply: Callable[[Any, list[str], str], Any]) -> tuple[Any, list[str]]:
    """An experiment's JSON as its file says it, before expansion: its bases merged (`path` None: no file,
    so no base) and the overrides that edit what the file says applied. Also returns the overrides left
    for the flat layers (`network.layers.X...`, X a flat index or id)."""
    if path is not None:
        data = read_with_bases(path, data)
    late = [o for o in overrides if o.strip().startswith(LATE_PREFIX)]
    early = [o for o in overrides if o not in late]
    if early:
        data = apply(data, early, source)
    return data, late


def flat_experiment(data: Any, path: str | Path | None, overrides: list[str], source: str, default_epochs: int,
                    apply: Callable[[Any, list[str], str], Any]) -> Any:
    """The flat JSON of an experiment read from `path` (None: no file, so no base), with `overrides`."""
    data, late = short_form(data, path, overrides, source, apply)
    if isinstance(data, dict) and "network" in data:
        data = {**data, "network": expand_network(data["network"], source)}
        data = fraction_epochs(data, default_epochs, source)
    if late:
        data = apply(data, late, source)
    return data
