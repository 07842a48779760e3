"""Cross-backend check (docs/design.md, "The cross-check"): the same network, canonical weights and batches in two
backends, dropout on (both draw the same masks, netspec.protocol.counter_hash; each mask is checked against the
numpy reference first, netspec.check.trajectory.mask_rows), compared tensor by tensor in two tiers. The float64 tier is asserted: one pass
(eval and train logits, loss, every gradient, the running statistics it leaves, then evaluate() over
a split whose last batch is short) within F64_RTOL, then the trainer's optimizer path
(setup_optimizer, train_steps at two learning rates) for `steps` free-running Adam steps: every
parameter and statistic, the loss sum, eval logits and evaluate() within F64_STEPS_RTOL, accuracies
exactly. Both frameworks round at ~1e-16 there, so trajectories stay together on any CPU. The float32
tier (what trains) asserts its one pass within F32_RTOL and only reports what follows: in float32,
Adam turns the rounding noise of a gradient that is 0 in exact arithmetic (a bias a BatchNorm
cancels) into whole steps of random sign. A row is rel = max|a - b| / scale, scale = max|b|, and at
least: GRAD_FLOOR of the largest gradient for a gradient, the running std for a running_mean, the sum
of the lrs (how far Adam can move an element) for a parameter after the steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from netspec.protocol.augment import batch_draws
from netspec.protocol.backend import Backend
from netspec.errors import SpecError
from netspec.spec.experiment import TrainConfig
from netspec.check.mask_check import check_masks, dropout_layers
from netspec.spec.network import Network
from netspec.spec.params import Weights, check_trainable, init_weights, training_bytes
from netspec.training.schedules import learning_rates

F64_RTOL = 1e-9
"""float64, one pass. Rounding leaves ~1e-15; the smallest bug of the mutation tests ~1e-5."""
F64_STEPS_RTOL = 1e-6
"""float64, after the steps. Adam divides each gradient by its own RMS + eps, so a gradient that is 0
in exact arithmetic, ~1e-16 of the gradients in float64, still moves its parameter by up to
~1e-16 |g| / eps ~ 1e-8 lr a step; a real bug moves it by percents of lr."""
F32_RTOL = 1e-4
"""float32, one pass. Two BLAS libraries differ by ~1e-6 (any CPU, thread count, AVX2/AVX-512)."""
GRAD_FLOOR = 0.1
"""A gradient's scale is at least this fraction of the network's largest gradient: a gradient that is
0 in exact arithmetic holds rounding noise of the large ones."""
ACC_TOLERANCE = 1e-12
"""Accuracies: exact (one flipped prediction fails), yet ranked finitely among the failing rows."""
LR_FACTORS = (1.0, 0.5)
"""The steps are split into one train_steps call per factor, at lr * factor: the lr changes between
calls, as the trainer's LabLrRule does."""
TINY = 1e-300
MAX_CROSSCHECK_BYTES = 4 * 2**30
"""Largest network the cross-check compiles, as training_bytes at its batch, doubled for float64 and for
its two backends: it compares networks of the size netspec's specs have (ResNet-9 is ~0.1 GiB here); a
network of 100,000 channels would end in an XLA runtime failure deep in a compile, so it is refused first."""


@dataclass(frozen=True)
class Row:
    """One compared tensor."""

    tier: str
    """'float64' or 'float32'."""
    quantity: str
    tensor: str
    max_abs: float
    rel: float
    """max|a - b| / scale (see the module docstring); NaN when the shapes differ."""
    tolerance: float
    """inf: reported, not asserted."""
    reason: str = ""
    """Why a reported (not asserted) row is tolerated, in a few words (tolerated_reason); '' otherwise."""
    nonfinite: int = 0
    """How many elements are NaN or inf in either backend (float32 overflow): compared as equal where both
    hold the same non-finite value, max_abs and rel are over the finite rest; NaN when they differ there."""

    @property
    def score(self) -> float:
        """rel as a fraction of its tolerance (> 1 fails; NaN counts as inf)."""
        if math.isnan(self.rel):
            return math.inf
        return self.rel / self.tolerance if self.tolerance > 0 else (0.0 if self.rel == 0 else math.inf)

    @property
    def asserted(self) -> bool:
        return not math.isinf(self.tolerance)

    @property
    def ok(self) -> bool:
        return self.score <= 1.0

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.tier, self.quantity, self.tensor) if part)


