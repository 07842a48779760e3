"""Using a trained run: evaluate its best weights on a split or another image copy, classify image files.

    saved = load_run("runs/cnn/torch/0123456789")                 # spec, best weights, input scaling
    evaluation, folder = evaluate_run(saved.directory, "jax")    # a torch run, evaluated on jax
    for p in predict(saved.directory, "torch", ["cat.png"]):
        print(p.line())                                          # cat.png: cat 0.812, dog 0.101, ...

A run's best weights are canonical (netspec.spec.params), so a run of either backend is used on either.
Inputs are scaled exactly as training scaled them: preprocess.json of the run records the class names
and the per-channel shift/scale (for 'per_channel' they are statistics of the training split); older
runs without it get them recomputed from their data config. Nothing here imports torch or jax: the
backend comes from netspec.protocol.backend.load_backend (or is given as an object).
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from netspec.runs import records, run_folder
from netspec.protocol.backend import Backend, Model, load_backend
from netspec.data import IMAGE_SHAPE, load_dataset, load_raw, scaled
from netspec.data.images import SCALED_16_BIT, check_colour_depth, grey, open_image, to_rgb
from netspec.errors import DataError, SpecError
from netspec.spec.data_config import DataConfig
from netspec.spec.experiment import Experiment
from netspec.io import open_regular, parse_json_file, safe_output_dir
from netspec.spec.params import Weights, load_weights
from netspec.runs.plots import pyplot, save_figure
from netspec.training.trainer import shape_inputs

SPLITS = ("train", "val", "test")
EVALUATION_JSON, CONFUSION_PNG = "evaluation.json", "confusion.png"
MAX_IMAGE_BYTES = 4 * 2**20
"""Largest image file predict reads (a 32x32 image is at most a few KB, even uncompressed)."""
MAX_RESIZED_BYTES = 64 * 2**20
"""Largest image file predict --resize reads: a photo (its pixels are bounded too, by PIL's bomb check)."""
EVALUATION_DIR = "evaluation"
CELL_TEXT_UP_TO = 20
"""Most classes whose confusion matrix carries a count in every cell (beyond: a heat map)."""
MAX_FIGURE_INCHES = 16.0
"""Default output folder of `evaluate_run`, inside the run folder."""

Log = Callable[[str], None]


# --- a saved run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How raw pixels become the network's input, and what its outputs mean."""

    classes: list[str]
    """Class names; output i is classes[i]."""
    shift: np.ndarray
    scale: np.ndarray
    """Per channel: input = (pixels - shift) / scale."""
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    """(C, H, W) of the images the run was trained on (older runs: CIFAR-10's)."""

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 NCHW pixels -> float32 network input, with the very arithmetic of training (data.scaled)."""
        return scaled(pixels, self.shift, self.scale)

    def metadata(self) -> dict[str, str]:
        """The same facts as string key/values (an ONNX model's metadata_props)."""
        return {"classes": json.dumps(self.classes), "normalize_shift": json.dumps(self.shift.tolist()),
                "normalize_scale": json.dumps(self.scale.tolist()), "input": run_folder.PREPROCESS_INPUT,
                "image_shape": json.dumps(list(self.image_shape))}


@dataclass(frozen=True)
class SavedRun:
    """What a finished run folder holds for using the model."""

    directory: Path
    experiment: Experiment
    weights: Weights
    """The best weights (canonical), checked against the network."""
    preprocess: Preprocess


def load_run(run_dir: str | Path, log: Log = print) -> SavedRun:
    """Read a run folder (runs/<name>/<backend>/<run-id>/): spec.json, best_weights.npz, preprocess.json."""
    directory = Path(run_dir)
    for name in (run_folder.SPEC, run_folder.WEIGHTS):
        if not (directory / name).is_file():
            raise DataError(f"{directory}: not a finished run folder ({name} is missing); give a folder "
                            "runs/<name>/<backend>/<run-id>/ written by a training run")
    experiment = Experiment.load(directory / run_folder.SPEC)
    weights = load_weights(directory / run_folder.WEIGHTS, experiment.network)
    preprocess = read_preprocess(directory, experiment.data, log)
    _check_fits(directory, experiment, preprocess)
    return SavedRun(directory, experiment, weights, preprocess)


def _check_fits(directory: Path, experiment: Experiment, preprocess: Preprocess) -> None:
    """preprocess.json must describe the network's data: as many class names as outputs, images the
    network takes (a file from elsewhere would otherwise end in an IndexError or nonsense)."""
    path = directory / run_folder.PREPROCESS
    outputs = tuple(experiment.network.output_shape)
    if outputs != (len(preprocess.classes),):
        raise DataError(f"{path}: names {len(preprocess.classes)} classes but the network gives "
                        f"{'x'.join(map(str, outputs))} outputs; delete it to recompute it from the run's data")
    want, have = tuple(experiment.network.input_shape), preprocess.image_shape
    if want != have and want != (math.prod(have),):
        raise DataError(f"{path}: says the images are {'x'.join(map(str, have))} but the network takes "
                        f"{list(want)}; delete it to recompute it from the run's data")


def trained_backend(directory: Path) -> Optional[str]:
    """The backend a run was trained on, from its env.json (validated), or None when it does not say."""
    try:
        return records.check(records.Env, parse_json_file(directory / run_folder.ENV), run_folder.ENV).backend
    except ValueError:  # no env.json, or a damaged one: the caller picks the reference backend
        return None


def read_preprocess(directory: Path, data: DataConfig, log: Log = print) -> Preprocess:
    """The run's preprocess.json, or (older runs) the same facts recomputed from its data config."""
    path = directory / run_folder.PREPROCESS
    if not path.exists() and not path.is_symlink():  # absent; anything else there is read (and refused if not JSON)
        log(f"{directory}: no {run_folder.PREPROCESS} (a run from an older netspec): "
            "recomputing the input scaling from its data config")
        dataset = load_dataset(data, progress=False)
        return Preprocess(list(dataset.classes), np.asarray(dataset.shift), np.asarray(dataset.scale),
                          tuple(dataset.train_x.shape[1:]))
    try:
        content = records.check(records.Preprocess, parse_json_file(path), run_folder.PREPROCESS)
    except ValueError as err:  # UnreadableJSON too
        raise DataError(f"{path}: unreadable ({str(err).removeprefix(run_folder.PREPROCESS + ': ')}); "
                        "delete it to recompute it from the run's data") from None
    return Preprocess(list(content.classes), np.asarray(content.shift, np.float64), np.asarray(content.scale, np.float64),
                      tuple(content.image_shape) if content.image_shape else IMAGE_SHAPE)


def _backend(backend: Backend | str) -> Backend:
    return load_backend(backend) if isinstance(backend, str) else backend


def compile_run(saved: SavedRun, backend: Backend | str, device: Optional[str] = None) -> Model:
    """The run's network with its best weights on `backend` (a name or a Backend object)."""
    # in the precision it trained in: a bf16 run's own test figures are bf16 ones
    return _backend(backend).compile(saved.experiment.network, saved.weights, device=device,
                                     precision=saved.experiment.train.precision)


def logits_of(model: Model, inputs: np.ndarray, batch_size: int, flip: bool = False) -> np.ndarray:
    """Eval-mode logits of normalized images (N, C, H, W) in batches: float64 (N, classes). flip: the
    mean of the logits of each image and its mirror image (the run's train.test_time_flip)."""
    x = shape_inputs(inputs, tuple(model.network.input_shape), "given")

    def forward(batch: np.ndarray) -> np.ndarray:
        logits = model.forward(batch, train=False)
        return (logits + model.forward(np.ascontiguousarray(batch[..., ::-1]), train=False)) / 2 if flip else logits

    parts = [forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, model.network.output_shape[0]))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# --- evaluate -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Eval-mode figures of a model on labelled images."""

    classes: list[str]
    loss: float
    """Mean cross-entropy."""
    accuracy: float
    per_class_accuracy: np.ndarray
    """Accuracy over the images of each true class (NaN for a class without images)."""
    confusion: np.ndarray
    """int64 (classes, classes): row = true class, column = predicted class."""
    details: dict[str, Any]
    """Where the figures come from: run, backend, data, split."""

    def to_json(self) -> dict[str, Any]:
        per_class = {c: (None if math.isnan(a) else float(a)) for c, a in zip(self.classes, self.per_class_accuracy)}
        return {**self.details, "images": int(self.confusion.sum()), "loss": self.loss, "accuracy": self.accuracy,
                "per_class_accuracy": per_class, "classes": self.classes, "confusion": self.confusion.tolist(),
                "confusion_rows": "true class", "confusion_columns": "predicted class"}

    def summary(self) -> str:
        """A few lines for a terminal: the totals and the accuracy of each class."""
        width = max(map(len, self.classes))
        rows = [f"  {c:<{width}}  {a:.4f}  ({int(n)} images)" for c, a, n
                in zip(self.classes, self.per_class_accuracy, self.confusion.sum(axis=1))]
        return "\n".join([f"loss {self.loss:.4f} acc {self.accuracy:.4f} on {int(self.confusion.sum())} images", *rows])


def evaluation_of(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                  details: Optional[dict[str, Any]] = None) -> Evaluation:
    """Loss, accuracy, per-class accuracy and confusion matrix of `logits` (N, K) against int `labels` (N,)."""
    if len(labels) == 0:
        raise DataError("no images to evaluate; check the data folder and the split")
    k = len(classes)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, logits.argmax(axis=1)), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / confusion.sum(axis=1)
    return Evaluation(list(classes), loss, float(np.trace(confusion) / len(labels)), per_class, confusion,
                      dict(details or {}))


