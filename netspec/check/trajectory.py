"""The cross-check with dropout on: masks compared first, then whole trajectories.

Both backends draw every dropout mask from one stream (netspec.protocol.counter_hash.keep_mask of the run's seed,
the step, the layer and the position), so the cross-check no longer turns dropout off:

- the cross-check's first rows (netspec.check.crosscheck.mask_rows, netspec.check.mask_check): each dropout
  layer's mask in each backend against the numpy reference; any disagreement fails. They come first,
  so a mask bug is reported as one, not as the logits it moves.
- `run_trajectory` (`netspec crosscheck SPEC --steps N`): both backends train N steps from the same
  canonical weights in float64, one train_steps call per step, and after each the largest relative
  difference of any tensor (scaled as the cross-check's after-steps rows) and of the loss is printed;
  every step must stay within F64_STEPS_RTOL.

numpy only: the core never imports a framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from netspec.protocol.backend import Backend
from netspec.check.crosscheck import F64_STEPS_RTOL, Row, _augmentation, _recipe_lrs, _scales, mask_rows, synthetic_batch
from netspec.errors import SpecError
from netspec.spec.experiment import TrainConfig
from netspec.check.mask_check import dropout_layers
from netspec.spec.network import Network
from netspec.spec.params import check_trainable, init_weights

@dataclass(frozen=True)
class StepRow:
    """The two backends after one step: the losses and the tensor farthest apart."""

    step: int
    loss_ref: float
    loss_other: float
    tensor: str
    rel: float
    """max|a - b| / scale of `tensor` (scales as the cross-check's after-steps rows)."""

    @property
    def loss_rel(self) -> float:
        return abs(self.loss_other - self.loss_ref) / max(abs(self.loss_ref), 1e-300)

    @property
    def ok(self) -> bool:
        return self.rel <= F64_STEPS_RTOL and self.loss_rel <= F64_STEPS_RTOL


@dataclass
class TrajectoryReport:
    title: str
    rows: list[StepRow] = field(default_factory=list)
    masks: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.masks) and all(row.ok for row in self.rows)

    def table(self) -> str:
        lines = [self.title]
        for row in self.masks:
            lines.append(f"{row.quantity} layer {row.tensor}: {int(row.max_abs)} units differ from the reference "
                         f"({'ok' if row.ok else 'FAIL'})")
        lines.append(f"{'step':>5}  {'loss (ref)':>18}  {'loss (other)':>18}  {'loss rel':>8}  {'worst tensor':<24}  {'rel':>8}")
        for r in self.rows:
            lines.append(f"{r.step:>5}  {r.loss_ref:>18.12g}  {r.loss_other:>18.12g}  {r.loss_rel:>8.1e}  {r.tensor:<24}  "
                         f"{r.rel:>8.1e}{'' if r.ok else '  FAIL'}")
        worst = max(self.rows, key=lambda r: max(r.rel, r.loss_rel), default=None)
        verdict = "OK" if self.ok else "FAILED"
        if worst is not None:
            lines.append(f"{verdict}: largest difference {max(worst.rel, worst.loss_rel):.1e} at step {worst.step} "
                         f"(tolerance {F64_STEPS_RTOL:.0e})")
        return "\n".join(lines)


def run_trajectory(network: Network, reference: Backend, other: Backend, seed: int = 0, batch_size: int = 8,
                   steps: int = 20, train_config: Optional[TrainConfig] = None) -> TrajectoryReport:
    """Train both backends `steps` steps in float64 from the canonical weights of `seed`, dropout on, and
    compare every tensor after each step (netspec crosscheck SPEC --steps N)."""
    if len(network.output_shape) != 1:
        raise SpecError(f"the cross-check needs flat logits (classes,), but the network outputs {network.output_shape}; end it with a Linear")
    if steps < 1:
        raise SpecError(f"--steps {steps}: a trajectory needs at least one step")
    check_trainable(network)
    config = train_config or TrainConfig()
    weights = init_weights(network, seed)
    rng = np.random.default_rng(seed)
    x_all, y_all = synthetic_batch(network, 4 * batch_size, rng)
    batches = np.array([rng.permutation(len(y_all))[:batch_size] for _ in range(steps)], dtype=np.int64)
    lrs = _recipe_lrs(config, steps)
    trainable = frozenset(name for name, info in network.param_infos().items() if info.trainable)
    report = TrajectoryReport(f"trajectory of {other.name} against {reference.name}: float64, batch {batch_size}, {steps} "
                              f"{config.optimizer.type} steps at lr {config.lr:g}, seed {seed}, dropout on "
                              f"({len(dropout_layers(network))} layers, masks of netspec.protocol.counter_hash)")
    report.masks = mask_rows("float64", network, (reference, other), x_all[:batch_size], seed, "float64")
    models = tuple(b.compile(network, weights, seed=seed, precision="float64") for b in (reference, other))
    for m in models:
        m.setup_optimizer(config)
    data = [m.to_device(x_all, y_all) for m in models]
    scale = max(config.param_groups.norm_bias_lr_scale, 1.0)
    for step in range(steps):
        rows = batches[step:step + 1]
        extra: dict[str, Any] = _augmentation(config, rows, x_all.shape)
        losses = [m.train_steps(d, rows, lrs[step:step + 1], **extra)[0] for m, d in zip(models, data)]
        w_ref, w_other = (m.get_weights() for m in models)
        scales = _scales(w_ref, scale * float(np.sum(lrs[:step + 1])), trainable)
        rel = {name: float(np.max(np.abs(w_other[name] - w_ref[name]))) / (scales[name] + 1e-300) if w_ref[name].size else 0.0
               for name in w_ref}
        worst = max(rel, key=rel.get)
        report.rows.append(StepRow(step + 1, losses[0], losses[1], worst, rel[worst]))
    return report
