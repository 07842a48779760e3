#!/usr/bin/env python
"""The fault corpus, opt-in: bad inputs and faults as a user (or an attacker) meets them.

Every case runs the command line in a subprocess, in its own temporary folder, with a timeout, on
tiny synthetic data where data is not the point (`--device cpu`), and is classified automatically:

    clean       the expected exit code; for a failure exactly one `error:` line on stderr, no traceback;
                nothing written outside the out folder; a finished run it started with still intact
    traceback   a Python traceback on stderr
    silent      exit 0 where it must fail, or NaN in the outputs
    lost data   a file written outside the out folder, or a finished run changed or broken
    hang/OOM    the timeout ran out (or the process was killed for memory)

Process faults (kill -9, SIGINT, a killed --force, two runs at once) check the run folder's resume and
lock promises.

    python tools/fault_corpus.py --out corpus.json        # all cases; tables, counts; exit 1 unless all clean
    python tools/fault_corpus.py -k weights --jobs 2      # the cases whose group or name contains 'weights'
    python tools/fault_corpus.py --list
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 180
OUTCOMES = ("clean", "traceback", "silent", "lost data", "hang/OOM")
GROUPS = ("data", "numbers", "processes", "specs", "outputs", "weights",
          # run folders, reports and launches from elsewhere, one group per class of fault
          "links", "markup", "overwrite", "hangs", "records", "tracebacks", "leftovers", "messages",
          # the newest surfaces (blocks, bases, fractions, image data, searches, tracking, import, --weights)
          "surfaces")
NET = {"input_shape": [3, 32, 32], "layers": [
    {"type": "Conv2d", "out_channels": 4, "kernel_size": 5, "stride": 3}, {"type": "BatchNorm"}, {"type": "ReLU"},
    {"type": "Dropout2d", "p": 0.1}, {"type": "Flatten"}, {"type": "Linear", "out_features": 16}, {"type": "ReLU"},
    {"type": "Dropout", "p": 0.2}, {"type": "Linear", "out_features": 10}]}
TINY = {"name": "tiny", "network": NET,
        "data": {"source": "synthetic", "train_size": 400, "val_size": 100, "test_size": 100},
        "train": {"lr": 0.01, "batch_size": 50, "epochs": 2, "eval_batch_size": 100}}
SLOW = {**TINY, "name": "slow", "data": {**TINY["data"], "train_size": 6000, "val_size": 500},
        "train": {**TINY["train"], "epochs": 40, "batch_size": 20}}
"""About a minute of training: long enough to be killed mid-run."""


@dataclass
class Step:
    argv: list[str]
    """Arguments of `python -m netspec`; 'out' is the out folder, relative to the case's work folder."""
    kill_after: Optional[float] = None
    """Send `sig` this many seconds after the start (a fault), else wait for the end."""
    sig: int = signal.SIGKILL
    background: bool = False
    """Start it and go on to the next step at once (two runs at the same time)."""
    env: Optional[dict[str, str]] = None
    """Environment variables set for this step only (e.g. JAX_PLATFORMS)."""
    prepare: Optional[Callable[[Path], None]] = None
    """Changes the work folder right before the step (damage what an earlier step wrote)."""


@dataclass
class Case:
    name: str
    group: str
    steps: list[Step]
    expect: int = 2
    """Exit code of the last step."""
    setup: Optional[Callable[[Path], None]] = None
    """Prepares the work folder (specs, data, a finished run) before the steps."""
    check: Optional[Callable[[Path], Optional[str]]] = None
    """Extra check after the steps: a problem in words ('lost data'), else None."""
    finished: bool = False
    """Start from a finished run of tiny.json in out/ (copied), and require it intact afterwards."""
    planted_nan: bool = False
    """The setup itself writes NaN into out/ (a damaged file to survive): skip the NaN-in-outputs scan,
    which would find the case's own input rather than anything netspec wrote."""
    says: tuple[str, ...] = ()
    """Words the last step's output (stdout and stderr) must hold: what a message names."""
    never_says: tuple[str, ...] = ()
    """Words it must not hold."""


@dataclass
class Result:
    case: Case
    outcome: str
    detail: str
    seconds: float
    code: Optional[int] = None


# ---- setups ---------------------------------------------------------------------------------------

def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path


def spec(**changes: object) -> Callable[[Path], None]:
    """A setup writing tiny.json with top-level `changes` (a dict replaces a section wholesale)."""
    return lambda work: write(work / "bad.json", {**TINY, **changes})


def text(content: str | bytes, name: str = "bad.json") -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def png(value: int = 100, size: tuple[int, int] = (32, 32)) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def tree(work: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3, extra: Optional[dict[str, bytes]] = None) -> Path:
    root = work / "tree"
    for part in ("train", "test"):
        for label, cls in enumerate(classes):
            for i in range(per_class):
                write_bytes(root / part / cls / f"{i}.png", png(20 * label + i))
    for rel, content in (extra or {}).items():
        write_bytes(root / rel, content)
    return root


