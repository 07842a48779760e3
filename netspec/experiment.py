"""Experiment = network + data + training settings, and `--set key=value` overrides on any field."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from .errors import SpecError
from .io import read_json, validate, write_json
from .layers import Real
from .network import Network

MAX_NAME_LENGTH = 100
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _check_name(name: str) -> str:
    # A name becomes a folder or file name under --out (runs/<name>/..., runs/sweeps/<name>.json):
    # '/', '\\' or a leading '.' ('..', a hidden file) would let it point anywhere.
    if len(name) > MAX_NAME_LENGTH or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{name[:120]!r} is not a safe file name: use letters, digits, '_', '-' and '.' "
                         f"(not first), at most {MAX_NAME_LENGTH} characters, e.g. 'cnn_lr-0.01'")
    return name


SafeName = Annotated[str, Strict(), AfterValidator(_check_name)]
"""An experiment's or sweep's name: a safe file name, since outputs are named after it."""

MAX_SEED = 2**32 - 1
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
"""A seed as numpy takes it (0 .. 2**32 - 1); numpy refuses a negative one with a traceback."""
MAX_IMAGES = 1_000_000
"""Most images in a split (CIFAR-10 has 60,000 in all): synthetic data is made at this size in memory."""
MAX_BATCH = 65_536
MAX_EPOCHS = 100_000
MAX_LR = 10.0
"""Largest learning rate: Adam's steps are about lr in size, so anything above diverges at once."""


def _images(positive: bool) -> Any:
    return Annotated[int, Strict(), Field(gt=0, le=MAX_IMAGES) if positive else Field(ge=0, le=MAX_IMAGES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Where the images come from and how they are split and scaled."""

    source: Literal["cifar10", "synthetic"] = "cifar10"
    """'cifar10' (TFDS, or a local copy given by `dir`) or 'synthetic' (seeded, learnable, CIFAR-shaped)."""
    dir: Optional[Annotated[str, Strict(), Field(min_length=1, max_length=4096)]] = None
    """A local CIFAR-10 copy: an image-folder tree (train/<class>/*, test/<class>/*), cifar-10-batches-py,
    or a .tar.gz of either; decoded once, then cached (netspec.data)."""
    val_size: _images(False) = 10_000
    """Images held out of the training set for validation (the report: 10,000 of 50,000)."""
    split: Literal["tail", "stratified"] = "tail"
    """'tail': validation is the last `val_size` images in the source's order (the report);
    'stratified': a seeded random split with equal class shares (the choice for image-folder trees, which
    have no original order: netspec.data interleaves their classes, so 'tail' still takes every class)."""
    normalize: Literal["report", "per_channel"] = "report"
    """'report': (x - 128) / 255 as the lab's framework; 'per_channel': mean/std of the training split."""
    seed: Seed = 42
    """Seed of the stratified split and of synthetic data."""
    train_size: Optional[_images(True)] = None
    """Synthetic only: training images before the validation split (default 50,000); a cap otherwise
    (at most the source's own count)."""
    test_size: Optional[_images(True)] = None
    """Synthetic only: test images (default 10,000); a cap otherwise (at most the source's own count)."""


Beta = Annotated[Real, Field(ge=0.0, lt=1.0)]


class AdamConfig(_Strict):
    """Adam with PyTorch's defaults and no weight decay."""

    type: Literal["adam"] = "adam"
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment estimates, each in [0, 1)."""
    eps: Real = Field(1e-8, gt=0.0, le=1.0)
    """Added to the root of the second moment."""


class TrainConfig(_Strict):
    """Optimizer and loop settings."""

    optimizer: AdamConfig = AdamConfig()
    """The optimizer (Adam)."""
    lr: Real = Field(1e-3, gt=0.0, le=MAX_LR)
    """Learning rate."""
    lr_decay: Real = Field(1.0, gt=0.0, le=1.0)
    """The lab framework's rule: lr *= lr_decay when an epoch's train loss exceeds the max of the three
    before (the report used 0.9995; 1.0 turns it off)."""
    batch_size: Annotated[int, Strict(), Field(gt=0, le=MAX_BATCH)] = 100
    """Images per training step; a last partial batch is dropped."""
    epochs: Annotated[int, Strict(), Field(gt=0, le=MAX_EPOCHS)] = 50
    """Passes over the training split."""
    eval_batch_size: Annotated[int, Strict(), Field(gt=0, le=MAX_BATCH)] = 500
    """Images per step when evaluating (results do not depend on it; memory does)."""
    seed: Seed = 0
    """Seed of the weight initialization and of the dropout masks."""
    shuffle_seed: Seed = 42
    """Seed of the numpy permutations of the training set (first epoch in file order, as the lab)."""
    precision: Literal["float32", "tf32", "bf16"] = "float32"
    """How matmuls and convolutions compute, the same on every backend: 'float32' (true float32, TF32
    off: the default, as in Keras and Lightning, reproducible, and what the cross-check validates);
    'tf32' (TF32 matmuls/convs on GPUs that have it, ~3-8x faster there, ~1e-3 relative error);
    'bf16' (bf16 matmuls/convs, float32 parameters, optimizer state, BatchNorm statistics and loss).
    On a CPU 'tf32' computes as 'float32'. Left out of the run id when 'float32'."""
    compile: Literal["auto", "on", "off"] = "auto"
    """'auto': compiled training steps on a GPU (torch.compile, the whole step captured as a CUDA graph;
    jax: the steps of an epoch as one jitted scan), not on a CPU, where torch.compile costs 30-60 s per
    graph and a scan is slower than jitted steps; 'on' or 'off' force it ('off' for debugging). Never
    part of the run id (how, not what, is computed)."""


class Experiment(_Strict):
    """Everything one run needs. Every field can be overridden: `--set train.lr=0.01`."""

    version: Literal[1] = 1
    """Spec format version."""
    name: SafeName = "experiment"
    """Short name, used for the output folder: letters, digits, '_', '-', '.' (not first), at most 100."""
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