@dataclass
class CrosscheckReport:
    """The rows of a cross-check; `ok` when every asserted row is within its tolerance."""

    title: str
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def worst_row(self) -> Row:
        """The asserted row farthest from parity relative to its tolerance."""
        return max((row for row in self.rows if row.asserted), key=lambda row: row.score)

    @property
    def worst(self) -> str:
        return self.worst_row.name

    def table(self) -> str:
        header = ("tier", "quantity", "tensor", "max abs", "rel", "tolerance", "ok", "tolerated because")
        cells = [header] + [
            (r.tier, r.quantity, r.tensor or "-", f"{r.max_abs:.2e}", f"{r.rel:.2e}",
             f"{r.tolerance:.0e}" if r.asserted else "reported", ("ok" if r.ok else "FAIL") if r.asserted else "-",
             "; ".join(filter(None, (_nonfinite_note(r), r.reason))))
            for r in self.rows
        ]
        if not any(r.reason or r.nonfinite for r in self.rows):
            cells = [c[:-1] for c in cells]
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
        lines = ["  ".join(f"{c[i]:{'<<<>>><<'[i]}{widths[i]}}" for i in range(len(c))).rstrip() for c in cells]
        rule = "-" * max(len(line) for line in lines)
        worst = self.worst_row
        return "\n".join([self.title, lines[0], rule, *lines[1:], rule,
                          f"{'OK' if self.ok else 'FAILED'}: worst {worst.name} at {worst.score:.2g} of its tolerance"])


    def summary(self) -> str:
        """Summary first: a verdict line (pass/fail, the backends, how many rows), then the worst asserted
        row of each tier, the largest reported row of each tier with why it is tolerated, and every
        failing row. table() has them all."""
        rows = self.rows
        asserted = [r for r in rows if r.asserted]
        failing = [r for r in rows if not r.ok]
        verdict = "crosscheck PASSED" if self.ok else f"crosscheck FAILED ({len(failing)} of {len(asserted)} asserted rows)"
        backends = self.title.split(":", 1)[0].removeprefix("cross-check ")
        lines = [f"{verdict}: {backends}, {len(rows)} rows compared ({len(asserted)} asserted, "
                 f"{len(rows) - len(asserted)} reported only)"]
        if overflowed := [r for r in rows if r.nonfinite]:
            lines.append(f"  {len(overflowed)} rows hold NaN or inf (the network overflows its float type), first "
                         f"{overflowed[0].name}: {_nonfinite_note(overflowed[0])}; scale its layers down")
        cells: list[tuple[str, ...]] = []
        for tier in dict.fromkeys(r.tier for r in rows):
            checked = [r for r in asserted if r.tier == tier]
            if checked:
                r = max(checked, key=lambda row: row.score)
                cells.append((f"{tier} worst", f"{r.quantity} {r.tensor}".strip(), f"rel {r.rel:.2e}",
                              f"{r.score:.2g} of tolerance {r.tolerance:.0e}" + ("" if r.ok else "  FAIL")))
            reported = [r for r in rows if r.tier == tier and not r.asserted]
            if reported:
                r = max(reported, key=lambda row: math.inf if math.isnan(row.rel) else row.rel)
                cells.append((f"{tier} reported", f"{r.quantity} {r.tensor}".strip(), f"rel {r.rel:.2e}",
                              f"tolerated: {r.reason}" if r.reason else "reported, not asserted"))
        cells += [("FAIL", r.name, f"rel {r.rel:.2e}", f"{r.score:.2g} of tolerance {r.tolerance:.0e}")
                  for r in sorted(failing, key=lambda row: -row.score)[:10]]
        widths = [max(len(c[i]) for c in cells) for i in range(4)] if cells else []
        lines += ["  " + "  ".join(f"{c[i]:<{widths[i]}}" for i in range(4)).rstrip() for c in cells]
        return "\n".join(lines + [self.title])


def _nonfinite_note(row: Row) -> str:
    """The table's words for a row holding NaN or inf ('' for a finite one)."""
    if not row.nonfinite:
        return ""
    agree = "the same in both backends" if not math.isnan(row.max_abs) else "NOT the same in both backends"
    return f"{row.nonfinite} non-finite values, {agree}"


