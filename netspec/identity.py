"""What a run's id hashes: `run_identity(experiment)`, the resolved experiment minus what cannot change
its numbers, with the data named by its content (netspec.data.identity), not by the spelling of a path."""
from __future__ import annotations

from typing import Any

from .experiment import Experiment

NOT_IN_IDENTITY: dict[str, Any] = {"name": True, "description": True, "train": {"eval_batch_size"}}
"""Fields that cannot change a run's numbers: words, and the evaluation batch size (evaluation sums
per-image losses and hits: the result is the same for any batch size; only memory depends on it)."""


def run_identity(experiment: Experiment) -> dict[str, Any]:
    """The JSON-able content a run id hashes. `data.dir` is replaced by `data.identity`, a fingerprint
    of the images it resolves to; reading it may raise a one-line DataError for a missing copy."""
    from .data.identity import data_identity

    content = experiment.model_dump(mode="json", exclude=NOT_IN_IDENTITY)
    content["data"].pop("dir")
    content["data"]["identity"] = data_identity(experiment.data)
    return content
