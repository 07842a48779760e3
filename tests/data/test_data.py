"""netspec.data on small data the tests make: synthetic, python batches, image-folder trees, archives,
the cache, splits, scalings, TFDS through tfds.testing.mock_data, and the one-line errors."""
from __future__ import annotations

import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec import DataConfig, SpecError
from netspec.data import CIFAR10_CLASSES, Dataset, load_dataset
from netspec.data.cache import cache_root
from netspec.data.sources import image_tree
from netspec.data.sources import tfds as tfds_source
from netspec.data.sources.python_batches import BATCH_FILES
from netspec.data.sources.synthetic import synthetic
from netspec.data.splits import split_indices
from netspec.errors import DataError, SetupError

CLASSES = ["cat", "airplane", "bird"]  # written unsorted: the loader must sort them
PER_CLASS = {"train": 4, "test": 2}


def pixels(seed: int, n: int) -> np.ndarray:
    """n random uint8 images, NCHW."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_tree(root: Path, fmt: str = "PNG") -> dict[str, dict[str, np.ndarray]]:
    """train/<class>/NN.png and test/<class>/NN.png; returns the pixels by split and class."""
    written: dict[str, dict[str, np.ndarray]] = {}
    for s, (part, n) in enumerate(PER_CLASS.items()):
        written[part] = {}
        for c, name in enumerate(CLASSES):
            images = pixels(100 * s + c, n)
            folder = root / part / name
            folder.mkdir(parents=True)
            for i, image in enumerate(images):
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:02d}.{fmt.lower()}", fmt)
            written[part][name] = images
    (root / "train" / "README.txt").write_text("not an image")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"junk")
    return written


def interleaved(by_class: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The order the loader promises: rank within class, then class in sorted order."""
    names = sorted(by_class)
    n = len(next(iter(by_class.values())))
    x = np.stack([by_class[name][i] for i in range(n) for name in names])
    y = np.array([label for _ in range(n) for label in range(len(names))])
    return x, y


def write_batches(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A cifar-10-batches-py copy in the real format: 5 x 40 training images, 30 test images."""
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate([*BATCH_FILES, "test_batch"]):
        x, y = pixels(i, 40 if i < 5 else 30), np.random.default_rng(50 + i).integers(0, 10, 40 if i < 5 else 30)
        batch = {b"batch_label": name.encode(), b"labels": y.tolist(), b"data": x.reshape(len(x), -1),
                 b"filenames": [b"f.png"] * len(x)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        xs.append(x), ys.append(y)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in CIFAR10_CLASSES]}))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def make_tar(source: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return target


def unscale(x: np.ndarray) -> np.ndarray:
    """Invert the report's scaling: the exact uint8 pixels back."""
    return np.rint(x * 255 + 128).astype(np.uint8)


def load(tmp_path: Path, **fields) -> Dataset:
    return load_dataset(DataConfig(**fields), cache_dir=tmp_path / "cache", progress=False)


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_shapes_dtypes_and_pixel_range(tmp_path: Path) -> None:
    d = load(tmp_path, source="synthetic", train_size=600, test_size=200, val_size=100)
    assert d.train_x.shape == (500, 3, 32, 32) and d.val_x.shape == (100, 3, 32, 32) and d.test_x.shape == (200, 3, 32, 32)
    for x, y in [(d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)]:
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.c_contiguous
        assert set(np.unique(y)) <= set(range(10))
    raw = (d.train_x * 255 + 128).round()
    assert raw.min() >= 0 and raw.max() <= 255 and np.allclose(raw, np.rint(raw), atol=1e-3)
    assert len(d.classes) == 10 and "synthetic" in d.source


def test_synthetic_is_seeded_and_prefix_stable() -> None:
    a, b, c = synthetic(300, 50, seed=1), synthetic(300, 50, seed=1), synthetic(2000, 80, seed=1)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)
    # A smaller set is the start of a larger one, and the test set does not depend on the train size.
    assert np.array_equal(c.train_x[:300], a.train_x) and np.array_equal(c.test_x[:50], a.test_x)
    assert not np.array_equal(synthetic(300, 50, seed=2).train_x, a.train_x)


def test_synthetic_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    d = load(tmp_path, source="synthetic", train_size=2000, test_size=1000, val_size=0)
    flat = d.train_x.reshape(len(d.train_x), -1)
    means = np.stack([flat[d.train_y == c].mean(axis=0) for c in range(10)])
    test = d.test_x.reshape(len(d.test_x), -1)
    distances = (test**2).sum(1, keepdims=True) - 2 * test @ means.T + (means**2).sum(1)
    accuracy = (distances.argmin(axis=1) == d.test_y).mean()
    assert 0.5 < accuracy < 0.98  # chance is 0.1; a nearest-class-mean classifier is far above it


# --- splits and scaling ----------------------------------------------------------------------------


def test_tail_split_keeps_source_order(tmp_path: Path) -> None:
    raw = synthetic(600, 100, seed=3)
    d = load(tmp_path, source="synthetic", train_size=600, test_size=100, val_size=150, seed=3)
    assert np.array_equal(unscale(d.train_x), raw.train_x[:450]) and np.array_equal(d.train_y, raw.train_y[:450])
    assert np.array_equal(unscale(d.val_x), raw.train_x[450:]) and np.array_equal(d.val_y, raw.train_y[450:])
    assert np.array_equal(unscale(d.test_x), raw.test_x)