def evaluate_run(run_dir: str | Path, backend: Backend | str, data_dir: Optional[str | Path] = None,
                 split: str = "test", out_dir: Optional[str | Path] = None, device: Optional[str] = None,
                 log: Log = print) -> tuple[Evaluation, Path]:
    """Evaluate a run's best weights on `backend` and write evaluation.json and confusion.png.

    Data: the run's own data config (`split` 'train', 'val' or 'test', as training split it), or the
    local copy `data_dir` (anything data.dir accepts: an image-folder tree train/<class>/*,
    test/<class>/*, cifar-10-batches-py, or a .tar.gz of either; `split` 'train' or 'test' = all of that
    folder), scaled with the run's own statistics. Outputs go to `out_dir`, default
    <run_dir>/evaluation/. Returns (evaluation, output folder).
    """
    if split not in SPLITS:
        raise SpecError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    backend = _backend(backend)
    saved = load_run(run_dir, log)
    images, labels, data_words = _labelled_images(saved, data_dir, split)
    model = compile_run(saved, backend, device)
    logits = logits_of(model, images, saved.experiment.train.eval_batch_size, saved.experiment.train.test_time_flip)
    details = {"run": str(saved.directory), "backend": backend.name, "device": model.device,
               "data": data_words, "split": split}
    evaluation = evaluation_of(logits, labels, saved.preprocess.classes, details)
    # --out is the user's; the default is a name inside a run folder that may come from elsewhere: never a link.
    folder = Path(out_dir) if out_dir is not None else safe_output_dir(saved.directory, EVALUATION_DIR)
    write_evaluation(evaluation, folder, f"{saved.experiment.name}: {data_words}, {split}")
    return evaluation, folder


