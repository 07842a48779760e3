"""A whole experiment with torch.nn built-ins and the plain loop a PyTorch user writes: the baseline
that netspec's runs on the same data are compared with (same split, same initial weights, same batch
order; only the layers' implementation and the loop differ).

    python -m benchmarks.plain_torch specs/mlp.json --data-dir ../shared/data/cifar10-jpeg-q75.tar.gz

Prints each epoch, then the report's seven figures and the median epoch time, and writes them to
--out (JSON) so they can sit beside runs/<spec>/<backend>/*/metrics.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from backends.torch.model import set_precision
from benchmarks.epoch_time import plain_epoch
from tests.references import load_into, torch_nn_network
from netspec.data import Dataset, load_dataset
from netspec.experiment import Experiment
from netspec.params import init_weights
from netspec.tables import metrics_table
from netspec.trainer import EpochRecord, batch_index_matrix, epoch_orders, shape_inputs, summarize


def evaluate(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    module.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = module(x[start:start + batch_size])
            loss += F.cross_entropy(logits, y[start:start + batch_size], reduction="sum").item()
            correct += (logits.argmax(1) == y[start:start + batch_size]).sum().item()
    return loss / len(y), correct / len(y)


def train_plain(experiment: Experiment, data: Dataset, device: torch.device, log: Callable[[str], None] = print,
                history: Optional[list[EpochRecord]] = None) -> tuple[dict[str, Any], list[EpochRecord]]:
    """The experiment with torch.nn built-ins and a plain loop: its metrics (the report's seven figures)
    and per-epoch history, appended to `history` when given (so a caller whose log stops the run keeps
    the epochs done). TF32 follows `train.precision` through the torch backend's own switches ('bf16' is
    not modelled: no autocast, the plain loop runs as 'tf32')."""
    cfg, network = experiment.train, experiment.network
    precision = set_precision("tf32" if cfg.precision == "bf16" else cfg.precision)
    torch.manual_seed(cfg.seed)
    module = load_into(torch_nn_network(network), init_weights(network, cfg.seed)).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=tuple(cfg.optimizer.betas), eps=cfg.optimizer.eps)
    split = lambda name: (torch.as_tensor(shape_inputs(getattr(data, f"{name}_x"), network.input_shape, name), device=device),
                          torch.as_tensor(getattr(data, f"{name}_y"), device=device))
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split("train"), split("val"), split("test")
    orders = epoch_orders(len(train_y), cfg.shuffle_seed)
    history = [] if history is None else history
    best = -1.0
    for epoch in range(1, cfg.epochs + 1):
        batches = batch_index_matrix(next(orders), cfg.batch_size)
        start = time.perf_counter()
        loss_sum, correct = plain_epoch(module, optimizer, train_x, train_y, batches)
        steps = len(batches)
        train_loss, train_acc = loss_sum / steps, correct / (steps * cfg.batch_size)
        seconds = time.perf_counter() - start
        val_loss, val_acc = evaluate(module, val_x, val_y, cfg.eval_batch_size)
        record = EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, cfg.lr, seconds, steps * cfg.batch_size / seconds)
        if val_acc >= best:
            best = val_acc
            record.test_loss, record.test_acc = evaluate(module, test_x, test_y, cfg.eval_batch_size)
        history.append(record)
        log(record.line(cfg.epochs))
    metrics = summarize(history) | {"backend": "plain torch.nn", "device": str(device), "name": experiment.name,
                                    "precision": precision}
    return metrics, history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--data-dir", help="local CIFAR-10 copy (as runner.py's --data-dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="JSON file for the metrics (default: runs/<name>/plain_torch.json)")
    args = parser.parse_args(argv)
    overrides = ([f"data.dir={json.dumps(args.data_dir)}"] if args.data_dir else []) + args.overrides
    experiment = Experiment.load(args.spec, overrides)
    metrics, history = train_plain(experiment, load_dataset(experiment.data), torch.device(args.device),
                                   log=lambda line: print(line, flush=True))
    out = Path(args.out or f"runs/{experiment.name}/plain_torch.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"metrics": metrics, "history": [vars(r) for r in history]}, indent=2))
    print(metrics_table({f"{experiment.name} [plain torch.nn]": metrics}))
    print(f"median epoch {metrics['median_epoch_seconds']:.2f}s; written to {out}")


if __name__ == "__main__":
    main()
