"""bench/study.py: the t quantiles, the paired interval and the verdict rule of the benchmark claims tables."""

from __future__ import annotations

import math

import pytest

from bench.study import T975, interval_text, paired_interval, t975, t975_table, verdict


def test_table_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in T975:
        assert t975_table(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=6e-4), df
    assert t975(4) == pytest.approx(2.7764, abs=1e-4)


def test_table_known_values_and_conservative_between_rows():
    assert t975_table(1) == 12.706 and t975_table(4) == 2.776 and t975_table(9) == 2.262
    assert t975_table(45) == T975[40] and t975_table(500) == 1.960  # between rows: the smaller df (wider)
    with pytest.raises(ValueError, match=">= 1"):
        t975_table(0)


def test_paired_interval_by_hand():
    # diffs 1, 2, 3: mean 2, sample sd 1, half-width t_{0.975,2} / sqrt(3) = 4.303 / 1.732 = 2.484
    mean, lo, hi = paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(t975(2) / math.sqrt(3), rel=1e-9)
    assert lo == pytest.approx(2.0 - 2.484, abs=2e-3)
    assert paired_interval([0.5]) == (0.5, -math.inf, math.inf) and verdict(*paired_interval([0.5])[1:]) == "not resolved"
    assert math.isnan(paired_interval([])[0]) and paired_interval([])[1:] == (-math.inf, math.inf)
    assert interval_text([1.0, 2.0, 3.0]) == "+2.0 [-0.5, +4.5]" and interval_text([0.5], 2) == "+0.50 (one seed)"
    assert interval_text([]) == "–"


def test_verdicts():
    assert verdict(0.2, 1.5) == "held" and verdict(-1.5, -0.2) == "did not hold" and verdict(-0.1, 2) == "not resolved"
    # a claim that a drop stays below 1 point: the whole interval must be below 1
    assert verdict(0.1, 0.8, 1.0, above=False) == "held"
    assert verdict(1.2, 3.0, 1.0, above=False) == "did not hold"
    assert verdict(0.5, 1.5, 1.0, above=False) == "not resolved"