BIAS_BEFORE_BATCHNORM = "bias before BatchNorm: the normalization cancels it, no effect on the output"
"""A bias whose every consumer is a BatchNorm: its gradient is 0 in exact arithmetic, so float32 Adam
steps it by rounding noise of random sign (the module docstring) and the backends' values part."""
FLOAT32_STEPS = "float32 after Adam steps: rounding noise grows step by step; the float64 tier asserts them"
"""Any other reported row: float32 trajectories are reported only (TIERS)."""


def cancelled_biases(network: Network) -> frozenset[str]:
    """The bias tensors ('0.bias') of layers whose output feeds only BatchNorms (never the network output)."""
    nodes = network.nodes()
    consumers: dict[int, list[Any]] = {}
    for node in nodes:
        for i in node.inputs:
            consumers.setdefault(i, []).append(node.layer)
    last = len(network.layers) - 1
    names = network.param_infos()
    return frozenset(f"{n.index}.bias" for n in nodes if f"{n.index}.bias" in names and n.index != last
                     and consumers.get(n.index) and all(c.type == "BatchNorm" for c in consumers[n.index]))


def tolerated_reason(row: Row, cancelled: frozenset[str]) -> str:
    """Why a reported row is tolerated ('' for an asserted one): the rule run_crosscheck attaches."""
    if row.asserted:
        return ""
    return BIAS_BEFORE_BATCHNORM if row.tensor in cancelled else FLOAT32_STEPS


