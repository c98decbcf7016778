"""Paired differences over seeds with a 95 % t-interval, and the verdict rule the benchmark claims tables use.

A claim reads ``held`` only when the interval lies entirely on the claimed side of its threshold, ``did not
hold`` only when it lies entirely on the other side, and ``not resolved`` otherwise (including n < 2).
"""

from __future__ import annotations

import math

# Two-sided 95 % quantiles t_{0.975, df} of Student's t (standard tables, e.g. NIST/SEMATECH e-Handbook
# §1.3.6.7.2), used when scipy is not installed.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975_table(df: int) -> float:
    """``t_{0.975, df}`` from :data:`T975` (between tabulated dfs the next smaller df: a conservative value;
    beyond 120 the normal 1.960).

    Raises:
        ValueError: ``df < 1``.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 120:
        return 1.960
    return T975[max(k for k in T975 if k <= df)]


def t975(df: int) -> float:
    """``t_{0.975, df}``: ``scipy.stats.t.ppf`` when scipy is installed, else :func:`t975_table`."""
    try:
        from scipy.stats import t
    except ImportError:
        return t975_table(df)
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(t.ppf(0.975, df))


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval ``(mean, low, high)`` of paired differences (one per seed).

    With fewer than 2 differences the interval is ``(-inf, inf)``.
    """
    n = len(diffs)
    if n == 0:
        return math.nan, -math.inf, math.inf
    mean = sum(diffs) / n
    if n < 2:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(low: float, high: float, threshold: float = 0.0, above: bool = True) -> str:
    """``held`` when the whole interval is on the claimed side of ``threshold`` (above it when ``above``, else
    below it), ``did not hold`` when it is wholly on the other side, else ``not resolved``."""
    if above:
        return "held" if low > threshold else "did not hold" if high < threshold else "not resolved"
    return "held" if high < threshold else "did not hold" if low > threshold else "not resolved"
