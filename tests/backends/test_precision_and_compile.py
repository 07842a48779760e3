"""Precision and compiled steps on a CPU: the precision switches and dtypes, compiled vs eager
histories, one compile per run, bit-exact resume with compiled steps, and no host read inside an epoch
except at the chunk boundaries (torch: counted reads; jax: jax.transfer_guard('disallow'))."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from netspec.errors import SpecError
from netspec.runs.identity import run_identity
from netspec.training.trainer import fit
from tests.helpers import stand_in_cuda_graphs, tiny_experiment

BACKENDS = installed_backends()
needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
needs_jax = pytest.mark.skipif("jax" not in BACKENDS, reason="needs jax")

NETWORK = ns.Network(input_shape=(3, 8, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, padding=1, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.3),
    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=16, bias=False), ns.BatchNorm(), ns.ReLU(),
    ns.Dropout(p=0.1), ns.Linear(out_features=10)])
PLAIN = NETWORK.model_copy(update={"layers": [l for l in NETWORK.layers if "Dropout" not in l.type]})


def data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


def epochs(n: int = 96, batch: int = 16, count: int = 3) -> list[np.ndarray]:
    return [np.random.default_rng(i).permutation(n)[: n // batch * batch].reshape(-1, batch) for i in range(count)]


def trained(backend: str, network: ns.Network, compiled: str, precision: str = "float32", warm: bool = True):
    model = load_backend(backend).compile(network, seed=0, device="cpu", precision=precision, compiled=compiled)
    d = model.to_device(*data())
    model.setup_optimizer(ns.TrainConfig(lr=1e-2))
    if warm:
        model.warmup(d, 16, 6)
    return model, d


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile's graph capture without inductor's code generation (30-60 s per graph on a CPU)."""
    monkeypatch.setattr("netspec_backends.torch.model.COMPILE_BACKEND", "aot_eager")


# ---- the setting -------------------------------------------------------------------------------------

def test_defaults_and_the_run_id() -> None:
    """float32 and auto by default; a default precision and any compile setting leave the run id as it
    was before the fields existed; another precision changes it."""
    base = tiny_experiment()
    assert (base.train.precision, base.train.compile) == ("float32", "auto")
    identity = run_identity(base)
    assert "precision" not in identity["train"] and "compile" not in identity["train"]
    assert run_identity(base.with_overrides(["train.compile=off"])) == identity
    assert run_identity(base.with_overrides(["train.precision=bf16"]))["train"]["precision"] == "bf16"
    with pytest.raises(SpecError, match="precision"):
        base.with_overrides(["train.precision=fp16"])


@needs_torch
def test_torch_tf32_switches_are_set_per_model_and_call() -> None:
    """Each model computes in its own precision whatever other models exist in the process: its TF32
    switches are set on entry to each of its calls (seen from inside a layer, by a forward hook) and
    the process's own settings are back after the call, even when the call fails."""
    import torch

    backend = load_backend("torch")
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    process = flags()
    models = {p: backend.compile(PLAIN, device="cpu", precision=p) for p in ("tf32", "float32", "bf16", "highest", "default")}
    assert flags() == process  # compiling changes nothing outside the model
    seen: dict[str, tuple[bool, bool]] = {}
    for precision, model in models.items():
        model.module[0].register_forward_hook(lambda module, args, out, p=precision: seen.__setitem__(p, flags()))
        assert model.precision == ("float32" if precision == "highest" else precision)
        assert not model.compiled  # auto: eager on a CPU
    x, y = data()
    for process in [(False, False), (True, True), (True, False)]:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = process
        for precision, model in models.items():  # interleaved: the last one compiled decides nothing
            for call in (lambda: model.forward(x[:4]), lambda: model.loss_and_grads(x[:4], y[:4]),
                         lambda: model.evaluate(model.to_device(x[:8], y[:8]), 4)):
                seen.clear()
                call()
                fast = precision in ("tf32", "bf16")
                assert seen[precision] == ((fast, fast) if precision != "default" else process), (precision, process)
                assert flags() == process, precision
        with pytest.raises(ValueError):
            models["tf32"].forward(x[:, :1])
        assert flags() == process
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
    assert backend.compile(PLAIN, device="cpu", compiled="on").compiled