def synthetic_batch(network: Network, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with a per-channel offset and spread (so a BatchNorm's statistics are not already 0 and
    1, which would hide a wrong momentum) and labels over the network's outputs."""
    shape = tuple(network.input_shape)
    channel = (shape[0],) + (1,) * (len(shape) - 1)
    x = rng.uniform(-1, 1, channel) + rng.uniform(0.5, 2.0, channel) * rng.standard_normal((n, *shape))
    return x.astype(np.float32), rng.integers(0, network.output_shape[0], n)


def _max_abs(a: np.ndarray) -> float:
    """max|a| over the finite elements (an overflowed element has no scale; Row.nonfinite counts it)."""
    a = np.asarray(a)[np.isfinite(a)]
    return float(np.max(np.abs(a))) if np.size(a) else 0.0


def _nonfinite(a: np.ndarray, b: np.ndarray) -> tuple[int, bool]:
    """How many elements are non-finite in a or b, and whether both hold the same value at each of them."""
    bad = ~np.isfinite(a) | ~np.isfinite(b)
    return int(bad.sum()), bool(np.array_equal(a[bad], b[bad], equal_nan=True))


def _scales(weights: Weights, floor: float = 0.0, trainable: frozenset[str] = frozenset()) -> dict[str, float]:
    """max|w| per tensor, at least `floor` for a trainable one; a running_mean's is at least its
    running std (a mean that is ~0 by construction, right after another BatchNorm, has no scale)."""
    out = {name: max(_max_abs(w), floor if name in trainable else 0.0) for name, w in weights.items()}
    for name in out:
        if name.endswith(".running_mean"):
            out[name] = max(out[name], math.sqrt(out[name[: -len("mean")] + "var"]))
    return out


@dataclass
class _Tier:
    """Appends one tier's rows; `tolerance` is the one of the current stage (inf: reported only)."""

    report: CrosscheckReport
    name: str
    tolerance: float

    def rel(self, quantity: str, tensor: str, a: object, b: object, scale: Optional[float] = None,
            tolerance: Optional[float] = None) -> None:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = _max_abs(b) if scale is None else scale
        nonfinite, same = _nonfinite(a, b) if a.shape == b.shape else (0, False)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: counted in nonfinite, masked by _max_abs
            max_abs = _max_abs(a - b) if a.shape == b.shape and same else math.nan
        tolerance = self.tolerance if tolerance is None else tolerance
        self.report.rows.append(Row(self.name, quantity, tensor, max_abs, max_abs / (scale + TINY), tolerance,
                                    nonfinite=nonfinite))

    def exact(self, quantity: str, a: float, b: float) -> None:
        """Accuracies: any difference fails (an argmax flip), when this stage is asserted."""
        self.rel(quantity, "", a, b, scale=1.0, tolerance=ACC_TOLERANCE if math.isfinite(self.tolerance) else math.inf)

    def weights(self, quantity: str, a: Weights, b: Weights, scales: dict[str, float],
                names: Optional[list[str]] = None) -> None:
        for name in (b if names is None else names):
            self.rel(quantity, name, a[name], b[name], scale=scales[name])


MASK_TOLERANCE = 0.0
"""Masks are equal or wrong: no share of the units may differ."""


def mask_rows(tier: str, network: Network, backends: tuple[Backend, ...], x: np.ndarray, seed: int,
              precision: str) -> list[Row]:
    """One row per dropout layer and backend (mask_check.check_masks): the share of the units seen whose
    keep/drop differs from the reference (tolerance MASK_TOLERANCE)."""
    return [Row(tier, f"dropout mask ({c.backend})", c.layer, float(c.wrong), c.wrong / max(c.seen, 1), MASK_TOLERANCE)
            for c in check_masks(network, backends, x, seed, precision)]


def _one_pass(tier: _Tier, models: tuple[Any, Any], x: np.ndarray, y: np.ndarray) -> None:
    """Eval logits, train-mode loss, gradients and logits, and the running statistics it leaves."""
    ref, other = models
    tier.rel("eval logits", "", other.forward(x), ref.forward(x))
    (loss_ref, grads_ref), (loss_other, grads_other) = ref.loss_and_grads(x, y), other.loss_and_grads(x, y)
    tier.rel("loss", "", loss_other, loss_ref)
    floor = GRAD_FLOOR * max(map(_max_abs, grads_ref.values()), default=0.0)
    tier.weights("grad", grads_other, grads_ref, {name: max(_max_abs(g), floor) for name, g in grads_ref.items()})
    tier.rel("train logits", "", other.forward(x, train=True), ref.forward(x, train=True))
    w_ref = ref.get_weights(finite=False)
    tier.weights("running stat", other.get_weights(finite=False), w_ref, _scales(w_ref), [n for n in w_ref if n not in grads_ref])


def _evaluate(tier: _Tier, quantity: str, models: tuple[Any, Any], data: list[Any], batch_size: int) -> None:
    (loss_ref, acc_ref), (loss_other, acc_other) = (m.evaluate(d, batch_size) for m, d in zip(models, data))
    tier.rel(f"{quantity} loss", "", loss_other, loss_ref)
    tier.exact(f"{quantity} acc", acc_other, acc_ref)


def _train(tier: _Tier, models: tuple[Any, Any], data: list[Any], batches: np.ndarray, config: TrainConfig,
           x: np.ndarray, trainable: frozenset[str]) -> None:
    """The trainer's path: setup_optimizer, then one free-running train_steps call per LR_FACTORS;
    then every tensor, eval logits and evaluate()."""
    for m in models:
        m.setup_optimizer(config)
    sums = np.zeros((2, 2))
    lrs = _recipe_lrs(config, len(batches))
    for factor, rows, chunk_lrs in zip(LR_FACTORS, *(np.array_split(a, len(LR_FACTORS)) for a in (batches, lrs))):
        lr = chunk_lrs * factor if config.schedule.type not in ("lab", "constant") else config.lr * factor
        extra = _augmentation(config, rows, x.shape)
        for i, (m, d) in enumerate(zip(models, data)):
            sums[i] += m.train_steps(d, rows, lr, **extra)
    quantity = f"after {len(batches)} steps"
    tier.rel(f"{quantity} loss sum", "", sums[1, 0], sums[0, 0])
    tier.exact(f"{quantity} acc sum", sums[1, 1], sums[0, 1])
    w_ref = models[0].get_weights(finite=False)
    scale = max(config.param_groups.norm_bias_lr_scale, 1.0)
    reach = scale * sum(float(np.sum(c)) * f for f, c in zip(LR_FACTORS, np.array_split(lrs, len(LR_FACTORS))))
    tier.weights(quantity, models[1].get_weights(finite=False), w_ref, _scales(w_ref, reach, trainable))
    tier.rel(f"{quantity} eval logits", "", models[1].forward(x), models[0].forward(x))
    _evaluate(tier, f"{quantity} evaluate", models, data, len(x))


def _recipe_lrs(config: TrainConfig, steps: int) -> np.ndarray:
    """Each step's lr under config's schedule, its `steps` spread over config.epochs."""
    return learning_rates(np.arange(steps), max(1, steps // config.epochs), config)


def _augmentation(config: TrainConfig, rows: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    """train_steps' augment argument when config augments (epoch 1's draws), else nothing."""
    if not config.augment.active:
        return {}
    return {"augment": batch_draws(config.augment, config.seed, 1, rows, shape[-2], shape[-1])}


TIERS = {"float64": ("float64", F64_RTOL, F64_STEPS_RTOL), "float32": ("highest", F32_RTOL, math.inf)}
"""tier -> (backend precision, one-pass tolerance, tolerance of what follows; inf: reported)."""


def check_crosscheck_size(network: Network, batch_size: int) -> None:
    """One SpecError line, before any compile, when the network is beyond MAX_CROSSCHECK_BYTES."""
    need, index = training_bytes(network, batch_size)
    need *= 2 * 2  # float64, two backends
    if need > MAX_CROSSCHECK_BYTES:
        layer = network.layers[index]
        raise SpecError(f"network: the cross-check of this network needs about {need / 2**30:,.1f} GiB (two backends in "
                        f"float64 at batch {batch_size}), beyond its bound of {MAX_CROSSCHECK_BYTES / 2**30:g} GiB; layer "
                        f"{index} ({layer.type}) is the largest: cross-check a smaller variant of it")


def run_crosscheck(network: Network, reference: Backend, other: Backend, seed: int = 0, batch_size: int = 8,
                   steps: int = 10, train_config: Optional[TrainConfig] = None,
                   tiers: tuple[str, ...] = tuple(TIERS)) -> CrosscheckReport:
    """Compare `other` against `reference` (backend objects, e.g. `load_backend("jax")`) on `network`
    (dropout on, masks checked first) from the canonical weights of `seed`, on synthetic batches of `batch_size`, then
    over `steps` Adam steps with train_config's optimizer and lr (its batch size is not used)."""
    backends = (reference, other)

    if len(network.output_shape) != 1:
        raise SpecError(f"the cross-check needs flat logits (classes,), but the network outputs {network.output_shape}; end it with a Linear")
    check_trainable(network)
    check_crosscheck_size(network, batch_size)
    config = train_config or TrainConfig()
    net = network  # dropout on: both backends draw the same masks
    weights = init_weights(net, seed)
    rng = np.random.default_rng(seed)
    x_all, y_all = synthetic_batch(net, 3 * batch_size + 1, rng)  # evaluate()'s last batch has one example
    x, y = x_all[:batch_size], y_all[:batch_size]
    batches = np.array([rng.permutation(len(y_all))[:batch_size] for _ in range(steps)], dtype=np.int64).reshape(steps, batch_size)
    trainable = frozenset(name for name, info in net.param_infos().items() if info.trainable)
    report = CrosscheckReport(
        f"cross-check {other.name} against {reference.name}: batch {batch_size}, {steps} free-running {config.optimizer.type} steps "
        f"at lr {config.lr:g} x {', '.join(f'{f:g}' for f in LR_FACTORS)}, seed {seed}, "
        f"dropout {'on (the same masks)' if dropout_layers(net) else 'none'}; "
        f"{' and '.join(tiers)} (float32 after the first pass: reported)")
    for name in tiers:
        precision, pass_tolerance, steps_tolerance = TIERS[name]
        models = tuple(b.compile(net, weights, seed=seed, precision=precision) for b in backends)
        tier = _Tier(report, name, pass_tolerance)
        if name == tiers[0]:
            report.rows += mask_rows(name, net, backends, x, seed, precision)
        _one_pass(tier, models, x, y)
        data = [m.to_device(x_all, y_all) for m in models]
        _evaluate(tier, "evaluate", models, data, batch_size)
        tier.tolerance = steps_tolerance
        if steps > 0:
            _train(tier, models, data, batches, config, x, trainable)
    cancelled = cancelled_biases(net)
    report.rows = [replace(row, reason=tolerated_reason(row, cancelled)) for row in report.rows]
    return report
