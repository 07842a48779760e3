"""TFDS image sets by name, through tensorflow-datasets' own mock (`tfds.testing.mock_data`,
MockPolicy.USE_CODE: the sets' features from TFDS's code, random examples, no download): a grayscale
set (mnist, 1x28x28) and a 100-class set (cifar100), loaded, cached, trained on both backends from the
shipped specs, evaluated with a 100-class confusion matrix; and the one-line refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="the [tfds] extra (tensorflow-datasets) is not installed")

import netspec as ns  # noqa: E402
from netspec.data import load_dataset  # noqa: E402
from netspec.data.identity import data_identity  # noqa: E402
from netspec.data.sources import tfds as tfds_source  # noqa: E402
from netspec.errors import SetupError, SpecError  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
N = 24
"""Examples per split the mock makes (its test split holds the same examples as train)."""


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(tfds_source, "tfds_blocker", lambda manual_dir, host=None: None)  # preparing is mocked
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    with tfds.testing.mock_data(num_examples=N, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def mock_examples(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The mock's own train examples, read through TFDS directly (the reference the loader must match)."""
    train = tfds.data_source(name, split="train")
    examples = [train[i] for i in range(len(train))]
    if "id" in examples[0]:
        examples.sort(key=lambda ex: ex["id"])
    return np.stack([ex["image"].transpose(2, 0, 1) for ex in examples]), np.array([ex["label"] for ex in examples])


def unscaled(d: ns.data.Dataset) -> np.ndarray:
    x = np.concatenate([d.train_x, d.val_x])
    return np.rint(x * d.scale.reshape(1, -1, 1, 1) + d.shift.reshape(1, -1, 1, 1)).astype(np.uint8)


@pytest.mark.parametrize("name, shape, classes", [("mnist", (1, 28, 28), 10), ("cifar100", (3, 32, 32), 100),
                                                  ("fashion_mnist", (1, 28, 28), 10)])
def test_a_set_by_name_is_its_own_images_shape_and_classes(name: str, shape: tuple[int, ...], classes: int,
                                                            mocked: None, tmp_path: Path) -> None:
    config = ns.DataConfig(source=name, normalize="per_channel", val_size=4)
    d = load_dataset(config, progress=False)
    expected_x, expected_y = mock_examples(name)
    assert d.train_x.shape == (N - 4, *shape) and len(d.classes) == classes
    assert np.array_equal(unscaled(d), expected_x) and np.array_equal(np.concatenate([d.train_y, d.val_y]), expected_y)
    assert len(d.shift) == shape[0]  # per_channel statistics for any channel count
    if name == "fashion_mnist":
        assert d.classes[:2] == ["T-shirt/top", "Trouser"]  # names from the set's info
    assert len(list((tmp_path / "cache").glob(f"tfds-{name}-*.npz"))) == 1
    assert data_identity(config).endswith(f" {name} train,test")


def test_report_scaling_is_refused_for_another_set(mocked: None) -> None:
    with pytest.raises(SpecError) as err:
        load_dataset(ns.DataConfig(source="cifar100", val_size=4), progress=False)
    assert "data.normalize 'report' is CIFAR-10's" in str(err.value) and "set data.normalize to 'per_channel'" in str(err.value)


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_the_shipped_mnist_mlp_trains_at_tiny_size(backend_name: str, mocked: None, tmp_path: Path) -> None:
    from netspec.protocol.backend import load_backend
    from netspec.runs.training_run import run_experiment

    experiment = ns.Experiment.load(SPECS / "mnist_mlp.json", [
        "data.val_size=4", "train.epochs=1", "train.batch_size=10", "network.layers.0.out_features=16"])
    metrics, folder = run_experiment(experiment, load_backend(backend_name), tmp_path / "runs", device="cpu",
                                     log=lambda line: None, progress=False, table=False)
    assert (folder / "preprocess.json").is_file() and 0.0 <= metrics["test_acc"] <= 1.0


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_the_shipped_cifar100_resnet9_trains_and_evaluates(backend_name: str, mocked: None, tmp_path: Path) -> None:
    from netspec.deploy.inference import evaluate_run
    from netspec.protocol.backend import load_backend
    from netspec.runs.training_run import run_experiment

    narrow = [f"network.layers.{i}.out_channels=4" for i, layer in
              enumerate(ns.Experiment.load(SPECS / "cifar100_resnet9.json").network.layers) if hasattr(layer, "out_channels")]
    experiment = ns.Experiment.load(SPECS / "cifar100_resnet9.json", [
        *narrow, "train.epochs=1", "train.batch_size=8", "train.schedule.knots=[[0,0],[0.5,1],[1,0]]"])
    assert experiment.network.output_shape == (100,)
    _, folder = run_experiment(experiment, load_backend(backend_name), tmp_path / "runs", device="cpu",
                               log=lambda line: None, progress=False, table=False)
    evaluation, out = evaluate_run(folder, backend_name, device="cpu", log=lambda line: None)
    assert evaluation.confusion.shape == (100, 100) and int(evaluation.confusion.sum()) == N
    assert (out / "confusion.png").stat().st_size > 10_000 and len(evaluation.classes) == 100


def test_a_name_that_is_not_an_image_set_is_one_line(mocked: None) -> None:
    with pytest.raises(SpecError) as err:
        load_dataset(ns.DataConfig(source="glue/cola", normalize="per_channel"), progress=False)
    assert "data.source 'glue/cola': not an image-classification set" in str(err.value)
    with pytest.raises(SpecError, match="data.source 'no_such_set_here': not a tensorflow-datasets set"):
        load_dataset(ns.DataConfig(source="no_such_set_here", normalize="per_channel"), progress=False)


def test_a_set_neither_prepared_nor_downloadable_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tfds_source, "_reachable", lambda host, timeout_s=5.0: False)
    monkeypatch.setattr(tfds_source.importlib.util, "find_spec", lambda name: object())  # as if TensorFlow were here
    with pytest.raises(SetupError) as err:
        load_dataset(ns.DataConfig(source="mnist", normalize="per_channel"), cache_dir=tmp_path / "cache", progress=False)
    message = str(err.value)
    assert message.startswith("tensorflow-datasets 'mnist' is neither prepared nor downloadable (no internet: cannot "
                              "reach storage.googleapis.com)") and "\n" not in message
    assert not (tmp_path / "cache" / "tfds").exists() and not list((tmp_path / "cache").glob("*.npz"))


def test_a_bad_source_name_is_refused_at_load() -> None:
    with pytest.raises(Exception, match="is not a data source"):
        ns.DataConfig(source="../../etc")


def test_a_label_outside_the_sets_classes_is_one_line_and_not_cached(mocked: None, monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    real = tfds_source._tfds_arrays

    def one_bad_label(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        x, y = real(*args, **kwargs)
        y = y.copy()
        y[3] = 10  # mnist has 10 classes: 0..9
        return x, y

    monkeypatch.setattr(tfds_source, "_tfds_arrays", one_bad_label)
    with pytest.raises(ns.DataError) as err:
        load_dataset(ns.DataConfig(source="mnist", normalize="per_channel"), progress=False)
    assert "tensorflow-datasets mnist train: label 10 of example 3 is outside 0..9 (10 classes in its info)" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npz"))
