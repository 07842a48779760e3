"""Cross-backend check: the same network, canonical weights and batches in two backends, compared
number by number (DESIGN.md principle 6).

Dropout is switched off (p = 0: RNG streams cannot match across frameworks) and both backends run at
float32 "highest" precision. Compared: eval logits, train-mode loss, logits and every gradient, the
running statistics after one train-mode forward pass, evaluate() over a split whose last batch is
short, and the loss/accuracy sums and every parameter and running statistic after `steps` Adam steps.
Backend-neutral: backends are reached through backends.get_backend only, never imported here.

How a row is measured (b: the first backend's tensor, a: the other's). Two float32 frameworks differ
by a few ulp per operation (their summation orders differ): ~1e-7 relative after one pass.

- rel = max|a - b| / max|b|; a running_mean in units of the running std, max(max|mean|, sqrt(max
  var)), because a mean that is ~0 by construction (right after another BatchNorm) has no scale of
  its own. Tolerances FORWARD_RTOL, GRAD_RTOL (100x the observed rounding).
- rms/step = rms(a - b) / rms(b - b_before): every tensor after the last of the Adam steps, against
  how far that step moved it (at least STEP_FLOOR of the tensor's scale, as for rel). Before each
  step the other backend (and the probe below) is given the first backend's parameters and
  statistics, each keeping its own Adam moments: training is chaotic (a ReLU or max-pool window
  near a tie flips under a rounding-sized change and the gradients after it differ by percents), so
  free-running trajectories would measure that chaos, not the backends. rms, not max: Adam divides
  each gradient element by its own running RMS, so an element whose gradient is within rounding of
  zero takes a step of up to lr whose sign rounding decides, and a tensor of millions of elements
  always has a few. Tolerance STEPS_RTOL, 15x the worst of 300 random networks. A real Adam bug
  shows on several tensors: b2 at 0.99 instead of 0.999 gives 1.2e-2 to 1.4e-2 on the report's MLP
  and CNN, b1 at 0.8 0.3, eps inside the square root 1.1e-2 on the MLP (not on the CNN, whose
  gradients are too large for eps to matter).
- Accuracies must match exactly.

Ill-conditioned tensors (marked * in the table). Some quantities are set by rounding in any one
backend: the gradient of a bias that a following BatchNorm cancels is 0 in exact arithmetic and
noise in float32, and Adam turns that noise into a step of about lr with a random sign; so do
BatchNorms in a row, or over two values. Rather than guessing them from the architecture, the check
measures them with a probe: a second model of the first backend, its weights nudged by a few ulp
(NUDGE) and every batch given with its examples in another order. Its sums and its elementwise
results then round differently (as in another framework) while the mathematics is the same, so what
differs between the probe and the first backend is what rounding alone decides.
- A gradient's tolerance is raised to NOISE_RATIO times the probe's own difference where that is
  larger, and its scale is at least GRAD_FLOOR of the network's largest gradient (a gradient that is
  0 in exact arithmetic can be 1e-16 in one backend and 1e-8 in the other: both are noise).
- After the steps, a tensor whose last step in the probe differs from the first backend's by more
  than STEPS_RTOL / NOISE_RATIO (rms/step) is chaotic: a parameter is then held only to what one
  Adam step can do, |a - b| <= 2 * lr * adam_step_bound (both started the step from the same
  values), and a running statistic is reported, not asserted.
A real bug still shows in the well-conditioned rows, which are most of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import numpy as np

from .errors import SpecError
from .experiment import TrainConfig
from .layers import BatchNorm, Conv2d, Dropout, Dropout2d, Flatten, LayerSpec, Linear, MaxPool2d, ReLU, Shape, pair
from .network import Network
from .params import Weights, init_weights

FORWARD_RTOL = 1e-5
"""rel of one forward pass: logits, loss, running statistics, evaluate()."""
GRAD_RTOL = 1e-5
"""rel of every gradient of one backward pass."""
GRAD_FLOOR = 0.1
"""A gradient's scale is at least this fraction of the network's largest gradient: rounding leaves up
to ~1e-6 of the largest gradient in any gradient, even one that is 0 in exact arithmetic."""
STEPS_RTOL = 1e-3
"""rms/step of every parameter and running statistic after the Adam steps; rel of the loss sum."""
STEP_FLOOR = 1e-2
"""rms/step counts a step as at least this fraction of the tensor's scale: float32 resolves a value to
2^-23 = 1.2e-7 of itself, so two results a last-place rounding apart must not fail a tiny step."""
ACC_ATOL = 1e-6
"""Accuracies must agree exactly (an argmax flip between backends is a failure)."""
NUDGE = 3e-7
"""Relative perturbation of the probe's starting weights: a few float32 ulp (2^-23 = 1.2e-7), so
that its elementwise operations round differently too, not only its sums over the batch."""
NOISE_RATIO = 10.0
"""An ill-conditioned row's tolerance: this many times the probe's difference to the first backend."""
TINY = 1e-30

BACKENDS = ("torch", "jax")


@dataclass(frozen=True)
class Row:
    """One compared tensor: its max differences, and the one measure its tolerance bounds."""

    quantity: str
    tensor: str
    max_abs: float
    max_rel: float
    """max|a - b| / scale (a running_mean's scale is its running std)."""
    measure: str
    """'rel', 'rms/step' or 'abs' (see the module docstring): what `value` is."""
    value: float
    tolerance: float
    """inf: reported, not asserted (a chaotic running statistic)."""
    ill_conditioned: bool = False
    """The probe found this quantity set by rounding; its tolerance is the looser one."""

    @property
    def score(self) -> float:
        """The measured value as a fraction of its tolerance (> 1 fails; NaN counts as inf)."""
        if math.isnan(self.value):
            return math.inf
        return self.value / self.tolerance if self.tolerance > 0 else (0.0 if self.value == 0 else math.inf)

    @property
    def ok(self) -> bool:
        return self.score <= 1.0

    @property
    def name(self) -> str:
        return f"{self.quantity} {self.tensor}" if self.tensor else self.quantity


@dataclass
class CrosscheckReport:
    """The rows of a cross-check; `ok` when every row is within its tolerance."""

    title: str
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def worst_row(self) -> Row:
        return max(self.rows, key=lambda row: row.score)

    @property
    def worst(self) -> str:
        """The name of the tensor farthest from parity relative to its tolerance."""
        return self.worst_row.name

    def table(self) -> str:
        header = ("quantity", "tensor", "max abs", "max rel", "checked", "tolerance", "ok")
        cells = [header] + [
            (r.quantity, r.tensor or "-", f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.measure} {r.value:.2e}",
             "-" if math.isinf(r.tolerance) else f"{r.tolerance:.1e}", ("ok" if r.ok else "FAIL") + (" *" if r.ill_conditioned else ""))
            for r in self.rows
        ]
        widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
        align = "<<>>>><"
        lines = ["  ".join(f"{c[i]:{align[i]}{widths[i]}}" for i in range(len(header))).rstrip() for c in cells]
        rule = "-" * max(len(line) for line in lines)
        worst = self.worst_row
        notes = [f"* ill-conditioned (the first backend itself differs this much when rounding differs): "
                 f"gradients within {NOISE_RATIO:g}x that, chaotic parameters within one Adam step's reach, chaotic "
                 f"statistics not asserted"] if any(r.ill_conditioned for r in self.rows) else []
        return "\n".join([
            self.title, lines[0], rule, *lines[1:], rule, *notes,
            f"{'OK' if self.ok else 'FAILED'}: worst {worst.name} at {worst.score:.2g} of its tolerance",
        ])


