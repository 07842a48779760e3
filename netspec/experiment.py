"""Experiment = network + data + training settings, and `--set key=value` overrides on any field."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from .errors import SpecError
from .io import read_json, validate, write_json
from .network import Network


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DataConfig(_Strict):
    """Where the images come from and how they are split and scaled."""

    source: Literal["cifar10", "synthetic"] = "cifar10"
    """'cifar10' (TFDS, or a local copy given by `dir`) or 'synthetic' (seeded, learnable, CIFAR-shaped)."""
    dir: Optional[str] = None
    """A local CIFAR-10 copy: an image-folder tree (train/<class>/*, test/<class>/*), cifar-10-batches-py,
    or a .tar.gz of either; decoded once, then cached (netspec.data)."""
    val_size: NonNegativeInt = 10_000
    """Images held out of the training set for validation (the report: 10,000 of 50,000)."""
    split: Literal["tail", "stratified"] = "tail"
    """'tail': validation is the last `val_size` images in the source's order (the report);
    'stratified': a seeded random split with equal class shares (the choice for image-folder trees, which
    have no original order: netspec.data interleaves their classes, so 'tail' still takes every class)."""
    normalize: Literal["report", "per_channel"] = "report"
    """'report': (x - 128) / 255 as the lab's framework; 'per_channel': mean/std of the training split."""
    seed: int = 42
    """Seed of the stratified split and of synthetic data."""
    train_size: Optional[PositiveInt] = None
    """Synthetic only: training images before the validation split (default 50,000); a cap otherwise."""
    test_size: Optional[PositiveInt] = None
    """Synthetic only: test images (default 10,000); a cap otherwise."""


class AdamConfig(_Strict):
    """Adam with PyTorch's defaults and no weight decay."""

    type: Literal["adam"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class TrainConfig(_Strict):
    """Optimizer and loop settings."""

    optimizer: AdamConfig = AdamConfig()
    """The optimizer (Adam)."""
    lr: PositiveFloat = 1e-3
    """Learning rate."""
    lr_decay: float = Field(1.0, gt=0.0, le=1.0)
    """The lab framework's rule: lr *= lr_decay when an epoch's train loss exceeds the max of the three
    before (the report used 0.9995; 1.0 turns it off)."""
    batch_size: PositiveInt = 100
    """Images per training step; a last partial batch is dropped."""
    epochs: PositiveInt = 50
    """Passes over the training split."""
    eval_batch_size: PositiveInt = 500
    """Images per step when evaluating (results do not depend on it; memory does)."""
    seed: int = 0
    """Seed of the weight initialization and of the dropout masks."""
    shuffle_seed: int = 42
    """Seed of the numpy permutations of the training set (first epoch in file order, as the lab)."""


class Experiment(_Strict):
    """Everything one run needs. Every field can be overridden: `--set train.lr=0.01`."""

    version: Literal[1] = 1
    """Spec format version."""
    name: str = "experiment"
    """Short name, used for the output folder."""
    description: str = ""
    """What this run is for."""
    network: Network
    """The model."""
    data: DataConfig = DataConfig()
    """The dataset and its split."""
    train: TrainConfig = TrainConfig()
    """The optimizer and the loop."""

    def save(self, path: str | Path) -> None:
        write_json(self, path)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "Experiment":
        data = read_json(path)
        if not isinstance(data, dict) or "network" not in data:
            raise SpecError(f"{path}: not an experiment spec (no 'network' field); see specs/ for examples")
        if overrides:
            data = apply_overrides(data, overrides, source=str(path))
        return validate(cls, data, path)

    def with_overrides(self, overrides: list[str]) -> "Experiment":
        data = apply_overrides(self.model_dump(mode="json"), overrides, source=self.name)
        return validate(Experiment, data, f"{self.name} with {' '.join(overrides)}")


def parse_value(text: str) -> Any:
    """A value from the command line: JSON when it parses (numbers, true, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(data: Any, dotted: str, value: Any, source: str = "<spec>") -> Any:
    """Return a copy of `data` (JSON-like) with `dotted` ('network.layers.3.p') set to `value`."""
    keys = dotted.split(".")
    root = json.loads(json.dumps(data))
    node = root
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise SpecError(f"{source}: --set {dotted}: '{where}' needs an index below {len(node)}")
            key = int(key)
        elif isinstance(node, dict):
            if key not in node and not last:
                node[key] = {}
        else:
            raise SpecError(f"{source}: --set {dotted}: '{'.'.join(keys[:depth])}' is a value, not a section")
        if last:
            node[key] = value
        else:
            node = node[key]
    return root


def apply_overrides(data: Any, overrides: list[str], source: str = "<spec>") -> Any:
    """Apply 'key=value' strings in order."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpecError(f"{source}: --set {item!r} must look like key=value, e.g. train.lr=0.01")
        data = set_path(data, key.strip(), parse_value(text), source)
    return data


def load(path: str | Path) -> Network | Experiment:
    """Load a spec file: an Experiment when it has a 'network' field, else a Network."""
    data = read_json(path)
    if isinstance(data, dict) and "network" in data:
        return validate(Experiment, data, path)
    return validate(Network, data, path)
