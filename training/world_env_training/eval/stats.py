"""Success-rate and paired-difference statistics."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% (by default) Wilson score interval of a binomial proportion, as (low, high).

    Chosen over the normal approximation because it stays inside [0, 1] and is sensible at
    0 % and 100 %, which small evaluations hit often.
    """
    if n <= 0:
        raise ValueError(f"n={n}: need at least one trial")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} is outside [0, n={n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of ``values`` (e.g. paired differences
    between a model and a baseline on the same targets)."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"{x.size} values: need at least two for an interval")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def newcombe_interval(k_a: int, n_a: int, k_b: int, n_b: int, z: float = 1.959963984540054) -> tuple[float, float, float]:
    """(difference, low, high): p_a - p_b of two independent proportions with Newcombe's hybrid
    score interval (his method 10), built from each arm's Wilson interval. It keeps sensible
    coverage at small n and at 0 % or 100 %, where the Wald interval of a difference fails."""
    low_a, high_a = wilson_interval(k_a, n_a, z)  # also rejects impossible counts
    low_b, high_b = wilson_interval(k_b, n_b, z)
    p_a, p_b = k_a / n_a, k_b / n_b
    d = p_a - p_b
    return (d, d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
            d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2))
