"""Image-folder trees of any size, channel count and class count: data.image_size and
data.channels, the one resize rule, the cache and run identity, and every bad file as one line with no
cache entry left behind."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import netspec as ns
from netspec import DataConfig
from netspec.data import load_dataset
from netspec.errors import DataError, SpecError
from netspec.runs.identity import run_identity

COLOURS = {"apple": (200, 30, 30), "grass": (30, 200, 30), "sky": (30, 30, 200)}
"""A class per colour: a uniform image stays that colour exactly under any resize (the reference)."""


def photo(colour: tuple[int, int, int], seed: int, width: int = 20, height: int = 24) -> np.ndarray:
    """A uniform `width` x `height` image of `colour` (`seed` names the file only)."""
    x = np.empty((height, width, 3), np.uint8)
    x[:] = colour
    return x


def write_photos(root: Path, per_class: tuple[int, int] = (4, 2), **size: int) -> Path:
    for part, n in zip(("train", "test"), per_class):
        for name, colour in COLOURS.items():
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(photo(colour, i, **size)).save(root / part / name / f"{i:02d}.png")
    return root


def load(tmp_path: Path, root: Path, **fields: object) -> ns.data.Dataset:
    config = DataConfig(dir=str(root), val_size=0, normalize="per_channel", **fields)
    return load_dataset(config, cache_dir=tmp_path / "cache", progress=False)


def raw_pixels(d: ns.data.Dataset) -> np.ndarray:
    """Undo the per-channel scaling (the recorded shift and scale) back to uint8 values."""
    return np.rint(d.train_x * d.scale.reshape(1, -1, 1, 1) + d.shift.reshape(1, -1, 1, 1)).astype(np.uint8)


def test_a_three_class_tree_of_20x24_photos_resized_to_16x16(tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")
    d = load(tmp_path, root, image_size=(16, 16))
    assert d.classes == ["apple", "grass", "sky"] and d.train_x.shape == (12, 3, 16, 16) and d.test_x.shape == (6, 3, 16, 16)
    pixels = raw_pixels(d)
    for x, y in zip(pixels, d.train_y):  # interleaved classes; each image still its class's colour
        assert np.array_equal(x, np.broadcast_to(np.array(COLOURS[d.classes[y]], np.uint8)[:, None, None], (3, 16, 16)))
    assert list(d.train_y[:3]) == [0, 1, 2]
    assert "3 classes" in d.source and "resized to 16x16" in d.source


def test_the_images_own_size_and_grey_are_kept_without_image_size(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    for part in ("train", "test"):
        for label in range(4):
            (root / part / str(label)).mkdir(parents=True)
            Image.fromarray(np.full((28, 28), 60 * label, np.uint8)).save(root / part / str(label) / "a.png")
    d = load(tmp_path, root)
    assert d.train_x.shape == (4, 1, 28, 28) and d.classes == ["0", "1", "2", "3"]  # every image grey: one channel
    assert sorted(raw_pixels(d)[:, 0, 0, 0].tolist()) == [0, 60, 120, 180]
    rgb = load(tmp_path, root, channels=3)
    assert rgb.train_x.shape == (4, 3, 28, 28)


def test_image_size_is_in_the_cache_key_and_the_run_id(tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")
    small, large = load(tmp_path, root, image_size=(16, 16)), load(tmp_path, root, image_size=(8, 12))
    assert small.train_x.shape[2:] == (16, 16) and large.train_x.shape[2:] == (8, 12)
    assert len(list((tmp_path / "cache").glob("local-*.npz"))) == 2
    network = ns.Network(input_shape=(3, 16, 16), layers=[ns.Flatten(), ns.Linear(out_features=3)])
    data = DataConfig(dir=str(root), normalize="per_channel", val_size=0)
    plain = ns.Experiment(network=network, data=data)
    sized = plain.model_copy(update={"data": data.model_copy(update={"image_size": (16, 16)})})
    assert "image_size" not in run_identity(plain)["data"] and run_identity(sized)["data"]["image_size"] == [16, 16]


def test_mixed_sizes_without_image_size_say_what_to_set(tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")
    Image.fromarray(photo((1, 2, 3), 0, width=30, height=10)).save(root / "train" / "sky" / "99.png")
    with pytest.raises(DataError) as err:
        load(tmp_path, root)
    assert "train/sky/99.png is 30x10" in str(err.value) and "set data.image_size" in str(err.value)
    assert load(tmp_path, root, image_size=(16, 16)).train_x.shape == (13, 3, 16, 16)


def png(array: np.ndarray, **save: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG", **save)
    return out.getvalue()


def palette_with_transparency() -> bytes:
    image = Image.fromarray(np.zeros((24, 20, 3), np.uint8)).convert("P")
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    return out.getvalue()


def rgb_48_bit() -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one): 24x20, mid-grey."""
    import struct
    import zlib

    rows = b"".join(b"\0" + (b"\x80\x00" * 3) * 20 for _ in range(24))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 24, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


