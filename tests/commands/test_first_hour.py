"""What a new user meets in the first hour, run as the user runs it: the `netspec`
command in a subprocess, where what it prints is the point."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.cli import main
from tests.helpers import write_spec

ROOT = Path(__file__).resolve().parents[2]


def netspec(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m netspec ARGV` with this checkout's netspec, from any folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "netspec", *argv], cwd=cwd, capture_output=True, text=True, env=env)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints, after checking it is one line, exit code 2, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# ---- errors that say what was meant (item 3) ----------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["trian", "specs/mlp.json"], "error: unknown command 'trian' (did you mean 'train'?); use one of train, search, summary, "),
    (["summry", "specs/mlp.json"], "error: unknown command 'summry' (did you mean 'summary'?)"),
    (["train", "specs/mlp.json", "--backend", "torhc"], "unknown backend 'torhc' (did you mean 'torch'?); use one of torch, jax"),
    (["summary", "specs/mlp.json", "--set", "trian.lr=0.1"], "error: specs/mlp.json: unknown field 'trian' (did you mean 'train'?)"),
    (["summary", "specs/mlp.json", "--set", "network.layers.0.out_featurs=3"],
     "network: layer 0 (Linear): unknown field 'out_featurs' (did you mean 'out_features'?)"),
    (["summary", "specs/mlp.json", "--set", "network.layers.1.type=Batchnorm"],
     "network: layer 1: unknown layer type 'Batchnorm' (did you mean 'BatchNorm'?); use one of Linear, Conv2d, "),
    (["summary", "specs/mlp.json", "--set", "train.optimizer.type=adamm"],
     "train: optimizer: unknown optimizer type 'adamm' (did you mean 'adam'?); use one of adam, "),
    (["summary", "specs/mlp.json", "--set", "train.optimizer.type=sgd"],
     "train: optimizer (sgd): unknown field 'betas'; remove it (allowed here: type, momentum, "),
    (["summary", "specs/mlp.json", "--set", "train.precision=bf61"],
     "train: precision: 'bf61' is not a choice (did you mean 'bf16'?); netspec has 'float32', 'tf32', 'bf16'"),
    (["summary", "specs/mlp.json", "--set", "network.layers.0.zzz=1"],
     "unknown field 'zzz'; remove it (allowed here: id, inputs, type, out_features, bias)"),
])
def test_a_mistake_is_answered_with_what_was_meant(argv: list[str], expected: str) -> None:
    line = error_line(netspec(*argv))
    assert expected in line, line
    assert "runner.py" not in line and "more error" not in line


def test_every_validation_error_is_shown_and_a_misspelling_is_not_also_missing(tmp_path: Path) -> None:
    spec = tmp_path / "typos.json"
    spec.write_text(json.dumps({"name": "t", "network": {"input_shape": [3072], "layers": [
        {"type": "Linear", "out_featurs": 10}, {"type": "Linaer", "out_features": 3}]},
        "train": {"bach_size": 4, "optimizer": {"type": "rmsprop"}}}))
    line = error_line(netspec("summary", str(spec)))
    # The lists of choices grow with the framework: the test pins the problems and their order, and
    # that each list of choices names what exists.
    problems = line.split(" [")
    assert problems[0] == f"error: {spec}: 4 problems:"
    assert problems[1] == "1] network: layer 0 (Linear): unknown field 'out_featurs' (did you mean 'out_features'?)"
    assert problems[2].startswith("2] network: layer 1: unknown layer type 'Linaer' (did you mean 'Linear'?); use one of Linear, Conv2d, ")
    train = sorted(p[3:] for p in problems[3:])  # pydantic's order within `train` is its own
    assert train[0].startswith("train: optimizer: unknown optimizer type 'rmsprop'; use one of adam, ")
    assert train[1] == "train: unknown field 'bach_size' (did you mean 'batch_size'?)"


def test_the_checkout_runner_names_the_command_netspec() -> None:
    done = subprocess.run([sys.executable, "runner.py", "train", "specs/mlp.json", "--bogus"], cwd=ROOT,
                          capture_output=True, text=True)
    assert error_line(done) == "error: netspec train: unrecognized arguments: --bogus; see netspec train --help"


def test_a_spec_path_is_never_taken_for_a_command(tmp_path: Path) -> None:
    """`netspec SPEC` trains: a bare word that names an existing file is a spec, and a missing path says so."""
    (tmp_path / "trian").write_text("{")
    line = error_line(netspec("trian", "--summary", cwd=tmp_path))
    assert line.startswith("error: trian: malformed JSON"), line
    assert "cannot read the file" in error_line(netspec("specs/nope.json"))


# ---- CPU threads (item 1) ------------------------------------------------------------------------

def small_mlp() -> ns.Experiment:
    """The cheapest run that trains: the report's MLP input (3072,), one Linear layer, 300 synthetic
    images, one epoch."""
    network = ns.Network(input_shape=(3072,), layers=[ns.Linear(out_features=10)])
    return ns.Experiment(name="tiny", network=network, train=ns.TrainConfig(batch_size=50, epochs=1),
                         data=ns.DataConfig(source="synthetic", train_size=300, val_size=100, test_size=100))


@dataclass(frozen=True)
class Trained:
    spec: Path
    out: Path
    folder: Path
    stdout: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """`netspec train` of small_mlp on one torch thread, once for the tests below."""
    tmp = tmp_path_factory.mktemp("first_hour")
    spec, out = write_spec(tmp, small_mlp()), tmp / "runs"
    done = netspec("train", str(spec), "--threads", "1", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    (folder,) = (out / "tiny" / "torch").iterdir()
    return Trained(spec, out, folder, done.stdout)


def test_threads_are_chosen_recorded_and_never_part_of_the_run_id(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    assert "tiny [torch on cpu, 1 thread]:" in trained.stdout
    assert json.loads((trained.folder / "env.json").read_text())["cpu_threads"] == 1
    try:  # the same run with other threads, in this process: found, not trained again
        assert main(["train", str(trained.spec), "--threads", "2", "--device", "cpu", "--out", str(trained.out)]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert f"finished run found in {trained.folder}" in capsys.readouterr().out
    assert "between 1 and 1024" in error_line(netspec("train", str(trained.spec), "--threads", "0"))


def test_jax_computes_on_one_thread_when_asked() -> None:
    """XLA:CPU takes no count but 1 (its Eigen kernels single-threaded), set before its client starts."""
    code = ("from netspec_backends.jax.backend import BACKEND\nimport jax.numpy as jnp, os\nBACKEND.set_threads(1)\n"
            "jnp.ones(2).block_until_ready()\nprint(BACKEND.describe()['cpu_threads'], os.environ['XLA_FLAGS'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    threads, *flags = done.stdout.split()
    assert done.returncode == 0 and threads == "1" and "--xla_cpu_multi_thread_eigen=false" in flags, done.stderr


@pytest.mark.parametrize("omp, cores, load, expected", [
    ("", 2, 3.1, 1),   # a busy 2-core machine: one thread (1.6 s an epoch against 3-7 s with two)
    ("", 2, 0.2, 2),   # an idle one: every core, as torch's own default
    ("", 16, 4.4, 12),
    ("", 4, 9.0, 1),
    ("3", 2, 0.0, 3),  # the user's OMP_NUM_THREADS is kept
])
def test_the_default_threads_are_the_free_physical_cores(omp: str, cores: int, load: float, expected: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from netspec.training import threads

    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert threads.default_threads() == expected


def test_usable_cores_count_physical_cores_within_the_affinity() -> None:
    from netspec.training.threads import usable_cores

    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


# ---- outputs that match what was said (item 4) ----------------------------------------------------

def test_force_names_the_final_folder_and_no_lock_file_is_left_beside_runs(trained: Trained) -> None:
    done = netspec("train", str(trained.spec), "--force", "--device", "cpu", "--out", str(trained.out))
    assert done.returncode == 0, done.stderr
    assert f"-> {trained.folder}\n" in done.stdout and f"files in {trained.folder}\n" in done.stdout
    assert "attempt" not in done.stdout and sorted(trained.folder.parent.iterdir()) == [trained.folder]
    assert (trained.out / ".locks" / "tiny" / "torch" / f"{trained.folder.name}.lock").is_file()


def test_tensorboard_on_a_finished_run_writes_its_events_from_its_history(trained: Trained) -> None:
    pytest.importorskip("tensorboardX")
    events = trained.folder / "tensorboard"
    argv = ["train", str(trained.spec), "--tensorboard", "--device", "cpu", "--out", str(trained.out)]
    done = netspec(*argv)
    assert done.returncode == 0, done.stderr
    assert f"wrote the TensorBoard events of its 1 epoch (from its history.json) to {events}" in done.stdout
    assert len(list(events.glob("events.out.tfevents.*"))) == 1
    again = netspec(*argv)
    assert f"its TensorBoard events are in {events}" in again.stdout and len(list(events.iterdir())) == 1


def test_export_prints_its_check_against_the_backend_and_the_real_input_layout(trained: Trained) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    done = netspec("export", str(trained.folder))
    assert done.returncode == 0, done.stderr
    wrote, check = done.stdout.strip().splitlines()
    assert wrote == f"wrote {trained.folder / 'model.onnx'}"
    match = re.fullmatch(r"checked against torch's logits on 8 random inputs: largest difference (\S+) "
                         r"\(largest logit (\S+)\): agrees", check)
    assert match and 0 <= float(match[1]) < 1e-5 < float(match[2]), check
    props = {p.key: p.value for p in onnx.load(str(trained.folder / "model.onnx")).metadata_props}
    assert props["input"] == "[batch, 3072] float32, the NCHW pixels flattened in C, H, W order: " \
                             "(pixels - shift) / scale per channel"


def test_predict_names_a_wrong_sized_file_offers_resize_and_says_what_it_converted(trained: Trained, tmp_path: Path) -> None:
    from PIL import Image

    big, gray, rgba = tmp_path / "big.png", tmp_path / "gray.png", tmp_path / "rgba.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(big)
    Image.new("L", (32, 32), 128).save(gray)
    Image.new("RGBA", (32, 32), (10, 200, 10, 100)).save(rgba)
    line = error_line(netspec("predict", str(trained.folder), str(big)))
    assert line == (f"error: {big}: the image is 64x48; the network takes 32x32 images: resize it, or add --resize "
                    "(the whole image scaled to 32x32)")
    done = netspec("predict", str(trained.folder), str(big), str(gray), str(rgba), "--resize", "--top", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(" (", 1)[1] for line in lines] == [
        "resized from 64x48 to 32x32)", "converted from grayscale (its gray in all three channels) to RGB)",
        "converted from RGBA (alpha dropped) to RGB)"]


def test_the_confusion_title_fits_its_figure() -> None:
    from netspec.deploy.inference import confusion_figure

    title = "mlp: the CIFAR-10 copy in /work/shared/data/cifar10-jpeg-q75.tar.gz (10,000 images), test: accuracy 0.5610"
    fig = confusion_figure(np.eye(10, dtype=int), [f"class_{i}" for i in range(10)], title)
    fig.canvas.draw()
    box, width = fig.texts[0].get_window_extent(), fig.bbox.width
    assert 0 <= box.x0 and box.x1 <= width and "accuracy 0.5610" in fig.texts[0].get_text()


def test_a_saved_experiment_starts_with_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    small_mlp().save(path)
    content = json.loads(path.read_text())
    assert next(iter(content)) == "$schema"  # outside the checkout: the schema's absolute file URI
    assert content["$schema"] == (ROOT / "specs" / "schema" / "experiment.schema.json").as_uri()
    assert ns.load(path) == small_mlp()


# ---- the light path (item 2) ---------------------------------------------------------------------

def test_without_the_dataset_the_message_names_every_form_of_data_dir(tmp_path: Path) -> None:
    """As on a machine without tensorflow-datasets (the light install): one line with every way out."""
    code = ("import sys\nsys.modules['tensorflow_datasets'] = None\nfrom netspec.cli import main\n"
            f"sys.exit(main(['train', 'specs/mlp.json', '--epochs', '1', '--out', {str(tmp_path / 'runs')!r}]))")
    env = {**os.environ, "NETSPEC_CACHE": str(tmp_path / "cache")}
    line = error_line(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env))
    for form in ("--data-dir PATH", "cifar-10-batches-py folder", "image-folder tree (train/<class>/*, test/<class>/*)",
                 "a .tar.gz of either", "pip install 'netspec[tfds]'"):
        assert form in line, line


# ---- report.md reads summary-first (item 5) --------------------------------------------------------

def test_the_report_puts_the_answer_first_in_words_that_agree_with_the_run(trained: Trained) -> None:
    done = netspec("report", str(trained.out))
    assert done.returncode == 0 and done.stdout.strip() == f"wrote {trained.out / 'report.md'}", done.stderr
    report = (trained.out / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Summary", "## Runs"]
    assert "| `tiny` (" in report.split("## Runs")[0]  # the experiment's test accuracy, in the summary
    header = next(line for line in trained.stdout.splitlines() if line.startswith("tiny [torch"))
    assert "200 train / 100 val / 100 test images" in header
    assert "1 epoch, batch 50, lr 0.001; recipe adam, lab; data synthetic, 200 train / 100 val / 100 test" in report
    assert "1 epochs" not in report


def test_categorical_settings_are_points_and_numeric_ones_a_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from netspec.runs import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))
    panel = {"final test accuracy": {"torch": [("dropout", [0.55, 0.56]), ("no dropout", [0.53, 0.54])]}}
    plots.plot_result_vs_setting(panel, "point", "ablation", tmp_path / "a.png", categorical=True)
    numeric = {"final test accuracy": {"torch": [(0.1, [0.55, 0.56]), (0.3, [0.53, 0.54])]}}
    plots.plot_result_vs_setting(numeric, "dropout rate", "rate", tmp_path / "b.png", categorical=False)
    styles = [[line.get_linestyle() for line in fig.axes[0].lines if line.get_marker() == "o"] for fig in drawn]
    assert styles == [["None"], ["-"]]
