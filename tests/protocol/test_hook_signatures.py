"""Every backend's model keeps ModelBase's signatures: each method of ModelBase that a backend's model
overrides (the `_`-prefixed hooks and any public method) has the base's parameters, by name, kind, order
and default, so the base's calls mean the same thing in every backend. Extra needs go into a private
helper of another name. The Model Protocol (for typing) has ModelBase's public signatures too."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import numpy as np
import pytest

from netspec.protocol.backend import Model, installed_backends, load_backend
from netspec.protocol.model_base import ModelBase


def _shape(fn: Callable[..., Any]) -> list[str]:
    """Each parameter as written, without its annotation ('flip: bool = False' -> 'flip=False'), with the
    markers '/' and '*' where its kind changes, as a signature reads."""
    out: list[str] = []
    previous = None
    for p in inspect.signature(fn).parameters.values():
        if previous == p.POSITIONAL_ONLY and p.kind != p.POSITIONAL_ONLY:
            out.append("/")
        if p.kind == p.KEYWORD_ONLY and previous not in (p.KEYWORD_ONLY, p.VAR_POSITIONAL):
            out.append("*")
        out.append(str(p.replace(annotation=inspect.Parameter.empty)))
        previous = p.kind
    return out + (["/"] if previous == inspect.Parameter.POSITIONAL_ONLY else [])


def drift(base: Callable[..., Any], override: Callable[..., Any]) -> Optional[str]:
    """How `override`'s parameters differ from `base`'s (None: they do not): the first position that
    differs, and both whole lists."""
    want, got = _shape(base), _shape(override)
    if want == got:
        return None
    at = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))
    first = (f"parameter {at}: {got[at] if at < len(got) else 'nothing'!r} where the base has "
             f"{want[at] if at < len(want) else 'nothing'!r}")
    return f"{first} (override ({', '.join(got)}), base ({', '.join(want)}))"


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    """ModelBase's methods by name (hooks and public ones, not dunders), as `cls` resolves them."""
    return {name: getattr(cls, name) for name, value in vars(ModelBase).items()
            if callable(value) and not name.startswith("__")}


def drifts(model_class: type, label: str) -> list[str]:
    """One line per method of ModelBase that `model_class` overrides with other parameters."""
    base = _methods(ModelBase)
    out = []
    for name, fn in _methods(model_class).items():
        if fn is not base[name]:
            difference = drift(base[name], fn)
            if difference:
                out.append(f"{label}: {model_class.__name__}.{name} differs from ModelBase.{name}: {difference}")
    return out


@pytest.mark.parametrize("backend", installed_backends())
def test_every_overridden_hook_keeps_the_base_signature(backend: str) -> None:
    model_class = load_backend(backend).model_class
    assert issubclass(model_class, ModelBase), f"{backend} backend: {model_class.__name__} does not subclass ModelBase"
    overridden = [name for name, fn in _methods(model_class).items() if fn is not _methods(ModelBase)[name]]
    assert "_run_steps" in overridden and "_evaluate" in overridden  # the walk sees a backend's hooks
    problems = drifts(model_class, f"{backend} backend")
    assert not problems, "\n".join(problems)


def test_a_drifting_hook_is_named_with_its_difference() -> None:
    class Drifting(ModelBase):  # the torch hooks as they once were
        def _run_steps(self, data: Any, batches: np.ndarray, lr: float, plans: Any = None, capture: bool = True) -> Any:
            return None

        def _warmup(self, data: Any, batch_size: int, rows: int = 1) -> None:
            return None

        def _read_back(self, sums: Any) -> tuple[float, float]:  # the same parameters: no complaint
            return 0.0, 0.0

    problems = drifts(Drifting, "test backend")
    assert problems == [
        "test backend: Drifting._run_steps differs from ModelBase._run_steps: parameter 2: 'batches' where the base "
        "has 'rows' (override (self, data, batches, lr, plans=None, capture=True), base (self, data, rows, lrs, plans))",
        "test backend: Drifting._warmup differs from ModelBase._warmup: parameter 3: 'rows=1' where the base has "
        "'rows' (override (self, data, batch_size, rows=1), base (self, data, batch_size, rows))",
    ]


def test_an_extra_keyword_only_parameter_is_a_drift() -> None:
    class Extra(ModelBase):
        def _evaluate(self, data: Any, batch_size: int, flip: bool, *, fast: bool = False) -> Any:
            return None

    assert drifts(Extra, "x") == ["x: Extra._evaluate differs from ModelBase._evaluate: parameter 4: '*' where the "
                                  "base has 'nothing' (override (self, data, batch_size, flip, *, fast=False), "
                                  "base (self, data, batch_size, flip))"]


def test_the_model_protocol_has_the_base_public_signatures() -> None:
    public = [name for name in vars(Model) if not name.startswith("_") and callable(getattr(Model, name))]
    assert public, "the Model Protocol declares no method"
    problems = [f"Model.{name}: {difference}" for name in public
                if (difference := drift(getattr(ModelBase, name), getattr(Model, name)))]
    assert not problems, "\n".join(problems)