BAD_FILES = {
    "truncated": (lambda: png(photo((9, 9, 9), 0))[:60], "cannot decode train/sky/99.png"),
    "not an image": (lambda: b"hello, not a picture", "cannot decode train/sky/99.png"),
    "16-bit colour": (rgb_48_bit, "train/sky/99.png has 16 bits per colour channel, which netspec does not read"),
    "transparent RGBA": (lambda: png(np.zeros((24, 20, 4), np.uint8)), "train/sky/99.png is RGBA with transparent pixels"),
    "transparent palette": (palette_with_transparency, "train/sky/99.png is P with transparent pixels"),
    "too many pixels": (lambda: png(np.zeros((1, 4096 * 4096 + 1), np.uint8)), "more than the 16,777,216 pixels"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_bad_image_is_one_line_and_leaves_no_cache(kind: str, tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")
    make, says = BAD_FILES[kind]
    (root / "train" / "sky" / "99.png").write_bytes(make())
    with pytest.raises(DataError) as err:
        load(tmp_path, root, image_size=(16, 16))
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("local-*"))  # nothing half-written, nothing cached


def test_a_16_bit_grey_tree_is_scaled_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "grey16"
    for part in ("train", "test"):
        for label, value in (("dark", 1000), ("light", 60000)):
            (root / part / label).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), value, np.uint16)).save(root / part / label / "a.png")
    d = load(tmp_path, root)
    assert d.train_x.shape == (2, 1, 8, 8)
    assert sorted(raw_pixels(d)[:, 0, 0, 0].tolist()) == [round(1000 * 255 / 65535), round(60000 * 255 / 65535)]
    assert "4 image(s): 16-bit samples scaled to 8 bits" in capsys.readouterr().err


@pytest.mark.parametrize("change, says", [
    (lambda root: (root / "train" / "moss").mkdir(), "train/moss/ holds no PNG or JPEG file; add its images or remove"),
    (lambda root: (root / "test" / "moss").mkdir() or Image.fromarray(photo((1, 1, 1), 0)).save(root / "test/moss/a.png"),
     "class 'moss' is in test/ but not in train/"),
    (lambda root: (root / "train" / "moss").mkdir() or Image.fromarray(photo((1, 1, 1), 0)).save(root / "train/moss/a.png"),
     "class 'moss' is in train/ but not in test/"),
    (lambda root: Image.fromarray(photo((1, 1, 1), 0)).save(root / "train" / "sky" / "c.png"), None),
])
def test_class_folders_that_do_not_fit_are_one_line(change, says: str | None, tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")
    change(root)
    if says is None:  # an extra colour image of a class: fine
        assert len(load(tmp_path, root, image_size=(16, 16)).train_y) == 13
        return
    with pytest.raises(DataError) as err:
        load(tmp_path, root, image_size=(16, 16))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_colour_tree_for_a_grey_network_and_shape_fields_without_a_tree(tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")
    with pytest.raises(DataError, match=r"00.png is a colour image \(RGB\) but data.channels is 1"):
        load(tmp_path, root, channels=1)
    with pytest.raises(Exception, match="image_size shapes an image-folder tree"):
        DataConfig(source="mnist", image_size=(16, 16))
    with pytest.raises(SpecError, match="'report' is CIFAR-10's"):
        load_dataset(DataConfig(dir=str(root), image_size=(16, 16), val_size=0), cache_dir=tmp_path / "c", progress=False)


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_a_three_class_tree_trains_on_both_backends(backend_name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from netspec.protocol.backend import load_backend
    from netspec.runs.training_run import run_experiment

    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))  # the run's cache and data identity stay in tmp
    root = write_photos(tmp_path / "tree", per_class=(8, 3))
    network = ns.Network(input_shape=(3, 16, 16), layers=[
        ns.Conv2d(out_channels=4, kernel_size=3), ns.ReLU(), ns.Flatten(), ns.Linear(out_features=3)])
    experiment = ns.Experiment(name="photos", network=network,
                               data=DataConfig(dir=str(root), image_size=(16, 16), normalize="per_channel", val_size=6,
                                               split="stratified"),
                               train=ns.TrainConfig(epochs=2, batch_size=6, lr=0.01))
    metrics, folder = run_experiment(experiment, load_backend(backend_name), tmp_path / "runs", device="cpu",
                                     log=lambda line: None, progress=False, table=False)
    preprocess = json.loads((folder / "preprocess.json").read_text())
    assert preprocess["classes"] == ["apple", "grass", "sky"] and preprocess["image_shape"] == [3, 16, 16]
    assert 0.0 <= metrics["test_acc"] <= 1.0
    if backend_name == "torch":  # evaluated on the tree again, given as a folder: decoded to the run's 3x16x16
        from netspec.deploy.inference import evaluate_run

        evaluation, out = evaluate_run(folder, backend_name, data_dir=root, device="cpu", log=lambda line: None)
        assert evaluation.classes == ["apple", "grass", "sky"] and int(evaluation.confusion.sum()) == 9
        assert "sky" in evaluation.summary() and (out / "confusion.png").is_file()


def test_an_image_size_too_large_to_cache_is_one_line_before_decoding(tmp_path: Path) -> None:
    root = write_photos(tmp_path / "tree")  # 18 images; the bound lowered to one byte less than they need
    from netspec.data.sources import image_tree

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_tree, "MAX_CACHE_BYTES", 18 * 3 * 16 * 16 - 1)
        with pytest.raises(DataError, match=r"18 images of 3x16x16 are 0.0 GiB, more than the 0 GiB netspec caches; "
                                            r"set a smaller data.image_size"):
            load(tmp_path, root, image_size=(16, 16))
    assert not list((tmp_path / "cache").glob("local-*"))


def test_channels_2_names_the_choices() -> None:
    """Issue 36's corpus: a Literal of numbers listed no choice at all ('netspec has ')."""
    from netspec.io import validate

    with pytest.raises(SpecError) as err:
        validate(DataConfig, {"channels": 2}, "d.json")
    assert str(err.value).endswith("channels: 2 is not a choice; netspec has 1 or 3")
