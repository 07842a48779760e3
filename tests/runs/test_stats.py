"""netspec.runs.stats against hand-computed values on a fixed table of four seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest

from netspec.runs.stats import Difference, paired_difference, summarize

# final test accuracy of two arms over seeds 0-3 (seed i of a is paired with seed i of b)
A = [0.561, 0.565, 0.558, 0.570]
B = [0.555, 0.556, 0.557, 0.560]


def test_mean_and_sample_std_by_hand() -> None:
    s = summarize(A)
    # mean 2.254 / 4; deviations -25, 15, -55, 65 (1e-4): squares sum to 81e-6, over n - 1 = 3
    assert s.n == 4 and s.mean == pytest.approx(0.5635, abs=1e-15)
    assert s.std == pytest.approx(math.sqrt(27e-6), rel=1e-12)
    assert s.text() == "0.5635 ± 0.0052 (4)"
    assert summarize([0.5]).text() == "0.5000" and summarize([0.5]).std is None


def test_paired_bootstrap_interval_is_the_percentiles_of_resampled_mean_differences() -> None:
    d = np.array(A) - np.array(B)  # 0.006, 0.009, 0.001, 0.010
    result = paired_difference(A, B, n_resamples=2000, seed=7)
    assert result.mean == pytest.approx(0.0065, abs=1e-15) and result.n == 4
    # the same resampling by hand: seeds drawn with replacement, mean difference, 2.5th/97.5th percentiles
    draws = np.random.default_rng(7).integers(0, 4, size=(2000, 4))
    low, high = np.percentile(d[draws].mean(axis=1), [2.5, 97.5])
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-15)
    # bounds of any resample: all seeds the smallest (0.001) to all the largest (0.010) difference
    assert 0.001 <= result.low < result.mean < result.high <= 0.010
    assert paired_difference(A, B, n_resamples=2000, seed=7) == result  # fixed seed: reproducible


@pytest.mark.parametrize("low, high, n, marked", [(0.001, 0.01, 5, True), (-0.01, -0.002, 5, True), (-0.001, 0.01, 5, False),
                                                  (0.0, 0.01, 5, False), (None, None, 1, False),
                                                  (0.001, 0.01, 4, False)])  # too few pairs: never marked
def test_a_difference_is_marked_only_when_its_interval_excludes_zero(low, high, n, marked) -> None:
    difference = Difference(0.005, low, high, n)
    assert difference.marked is marked
    assert difference.text().endswith(" *") is marked


def test_marking_on_data() -> None:
    assert paired_difference([*A, 0.566], [*B, 0.558]).marked  # five seeds, each of A beats its pair in B
    # four seeds all of one sign: the interval excludes zero, but noise does that 1 time in 8: unmarked
    assert paired_difference(A, B).low > 0 and not paired_difference(A, B).marked
    noisy = paired_difference([0.56, 0.55, 0.57], [0.555, 0.558, 0.561])  # +0.005, -0.008, +0.009
    assert noisy.low < 0 < noisy.high and not noisy.marked
    single = paired_difference([0.6], [0.5])
    assert (single.low, single.high, single.marked, single.text()) == (None, None, False, "+0.1000")
    same = paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])  # bit-identical backends
    assert (same.mean, same.low, same.high, same.marked) == (0.0, 0.0, 0.0, False)
    assert paired_difference(A, B).text().startswith("+0.0065 [+0.00")


def test_unpaired_input_is_refused() -> None:
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([0.1, 0.2], [0.1])
