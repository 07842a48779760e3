"""What the shared hashed dropout masks cost against each backend's masks before them, side by side
in one run: torch.rand masks from a torch.Generator (torch's eager path before) and jax.random.bernoulli on
threefry keys (flax.linen.Dropout, jax's path before), against netspec.protocol.counter_hash's masks.

    python -m benchmarks.dropout_masks                       # CPU, the report's MLP (specs/mlp.json)
    python -m benchmarks.dropout_masks --batch 500 --steps 5 --rounds 7 --json out.json

Two measurements per backend, each the median over rounds that alternate the two paths (load from
other processes spreads over both):
- layer: element-wise Dropout(0.5) alone on a (batch, 1024) float32 activation, forward and backward
  (torch eager; jax one jitted value_and_grad);
- step: one training step of the network through Model.train_steps (eager torch, jitted jax step),
  the whole step with the dropout layer as it trains.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable, Optional

import numpy as np

from netspec.protocol.backend import installed_backends
from netspec.spec.experiment import Experiment, TrainConfig
from netspec.spec.params import init_weights

Timer = Callable[[], float]


def _median_pair(before: Timer, after: Timer, rounds: int) -> tuple[float, float]:
    """Median seconds of each, alternating calls (one untimed call each first)."""
    before(), after()
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, timer in enumerate((before, after)):
            times[i].append(timer())
    return statistics.median(times[0]), statistics.median(times[1])


def _timed(fn: Callable[[], Any], repeat: int) -> Timer:
    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat
    return run


# ---- torch -------------------------------------------------------------------------------------------

def _torch_rand_dropout() -> Any:
    """torch's eager Dropout before the shared stream: uniform draws from a generator compared with the keep rate."""
    import torch

    class RandDropout(torch.nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p, self.generator = p, torch.Generator().manual_seed(0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return x
            keep = 1.0 - self.p
            return x * torch.rand(x.shape, generator=self.generator, dtype=x.dtype).lt_(keep).mul_(1.0 / keep)
    return RandDropout


def torch_timers(experiment: Experiment, batch: int, steps: int) -> dict[str, tuple[Timer, Timer]]:
    import torch

    from netspec_backends.torch.builders import build_module
    from netspec_backends.torch.layers import Dropout
    from netspec_backends.torch.model import TorchModel
    from netspec.spec import layers as spec

    torch.set_num_threads(1)
    RandDropout = _torch_rand_dropout()
    x = torch.randn(batch, 1024, requires_grad=True)
    keys = torch.tensor([123456789], dtype=torch.int32)
    layers = (RandDropout(0.5).train(), Dropout(0.5).train())
    layer = [_timed(lambda: layers[0](x).sum().backward(), 20), _timed(lambda: layers[1](x, keys).sum().backward(), 20)]

    network = experiment.network
    weights = init_weights(network, 0)
    rand_module = build_module(network)
    for index, layer_spec in enumerate(network.layers):
        if isinstance(layer_spec, spec.Dropout):
            rand_module[index] = RandDropout(layer_spec.p)
    models = [TorchModel(network, weights, 0, torch.device("cpu"), "cpu", "float32", "off", module=module)
              for module in (rand_module, None)]
    return {"layer": tuple(layer), "step": tuple(_step_timer(m, experiment, batch, steps) for m in models)}


# ---- jax ---------------------------------------------------------------------------------------------

def jax_timers(experiment: Experiment, batch: int, steps: int) -> dict[str, tuple[Timer, Timer]]:
    import jax
    import jax.numpy as jnp

    from netspec_backends.jax import BACKEND
    from netspec_backends.jax.backend import resolve_device
    from netspec_backends.jax.layers import hashed_keep_mask
    from benchmarks.jax_contenders import ThreefryDropoutModel

    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, 1024)), jnp.float32)

    def threefry(x: jax.Array, step: jax.Array) -> jax.Array:
        mask = jax.random.bernoulli(jax.random.fold_in(jax.random.key(0), step), 0.5, x.shape)
        return jnp.where(mask, x * 2.0, 0.0)

    def hashed(x: jax.Array, step: jax.Array) -> jax.Array:
        return x * (hashed_keep_mask(x.shape, step.astype(jnp.uint32), 0.5).astype(x.dtype) * 2.0)

    layer = []
    for fn in (threefry, hashed):
        grad = jax.jit(jax.value_and_grad(lambda x, s, fn=fn: fn(x, s).sum()))
        layer.append(_timed(lambda grad=grad: jax.block_until_ready(grad(x, jnp.uint32(7))), 20))

    network, weights = experiment.network, init_weights(experiment.network, 0)
    where = resolve_device("cpu")
    models = [ThreefryDropoutModel(network, weights, 0, where, "cpu", "float32", "off"),
              BACKEND.compile(network, weights, 0, "cpu", "float32", "off")]
    return {"layer": tuple(layer), "step": tuple(_step_timer(m, experiment, batch, steps) for m in models)}


def _step_timer(model: Any, experiment: Experiment, batch: int, steps: int) -> Timer:
    """Seconds per step of `steps` train_steps on synthetic data of the network's shape."""
    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.standard_normal((n, *experiment.network.input_shape)).astype(np.float32)
    y = rng.integers(0, experiment.network.output_shape[0], n)
    model.setup_optimizer(TrainConfig(batch_size=batch))
    data = model.to_device(x, y)
    rows = np.arange(n).reshape(steps, batch)
    model.warmup(data, batch, steps)

    def run() -> float:
        start = time.perf_counter()
        model.train_steps(data, rows, 1e-4)
        return (time.perf_counter() - start) / steps
    return run


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="specs/mlp.json")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed train_steps call")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backends", default=",".join(installed_backends()))
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)
    experiment = Experiment.load(args.spec)
    builders = {"torch": torch_timers, "jax": jax_timers}
    results = []
    print(f"{'backend':<7} {'what':<6} {'before ms':>10} {'hashed ms':>10} {'ratio':>6}")
    for backend in args.backends.split(","):
        for what, (before, after) in builders[backend](experiment, args.batch, args.steps).items():
            b, a = _median_pair(before, after, args.rounds)
            results.append({"backend": backend, "what": what, "before_s": b, "hashed_s": a, "ratio": a / b})
            print(f"{backend:<7} {what:<6} {b * 1e3:>10.3f} {a * 1e3:>10.3f} {a / b:>6.3f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"spec": args.spec, "batch": args.batch, "results": results}, out, indent=1)


if __name__ == "__main__":
    main()
