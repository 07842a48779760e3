"""GPU-only checks: no host synchronisation inside a graphed or eager torch epoch
(torch.cuda.set_sync_debug_mode('error')), no transfer inside a jax epoch, the precision switches on a
GPU, compiled vs eager steps, CUDA-graphed vs ungraphed steps. Skipped without CUDA; `python -m benchmarks.gpu_check` runs them."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import netspec as ns  # noqa: E402
from netspec.protocol.backend import installed_backends, load_backend  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

NETWORK = ns.Network(input_shape=(3, 16, 16), layers=[
    ns.Conv2d(out_channels=16, kernel_size=3, padding=1, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=0.2),
    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=32), ns.BatchNorm(), ns.ReLU(),
    ns.Dropout(p=0.2), ns.Linear(out_features=10)])
PLAIN = NETWORK.model_copy(update={"layers": [l for l in NETWORK.layers if "Dropout" not in l.type]})
BATCH = 32


def data(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, n)


def rows(n: int, steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)[: steps * BATCH].reshape(steps, BATCH)


def torch_model(network: ns.Network, compiled: str, precision: str = "float32"):
    model = load_backend("torch").compile(network, seed=0, device="cuda", precision=precision, compiled=compiled)
    x, y = data()
    d = model.to_device(x, y)
    model.setup_optimizer(ns.TrainConfig())
    model.warmup(d, BATCH, 8)
    return model, d


@pytest.mark.parametrize("compiled", ["on", "off"])
def test_a_torch_epoch_never_synchronizes(compiled: str) -> None:
    # Compiled and graphed: the network of the next test (one inductor compile, then its cache); the
    # hashed dropout under inductor has its own test below.
    model, d = torch_model(PLAIN if compiled == "on" else NETWORK, compiled)
    assert model.compiled == model.graphed == (compiled == "on") and model.compile_error is None
    assert (model._graph is not None) == (compiled == "on")  # captured by warmup: replays only below
    index = torch.as_tensor(rows(256, 8, 1), device=model.torch_device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = model._run_steps(d, index, np.full(len(index), 1e-3), None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(torch.stack([sums[0], sums[1].double()]).tolist()).all()


def test_compiled_torch_matches_eager_on_the_gpu() -> None:
    results = []
    for compiled in ("on", "off"):
        model, d = torch_model(PLAIN, compiled)
        results.append([model.train_steps(d, rows(256, 8, seed), 1e-3) for seed in range(3)])
    np.testing.assert_allclose(np.array(results[0]), np.array(results[1]), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("precision,compiled", [("float32", True), ("bf16", False)])
def test_graphed_steps_match_ungraphed_steps_on_the_gpu(precision: str, compiled: bool) -> None:
    """The whole step replayed from a CUDA graph, hashed dropout and a learning rate that changes between
    calls included, against the same step run ungraphed (lrs exact in float32, as the graph's lr tensor
    is): compiled in float32; in bf16 uncompiled (no inductor time), autocast inside the capture, without
    dropout (uncompiled ungraphed steps draw other masks). Not bit for bit: cuDNN may pick other
    algorithms inside a capture."""
    runs = []
    for graphed in (True, False):
        network = NETWORK if compiled else PLAIN
        model = load_backend("torch").compile(network, seed=0, device="cuda", precision=precision, compiled="on")
        model.compiled, model.graphed = compiled, graphed
        x, y = data()
        d = model.to_device(x, y)
        model.setup_optimizer(ns.TrainConfig(lr=2.0**-10))
        model.warmup(d, BATCH, 8)
        assert model.graphed == graphed, model.compile_error
        runs.append([model.train_steps(d, rows(256, 8, seed), lr) for seed, lr in enumerate((2.0**-10, 2.0**-11, 2.0**-10))])
        runs[-1].append(model.evaluate(d, 64))
    tolerance = 1e-4 if precision == "float32" else 2e-2  # bf16: one rounding of 2**-8 can flip a ReLU
    np.testing.assert_allclose(np.array(runs[0]), np.array(runs[1]), rtol=tolerance, atol=tolerance)


def test_inductor_compiles_the_hashed_dropout_masks_exactly() -> None:
    """Steps hash their dropout masks in int32 tensor ops (layers.hashed_keep_mask) so that inductor fuses
    them with their use. Under torch 2.11 inductor once failed on the netspec MLP, whose dropout is the
    only hashed part: its whole message is the assertion's. The masks must be the numpy reference's
    (netspec.protocol.counter_hash.keep_mask) bit for bit, compiled on the GPU as eager on the CPU (integer ops
    leave a code generator no rounding to hide behind)."""
    from netspec_backends.torch.layers import hashed_keep_mask, position_words
    from netspec.protocol.counter_hash import dropout_keys, keep_mask

    device = torch.device("cuda")
    key = torch.tensor(int(dropout_keys(123_456_789, 4, 1, 4)[0, 3].view(np.int32)), dtype=torch.int32, device=device)
    compiled = torch.compile(lambda k: hashed_keep_mask(position_words((500, 1024), device), k, 0.3), fullgraph=True)
    mask = compiled(key)
    np.testing.assert_array_equal(mask.cpu().numpy(), keep_mask(123_456_789, 4, 3, (500, 1024), 0.3))
    assert abs(mask.float().mean().item() - 0.7) < 0.01
    network = ns.Network(input_shape=(3, 16, 16), layers=[ns.Flatten(), ns.Linear(out_features=64), ns.BatchNorm(),
                                                          ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=10)])
    model, _ = torch_model(network, "on")
    assert model.compiled and model.compile_error is None, model.compile_error_detail


def test_precision_switches_on_the_gpu() -> None:
    backend = load_backend("torch")
    backend.compile(PLAIN, device="cuda", precision="tf32", compiled="off")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    model = backend.compile(PLAIN, device="cuda", precision="bf16", compiled="off")
    seen = []
    model.module[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype) and None)
    x, y = data(64)
    d = model.to_device(x, y)
    model.setup_optimizer(ns.TrainConfig())
    model.train_steps(d, rows(64, 2, 0), 1e-3)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    backend.compile(PLAIN, device="cuda", precision="float32", compiled="off")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


@pytest.mark.skipif("jax" not in installed_backends(), reason="needs jax")
def test_a_jax_epoch_makes_no_implicit_transfer() -> None:
    import jax

    model = load_backend("jax").compile(NETWORK, seed=0, device="gpu", precision="bf16")
    x, y = data()
    d = model.to_device(x, y)
    model.setup_optimizer(ns.TrainConfig())
    model.warmup(d, BATCH, 8)
    with jax.transfer_guard("disallow"):
        sums = model._run_steps(d, rows(256, 8, 1).astype(np.int32), np.full(8, 1e-3), None)
    assert np.isfinite(np.asarray(sums)).all()
