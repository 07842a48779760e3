"""A whole experiment with torch.nn built-ins and the plain loop a PyTorch user writes: the baseline
that netspec's runs on the same data are compared with (same split, same initial weights, same batch
order, the same augmentation draws; only the layers' implementation, the optimizer's and the loop
differ). The training recipe (specs/resnet9_recipe.json) runs with torch.optim's SGD/Adam/AdamW,
torch's label smoothing and plain pad/crop/flip/cutout code (no torchvision).

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

import numpy as np

from netspec_backends.torch.model import set_precision
from tests.references import load_into, torch_nn_network
from netspec.protocol.augment import Draws, draw
from netspec.data import Dataset, load_dataset
from netspec.spec.experiment import AugmentConfig, Experiment
from netspec.protocol.param_groups import groups_of, tensor_rules
from netspec.spec.params import init_weights
from netspec.training.schedules import learning_rates
from netspec.runs.tables import metrics_table
from netspec.runs.records import summarize
from netspec.training.history import EpochRecord
from netspec.training.schedules import LabLrRule
from netspec.training.trainer import batch_index_matrix, early_stop, epoch_orders, shape_inputs


def plain_optimizer(module: torch.nn.Module, experiment: Experiment) -> tuple[torch.optim.Optimizer, list[float]]:
    """torch.optim's own optimizer for train.optimizer, one param group per rule of netspec.protocol.param_groups
    (weight decay, lr multiplier); returns it and each group's lr multiplier."""
    cfg = experiment.train
    opt = cfg.optimizer
    named = dict(module.named_parameters())
    groups = groups_of(tensor_rules(experiment.network, cfg))
    params = [{"params": [named[n] for n in names], "weight_decay": rule.weight_decay} for rule, names in groups.items()]
    scales = [rule.lr_scale for rule in groups]
    if opt.type == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=opt.momentum, nesterov=opt.nesterov), scales
    kind = torch.optim.AdamW if opt.type == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, betas=tuple(opt.betas), eps=opt.eps), scales


def plain_augment(padded: torch.Tensor, index: torch.Tensor, draws: Draws, config: AugmentConfig, height: int,
                  width: int) -> torch.Tensor:
    """The batch `index` of a split padded once (F.pad), cropped at its draws' offsets, flipped, cut out:
    the plain formulation (pad, crop, flip, zero a window), written apart from netspec.protocol.augment's index maps."""
    device = padded.device
    dy, dx, cy, cx = (torch.as_tensor(a, device=device) for a in (draws.dy, draws.dx, draws.cut_y, draws.cut_x))
    rows = dy[:, None] + torch.arange(height, device=device)
    cols = dx[:, None] + torch.arange(width, device=device)
    crops = padded[index[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.as_tensor(draws.flip, device=device)[:, None, None, None]
    crops = torch.where(flip, crops.flip(3), crops)
    r, c = torch.arange(height, device=device), torch.arange(width, device=device)
    inside = (((r >= cy[:, None]) & (r < cy[:, None] + config.cutout))[:, :, None]
              & ((c >= cx[:, None]) & (c < cx[:, None] + config.cutout))[:, None, :])
    return torch.where(inside[:, None], torch.zeros((), dtype=crops.dtype, device=device), crops)


def pad_split(x: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    p = config.crop_padding
    return F.pad(x, (p, p, p, p), mode="constant" if config.pad_mode == "zeros" else "reflect") if p else x


def evaluate(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             flip: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy; flip: on the mean of the logits of each image and its mirror image."""
    module.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = module(xb).float()
            if flip:
                logits = (logits + module(xb.flip(3)).float()) / 2
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    return loss / len(y), correct / len(y)


def recipe_epoch(module: torch.nn.Module, optimizer: torch.optim.Optimizer, scales: list[float], padded: torch.Tensor,
                 train_y: torch.Tensor, batches: np.ndarray, lrs: np.ndarray, experiment: Experiment,
                 epoch: int) -> tuple[float, float]:
    """One epoch of the plain loop with the recipe: the lr of each step into each group, the augmented
    batch, label smoothing, bf16 autocast when asked; sums read back once."""
    cfg = experiment.train
    height, width = experiment.network.input_shape[1:] if cfg.augment.active else (0, 0)
    module.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=padded.device)
    correct = torch.zeros((), dtype=torch.int64, device=padded.device)
    autocast = torch.autocast(padded.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    for step, index in enumerate(torch.as_tensor(batches, device=padded.device)):
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = float(lrs[step]) * scale
        if cfg.augment.active:
            draws = draw(cfg.augment, cfg.seed, epoch, batches[step], height, width)
            xb = plain_augment(padded, index, draws, cfg.augment, height, width)
        else:
            xb = padded.index_select(0, index)
        yb = train_y.index_select(0, index)
        with autocast:
            logits = module(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(1) == yb).sum()
    return tuple(torch.stack([loss_sum, correct.double()]).tolist())


def train_plain(experiment: Experiment, data: Dataset, device: torch.device, log: Callable[[str], None] = print,
                history: Optional[list[EpochRecord]] = None) -> tuple[dict[str, Any], list[EpochRecord]]:
    """The experiment with torch.nn built-ins and a plain loop: its metrics (the report's seven figures)
    and per-epoch history, appended to `history` when given (so a caller whose log stops the run keeps
    the epochs done). TF32 follows `train.precision` through the torch backend's own switches; 'bf16'
    runs the forward pass under torch.autocast. The recipe (optimizer, parameter groups, schedule,
    label smoothing, augmentation, flip TTA, early stopping) is the spec's, with torch's own pieces."""
    cfg, network = experiment.train, experiment.network
    precision = set_precision(cfg.precision)
    torch.manual_seed(cfg.seed)
    module = load_into(torch_nn_network(network), init_weights(network, cfg.seed)).to(device)
    optimizer, scales = plain_optimizer(module, experiment)
    split = lambda name: (torch.as_tensor(shape_inputs(getattr(data, f"{name}_x"), network.input_shape, name), device=device),
                          torch.as_tensor(getattr(data, f"{name}_y"), device=device))
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split("train"), split("val"), split("test")
    padded = pad_split(train_x, cfg.augment)
    orders = epoch_orders(len(train_y), cfg.shuffle_seed, cfg.shuffle_first_epoch)
    history = [] if history is None else history
    lab = LabLrRule(cfg.lr, cfg.lr_decay)
    best = -1.0
    for epoch in range(1, cfg.epochs + 1):
        batches = batch_index_matrix(next(orders), cfg.batch_size)
        steps = len(batches)
        lrs = learning_rates(np.arange((epoch - 1) * steps, epoch * steps), steps, cfg, lr=lab.lr)
        start = time.perf_counter()
        loss_sum, correct = recipe_epoch(module, optimizer, scales, padded, train_y, batches, lrs, experiment, epoch)
        train_loss, train_acc = loss_sum / steps, correct / (steps * cfg.batch_size)
        seconds = time.perf_counter() - start
        val_loss, val_acc = evaluate(module, val_x, val_y, cfg.eval_batch_size, cfg.test_time_flip)
        record = EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, float(lrs[-1]), seconds,
                             steps * cfg.batch_size / seconds)
        if val_acc >= best:
            best = val_acc
            record.test_loss, record.test_acc = evaluate(module, test_x, test_y, cfg.eval_batch_size, cfg.test_time_flip)
        history.append(record)
        log(record.line(cfg.epochs))
        lab.after_epoch(train_loss)
        if early_stop(history, cfg.early_stopping_patience) is not None:
            break
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
