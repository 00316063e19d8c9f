"""Success-rate and paired-difference statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path


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


def newcombe_interval(k_a: int, n_a: int, k_b: int, n_b: int,
                      z: float = 1.959963984540054) -> tuple[float, float, float]:
    """(difference, low, high): p_a - p_b of two independent proportions with Newcombe's hybrid
    score interval (his method 10), built from each arm's Wilson interval. It keeps sensible
    coverage at small n and at 0 % or 100 %, where the Wald interval of a difference fails."""
    low_a, high_a = wilson_interval(k_a, n_a, z)  # also rejects impossible counts
    low_b, high_b = wilson_interval(k_b, n_b, z)
    p_a, p_b = k_a / n_a, k_b / n_b
    d = p_a - p_b
    return (d, d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
            d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2))


def paired_newcombe_interval(both: int, only_a: int, only_b: int, neither: int,
                             z: float = 1.959963984540054) -> tuple[float, float, float]:
    """(difference, low, high): p_a - p_b of two proportions measured on the same units (two
    policies on the same init states), from the paired table: units where both succeed, only A,
    only B, neither. Newcombe's (1998) square-and-add interval for paired data: each arm's Wilson
    interval, combined with their correlation (phi, shrunk towards 0 by n/2 when positive) instead
    of as independent. When the arms succeed on the same units it is much narrower than
    ``newcombe_interval``; with uncorrelated outcomes it is the same."""
    n = both + only_a + only_b + neither
    k_a, k_b = both + only_a, both + only_b
    low_a, high_a = wilson_interval(k_a, n, z)  # also rejects impossible counts
    low_b, high_b = wilson_interval(k_b, n, z)
    if min(both, only_a, only_b, neither) < 0:
        raise ValueError(f"negative count in the paired table {(both, only_a, only_b, neither)}")
    p_a, p_b = k_a / n, k_b / n
    margins = k_a * (n - k_a) * k_b * (n - k_b)
    cross = both * neither - only_a * only_b
    shrunk = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = shrunk / math.sqrt(margins) if margins > 0 else 0.0
    d = p_a - p_b
    below = (p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2
    above = (high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2
    return d, max(-1.0, d - math.sqrt(below)), min(1.0, d + math.sqrt(above))


def paired_table(a: dict, b: dict) -> tuple[int, int, int, int]:
    """(both, only a, only b, neither) from two {unit: success} maps over the same units."""
    if set(a) != set(b):
        raise ValueError(f"the two arms were measured on different units ({len(set(a) ^ set(b))} not shared)")
    both = sum(1 for u in a if a[u] and b[u])
    only_a = sum(1 for u in a if a[u] and not b[u])
    only_b = sum(1 for u in a if b[u] and not a[u])
    return both, only_a, only_b, len(a) - both - only_a - only_b


def episode_outcomes(result: dict, protocol: str) -> dict:
    """{(suite, task, init state): success} of one protocol's episodes in an eval.json result."""
    return {(e["suite"], e["task_id"], e["init_state_id"]): bool(e["success"])
            for e in result["episodes"] if e["protocol"] == protocol}


def rate_summary(outcomes: dict) -> str:
    """Successes of a {unit: success} map over its size, with the Wilson interval in percent."""
    k = sum(outcomes.values())
    lo, hi = wilson_interval(k, len(outcomes))
    return f"{k}/{len(outcomes)} [{100 * lo:.1f}, {100 * hi:.1f}]"


def paired_summary(arm: dict, base: dict, base_name: str = "SFT") -> str:
    """One line for an arm against a baseline measured on the same units ({unit: success} maps):
    the arm's successes with their Wilson interval, and the paired difference (``paired_table``,
    ``paired_newcombe_interval``) in points with its table."""
    table = paired_table(arm, base)
    diff, low, high = paired_newcombe_interval(*table)
    return (f"{rate_summary(arm)}; minus {base_name}, paired {100 * diff:+.1f} "
            f"[{100 * low:+.1f}, {100 * high:+.1f}] (both {table[0]}, only this arm {table[1]}, "
            f"only {base_name} {table[2]}, neither {table[3]})")


def file_outcomes(path, protocol: str = "gt_termination") -> dict:
    """``episode_outcomes`` of an eval.json file."""
    return episode_outcomes(json.loads(Path(path).read_text()), protocol)


def outcomes_under(root, units, protocol: str = "gt_termination", exclude=()) -> list[tuple[Path, dict]]:
    """(path, ``episode_outcomes``) of every eval.json under ``root`` (sorted by path) that
    evaluated exactly ``units``, leaving out those under a folder in ``exclude``; files of the
    older format without per-episode records are skipped."""
    found = []
    skipped = [Path(folder).resolve() for folder in exclude]
    for path in sorted(Path(root).rglob("eval.json")):
        if any(path.resolve().is_relative_to(folder) for folder in skipped):
            continue
        result = json.loads(path.read_text())
        if not all(isinstance(e, dict) for e in result.get("episodes", [])):
            continue  # an older format, from before evaluations kept their episodes
        outcomes = episode_outcomes(result, protocol)
        if set(outcomes) == set(units):
            found.append((path, outcomes))
    return found


def flipped(arm: dict, base: dict) -> tuple[list[int], list[int]]:
    """(gained, lost): the sorted init state ids whose outcome the arm changed against the
    baseline measured on the same units ({unit: success} maps keyed (suite, task, init state))."""
    return (sorted(key[2] for key in base if arm[key] and not base[key]),
            sorted(key[2] for key in base if base[key] and not arm[key]))


def solved_elsewhere(evaluations: list[tuple[Path, dict]], base: dict) -> dict[tuple, list[Path]]:
    """{unit the baseline fails: the paths of the evaluations (``outcomes_under``'s list) that
    solved it}, for the units some evaluation solved."""
    found: dict[tuple, list[Path]] = {}
    for path, arm in evaluations:
        for key in base:
            if arm[key] and not base[key]:
                found.setdefault(key, []).append(path)
    return found


def arm_line(name: str, path, base: dict, root, protocol: str = "gt_termination") -> str:
    """A results table's line for the arm whose eval.json is ``path``: ``paired_summary``
    against ``base``, or that the file (shown relative to ``root``) is missing. Raises
    ValueError naming the file if it evaluated other units than ``base``."""
    path = Path(path)
    if not path.is_file():
        return f"{name}: {path.relative_to(root)} missing"
    try:
        return f"{name}: {paired_summary(file_outcomes(path, protocol), base)}"
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
