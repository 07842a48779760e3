"""Hostile and odd values: each is one line at load (a SpecError, `error: ...` and exit 2 on the
command line) naming the field and what to do, never a traceback later; the boundary values still load.
Fast: nothing here compiles or trains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import netspec as ns
from netspec.cli import main
from netspec.errors import SpecError
from netspec.io import validate
from netspec.spec.experiment import Experiment
from netspec.spec.layers import FLOAT32_MAX, FLOAT32_TINY, LAYER_TYPES
from netspec.spec.network import Network
from tests.helpers import write_json

CNN = "specs/cnn.json"  # input_shape [3, 32, 32]
RANGE = "use a value of magnitude 1.175e-38 to 3.403e+38 (or 0)"


def refusal(path: str | Path, *overrides: str) -> str:
    """The one-line SpecError that loading `path` with `overrides` gives."""
    with pytest.raises(SpecError) as caught:
        Experiment.load(path, ["data.source=synthetic", *overrides])
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def loads(path: str | Path, *overrides: str) -> Experiment:
    return Experiment.load(path, ["data.source=synthetic", *overrides])


def bare_spec(tmp_path: Path, input_shape: list[int] | None = None) -> Path:
    """A spec with no train section at all: every recipe section is the default."""
    return write_json(tmp_path / "bare.json", {"network": {"input_shape": input_shape or [3, 32, 32], "layers": [
        {"type": "Flatten"}, {"type": "Linear", "out_features": 10}]}})


# ---- recipe values that train on nothing -------------------------------------------------------

def test_a_cutout_as_large_as_the_image_is_refused() -> None:
    assert refusal(CNN, "train.augment.cutout=32") == (
        f"{CNN}: train.augment.cutout 32 is larger than the 32x32 images allow: a square of side 32 or more zeroes "
        "the image's whole height (all of a square image); lower it below 32 (Page's recipe: 8 on 32x32)")
    assert loads(CNN, "train.augment.cutout=31").train.augment.cutout == 31


def test_a_cutout_is_measured_against_the_shorter_side(tmp_path: Path) -> None:
    wide = bare_spec(tmp_path, [3, 16, 32])
    assert "cutout 16 is larger than the 16x32 images allow: a square of side 16 or more zeroes the image's " \
           "whole height" in refusal(wide, "train.augment.cutout=16")
    tall = bare_spec(tmp_path, [3, 32, 16])
    assert "zeroes the image's whole width" in refusal(tall, "train.augment.cutout=20")
    assert loads(wide, "train.augment.cutout=15").train.augment.cutout == 15


@pytest.mark.parametrize("mode, why", [
    ("zeros", "a crop can then hold no pixel of the image at all"),
    ("reflect", "a reflection cannot reach that far (PyTorch refuses it)"),
])
def test_a_crop_padding_of_the_image_side_is_refused_for_every_pad_mode(mode: str, why: str) -> None:
    for padding in (32, 40):
        assert refusal(CNN, f"train.augment.crop_padding={padding}", f"train.augment.pad_mode={mode}") == (
            f"{CNN}: train.augment.crop_padding {padding} with pad_mode '{mode}' must be below the image's height "
            f"and width 32x32 (the rule for every pad_mode): {why}; lower it (Page's recipe: 4 on 32x32)")
    assert loads(CNN, "train.augment.crop_padding=31", f"train.augment.pad_mode={mode}").train.augment.crop_padding == 31


def test_the_command_line_shows_a_refused_augmentation_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", CNN, "--set", "train.augment.crop_padding=40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {CNN}: train.augment.crop_padding 40 with pad_mode 'zeros'"), err


# ---- values float32 cannot hold ------------------------------------------------------------------

REQUIRED: dict[str, dict[str, Any]] = {"Linear": {"out_features": 3}, "Conv2d": {"out_channels": 3, "kernel_size": 1},
                                       "MaxPool2d": {"kernel_size": 1}, "AvgPool2d": {"kernel_size": 1}}
FLOAT_FIELDS = [(layer, name) for layer in LAYER_TYPES for name, field in layer.model_fields.items()
                if field.annotation is float]


def test_the_float_fields_are_found() -> None:
    # Not vacuous: the layers' real-valued fields are all among those checked below.
    assert {("BatchNorm", "momentum"), ("BatchNorm", "eps"), ("Dropout", "p"), ("Dropout2d", "p"), ("Scale", "factor"),
            ("CELU", "alpha"), ("LeakyReLU", "negative_slope")} <= {(layer.__name__, name) for layer, name in FLOAT_FIELDS}


@pytest.mark.parametrize("layer, name", FLOAT_FIELDS, ids=lambda v: v if isinstance(v, str) else v.__name__)
@pytest.mark.parametrize("value, fate", [(1e-50, "underflows (below its normal range)"),
                                         (-1e-40, "underflows (below its normal range)"),
                                         (1e39, "overflows (to infinity)")])
def test_every_float_field_of_every_layer_must_fit_float32(layer: type, name: str, value: float, fate: str) -> None:
    kind = layer.model_fields["type"].default
    spec = {"input_shape": [3, 4, 4], "layers": [{"type": kind, **REQUIRED.get(kind, {}), name: value}]}
    with pytest.raises(SpecError) as caught:
        validate(Network, spec, "net.json")
    # Out of a field's own bounds (a rate above 1) is that bound's message; within them, float32's.
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"net.json: layer 0 ({kind}): "), message
    if "does not fit" in message:
        assert message == f"net.json: layer 0 ({kind}): {name}: {value:g} does not fit float32, the backends' number " \
                          f"type: it {fate}; {RANGE}"


def test_a_tiny_celu_alpha_is_one_line_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_json(tmp_path / "celu.json", {"network": {"input_shape": [4], "layers": [
        {"type": "CELU", "alpha": 1e-50}, {"type": "Linear", "out_features": 2}]}})
    assert main(["summary", str(spec)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {spec}: network: layer 0 (CELU): alpha: 1e-50 does not fit float32, the backends' number type: it "
        f"underflows (below its normal range); {RANGE}"]


@pytest.mark.parametrize("value", [1e-3, FLOAT32_TINY, FLOAT32_MAX])
def test_float32_boundaries_still_load(value: float) -> None:
    assert ns.CELU(alpha=value).alpha == value
    assert ns.Scale(factor=-value).factor == -value
    assert ns.LeakyReLU(negative_slope=0.0).negative_slope == 0.0


@pytest.mark.parametrize("override, where", [
    ("train.lr=1e-50", "train: lr: 1e-50"),
    ("train.optimizer.eps=1e-40", "train: optimizer (adam): eps: 1e-40"),
    ("train.optimizer.betas=[1e-45, 0.9]", "train: optimizer (adam): betas.0: 1e-45"),
    ('train.schedule={"type": "piecewise_linear", "knots": [[0, 0], [5, 1e-40]]}',
     "train: schedule (piecewise_linear): knots.1.1: 1e-40"),
    ("train.param_groups.norm_bias_lr_scale=1e-39", "train: param_groups: norm_bias_lr_scale: 1e-39"),
])
def test_the_training_settings_must_fit_float32(override: str, where: str) -> None:
    assert refusal("specs/mlp.json", override) == \
        f"specs/mlp.json: {where} does not fit float32, the backends' number type: it underflows (below its " \
        f"normal range); {RANGE}"


# ---- --set into a recipe section the spec does not have ------------------------------------------

def test_a_section_set_without_its_type_names_the_section_and_its_choices(tmp_path: Path) -> None:
    spec = bare_spec(tmp_path)
    assert refusal(spec, "train.optimizer.weight_decay=0.1") == (
        f"{spec}: train.optimizer has no 'type' to say which optimizer its fields belong to; choose one of adam, "
        "adamw, sgd (adam, adamw, sgd take weight_decay): add --set train.optimizer.type=adam, or write "
        "\"type\": \"adam\" in the section")
    assert refusal(spec, "train.schedule.warmup_epochs=2") == (
        f"{spec}: train.schedule has no 'type' to say which schedule its fields belong to; choose one of constant, "
        "cosine, lab, onecycle, piecewise_linear, step (cosine takes warmup_epochs): add --set "
        "train.schedule.type=cosine, or write \"type\": \"cosine\" in the section")
    assert "(sgd takes momentum): add --set train.optimizer.type=sgd" in refusal(spec, "train.optimizer.momentum=0.9")


def test_the_choices_come_from_the_union() -> None:
    # Never a hard-coded list: every optimizer and schedule type is named.
    optimizers = [branch.model_fields["type"].default for branch in ns.TrainConfig.model_fields["optimizer"].annotation.__args__]
    message = refusal(CNN, 'train.optimizer={"weight_decay": 0.1}')
    assert f"choose one of {', '.join(sorted(optimizers))} " in message


def test_with_its_type_the_section_loads(tmp_path: Path) -> None:
    spec = bare_spec(tmp_path)
    # The order of the --set does not matter: all apply before the spec is validated.
    train = loads(spec, "train.optimizer.momentum=0.9", "train.optimizer.type=sgd").train
    assert (train.optimizer.type, train.optimizer.momentum) == ("sgd", 0.9)
    assert loads(spec, "train.schedule.type=cosine", "train.schedule.warmup_epochs=2").train.schedule.warmup_epochs == 2


def test_a_layer_without_a_type_keeps_its_message(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "untyped.json", {"network": {"input_shape": [4], "layers": [{"out_features": 2}]}})
    assert refusal(spec) == f"{spec}: network: layer 0: a layer without a 'type'; add one, e.g. \"type\": \"Linear\""


def test_the_command_line_shows_a_missing_type_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(bare_spec(tmp_path)), "--set", "train.optimizer.weight_decay=0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.optimizer has no 'type'" in err[0] and err[0].startswith("error: "), err