def _labelled_images(saved: SavedRun, data_dir: Optional[str | Path], split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Normalized images, labels in the run's class order, and the data in words."""
    if data_dir is None:
        # The training loader itself: the same split and the same scaling as the run's metrics.
        data = load_dataset(saved.experiment.data, progress=False)
        return getattr(data, f"{split}_x"), getattr(data, f"{split}_y"), data.source
    if split == "val":
        raise SpecError("split 'val' exists only in the run's own data; with a data folder use 'train' or 'test'")
    shape = saved.preprocess.image_shape  # the copy is decoded to the run's images (a CIFAR-10 copy: as it is)
    asked = {} if shape == IMAGE_SHAPE else {"channels": shape[0], "image_size": shape[1:]}
    raw = load_raw(DataConfig(source="cifar10", dir=str(data_dir), **asked), progress=False)
    x, y = (raw.train_x, raw.train_y) if split == "train" else (raw.test_x, raw.test_y)
    return saved.preprocess.apply(x), _relabel(y, raw.classes, saved.preprocess.classes, data_dir), raw.origin


def _relabel(labels: np.ndarray, data_classes: Sequence[str], run_classes: Sequence[str], where: Any) -> np.ndarray:
    """Labels of a data copy as indices of the run's classes, matched by name (a folder tree may hold
    a subset of the classes, or another order)."""
    index = {name: i for i, name in enumerate(run_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        raise DataError(f"{where}: classes {unknown} are not classes of the run ({', '.join(run_classes)}); "
                        "name the class folders as the run's classes")
    return np.array([index[c] for c in data_classes], np.int64)[labels]


def write_evaluation(evaluation: Evaluation, folder: Path, title: str) -> None:
    """evaluation.json and confusion.png in `folder` (created)."""
    safe_output_dir(folder)
    run_folder.write_json_atomic(folder / EVALUATION_JSON, evaluation.to_json())
    plot_confusion(evaluation.confusion, evaluation.classes, folder / CONFUSION_PNG,
                   f"{title}: accuracy {evaluation.accuracy:.4f}")


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """The confusion matrix as a PNG: counts in the cells, rows = true class, columns = predicted."""
    save_figure(confusion_figure(confusion, classes, title), path)


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], title: str) -> Any:
    """The matplotlib figure of plot_confusion."""
    plt = pyplot()
    k = len(classes)
    # Past CELL_TEXT_UP_TO classes the cells are too small for counts: a heat map with a colour bar, and
    # the class names in a smaller font (100 classes: a 16-inch figure, every name still there).
    size = min(max(4.8, 0.55 * k + 2.2), MAX_FIGURE_INCHES)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    shown = ax.imshow(confusion, cmap="Blues")
    font = 9 if k <= CELL_TEXT_UP_TO else max(3.0, min(7.0, 600 / k / 1.5))
    ax.set_xticks(range(k), classes, rotation=90 if k > CELL_TEXT_UP_TO else 45,
                  ha="center" if k > CELL_TEXT_UP_TO else "right", fontsize=font)
    ax.set_yticks(range(k), classes, fontsize=font)
    if k > CELL_TEXT_UP_TO:
        fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02, label="images")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    # Centred on the figure (not the axes, which the labels push aside) and wrapped to its width: a
    # longer title would be cut at both edges.
    fig.suptitle(textwrap.fill(title, width=int(0.9 * size * 72 / (9 * 0.6))), fontsize=9)
    threshold = confusion.max() / 2 if confusion.size else 0
    for (row, col), count in (np.ndenumerate(confusion) if k <= CELL_TEXT_UP_TO else ()):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > threshold else "black")  # readable on dark cells too
    fig.tight_layout()
    return fig