def test_stratified_split_is_balanced_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(10), 60)[np.random.default_rng(0).permutation(600)]
    fit, val = split_indices(labels, 100, "stratified", seed=7)
    assert np.array_equal(np.bincount(labels[val], minlength=10), np.full(10, 10))
    assert np.array_equal(np.sort(np.concatenate([fit, val])), np.arange(600))
    assert np.all(np.diff(fit) > 0) and np.all(np.diff(val) > 0)  # each part stays in source order
    again, other = split_indices(labels, 100, "stratified", seed=7)[1], split_indices(labels, 100, "stratified", seed=8)[1]
    assert np.array_equal(val, again) and not np.array_equal(val, other)


def test_stratified_split_rounds_to_the_requested_size() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    _, val = split_indices(labels, 11, "stratified", seed=0)
    assert len(val) == 11 and list(np.bincount(labels[val])) == [6, 3, 2]


def test_a_split_that_leaves_no_training_images_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="val_size=600 leaves no training images"):
        load(tmp_path, source="synthetic", train_size=600, test_size=10, val_size=600)


def test_report_normalization_is_x_minus_128_over_255(tmp_path: Path) -> None:
    raw = synthetic(200, 20, seed=0)
    d = load(tmp_path, source="synthetic", train_size=200, test_size=20, val_size=50, seed=0)
    assert np.array_equal(d.train_x, (raw.train_x[:150].astype(np.float32) - 128) / 255)


