"""Files that come from elsewhere: CIFAR-10 python batches (pickles), archives, JSON specs, .npz
weights and images. Opening one must never run code, allocate without bound or end in a traceback:
each bad file gives one line naming it (a DataError for data, a SpecError for a spec or weights file),
and valid files load as before."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from netspec import DataConfig, SpecError, load_weights, save_weights
from netspec import data as nd
from netspec.data import files as data_files
from netspec.data.images import decode_image
from netspec.data.sources.python_batches import BATCH_FILES
from netspec.errors import DataError
from netspec import io as nio

REPO = Path(__file__).resolve().parents[2]
N = 4  # images per batch: tiny data


# --- helpers --------------------------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):  # type: ignore[misc]  # the pure-Python pickler, to change how str is written
    """Pickles like the official archive's Python 2 cPickle: every string is a byte string (BINSTRING),
    numpy's reconstruct function under its numpy 1.x module name."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("ascii") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def batch(seed: int, n: int = N) -> dict[bytes, Any]:
    """A batch dict as CIFAR-10 holds it: byte-string keys, (N, 3072) uint8 pixels, a list of int labels."""
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch %d" % seed, b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"f.png"] * n}


def write_batch_folder(folder: Path, pickler=lambda obj: pickle.dumps(obj, protocol=2), **replaced: bytes) -> Path:
    """cifar-10-batches-py with five data batches, test_batch and batches.meta; `replaced` maps a file
    name to the bytes written instead."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {name: pickler(batch(i)) for i, name in enumerate([*BATCH_FILES, "test_batch"])}
    contents["batches.meta"] = pickler({b"label_names": [c.encode() for c in nd.CIFAR10_CLASSES]})
    for name, raw in {**contents, **replaced}.items():
        (folder / name).write_bytes(raw)
    return folder


def load_raw(tmp_path: Path, path: Path) -> nd.RawImages:
    return nd.load_raw(DataConfig(dir=str(path)), cache_dir=tmp_path / "cache", progress=False)


def one_line_error(tmp_path: Path, path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_raw(tmp_path, path)
    message = str(info.value)
    assert "\n" not in message
    return message


def expected_arrays(folder: Path) -> tuple[np.ndarray, ...]:
    """What plain pickle reads from the (trusted, test-made) folder: the loader must give the same."""
    read = [pickle.loads((folder / name).read_bytes(), encoding="bytes") for name in [*BATCH_FILES, "test_batch"]]
    xs = [np.asarray(b[b"data"]).reshape(-1, 3, 32, 32) for b in read]
    ys = [np.asarray(b[b"labels"], dtype=np.int64) for b in read]
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def evil_pickle(marker: Path) -> bytes:
    """Protocol 0: call posix.system('touch <marker>')."""
    return f"cposix\nsystem\n(Vtouch {marker}\ntR.".encode()


# --- valid batches load as before -----------------------------------------------------------------


@pytest.mark.parametrize("style", ["python2", "protocol2", "protocol5", "label_array"])
def test_valid_batches_load_exactly_as_before(tmp_path: Path, style: str) -> None:
    picklers = {"python2": py2_pickle, "protocol2": lambda obj: pickle.dumps(obj, protocol=2),
                "protocol5": lambda obj: pickle.dumps(obj, protocol=5),
                "label_array": lambda obj: pickle.dumps({**obj, b"labels": np.array(obj[b"labels"])}
                                                       if b"labels" in obj else obj, protocol=2)}
    folder = write_batch_folder(tmp_path / "cifar-10-batches-py", picklers[style])
    raw = load_raw(tmp_path, folder)
    for got, want in zip((raw.train_x, raw.train_y, raw.test_x, raw.test_y), expected_arrays(folder)):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert raw.classes == nd.CIFAR10_CLASSES


def test_the_official_format_references_only_numpy_reconstruction() -> None:
    """The Python-2 style file the test makes names what the official archive's files name."""
    names = {arg for op, arg, _ in pickletools.genops(py2_pickle(batch(0))) if op.name == "GLOBAL"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


# --- code-running and foreign pickles -------------------------------------------------------------


def test_a_code_running_batch_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    folder = write_batch_folder(tmp_path / "data", test_batch=evil_pickle(marker))
    message = one_line_error(tmp_path, folder)
    assert message.startswith(f"{folder / 'test_batch'}: not a CIFAR-10 batch: it refers to posix.system")
    assert not marker.exists()


def test_the_runner_refuses_it_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    folder = write_batch_folder(tmp_path / "data", test_batch=evil_pickle(marker))
    result = subprocess.run(
        [sys.executable, "runner.py", "specs/mlp.json", "--data-dir", str(folder), "--epochs", "1",
         "--set", "data.val_size=20", "--out", str(tmp_path / "runs")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NETSPEC_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {folder / 'test_batch'}: not a CIFAR-10 batch: it refers to posix.system (refused; nothing in it "
        "was run); use the files of the official cifar-10-python.tar.gz"]
    assert not marker.exists()


class Shell:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


@pytest.mark.parametrize("payload, says", [
    (b"c__builtin__\neval\n(V1+1\ntR.", "it refers to __builtin__.eval"),
    (pickle.dumps(Shell(), protocol=4), "it refers to posix.system"),
    (pickle.dumps(Shell(), protocol=2), "it refers to posix.system"),
    (b"\x80\x02cnumpy\nndarray\n(J\x00\xe4\x0bTtR.", "not a readable pickle (TypeError)"),  # ndarray((2**38,))
    (b"\x80\x02c__builtin__\nbytes\n(J\x00\xe4\x0bTtR.", "it calls bytes() with arguments"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.", "with the 'zlib' codec"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xe4\x0bT\x85C\x01b\x87R.",
     "builds an array in a way numpy never pickles one"),
    (b"\x80\x04\x8c\x09os\nsystem\x94\x8c\x01x\x94\x93.", "it refers to 'os\\nsystem.x'"),  # a newline in a name
    (b"\x80\x02P1\n.", "it refers to a persistent object"),
], ids=["eval", "system-p4", "system-p2", "ndarray-call", "bytes-call", "codec", "reconstruct-shape",
        "newline-name", "persistent-id"])
def test_foreign_pickles_are_refused_in_one_line(tmp_path: Path, payload: bytes, says: str) -> None:
    folder = write_batch_folder(tmp_path / "data", data_batch_3=payload)
    message = one_line_error(tmp_path, folder)
    assert message.startswith(f"{folder / 'data_batch_3'}: not a CIFAR-10 batch: ") and says in message


# --- malformed batches ----------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=2)


@pytest.mark.parametrize("content, says", [
    ({**batch(9), b"labels": [0, 1, 10, 2]}, "label 10 at index 2 is outside 0..9"),
    ({**batch(9), b"labels": [0, -1, 1, 2]}, "label -1 at index 1 is outside 0..9"),
    ([batch(9)], "it holds a list of 1 instead of a dict"),
    ({**batch(9), b"data": batch(9)[b"data"].astype(np.float32)}, "b'data' is a float32 array of shape (4, 3072)"),
    ({**batch(9), b"data": batch(9)[b"data"].reshape(4, 3, 32, 32)}, "b'data' is a uint8 array of shape (4, 3, 32, 32)"),
    ({**batch(9), b"data": batch(9)[b"data"].tolist()}, "b'data' is a list of 4"),
    ({**batch(9), b"labels": [[0], [1], [2], [3]]}, "b'labels' is a list of 4; it must be a list of N integers"),
    ({**batch(9), b"labels": np.zeros((4, 1), np.int64)}, "b'labels' is a int64 array of shape (4, 1)"),
    ({**batch(9), b"labels": [0.0, 1.0, 2.0, 3.0]}, "b'labels' is a list of 4"),
    ({**batch(9), b"labels": [0, 1, 2]}, "it has 4 images but 3 labels"),
    ({b"data": batch(9)[b"data"]}, "it has no b'labels' entry (its keys: b'data')"),
    ({"data": batch(9)[b"data"], "labels": [0] * 4}, "it has no b'data' entry (its keys: 'data', 'labels')"),
])
def test_malformed_batches_are_one_line_each(tmp_path: Path, content: Any, says: str) -> None:
    folder = write_batch_folder(tmp_path / "data", data_batch_2=dumps(content))
    message = one_line_error(tmp_path, folder)
    assert message.startswith(f"{folder / 'data_batch_2'}: not a CIFAR-10 batch: ") and says in message, message
    assert message.endswith("; use the files of the official cifar-10-python.tar.gz")


def test_a_truncated_batch_is_one_line(tmp_path: Path) -> None:
    folder = write_batch_folder(tmp_path / "data", test_batch=dumps(batch(9))[:100])
    assert "test_batch: not a CIFAR-10 batch: it is not a readable pickle (" in one_line_error(tmp_path, folder)


@pytest.mark.parametrize("meta, says", [
    ({b"label_names": [b"cat"] * 9}, "b'label_names' is a list of 9; it must list the 10 class names"),
    ({b"label_names": b"cats"}, "b'label_names' is a bytes"),
    ({b"num_vis": 3072}, "it has no b'label_names' entry"),
    ([b"cat"] * 10, "it holds a list of 10 instead of a dict"),
])
def test_a_bad_batches_meta_is_one_line(tmp_path: Path, meta: Any, says: str) -> None:
    folder = write_batch_folder(tmp_path / "data", **{"batches.meta": dumps(meta)})
    message = one_line_error(tmp_path, folder)
    assert message.startswith(f"{folder / 'batches.meta'}: not a CIFAR-10 batches.meta: ") and says in message


# --- archives and folders -------------------------------------------------------------------------


def tar_with(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("bad, says", [
    (member("../escape"), "member '../escape' points outside the archive's folder"),
    (member("data/../../escape"), "member 'data/../../escape' points outside"),
    (member("/etc/cron.d/x"), "member '/etc/cron.d/x' points outside"),
    (member("data/test_batch", tarfile.SYMTYPE, "/etc/passwd"), "member 'data/test_batch' is a symbolic link to '/etc/passwd'"),
    (member("data/test_batch", tarfile.LNKTYPE, "data/data_batch_1"), "is a hard link to 'data/data_batch_1'"),
    (member("data/fifo", tarfile.FIFOTYPE), "member 'data/fifo' is a device, pipe or other special file"),
])
def test_archive_members_out_of_the_folder_or_links_are_refused(tmp_path: Path, bad: tarfile.TarInfo, says: str) -> None:
    archive = tar_with(tmp_path / "c.tar.gz", (member("data/data_batch_1"), dumps(batch(1))), (bad, b"x"))
    message = one_line_error(tmp_path, archive)
    assert message.startswith(f"{archive}: ") and says in message, message


@pytest.mark.parametrize("limit, value, says", [
    ("MAX_FILE_BYTES", 1000, "member 'data/data_batch_1' has 18,859 bytes, more than any file of a CIFAR-10 copy (limit 1,000)"),
    ("MAX_ARCHIVE_BYTES", 20_000, "its files add up to more than 20,000 bytes"),
    ("MAX_ARCHIVE_MEMBERS", 5, "more than 5 members"),
])
def test_archive_sizes_are_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  limit: str, value: int, says: str) -> None:
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(write_batch_folder(tmp_path / "data"), arcname="data")
    monkeypatch.setattr(data_files, limit, value)
    message = one_line_error(tmp_path, archive)
    assert message.startswith(f"{archive}: ") and says in message, message


def test_a_huge_file_in_a_folder_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_batch_folder(tmp_path / "data")
    monkeypatch.setattr(data_files, "MAX_FILE_BYTES", 1000)
    assert one_line_error(tmp_path, folder).startswith(f"{folder / 'data_batch_1'} has 18,859 bytes, more than")


# --- images ---------------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost no pixel data (a few hundred bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, says", [
    (png_header(100_000, 100_000), "exceeds limit"),  # PIL's DecompressionBombError
    (png_header(10_000, 10_000), "could be decompression bomb"),  # PIL's warning, made an error
    (png_header(4000, 4000), "big.png is 4000x4000; CIFAR-10 images are 32x32"),  # checked before decoding
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n", "cannot decode big.png"),  # no EPS (Ghostscript)
], ids=["bomb-error", "bomb-warning", "wrong-size-header", "eps"])
def test_images_are_bounded_before_decoding(data: bytes, says: str) -> None:
    with pytest.raises(DataError) as info:
        decode_image(data, "big.png")
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_valid_image_still_decodes() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    assert np.array_equal(decode_image(out.getvalue()), pixels)


# --- JSON specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, says", [
    (" " * (10 * 2**20) + "{}", "larger than 10,485,760 bytes"),
    ("[" * 65 + "]" * 65, "JSON nested more than 64 levels deep"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested more than 64 levels deep"),  # past the parser's recursion
    ('{"version": ' + "9" * 5000 + "}", "unreadable JSON value (Exceeds the limit"),
    (b'{"name": "caf\xe9"}', "not UTF-8 text (byte 13)"),
], ids=["oversized", "deep", "deeper-than-the-parser", "huge-int", "not-utf8"])
def test_bad_json_files_are_one_line(tmp_path: Path, text: str | bytes, says: str) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpecError) as info:
        nio.read_json(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message


def test_json_at_the_depth_limit_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 64 + "]" * 64)
    assert nio.read_json(path) is not None


# --- .npz weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("write, says", [
    (lambda p: np.savez(p, w=np.array([Shell()], dtype=object)), "holds pickled Python objects, refused"),
    (lambda p: p.write_bytes(pickle.dumps({"w": Shell()})), "holds pickled Python objects, refused"),
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), "a single .npy array, not an .npz archive"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "File is not a zip file"),
], ids=["object-array", "raw-pickle", "npy", "broken-zip"])
def test_bad_weight_files_are_one_line(tmp_path: Path, write: Any, says: str) -> None:
    path = tmp_path / "w.npz"
    write(path)
    with pytest.raises(SpecError) as info:
        load_weights(path)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_weight_sizes_are_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netspec.spec import params
    save_weights({"w": np.zeros(1000, np.float32)}, tmp_path / "w.npz")
    monkeypatch.setattr(params, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(SpecError, match="add up to more than the 1,000 bytes"):
        load_weights(tmp_path / "w.npz")


def test_valid_weights_still_load(tmp_path: Path) -> None:
    weights = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}
    save_weights(weights, tmp_path / "w.npz")
    loaded = load_weights(tmp_path / "w.npz")
    assert loaded.keys() == weights.keys() and all(np.array_equal(loaded[k], weights[k]) for k in weights)
