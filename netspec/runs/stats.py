"""Statistics over seeds: mean and sample standard deviation of a figure, and paired differences with
a 95% bootstrap confidence interval.

Seeds are paired (every arm of a sweep and every backend runs the same seeds), so a difference is
taken seed by seed, d_i = a_i - b_i, and its interval is the percentile bootstrap of the mean of the
d_i (scipy.stats.bootstrap on the differences, with a fixed generator, so a report is reproducible).
The percentile method rather than scipy's default BCa: with the 3-5 seeds a sweep affords, BCa's
jackknife acceleration is unstable and degenerate, and the percentile interval is the one a reader
can recompute by hand. A difference counts as real ("marked") only when its interval excludes zero.

With very few seeds a bootstrap interval is too narrow: it cannot be wider than the spread of the
observed differences, so with n pairs it excludes zero whenever all n differences share a sign, which
pure noise does with probability 2^(1-n) (50% for 2 seeds, 25% for 3). So a difference is marked only
from MIN_PAIRS_TO_MARK pairs on (2^-4 = 6%); below that the interval is shown, unmarked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 9999
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's generator: the same table gives the same intervals in every report."""
MIN_PAIRS_TO_MARK = 5
"""Fewer pairs than this: never marked (see the module's docstring)."""


@dataclass(frozen=True)
class Summary:
    """A figure over seeds."""

    mean: float
    std: Optional[float]
    """Sample standard deviation (ddof=1); None for a single value."""
    n: int

    def text(self) -> str:
        """'0.5612' for one run, '0.5612 ± 0.0031 (3)' for several."""
        if self.n == 1 or self.std is None:
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {self.std:.4f} ({self.n})"


@dataclass(frozen=True)
class Difference:
    """Mean of paired differences a - b with its bootstrap interval (None when n < 2)."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    n: int

    @property
    def marked(self) -> bool:
        """True only when the interval exists, excludes zero, and rests on at least MIN_PAIRS_TO_MARK pairs."""
        excludes_zero = self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)
        return excludes_zero and self.n >= MIN_PAIRS_TO_MARK

    def text(self) -> str:
        """'+0.0061 [+0.0012, +0.0100] *' (the star: the interval excludes zero); a single pair as a
        signed number, '+0.0061' (a difference keeps its sign, whatever its size)."""
        if self.low is None or self.high is None:
            return f"{self.mean:+.4f}"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]" + (" *" if self.marked else "")


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation of one figure over seeds."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    std = float(np.std(x, ddof=1)) if x.size > 1 else None
    return Summary(float(np.mean(x)), std, int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                      n_resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Difference:
    """Mean of a_i - b_i (seed i in both) and its percentile bootstrap interval."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_difference needs two equally long, non-empty lists (got {len(a)} and {len(b)})")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean = float(np.mean(d))
    if d.size < 2:
        return Difference(mean, None, None, 1)
    low, high = bootstrap_interval(d, confidence, n_resamples, seed)
    return Difference(mean, low, high, int(d.size))


def bootstrap_interval(d: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of d."""
    if np.all(d == d[0]):
        # Every resample has the same mean; scipy warns and may return NaN on such degenerate data.
        return float(d[0]), float(d[0])
    from scipy.stats import bootstrap  # scipy only when a report has seeds to compare

    result = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                       vectorized=True, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)
