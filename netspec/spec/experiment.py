"""Experiment = network + data + training settings; `--set key=value` on any field (netspec.spec.overrides)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, SerializerFunctionWrapHandler, Strict, model_serializer, model_validator

from netspec.errors import SpecError
from netspec.io import read_json, validate, write_json
from netspec.spec.bases import file_kind
from netspec.spec.blocks import expand_network
from netspec.spec.data_config import DataConfig, _shape_hint, data_shape
from netspec.spec.expand import flat_experiment
from netspec.spec.fields import MAX_BATCH, MAX_EPOCHS, MAX_LR, SafeName, Seed, _Strict
from netspec.spec.layers import Real
from netspec.spec.network import Network
from netspec.spec.overrides import apply_overrides


Beta = Annotated[Real, Field(ge=0.0, lt=1.0)]
WeightDecay = Annotated[Real, Field(ge=0.0, le=1.0)]
"""A weight decay coefficient, in [0, 1]."""


class AdamConfig(_Strict):
    """torch.optim.Adam: PyTorch's defaults; weight_decay as PyTorch's Adam defines it (L2: wd * p added
    to the gradient)."""

    type: Literal["adam"] = "adam"
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment estimates, each in [0, 1)."""
    eps: Real = Field(1e-8, gt=0.0, le=1.0)
    """Added to the root of the second moment."""
    weight_decay: WeightDecay = 0.0
    """L2 penalty: weight_decay * p is added to the gradient (0: none; left out of the run id at 0)."""


class AdamWConfig(_Strict):
    """torch.optim.AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay before the step)."""

    type: Literal["adamw"] = "adamw"
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment estimates, each in [0, 1)."""
    eps: Real = Field(1e-8, gt=0.0, le=1.0)
    """Added to the root of the second moment."""
    weight_decay: WeightDecay = 0.01
    """Decoupled decay, PyTorch's default 0.01."""


class SGDConfig(_Strict):
    """torch.optim.SGD with dampening 0: g = grad + weight_decay * p; buf = momentum * buf + g;
    step along g + momentum * buf (nesterov) or buf."""

    type: Literal["sgd"] = "sgd"
    momentum: Annotated[Real, Field(ge=0.0, lt=1.0)] = 0.0
    """Momentum in [0, 1) (0: plain SGD)."""
    nesterov: bool = False
    """Nesterov momentum (needs momentum > 0)."""
    weight_decay: WeightDecay = 0.0
    """L2 penalty: weight_decay * p is added to the gradient."""

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDConfig":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum > 0; set optimizer.momentum (e.g. 0.9) or nesterov to false")
        return self


Optimizer = Annotated[Union[AdamConfig, AdamWConfig, SGDConfig], Field(discriminator="type")]


class ParamGroups(_Strict):
    """Per-tensor optimizer settings by rule (netspec.protocol.param_groups): which tensors get weight decay,
    and an lr multiplier for the biases of normalization layers (airbench's larger BatchNorm-bias lr)."""

    decay_norm: bool = True
    """Weight decay on normalization layers' weights and biases (false: none, as in Page's and airbench's recipes)."""
    decay_bias: bool = True
    """Weight decay on biases of every layer."""
    norm_bias_lr_scale: Real = Field(1.0, gt=0.0, le=1000.0)
    """The lr of normalization layers' biases is train.lr times this."""


Knot = tuple[Annotated[Real, Field(ge=0.0, le=MAX_EPOCHS)], Annotated[Real, Field(ge=0.0, le=MAX_LR)]]


class LabSchedule(_Strict):
    """The lab framework's rule (train.lr_decay), the default: lr *= lr_decay when an epoch's train
    loss exceeds the max of the three before."""

    type: Literal["lab"] = "lab"


class ConstantSchedule(_Strict):
    """train.lr at every step."""

    type: Literal["constant"] = "constant"


class PiecewiseLinearSchedule(_Strict):
    """train.lr times a piecewise linear factor of the epoch, evaluated per step (step s of an epoch of
    S steps is at epoch e - 1 + s / S); held at the end knots' factors outside them. Page's ResNet-9:
    knots [[0, 0], [5, 1], [24, 0]] with lr 0.4."""

    type: Literal["piecewise_linear"] = "piecewise_linear"
    knots: list[Knot] = Field(min_length=2, max_length=1000)
    """[epoch, factor] pairs, epochs strictly increasing."""

    @model_validator(mode="after")
    def _increasing(self) -> "PiecewiseLinearSchedule":
        epochs = [epoch for epoch, _ in self.knots]
        bad = next((i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1]), None)
        if bad is not None:
            raise ValueError(f"knots must have strictly increasing epochs, but knot {bad} is at epoch {epochs[bad]:g} "
                             f"after {epochs[bad - 1]:g}; sort them")
        return self


