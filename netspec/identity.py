"""What a run's id hashes: `run_identity(experiment)`, the resolved experiment minus what cannot change
its numbers, with the data named by its content (netspec.data.identity), not by the spelling of a path."""
from __future__ import annotations

from typing import Any

from .experiment import Experiment

NOT_IN_IDENTITY: dict[str, Any] = {"name": True, "description": True, "train": {"eval_batch_size", "compile"}}
"""Fields that cannot change a run's numbers: words, and the evaluation batch size (evaluation sums
per-image losses and hits: the result is the same for any batch size; only memory depends on it);
and train.compile, how the steps are dispatched (like the device, which is not in the id either)."""

DEFAULTS_NOT_IN_IDENTITY: dict[str, Any] = {"train": {"precision": "float32"}}
"""Fields added after runs existed, left out of the id while they hold their default, so every run id
made before them stays the same (a non-default value is in the id)."""


def run_identity(experiment: Experiment) -> dict[str, Any]:
    """The JSON-able content a run id hashes. `data.dir` is replaced by `data.identity`, a fingerprint
    of the images it resolves to; reading it may raise a one-line DataError for a missing copy."""
    from .data.identity import data_identity

    content = experiment.model_dump(mode="json", exclude=NOT_IN_IDENTITY)
    for section, defaults in DEFAULTS_NOT_IN_IDENTITY.items():
        for key, value in defaults.items():
            if content[section].get(key) == value:
                del content[section][key]
    content["data"].pop("dir")
    content["data"]["identity"] = data_identity(experiment.data)
    return content
