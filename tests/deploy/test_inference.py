"""evaluate_run and predict on finished runs of each backend, on either backend."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("jax")

from netspec.protocol.backend import load_backend  # noqa: E402
from netspec.data import load_dataset, load_raw  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402
from netspec.deploy.inference import evaluate_run, load_run, predict, softmax  # noqa: E402
from tests.trained_runs import BACKENDS, DATA, trained_run  # noqa: E402

quiet = lambda line: None  # noqa: E731


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {backend: trained_run(tmp_path_factory, backend) for backend in BACKENDS}


@pytest.fixture(scope="module")
def raw_test_images() -> np.ndarray:
    """The synthetic test split as uint8 NCHW pixels, before scaling."""
    return load_raw(DATA).test_x[: DATA.test_size]


def save_png(pixels_chw: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels_chw.transpose(1, 2, 0))).save(path)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_reproduces_the_final_test_figures(runs: dict[str, Path], backend: str) -> None:
    # best_weights.npz is written at each new best validation epoch, the very epochs the test split is
    # evaluated: the best weights are always those of the final test.
    run = runs[backend]
    evaluation, folder = evaluate_run(run, backend, device="cpu", log=quiet)
    metrics = json.loads((run / "metrics.json").read_text())
    assert abs(evaluation.loss - metrics["test_loss"]) < 1e-6
    assert abs(evaluation.accuracy - metrics["test_acc"]) < 1e-6
    assert folder == run / "evaluation"
    written = json.loads((folder / "evaluation.json").read_text())
    assert written["accuracy"] == evaluation.accuracy and written["split"] == "test" and written["backend"] == backend
    assert (folder / "confusion.png").stat().st_size > 10_000  # a figure, not an empty canvas


def test_confusion_matrix_and_per_class_accuracy_agree(runs: dict[str, Path]) -> None:
    evaluation, _ = evaluate_run(runs["torch"], "torch", split="val", device="cpu", log=quiet)
    confusion = evaluation.confusion
    assert confusion.dtype == np.int64 and confusion.shape == (10, 10)
    assert confusion.sum() == DATA.val_size
    np.testing.assert_allclose(evaluation.per_class_accuracy, np.diag(confusion) / confusion.sum(axis=1))
    assert evaluation.accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    labels = load_dataset(DATA, progress=False).val_y
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=10))  # rows: true class


@pytest.mark.parametrize("trained_on", BACKENDS)
def test_a_run_evaluated_on_the_other_backend_gives_the_same_figures(runs: dict[str, Path], trained_on: str,
                                                                     tmp_path: Path) -> None:
    other = next(b for b in BACKENDS if b != trained_on)
    own, _ = evaluate_run(runs[trained_on], trained_on, device="cpu", out_dir=tmp_path / "own", log=quiet)
    cross, _ = evaluate_run(runs[trained_on], other, device="cpu", out_dir=tmp_path / "cross", log=quiet)
    assert cross.accuracy == own.accuracy
    np.testing.assert_array_equal(cross.confusion, own.confusion)
    assert cross.loss == pytest.approx(own.loss, abs=1e-5)


def test_an_image_folder_is_scaled_with_the_runs_statistics(runs: dict[str, Path], raw_test_images: np.ndarray,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder tree of the run's own test images (PNG: lossless) gives the run's own test figures."""
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))  # the loader caches decoded folders
    labels = load_raw(DATA).test_y[: len(raw_test_images)]
    classes = load_run(runs["torch"], quiet).preprocess.classes
    for i, (pixels, label) in enumerate(zip(raw_test_images, labels)):
        save_png(pixels, tmp_path / "tree" / "test" / classes[label] / f"{i:04d}.png")
        save_png(pixels, tmp_path / "tree" / "train" / classes[label] / "0.png")  # the loader wants train/ too
    own, _ = evaluate_run(runs["torch"], "torch", device="cpu", out_dir=tmp_path / "own", log=quiet)
    folder, out = evaluate_run(runs["torch"], "torch", data_dir=tmp_path / "tree", device="cpu",
                               out_dir=tmp_path / "out", log=quiet)
    assert folder.accuracy == own.accuracy and folder.loss == pytest.approx(own.loss, abs=1e-9)
    assert (out / "evaluation.json").is_file() and not (runs["torch"] / "evaluation" / "tree").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_gives_probabilities_and_the_backends_argmax(runs: dict[str, Path], backend: str,
                                                             raw_test_images: np.ndarray, tmp_path: Path) -> None:
    run = runs["jax" if backend == "torch" else "torch"]  # a run of the other backend, too
    paths = [save_png(raw_test_images[i], tmp_path / f"img{i}.png") for i in range(5)]
    predictions = predict(run, backend, paths, top=3, device="cpu", log=quiet)
    saved = load_run(run, quiet)
    # The training loader's own scaled images: predict must scale files exactly as training did.
    logits = load_backend(backend).compile(saved.experiment.network, saved.weights, device="cpu").forward(
        load_dataset(DATA, progress=False).test_x[:5], train=False)
    for prediction, row in zip(predictions, logits):
        assert len(prediction.top) == 3 and prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-9)
        assert prediction.top[0][0] == saved.preprocess.classes[int(np.argmax(row))]
        np.testing.assert_allclose(prediction.probabilities, softmax(row[None].astype(np.float64))[0], atol=1e-6)
        assert [p for _, p in prediction.top] == sorted((p for _, p in prediction.top), reverse=True)
    assert predictions[0].line().startswith(f"{paths[0]}: class_")


def test_an_older_run_without_preprocess_json_gets_it_recomputed(runs: dict[str, Path], tmp_path: Path) -> None:
    old = shutil.copytree(runs["torch"], tmp_path / "old")
    (old / "preprocess.json").unlink()
    notes: list[str] = []
    recomputed = load_run(old, notes.append).preprocess
    recorded = load_run(runs["torch"], quiet).preprocess
    assert len(notes) == 1 and "preprocess.json" in notes[0]
    assert recomputed.classes == recorded.classes
    np.testing.assert_array_equal(recomputed.shift, recorded.shift)
    np.testing.assert_array_equal(recomputed.scale, recorded.scale)


def test_bad_images_and_folders_give_one_line_errors(runs: dict[str, Path], raw_test_images: np.ndarray,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 48)).save(big)
    cases = {big: "64x48", tmp_path / "missing.jpg": "no such image file"}
    for path, words in cases.items():
        with pytest.raises(NetspecError) as err:
            predict(runs["torch"], "torch", [path], device="cpu", log=quiet)
        assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    for part in ("train", "test"):
        save_png(raw_test_images[0], tmp_path / "zoo" / part / "zebra" / "0.png")
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(NetspecError, match=r"classes \['zebra'\] are not classes of the run"):
        evaluate_run(runs["torch"], "torch", data_dir=tmp_path / "zoo", device="cpu", log=quiet)
    with pytest.raises(NetspecError, match="not a finished run folder"):
        evaluate_run(tmp_path, "torch", log=quiet)
    with pytest.raises(NetspecError, match="unknown split"):
        evaluate_run(runs["torch"], "torch", split="validation", log=quiet)
