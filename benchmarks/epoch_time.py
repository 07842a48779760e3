"""Seconds per training epoch: netspec's backends against the same networks built from the frameworks'
own layers, for each precision, compiled and eager, in one run.

    python -m benchmarks.epoch_time                                  # the default plan on this machine
    python -m benchmarks.epoch_time --budget-s 150 --train-size 20000 --json table.json
    python -m benchmarks.epoch_time --nets cnn --precisions tf32,bf16 --modes compiled
    python -m benchmarks.epoch_time --tiny                           # a small plan for a CPU, seconds

Every configuration (network x backend x implementation x precision x mode) trains the same network
from the same canonical weights on the same synthetic data and the same per-epoch index batches, with
the backend's own loop (Model.train_steps: device-resident data, one read per epoch). The contender
of a netspec row is the same network with the framework's built-in BatchNorm and Dropout (torch.nn,
flax.linen) run by the same model class, compiled the same way, so the ratio column is the cost of the
hand-written layers alone. Compilation (Model.warmup) and one untimed epoch are paid before timing and
reported apart. Timed epochs run round-robin over all prepared configurations, so load from other
processes spreads over all of them; the median is reported.

A budget (--budget-s) bounds the run: configurations are prepared in the plan's order (most important
first) while less than 70% of it is spent, the rest are listed as skipped; timing rounds run while
time is left (at least one).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netspec.spec import layers as spec
from netspec.spec.experiment import Experiment, TrainConfig
from netspec.spec.network import Network
from netspec.spec.params import Weights, init_weights
from netspec.training.trainer import batch_index_matrix
from tests.references import torch_nn_network  # the same torch.nn reference the tests use

SPECS = Path(__file__).resolve().parents[1] / "specs"
PREPARE_SHARE = 0.7
"""Share of the budget that preparing (building, compiling, one untimed epoch) may use."""


def _with_dropout(network: Network, layer: Any) -> Network:
    """The network with each Dropout2d/Dropout replaced by `layer` (benchmarks of dropout's cost)."""
    layers = [layer if isinstance(l, (spec.Dropout, spec.Dropout2d)) else l for l in network.layers]
    return network.model_copy(update={"layers": layers})


def networks(tiny: bool) -> dict[str, tuple[Network, int]]:
    """Name -> (network, batch size): the report's MLP (batch 500) and CNN (batch 100), and the CNN with
    element-wise and with channel dropout at p=0.5 (the report paid 5x for element-wise). --tiny: the
    same shapes of network, narrow."""
    mlp = Experiment.load(SPECS / "mlp.json").network
    cnn = Experiment.load(SPECS / "cnn.json").network
    if tiny:
        mlp = mlp.model_copy(update={"layers": [l.model_copy(update={"out_features": 32}) if isinstance(l, spec.Linear)
                                                and l is not mlp.layers[-1] else l for l in mlp.layers]})
        cnn = cnn.model_copy(update={"layers": [l.model_copy(update={"out_channels": 4}) if isinstance(l, spec.Conv2d) else l
                                                for l in cnn.layers]})
    resnet9 = Experiment.load(SPECS / "resnet9.json").network
    if tiny:  # ResNet-9's graph, an eighth of its channels
        resnet9 = resnet9.model_copy(update={"layers": [l.model_copy(update={"out_channels": l.out_channels // 8})
                                                        if isinstance(l, spec.Conv2d) else l for l in resnet9.layers]})
    return {"mlp": (mlp, 500 if not tiny else 25), "cnn": (cnn, 100 if not tiny else 25),
            "resnet9": (resnet9, 512 if not tiny else 32),
            "cnn+dropout": (_with_dropout(cnn, spec.Dropout(p=0.5)), 100 if not tiny else 25),
            "cnn+dropout2d": (_with_dropout(cnn, spec.Dropout2d(p=0.5)), 100 if not tiny else 25)}


@dataclass(frozen=True)
class Config:
    net: str
    backend: str
    """'torch' or 'jax'."""
    impl: str
    """'netspec' (the backend) or 'builtin' (the framework's own BatchNorm and Dropout, same model class)."""
    precision: str
    mode: str
    """'compiled' or 'eager' (jax: one jitted step per batch)."""

    @property
    def label(self) -> str:
        return f"{self.net} {self.backend} {self.impl} {self.precision} {self.mode}"


@dataclass
class Row:
    config: Config
    device: str = ""
    compile_s: float = math.nan
    seconds: list[float] = field(default_factory=list)
    error: Optional[str] = None
    error_detail: Optional[str] = None
    """A compiler's whole message (the JSON only): its cause is on its last lines."""
    graphed: Optional[bool] = None
    """torch: whether the step was replayed from a CUDA graph."""


def plan(nets: list[str], backends: list[str], precisions: list[str], modes: list[str], impls: list[str]) -> list[Config]:
    """Configurations, most important first: per precision and network, both backends and both
    implementations side by side (compiled before eager)."""
    out = []
    for mode in modes:
        for precision in precisions:
            for net in nets:
                for backend in backends:
                    for impl in impls:
                        out.append(Config(net, backend, impl, precision, mode))
    # compiled tf32/bf16 CNN first, then the MLP, the dropout pair, eager, float32
    def rank(c: Config) -> tuple[int, ...]:
        return (modes.index(c.mode), precisions.index(c.precision), nets.index(c.net))
    return sorted(out, key=rank)


def default_plan(device_is_gpu: bool, tiny: bool) -> list[Config]:
    if tiny:  # a CPU in seconds: eager torch (torch.compile costs 30-60 s per graph on a CPU), jax scans
        return ([Config(n, "torch", i, "float32", "eager") for n in ("mlp", "cnn") for i in ("netspec", "builtin")]
                + [Config(n, "jax", i, "float32", "compiled") for n in ("mlp", "cnn") for i in ("netspec", "builtin")]
                + [Config(n, "torch", "netspec", "float32", "eager") for n in ("cnn+dropout", "cnn+dropout2d")])
    if not device_is_gpu:
        return plan(["mlp", "cnn"], ["torch", "jax"], ["float32"], ["eager", "compiled"], ["netspec", "builtin"])
    both = ["torch", "jax"]
    ni = ["netspec", "builtin"]
    # Most informative first, as a GPU check's budget runs out: the CNN in tf32 against
    # its built-in contender; the MLP (torch's whole-step graphs matter most there); the CNN in bf16; the
    # dropout pair (element-wise vs channel); eager netspec CNN rows (do jax's scan and torch's graphs pay
    # on this GPU? on a CPU a scan lost 7x); then the rest.
    configs = (plan(["cnn"], both, ["tf32"], ["compiled"], ni)
               + plan(["mlp"], both, ["tf32"], ["compiled"], ni)
               + plan(["cnn"], both, ["bf16"], ["compiled"], ["netspec"])
               + plan(["cnn+dropout", "cnn+dropout2d"], ["torch"], ["bf16"], ["compiled"], ["netspec"])  # pairs whole
               + plan(["cnn+dropout", "cnn+dropout2d"], ["jax"], ["bf16"], ["compiled"], ["netspec"])
               + plan(["cnn"], both, ["tf32"], ["eager"], ["netspec"])
               + plan(["cnn"], both, ["bf16"], ["compiled"], ["builtin"])
               + plan(["cnn"], both, ["tf32"], ["eager"], ["builtin"])
               + plan(["mlp"], both, ["bf16"], ["compiled"], ni)
               + plan(["cnn"], both, ["float32"], ["compiled"], ["netspec"]))
    return list(dict.fromkeys(configs))


# ---- contenders -------------------------------------------------------------------------------------

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


EpochRunner = Callable[[np.ndarray], float]


def _timed(model: Any, data: Any, lr: float) -> EpochRunner:
    def run(batches: np.ndarray) -> float:
        start = time.perf_counter()
        model.train_steps(data, batches, lr)  # ends with the one host read: the device work is done
        return time.perf_counter() - start
    return run


def build_model(config: Config, network: Network, weights: Weights, seed: int, device: Optional[str]) -> Any:
    compiled = "on" if config.mode == "compiled" else "off"
    if config.backend == "torch":
        from netspec_backends.torch import BACKEND, resolve_device
        from netspec_backends.torch.backend import device_words
        from netspec_backends.torch.model import TorchModel

        if config.impl == "netspec":
            return BACKEND.compile(network, weights, seed, device, config.precision, compiled)
        where = resolve_device(device)
        torch.manual_seed(seed)
        return TorchModel(network, weights, seed, where, device_words(where), config.precision, compiled,
                          module=torch_nn_network(network))
    from benchmarks import jax_contenders as jc
    return jc.build(config.impl, network, weights, seed, device, config.precision, compiled)


def prepare(config: Config, network: Network, batch_size: int, x: np.ndarray, y: np.ndarray, seed: int,
            device: Optional[str], first_epoch: np.ndarray, row: Row) -> EpochRunner:
    """Build, put the data on the device, compile (timed as compile_s) and run one untimed epoch."""
    model = build_model(config, network, init_weights(network, seed), seed, device)
    row.device = model.device
    train = TrainConfig(batch_size=batch_size)
    data = model.to_device(x, y)
    model.setup_optimizer(train)
    start = time.perf_counter()
    model.warmup(data, batch_size, len(first_epoch))
    runner = _timed(model, data, train.lr)
    runner(first_epoch)  # also compiles what warmup does not (jax 'eager': the per-step jit)
    row.compile_s = time.perf_counter() - start
    if getattr(model, "compile_error", None):
        row.error, row.error_detail = model.compile_error, getattr(model, "compile_error_detail", None)
    row.graphed = getattr(model, "graphed", None)
    return runner


# ---- the run -----------------------------------------------------------------------------------------

def run(configs: list[Config], train_size: int, repeats: int, budget_s: float, device: Optional[str], seed: int = 0,
        tiny: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    start = time.perf_counter()
    nets = networks(tiny)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((train_size, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, size=train_size).astype(np.int64)
    rows: list[Row] = []
    runners: list[tuple[Row, EpochRunner, np.ndarray, list[np.ndarray]]] = []
    skipped: list[str] = []
    for config in configs:
        if time.perf_counter() - start > PREPARE_SHARE * budget_s:
            skipped.append(config.label)
            continue
        network, batch_size = nets[config.net]
        inputs = x.reshape(train_size, *network.input_shape)
        orders = [batch_index_matrix(np.random.default_rng(i).permutation(train_size), batch_size) for i in range(repeats + 1)]
        row = Row(config)
        try:
            runner = prepare(config, network, batch_size, inputs, y, seed, device, orders[0], row)
            runners.append((row, runner, orders[0], orders[1:]))
            log(f"  prepared {config.label:<44} compile+first epoch {row.compile_s:6.1f} s")
        except Exception as err:  # one configuration's failure is a row of the table, not the end
            row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            log(f"  FAILED   {config.label:<44} {row.error}")
        rows.append(row)
    for round_ in range(repeats):
        if round_ and time.perf_counter() - start > budget_s:
            break
        for row, runner, _, orders in runners:
            try:
                row.seconds.append(runner(orders[round_]))
            except Exception as err:
                row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        log(f"  round {round_ + 1}/{repeats} done at {time.perf_counter() - start:.1f} s")
    return table(rows, nets, train_size, skipped, time.perf_counter() - start)


def table(rows: list[Row], nets: dict[str, tuple[Network, int]], train_size: int, skipped: list[str],
          seconds: float) -> dict[str, Any]:
    """The JSON document: one entry per configuration, ratios to the built-in contender, dropout ratios."""
    medians = {row.config: statistics.median(row.seconds) for row in rows if row.seconds}
    out = []
    for row in rows:
        c = row.config
        median = medians.get(c)
        builtin = medians.get(Config(c.net, c.backend, "builtin", c.precision, c.mode))
        batch = nets[c.net][1]
        steps = train_size // batch
        out.append({**asdict(c), "device": row.device, "batch_size": batch, "steps": steps,
                    "s_per_epoch": median, "min_s": min(row.seconds) if row.seconds else None,
                    "images_per_s": steps * batch / median if median else None,
                    "ratio_to_builtin": median / builtin if median and builtin else None,
                    "compile_s": None if math.isnan(row.compile_s) else row.compile_s,
                    "timed_epochs": len(row.seconds), "graphed": row.graphed, "error": row.error,
                    "error_detail": row.error_detail})
    dropout = []
    for c, median in medians.items():
        if c.net == "cnn+dropout":
            channel = medians.get(Config("cnn+dropout2d", c.backend, c.impl, c.precision, c.mode))
            if channel:
                dropout.append({"backend": c.backend, "impl": c.impl, "precision": c.precision, "mode": c.mode,
                                "elementwise_s": median, "channel_s": channel, "ratio": median / channel})
    return {"device": next((r.device for r in rows if r.device), ""), "train_size": train_size,
            "torch": torch.__version__, "rows": out, "dropout_elementwise_vs_channel": dropout,
            "skipped": skipped, "seconds": seconds}


def format_table(doc: dict[str, Any]) -> str:
    """The table as text: s/epoch (median), images/s, ratio to the built-in contender, compile time."""
    lines = [f"device: {doc['device']}; {doc['train_size']:,} images per epoch; torch {doc['torch']}",
             f"{'network':<14} {'backend':<6} {'impl':<8} {'precision':<8} {'mode':<14} {'s/epoch':>9} "
             f"{'images/s':>11} {'vs built-in':>11} {'compile s':>9}"]
    for r in doc["rows"]:
        if r["s_per_epoch"] is None:
            lines.append(f"{r['net']:<14} {r['backend']:<6} {r['impl']:<8} {r['precision']:<8} {r['mode']:<14} "
                         f"{'failed':>9}  {r['error'] or ''}")
            continue
        ratio = f"{r['ratio_to_builtin']:.2f}x" if r["ratio_to_builtin"] else "-"
        note = f"  ({r['error']})" if r["error"] else ""
        mode = r["mode"] + ("+graph" if r.get("graphed") else "")
        lines.append(f"{r['net']:<14} {r['backend']:<6} {r['impl']:<8} {r['precision']:<8} {mode:<14} "
                     f"{r['s_per_epoch']:9.4f} {r['images_per_s']:11,.0f} {ratio:>11} {r['compile_s'] or 0:9.1f}{note}")
    for d in doc["dropout_elementwise_vs_channel"]:
        lines.append(f"element-wise / channel dropout, {d['backend']} {d['impl']} {d['precision']} {d['mode']}: "
                     f"{d['ratio']:.2f}x ({d['elementwise_s']:.4f} s vs {d['channel_s']:.4f} s)")
    if doc["skipped"]:
        lines.append(f"skipped for the budget: {len(doc['skipped'])} ({'; '.join(doc['skipped'])})")
    return "\n".join(lines)


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="narrow networks, small data, a CPU plan: seconds")
    parser.add_argument("--train-size", type=int, default=None, help="synthetic training images (default 40,000; --tiny 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per configuration (round-robin)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="stop preparing at 70%% of it, timing at 100%%")
    parser.add_argument("--nets", default=None, help="comma list of mlp, cnn, cnn+dropout, cnn+dropout2d, resnet9")
    parser.add_argument("--backends", default=None, help="comma list of torch, jax")
    parser.add_argument("--precisions", default=None, help="comma list of float32, tf32, bf16")
    parser.add_argument("--modes", default=None, help="comma list of compiled, eager")
    parser.add_argument("--impls", default=None, help="comma list of netspec, builtin")
    parser.add_argument("--device", default=None, help="cpu, gpu, cuda:N (default: a GPU when there is one)")
    parser.add_argument("--json", default=None, help="write the table as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train_size = args.train_size or (100 if args.tiny else 40_000)
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: torch's spinning threads only slow a shared CPU down
    gpu = torch.cuda.is_available() and (args.device or "gpu").lower() not in ("cpu",)
    configs = default_plan(gpu, args.tiny)
    chosen = {k: _names(getattr(args, k)) for k in ("nets", "backends", "precisions", "modes", "impls")}
    if any(chosen.values()):
        pick = lambda k, default: chosen[k] or default
        configs = plan(pick("nets", ["cnn", "mlp"]), pick("backends", ["torch", "jax"]), pick("precisions", ["tf32", "bf16"]),
                       pick("modes", ["compiled"]), pick("impls", ["netspec", "builtin"]))
    if not _jax_available():
        configs = [c for c in configs if c.backend != "jax"]
    print(f"{len(configs)} configurations, {train_size:,} images, {args.repeats} timed epochs each, budget {args.budget_s:.0f} s",
          flush=True)
    doc = run(configs, train_size, args.repeats, args.budget_s, args.device, args.seed, args.tiny,
              log=lambda line: print(line, flush=True))
    print(format_table(doc), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return doc


def _jax_available() -> bool:
    try:
        import jax  # noqa: F401
        import flax  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
    sys.exit(0)
