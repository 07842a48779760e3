#!/usr/bin/env python
"""Mutation testing, opt-in (run it before a release): does the suite catch realistic bugs?

Each mutant is one small, plausible edit of the source (a rule inverted, a figure averaged over the
wrong count, a stride taken from the wrong axis, a table cell from the wrong run). For each, the
repository is snapshot into a private temporary folder (HEAD by default, via `git archive`; never
the working tree in place, where other people work), the edit is applied there, the mutant's own
small selection of test files runs with `pytest -x -q`, and the mutant is *caught* when they fail.
A surviving mutant is a bug the tests would let through: add the test that kills it.

    python tools/mutants.py                 # every mutant, HEAD; table, score; exit 1 if any survives
    python tools/mutants.py --worktree      # the working tree as it is (uncommitted edits included)
    python tools/mutants.py -k trainer      # only mutants whose file or description contains 'trainer'
    python tools/mutants.py --list          # the mutants, without running anything

No dependency beyond pytest and git. A mutant whose text no longer occurs exactly once in its file
is reported as stale (exit 1), so the list cannot silently rot as the code changes.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300
"""A mutant that makes the tests hang this long counts as caught (it did not pass)."""


@dataclass(frozen=True)
class Mutant:
    file: str
    old: str
    """Exact text, occurring once in the file."""
    new: str
    description: str
    tests: tuple[str, ...]
    """pytest arguments: the test files (and -k filters) that should catch it; kept small for speed."""


TRAINER = ("tests/training/test_trainer_rules.py",)
DATA = ("tests/data/test_data.py", "-k", "split or normalization")
SHAPES = ("tests/spec/test_shapes_and_counts.py",)
TORCH_LAYERS = ("tests/protocol/test_backend_contract.py", "-k", "torch and layer_")
JAX_LAYERS = ("tests/protocol/test_backend_contract.py", "-k", "jax and layer_")
REPORT = ("tests/sweeps/test_report_tables.py",)
STEP_GRAPH = ("tests/backends/test_torch_step_graph.py",)
OUTCOMES = "tests/commands/test_user_outcomes.py"
BEST_WEIGHTS = ("tests/deploy/test_inference.py", "tests/deploy/test_export.py", OUTCOMES, "-k", "best")
SEEDS = ("tests/sweeps/test_sweep.py", OUTCOMES, "-k", "seeds")
RESUME_DECAY = ("tests/runs/test_run_folder.py", OUTCOMES, "-k", "resume or resumed or state")
TEMP_FILES = ("tests/runs/test_run_folder.py", OUTCOMES, "-k", "temporary or writer or atomic")
BOOTSTRAP = ("tests/runs/test_stats.py", OUTCOMES, "-k", "interval or difference or bootstrap")
VAL_SIZE_SWEEP = ("tests/sweeps/test_sweep.py", OUTCOMES, "-k", "sweep")
EXPORT_POOL = ("tests/deploy/test_export.py", OUTCOMES, "-k", "export or layer")
CROSSCHECK_CONTRACT = ("tests/check/test_crosscheck_contract.py",)
COMPILED = ("tests/backends/test_compiled_vs_eager.py",)

MUTANTS: list[Mutant] = [
    # --- the trainer: the lab protocol and the seven figures ------------------------------------------
    Mutant("netspec/training/trainer.py", "is_best = not val_acc < best_val", "is_best = val_acc > best_val",
           "test split only on a strictly better validation accuracy (ties lost)", TRAINER),
    Mutant("netspec/training/trainer.py", "is_best = not val_acc < best_val", "is_best = val_acc >= best_val",
           "without a validation split (NaN) no epoch is best", TRAINER),
    Mutant("netspec/training/trainer.py", "return EpochRecord(epoch, loss_sum / done, acc_sum / done,",
           "return EpochRecord(epoch, loss_sum / done, acc_sum / len(chunks),",
           "training accuracy averaged over train_steps calls, not steps", TRAINER),
    Mutant("netspec/training/trainer.py", "acc_sum + chunk_acc, done + len(chunk)", "acc_sum + chunk_acc, done + 1",
           "steps counted as train_steps calls (wrong mean under chunking)", TRAINER),
    Mutant("netspec/runs/records.py", "key=lambda i: (history[i].val_acc, i))", "key=lambda i: history[i].val_acc)",
           "final test taken at the first of equal best epochs, not the last", TRAINER),
    Mutant("netspec/runs/records.py", '"val_acc": last.val_acc,', '"val_acc": history[best].val_acc,',
           "last epoch's validation accuracy reported from the best epoch", TRAINER),
    Mutant("netspec/runs/records.py", '"test_loss": history[best].test_loss', '"test_loss": last.test_loss',
           "final test loss read from the last epoch", TRAINER),
    Mutant("netspec/training/trainer.py",
           "    steps = len(order) // batch_size\n    return np.ascontiguousarray(order[: steps * batch_size].reshape(steps, batch_size))",
           "    steps = -(-len(order) // batch_size)\n    return np.ascontiguousarray(np.resize(order, (steps, batch_size)))",
           "last partial batch kept (filled by wrapping around)", TRAINER),
    Mutant("netspec/training/trainer.py", "        if self.started:\n            self.rng.shuffle(self.order)\n        self.started = True",
           "        self.rng.shuffle(self.order)\n        self.started = True", "first epoch shuffled instead of file order", TRAINER),
    Mutant("netspec/training/trainer.py", "            self.rng.shuffle(self.order)",
           "            self.order = self.rng.permutation(len(self.order))",
           "each epoch a fresh permutation of file order, not a shuffle of the last", TRAINER),
    Mutant("netspec/training/schedules.py", "max(self.losses[-3:])", "max(self.losses[-2:])",
           "lr schedule looks two epochs back, not three", TRAINER),
    Mutant("netspec/training/schedules.py", "train_loss > max(", "train_loss >= max(",
           "lr decays on an equal loss, not only a higher one", TRAINER),
    Mutant("netspec/training/schedules.py", "len(self.losses) >= 3 and", "len(self.losses) > 3 and",
           "lr schedule starts one epoch late", TRAINER),
    Mutant("netspec/training/trainer.py", 'record.test_loss, record.test_acc = _evaluate(model, splits["test"]',
           'record.test_loss, record.test_acc = _evaluate(model, splits["val"]', "test figures read from the validation split", TRAINER),
    Mutant("netspec/training/trainer.py", "np.array_split(batches, min(updates, len(batches)))",
           "np.array_split(batches, updates)", "empty train_steps calls when an epoch has < 20 steps", TRAINER),
    Mutant("netspec/training/trainer.py", "_Recipe(cfg, schedule.lr, epoch, shape)",
           "_Recipe(cfg, cfg.lr, epoch, shape)", "steps ignore the lr schedule", TRAINER),
    # --- data: splits and normalization --------------------------------------------------------------
    Mutant("netspec/data/splits.py", "return np.arange(n - val_size), np.arange(n - val_size, n)",
           "return np.arange(val_size, n), np.arange(val_size)", "validation taken from the head, not the tail", DATA),
    Mutant("netspec/data/splits.py", "order = np.argsort(-(shares - floors)", "order = np.argsort((shares - floors)",
           "stratified rounding gives the spare images to the smallest remainders", DATA),
    Mutant("netspec/data/normalization.py", "return np.full(3, 128.0), np.full(3, 255.0)", "return np.full(3, 127.5), np.full(3, 255.0)",
           "report normalization centred on 127.5", DATA),
    Mutant("netspec/data/normalization.py", "return mean, np.sqrt(np.maximum(var, 0.0)) + 1e-8", "return mean, np.maximum(var, 0.0) + 1e-8",
           "per-channel scale is the variance, not the std", DATA),
    Mutant("netspec/data/__init__.py", "shift, scale = normalization(config.normalize, fit_x)",
           "shift, scale = normalization(config.normalize, train_x)", "normalization statistics include validation images", DATA),
    # --- shape inference -----------------------------------------------------------------------------
    Mutant("netspec/spec/layers/base.py", "return (hp - kh) // sh + 1, (wp - kw) // sw + 1", "return (hp - kh) // sh + 1, (wp - kw) // sh + 1",
           "width uses the height stride", SHAPES),
    Mutant("netspec/spec/layers/base.py", "hp, wp = h + 2 * ph, w + 2 * pw", "hp, wp = h + ph, w + pw",
           "padding added on one side only", SHAPES),
    Mutant("netspec/spec/layers/base.py", "return (hp - kh) // sh + 1, (wp - kw) // sw + 1",
           "return -(-(hp - kh) // sh) + 1, -(-(wp - kw) // sw) + 1", "ceil rounding instead of PyTorch's floor", SHAPES),
    Mutant("netspec/spec/layers/pooling.py", "pair(self.kernel_size if self.stride is None else self.stride)",
           "pair(1 if self.stride is None else self.stride)", "MaxPool2d stride defaults to 1 (Flax's) not the kernel", SHAPES),
    Mutant("netspec/spec/layers/pooling.py", "if 2 * ph > kh or 2 * pw > kw:", "if 2 * ph > kh:",
           "MaxPool2d padding checked in height only", SHAPES),
    Mutant("netspec/spec/layers/base.py", "if kh > hp or kw > wp:", "if kh > hp or kw > hp:",
           "kernel width checked against the input height", SHAPES),
    # --- parameter counting --------------------------------------------------------------------------
    Mutant("netspec/spec/network.py", "return sum(math.prod(i.shape) for i in self.param_infos().values() if i.trainable)",
           "return sum(math.prod(i.shape) for i in self.param_infos().values())", "num_params counts running statistics", SHAPES),
    Mutant("netspec/spec/network.py", "count = sum(math.prod(i.shape) for i in infos.values() if i.trainable)",
           "count = sum(math.prod(i.shape) for i in infos.values())", "summary rows count running statistics", SHAPES),
    Mutant("netspec/spec/layers/normalization.py", '"running_var": ParamInfo(c, "ones", trainable=False),', '"running_var": ParamInfo(c, "ones"),',
           "BatchNorm running_var counted as trainable", SHAPES),
    Mutant("netspec/spec/layers/normalization.py", '"num_batches_tracked": ParamInfo((), "zeros"', '"num_batches_tracked": ParamInfo((0,), "zeros"',
           "num_batches_tracked owns no element", SHAPES),
    Mutant("netspec/spec/layers/convolution.py", "ParamInfo((self.out_channels, shape[0], kh, kw)", "ParamInfo((self.out_channels, shape[0], kh, kh)",
           "Conv2d weight assumes a square kernel", SHAPES),
    Mutant("netspec/spec/layers/core.py", '        if self.bias:\n            out["bias"] = ParamInfo((self.out_features,)',
           '        out["bias"] = ParamInfo((self.out_features,)', "Linear bias=false still owns a bias", SHAPES),
    # --- the hand-written layers ---------------------------------------------------------------------
    Mutant("backends/torch/layers.py", "alpha=m * n / (n - 1))", "alpha=m)", "torch BatchNorm running_var biased", TORCH_LAYERS),
    Mutant("backends/torch/layers.py", "self.running_mean.mul_(1.0 - m).add_(mean, alpha=m)",
           "self.running_mean.mul_(m).add_(mean, alpha=1.0 - m)", "torch BatchNorm momentum in Flax's meaning", TORCH_LAYERS),
    Mutant("backends/torch/layers.py", ".mul_(1.0 / (1.0 - self.p))", ".mul_(1.0)", "torch dropout not rescaled by 1/(1-p)",
           TORCH_LAYERS),
    Mutant("backends/torch/layers.py", "return h.bitwise_xor_(_SIGN) < keep_threshold(p) + _SIGN",
           "return h.bitwise_xor_(_SIGN) < keep_threshold(1.0 - p) + _SIGN", "torch dropout keeps with probability p", TORCH_LAYERS),
    Mutant("backends/torch/builders.py", "Dropout(layer.p, broadcast_dims=(2, 3), layer=site.index)",
           "Dropout(layer.p, broadcast_dims=(0, 2, 3), layer=site.index)",
           "torch Dropout2d one mask for the whole batch", TORCH_LAYERS),
    # --- torch's CUDA-graphed steps (a graph replays fixed addresses and the values they hold) ---------
    Mutant("backends/torch/step_graph.py", "        self.keys.copy_(keys)\n", "",
           "graph replays keep the captured dropout keys", STEP_GRAPH),
    Mutant("backends/torch/model.py", 'group["lr"].copy_(table[step, g])', 'group["lr"] = table[step, g].clone()',
           "a new learning rate replaces the tensor the graph reads", STEP_GRAPH),
    Mutant("backends/torch/recipe.py", "            if state:\n", "            if False:\n",
           "restoring Adam's state replaces the tensors a graph holds", STEP_GRAPH),
    Mutant("backends/torch/model.py", "            self.set_training_state(saved)\n            self._loss_sum.zero_()",
           "            self._loss_sum.zero_()", "a capture's warm-up steps left in the weights", STEP_GRAPH),
    Mutant("backends/jax/layers.py", "(m * n / (n - 1))", "m", "jax BatchNorm running_var biased", JAX_LAYERS),
    Mutant("backends/jax/builders.py", "Dropout(s.p, broadcast_dims=(1, 2)", "Dropout(s.p, broadcast_dims=(2, 3)",
           "jax Dropout2d mask laid out as NCHW on NHWC data", JAX_LAYERS),
    # --- report tables -------------------------------------------------------------------------------
    Mutant("netspec/runs/tables.py", 'return f"{value:.4f}"', 'return f"{value:.3f}"', "numbers printed with 3 decimals", REPORT),
    Mutant("netspec/sweeps/report_runs.py", "return paired_difference([a[s].metrics[key] for s in common], [b[s].metrics[key] for s in common])",
           "return paired_difference([b[s].metrics[key] for s in common], [a[s].metrics[key] for s in common])",
           "difference columns with the wrong sign", REPORT),
    Mutant("netspec/sweeps/report_sections.py", "{k: values(a.runs.get(backend, {}), k) for k in SUMMARY_FIELDS}",
           "{k: values(a.runs.get(backends[0], {}), k) for k in SUMMARY_FIELDS}", "every sweep table shows the first backend's runs", REPORT),
    Mutant("netspec/sweeps/report_sections.py", "r, o = a.runs.get(reference, {}), a.runs.get(other, {})",
           "r, o = a.runs.get(other, {}), a.runs.get(reference, {})", "sweep torch-vs-jax table with the backends swapped", REPORT),
    Mutant("netspec/sweeps/report_sections.py", 'fmt_values(values(r, "best_val_acc")),\n                         fmt_values(values(o, "best_val_acc"))',
           'fmt_values(values(r, "val_acc")),\n                         fmt_values(values(o, "val_acc"))',
           "sweep 'best val' columns show the last epoch's validation accuracy", REPORT),
    Mutant("netspec/sweeps/report_sections.py", '*(seconds_text(values(s, "median_epoch_seconds")) for s in group.runs.values()),\n                 *("-"',
           '*(seconds_text(values(group.runs[reference], "median_epoch_seconds")) for s in group.runs.values()),\n                 *("-"',
           "run table's epoch-seconds row repeats the first backend", REPORT),
    # --- what a user would lose (issue 25), each written from the bug's side -------------------------
    Mutant("netspec/runs/training_run.py", "    if is_best and state.best_weights is not None:\n        folder.write_weights(state.best_weights)",
           "    if state.best_weights is not None:\n        folder.write_weights({k: state.model[k] for k in state.best_weights})",
           "best_weights.npz written every epoch from the current model", BEST_WEIGHTS),
    Mutant("netspec/sweeps/sweep.py", "return [Job(with_seed(experiment, s), b,", "return [Job(with_seed(experiment, 0), b,",
           "--seeds N trains seed 0 N times", SEEDS),
    Mutant("netspec/spec/sweep_file.py", '"seed": experiment.train.seed + seed,', '"seed": experiment.train.seed,',
           "a seed moves the batch order but not the weights and dropout seed", SEEDS),
    Mutant("netspec/spec/sweep_file.py", '"shuffle_seed": experiment.train.shuffle_seed + seed}', '"shuffle_seed": experiment.train.shuffle_seed}',
           "a seed moves the weights but not the batch order", SEEDS),
    Mutant("netspec/training/trainer.py", "schedule = LabLrRule(state.lr, cfg.lr_decay,", "schedule = LabLrRule(cfg.lr, cfg.lr_decay,",
           "a resumed run's lr schedule restarts from the initial lr", RESUME_DECAY),
    Mutant("netspec/training/trainer.py", "schedule = LabLrRule(state.lr, cfg.lr_decay, [r.train_loss for r in state.history])",
           "schedule = LabLrRule(state.lr, cfg.lr_decay)", "a resumed run's lr schedule forgets the losses before it", RESUME_DECAY),
    Mutant("netspec/io.py", "fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=", "fd, tmp = tempfile.mkstemp(prefix=",
           "temporary files in the system temp folder, not beside their target", TEMP_FILES),
    Mutant("netspec/runs/stats.py", "        return float(d[0]), float(d[0])", "        return 0.0, 0.0",
           "bootstrap interval [0, 0] for a constant difference", BOOTSTRAP),
    Mutant("netspec/runs/stats.py", 'method="percentile"', 'method="basic"',
           "bootstrap interval by the basic method, not the documented percentile one", BOOTSTRAP),
    Mutant("netspec/runs/stats.py", "CONFIDENCE = 0.95", "CONFIDENCE = 0.9", "bootstrap intervals at 90%, not 95%", BOOTSTRAP),
    Mutant("netspec/runs/stats.py", "rng=np.random.default_rng(seed))", "rng=None)",
           "bootstrap without its fixed generator: a report's intervals change from run to run", BOOTSTRAP),
    Mutant("netspec/sweeps/launchers.py", "key = job.experiment.data.model_dump_json()", "key = job.experiment.data.source",
           "a sweep's points share the first point's dataset whatever their data settings", VAL_SIZE_SWEEP),
    Mutant("netspec/deploy/export.py", "pads=[ph, pw, ph, pw], **extra)", "pads=[ph, ph, pw, pw], **extra)",
           "ONNX MaxPool pads in the wrong order", EXPORT_POOL),
    # --- the cross-check's contract ----------------------------------------------------------------------
    Mutant("netspec/check/crosscheck.py", "            report.rows += mask_rows(name, net, backends, x, seed, precision)\n", "",
           "cross-check trains through dropout without checking the masks first", CROSSCHECK_CONTRACT),
    Mutant("netspec/check/crosscheck.py", "LR_FACTORS = (1.0, 0.5)", "LR_FACTORS = (1.0, 1.0)",
           "cross-check never changes the lr between train_steps calls", CROSSCHECK_CONTRACT),
    Mutant("netspec/check/crosscheck.py", "F64_RTOL = 1e-9", "F64_RTOL = 1e-6", "cross-check float64 pass tolerance loosened 1000x",
           CROSSCHECK_CONTRACT),
    Mutant("netspec/check/crosscheck.py", "F64_STEPS_RTOL = 1e-6", "F64_STEPS_RTOL = 1e-3",
           "cross-check float64 tolerance after the steps loosened 1000x", CROSSCHECK_CONTRACT),
    Mutant("netspec/check/crosscheck.py", "F32_RTOL = 1e-4", "F32_RTOL = 1e-1", "cross-check float32 pass tolerance loosened 1000x",
           CROSSCHECK_CONTRACT),
    Mutant("netspec/check/crosscheck.py", "tier.weights(quantity, models[1].get_weights(finite=False), w_ref, _scales(w_ref, reach, trainable))",
           "tier.weights(quantity, models[1].get_weights(finite=False), w_ref, _scales(w_ref, reach, trainable), sorted(trainable))",
           "cross-check leaves the running statistics out after the steps", CROSSCHECK_CONTRACT),
    Mutant("netspec/check/crosscheck.py",
           '    tier.weights("running stat", other.get_weights(finite=False), w_ref, _scales(w_ref), [n for n in w_ref if n not in grads_ref])',
           '    tier.weights("running stat", other.get_weights(finite=False), w_ref, _scales(w_ref), [n for n in w_ref if n.endswith("_var")])',
           "cross-check compares only running variances after the first pass", CROSSCHECK_CONTRACT),
    # --- compiled and graphed paths against eager references (the GPU default) ------------------------
    Mutant("backends/torch/model.py", "graph.run(index, keys[step])", "graph.run(index, keys[0])",
           "every step of a graphed call reuses the first step's masks", COMPILED),
    Mutant("backends/torch/layers.py", "var = centred.square().mean(dims)",
           "var = centred.square().sum(dims) / (x.numel() // x.shape[1] - 1)",
           "compiled BatchNorm normalizes with the unbiased variance", COMPILED),
    Mutant("backends/jax/model.py", "return jax.lax.cond(ok, step, lambda c: c, carry), None", "return step(carry), None",
           "a padded scan row runs as a real step", COMPILED),
    Mutant("backends/jax/model.py", "valid = np.arange(length) < count", "valid = np.ones(length, bool)",
           "a scan's padding rows marked valid", COMPILED),
]

# --- one dropout stream for both backends (issue 24) --------------------------------------------------------
STREAM = ("tests/protocol/test_dropout_stream.py",)
MUTANTS += [
    Mutant("backends/torch/layers.py", "keys[self.layer], self.p, cached[1:])", "keys[0], self.p, cached[1:])",
           "eager dropout layers all take layer 0's key (stream)", STREAM),
    Mutant("netspec/protocol/counter_hash.py", "return min(int((1.0 - p) * 2.0**32), 2**32 - 1)", "return min(int((1.0 - p) * 2.0**32) + 2**20, 2**32 - 1)",
           "keep threshold off by 2**20 (stream)", STREAM),
    Mutant("backends/torch/layers.py", "for shift, multiplier in ((16, _MULTIPLIERS[0]), (13, _MULTIPLIERS[1]), (16, None)):",
           "for shift, multiplier in ((16, _MULTIPLIERS[0]), (15, _MULTIPLIERS[1]), (16, None)):",
           "torch fmix32 shifts by 15, not 13 (stream)", STREAM),
    Mutant("backends/torch/layers.py", "h.bitwise_xor_(scratch.bitwise_and_((1 << (32 - shift)) - 1))", "h.bitwise_xor_(scratch)",
           "torch's right shifts left arithmetic (sign bits leak into the hash) (stream)", STREAM),
    Mutant("backends/jax/layers.py", "strides = [strides[0], strides[2], strides[3], strides[1]]", "strides = strides",
           "jax numbers NHWC positions in its own layout, not PyTorch's (stream)", STREAM),
    Mutant("backends/jax/model.py", "self.dropout_keys(1, advance=False)[0])", "self.dropout_keys(1)[0])",
           "jax's loss_and_grads advances the dropout stream (stream)", STREAM),
    Mutant("netspec/protocol/model_base.py", "            self.stream = (seed, step + steps)", "            self.stream = (seed, step + 1)",
           "a call of several steps advances the stream by one (stream)", STREAM),
    Mutant("netspec/protocol/model_base.py", "    if rng.shape != (2,) or rng.dtype != np.int64:", "    if rng.shape != (2,):",
           "a threefry key read back as (seed, step) (stream)", STREAM),
]

# --- the training recipe (issue 23): schedules, augmentation, parameter groups, early stopping ------------
SCHEDULES = ("tests/training/test_schedules.py",)
GRAPH = ("tests/spec/test_graph.py", "-k", "bad_graph")
TORCH_GRAPHS = ("tests/backends/test_torch_internals.py", "-k", "random_graphs")
JAX_LAYER_HARNESS = ("tests/protocol/test_backend_contract.py", "-k", "jax and harness")
MUTANTS += [
    # --- the layer graph (issue 22) --------------------------------------------------------------------
    Mutant("netspec/spec/network.py", "dead = [n for n in nodes[:-1] if n.index not in used]", "dead: list[Node] = []",
           "a dead branch (an output nothing takes) accepted", GRAPH),
    Mutant("netspec/spec/network.py", "        if target == index:\n", "        if target == index and False:\n",
           "a layer naming itself as its input is not refused as such", GRAPH),
    Mutant("backends/torch/layers.py", "        return torch.cat(xs, 1)", "        return torch.cat(xs[::-1], 1)",
           "torch Concat joins its inputs in reverse order", TORCH_GRAPHS),
    Mutant("backends/jax/builders.py", "jnp.concatenate(xs, axis=-1)", "jnp.concatenate(xs, axis=1)",
           "jax Concat along H of NHWC data instead of the channels", JAX_LAYER_HARNESS),
]

AUGMENT = ("tests/protocol/test_augment.py",)
PARAM_GROUPS = ("tests/protocol/test_param_groups.py",)
RECIPE_TRAINER = ("tests/training/test_trainer_rules.py", "-k", "step or augmentation or early or flip")
MUTANTS += [
    Mutant("netspec/training/schedules.py", "np.interp(s / steps_per_epoch,", "np.interp(s // steps_per_epoch,",
           "piecewise linear schedule evaluated per epoch, not per step", SCHEDULES),
    Mutant("netspec/training/schedules.py", "end_up = float(pct_start * total) - 1", "end_up = float(pct_start * total)",
           "onecycle peaks one step late (torch's phase ends at pct_start * total - 1)", SCHEDULES),
    Mutant("netspec/training/schedules.py", "np.floor_divide(np.floor_divide(s, steps_per_epoch)", "np.floor_divide(np.floor_divide(s + 1, steps_per_epoch)",
           "step schedule decays one step early", SCHEDULES),
    Mutant("netspec/training/schedules.py", "np.minimum((s + 1) / warmup, 1.0)", "np.minimum(s / warmup, 1.0)",
           "cosine warm-up starts its first step at lr 0", SCHEDULES),
    Mutant("netspec/protocol/augment.py", "xp.where(flip[..., None] != 0, size - 1 - position, position)",
           "xp.where(flip[..., None] != 0, size - position, position)", "flip off by one column", AUGMENT),
    Mutant("netspec/protocol/augment.py", "xp.where(source > size - 1, 2 * (size - 1) - source, source)",
           "xp.where(source > size - 1, 2 * size - 1 - source, source)", "reflect padding repeats the edge (symmetric)", AUGMENT),
    Mutant("netspec/protocol/augment.py", "(position < start[..., None] + cutout)", "(position <= start[..., None] + cutout)",
           "cutout one pixel too large", AUGMENT),
    Mutant("netspec/protocol/augment.py", "hash32(seed, STREAM_AUGMENT, epoch, images, slot)", "hash32(seed, STREAM_AUGMENT, 0, images, slot)",
           "the same augmentation every epoch", AUGMENT),
    Mutant("netspec/protocol/param_groups.py", "groups.norm_bias_lr_scale if norm and bias else 1.0", "groups.norm_bias_lr_scale if bias else 1.0",
           "lr multiplier on every bias, not only normalization biases", PARAM_GROUPS),
    Mutant("netspec/protocol/param_groups.py", "(groups.decay_bias or not bias)", "(groups.decay_bias or bias)",
           "decay_bias off removes decay from the weights instead", PARAM_GROUPS),
    Mutant("netspec/training/trainer.py", "if waited < patience:", "if waited <= patience:", "early stopping one epoch late", RECIPE_TRAINER),
    Mutant("netspec/training/trainer.py", "lrs[done:done + len(chunk)]", "lrs[:len(chunk)]",
           "every train_steps call of an epoch restarts its per-step lrs", RECIPE_TRAINER),
    Mutant("netspec/training/trainer.py", "augment.batch_draws(aug, self.config.seed, self.epoch, chunk,",
           "augment.batch_draws(aug, self.config.seed, 1, chunk,", "augmentation draws of epoch 1 in every epoch", RECIPE_TRAINER),
]

# --- the recipe in the backends: optimizers, parameter groups, label smoothing, augmentation, flip TTA ------
RECIPE_TORCH = ("tests/training/test_recipe_parity.py", "-k", "torch")
RECIPE_JAX = ("tests/training/test_recipe_parity.py", "-k", "jax")
RECIPE_RESUME = ("tests/runs/test_resume.py", "-k", "recipe")
MUTANTS += [
    Mutant("backends/torch/recipe.py", "momentum=opt.momentum, nesterov=opt.nesterov,", "momentum=opt.momentum, nesterov=False,",
           "torch: Nesterov momentum dropped", RECIPE_TORCH),
    Mutant("backends/torch/recipe.py", "kind = torch.optim.AdamW if opt.type == \"adamw\" else torch.optim.Adam",
           "kind = torch.optim.Adam", "torch: AdamW's decay taken as Adam's L2", RECIPE_TORCH),
    Mutant("backends/torch/recipe.py", "\"weight_decay\": rule.weight_decay,", "\"weight_decay\": config.optimizer.weight_decay,",
           "torch: parameter groups' weight decay rules ignored", RECIPE_TORCH),
    Mutant("backends/torch/model.py", "group[\"lr\"] = float(lrs[step]) * scale", "group[\"lr\"] = float(lrs[step])",
           "torch: the norm-bias lr multiplier ignored (eager steps)", RECIPE_TORCH),
    Mutant("backends/torch/model.py", "np.asarray(lrs, np.float64)[:, None] * np.asarray(self._lr_scales)[None, :]",
           "np.asarray(lrs, np.float64)[:, None] * np.ones(len(self._lr_scales))[None, :]",
           "torch: the norm-bias lr multiplier ignored (graphed steps)", RECIPE_TORCH),
    Mutant("backends/torch/model.py", "loss = F.cross_entropy(logits, y, label_smoothing=self._label_smoothing)",
           "loss = F.cross_entropy(logits, y)", "torch: label smoothing ignored", RECIPE_TORCH),
    # The index maps are netspec/protocol/augment.py's (mutated above); a backend owns only its array ops and layout.
    Mutant("backends/torch/recipe.py", "return x.clamp(low, high)", "return x.clamp(low, high - 1)",
           "torch: the augmentation's clip one index short", RECIPE_TORCH),
    Mutant("backends/torch/recipe.py", "return out.permute(0, 3, 1, 2)", "return out.permute(0, 3, 2, 1)",
           "torch: augmented images transposed", RECIPE_TORCH),
    Mutant("backends/torch/model.py", "self.module(x.flip(-1))", "self.module(x.flip(-2))", "torch: flip TTA mirrors vertically",
           RECIPE_TORCH),
    Mutant("backends/torch/recipe.py", "elif saved.step > 0 or not COUNTS_STEPS[saved.kind]:", "elif saved.step > 0:",
           "torch: SGD momentum buffers not restored into a fresh optimizer", RECIPE_RESUME),
    Mutant("backends/jax/recipe.py", "direction = jax.tree.map(lambda g, b: g + opt.momentum * b, grads, buf) if opt.nesterov else buf",
           "direction = buf", "jax: Nesterov momentum dropped", RECIPE_JAX),
    Mutant("backends/jax/recipe.py", "if opt.type != \"adamw\":  # L2", "if True:  # L2",
           "jax: AdamW also adds L2 decay to the gradient", RECIPE_JAX),
    Mutant("backends/jax/recipe.py", "rate = lr if rule.lr_scale == 1.0 else lr * rule.lr_scale", "rate = lr",
           "jax: the norm-bias lr multiplier ignored", RECIPE_JAX),
    Mutant("backends/jax/model.py", "smoothing=optimizer.config.label_smoothing)", "smoothing=0.0)",
           "jax: label smoothing ignored", RECIPE_JAX),
    Mutant("backends/jax/recipe.py", "zero=jnp.zeros((), x_all.dtype)", "zero=jnp.ones((), x_all.dtype)",
           "jax: the augmentation fills ones, not zeros", RECIPE_JAX),
    Mutant("backends/jax/model.py", "jnp.flip(x_all[idx], axis=2)", "jnp.flip(x_all[idx], axis=1)",
           "jax: flip TTA mirrors vertically", RECIPE_JAX),
    Mutant("backends/jax/model.py", "recipe.SgdState(None if buffer is None else self._params_tree(buffer))",
           "recipe.SgdState(None if buffer is None else jax.tree.map(np.zeros_like, self._params_tree(buffer)))",
           "jax: SGD momentum buffers restored as zeros", RECIPE_RESUME),
]

# divergence bisection (issue 24, item 4): it must name the FIRST layer where the backends part
MUTANTS += [
    Mutant("netspec/check/bisection.py", "for k in range(last + 1):", "for k in reversed(range(last + 1)):",
           "bisection: names the last differing layer instead of the first", ("tests/check/test_bisect.py",)),
]


# --- issue 37: meaning against outside references (torch.nn wired by hand), options at non-default values --
OUTSIDE_GRAPH = ("tests/spec/test_graph_outside_reference.py",)
OPTIONS_VS_TORCH = ("tests/protocol/test_layer_options_vs_torch.py",)
MUTANTS += [
    Mutant("netspec/spec/network.py", "inputs = tuple(self._resolve(index, ref, ids) for ref in self._refs(index))",
           "inputs = tuple(sorted(self._resolve(index, ref, ids) for ref in self._refs(index)))",
           "a layer's inputs sorted (Concat of [b, a] joins [a, b]) in every backend and the numpy reference", OUTSIDE_GRAPH),
    Mutant("netspec/spec/layers/merging.py", "        if len(set(shapes)) > 1:\n            raise ShapeError(f\"Add needs",
           "        if len({s[0] for s in shapes}) > 1:\n            raise ShapeError(f\"Add needs",
           "Add accepts (C, H, W) + (C, 1, 1) by broadcasting", OUTSIDE_GRAPH),
    Mutant("backends/jax/builders.py", "count_include_pad=s.count_include_pad)", "count_include_pad=True)",
           "jax AvgPool2d ignores count_include_pad: false", OPTIONS_VS_TORCH),
    Mutant("netspec/spec/layers/convolution.py", "return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)",
           "return (kh - 1 - (kh - 1) // 2, (kh - 1) // 2), (kw - 1 - (kw - 1) // 2, (kw - 1) // 2)",
           "Conv2d padding 'same' with an even kernel puts the extra zero at the top and left", OPTIONS_VS_TORCH),
]

# --- issue 37: every number the report prints, against the metrics file it came from ----------------------
REPORT_NUMBERS = ("tests/sweeps/test_report_numbers.py",)
MUTANTS += [
    Mutant("netspec/sweeps/report_sections.py", 'r.metrics.get("test_acc"), r.metrics.get("best_val_acc"), r.metrics.get("val_acc")]',
           'r.metrics.get("best_val_acc"), r.metrics.get("test_acc"), r.metrics.get("val_acc")]',
           "per-seed appendix with final test and best validation swapped", REPORT_NUMBERS),
    Mutant("netspec/sweeps/report_runs.py", "return paired_difference([a[s].metrics[key] for s in common], [b[s].metrics[key] for s in common])",
           "return paired_difference(values(a, key)[:len(common)], values(b, key)[:len(common)])",
           "differences paired by list order, not by seed", REPORT_NUMBERS),
    Mutant("netspec/sweeps/report_sections.py", "        run = by_seed[min(by_seed)]\n        images =", "        run = first\n        images =",
           "every backend's section links the first backend's figures", REPORT_NUMBERS),
    Mutant("netspec/runs/tables.py", "rows = [[label, *(m.get(key) for m in columns.values())]",
           'rows = [[label, *(m.get({"test_acc": "best_val_acc", "best_val_acc": "test_acc"}.get(key, key)) for m in columns.values())]',
           "the table a run ends with: final test and best validation swapped", REPORT_NUMBERS),
]

# --- issue 37: what a resumed or repeated run keeps --------------------------------------------------------
RESUME_KEEPS = ("tests/runs/test_resume_keeps.py",)
MUTANTS += [
    Mutant("netspec/runs/tensorboard.py", "purge_step=first_epoch,", "purge_step=1,",
           "a resumed run's TensorBoard events purged from step 1", RESUME_KEEPS),
    Mutant("netspec/runs/training_run.py", "sorted(shorter, key=lambda pair: -pair[0])", "sorted(shorter, key=lambda pair: pair[0])",
           "an extension starts from the shortest finished sibling (epochs trained again)", RESUME_KEEPS),
    Mutant("netspec/io.py", "        os.chmod(tmp, 0o666 & ~_umask())", "        pass",
           "output files keep mkstemp's mode 0600", RESUME_KEEPS),
    Mutant("netspec/io.py", "        os.chmod(tmp, 0o666 & ~_umask())", "        os.chmod(tmp, 0o644)",
           "output files 0644 whatever the umask", RESUME_KEEPS),
]

# --- issue 37: what identifies data, what a finished run reads back ------------------------------------------
DATA_IDENTITY = ("tests/data/test_data_identity_edges.py",)
MUTANTS += [
    Mutant("netspec/data/sources/python_batches.py", 'OTHER_FILES = ("test_batch", "batches.meta")', 'OTHER_FILES = ("batches.meta",)',
           "the test batch of a python-batches folder left out of the data identity and cache key", DATA_IDENTITY),
    Mutant("netspec/data/safe_unpickle.py", '    ("numpy", "dtype"): np.dtype,\n', '    ("numpy", "dtype"): np.dtype,\n    ("numpy", "zeros"): np.zeros,\n',
           "the restricted unpickler admits numpy.zeros (allocates without bound)", DATA_IDENTITY),
    Mutant("netspec/deploy/inference.py", "device=device,\n                                     precision=saved.experiment.train.precision)",
           "device=device)", "a bf16 run evaluated in float32", DATA_IDENTITY),
    Mutant("netspec/deploy/inference.py", "return np.array([index[c] for c in data_classes], np.int64)[labels]",
           "return np.asarray(labels, np.int64)", "a --data-dir's class folders in another order taken as the run's", DATA_IDENTITY),
]

def snapshot(dest: Path, worktree: bool) -> None:
    """The repository's files in `dest`: HEAD (git archive), or the working tree's tracked and
    untracked-but-not-ignored files as they are."""
    if not worktree:
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        return
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def python_path(copy: Path) -> str:
    """PYTHONPATH for the copy: its own netspec and backends, and `netspec_backends` (the name the
    backends' entry points load, an installed package mapped to some other checkout) linked to the
    copy's backends/, so a backend mutant is the code the tests load."""
    shim = copy / ".mutant-shim"
    if not shim.is_dir():
        shim.mkdir()
        (shim / "netspec").symlink_to(copy / "netspec")
        (shim / "netspec_backends").symlink_to(copy / "backends")
    return f"{shim}{os.pathsep}{copy}"


def run_pytest(copy: Path, args: Sequence[str]) -> tuple[int, float, str]:
    """(exit code, seconds, output tail) of pytest -x -q on `args` inside the copy; no bytecode or
    cache written (a mutated file could otherwise be served from a stale .pyc of the same size)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": python_path(copy)}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - start, f"timed out after {TIMEOUT_S}s"
    return proc.returncode, time.perf_counter() - start, (proc.stdout + proc.stderr)[-2000:]


def check_imports_from(copy: Path) -> None:
    """The tests must import the copy's netspec and backends (by either name), not an installed (editable) one."""
    code = ("import netspec, backends, netspec_backends.torch, netspec_backends.jax as j; "
            "print(netspec.__file__, backends.__file__, netspec_backends.torch.__file__, j.__file__)")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": python_path(copy)}
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, check=True, capture_output=True, text=True).stdout
    for path in out.split():
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            sys.exit(f"mutants: the copy imports {path}, not its own sources; cannot test mutants")