@needs_torch
def test_torch_bf16_computes_in_bf16_and_keeps_float32_state() -> None:
    import torch

    model, d = trained("torch", NETWORK, "off", "bf16")
    seen = {}
    model.module[0].register_forward_hook(lambda m, i, o: seen.update(conv=o.dtype) and None)
    model.module[1].register_forward_hook(lambda m, i, o: seen.update(bn=o.dtype) and None)
    loss, acc = model.train_steps(d, epochs()[0], 1e-2)
    assert np.isfinite(loss) and seen == {"conv": torch.bfloat16, "bn": torch.bfloat16}
    assert all(t.dtype == torch.float32 for t in model.module.parameters())
    assert model.module[1].running_mean.dtype == torch.float32 and model.module[1].running_var.dtype == torch.float32
    assert all(v.dtype == torch.float32 for s in model.optimizer.state.values() for k, v in s.items() if k != "step")
    assert model.evaluate(d, 40)[1] >= 0.0


@needs_jax
def test_jax_precisions_and_bf16_compute() -> None:
    import jax
    import jax.numpy as jnp

    backend = load_backend("jax")
    assert backend.compile(PLAIN, device="cpu", precision="float32")._module.precision == jax.lax.Precision.HIGHEST
    assert backend.compile(PLAIN, device="cpu", precision="tf32")._module.precision is None
    model, d = trained("jax", NETWORK, "auto", "bf16")
    s = model._state
    jaxpr = str(jax.make_jaxpr(model._forward_eval_fn)(s.params, s.batch_stats, jnp.zeros((2, 3, 8, 8))))
    assert "conv_general_dilated" in jaxpr and "bf16[2,8,8,4]" in jaxpr  # the conv's output is bf16
    loss, _ = model.train_steps(d, epochs()[0], 1e-2)
    assert np.isfinite(loss)
    leaves = jax.tree.leaves((model._state.params, model._state.opt_state.mu, model._state.opt_state.nu))
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(model._state.batch_stats))


# ---- compiled vs eager, compiled once, resumed exactly ----------------------------------------------------