class OneCycleSchedule(_Strict):
    """torch.optim.lr_scheduler.OneCycleLR's learning rate (max_lr = train.lr, total_steps = the run's
    steps, stepped once per optimizer step): from lr / div_factor up to lr over pct_start of the steps,
    then down to lr / div_factor / final_div_factor."""

    type: Literal["onecycle"] = "onecycle"
    pct_start: Real = Field(0.3, gt=0.0, lt=1.0)
    div_factor: Real = Field(25.0, ge=1.0, le=1e6)
    final_div_factor: Real = Field(1e4, ge=1.0, le=1e9)
    anneal: Literal["cos", "linear"] = "cos"


class CosineSchedule(_Strict):
    """Linear warm-up from 0 over `warmup_epochs`, then a cosine from train.lr down to
    train.lr * min_factor at the last step."""

    type: Literal["cosine"] = "cosine"
    warmup_epochs: Annotated[Real, Field(ge=0.0, le=MAX_EPOCHS)] = 0.0
    min_factor: Annotated[Real, Field(ge=0.0, le=1.0)] = 0.0


class StepSchedule(_Strict):
    """torch.optim.lr_scheduler.StepLR stepped per epoch: train.lr * gamma ** (epochs done // step_epochs)."""

    type: Literal["step"] = "step"
    step_epochs: Annotated[int, Strict(), Field(gt=0, le=MAX_EPOCHS)]
    gamma: Real = Field(0.1, gt=0.0, le=1.0)


Schedule = Annotated[Union[LabSchedule, ConstantSchedule, PiecewiseLinearSchedule, OneCycleSchedule, CosineSchedule,
                           StepSchedule], Field(discriminator="type")]


class AugmentConfig(_Strict):
    """Training-set augmentation (netspec.protocol.augment), drawn per (train.seed, epoch, image) by a counter
    hash, so both backends see the same images and a resumed run the same stream. Order: pad and crop
    (a translation), then horizontal flip, then cutout. All off by default."""

    crop_padding: Annotated[int, Strict(), Field(ge=0, le=1024)] = 0
    """Random crop of the image's own size from the image padded by this many pixels per side (0: off)."""
    pad_mode: Literal["zeros", "reflect"] = "zeros"
    """How the crop's padding is filled: zeros (a random translation) or a reflection (PyTorch's 'reflect')."""
    flip: bool = False
    """Horizontal flip of half the images."""
    cutout: Annotated[int, Strict(), Field(ge=0, le=1024)] = 0
    """Side of a square zeroed at a random place inside the image (0: off)."""

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.cutout > 0


OMITTED_AT_DEFAULT: dict[str, Any] = {"init_weights": None, "shuffle_first_epoch": False}
"""train fields left out of a saved spec while they hold these values (see TrainConfig's serializer)."""


SCHEMA_FOLDER = Path(__file__).resolve().parents[2] / "specs" / "schema"
"""The checkout's schemas (`netspec schema -o specs/schema` writes them; a test keeps them current)."""
AUTO_SCHEMA = "auto"


def schema_reference(path: str | Path, kind: str = "experiment") -> Optional[str]:
    """The "$schema" of a spec file saved at `path`, so that an editor finds the schema from wherever the
    file is: relative to the file inside the checkout (the repository's own files stay portable), else the
    schema's absolute file URI; None where netspec runs without the checkout's specs/ (nothing to point to)."""
    target = SCHEMA_FOLDER / f"{kind}.schema.json"
    if not target.is_file():
        return None
    folder = Path(path).resolve().parent
    if folder.is_relative_to(SCHEMA_FOLDER.parent.parent):
        return os.path.relpath(target, folder)
    return target.as_uri()


