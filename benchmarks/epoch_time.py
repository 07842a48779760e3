"""Seconds per training epoch: netspec's compiled model against the same network from torch.nn.

    python -m benchmarks.epoch_time                     # specs/mlp.json, 40,000 x 3072, batch 500
    python -m benchmarks.epoch_time --train-size 8000 --repeats 3

Every contender trains the same network from the same canonical weights on the same synthetic data
and the same per-epoch index batches (one Adam step per batch, cross-entropy, loss and accuracy
summed on the device and read once per epoch). Repeats run round-robin, so load from other processes
on a shared machine spreads over all contenders rather than landing on one; the median is reported.

To add a contender: write `prepare(workload) -> run_epoch(batches) -> seconds` and add a `Contender`
to `CONTENDERS` (the JAX ones come from benchmarks/jax_contenders.py). Ratios are against the first
contender, the torch.nn baseline.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netspec.trainer import batch_index_matrix
from backends.torch import BACKEND, resolve_device
from netspec import layers as spec
from netspec.experiment import Experiment, TrainConfig
from netspec.network import Network
from netspec.params import Weights, init_weights

EpochRunner = Callable[[np.ndarray], float]
"""Runs one epoch over a (steps, batch_size) index matrix; returns its wall-clock seconds."""


@dataclass(frozen=True)
class Workload:
    """What every contender trains: network, initial weights, data and settings."""

    network: Network
    weights: Weights
    x: np.ndarray
    y: np.ndarray
    train: TrainConfig
    seed: int
    device: str | None


@dataclass(frozen=True)
class Contender:
    name: str
    prepare: Callable[[Workload], EpochRunner]
    """Builds the model and puts the data on the device (not timed); returns the epoch runner."""


def torch_nn_network(network: Network) -> nn.Sequential:
    """The network from torch.nn built-ins only (torch's own BatchNorm and Dropout): the reference.

    Deliberately independent of backends/torch/build.py, so the whole-network tests compare two
    separate constructions (tests/test_torch_network.py imports it)."""
    modules: list[nn.Module] = []
    for layer, shape in zip(network.layers, network.shapes()):
        if isinstance(layer, spec.Linear):
            modules.append(nn.Linear(shape[0], layer.out_features, bias=layer.bias))
        elif isinstance(layer, spec.Conv2d):
            modules.append(nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                     bias=layer.bias))
        elif isinstance(layer, spec.BatchNorm):
            norm = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
            modules.append(norm(shape[0], eps=layer.eps, momentum=layer.momentum))
        elif isinstance(layer, spec.ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, spec.Dropout):
            modules.append(nn.Dropout(layer.p))
        elif isinstance(layer, spec.Dropout2d):
            modules.append(nn.Dropout2d(layer.p))
        elif isinstance(layer, spec.MaxPool2d):
            modules.append(nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, spec.Flatten):
            modules.append(nn.Flatten())
        else:
            raise NotImplementedError(f"no torch.nn reference for {layer.type}")
    return nn.Sequential(*modules)


def load_into(module: nn.Module, weights: Weights) -> nn.Module:
    """Canonical weights into any module whose state_dict names are the canonical ones."""
    module.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
    return module


def _timed(epoch: Callable[[np.ndarray], object]) -> EpochRunner:
    def run(batches: np.ndarray) -> float:
        start = time.perf_counter()
        epoch(batches)  # ends with a host read, so the device work is done when it returns
        return time.perf_counter() - start
    return run


def netspec_torch(workload: Workload) -> EpochRunner:
    model = BACKEND.compile(workload.network, workload.weights, workload.seed, workload.device)
    data = model.to_device(workload.x, workload.y)
    model.setup_optimizer(workload.train)
    return _timed(lambda batches: model.train_steps(data, batches, workload.train.lr))


def plain_epoch(module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batches: np.ndarray) -> tuple[float, float]:
    """One epoch of the plain loop anyone would write over index batches; returns the sums over the
    steps of the batch loss and of the correct predictions, read back once."""
    module.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for index in torch.as_tensor(batches, device=x.device):
        xb, yb = x.index_select(0, index), y.index_select(0, index)
        logits = module(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(1) == yb).sum()
    return tuple(torch.stack([loss_sum, correct.double()]).tolist())


def torch_nn_loop(fused: bool) -> Callable[[Workload], EpochRunner]:
    """The reference: torch.nn modules and the plain loop anyone would write, doing the same work as
    TorchModel.train_steps (device gather, forward, loss, backward, Adam step, metrics on the device)."""

    def prepare(workload: Workload) -> EpochRunner:
        device = resolve_device(workload.device)
        torch.manual_seed(workload.seed)
        module = load_into(torch_nn_network(workload.network), workload.weights).to(device)
        opt = workload.train.optimizer
        optimizer = torch.optim.Adam(module.parameters(), lr=workload.train.lr, betas=tuple(opt.betas), eps=opt.eps,
                                     fused=fused or None)
        x = torch.as_tensor(workload.x, device=device)
        y = torch.as_tensor(workload.y, device=device)

        return _timed(lambda batches: plain_epoch(module, optimizer, x, y, batches))

    return prepare


def jax_contenders() -> list[Contender]:
    """The JAX backend, and the same model and loop with flax.linen's BatchNorm/Dropout (when jax is
    installed; see benchmarks/jax_contenders.py)."""
    try:
        from benchmarks import jax_contenders as jc
    except ImportError:
        return []
    return [Contender("netspec jax backend", lambda workload: _timed(jc.netspec_jax(workload))),
            Contender("flax.linen built-ins, same loop", lambda workload: _timed(jc.flax_builtin(workload)))]


CONTENDERS: list[Contender] = [
    Contender("torch.nn built-ins, Adam fused", torch_nn_loop(fused=True)),
    Contender("torch.nn built-ins, Adam default", torch_nn_loop(fused=False)),
    Contender("netspec torch backend", netspec_torch),
    *jax_contenders(),
]
"""The first is the baseline of the ratio column."""


def make_workload(args: argparse.Namespace) -> Workload:
    experiment = Experiment.load(args.spec)
    network = experiment.network
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.train_size, *network.input_shape), dtype=np.float32)
    y = rng.integers(0, network.output_shape[0], size=args.train_size).astype(np.int64)
    train = experiment.train.model_copy(update={"batch_size": args.batch_size})
    return Workload(network, init_weights(network, args.seed), x, y, train, args.seed, args.device)


def run(contenders: list[Contender], workload: Workload, warmup: int, repeats: int) -> list[list[float]]:
    """Seconds of each timed epoch, per contender. Every contender sees the same index batches."""
    rng = np.random.default_rng(42)
    epochs = [batch_index_matrix(rng.permutation(len(workload.y)), workload.train.batch_size)
              for _ in range(warmup + repeats)]
    runners = [c.prepare(workload) for c in contenders]
    times: list[list[float]] = [[] for _ in contenders]
    for i, batches in enumerate(epochs):
        for contender, runner, seconds in zip(contenders, runners, times):
            elapsed = runner(batches)
            if i >= warmup:
                seconds.append(elapsed)
                print(f"  epoch {i - warmup + 1}/{repeats}  {contender.name:<34} {elapsed:7.3f} s", flush=True)
    return times


def report(contenders: list[Contender], times: list[list[float]], steps: int) -> None:
    base = statistics.median(times[0])
    print(f"\n{'contender':<34} {'median s/epoch':>14} {'min':>8} {'ms/step':>8} {'ratio':>7}")
    for contender, seconds in zip(contenders, times):
        median = statistics.median(seconds)
        print(f"{contender.name:<34} {median:14.3f} {min(seconds):8.3f} {1e3 * median / steps:8.1f} {median / base:6.3f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="specs/mlp.json", help="experiment spec whose network is timed")
    parser.add_argument("--train-size", type=int, default=40_000, help="synthetic training examples")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per contender")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per contender")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    workload = make_workload(args)
    steps = args.train_size // args.batch_size
    env = BACKEND.describe()
    print(f"{args.spec}: {workload.network.num_params():,} parameters; {args.train_size:,} examples, batch "
          f"{args.batch_size} ({steps} steps/epoch); torch {env['torch']}, {env['devices'][0]}, "
          f"{torch.get_num_threads()} threads; {args.warmup} warm-up + {args.repeats} timed epochs each")
    report(CONTENDERS, run(CONTENDERS, workload, args.warmup, args.repeats), steps)


if __name__ == "__main__":
    main()
