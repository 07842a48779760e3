"""What a run's id hashes: `run_identity(experiment)`, the resolved experiment minus what cannot change
its numbers, with the data named by its content (netspec.data.identity), not by the spelling of a path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from netspec.data.identity import data_identity
from netspec.errors import SpecError
from netspec.spec.experiment import Experiment
from netspec.spec.params import Weights, check_fit, load_weights, weights_fingerprint

NOT_IN_IDENTITY: dict[str, Any] = {"name": True, "description": True, "train": {"eval_batch_size", "compile"}}
"""Fields that cannot change a run's numbers: words, and the evaluation batch size (evaluation sums
per-image losses and hits: the result is the same for any batch size; only memory depends on it);
and train.compile, how the steps are dispatched (like the device, which is not in the id either)."""

DEFAULTS_NOT_IN_IDENTITY: dict[str, Any] = {"data": {"image_size": None, "channels": None}, "train": {
    "precision": "float32",
    "optimizer": {"weight_decay": 0.0},
    "schedule": {"type": "lab"},
    "param_groups": {"decay_norm": True, "decay_bias": True, "norm_bias_lr_scale": 1.0},
    "label_smoothing": 0.0,
    "augment": {"crop_padding": 0, "pad_mode": "zeros", "flip": False, "cutout": 0},
    "early_stopping_patience": None,
    "test_time_flip": False,
    "init_weights": None,
    "shuffle_first_epoch": False,
}}
"""Fields added after runs existed, left out of the id while they hold their default, so every run id
made before them stays the same (a non-default value is in the id). A nested dict is a section: its
fields are dropped one by one, and the section itself once all of it is dropped."""


def _drop_defaults(content: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, default in defaults.items():
        if key not in content:
            continue
        if isinstance(default, dict) and isinstance(content[key], dict):
            _drop_defaults(content[key], default)
            if not content[key]:
                del content[key]
        elif content[key] == default:
            del content[key]


def run_identity(experiment: Experiment) -> dict[str, Any]:
    """The JSON-able content a run id hashes. `data.dir` is replaced by `data.identity`, a fingerprint
    of the images it resolves to; reading it may raise a one-line DataError for a missing copy."""
    content = experiment.model_dump(mode="json", exclude=NOT_IN_IDENTITY)
    _drop_defaults(content, DEFAULTS_NOT_IN_IDENTITY)
    content["data"].pop("dir")
    content["data"]["identity"] = data_identity(experiment.data)
    if experiment.train.init_weights is not None:  # the weights by content, as the data: never by path
        content["train"]["init_weights"] = weights_fingerprint(initial_weights(experiment))
    return content


def initial_weights(experiment: Experiment) -> Weights:
    """The weights train.init_weights names, read (bounded) and checked against the network: one line
    naming the first tensor that does not fit. Read once per file version (run ids are asked for often)."""
    path = Path(experiment.train.init_weights or "")
    try:
        stat = path.stat()
    except OSError as err:
        raise SpecError(f"train.init_weights {str(path)!r}: cannot read it ({err.strerror or err}); give the .npz "
                        "of weights to start from (train --weights)") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _READ:
        _READ.clear()  # one file at a time is what a run asks for
        _READ[key] = load_weights(path)
    return check_fit(experiment.network, _READ[key], str(path))


_READ: dict[tuple[str, int, int], Weights] = {}