class TrainConfig(_Strict):
    """Optimizer and loop settings."""

    optimizer: Optimizer = AdamConfig()
    """The optimizer: adam (default), adamw or sgd, with PyTorch's definitions."""
    lr: Real = Field(1e-3, gt=0.0, le=MAX_LR)
    """Learning rate (the peak of a schedule)."""
    lr_decay: Real = Field(1.0, gt=0.0, le=1.0)
    """The lab framework's rule: lr *= lr_decay when an epoch's train loss exceeds the max of the three
    before (the report used 0.9995; 1.0 turns it off). Only with schedule 'lab'."""
    schedule: Schedule = LabSchedule()
    """The learning rate per step (netspec.training.schedules): lab (default), constant, piecewise_linear,
    onecycle, cosine, step."""
    param_groups: ParamGroups = ParamGroups()
    """Weight decay and lr multipliers per kind of tensor."""
    label_smoothing: Annotated[Real, Field(ge=0.0, lt=1.0)] = 0.0
    """PyTorch's cross_entropy(label_smoothing=...) in training (evaluation reports the plain loss)."""
    augment: AugmentConfig = AugmentConfig()
    """Training-set augmentation (off by default)."""
    early_stopping_patience: Optional[Annotated[int, Strict(), Field(gt=0, le=MAX_EPOCHS)]] = None
    """Stop when validation accuracy has not reached its best for this many epochs (None: train every
    epoch, the lab's protocol); the run records why and when it stopped."""
    test_time_flip: bool = False
    """Evaluate validation and test on the mean of the logits of each image and its horizontal flip."""
    batch_size: Annotated[int, Strict(), Field(gt=0, le=MAX_BATCH)] = 100
    """Images per training step; a last partial batch is dropped."""
    epochs: Annotated[int, Strict(), Field(gt=0, le=MAX_EPOCHS)] = 50
    """Passes over the training split."""
    eval_batch_size: Annotated[int, Strict(), Field(gt=0, le=MAX_BATCH)] = 500
    """Images per step when evaluating (results do not depend on it; memory does)."""
    seed: Seed = 0
    """Seed of the weight initialization, the dropout masks and the augmentation draws."""
    shuffle_seed: Seed = 42
    """Seed of the numpy permutations of the training set (first epoch in file order, as the lab)."""
    shuffle_first_epoch: Annotated[bool, Strict()] = False
    """Whether epoch 1 is shuffled too (True: as Page's ResNet-9 code, which shuffles every epoch); False,
    the default: epoch 1 in file order, as the lab's framework. Left out of the run id when False."""
    precision: Literal["float32", "tf32", "bf16"] = "float32"
    """How matmuls and convolutions compute, the same on every backend: 'float32' (true float32, TF32
    off: the default, as in Keras and Lightning, reproducible, and what the cross-check validates);
    'tf32' (TF32 matmuls/convs on GPUs that have it, ~3-8x faster there, ~1e-3 relative error);
    'bf16' (bf16 matmuls/convs, float32 parameters, optimizer state, BatchNorm statistics and loss).
    On a CPU 'tf32' computes as 'float32'. Left out of the run id when 'float32'."""
    init_weights: Optional[Annotated[str, Strict(), Field(min_length=1, max_length=4096)]] = None
    """A .npz of canonical weights to start from instead of the seed's draw (fine-tuning; `train --weights`);
    its content's fingerprint, not its path, is in the run id. None: weights drawn from `seed`."""
    compile: Literal["auto", "on", "off"] = "auto"
    """'auto': compiled training steps on a GPU (torch.compile, the whole step captured as a CUDA graph;
    jax: the steps of an epoch as one jitted scan), not on a CPU, where torch.compile costs 30-60 s per
    graph and a scan is slower than jitted steps; 'on' or 'off' force it ('off' for debugging). Never
    part of the run id (how, not what, is computed)."""

    @model_serializer(mode="wrap")
    def _omit_later_fields_at_default(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Fields added after spec files existed are left out of the JSON while they hold their default,
        # so every file written before them keeps its saved form.
        data = handler(self)
        if isinstance(data, dict):
            for name, default in OMITTED_AT_DEFAULT.items():
                if name in data and data[name] == default:
                    del data[name]
        return data

    @model_validator(mode="after")
    def _lab_decay_only_with_lab(self) -> "TrainConfig":
        if self.lr_decay != 1.0 and self.schedule.type != "lab":
            raise ValueError(f"lr_decay {self.lr_decay:g} is the 'lab' schedule's rule, but the schedule is "
                             f"'{self.schedule.type}'; set lr_decay to 1.0 or schedule.type to 'lab'")
        return self


_TOO_MUCH_PADDING = {
    "reflect": "a reflection cannot reach that far (PyTorch refuses it)",
    "zeros": "a crop can then hold no pixel of the image at all",
}
"""Why a crop_padding of the image's side or more is refused, per pad_mode."""


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

    @model_validator(mode="before")
    @classmethod
    def _input_shape_from_the_data(cls, content: Any) -> Any:
        # A network may leave input_shape to the data where the data config states it; the filled-in
        # shape is then part of the experiment as if written out (the same run id).
        network = content.get("network") if isinstance(content, dict) else None
        if isinstance(network, dict) and "input_shape" not in network and isinstance(content.get("data", {}), dict):
            shape = data_shape(content.get("data", {}))
            if shape is None:
                raise ValueError(f"network.input_shape is left to the data, but the data does not state its shape "
                                 f"before it is read ({_shape_hint(content.get('data', {}))}); write network.input_shape "
                                 "(e.g. [1, 28, 28] for mnist)")
            content = {**content, "network": {**network, "input_shape": shape}}
        return content

    @model_validator(mode="after")
    def _augmentation_fits_the_images(self) -> "Experiment":
        augment, shape = self.train.augment, tuple(self.network.input_shape)
        if not augment.active and not self.train.test_time_flip:
            return self
        what = "train.augment" if augment.active else "train.test_time_flip"
        if len(shape) != 3:
            raise ValueError(f"{what} needs image input (C, H, W), but network.input_shape is {shape}; "
                             f"set it to e.g. [3, 32, 32] (Flatten first for an MLP) or turn augmentation off")
        height, width = shape[1:]
        side = min(height, width)
        if augment.crop_padding >= side:
            raise ValueError(f"train.augment.crop_padding {augment.crop_padding} with pad_mode '{augment.pad_mode}' must be "
                             f"below the image's height and width {height}x{width} (the rule for every pad_mode): "
                             f"{_TOO_MUCH_PADDING[augment.pad_mode]}; lower it (Page's recipe: 4 on 32x32)")
        if augment.cutout >= side:  # a square as tall or wide as the image blanks a whole band of it
            raise ValueError(f"train.augment.cutout {augment.cutout} is larger than the {height}x{width} images allow: "
                             f"a square of side {side} or more zeroes the image's whole "
                             f"{'height' if height == side else 'width'} (all of a square image); lower it below "
                             f"{side} (Page's recipe: 8 on 32x32)")
        return self

    def save(self, path: str | Path, schema: Optional[str] = AUTO_SCHEMA) -> None:
        """Write the experiment as a spec file that starts with `"$schema": schema`: by default a reference
        that resolves from where the file is saved (schema_reference); None leaves it out."""
        write_json(self, path, schema_reference(path) if schema == AUTO_SCHEMA else schema)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "Experiment":
        data = read_json(path)
        if not isinstance(data, dict) or ("network" not in data and "base" not in data):
            raise SpecError(f"{path}: not an experiment spec (no 'network' field); see specs/ for examples")
        kind = file_kind(path, data)
        if kind != "experiment":  # a sweep's or search's fields would be 'unknown fields' of an experiment
            raise SpecError(f"{path} is a {kind} file, not an experiment; run it with: netspec "
                            f"{'train' if kind == 'sweep' else 'search'} {path}")
        return validate(cls, flat_json(data, path, overrides or [], str(path)), path)

    def with_overrides(self, overrides: list[str]) -> "Experiment":
        data = apply_overrides(self.model_dump(mode="json"), overrides, source=self.name)
        return validate(Experiment, data, f"{self.name} with {' '.join(overrides)}")


def load(path: str | Path) -> Network | Experiment:
    """Load a spec file: an Experiment when it has a 'network' field, else a Network."""
    data = read_json(path)
    if isinstance(data, dict) and ("network" in data or "base" in data):
        return Experiment.load(path)  # a sweep or search file (they have a base too) is one line there
    return validate(Network, expand_network(data, str(path)), path)


def flat_json(data: Any, path: str | Path | None, overrides: list[str], source: str) -> Any:
    """An experiment file's JSON as the flat form that is validated and hashed (netspec.spec.expand)."""
    return flat_experiment(data, path, overrides, source, TrainConfig.model_fields["epochs"].default, apply_overrides)


def recipe_text(train: dict[str, Any]) -> str:
    """A short line naming a run's training recipe from its `train` section as JSON (a spec.json of any
    age: missing fields are their defaults), e.g. 'sgd m0.9 nesterov wd0.0005, piecewise_linear,
    crop4 reflect + flip + cutout8'. For runs.csv and the report."""
    opt = train.get("optimizer") or {}
    parts = [opt.get("type", "adam")]
    if opt.get("momentum"):
        parts.append(f"m{opt['momentum']:g}" + (" nesterov" if opt.get("nesterov") else ""))
    if opt.get("weight_decay"):
        parts.append(f"wd{opt['weight_decay']:g}")
    groups = train.get("param_groups") or {}
    if groups.get("decay_norm") is False or groups.get("decay_bias") is False:
        parts.append("no decay on " + " and ".join(w for w, k in (("norm", "decay_norm"), ("bias", "decay_bias"))
                                                   if groups.get(k) is False))
    if groups.get("norm_bias_lr_scale", 1.0) != 1.0:
        parts.append(f"norm-bias lr x{groups['norm_bias_lr_scale']:g}")
    words = [" ".join(parts), (train.get("schedule") or {}).get("type", "lab")]
    if train.get("label_smoothing"):
        words.append(f"label smoothing {train['label_smoothing']:g}")
    aug = train.get("augment") or {}
    pieces = ([f"crop{aug['crop_padding']} {aug.get('pad_mode', 'zeros')}"] if aug.get("crop_padding") else []) + \
        (["flip"] if aug.get("flip") else []) + ([f"cutout{aug['cutout']}"] if aug.get("cutout") else [])
    if pieces:
        words.append(" + ".join(pieces))
    if train.get("test_time_flip"):
        words.append("flip TTA")
    if train.get("early_stopping_patience"):
        words.append(f"patience {train['early_stopping_patience']}")
    return ", ".join(words)