def write_bytes(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def tree_setup(**kw: object) -> Callable[[Path], None]:
    return lambda work: tree(work, **kw)


def archive(members: list[tuple[tarfile.TarInfo, Optional[bytes]]], name: str = "bad.tar.gz") -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        with tarfile.open(work / name, "w:gz") as tar:
            for info, content in members:
                tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return setup


def member(name: str, content: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "", size: Optional[int] = None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(content) if kind == tarfile.REGTYPE and size is None else (size or 0)
    return info, content if kind == tarfile.REGTYPE else None


def batches(work: Path, mutate: Callable[[dict, str], object] = lambda b, n: b) -> Path:
    """A small cifar-10-batches-py (10 images a batch), each batch passed through `mutate`."""
    root = work / "batches"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(10)]}
        (root / name).write_bytes(pickle.dumps(mutate(batch, name), protocol=2))
    return root


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def chain(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        for s in setups:
            s(work)
    return setup


def run_file(rel: str, content: Optional[bytes] = None, delete: bool = False) -> Callable[[Path], None]:
    """Damage a file of the finished run (out/tiny/torch/<id>/<rel>)."""
    def setup(work: Path) -> None:
        path = finished_dir(work) / rel
        if delete:
            path.unlink()
        else:
            path.write_bytes(content or b"")
    return setup


def finished_dir(work: Path) -> Path:
    """The finished run's folder (the one with metrics.json; a lock file or an attempt may sit beside it)."""
    found = sorted((work / "out" / "tiny" / "torch").glob("*/metrics.json"))
    return found[0].parent if found else work / "out" / "tiny" / "torch" / "missing"


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def weights_like(transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        path = finished_dir(work) / "best_weights.npz"
        with np.load(path) as f:
            weights = {k: f[k] for k in f.files}
        path.write_bytes(npz(**transform(weights)))
    return setup


def zip_bomb(work: Path) -> None:
    """A .npz whose one array declares 16 GB (header only: the zip's sizes are what is checked)."""
    path = finished_dir(work) / "best_weights.npz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("0.weight.npy", b"\0" * (10 * 2**20))
    data = bytearray(buf.getvalue())
    path.write_bytes(bytes(data))
    # Rewrite the declared uncompressed size (central directory) to 16 GB via zip64-less max.
    with zipfile.ZipFile(path) as z:
        assert len(z.infolist()) == 1  # one member: the central directory entry found below is its own
    offset = bytes(data).rfind(b"PK\x01\x02")
    data[offset + 24:offset + 28] = (0xFFFFFFFE).to_bytes(4, "little")
    path.write_bytes(bytes(data))


# ---- checks -------------------------------------------------------------------------------------

def has_finished_run(name: str = "tiny") -> Callable[[Path], Optional[str]]:
    def check(work: Path) -> Optional[str]:
        runs = list((work / "out" / name).glob("*/*/metrics.json"))
        if not runs:
            return "no finished run"
        return valid_run(runs[0].parent)
    return check


def valid_run(directory: Path) -> Optional[str]:
    """A finished run whose files agree: valid JSON without NaN, a history as long as the epochs run."""
    try:
        metrics = json.loads((directory / "metrics.json").read_text(), parse_constant=_no_nan)
        history = json.loads((directory / "history.json").read_text(), parse_constant=_no_nan)
        spec_ = json.loads((directory / "spec.json").read_text())
        with np.load(directory / "best_weights.npz") as f:
            if any(not np.all(np.isfinite(f[k])) for k in f.files):
                return "NaN weights"
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        return f"broken run {directory.name}: {err}"[:120]
    if len(history) != spec_["train"]["epochs"] or metrics.get("diverged"):
        return f"history of {len(history)} epochs for {spec_['train']['epochs']}"
    return None


def _no_nan(word: str) -> float:
    raise ValueError(f"{word} in JSON")


def two_finished_runs_at_once(work: Path) -> Optional[str]:
    return has_finished_run()(work)


# ---- the cases ----------------------------------------------------------------------------------

def train(spec_file: str = "tiny.json", *more: str) -> Step:
    return Step(["train", spec_file, "--out", "out", "--device", "cpu", "--backend", "torch", *more])


SPEC_BOUNDS = [
    "train.lr=0", "train.lr=-0.1", "train.lr=1e38", "train.lr=NaN", "train.lr=Infinity", "train.lr=true",
    'train.lr="0.01"', "train.lr=null", "train.optimizer.betas=[0.9,1.0]", "train.optimizer.betas=[-0.1,0.9]",
    "train.optimizer.betas=[0.9]", "train.optimizer.eps=0", "train.optimizer.eps=-Infinity", "train.lr_decay=0",
    "train.lr_decay=1.5", "train.seed=-1", "train.seed=4294967296", "train.shuffle_seed=-5", "data.seed=1.5",
    "train.batch_size=0", "train.batch_size=1000000", "train.eval_batch_size=0", "train.epochs=0",
    "train.epochs=10000000", "train.epochs=true", "train.epochs=3.0", "data.val_size=-1", "data.train_size=0",
    "data.test_size=100000000", "network.layers.1.momentum=0", "network.layers.1.momentum=1.5",
    "network.layers.1.eps=NaN", "network.layers.1.eps=0", "network.layers.3.p=NaN", "network.layers.3.p=1.0",
    "network.layers.0.out_channels=true", "network.layers.0.out_channels=100000000", "network.layers.0.bias=1",
    "network.input_shape=[3,32,true]", "network.layers.0.kernel_size=[5]", "network.layers.0.stride=0",
    "network.layers.0.padding=-1", "network.layers.0.kernel_size=40", "network.layers.9.type=\"Linear\"",
    "train.optimizer.type=\"lbfgs\"", "data.split=\"random\"", "data.normalize=\"none\"", "version=2",
]
NAMES = ["../../specs/mlp", "a/b", "..", ".hidden", "a\\\\b", "", "x" * 101, "a b", "/etc/x", "~/x", "a\\u0000b"]


def spec_cases() -> list[Case]:
    base = lambda work: write(work / "tiny.json", TINY)
    cases = [Case(f"--set {o}", "specs", [train("tiny.json", "--set", o)], setup=base) for o in SPEC_BOUNDS]
    cases += [Case(f"name {n[:20]!r}", "specs", [train("bad.json")], setup=text(json.dumps(TINY)[:-1] + f', "name": "{n}"}}'))
              for n in NAMES]
    files = {
        "empty file": "", "not JSON": "{network: }", "a list": "[1, 2]", "no network": '{"name": "x"}',
        "null network": '{"network": null}', "trailing comma": json.dumps(TINY)[:-1] + ",}",
        "deep nesting": '{"network": ' + "[" * 100000 + "]" * 100000 + "}", "big int": '{"network": ' + "9" * 5000 + "}",
        "unknown layer": json.dumps({**TINY, "network": {**NET, "layers": [{"type": "Conv3d"}]}}),
        "unknown field": json.dumps({**TINY, "trian": {}}), "layer without type": json.dumps({**TINY, "network": {**NET, "layers": [{}]}}),
        "no layers": json.dumps({**TINY, "network": {**NET, "layers": []}}),
        "2-d input": json.dumps({**TINY, "network": {**NET, "input_shape": [32, 32]}}),
        "Linear on images": json.dumps({**TINY, "network": {**NET, "layers": [{"type": "Linear", "out_features": 10}]}}),
        "shape mismatch with data": json.dumps({**TINY, "network": {"input_shape": [100], "layers": [{"type": "Linear", "out_features": 10}]}}),
        "1000 layers": json.dumps({**TINY, "network": {**NET, "layers": [{"type": "ReLU"}] * 1001}}),
    }
    cases += [Case(words, "specs", [train("bad.json")], setup=text(content)) for words, content in files.items()]
    cases += [
        Case("non-UTF-8 spec", "specs", [train("bad.json")], setup=text(b"\xff\xfe{}")),
        Case("spec is a folder", "specs", [train("folder")], setup=lambda w: (w / "folder").mkdir()),
        Case("spec missing", "specs", [train("nothing.json")]),
        Case("spec of 20 MB", "specs", [train("bad.json")], setup=text(" " * (20 * 2**20) + "{}")),
        Case("--set without =", "specs", [train("tiny.json", "--set", "train.lr")], setup=base),
        Case("--set index out of range", "specs", [train("tiny.json", "--set", "network.layers.40.p=0.1")], setup=base),
        Case("--set into a value", "specs", [train("tiny.json", "--set", "train.lr.x=1")], setup=base),
        Case("--seed abc", "specs", [train("tiny.json", "--seed", "abc")], setup=base),
        Case("--seed -1", "specs", [train("tiny.json", "--seed", "-1")], setup=base),
        Case("--epochs 0", "specs", [train("tiny.json", "--epochs", "0")], setup=base),
        Case("--backend nope", "specs", [Step(["train", "tiny.json", "--backend", "nope", "--out", "out"])], setup=base),
        Case("--device gpu:7 absent", "specs", [Step(["train", "tiny.json", "--device", "gpu:7", "--out", "out", "--backend", "torch"])], setup=base),
        Case("--device banana", "specs", [Step(["train", "tiny.json", "--device", "banana", "--out", "out", "--backend", "torch"])], setup=base),
        Case("unknown option", "specs", [train("tiny.json", "--lr", "1")], setup=base),
        Case("sweep name escape", "specs", [train("s.json")], setup=chain(base, lambda w: write(w / "s.json", {
            "name": "../../specs/mlp", "base": "tiny.json", "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01]}]}))),
        Case("sweep grid of 10^8 points", "specs", [train("s.json")], setup=chain(base, lambda w: write(w / "s.json", {
            "name": "huge", "base": "tiny.json", "axes": [{"name": f"a{i}", "paths": ["train.lr"], "values": [0.01] * 100}
                                                          for i in range(4)]}))),
        Case("sweep without base", "specs", [train("s.json")], setup=lambda w: write(w / "s.json", {"name": "s", "axes": []})),
        Case("sweep base missing", "specs", [train("s.json")], setup=lambda w: write(w / "s.json", {"name": "s", "base": "none.json", "axes": []})),
        Case("sweep axis bad value", "specs", [train("s.json")], setup=chain(base, lambda w: write(w / "s.json", {
            "name": "s", "base": "tiny.json", "axes": [{"name": "lr", "paths": ["train.lr"], "values": [-1]}]}))),
        Case("summary of sweep", "specs", [Step(["summary", "s.json"])], setup=chain(base, lambda w: write(w / "s.json", {
            "name": "s", "base": "tiny.json", "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.1]}]}))),
    ]
    return cases


def number_cases() -> list[Case]:
    raw = json.dumps(TINY)
    literal = lambda old, new: text(raw.replace(old, new))
    cases = [Case(f"JSON {new} for {old}", "numbers", [train("bad.json")], setup=literal(old, new)) for old, new in [
        ('"lr": 0.01', '"lr": NaN'), ('"lr": 0.01', '"lr": Infinity'), ('"lr": 0.01', '"lr": -Infinity'),
        ('"lr": 0.01', '"lr": 1e400'), ('"lr": 0.01', '"lr": -0.0'), ('"p": 0.1', '"p": NaN'),
        ('"batch_size": 50', '"batch_size": 1e2'), ('"epochs": 2', '"epochs": 2.5'), ('"epochs": 2', '"epochs": "2"'),
        ('"train_size": 400', '"train_size": true'), ('"out_features": 16', '"out_features": 1e30'),
        ('"out_features": 16', '"out_features": ' + "9" * 30), ('"stride": 3', '"stride": NaN'),
    ]]
    base = lambda work: write(work / "tiny.json", TINY)
    cases += [
        # 1e38 is refused by the spec's bounds (its own case above); 10, the largest lr allowed, must end
        # either trained or diverged (exit 3), with strict JSON either way: here it trains.
        Case("lr=10 (the bound) ends cleanly, no NaN written", "numbers", [train("tiny.json", "--set", "train.lr=10")],
             expect=0, setup=base),
        Case("huge Linear refused before allocation", "numbers",
             [train("tiny.json", "--set", 'network.layers.5={"type":"Linear","out_features":16000000}')], setup=base),
        Case("huge Conv activations", "numbers", [train("tiny.json", "--set", "network.layers.0.out_channels=16000000")], setup=base),
        Case("padding of 10^6", "numbers", [train("tiny.json", "--set", "network.layers.0.padding=1000000")], setup=base),
        Case("synthetic of 2x10^6 images", "numbers",
             [train("tiny.json", "--set", "data.train_size=1000000", "--set", "data.test_size=1000000")], setup=base),
        Case("batch larger than the training split", "numbers", [train("tiny.json", "--set", "train.batch_size=5000")], setup=base),
        Case("val_size = train_size", "numbers", [train("tiny.json", "--set", "data.val_size=400")], setup=base),
        Case("val_size > train_size", "numbers", [train("tiny.json", "--set", "data.val_size=1000")], setup=base),
        Case("tiny lr trains (exit 0)", "numbers", [train("tiny.json", "--set", "train.lr=1e-30")], expect=0, setup=base,
             check=has_finished_run()),
        Case("lr_decay 1e-9 trains (exit 0)", "numbers", [train("tiny.json", "--set", "train.lr_decay=1e-9")], expect=0,
             setup=base, check=has_finished_run()),
        Case("out_features=5 for 10 classes", "numbers", [train("tiny.json", "--set", "network.layers.8.out_features=5")], setup=base),
        Case("--top 0", "numbers", [Step(["predict", "RUN", "x.png", "--top", "0"])], finished=True),
    ]
    return cases


def data_cases() -> list[Case]:
    base = lambda work: write(work / "tiny.json", {**TINY, "data": {"dir": "data", "val_size": 2, "split": "stratified"},
                                                   "train": {**TINY["train"], "batch_size": 10}})
    with_dir = lambda d: train("tiny.json", "--data-dir", d)
    classes10 = tuple(f"c{i}" for i in range(10))
    cases = [
        Case("data.dir missing", "data", [with_dir("nowhere")], setup=base),
        Case("data.dir empty string", "data", [with_dir("")], setup=base),
        Case("data.dir is a text file", "data", [with_dir("notes.txt")], setup=chain(base, text("hi", "notes.txt"))),
        Case("data.dir is /dev/zero", "data", [with_dir("/dev/zero")], setup=base),
        Case("data.dir empty folder", "data", [with_dir("empty")], setup=chain(base, lambda w: (w / "empty").mkdir())),
        Case("tree without test/", "data", [with_dir("tree")], setup=chain(base, lambda w: (tree(w), shutil.rmtree(w / "tree" / "test")))),
        Case("tree with a 64x64 image", "data", [with_dir("tree")], setup=chain(base, tree_setup(extra={"train/cat/big.png": png(size=(64, 64))}))),
        Case("tree with a 10^5 x 10^5 PNG header", "data", [with_dir("tree")], setup=chain(base, tree_setup(extra={"train/cat/bomb.png": _png_header(100000, 100000)}))),
        Case("tree with a corrupt PNG", "data", [with_dir("tree")], setup=chain(base, tree_setup(extra={"train/cat/bad.png": png()[:60]}))),
        Case("tree with text named .png", "data", [with_dir("tree")], setup=chain(base, tree_setup(extra={"train/cat/x.png": b"hello"}))),
        Case("tree with a GIF named .png", "data", [with_dir("tree")], setup=chain(base, tree_setup(extra={"train/cat/x.png": b"GIF89a" + b"\0" * 30}))),
        Case("tree classes differ train/test", "data", [with_dir("tree")], setup=chain(base, tree_setup(extra={"train/emu/0.png": png()}))),
        Case("tree with 11 classes", "data", [with_dir("tree")], setup=chain(base, tree_setup(classes=classes10 + ("c10",)))),
        Case("tree with 10 classes trains (exit 0)", "data", [with_dir("tree")], expect=0,
             setup=chain(base, tree_setup(classes=classes10)), check=has_finished_run()),
        Case("train_size beyond the tree", "data", [with_dir("tree"), ], setup=chain(
            lambda w: write(w / "tiny.json", {**TINY, "data": {"train_size": 500, "val_size": 2, "split": "stratified"}}),
            tree_setup(classes=classes10))),
        Case("val_size beyond the tree", "data", [with_dir("tree")], setup=chain(
            lambda w: write(w / "tiny.json", {**TINY, "data": {"val_size": 500, "split": "stratified"}}), tree_setup(classes=classes10))),
        Case("synthetic with data.dir", "data", [train("tiny.json", "--set", 'data.dir="x"')], setup=lambda w: write(w / "tiny.json", TINY)),
        Case("archive not gzip", "data", [with_dir("bad.tar.gz")], setup=chain(base, text("not an archive", "bad.tar.gz"))),
        Case("archive truncated", "data", [with_dir("bad.tar.gz")], setup=chain(base, _truncated_archive)),
        Case("archive with ../ member", "data", [with_dir("bad.tar.gz")], setup=chain(base, archive([member("../evil.png", png())]))),
        Case("archive with absolute member", "data", [with_dir("bad.tar.gz")], setup=chain(base, archive([member("/tmp/evil.png", png())]))),
        Case("archive with a symlink", "data", [with_dir("bad.tar.gz")], setup=chain(base, archive([member("train/cat/0.png", kind=tarfile.SYMTYPE, link="/etc/passwd")]))),
        Case("archive with a hard link", "data", [with_dir("bad.tar.gz")], setup=chain(base, archive([member("train/cat/0.png", kind=tarfile.LNKTYPE, link="x")]))),
        Case("archive with a device", "data", [with_dir("bad.tar.gz")], setup=chain(base, archive([member("dev", kind=tarfile.CHRTYPE)]))),
        Case("archive gzip bomb (1 GB of zeros)", "data", [with_dir("bomb.tar.gz")], setup=chain(base, _gzip_bomb)),
        Case("archive of nothing CIFAR", "data", [with_dir("bad.tar.gz")], setup=chain(base, archive([member("readme.txt", b"hi")]))),
        Case("batches: a pickle that runs code", "data", [with_dir("batches")], setup=chain(base, lambda w: batches(w, lambda b, n: Evil() if n == "data_batch_2" else b)),
             check=lambda w: "code ran" if (w / "PWNED").exists() else None),
        Case("batches: label 10", "data", [with_dir("batches")], setup=chain(base, lambda w: batches(w, lambda b, n: {**b, b"labels": [10] * 10}))),
        Case("batches: float pixels", "data", [with_dir("batches")], setup=chain(base, lambda w: batches(w, lambda b, n: {**b, b"data": b[b"data"].astype(np.float32)}))),
        Case("batches: labels and images differ", "data", [with_dir("batches")], setup=chain(base, lambda w: batches(w, lambda b, n: {**b, b"labels": [1] * 9}))),
        Case("batches: missing test_batch", "data", [with_dir("batches")], setup=chain(base, lambda w: (batches(w), (w / "batches" / "test_batch").unlink()))),
        Case("batches: not a pickle", "data", [with_dir("batches")], setup=chain(base, lambda w: (batches(w), (w / "batches" / "data_batch_3").write_bytes(b"junk")))),
        Case("batches: a list instead of a dict", "data", [with_dir("batches")], setup=chain(base, lambda w: batches(w, lambda b, n: [1, 2]))),
        Case("damaged cache file is rebuilt (exit 0)", "data", [train("tiny.json")], expect=0, setup=chain(
            lambda w: write(w / "tiny.json", TINY), _damage_cache_later), check=has_finished_run()),
        Case("damaged identity memo", "data", [with_dir("tree")], expect=0, setup=chain(base, tree_setup(classes=classes10), _damage_identity),
             check=has_finished_run()),
        Case("evaluate --data-dir with 3 classes", "data", [Step(["evaluate", "RUN", "--data-dir", "tree3", "--device", "cpu"])],
             finished=True, setup=lambda w: (tree(w, classes=("a", "b", "c")), (w / "tree").rename(w / "tree3"))),
    ]
    return cases


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def _truncated_archive(work: Path) -> None:
    tree(work)
    with tarfile.open(work / "full.tar.gz", "w:gz") as tar:
        tar.add(work / "tree", arcname="tree")
    data = (work / "full.tar.gz").read_bytes()
    (work / "bad.tar.gz").write_bytes(data[: len(data) // 2])


def _gzip_bomb(work: Path) -> None:
    info = tarfile.TarInfo("train/cat/0.png")
    info.size = 2**30
    with gzip.open(work / "bomb.tar.gz", "wb", compresslevel=1) as f:
        f.write(info.tobuf())
        zeros = b"\0" * 2**24
        for _ in range(64):
            f.write(zeros)


def _damage_cache_later(work: Path) -> None:
    """Train once into a throwaway out folder to fill the cache, then damage the cache file."""
    subprocess.run([sys.executable, "-m", "netspec", "train", "tiny.json", "--out", str(work.parent / "warm"),
                    "--device", "cpu", "--epochs", "1"], cwd=work, env=_env(work), capture_output=True, timeout=TIMEOUT_S)
    for path in (work.parent / "cache").glob("*.npz"):
        path.write_bytes(path.read_bytes()[:1000])


def _damage_identity(work: Path) -> None:
    subprocess.run([sys.executable, "-m", "netspec", "summary", "tiny.json"], cwd=work, env=_env(work), capture_output=True)
    memo = work.parent / "cache" / "identity"
    memo.mkdir(parents=True, exist_ok=True)
    for path in memo.glob("*"):
        path.write_bytes(b"\0\0\0")


def process_cases() -> list[Case]:
    slow = lambda work: write(work / "slow.json", SLOW)
    tiny_ = lambda work: write(work / "tiny.json", TINY)
    return [
        Case("kill -9 mid-run, rerun finishes", "processes", [Step(train("slow.json", "--epochs", "6").argv, kill_after=20),
                                                          train("slow.json", "--epochs", "6")], expect=0,
            setup=slow, check=has_finished_run("slow")),
        Case("kill -9 at start, rerun finishes", "processes", [Step(train("slow.json", "--epochs", "3").argv, kill_after=3),
                                                                train("slow.json", "--epochs", "3")], expect=0, setup=slow,
             check=has_finished_run("slow")),
        Case("SIGINT mid-run: one line, exit 130", "processes", [Step(train("slow.json").argv, kill_after=8, sig=signal.SIGINT)],
             expect=130, setup=slow),
        Case("SIGTERM mid-run then rerun", "processes", [Step(train("slow.json", "--epochs", "4").argv, kill_after=15, sig=signal.SIGTERM),
                                                         train("slow.json", "--epochs", "4")], expect=0, setup=slow,
             check=has_finished_run("slow")),
        Case("killed --force keeps the finished run", "processes", [Step(train("tiny.json", "--force", "--set", "train.epochs=2").argv,
                                                                        kill_after=3)], expect=-9, finished=True),
        Case("killed --force then plain rerun reuses it", "processes", [Step(train("tiny.json", "--force").argv, kill_after=6),
                                                                        train("tiny.json")], expect=0, finished=True),
        Case("two identical runs at once", "processes", [Step(train("tiny.json").argv, background=True), train("tiny.json")],
             expect=0, setup=tiny_, check=two_finished_runs_at_once),
        Case("finished run is reused (exit 0)", "processes", [train("tiny.json")], expect=0, finished=True),
        Case("--out is a file", "processes", [Step(["train", "tiny.json", "--out", "afile", "--device", "cpu", "--backend", "torch"])],
             setup=chain(tiny_, text("x", "afile"))),
        # root ignores permissions: there the run writes and must succeed
        Case("--out in a read-only folder", "processes", expect=0 if os.geteuid() == 0 else 2, steps=[
            Step(["train", "tiny.json", "--out", "ro/out", "--device", "cpu", "--backend", "torch"])],
             setup=chain(tiny_, _read_only("ro"))),
        Case("--out under /proc", "processes", [Step(["train", "tiny.json", "--out", "/proc/netspec", "--device", "cpu", "--backend", "torch"])],
             setup=tiny_),
        Case("cache folder is a file (exit 0)", "processes", [train("tiny.json")], expect=0, setup=chain(tiny_, _cache_is_file),
             check=has_finished_run()),
        Case("damaged metrics.json, rerun", "processes", [train("tiny.json")], expect=0, finished=True,
             setup=run_file("metrics.json", b'{"train_loss": '), check=has_finished_run()),
        Case("history.json deleted, rerun", "processes", [train("tiny.json")], expect=0, finished=True,
             setup=run_file("history.json", delete=True), check=has_finished_run()),
        Case("--epochs raised on a finished run extends it", "processes", [train("tiny.json", "--epochs", "3")], expect=0,
             finished=True, check=lambda w: None if any(len(json.loads(p.read_text())) == 3 for p in
                                                          (w / "out" / "tiny").glob("*/*/history.json")) else "not extended"),
        Case("sweep killed then rerun", "processes", [Step(train("sw.json").argv, kill_after=15), train("sw.json")], expect=0,
             setup=chain(slow, lambda w: write(w / "sw.json", {"name": "sw", "base": "slow.json", "axes": [
                 {"name": "lr", "paths": ["train.epochs"], "values": [1, 2]}]})), check=has_finished_run("slow")),
    ]


def _read_only(rel: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / rel).mkdir()
        (work / rel).chmod(0o555)
    return setup


def _cache_is_file(work: Path) -> None:
    (work.parent / "cache").write_text("not a folder")


def output_cases() -> list[Case]:
    tiny_ = lambda work: write(work / "tiny.json", TINY)
    return [
        Case("experiment named ../../specs/mlp", "outputs", [train("bad.json")], setup=spec(name="../../specs/mlp")),
        Case("experiment named ../x via --set", "outputs", [train("tiny.json", "--set", 'name="../x"')], setup=tiny_),
        Case("report of an empty folder", "outputs", [Step(["report", "empty"])], setup=lambda w: (w / "empty").mkdir()),
        Case("report of a missing folder", "outputs", [Step(["report", "nowhere"])]),
        Case("report -o into a file's folder", "outputs", [Step(["report", "out", "-o", "afile/report.md"])], finished=True,
             setup=text("x", "afile")),
        Case("report over a damaged metrics.json", "outputs", [Step(["report", "out"])], expect=0, finished=True,
             setup=run_file("metrics.json", b"{"), check=lambda w: None if (w / "out" / "report.md").exists() else "no report"),
        Case("report over NaN metrics", "outputs", [Step(["report", "out"])], expect=0, finished=True, planted_nan=True,
             setup=run_file("metrics.json", b'{"train_loss": NaN, "val_acc": NaN, "test_acc": NaN}'),
             check=lambda w: "NaN shown as a result" if "nan" in _read(w / "out" / "report.md").lower() else None),
        Case("report with a manifest named ../../x", "outputs", [Step(["report", "out"])], expect=0, finished=True,
             setup=lambda w: write(w / "out" / "sweeps" / "m.json", {"name": "../../../x", "description": "", "axes": [], "variants": [],
                                                                    "backends": ["torch"], "points": []})),
        Case("export of a missing run", "outputs", [Step(["export", "nowhere"])]),
        Case("export -o into a file's folder", "outputs", [Step(["export", "RUN", "-o", "afile/m.onnx"])], finished=True, setup=text("x", "afile")),
        Case("evaluate of a missing run", "outputs", [Step(["evaluate", "nowhere", "--device", "cpu"])]),
        Case("evaluate --split bogus", "outputs", [Step(["evaluate", "RUN", "--split", "bogus", "--device", "cpu"])], finished=True),
        Case("evaluate --out is a file", "outputs", [Step(["evaluate", "RUN", "--out", "afile", "--device", "cpu"])], finished=True,
             setup=text("x", "afile")),
        Case("evaluate a run folder without spec.json", "outputs", [Step(["evaluate", "RUN", "--device", "cpu"])], finished=True,
             setup=run_file("spec.json", delete=True)),
        Case("evaluate a run folder with a bad spec.json", "outputs", [Step(["evaluate", "RUN", "--device", "cpu"])], finished=True,
             setup=run_file("spec.json", b'{"network": 3}')),
        Case("predict a missing image", "outputs", [Step(["predict", "RUN", "none.png", "--device", "cpu"])], finished=True),
        Case("predict a text file", "outputs", [Step(["predict", "RUN", "x.png", "--device", "cpu"])], finished=True, setup=text("hi", "x.png")),
        Case("predict a 10^5 x 10^5 header", "outputs", [Step(["predict", "RUN", "x.png", "--device", "cpu"])], finished=True,
             setup=text(_png_header(100000, 100000), "x.png")),
        Case("predict a 64x64 image", "outputs", [Step(["predict", "RUN", "x.png", "--device", "cpu"])], finished=True,
             setup=text(png(size=(64, 64)), "x.png")),
        Case("schema -o into a file", "outputs", [Step(["schema", "-o", "afile"])], setup=text("x", "afile")),
        Case("train writes only under --out (exit 0)", "outputs", [train("tiny.json")], expect=0, setup=tiny_, check=has_finished_run()),
    ]


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def weight_cases() -> list[Case]:
    evaluate = Step(["evaluate", "RUN", "--device", "cpu"])
    cases = [
        ("garbage bytes", run_file("best_weights.npz", b"garbage" * 100)),
        ("empty file", run_file("best_weights.npz", b"")),
        ("missing", run_file("best_weights.npz", delete=True)),
        ("a .npy", run_file("best_weights.npz", _npy())),
        ("pickled object array", run_file("best_weights.npz", npz(x=np.array([Evil()], dtype=object)))),
        ("truncated zip", lambda w: (finished_dir(w) / "best_weights.npz").write_bytes((finished_dir(w) / "best_weights.npz").read_bytes()[:300])),
        ("a tensor missing", weights_like(lambda ws: {k: v for k, v in list(ws.items())[1:]})),
        ("an extra tensor", weights_like(lambda ws: {**ws, "99.weight": np.zeros(3)})),
        ("a wrong shape", weights_like(lambda ws: {k: (v[:1] if k == "0.weight" else v) for k, v in ws.items()})),
        ("NaN weights", weights_like(lambda ws: {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else v) for k, v in ws.items()})),
        ("Inf running_var", weights_like(lambda ws: {k: (np.full_like(v, np.inf) if k.endswith("running_var") else v) for k, v in ws.items()})),
        ("string dtype", weights_like(lambda ws: {k: (np.array(["a"] * v.size).reshape(v.shape) if k == "0.weight" else v) for k, v in ws.items()})),
        ("complex dtype", weights_like(lambda ws: {k: (v.astype(np.complex64) if k == "0.weight" else v) for k, v in ws.items()})),
        ("a folder", lambda w: ((finished_dir(w) / "best_weights.npz").unlink(), (finished_dir(w) / "best_weights.npz").mkdir())),
        ("declares 4 GB", zip_bomb),
    ]
    out = [Case(f"evaluate: weights {words}", "weights", [evaluate], finished=True, setup=setup) for words, setup in cases]
    out += [Case(f"export: weights {words}", "weights", [Step(["export", "RUN"])], finished=True, setup=setup)
            for words, setup in cases[:6]]
    out += [Case(f"predict: weights {words}", "weights", [Step(["predict", "RUN", "img.png", "--device", "cpu"])], finished=True,
                 setup=chain(text(png(), "img.png"), setup)) for words, setup in cases[6:10]]
    return out


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


# ---- run folders, reports and launches from elsewhere -------------------------------------

def victim(work: Path, name: str) -> Path:
    """A precious file outside the output folder (the corpus checks that nothing outside changes)."""
    path = work / "victims" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"precious " + name.encode())
    return path


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.symlink_to(target)


def link_in_run(*names: str, unfinish: bool = False) -> Callable[[Path], None]:
    """Links at these names of the finished run (to files outside); `unfinish`: delete metrics.json so the
    run trains (resumes) and writes them all again."""
    def setup(work: Path) -> None:
        run = finished_dir(work)
        for name in names:
            link(run / name, victim(work, name.replace("/", "_")))
        if unfinish:
            (run / "metrics.json").unlink()
    return setup


def run_dir_of(work: Path, *overrides: str) -> Path:
    """The run folder `train tiny.json --set ...` will write (netspec's own run id, computed here)."""
    sys.path.insert(0, str(REPO))
    from netspec.spec.experiment import Experiment
    from netspec.runs.run_folder import run_dir
    return run_dir(work / "out", Experiment.load(work / "tiny.json", list(overrides)), "torch")


def dir_link(rel: Callable[[Path], Path]) -> Callable[[Path], None]:
    """An output folder as a link to a folder outside holding a precious file."""
    def setup(work: Path) -> None:
        target = victim(work, "kept.txt").parent
        link(rel(work), target)
    return setup


def fifo(rel: Callable[[Path], Path]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        path = rel(work)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        os.mkfifo(path)
    return setup


def manifest(points: Optional[list] = None, **fields: object) -> Callable[[Path], None]:
    """out/sweeps/m.json naming the finished run as its one point, with `fields` replaced."""
    def setup(work: Path) -> None:
        point = {"label": "base", "name": "tiny", "run_id": finished_dir(work).name, "seed": 0, "settings": {"lr": 0.01},
                 "base": True, "overrides": []}
        data = {"name": "m", "description": "", "axes": ["lr"], "variants": [], "backends": ["torch"],
                "invocations": [], "points": [point] if points is None else points}
        write(work / "out" / "sweeps" / "m.json", {k: v for k, v in {**data, **fields}.items() if v is not None})
    return setup


def hostile_label(label: str, description: str = "") -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        manifest(description=description)(work)
        path = work / "out" / "sweeps" / "m.json"
        data = json.loads(path.read_text())
        data["points"][0]["label"] = label
        write(path, data)
    return setup


def report_check(*bad: str, need: str = "") -> Callable[[Path], Optional[str]]:
    """report.md exists, holds `need`, and none of `bad` (raw markup that would render)."""
    def check(work: Path) -> Optional[str]:
        report = _read(work / "out" / "report.md")
        if not report:
            return "no report"
        # a heading counts at a line's start only; anything else anywhere
        found = next((b for b in bad if (any(line.startswith(b) for line in report.splitlines()) if b.startswith("#")
                                         else b in report)), None)
        if found:
            return f"report.md holds {found!r}"
        return None if need in report else f"report.md lacks {need!r}"
    return check


def same_content(rel: str, content: bytes) -> Callable[[Path], Optional[str]]:
    def check(work: Path) -> Optional[str]:
        path = work / rel
        return None if path.is_file() and path.read_bytes() == content else f"{rel} was changed"
    return check


def npz_edit(rel: str, edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], unfinish: bool = False) -> Callable[[Path], None]:
    """Rewrite an .npz of the finished run through `edit` (arrays by name)."""
    def setup(work: Path) -> None:
        path = finished_dir(work) / rel
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        path.write_bytes(npz(**edit(arrays)))
        if unfinish:
            (finished_dir(work) / "metrics.json").unlink()
    return setup


def checkpoint_meta(change: Callable[[dict], None]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    def edit(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        meta = json.loads(arrays["meta.json"].tobytes().decode())
        change(meta)
        return {**arrays, "meta.json": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    return edit


def declares_2_40(rel: str, member: str, unfinish: bool = False) -> Callable[[Path], None]:
    """One member of an .npz of the finished run replaced by 80 bytes whose header declares 2^40 floats."""
    def setup(work: Path) -> None:
        path = finished_dir(work) / rel
        with zipfile.ZipFile(path) as z:
            members = {name: z.read(name) for name in z.namelist()}
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
        members[f"{member}.npy"] = header.getvalue() + b"\0" * 64
        with zipfile.ZipFile(path, "w") as z:
            for name, content in members.items():
                z.writestr(name, content)
        if unfinish:
            (finished_dir(work) / "metrics.json").unlink()
    return setup


def sparse_image(work: Path) -> None:
    """A 64 GiB sparse file as the image: outside the case folder, which the corpus hashes whole."""
    path = work.parents[3] / f"huge-{work.parents[2].name}.png"
    with open(path, "wb") as f:
        f.truncate(64 * 2**30)
    link(work / "huge.png", path)


def png16(work: Path) -> None:
    from PIL import Image
    values = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(values).save(work / "deep.png", format="PNG")


def damage_cache(content: Optional[bytes]) -> Callable[[Path], None]:
    """Every .npz of the data cache truncated to `content`, or emptied (None: to zero bytes)."""
    def prepare(work: Path) -> None:
        for path in (work.parent / "cache").rglob("*.npz"):
            data = path.read_bytes()
            path.write_bytes(data[:content[0]] if content else b"")
    return prepare


def untrusted_cases() -> list[Case]:
    tiny_ = lambda work: write(work / "tiny.json", TINY)
    run = lambda w: finished_dir(w)
    sweep = lambda name, **more: lambda w: write(w / "sw.json", {"name": name, "base": "tiny.json", "axes": [
        {"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.02]}], **more})
    evaluate = Step(["evaluate", "RUN", "--device", "cpu"])
    report = Step(["report", "out"])
    resumed = train("tiny.json")
    tree_run = chain(lambda w: write(w / "tiny.json", {**TINY, "data": {"val_size": 2, "split": "stratified"},
                                                       "train": {**TINY["train"], "batch_size": 10}}),
                     tree_setup(classes=tuple(f"c{i}" for i in range(10))))
    cases = [
        # 1. writes that would follow a planted link out of the folder
        Case("export: model.onnx is a link", "links", [Step(["export", "RUN"])], expect=0, finished=True,
             setup=link_in_run("model.onnx")),
        Case("evaluate: evaluation/ files are links", "links", [evaluate], expect=0, finished=True,
             setup=link_in_run("evaluation/evaluation.json", "evaluation/confusion.png")),
        Case("evaluate: evaluation/ is a link", "links", [evaluate], finished=True,
             setup=dir_link(lambda w: run(w) / "evaluation"), says=("symbolic link",)),
        Case("report: report.md and runs.csv are links", "links", [report], expect=0, finished=True,
             setup=lambda w: (link(w / "out" / "report.md", victim(w, "r.md")), link(w / "out" / "runs.csv", victim(w, "r.csv")))),
        Case("report: figures/ is a link", "links", [report], finished=True,
             setup=chain(manifest(), dir_link(lambda w: w / "out" / "figures"))),
        Case("report: a figure is a link", "links", [report], expect=0, finished=True,
             setup=chain(manifest(), lambda w: link(w / "out" / "figures" / "m_vs_setting.png", victim(w, "fig.png")))),
        Case("resumed run: every file a link", "links", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=link_in_run("acc.png", "loss.png", "history.json", "history.csv", "env.json", "spec.json",
                               "preprocess.json", unfinish=True)),
        Case("resumed run: checkpoint and weights links", "links", [resumed], expect=0, finished=True,
             setup=chain(lambda w: shutil.copy(run(w) / "checkpoint.npz", w / "ck.npz"), link_in_run("best_weights.npz", unfinish=True),
                         lambda w: link(run(w) / "checkpoint.npz", w / "ck.npz"))),
        Case("the run's lock file is a link", "links", [train("tiny.json")], expect=0, finished=True,
             setup=lambda w: link(w / "out" / ".locks" / "tiny" / "torch" / f"{run(w).name}.lock", victim(w, "lock"))),
        Case("--tensorboard: tensorboard/ is a link", "links", [train("tiny.json", "--tensorboard", "--set", "train.lr=0.02")],
             setup=chain(tiny_, dir_link(lambda w: run_dir_of(w, "train.lr=0.02") / "tensorboard")), says=("symbolic link",)),
        Case("sweep: out/sweeps is a link", "links", [train("sw.json")], setup=chain(tiny_, sweep("sw"), dir_link(lambda w: w / "out" / "sweeps"))),
        Case("run: out/<name> is a link", "links", [train("tiny.json")], setup=chain(tiny_, dir_link(lambda w: w / "out" / "tiny"))),
        Case("schema -o: a schema file is a link", "links", [Step(["schema", "-o", "out/sch"])], expect=0,
             setup=lambda w: link(w / "out" / "sch" / "experiment.schema.json", victim(w, "schema"))),
        # 2. markup injection into report.md
        Case("report: label <img onerror>", "markup", [report], expect=0, finished=True,
             setup=hostile_label("<img src=x onerror=alert(1)>"), check=report_check("<img", need="&lt;img")),
        Case("report: description with a newline and ## heading", "markup", [report], expect=0, finished=True,
             setup=hostile_label("x", description="ok\n## injected\n<script>alert(1)</script>"),
             check=report_check("## injected", "<script", need="ok ## injected")),
        Case("report: label 'a | b' keeps its table", "markup", [report], expect=0, finished=True, setup=hostile_label("a | b"),
             check=report_check("| a | b |", need="a \\| b")),
        Case("report: label with a link and backticks", "markup", [report], expect=0, finished=True,
             setup=hostile_label("`x` [click](http://evil)"), check=report_check("[click](http://evil)", need="\\[click\\]")),
        Case("report: a run folder named <img>", "markup", [report], expect=0, finished=True,
             setup=lambda w: shutil.copytree(w / "out" / "tiny", w / "out" / "<img src=x onerror=alert(1)>"),
             check=report_check("<img", need="&lt;img")),
        # 3. --out must never be a folder whose files a run would overwrite that it did not write
        Case("train a sweep with --out specs", "overwrite", [Step(["train", "specs/sweeps/sw.json", "--out", "specs", "--device", "cpu"])],
             setup=lambda w: (write(w / "specs" / "tiny.json", TINY), write(w / "specs" / "sweeps" / "sw.json", SWEEP)),
             check=same_content("specs/sweeps/sw.json", json.dumps(SWEEP, indent=1).encode())),
        Case("--out is a source tree", "overwrite", [Step(["train", "tiny.json", "--out", "src", "--device", "cpu"])],
             setup=chain(tiny_, text("[project]\n", "src/pyproject.toml")), check=same_content("src/pyproject.toml", b"[project]\n")),
        Case("--out is a file", "overwrite", [Step(["train", "tiny.json", "--out", "afile", "--device", "cpu"])],
             setup=chain(tiny_, text("keep", "afile")), check=same_content("afile", b"keep")),
        Case("sweep over a manifest that is not one", "overwrite", [train("sw.json")],
             setup=chain(tiny_, sweep("sw"), text("notes", "out/sweeps/sw.json")), check=same_content("out/sweeps/sw.json", b"notes")),
        # 4. nothing waits forever
        Case("report: a FIFO as history.json", "hangs", [report], expect=0, finished=True,
             setup=fifo(lambda w: run(w) / "history.json")),
        Case("report: a FIFO as a manifest", "hangs", [report], expect=0, finished=True,
             setup=fifo(lambda w: w / "out" / "sweeps" / "m.json")),
        Case("train: a FIFO as the spec", "hangs", [train("pipe.json")], setup=fifo(lambda w: w / "pipe.json")),
        Case("evaluate: a FIFO as preprocess.json", "hangs", [evaluate], finished=True,
             setup=fifo(lambda w: run(w) / "preprocess.json")),
        Case("evaluate: a FIFO as env.json", "hangs", [evaluate], expect=0, finished=True,
             setup=fifo(lambda w: run(w) / "env.json")),
        Case("predict: a FIFO as the image", "hangs", [Step(["predict", "RUN", "pipe.png", "--device", "cpu"])], finished=True,
             setup=fifo(lambda w: w / "pipe.png")),
        Case("resume: a FIFO as checkpoint.npz", "hangs", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=chain(fifo(lambda w: run(w) / "checkpoint.npz"), lambda w: (run(w) / "metrics.json").unlink())),
        Case("train: a FIFO among the tree's images", "hangs", [train("tiny.json", "--data-dir", "tree")],
             setup=chain(tree_run, fifo(lambda w: w / "tree" / "train" / "c0" / "pipe.png"))),
        Case("--launcher ray --address 127.0.0.1:1", "hangs", [train("tiny.json", "--launcher", "ray", "--address", "127.0.0.1:1")],
             setup=tiny_, says=("--address 127.0.0.1:1",)),
        Case("--gpus-per-run 1000000 on a local Ray", "hangs", [train("tiny.json", "--launcher", "ray", "--gpus-per-run", "1000000")],
             setup=tiny_, says=("no node of the Ray cluster",)),
        Case("--seeds 100000", "hangs", [train("tiny.json", "--seeds", "100000")], setup=tiny_),
        Case("sweep file with seeds 100000", "hangs", [train("sw.json")], setup=chain(tiny_, sweep("sw", seeds=100000))),
        # 5. values read back are validated, never coerced
        Case("predict: preprocess scale 0", "records", [Step(["predict", "RUN", "img.png", "--device", "cpu"])], finished=True,
             setup=chain(text(png(), "img.png"), lambda w: _json_edit(run(w) / "preprocess.json", scale=[0, 1, 1]))),
        Case("predict: preprocess of 2 channels", "records", [Step(["predict", "RUN", "img.png", "--device", "cpu"])], finished=True,
             setup=chain(text(png(), "img.png"), lambda w: _json_edit(run(w) / "preprocess.json", shift=[1, 1], scale=[1, 1]))),
        Case('report: "test_acc": true left out', "records", [report], expect=0, finished=True,
             setup=lambda w: _json_edit(run(w) / "metrics.json", test_acc=True), check=report_check(need="0 finished runs")),
        Case('report: "test_acc": "0.9" left out', "records", [report], expect=0, finished=True,
             setup=lambda w: _json_edit(run(w) / "metrics.json", test_acc="0.9"), check=report_check(need="0 finished runs")),
        Case("resume: negative Adam step", "records", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {**a, "model.adam.step": np.array(-5)}, unfinish=True),
             says=("not trusted",)),
        Case("resume: negative lr in the checkpoint", "records", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", checkpoint_meta(lambda m: m.update(lr=-0.01)), unfinish=True), says=("not trusted",)),
        Case('sweep with "seeds": []', "records", [train("sw.json")], setup=chain(tiny_, sweep("sw", seeds=[]))),
        Case("sweep with two axes of one name", "records", [train("sw.json")], setup=chain(tiny_, lambda w: write(w / "sw.json", {
            "name": "sw", "base": "tiny.json", "axes": [{"name": "x", "paths": ["train.lr"], "values": [0.01]},
                                                        {"name": "x", "paths": ["train.lr_decay"], "values": [1.0]}]}))),
        Case("evaluate: env.json backend ../x", "records", [evaluate], expect=0, finished=True,
             setup=lambda w: _json_edit(run(w) / "env.json", backend="../x")),
        Case("report: a manifest with backend ../../x", "records", [report], expect=0, finished=True,
             setup=manifest(backends=["../../x"])),
        Case("report: history epochs 1, 1", "records", [report], expect=0, finished=True,
             setup=lambda w: _json_edit(run(w) / "history.json", at=(1, "epoch"), value=1), check=report_check(need="0 finished runs")),
        Case("predict: a 16-bit PNG (exit 0)", "records", [Step(["predict", "RUN", "deep.png", "--device", "cpu"])], expect=0,
             finished=True, setup=png16),
        # 6. no tracebacks
        Case("evaluate: best_weights member declares 2^40 floats", "tracebacks", [evaluate], finished=True,
             setup=declares_2_40("best_weights.npz", "0.weight")),
        Case("resume: checkpoint member declares 2^40 floats", "tracebacks", [resumed], expect=0, finished=True,
             setup=declares_2_40("checkpoint.npz", "model.0.weight", unfinish=True), check=has_finished_run()),
        Case("predict: a 64 GiB sparse image", "tracebacks", [Step(["predict", "RUN", "huge.png", "--device", "cpu"])],
             finished=True, setup=sparse_image),
        Case("report: metrics.json nested 100,000 deep", "tracebacks", [report], expect=0, finished=True,
             setup=run_file("metrics.json", b"[" * 100000 + b"]" * 100000)),
        Case("report: a truncated spec.json", "tracebacks", [report], expect=0, finished=True,
             setup=lambda w: (run(w) / "spec.json").write_bytes((run(w) / "spec.json").read_bytes()[:40])),
        Case("report: a manifest without backends", "tracebacks", [report], expect=0, finished=True,
             setup=manifest(backends=None)),
        Case('report: points [1, "two", null]', "tracebacks", [report], expect=0, finished=True,
             setup=manifest(points=[1, "two", None])),
        Case("report: history [1]", "tracebacks", [report], expect=0, finished=True, setup=run_file("history.json", b"[1]")),
        Case("report: metrics.json is [1]", "tracebacks", [report], expect=0, finished=True, setup=run_file("metrics.json", b"[1]")),
        Case("resume: a transposed Adam moment", "tracebacks", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {**a, "model.adam.exp_avg.5.weight": a["model.adam.exp_avg.5.weight"].T},
                            unfinish=True), says=("does not fit the network", "not trusted")),
        Case("resume: a transposed weight", "tracebacks", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {**a, "model.5.weight": a["model.5.weight"].T}, unfinish=True)),
        # every checkpoint scalar and array validated before use (damaged, not diverged; the run starts over)
        Case("resume: NaN Adam moments", "records", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {**a, "model.adam.exp_avg.5.weight": a["model.adam.exp_avg.5.weight"] * np.nan},
                            unfinish=True), says=("checkpoint.npz", "not trusted")),
        Case("resume: a missing Adam key", "records", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {k: v for k, v in a.items() if k != "model.adam.exp_avg_sq.5.weight"},
                            unfinish=True), says=("checkpoint.npz", "not trusted")),
        Case("resume: a missing Adam step", "records", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {k: v for k, v in a.items() if k != "model.adam.step"}, unfinish=True),
             says=("checkpoint.npz", "not trusted")),
        Case("resume: an out-of-range shuffle order", "tracebacks", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {**a, "shuffle.order": a["shuffle.order"] + 10**6}, unfinish=True),
             says=("checkpoint.npz", "not trusted")),
        Case("resume: a shuffle order with repeats", "records", [resumed], expect=0, finished=True, check=has_finished_run(),
             setup=npz_edit("checkpoint.npz", lambda a: {**a, "shuffle.order": a["shuffle.order"] * 0}, unfinish=True),
             says=("checkpoint.npz", "not trusted")),
        Case("--set train.shuffle_seed=4294967295 --seeds 2", "tracebacks",
             [train("tiny.json", "--set", "train.shuffle_seed=4294967295", "--seeds", "2")], setup=tiny_),
        Case("--gpus-per-run nan", "tracebacks", [train("tiny.json", "--launcher", "ray", "--gpus-per-run", "nan")], setup=tiny_),
        Case("--gpus-per-run inf", "tracebacks", [train("tiny.json", "--launcher", "ray", "--gpus-per-run", "inf")], setup=tiny_),
        Case("description with a lone surrogate", "tracebacks", [train("bad.json")],
             setup=text(json.dumps(TINY)[:-1] + ', "description": "\\ud800"}')),
        Case("Conv2d of 100,000 channels at batch 50", "tracebacks", [train("tiny.json", "--set", "train.batch_size=50", "--set",
             'network.layers.0={"type":"Conv2d","out_channels":100000,"kernel_size":3,"padding":1}')], setup=tiny_),
        Case("crosscheck: a Conv2d of 100,000 channels", "tracebacks", [Step(["crosscheck", "bad.json"])],
             setup=spec(network={"input_shape": [3, 32, 32], "layers": [
                 {"type": "Conv2d", "out_channels": 100000, "kernel_size": 3, "padding": 1}, {"type": "Flatten"},
                 {"type": "Linear", "out_features": 10}]}), says=("bound of 4 GiB",)),
        Case("crosscheck: a network with no parameters", "tracebacks", [Step(["crosscheck", "bad.json"])],
             setup=spec(network={"input_shape": [10], "layers": [{"type": "ReLU"}]})),
        Case("train: a network with no parameters", "tracebacks", [train("bad.json")],
             setup=spec(network={"input_shape": [3, 32, 32], "layers": [{"type": "Flatten"}, {"type": "Dropout"}]})),
        Case("JAX_PLATFORMS=bogus", "tracebacks", [Step(["train", "tiny.json", "--out", "out", "--device", "cpu", "--backend", "jax"],
                                                        env={"JAX_PLATFORMS": "bogus"})], setup=tiny_),
        # 7. left from the first corpus
        Case("a truncated .npz in the data cache is rebuilt", "leftovers",
             [train("tiny.json", "--data-dir", "tree", "--epochs", "1"),
              Step(train("tiny.json", "--data-dir", "tree", "--epochs", "1", "--force").argv, prepare=damage_cache(b"\x40"))],
             expect=0, setup=tree_run, says=("damaged cache",)),
        Case("an empty .npz in the data cache is rebuilt", "leftovers",
             [train("tiny.json", "--data-dir", "tree", "--epochs", "1"),
              Step(train("tiny.json", "--data-dir", "tree", "--epochs", "1", "--force").argv, prepare=damage_cache(None))],
             expect=0, setup=tree_run, says=("damaged cache",)),
        Case("report -o an existing folder writes nothing", "leftovers", [Step(["report", "out", "-o", "out/adir"])], finished=True,
             setup=chain(manifest(), lambda w: (w / "out" / "adir").mkdir()),
             check=lambda w: "wrote beside it" if (w / "out" / "figures").exists() or (w / "out" / "runs.csv").exists() else None),
        Case("a spec with a duplicate key", "leftovers", [train("bad.json")], setup=text(json.dumps(TINY)[:-1] + ', "name": "x"}')),
        Case("a --set value 10,000 deep", "leftovers", [train("tiny.json", "--set", "train.lr=" + "[" * 10000 + "]" * 10000)], setup=tiny_),
        Case("report on a sweep with data.val_size=0", "leftovers", [train("sw.json", "--set", "data.val_size=0", "--epochs", "1"),
                                                                     report], expect=0, setup=chain(tiny_, sweep("sw")),
             check=report_check(need="Sweep `sw`")),
        # 8. messages name the file and what happens next
        Case("a damaged checkpoint names checkpoint.npz and what happens", "messages", [resumed], expect=0, finished=True,
             setup=chain(run_file("checkpoint.npz", b"garbage"), lambda w: (run(w) / "metrics.json").unlink()),
             says=("checkpoint.npz", "does not resume from it")),
        Case("predict: a 64x64 image names the image, not data.dir", "messages",
             [Step(["predict", "RUN", "big.png", "--device", "cpu"])], finished=True, setup=text(png(size=(64, 64)), "big.png"),
             says=("big.png",), never_says=("data.dir",)),
        Case("predict: a text file names the image", "messages", [Step(["predict", "RUN", "notes.png", "--device", "cpu"])],
             finished=True, setup=text("hello", "notes.png"), says=("notes.png",), never_says=("data.dir",)),
        Case("evaluate: a damaged preprocess.json is named", "messages", [evaluate], finished=True,
             setup=run_file("preprocess.json", b'{"classes": []}'), says=("preprocess.json", "delete it")),
        Case("report: a damaged run is named with its file", "messages", [report], expect=0, finished=True,
             setup=lambda w: _json_edit(run(w) / "metrics.json", val_acc=7), says=("metrics.json", "val_acc")),
    ]
    return cases

# ---- the newest surfaces ------------------------------------------------------------------

def blocks(layers: list, blocks_: dict, params: Optional[dict] = None) -> Callable[[Path], None]:
    """bad.json: TINY with a short-form network of these blocks, uses and network parameters."""
    network = {"input_shape": [3, 32, 32], "blocks": blocks_, "layers": layers, **({"params": params} if params else {})}
    return spec(network=network)


HEAD = [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]
RELU = {"params": [], "layers": [{"type": "ReLU"}]}


def fan_out(depth: int, width: int) -> dict:
    """Blocks b0..b{depth}: each uses the next `width` times, so b0 expands to width**depth layers."""
    out = {f"b{i}": {"params": [], "layers": [{"use": f"b{i + 1}"}] * width} for i in range(depth)}
    return {**out, f"b{depth}": RELU}


def bases(*files: tuple[str, object]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        for name, content in files:
            write(work / name, content) if not isinstance(content, bytes) else write_bytes(work / name, content)
    return setup


def knots(*values: object) -> Callable[[Path], None]:
    return spec(train={**TINY["train"], "schedule": {"type": "piecewise_linear", "knots": [[v, 0.1] for v in values]}})


def searchfile(**changes: object) -> Callable[[Path], None]:
    body = {"version": 1, "name": "se", "base": "tiny.json", "space": [
        {"name": "lr", "paths": ["train.lr"], "type": "loguniform", "low": 0.001, "high": 0.1}],
        "objective": {"metric": "val_acc", "at": "best"}, "trials": 2, "seeds": 1}
    return chain(lambda w: write(w / "tiny.json", {**TINY, "train": {**TINY["train"], "epochs": 1}}),
                 lambda w: write(w / "se.json", {**body, **changes}))


def study(content: Optional[bytes] = None, link_to: Optional[str] = None, folder: bool = False) -> Callable[[Path], None]:
    """Plant out/searches/se/study.db: damaged bytes, a link out of the folder, or a folder."""
    def setup(work: Path) -> None:
        path = work / "out" / "searches" / "se" / "study.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            path.mkdir()
        elif link_to:
            link(path, victim(work, link_to))
        else:
            path.write_bytes(content or b"")
    return setup


def onnx_file(build: Callable[[], bytes], name: str = "m.onnx") -> Callable[[Path], None]:
    return lambda work: write_bytes(work / name, build())


def _onnx(nodes: list, inits: Optional[list] = None, out: str = "y", shape: Optional[list] = None) -> bytes:
    from onnx import TensorProto, helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape or [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _onnx_cycle() -> bytes:
    from onnx import helper
    return _onnx([helper.make_node("Relu", ["x2"], ["x1"]), helper.make_node("Relu", ["x1"], ["x2"]),
                  helper.make_node("Flatten", ["x2"], ["y"])])


def _onnx_unknown_op() -> bytes:
    from onnx import helper
    return _onnx([helper.make_node("Hardmax", ["x"], ["h"]), helper.make_node("Flatten", ["h"], ["y"])])


def _onnx_huge_initializer() -> bytes:
    """A Gemm whose weight declares 2^31 floats through its dims but carries none."""
    from onnx import TensorProto, helper
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10, 2**31])  # make_tensor checks the count
    return _onnx([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)], [weight])


def _good_onnx() -> bytes:
    from onnx import numpy_helper
    from onnx import helper
    w = numpy_helper.from_array(np.zeros((10, 3 * 32 * 32), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    return _onnx([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)], [w, b])


def imported(*more: str) -> Step:
    return Step(["import", "m.onnx", "-o", "out", *more])


def surface_cases() -> list[Case]:
    tiny_ = lambda work: write(work / "tiny.json", TINY)
    weights = lambda path: train("tiny.json", "--weights", path)
    search = Step(["search", "se.json", "--out", "out", "--device", "cpu", "--backend", "torch"])
    unreachable = Step(train("tiny.json", "--track", "mlflow=http://10.255.255.1:5000").argv)
    cases = [
        # blocks and network parameters
        Case("block uses itself", "surfaces", [train("bad.json")], setup=blocks([{"use": "a"}] + HEAD, {"a": {"params": [], "layers": [{"use": "a"}]}})),
        Case("blocks use each other", "surfaces", [train("bad.json")],
             setup=blocks([{"use": "a"}] + HEAD, {"a": {"params": [], "layers": [{"use": "b"}]}, "b": {"params": [], "layers": [{"use": "a"}]}})),
        Case("block expansion of 10^8 layers", "surfaces", [train("bad.json")], setup=blocks([{"use": "b0"}] + HEAD, fan_out(8, 10))),
        Case("blocks nested 9 deep", "surfaces", [train("bad.json")], setup=blocks([{"use": "b0"}] + HEAD, fan_out(9, 1))),
        Case("block unknown", "surfaces", [train("bad.json")], setup=blocks([{"use": "nope"}] + HEAD, {"a": RELU})),
        Case("block use lacks a parameter", "surfaces", [train("bad.json")],
             setup=blocks([{"use": "c"}] + HEAD, {"c": {"params": ["n"], "layers": [{"type": "Conv2d", "out_channels": "$n", "kernel_size": 3}]}})),
        Case("block params not a list", "surfaces", [train("bad.json")], setup=blocks([{"use": "a"}] + HEAD, {"a": {"params": "n", "layers": []}})),
        Case("blocks is a list", "surfaces", [train("bad.json")], setup=spec(network={**NET, "blocks": [1, 2]})),
        Case("network param undefined", "surfaces", [train("bad.json")],
             setup=blocks([{"type": "Conv2d", "out_channels": "$w", "kernel_size": 3}] + HEAD, {}, {"x": 4})),
        Case("network param a string", "surfaces", [train("bad.json")],
             setup=blocks([{"type": "Conv2d", "out_channels": "$w", "kernel_size": 3}] + HEAD, {}, {"w": "wide"})),
        Case("network param inexact division", "surfaces", [train("bad.json")],
             setup=blocks([{"type": "Conv2d", "out_channels": "$w/3", "kernel_size": 3}] + HEAD, {}, {"w": 4})),
        Case("network param 10^300", "surfaces", [train("bad.json")],
             setup=blocks([{"type": "Conv2d", "out_channels": "2*$w", "kernel_size": 3}] + HEAD, {}, {"w": 10**300})),
        Case("network param true", "surfaces", [train("bad.json")],
             setup=blocks([{"type": "Conv2d", "out_channels": "$w", "kernel_size": 3}] + HEAD, {}, {"w": True})),
        Case("--set a network param to a list", "surfaces",
             [train("bad.json", "--set", "network.params.w=[1,2]")],
             setup=blocks([{"type": "Conv2d", "out_channels": "$w", "kernel_size": 3}] + HEAD, {}, {"w": 4})),
        # bases
        Case("base cycle of two files", "surfaces", [train("a.json")],
             setup=bases(("a.json", {"base": "b.json", "name": "a"}), ("b.json", {"base": "a.json", "name": "b"}))),
        Case("base is itself", "surfaces", [train("a.json")], setup=bases(("a.json", {"base": "a.json", "name": "a"}))),
        Case("base chain 9 long", "surfaces", [train("b0.json")],
             setup=bases(*[(f"b{i}.json", {"base": f"b{i + 1}.json"}) for i in range(9)], ("b9.json", TINY))),
        Case("base missing", "surfaces", [train("a.json")], setup=bases(("a.json", {"base": "none.json", "name": "a"}))),
        Case("base is a folder", "surfaces", [train("a.json")], setup=chain(bases(("a.json", {"base": "d", "name": "a"})), lambda w: (w / "d").mkdir())),
        Case("base damaged JSON", "surfaces", [train("a.json")], setup=bases(("a.json", {"base": "b.json"}), ("b.json", b"{\"network\": "))),
        Case("base a number", "surfaces", [train("a.json")], setup=bases(("a.json", {**TINY, "base": 7}))),
        Case("base a link to a FIFO", "surfaces", [train("a.json")],
             setup=chain(bases(("a.json", {"base": "f.json", "name": "a"})), lambda w: os.mkfifo(w / "f.json"))),
        # fraction knots
        *[Case(f"knot {v!r:.30}", "surfaces", [train("bad.json")], setup=knots("0/1", v, "1/1"))
          for v in ("0/0", "3/2", "-1/2", "1/2/3", "a/b", "9" * 5000 + "/" + "9" * 5001, " 1/2")],
        # image_size, channels, TFDS names
        Case("image_size [0, 32]", "surfaces", [train("tiny.json", "--data-dir", "tree", "--set", "data.image_size=[0,32]")],
             setup=chain(tiny_, tree_setup())),
        Case("image_size 100000 square", "surfaces",
             [train("tiny.json", "--data-dir", "tree", "--set", "data.image_size=[100000,100000]")], setup=chain(tiny_, tree_setup())),
        Case("channels 2", "surfaces", [train("tiny.json", "--data-dir", "tree", "--set", "data.channels=2")], setup=chain(tiny_, tree_setup())),
        Case("image_size on synthetic data", "surfaces", [train("tiny.json", "--set", "data.image_size=[16,16]")], setup=tiny_),
        Case("TFDS name unknown", "surfaces", [train("tiny.json", "--data", "no_such_dataset_xyz")], setup=tiny_),
        Case("TFDS name a path", "surfaces", [train("tiny.json", "--data", "../../etc/passwd")], setup=tiny_),
        Case("TFDS name not an image set", "surfaces", [train("tiny.json", "--data", "imdb_reviews")], setup=tiny_),
        # search files and study databases
        Case("search trials 0", "surfaces", [search], setup=searchfile(trials=0)),
        Case("search space empty", "surfaces", [search], setup=searchfile(space=[])),
        Case("search path names no field", "surfaces", [search], setup=searchfile(space=[
            {"name": "lr", "paths": ["train.lrr"], "type": "uniform", "low": 0.1, "high": 0.2}])),
        Case("search base cycle", "surfaces", [search], setup=chain(searchfile(base="se.json"))),
        Case("search low a string", "surfaces", [search], setup=searchfile(space=[
            {"name": "lr", "paths": ["train.lr"], "type": "uniform", "low": "a", "high": 0.2}])),
        Case("study.db damaged", "surfaces", [search], setup=chain(searchfile(), study(b"SQLite format 3\x00" + b"\xff" * 2000))),
        Case("study.db empty", "surfaces", [search], setup=chain(searchfile(), study(b"")), says=("study.db",)),
        Case("study.db a link out of the folder", "surfaces", [search], setup=chain(searchfile(), study(link_to="db"))),
        Case("study.db a folder", "surfaces", [search], setup=chain(searchfile(), study(folder=True))),
        Case("train of a search file", "surfaces", [train("se.json")], setup=searchfile()),
        # MLflow URIs
        Case("--track mlflow at an address that answers or not", "surfaces", [unreachable], setup=tiny_),
        Case("--track mlflow at a closed port", "surfaces", [train("tiny.json", "--track", "mlflow=http://127.0.0.1:9")],
             setup=tiny_, says=("no tracking server answers",)),
        Case("--track mlflow=ftp://x", "surfaces", [train("tiny.json", "--track", "mlflow=ftp://x")], setup=tiny_),
        Case("--track nope", "surfaces", [train("tiny.json", "--track", "nope")], setup=tiny_),
        Case("--track mlflow=http://[::1", "surfaces", [train("tiny.json", "--track", "mlflow=http://[::1")], setup=tiny_),
        Case("--track mlflow=sqlite in a missing folder", "surfaces",
             [train("tiny.json", "--track", "mlflow=sqlite:///nowhere/x/y.db")], setup=tiny_),
        Case("--track mlflow=file store", "surfaces", [train("tiny.json", "--track", "mlflow=file:./mlruns")], setup=tiny_),
        # ONNX import
        Case("import: garbage", "surfaces", [imported()], setup=text(b"\x08\x07garbage" * 50, "m.onnx")),
        Case("import: empty file", "surfaces", [imported()], setup=text(b"", "m.onnx")),
        Case("import: missing file", "surfaces", [imported()]),
        Case("import: a cycle", "surfaces", [imported()], setup=onnx_file(_onnx_cycle)),
        Case("import: unknown op", "surfaces", [imported()], setup=onnx_file(_onnx_unknown_op)),
        Case("import: a 2^31-float initializer without data", "surfaces", [imported()], setup=onnx_file(_onnx_huge_initializer)),
        Case("import: truncated", "surfaces", [imported()], setup=onnx_file(lambda: _good_onnx()[:200])),
        Case("import: a FIFO", "surfaces", [imported()], setup=lambda w: os.mkfifo(w / "m.onnx")),
        Case("import: -o is a file", "surfaces", [imported()], setup=chain(onnx_file(_good_onnx), text("x", "out"))),
        Case("import: weights.npz planted as a link", "surfaces", [imported()], expect=0,
             setup=chain(onnx_file(_good_onnx), lambda w: (w / "out").mkdir(), lambda w: link(w / "out" / "weights.npz", victim(w, "v.npz")))),
        Case("import: --name escapes", "surfaces", [imported("--name", "../../x")], setup=onnx_file(_good_onnx)),
        # train --weights
        Case("--weights garbage", "surfaces", [weights("w.npz")], setup=chain(tiny_, text(b"garbage" * 10, "w.npz"))),
        Case("--weights missing", "surfaces", [weights("w.npz")], setup=tiny_),
        Case("--weights a folder", "surfaces", [weights("d")], setup=chain(tiny_, lambda w: (w / "d").mkdir())),
        Case("--weights a FIFO", "surfaces", [weights("f.npz")], setup=chain(tiny_, lambda w: os.mkfifo(w / "f.npz"))),
        Case("--weights /dev/zero", "surfaces", [weights("/dev/zero")], setup=tiny_),
        Case("--weights pickled object", "surfaces", [weights("w.npz")],
             setup=chain(tiny_, text(npz(x=np.array([Evil()], dtype=object)), "w.npz")),
             check=lambda w: "pickle ran" if (w / "PWNED").exists() else None),
        Case("--weights of another network", "surfaces", [weights("w.npz")], setup=chain(tiny_, text(npz(**{"0.weight": np.zeros(3, np.float32)}), "w.npz"))),
        Case("--weights declares 4 GB", "surfaces", [weights("w.npz")], setup=chain(tiny_, lambda w: _zip_bomb_at(w / "w.npz"))),
    ]
    import importlib.util
    if importlib.util.find_spec("onnx") is None:  # the import cases build their files with onnx (netspec[export])
        cases = [c for c in cases if not c.name.startswith("import:")]
    return cases


def _zip_bomb_at(path: Path) -> None:
    """A .npz whose member header declares 2^40 float32 values (the 'declares 4 GB' class at a path of one's own)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        header = b"\x93NUMPY\x01\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }".ljust(118) + b"\n"
        z.writestr("0.weight.npy", header + b"\x00" * 64)
    path.write_bytes(out.getvalue())


SWEEP = {"name": "sw", "base": "../tiny.json", "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.02]}]}


def _json_edit(path: Path, at: Optional[tuple] = None, value: object = None, **fields: object) -> None:
    """Change a JSON file of a run: top-level `fields` (None removes one), or the item at path `at`."""
    data = json.loads(path.read_text())
    if at is not None:
        node = data
        for key in at[:-1]:
            node = node[key]
        node[at[-1]] = value
    for key, new in fields.items():
        data[key] = new
    path.write_text(json.dumps(data))


def all_cases() -> list[Case]:
    return (spec_cases() + number_cases() + data_cases() + process_cases() + output_cases() + weight_cases()
            + untrusted_cases() + surface_cases())


# ---- the runner -----------------------------------------------------------------------------------

def _env(work: Path) -> dict[str, str]:
    # the caller's PYTHONPATH after REPO: a checkout's shim names its netspec_backends (else the installed one answers)
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH", ""))))
    env = {**os.environ, "NETSPEC_CACHE": str(work.parent / "cache"), "PYTHONPATH": path,
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONWARNINGS", None)
    return env


def make_finished_run(root: Path) -> Path:
    """One finished run of tiny.json, trained once and copied into every case that starts from it."""
    work = root / "template"
    work.mkdir(parents=True)
    write(work / "tiny.json", TINY)
    done = subprocess.run([sys.executable, "-m", "netspec", "train", "tiny.json", "--out", "out", "--device", "cpu",
                           "--backend", "torch"], cwd=work, env=_env(work), capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        sys.exit(f"could not train the template run:\n{done.stderr}")
    return work


def snapshot(folder: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    """sha256 of every file under `folder` except under `skip`."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not any(path.is_relative_to(s) for s in skip):
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_case(index: int, case: Case, root: Path, template: Optional[Path]) -> Result:
    start = time.perf_counter()
    case_root = root / f"case{index:03d}"
    work = case_root / "w1" / "w2" / "work"   # deep, so a name like ../../x lands inside case_root
    work.mkdir(parents=True)
    if case.finished and template is not None:
        shutil.copytree(template / "out", work / "out")
        write(work / "tiny.json", TINY)
    try:
        if case.setup:
            case.setup(work)
    except Exception as err:  # a broken setup is the corpus' bug: say so loudly
        return Result(case, "traceback", f"setup failed: {type(err).__name__}: {err}"[:160], 0.0)
    run_before = snapshot(work / "out", ()) if case.finished else {}
    cache = work.parent / "cache"  # NETSPEC_CACHE (_env): the data cache is meant to be written
    outs = tuple(work / step.argv[i + 1] for step in case.steps for i, a in enumerate(step.argv[:-1])
                 if a == "--out" and step.argv[0] == "train") + (work / "out", cache)
    outside_before = snapshot(case_root, outs)
    outcome, detail, code = _run_steps(case, work)
    outside_after = snapshot(case_root, outs)
    if outcome == "clean":
        changed = sorted(set(outside_after.items()) ^ set(outside_before.items()))
        changed = [c for c in changed if not c[0].startswith(str(Path("w1/w2/work/warm")))]
        if changed:
            outcome, detail = "lost data", f"wrote outside --out: {changed[0][0]}"
        elif case.finished and (problem := _finished_problem(work, run_before)):
            outcome, detail = "lost data", problem
        elif case.check and (problem := case.check(work)):
            outcome, detail = ("silent" if "NaN" in problem else "lost data"), problem
        elif not case.planted_nan and (nan := _nan_in_outputs(work / "out")):
            outcome, detail = "silent", f"NaN in {nan}"
    _chmod_back(case_root)
    return Result(case, outcome, detail, time.perf_counter() - start, code)


def _run_steps(case: Case, work: Path) -> tuple[str, str, Optional[int]]:
    background: list[subprocess.Popen] = []
    last = None
    for step in case.steps:
        if step.prepare:
            step.prepare(work)
        argv = [a.replace("RUN", str(finished_dir(work))) if "RUN" in a and (work / "out").exists() else a for a in step.argv]
        proc = subprocess.Popen([sys.executable, "-m", "netspec", *argv], cwd=work, env={**_env(work), **(step.env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        if step.background:
            background.append(proc)
            continue
        try:
            if step.kill_after is not None:
                try:
                    out, err = proc.communicate(timeout=step.kill_after)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, step.sig)
                    out, err = proc.communicate(timeout=TIMEOUT_S)
            else:
                out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return "hang/OOM", f"no end after {TIMEOUT_S}s: {' '.join(argv)[:80]}", None
        last = (proc.returncode, err, out)
        if "Traceback (most recent call last)" in err:
            return "traceback", _last_line(err), proc.returncode
    for proc in background:
        _, err = proc.communicate(timeout=TIMEOUT_S)
        if "Traceback (most recent call last)" in err:
            return "traceback", "(background) " + _last_line(err), proc.returncode
        if proc.returncode != 0:
            return "lost data", f"the other run exited {proc.returncode}: {_last_line(err)}", proc.returncode
    code, err, out = last
    return (*_classify(case, code, err, out), code)


def _classify(case: Case, code: int, err: str, out: str = "") -> tuple[str, str]:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code == case.expect:
        if code not in (0, -9) and len(errors) != 1 and case.expect != 130:
            return "traceback", f"exit {code} with {len(errors)} error lines: {_last_line(err)}"
        missing = [w for w in case.says if w not in out + err] + [w for w in case.never_says if w in out + err]
        if missing:
            return "silent", f"the output {'lacks' if missing[0] in case.says else 'holds'} {missing[0]!r}: {_last_line(err or out)}"
        return "clean", (errors[0] if errors else f"exit {code}")[:160]
    if code == 0:
        return "silent", f"exit 0, expected {case.expect}"
    if code in (-9, 137):
        return "hang/OOM", "killed (memory?)"
    return "traceback" if not errors else "silent", f"exit {code}, expected {case.expect}: {_last_line(err)}"


def _last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(no stderr)")[:160]


def _finished_problem(work: Path, before: dict[str, str]) -> Optional[str]:
    """The finished run the case started from must still be there, whole, and (unless the case extends
    or rebuilds it) unchanged."""
    for rel, digest in before.items():
        if rel.endswith(("best_weights.npz", "metrics.json")) and "tiny" in rel:
            path = work / "out" / rel
            if not path.is_file():
                return f"finished run's {rel} is gone"
    if not (finished_dir(work) / "metrics.json").is_file():
        return "finished run gone"
    return None


def _nan_in_outputs(out: Path) -> Optional[str]:
    if not out.is_dir():
        return None
    for path in out.rglob("*.json"):
        if "NaN" in _read(path) or "Infinity" in _read(path):
            return str(path.relative_to(out))
    return None


def _chmod_back(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_dir() and not os.access(path, os.W_OK):
            path.chmod(0o755)


# ---- report -----------------------------------------------------------------------------------

def tables(results: list[Result]) -> str:
    lines = []
    for group in GROUPS:
        rows = [r for r in results if r.case.group == group]
        if not rows:
            continue
        lines += ["", f"## {group} ({len(rows)} cases)", "", "| case | outcome | exit | s | detail |", "|---|---|---|---|---|"]
        lines += [f"| {r.case.name} | {r.outcome} | {r.code} | {r.seconds:.1f} | {r.detail.replace('|', '/')} |" for r in rows]
    lines += ["", "## counts", "", "| group | " + " | ".join(OUTCOMES) + " | total |", "|---" * (len(OUTCOMES) + 2) + "|"]
    for group in (*GROUPS, "all"):
        rows = [r for r in results if group in ("all", r.case.group)]
        lines.append(f"| {group} | " + " | ".join(str(sum(r.outcome == o for r in rows)) for o in OUTCOMES) + f" | {len(rows)} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the summary here: <out>.json and <out>.md (e.g. corpus -> corpus.json, corpus.md)")
    p.add_argument("-k", help="only cases whose group or name contains this")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    cases = [c for c in all_cases() if not args.k or args.k in c.group or args.k in c.name]
    if args.list:
        print("\n".join(f"{c.group:10} {c.name}" for c in cases) + f"\n{len(cases)} cases")
        return 0
    with tempfile.TemporaryDirectory(prefix="netspec-corpus-") as tmp:
        root = Path(tmp)
        template = make_finished_run(root) if any(c.finished for c in cases) else None
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda ic: run_case(*ic, root, template), enumerate(cases)))
    report = tables(results)
    print(report)
    if args.out:
        base = Path(args.out).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".md").write_text("# fault corpus\n" + report)
        base.with_suffix(".json").write_text(json.dumps([{"name": r.case.name, "group": r.case.group, "outcome": r.outcome,
                                                          "exit": r.code, "detail": r.detail, "seconds": round(r.seconds, 1)}
                                                         for r in results], indent=1))
    return 0 if all(r.outcome == "clean" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