# --- predict ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """The classes of one image file, most probable first."""

    path: str
    top: list[tuple[str, float]]
    """(class name, softmax probability), best first."""
    probabilities: np.ndarray
    """Softmax probability of every class, in the run's class order."""

    notes: tuple[str, ...] = ()
    """What was done to the file to make it the run's input ('converted from grayscale to RGB')."""

    def line(self) -> str:
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.path}: " + ", ".join(f"{name} {p:.3f}" for name, p in self.top) + notes


def predict(run_dir: str | Path, backend: Backend | str, image_paths: Sequence[str | Path], top: int = 3,
            device: Optional[str] = None, log: Log = print, resize: bool = False) -> list[Prediction]:
    """The `top` classes of each image file (PNG or JPEG of the size the run was trained on: 32x32 for
    CIFAR-10). Other sizes are refused unless `resize` (the whole image scaled, bilinear, aspect not kept);
    grayscale, palette and RGBA images are converted to RGB for an RGB run (a colour image is refused by
    a grayscale one), 16-bit grey is scaled to 8 bits, and each prediction says what was done."""
    if top < 1:
        raise SpecError(f"top={top}: ask for at least 1 class")
    saved = load_run(run_dir, log)
    shape = saved.preprocess.image_shape
    images = [read_image(p, resize, shape) for p in image_paths]
    pixels = np.stack([i.pixels for i in images]) if images else np.zeros((0, *shape), np.uint8)
    model = compile_run(saved, backend, device)
    train = saved.experiment.train
    probabilities = softmax(logits_of(model, saved.preprocess.apply(pixels), train.eval_batch_size, train.test_time_flip))
    classes = saved.preprocess.classes
    return [Prediction(str(path), [(classes[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:top]], row,
                       image.notes) for path, row, image in zip(image_paths, probabilities, images)]


@dataclass(frozen=True)
class InputImage:
    pixels: np.ndarray
    """uint8 (C, H, W): the run's image shape."""
    notes: tuple[str, ...]
    """What was done to the file to make it that."""


_MODE_WORDS = {"L": "grayscale (its gray in all three channels)", "I;16": "16-bit grayscale", "I": "32-bit grayscale",
               "LA": "grayscale with alpha (alpha dropped)", "RGBA": "RGBA (alpha dropped)",
               "P": "a palette", "CMYK": "CMYK", "1": "black and white"}


def read_image(path: str | Path, resize: bool = False, shape: Sequence[int] = IMAGE_SHAPE) -> InputImage:
    """One image file as the run's input, `shape` (C, H, W); a one-line DataError naming the file if
    missing, unreadable, 16 bits per colour channel, colour for a grayscale run, or (without `resize`)
    not H x W."""
    from PIL import Image

    path = Path(path)
    channels, height, width = shape
    limit = MAX_RESIZED_BYTES if resize or height * width > 32 * 32 else MAX_IMAGE_BYTES
    try:
        with open_regular(path) as f:  # a FIFO or a folder is refused without blocking
            # A 32x32 PNG or JPEG is a few KB: a larger file is not read whole before its header says so.
            content = f.read(limit + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err.strerror or err})") from None
    if len(content) > limit:
        raise DataError(f"{path}: larger than {limit:,} bytes, " + ("too large to resize" if resize else
                        f"not a {width}x{height} image; predict takes {width}x{height} PNG or JPEG files (or add --resize)"))
    notes = []
    with open_image(content, str(path), "predict") as image:
        if image.size != (width, height) and not resize:
            raise DataError(f"{path}: the image is {image.width}x{image.height}; the network takes {width}x{height} "
                            f"images: resize it, or add --resize (the whole image scaled to {width}x{height})")
        if channels == 1:
            converted = grey(image, str(path), "predict")
        else:
            check_colour_depth(image, str(path), "predict")
            converted = to_rgb(image, str(path), "predict")
            if image.mode != "RGB":
                notes.append(f"converted from {_MODE_WORDS.get(image.mode, image.mode)} to RGB")
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            notes.append(SCALED_16_BIT)
        if converted.size != (width, height):
            notes.append(f"resized from {converted.width}x{converted.height} to {width}x{height}")
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(converted)
    array = array[:, :, None] if array.ndim == 2 else array
    return InputImage(np.ascontiguousarray(array.transpose(2, 0, 1)), tuple(notes))