def test_per_channel_normalization_uses_the_training_split_only(tmp_path: Path) -> None:
    raw = synthetic(400, 50, seed=0)
    d = load(tmp_path, source="synthetic", train_size=400, test_size=50, val_size=100, seed=0, normalize="per_channel")
    fit = raw.train_x[:300].astype(np.float64)
    mean, std = fit.mean(axis=(0, 2, 3)), fit.std(axis=(0, 2, 3))
    assert np.allclose(d.train_x.mean(axis=(0, 2, 3)), 0, atol=1e-4) and np.allclose(d.train_x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    expected_val = (raw.train_x[300:] - mean[None, :, None, None]) / std[None, :, None, None]
    assert np.allclose(d.val_x, expected_val, atol=1e-4)
    assert "mean [" in d.source


# --- python batches --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "parent", "archive"])
def test_python_batches(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    train_x, train_y, test_x, test_y = write_batches(folder)
    path = {"folder": folder, "parent": tmp_path, "archive": make_tar(folder, tmp_path / "cifar-10-python.tar.gz")}[where]
    d = load(tmp_path, dir=str(path), val_size=50)
    assert np.array_equal(unscale(d.train_x), train_x[:150]) and np.array_equal(d.train_y, train_y[:150])
    assert np.array_equal(unscale(d.val_x), train_x[150:]) and np.array_equal(d.val_y, train_y[150:])
    assert np.array_equal(unscale(d.test_x), test_x) and np.array_equal(d.test_y, test_y)
    assert d.classes == CIFAR10_CLASSES and "python batches" in d.source


def test_caps_take_the_first_images_in_source_order(tmp_path: Path) -> None:
    train_x, _, test_x, _ = write_batches(tmp_path / "cifar-10-batches-py")
    d = load(tmp_path, dir=str(tmp_path), train_size=120, test_size=7, val_size=20)
    assert np.array_equal(unscale(d.val_x), train_x[100:120]) and np.array_equal(unscale(d.test_x), test_x[:7])


def test_a_missing_batch_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        load(tmp_path, dir=str(folder))


# --- image-folder trees and archives ---------------------------------------------------------------


def check_tree(d: Dataset, written: dict[str, dict[str, np.ndarray]], exact: bool = True) -> None:
    train_x, train_y = interleaved(written["train"])
    test_x, test_y = interleaved(written["test"])
    assert d.classes == sorted(CLASSES)
    assert np.array_equal(np.concatenate([d.train_y, d.val_y]), train_y) and np.array_equal(d.test_y, test_y)
    got = np.concatenate([unscale(d.train_x), unscale(d.val_x)])
    if exact:  # PNG is lossless
        assert np.array_equal(got, train_x) and np.array_equal(unscale(d.test_x), test_x)


def test_image_folder_tree_is_sorted_and_interleaved(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "tree")
    d = load(tmp_path, dir=str(tmp_path / "tree"), val_size=3)
    check_tree(d, written)
    # The tail of an interleaved tree holds the last file of every class, not one class.
    assert sorted(d.val_y.tolist()) == [0, 1, 2]


def test_jpeg_tree_in_a_parent_folder(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "parent" / "cifar10-jpeg", fmt="JPEG")
    d = load(tmp_path, dir=str(tmp_path / "parent"), val_size=3)
    check_tree(d, written, exact=False)
    assert d.train_x.shape == (9, 3, 32, 32)


def test_tar_of_a_tree_is_read_once_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_tree(tmp_path / "tree")
    archive = make_tar(tmp_path / "tree", tmp_path / "tree.tar.gz")
    first = load(tmp_path, dir=str(archive), val_size=3, split="stratified")
    check_tree(load(tmp_path, dir=str(archive), val_size=0), written)
    assert list((tmp_path / "cache").glob("*.npz")) and not list((tmp_path / "cache").glob("*tmp"))

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached load decoded or opened the archive again")

    monkeypatch.setattr(image_tree, "decode_image", fail)
    monkeypatch.setattr(tarfile, "open", fail)
    again = load(tmp_path, dir=str(archive), val_size=3, split="stratified")
    assert np.array_equal(again.train_x, first.train_x) and again.source == first.source


def test_folder_cache_notices_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path / "tree")
    load(tmp_path, dir=str(tmp_path / "tree"), val_size=0)
    calls = []
    decode = image_tree.decode_image
    monkeypatch.setattr(image_tree, "decode_image", lambda data, name, *shape: calls.append(name) or decode(data, name, *shape))
    load(tmp_path, dir=str(tmp_path / "tree"), val_size=0)
    assert calls == []  # unchanged: served from the cache
    changed = tmp_path / "tree" / "test" / "airplane" / "00.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed)
    d = load(tmp_path, dir=str(tmp_path / "tree"), val_size=0)
    assert calls and unscale(d.test_x)[0].max() == 0  # decoded again, with the new file (first of class 0)


def test_wrong_image_size_and_missing_folders_are_data_errors(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "tree" / "train" / "cat" / "99.png")
    with pytest.raises(DataError, match="99.png is 28x28"):
        load(tmp_path, dir=str(tmp_path / "tree"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 in"):
        load(tmp_path, dir=str(tmp_path / "empty"))
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path, dir=str(tmp_path / "nowhere"))
    with pytest.raises(SpecError, match="data.source is 'synthetic'"):  # two config fields that conflict
        load(tmp_path, source="synthetic", dir=str(tmp_path / "tree"))


def test_cache_dir_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("NETSPEC_CACHE")
    assert cache_root() == Path.home() / ".cache" / "netspec"


# --- tensorflow-datasets ---------------------------------------------------------------------------


def test_tfds_through_mock_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds_source, "tfds_blocker", lambda manual_dir: None)  # preparing is mocked: no TF, no network
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        d = load(tmp_path, val_size=4)
        train = tfds.data_source("cifar10", split="train")
        examples = sorted((train[i] for i in range(len(train))), key=lambda ex: ex["id"])
    expected_x = np.stack([ex["image"].transpose(2, 0, 1) for ex in examples])
    expected_y = np.array([ex["label"] for ex in examples])
    # Ordered by id, as the batch files; mock_data gives the test split the same examples.
    assert np.array_equal(unscale(np.concatenate([d.train_x, d.val_x])), expected_x)
    assert np.array_equal(np.concatenate([d.train_y, d.val_y]), expected_y)
    assert np.array_equal(unscale(d.test_x), expected_x) and d.classes == CIFAR10_CLASSES
    assert d.train_x.shape == (8, 3, 32, 32) and "tensorflow-datasets" in d.source
    assert len(list((tmp_path / "cache").glob("tfds-*.npz"))) == 1  # later starts need no TFDS at all


def assert_one_line_with_the_ways_out(err: pytest.ExceptionInfo[SetupError], tfds_installed: bool) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert "--data-dir PATH (data.dir): the cifar-10-batches-py folder, an image-folder tree" in message
    assert "or a .tar.gz of either (cifar-10-python.tar.gz" in message
    # Advice to install what the same command just installed is no advice.
    assert ("pip install 'netspec[tfds]'" in message) is not tfds_installed


def test_missing_tfds_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import` now raises ImportError
    with pytest.raises(SetupError) as err:
        load(tmp_path)
    assert_one_line_with_the_ways_out(err, tfds_installed=False)


def test_tfds_that_cannot_prepare_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds_source, "tfds_blocker", lambda manual_dir: "no internet: cannot reach www.cs.toronto.edu")
    imported_before = "tensorflow_datasets" in sys.modules
    with pytest.raises(SetupError) as err:
        load(tmp_path)
    assert_one_line_with_the_ways_out(err, tfds_installed=True)
    assert "no internet" in str(err.value) and "cifar-10-binary.tar.gz" in str(err.value)
    assert ("tensorflow_datasets" in sys.modules) == imported_before  # refused before TFDS's noisy import
    assert not (tmp_path / "cache" / "tfds").exists()  # nothing temporary left behind


def test_a_failed_first_preparation_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds_source, "tfds_blocker", lambda manual_dir: None)

    def fail(builder: object, config: object, manual_dir: Path) -> None:
        (manual_dir / "partial").mkdir(parents=True)  # as TFDS does before its download fails
        raise tfds_source._cannot_prepare("connection reset", manual_dir)

    monkeypatch.setattr(tfds_source, "_prepare_tfds", fail)
    with pytest.raises(SetupError, match="connection reset"):
        load(tmp_path)
    assert not (tmp_path / "cache" / "tfds").exists()