def stale(copy: Path, mutants: Sequence[Mutant]) -> list[str]:
    return [f"{m.file}: {m.description} (text found {(copy / m.file).read_text().count(m.old)} times, needs 1)"
            for m in mutants if not (copy / m.file).is_file() or (copy / m.file).read_text().count(m.old) != 1]


def selection_args(mutants: Sequence[Mutant]) -> list[list[str]]:
    """Each distinct test selection once, for the baseline run."""
    return [list(t) for t in dict.fromkeys(m.tests for m in mutants)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worktree", action="store_true", help="mutate a copy of the working tree instead of HEAD")
    parser.add_argument("-k", dest="keyword", default="", help="only mutants whose file or description contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.keyword.lower() in f"{m.file} {m.description}".lower()]
    if args.list:
        for i, m in enumerate(mutants, 1):
            print(f"{i:>3}  {m.file:<26} {m.description}")
        return 0
    with tempfile.TemporaryDirectory(prefix="netspec-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        copy.mkdir()
        snapshot(copy, args.worktree)
        check_imports_from(copy)
        if problems := stale(copy, mutants):
            print("stale mutants (the code changed; update tools/mutants.py):\n  " + "\n  ".join(problems))
            return 1
        for selection in selection_args(mutants):  # a failing baseline would make every mutant look caught
            code, seconds, tail = run_pytest(copy, selection)
            if code != 0:
                print(f"baseline fails ({' '.join(selection)}), fix it first:\n{tail}")
                return 1
        rows = []
        for i, m in enumerate(mutants, 1):
            path = copy / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                code, seconds, tail = run_pytest(copy, m.tests)
            finally:
                path.write_text(original)
            status = "caught" if code != 0 and code != 5 else ("NO TESTS" if code == 5 else "SURVIVED")
            rows.append((i, status, seconds, m))
            print(f"{i:>3}/{len(mutants)} {status:<8} {seconds:5.1f}s  {m.file}: {m.description}", flush=True)
            if status != "caught":
                print("      " + tail.strip().replace("\n", "\n      ")[-600:])
    caught = sum(status == "caught" for _, status, _, _ in rows)
    total_s = sum(seconds for _, _, seconds, _ in rows)
    print(f"\nmutation score: {caught}/{len(rows)} caught ({total_s:.0f}s of tests)")
    for i, status, _, m in rows:
        if status != "caught":
            print(f"  {status}: #{i} {m.file}: {m.description}")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

