"""What identifies data: the test batch of a python-batches folder is part of the
run id's data identity and of the cache key, and the restricted unpickler admits exactly the
constructors CIFAR-10's files need, no more.

The reference for "needs" is written here by hand from what numpy's pickles of uint8 arrays use at
protocols 2 and 5 (an array: _reconstruct + ndarray + dtype, its bytes through _codecs.encode or
bytes; protocol 5: _frombuffer; a numpy integer label: scalar), each checked to be used.
"""
from __future__ import annotations

import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from netspec.data import identity, safe_unpickle
from netspec.data.files import open_files
from netspec.data.sources.local import find_layout, load_local, local_files
from netspec.data.types import CIFAR10_CLASSES

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def batches_folder(root: Path, test_label: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in NAMES[:6]:
        labels = [test_label] * 2 if name == "test_batch" else [1, 2]
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, protocol=2))
    return folder


def test_the_test_batch_is_in_the_data_identity_and_the_cache_key(tmp_path: Path) -> None:
    folder = batches_folder(tmp_path / "a")
    files = open_files(folder)
    rels = local_files(files, find_layout(files, folder), folder)
    assert any(rel.endswith("test_batch") for rel in rels), rels
    before_identity = identity.local_identity(folder, tmp_path / "cache")
    before_key = files.fingerprint(rels)
    before_test = load_local(folder, tmp_path / "cache", progress=False).test_y.copy()
    other = batches_folder(tmp_path / "b", test_label=7)  # the same train batches, another test batch
    for name in NAMES[:5] + ["batches.meta"]:
        (other / name).write_bytes((folder / name).read_bytes())
    other_files = open_files(other)
    assert identity.local_identity(other, tmp_path / "cache").split(":")[1] != before_identity.split(":")[1]
    assert other_files.fingerprint(local_files(other_files, find_layout(other_files, other), other)) != before_key
    assert (load_local(other, tmp_path / "cache", progress=False).test_y == 7).all() and (before_test == 3).all()


NEEDED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
}
"""Each under numpy 1's and numpy 2's module names (a file pickled by either)."""


def globals_used(data: bytes) -> set[tuple[str, str]]:
    """(module, name) of every GLOBAL / STACK_GLOBAL of a pickle."""
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            out.add(tuple(arg.split(" ", 1)))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add((strings[-2], strings[-1]))
    return out


def test_the_unpickler_admits_exactly_what_cifar_files_need() -> None:
    assert set(safe_unpickle.ALLOWED) == NEEDED, f"more: {set(safe_unpickle.ALLOWED) - NEEDED}; fewer: {NEEDED - set(safe_unpickle.ALLOWED)}"
    batch = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [np.int64(1), 2]}
    used = set()
    for protocol in (2, 5):
        data = pickle.dumps(batch, protocol=protocol)
        used |= globals_used(data)
        got = safe_unpickle.loads(data)
        np.testing.assert_array_equal(got[b"data"], batch[b"data"])
        assert got[b"labels"] == [1, 2]
    modules = {m.split(".")[0] for m, _ in used}
    assert used <= NEEDED and modules <= {"numpy", "_codecs", "builtins", "__builtin__"}


@pytest.mark.parametrize("module,name", [("numpy", "zeros"), ("numpy", "empty"), ("numpy", "ones"),
                                         ("builtins", "bytearray"), ("numpy.core.multiarray", "empty"),
                                         ("numpy", "frombuffer"), ("builtins", "range")])
def test_constructors_that_allocate_at_will_are_refused(module: str, name: str) -> None:
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"J\x00\x00\x00\x40\x85R."  # name(2**30)
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle.loads(data)


def test_class_folders_in_another_order_are_remapped_by_name() -> None:
    """A --data-dir whose classes come in another order: each label becomes the run's index of its name
    (written out by hand here), and a class the run lacks is one DataError line."""
    from netspec.deploy.inference import _relabel
    from netspec.errors import DataError

    run_classes = ["cat", "dog", "frog"]
    data_classes = ["frog", "cat", "dog"]  # label 0 of the copy is a frog
    got = _relabel(np.array([0, 1, 2, 2, 0]), data_classes, run_classes, "copy")
    np.testing.assert_array_equal(got, [2, 0, 1, 1, 2])
    with pytest.raises(DataError, match="not classes of the run"):
        _relabel(np.array([0]), ["horse"], run_classes, "copy")


def test_a_bf16_run_is_evaluated_in_bf16(tmp_path: Path) -> None:
    """`netspec evaluate` of a bf16 run gives the test loss the run itself recorded (the same bf16
    forward); a float32 forward differs by ~1e-3 here. Tolerance 1e-6 relative: the trainer sums batch
    losses in float32, the evaluation in float64."""
    import json

    from netspec.cli import main
    from netspec.deploy.inference import evaluate_run
    from netspec.runs.run_folder import run_dir
    from tests.helpers import tiny_experiment, write_spec

    experiment = tiny_experiment(epochs=1)
    experiment = experiment.model_copy(update={"train": experiment.train.model_copy(update={"precision": "bf16"})})
    assert main([str(write_spec(tmp_path, experiment)), "--out", str(tmp_path / "runs"), "--device", "cpu"]) == 0
    folder = run_dir(tmp_path / "runs", experiment, "torch")
    recorded = json.loads((folder / "metrics.json").read_text())
    evaluation, _ = evaluate_run(folder, "torch", log=lambda line: None)
    assert evaluation.loss == pytest.approx(recorded["test_loss"], rel=1e-6)
    assert evaluation.accuracy == pytest.approx(recorded["test_acc"], abs=1e-12)