def adam_step_bound(t: int, betas: tuple[float, float]) -> float:
    """The largest |update| / lr of Adam's step t whatever the gradients: by Cauchy-Schwarz,
    |m_hat| / sqrt(v_hat) <= sqrt(sum_i w_i^2 / u_i), with w and u the bias-corrected weights of the
    gradients in the first and second moments (eps only shrinks the step)."""
    b1, b2 = betas
    if b2 <= 0.0:
        return math.inf
    age = np.arange(t)
    w = (1 - b1) * b1 ** age / (1 - b1 ** t)
    u = (1 - b2) * b2 ** age / (1 - b2 ** t)
    return math.sqrt(float(np.sum(w * w / u)))


def without_dropout(network: Network) -> Network:
    """The network with every Dropout / Dropout2d at p = 0."""
    layers = [layer.model_copy(update={"p": 0.0}) if isinstance(layer, (Dropout, Dropout2d)) else layer
              for layer in network.layers]
    return Network(input_shape=network.input_shape, layers=layers)


def synthetic_batch(network: Network, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with a per-channel offset and spread (so a BatchNorm's statistics are not already 0 and
    1, which would hide a wrong momentum) and labels over the network's outputs."""
    shape = tuple(network.input_shape)
    channel = (shape[0],) + (1,) * (len(shape) - 1)
    x = rng.uniform(-1, 1, channel) + rng.uniform(0.5, 2.0, channel) * rng.standard_normal((n, *shape))
    return x.astype(np.float32), rng.integers(0, network.output_shape[0], n)


def nudged(weights: Weights, rng: np.random.Generator, size: float = NUDGE) -> Weights:
    """Float tensors times (1 + size * U(-1, 1)), elementwise; integer ones unchanged."""
    return {name: (w * (1 + size * rng.uniform(-1, 1, w.shape))).astype(w.dtype) if w.dtype.kind == "f" else w.copy()
            for name, w in weights.items()}


def _max_abs(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if np.size(a) else 0.0


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if np.size(a) else 0.0


class _Rows:
    """Appends the rows of one report (see the module docstring)."""

    def __init__(self, report: CrosscheckReport) -> None:
        self.report = report

    def _append(self, quantity: str, tensor: str, a: np.ndarray, b: np.ndarray, scale: float, measure: str,
                value: float, tolerance: float, ill: bool = False) -> None:
        if a.shape != b.shape:
            max_abs = max_rel = value = math.nan
        else:
            max_abs = _max_abs(a - b)
            max_rel = max_abs / (scale + TINY)
        self.report.rows.append(Row(quantity, tensor, max_abs, max_rel, measure, value, tolerance, ill))

    def rel(self, quantity: str, tensor: str, a: object, b: object, tolerance: float,
            scale: Optional[float] = None, probe: object = None) -> None:
        """max|a - b| / scale (default max|b|); with a probe, the tolerance is at least NOISE_RATIO
        times the probe's own rel."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = _max_abs(b) if scale is None else scale
        value = _max_abs(a - b) / (scale + TINY) if a.shape == b.shape else math.nan
        noise = NOISE_RATIO * _max_abs(np.asarray(probe, np.float64) - b) / (scale + TINY) if probe is not None else 0.0
        self._append(quantity, tensor, a, b, scale, "rel", value, max(tolerance, noise), noise > tolerance)

    def after_steps(self, quantity: str, tensor: str, a: np.ndarray, b: np.ndarray, before: np.ndarray,
                    probe: np.ndarray, probe_before: np.ndarray, scale: float, trainable: bool, bound: float) -> None:
        """rms/step of a step that both backends started from `before`; chaotic (the probe's step
        differed from the first backend's by more than STEPS_RTOL / NOISE_RATIO of it): a parameter
        within `bound`, a running statistic reported only."""
        a, b, before, probe, probe_before = (np.asarray(t, np.float64) for t in (a, b, before, probe, probe_before))
        step = b - before
        moved = max(_rms(step), STEP_FLOOR * scale) + TINY
        if _rms(probe - probe_before - step) / moved <= STEPS_RTOL / NOISE_RATIO:
            value = _rms(a - b) / moved if a.shape == b.shape else math.nan
            self._append(quantity, tensor, a, b, scale, "rms/step", value, STEPS_RTOL)
        else:
            value = _max_abs(a - b) if a.shape == b.shape else math.nan
            self._append(quantity, tensor, a, b, scale, "abs", value, bound if trainable else math.inf, True)


def _scales(weights: Weights) -> dict[str, float]:
    """max|w| per tensor; a running_mean in units of its running std."""
    out = {name: _max_abs(w) for name, w in weights.items()}
    for name in out:
        if name.endswith(".running_mean"):
            out[name] = max(out[name], math.sqrt(out[name[: -len("mean")] + "var"]))
    return out


class _Models(NamedTuple):
    ref: Any
    """The first backend: the reference of every row."""
    other: Any
    """The backend under check."""
    probe: Any
    """The first backend again, rounding differently (see the module docstring)."""


def _one_pass(rows: _Rows, models: _Models, x: np.ndarray, y: np.ndarray, shuffle: np.ndarray) -> None:
    """Eval logits, train-mode loss, gradients and logits, and the running statistics it leaves."""
    ref, other, probe = models
    rows.rel("eval logits", "", other.forward(x), ref.forward(x), FORWARD_RTOL)
    (loss_ref, grads_ref), (loss_other, grads_other) = ref.loss_and_grads(x, y), other.loss_and_grads(x, y)
    grads_probe = probe.loss_and_grads(x[shuffle], y[shuffle])[1]
    rows.rel("loss", "", loss_other, loss_ref, FORWARD_RTOL)
    floor = GRAD_FLOOR * max(map(_max_abs, grads_ref.values()), default=0.0)
    for name, g in grads_ref.items():
        rows.rel("grad", name, grads_other[name], g, GRAD_RTOL, scale=max(_max_abs(g), floor), probe=grads_probe[name])
    rows.rel("train logits", "", other.forward(x, train=True), ref.forward(x, train=True), FORWARD_RTOL)
    probe.forward(x[shuffle], train=True)  # the probe follows the same updates of the running statistics
    w_ref, w_other = ref.get_weights(), other.get_weights()
    scales = _scales(w_ref)
    for name in w_ref:
        if name not in grads_ref:
            rows.rel("running stat", name, w_other[name], w_ref[name], FORWARD_RTOL, scale=scales[name])


def _adam_steps(rows: _Rows, models: _Models, data: list[Any], batches: np.ndarray, probe_batches: np.ndarray,
                config: TrainConfig, probe_rng: np.random.Generator, trainable: set[str]) -> None:
    """One train_steps call per row of `batches`, each backend starting every step from the first
    backend's values with its own Adam moments; then every tensor after the last step."""
    ref, other, probe = models
    for m in models:
        m.setup_optimizer(config)
    sums = np.zeros((3, 2))
    for step in range(len(batches)):
        before = ref.get_weights()
        other.set_weights(before)
        probe_before = nudged(before, probe_rng)
        probe.set_weights(probe_before)
        for i, (m, d, order) in enumerate(zip(models, data, (batches, batches, probe_batches))):
            sums[i] += m.train_steps(d, order[step:step + 1], config.lr)
    rows.rel("train_steps loss sum", "", sums[1, 0], sums[0, 0], STEPS_RTOL, probe=sums[2, 0])
    rows.rel("train_steps acc sum", "", sums[1, 1], sums[0, 1], ACC_ATOL, scale=1.0)
    w_ref, w_other, w_probe = ref.get_weights(), other.get_weights(), probe.get_weights()
    scales = _scales(w_ref)
    bound = 2 * config.lr * adam_step_bound(len(batches), config.optimizer.betas)
    for name in w_ref:
        rows.after_steps(f"after {len(batches)} steps", name, w_other[name], w_ref[name], before[name], w_probe[name],
                         probe_before[name], scales[name], name in trainable, bound)


def run_crosscheck(network: Network, seed: int = 0, batch_size: int = 8, steps: int = 10,
                   train_config: Optional[TrainConfig] = None, backends: tuple[str, str] = BACKENDS) -> CrosscheckReport:
    """Compare `backends[1]` against `backends[0]` on `network` (dropout off, float32 highest) from the
    canonical weights of `seed`, on synthetic batches of `batch_size`, then over `steps` Adam steps
    (train_config's optimizer and lr; its batch size is not used)."""
    from backends import get_backend  # lazy: netspec never imports a backend at module level

    if len(network.output_shape) != 1:
        raise SpecError(f"the cross-check needs flat logits (classes,), but the network outputs {network.output_shape}; end it with a Linear")
    config = train_config or TrainConfig()
    net = without_dropout(network)
    weights = init_weights(net, seed)
    rng, probe_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    build = lambda name, w: get_backend(name).compile(net, w, seed=seed, precision="highest")
    models = _Models(build(backends[0], weights), build(backends[1], weights), build(backends[0], nudged(weights, probe_rng)))
    x_all, y_all = synthetic_batch(net, 3 * batch_size + 1, rng)  # evaluate()'s last batch has one example
    report = CrosscheckReport(
        f"cross-check {backends[1]} against {backends[0]}: batch {batch_size}, {steps} Adam steps at lr {config.lr:g}, "
        f"seed {seed}, dropout off, float32 highest precision")
    rows = _Rows(report)
    _one_pass(rows, models, x_all[:batch_size], y_all[:batch_size], rng.permutation(batch_size))

    data = [m.to_device(x_all, y_all) for m in models]
    (loss_ref, acc_ref), (loss_other, acc_other) = models.ref.evaluate(data[0], batch_size), models.other.evaluate(data[1], batch_size)
    rows.rel("evaluate loss", "", loss_other, loss_ref, FORWARD_RTOL)
    rows.rel("evaluate acc", "", acc_other, acc_ref, ACC_ATOL, scale=1.0)

    if steps > 0:
        batches = np.stack([rng.permutation(len(y_all))[:batch_size] for _ in range(steps)])
        trainable = {name for name, info in net.param_infos().items() if info.trainable}
        _adam_steps(rows, models, data, batches, rng.permuted(batches, axis=1), config, probe_rng, trainable)
    return report


# ---- random valid networks (for tests and fuzzing) ----

def _random_pair(rng: np.random.Generator, low: int, high: int) -> int | tuple[int, int]:
    """An int in [low, high], or (one time in four) a pair of them."""
    if rng.random() < 0.25:
        return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    return int(rng.integers(low, high + 1))


def _random_layer(rng: np.random.Generator, shape: Shape) -> LayerSpec:
    spatial = len(shape) == 3
    kinds = ["Conv2d", "MaxPool2d", "Dropout2d", "BatchNorm", "ReLU", "Dropout", "Flatten"] if spatial else \
        ["Linear", "Linear", "BatchNorm", "ReLU", "Dropout", "Flatten"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "Conv2d":
        kernel = _random_pair(rng, 1, 3)
        padding = tuple(int(rng.integers(0, k)) for k in pair(kernel)) if rng.random() < 0.5 else 0
        return Conv2d(out_channels=int(rng.integers(1, 6)), kernel_size=kernel, stride=_random_pair(rng, 1, 2),
                      padding=padding, bias=bool(rng.random() < 0.8))
    if kind == "MaxPool2d":
        kernel = _random_pair(rng, 1, 3)
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in pair(kernel))
        return MaxPool2d(kernel_size=kernel, stride=None if rng.random() < 0.5 else _random_pair(rng, 1, 2), padding=padding)
    if kind == "Linear":
        return Linear(out_features=int(rng.integers(1, 9)), bias=bool(rng.random() < 0.8))
    if kind == "BatchNorm":
        momentum = 0.1 if rng.random() < 0.5 else float(rng.uniform(0.01, 1.0))
        return BatchNorm(momentum=momentum, eps=float(rng.choice([1e-5, 1e-3])))
    if kind in ("Dropout", "Dropout2d"):
        return (Dropout if kind == "Dropout" else Dropout2d)(p=float(rng.choice([0.0, 0.3, 0.5])))
    return ReLU() if kind == "ReLU" else Flatten()


def random_network(rng: np.random.Generator, max_layers: int = 7) -> Network:
    """A small random valid network: (C, H, W) or (F,) input, up to `max_layers` random layers
    (kernel sizes, strides, paddings, channel counts, BatchNorm momentum/eps drawn at random),
    then Flatten if needed and a final Linear, so it ends in logits."""
    if rng.random() < 0.75:
        shape: Shape = (int(rng.integers(1, 4)), int(rng.integers(3, 10)), int(rng.integers(3, 10)))
    else:
        shape = (int(rng.integers(2, 11)),)
    layers: list[LayerSpec] = []
    current = shape
    for _ in range(int(rng.integers(1, max_layers + 1))):
        layer = _random_layer(rng, current)
        try:
            current = layer.output_shape(current)
        except ValueError:  # e.g. a kernel larger than what is left of the image: draw again
            continue
        layers.append(layer)
    if len(current) == 3:
        layers.append(Flatten())
    layers.append(Linear(out_features=int(rng.integers(2, 6))))
    return Network(input_shape=shape, layers=layers)
