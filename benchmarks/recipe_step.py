"""What the training recipe costs per step (the goal: an SGD or AdamW step with augmentation at
most 1.10x a plain Adam step without it), per backend, in one run on the same machine.

    python -m benchmarks.recipe_step                        # the report's CNN (specs/cnn.json), CPU
    python -m benchmarks.recipe_step --steps 20 --batch 100 --rounds 5 --json out.json

Each backend compiles the network once per recipe from the same canonical weights and trains the
same index rows of synthetic data through Model.train_steps (the trainer's unit: device-resident data,
one read per call), with the per-step lrs and augmentation plans the trainer would hand it. One warm-up
call per configuration, then rounds that go round-robin over all configurations (load from other
processes spreads over all of them); the median per step is reported, and each recipe's ratio to
plain Adam on the same backend printed side by side.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from netspec.protocol.augment import batch_draws
from netspec.protocol.backend import installed_backends, load_backend
from netspec.spec.experiment import Experiment, TrainConfig
from netspec.spec.params import init_weights
from netspec.training.schedules import learning_rates

RECIPES: dict[str, dict[str, Any]] = {
    "adam (plain)": {},
    "sgd+nesterov+wd, crop/flip/cutout": {
        "optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, "lr": 0.1,
        "schedule": {"type": "piecewise_linear", "knots": [[0, 0], [1, 1], [2, 0]]}, "label_smoothing": 0.2,
        "augment": {"crop_padding": 4, "pad_mode": "reflect", "flip": True, "cutout": 8}},
    "adamw, crop/flip/cutout": {
        "optimizer": {"type": "adamw", "weight_decay": 0.05},
        "augment": {"crop_padding": 4, "pad_mode": "zeros", "flip": True, "cutout": 8}},
}


def _call_args(config: TrainConfig, rows: np.ndarray, shape: tuple[int, ...]) -> tuple[Any, dict[str, Any]]:
    """The lr argument and the augmentation keyword a trainer would pass for `rows` in epoch 1."""
    lrs = learning_rates(np.arange(len(rows)), max(1, len(rows) // 2), config)
    lr: Any = float(lrs[0]) if (lrs == lrs[0]).all() else lrs
    extra = {"augment": batch_draws(config.augment, config.seed, 1, rows, shape[1], shape[2])} if config.augment.active else {}
    return lr, extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="specs/cnn.json")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per timed call")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default=",".join(installed_backends()))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the table as JSON here")
    args = parser.parse_args(argv)

    network = Experiment.load(args.spec).network
    shape = tuple(network.input_shape)
    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, network.output_shape[0], n)
    rows = rng.permutation(n).reshape(args.steps, args.batch)
    weights = init_weights(network, 0)
    configs: dict[tuple[str, str], tuple[Any, Any, Any, dict[str, Any]]] = {}
    for name in args.backends.split(","):
        backend = load_backend(name)
        for recipe, fields in RECIPES.items():
            config = TrainConfig.model_validate({"batch_size": args.batch, "epochs": 2, **fields})
            model = backend.compile(network, weights, seed=0, device=args.device, precision="float32", compiled="auto")
            model.setup_optimizer(config)
            data = model.to_device(x, y)
            lr, extra = _call_args(config, rows, shape)
            model.warmup(data, args.batch, len(rows))
            model.train_steps(data, rows, lr, **extra)  # untimed: first-call costs
            configs[(name, recipe)] = (model, data, lr, extra)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in configs}
    for _ in range(args.rounds):
        for key, (model, data, lr, extra) in configs.items():
            start = time.perf_counter()
            model.train_steps(data, rows, lr, **extra)
            times[key].append((time.perf_counter() - start) / args.steps)
    table = []
    for name in args.backends.split(","):
        base = statistics.median(times[(name, "adam (plain)")])
        for recipe in RECIPES:
            step = statistics.median(times[(name, recipe)])
            table.append({"backend": name, "recipe": recipe, "ms_per_step": 1e3 * step, "ratio_to_adam": step / base})
    print(f"{args.spec}: batch {args.batch}, {args.steps} steps per call, median of {args.rounds} rounds, {args.device}")
    print(f"{'backend':<8} {'recipe':<36} {'ms/step':>9} {'x adam':>7}")
    for row in table:
        print(f"{row['backend']:<8} {row['recipe']:<36} {row['ms_per_step']:>9.2f} {row['ratio_to_adam']:>7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