@needs_torch
def test_compiled_torch_steps_match_eager(aot_eager: None) -> None:
    runs = {}
    for compiled in ("on", "off"):
        model, d = trained("torch", PLAIN, compiled)
        assert model.compiled == (compiled == "on") and model.compile_error is None
        runs[compiled] = ([model.train_steps(d, rows, 1e-2) for rows in epochs()], model.get_weights())
    np.testing.assert_allclose(np.array(runs["on"][0]), np.array(runs["off"][0]), rtol=1e-5)
    for name, value in runs["off"][1].items():
        np.testing.assert_allclose(runs["on"][1][name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@needs_torch
def test_compiled_torch_resumes_bit_for_bit(aot_eager: None) -> None:
    """With hashed dropout masks: the seeds come from the model's generator, which the state carries."""
    whole, d = trained("torch", NETWORK, "on")
    rows = epochs()
    expected = [whole.train_steps(d, r, 1e-2) for r in rows[:2]]
    first, d1 = trained("torch", NETWORK, "on")
    got = [first.train_steps(d1, rows[0], 1e-2)]
    state = first.get_training_state()
    second, d2 = trained("torch", NETWORK, "on")
    second.set_training_state(state)
    got.append(second.train_steps(d2, rows[1], 1e-2))
    assert got == expected
    for name, value in whole.get_weights().items():
        np.testing.assert_array_equal(second.get_weights()[name], value, err_msg=name)


@needs_jax
def test_jax_scan_matches_per_step_steps() -> None:
    """The same masks and updates: equal to float rounding (XLA may fuse a scan's body differently)."""
    runs = {}
    for compiled in ("on", "off"):
        model, d = trained("jax", NETWORK, compiled)
        assert model.compiled == (compiled == "on")
        runs[compiled] = ([model.train_steps(d, rows, 1e-2) for rows in epochs()], model.get_weights())
    np.testing.assert_allclose(np.array(runs["on"][0]), np.array(runs["off"][0]), rtol=1e-5)
    for name, value in runs["off"][1].items():
        np.testing.assert_allclose(runs["on"][1][name], value, rtol=1e-4, atol=1e-5, err_msg=name)


GRAPH = ns.Network(input_shape=(3, 8, 8), layers=[
    ns.Conv2d(out_channels=4, kernel_size=3, padding=1, bias=False, id="a"), ns.BatchNorm(), ns.ReLU(),
    ns.Conv2d(out_channels=4, kernel_size=2, padding="same", bias=False), ns.BatchNorm(train_weight=False), ns.GELU(),
    ns.Add(inputs=["a", 5]), ns.Concat(inputs=[6, "input"]), ns.MaxPool2d(kernel_size=2), ns.GlobalPool(mode="max"),
    ns.Linear(out_features=10), ns.Scale(factor=0.5)])
"""A graph (residual Add, Concat with the input, uneven 'same' padding, a frozen BatchNorm scale)."""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_graph_compiles_like_a_chain(backend: str, aot_eager: None) -> None:
    """A graph's compiled steps (torch.compile; jax's scan) train as its eager ones do."""
    runs = {}
    for compiled in ("on", "off"):
        model, d = trained(backend, GRAPH, compiled)
        assert model.compiled == (compiled == "on") and model.compile_error is None
        runs[compiled] = ([model.train_steps(d, rows, 1e-2) for rows in epochs()], model.get_weights())
    np.testing.assert_allclose(np.array(runs["on"][0]), np.array(runs["off"][0]), rtol=1e-5)
    for name, value in runs["off"][1].items():
        np.testing.assert_allclose(runs["on"][1][name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def _progress_experiment(epochs: int = 3) -> ns.Experiment:
    """46 steps per epoch: the progress bar's 20 chunks are of 3 and 2 steps."""
    experiment = tiny_experiment(epochs=epochs, dropout=0.2, batch_size=16)
    return experiment.model_copy(update={"data": experiment.data.model_copy(update={"train_size": 940, "val_size": 200})})


@needs_jax
def test_jax_compiles_once_per_run_whatever_the_chunks() -> None:
    from netspec_backends.jax.model import TRACES
    from netspec.data import load_dataset

    experiment = _progress_experiment()
    dataset = load_dataset(experiment.data, progress=False)
    model = load_backend("jax").compile(experiment.network, seed=0, device="cpu", compiled="on")
    before = TRACES.copy()
    timings: dict[str, float] = {}
    history = fit(model, experiment, dataset, log=lambda line: None, progress=True, timings=timings)
    assert len(history) == 3 and timings["compile_seconds"] > 0
    assert TRACES["train_chunk"] - before["train_chunk"] == 1
    assert model._chunk_rows == 3  # the largest progress chunk


@needs_jax
def test_jax_per_step_programs_compile_in_warmup_not_in_an_epoch() -> None:
    """A CPU's 'auto' (one jitted step per batch): warmup compiles that step ahead of time, so the first
    epoch pays no compilation and the run reports it as compile_seconds."""
    from netspec_backends.jax.model import TRACES

    model, d = trained("jax", NETWORK, "auto", warm=False)
    assert not model.compiled
    before = TRACES["train_step"]
    model.warmup(d, 16, 6)
    assert TRACES["train_step"] == before + 1
    model.train_steps(d, epochs()[0], 1e-2)
    model.train_steps(d, epochs()[1], 5e-3)
    assert TRACES["train_step"] == before + 1


# ---- no host read inside an epoch ----------------------------------------------------------------------

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@needs_torch
@pytest.mark.parametrize("graphed", [False, True])
def test_torch_reads_back_once_per_train_steps_call(graphed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager, and graphed (a stand-in capture on a CPU: tests/backends/test_torch_step_graph.py)."""
    import torch

    from netspec.data import load_dataset

    experiment = _progress_experiment(epochs=2)
    dataset = load_dataset(experiment.data, progress=False)
    if graphed:
        captures = stand_in_cuda_graphs(monkeypatch)
    model = load_backend("torch").compile(experiment.network, seed=0, device="cpu", compiled="on" if graphed else "auto")
    model.graphed = graphed
    counter = {"reads": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counter["reads"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    calls: list[int] = []
    steps = model.train_steps

    def train_steps(data, batches, lr):
        counter["reads"] = 0
        out = steps(data, batches, lr)
        calls.append(counter["reads"])
        return out
    model.train_steps = train_steps
    fit(model, experiment, dataset, log=lambda line: None, progress=True)
    assert len(calls) >= 2 * 20 and set(calls) == {1}  # the chunk boundaries' reads, nothing per step
    assert model.graphed == graphed and (not graphed or len(captures) == 1)


@needs_jax
@pytest.mark.parametrize("compiled", ["on", "off"])
def test_jax_epoch_makes_no_transfer_but_at_chunk_boundaries(compiled: str) -> None:
    import jax

    from netspec.data import load_dataset

    experiment = _progress_experiment(epochs=1)
    dataset = load_dataset(experiment.data, progress=False)
    model = load_backend("jax").compile(experiment.network, seed=0, device="cpu", compiled=compiled)
    steps, calls = model._run_steps, []

    def guarded(*args, **kwargs):
        with jax.transfer_guard("disallow"):
            calls.append(1)
            return steps(*args, **kwargs)
    model._run_steps = guarded
    fit(model, experiment, dataset, log=lambda line: None, progress=True)
    assert len(calls) >= 20


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_records_precision_compile_and_compile_seconds(backend: str, tmp_path: Path) -> None:
    from netspec.runs.training_run import run_experiment

    # jax compiled ('on': a CPU's 'auto' is per-step jit); torch 'auto' (inductor costs 30-60 s on a CPU)
    experiment = tiny_experiment(epochs=1).with_overrides(["train.precision=bf16"] + (["train.compile=on"] if backend == "jax" else []))
    metrics, folder = run_experiment(experiment, load_backend(backend), tmp_path, device="cpu", log=lambda line: None,
                                     progress=False)
    env = __import__("json").loads((folder / "env.json").read_text())
    assert metrics["precision"] == env["precision"] == "bf16"
    assert metrics["compiled"] == env["compiled"] == (backend == "jax")
    assert metrics["compile_error"] is env["compile_error"] is None
    assert metrics["compile_seconds"] >= 0 and np.isfinite(metrics["test_acc"])


@needs_torch
def test_a_run_whose_compiler_fails_trains_on_and_records_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netspec_backends.torch.model import TorchModel
    from netspec.runs.training_run import run_experiment

    def failing_compiler(self, fullgraph: bool = True):
        def step(*args):
            raise RuntimeError("InductorError: SubprocException: An exception occurred in a subprocess:\n\nthe cause")
        return step
    monkeypatch.setattr(TorchModel, "_compiled_step", failing_compiler)
    experiment = tiny_experiment(epochs=1).with_overrides(["train.compile=on"])
    with pytest.warns(UserWarning, match="torch.compile"):
        metrics, _ = run_experiment(experiment, load_backend("torch"), tmp_path, device="cpu", log=lambda line: None,
                                    progress=False)
    assert metrics["compiled"] is False and np.isfinite(metrics["test_acc"])
    assert metrics["compile_error"] == "torch.compile(fullgraph=False) failed: RuntimeError: InductorError: SubprocException: An exception occurred in a subprocess:"
