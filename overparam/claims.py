"""Verdicts as data: a claim, the statistic that tests it, a pinned threshold, an interval, an outcome.

A :class:`Verdict` states a published claim in words, names the statistic computed from a
study's result rows, its value, the threshold (read from the pinned TOML in ``sims/``,
committed before the runs), the runs it used, a 95 % interval and one of three outcomes:

* ``supported``      the whole interval lies on the claim's side of the threshold;
* ``not supported``  the whole interval lies on the other side;
* ``inconclusive``   the interval straddles the threshold, or the runs cannot decide
                     (not converged, too few runs, no interval); the reason is stated.

Intervals (all 95 % by default):

* shares k/n: the Wilson score interval (eq. W)
      p̂ = k/n,  c = (p̂ + z²/2n) / (1 + z²/n),
      h = z/(1 + z²/n) · √(p̂(1 − p̂)/n + z²/4n²),   interval [c − h, c + h],
  the set of p with (p̂ − p)² ≤ z² p(1 − p)/n; z = Φ⁻¹(0.975);
* means, paired differences and slopes: the percentile bootstrap (B resamples of the
  units, seeded ``numpy.random.default_rng(seed)``, so the same data give the same
  interval): [q_{2.5 %}, q_{97.5 %}] of the statistic over the resamples. Slopes can be
  resampled by group (e.g. all widths of one seed together: a cluster bootstrap).

Also here: disjoint tuning / evaluation seeds (:func:`split_seeds`, :func:`check_disjoint`)
and a plateau rule for studies that stop at a plateau (:func:`plateau_index`).
This module sits below the studies and imports only numpy and :mod:`overparam.errors`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from overparam.errors import ConfigError, require

__all__ = [
    "DIRECTIONS",
    "OUTCOMES",
    "Z95",
    "Verdict",
    "bootstrap",
    "bootstrap_mean",
    "bootstrap_paired_difference",
    "bootstrap_slope",
    "check_disjoint",
    "decide",
    "loglog_slope",
    "plateau_index",
    "split_seeds",
    "verdict",
    "wilson",
]

#: Φ⁻¹(0.975), the two-sided 95 % normal quantile.
Z95 = 1.959963984540054
OUTCOMES = ("supported", "not supported", "inconclusive")
#: "above": the claim is statistic > threshold; "below": statistic < threshold;
#: "within": threshold is an interval (lo, hi) the statistic must lie in.
DIRECTIONS = ("above", "below", "within")


# -- intervals ---------------------------------------------------------------------------------
def _z(level: float) -> float:
    require(0.0 < level < 1.0, f"confidence level must be in (0, 1), got {level}")
    if level == 0.95:
        return Z95
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (eq. W) of a share ``successes / n``; (nan, nan) when n = 0."""
    if isinstance(successes, bool) or isinstance(n, bool):
        raise ConfigError("wilson takes integer counts, not booleans")
    k, n = int(successes), int(n)
    require(n >= 0 and 0 <= k <= max(n, 0), f"wilson needs 0 <= successes <= n, got {k} of {n}")
    if n == 0:
        return (float("nan"), float("nan"))
    z = _z(level)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = centre - half, centre + half
    # exact ends: k = 0 gives lo = 0, k = n gives hi = 1 (the formula does too, up to rounding)
    return (0.0 if k == 0 else max(0.0, lo), 1.0 if k == n else min(1.0, hi))


def bootstrap(data: Sequence[Any] | np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int = 10_000,
              seed: int = 0, level: float = 0.95, groups: Sequence[Any] | np.ndarray | None = None
              ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(data[idx])`` over resampled units.

    ``data`` is indexed along its first axis. Without ``groups`` the units are the rows;
    with ``groups`` (one label per row) whole groups are resampled with replacement (a
    cluster bootstrap). Resamples whose statistic is not finite are dropped; (nan, nan) if
    fewer than half remain, or with fewer than 2 units.
    """
    arr = np.asarray(data)
    require(arr.ndim >= 1, "bootstrap needs data with at least one axis")
    if isinstance(n_boot, bool) or int(n_boot) < 1:
        raise ConfigError(f"n_boot must be a positive integer, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    if groups is None:
        units = [np.array([i]) for i in range(len(arr))]
    else:
        labels = np.asarray(groups)
        require(len(labels) == len(arr), f"groups has {len(labels)} labels for {len(arr)} rows")
        units = [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]
    if len(units) < 2:
        return (float("nan"), float("nan"))
    draws = rng.integers(0, len(units), size=(int(n_boot), len(units)))
    if groups is None:
        stats = np.array([statistic(arr[d]) for d in draws], float)
    else:
        stats = np.array([statistic(arr[np.concatenate([units[i] for i in d])]) for d in draws], float)
    stats = stats[np.isfinite(stats)]
    if stats.size < n_boot / 2:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return (float(lo), float(hi))


def bootstrap_mean(values: Sequence[float] | np.ndarray, n_boot: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    return bootstrap(np.asarray(values, float), np.mean, n_boot, seed, level)


def bootstrap_paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                                level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a − b) over pairs (a_i, b_i) resampled together."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    require(a.shape == b.shape and a.ndim == 1, f"paired samples need equal 1-D shapes, got {a.shape}, {b.shape}")
    return bootstrap(a - b, np.mean, n_boot, seed, level)


def loglog_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope of log y against log x (NaN with fewer than 2 distinct x)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if lx.size < 2 or np.ptp(lx) == 0:
        return float("nan")
    lx = lx - lx.mean()
    return float(np.dot(lx, ly - ly.mean()) / np.dot(lx, lx))


def bootstrap_slope(x: Sequence[float], y: Sequence[float], groups: Sequence[Any] | None = None,
                    log: bool = True, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
                    ) -> tuple[float, float]:
    """Percentile bootstrap interval of the least-squares slope of y on x (log-log with ``log``).

    With ``groups`` whole groups of points are resampled (e.g. all widths of one seed).
    """
    xy = np.stack([np.asarray(x, float), np.asarray(y, float)], axis=1)

    def slope(s: np.ndarray) -> float:
        if log:
            return loglog_slope(s[:, 0], s[:, 1])
        lx = s[:, 0] - s[:, 0].mean()
        den = float(np.dot(lx, lx))
        return float(np.dot(lx, s[:, 1] - s[:, 1].mean()) / den) if den > 0 else float("nan")

    return bootstrap(xy, slope, n_boot, seed, level, groups)


# -- seeds -------------------------------------------------------------------------------------
def split_seeds(n_tuning: int, n_eval: int, eval_offset: int | None = None, start: int = 0
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Disjoint (tuning, evaluation) seed tuples: start … start+n_tuning−1, then the evaluation
    seeds from ``start + eval_offset`` (default: right after the tuning seeds)."""
    for name, v in (("n_tuning", n_tuning), ("n_eval", n_eval)):
        if isinstance(v, bool) or int(v) < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
    off = int(n_tuning) if eval_offset is None else int(eval_offset)
    require(off >= int(n_tuning), f"eval_offset ({off}) must be >= n_tuning ({n_tuning}) so the seeds are disjoint")
    tuning = tuple(range(start, start + int(n_tuning)))
    evaluation = tuple(range(start + off, start + off + int(n_eval)))
    check_disjoint(tuning, evaluation)
    return tuning, evaluation


def check_disjoint(tuning: Sequence[int], evaluation: Sequence[int]) -> None:
    """Raise :class:`ConfigError` if a seed is used for both tuning and evaluation (or twice)."""
    both = sorted(set(tuning) & set(evaluation))
    require(not both, f"tuning and evaluation seeds overlap at {both[:5]}; give disjoint seed ranges")
    require(len(set(tuning)) == len(tuning) and len(set(evaluation)) == len(evaluation),
            "a seed is listed twice; give each seed once")


# -- plateau rule ------------------------------------------------------------------------------
def plateau_index(values: Sequence[float], window: int, rel_tol: float) -> int | None:
    """First index i ≥ window at which the last ``window + 1`` values vary by at most
    ``rel_tol`` of their mean magnitude: max − min ≤ rel_tol · mean|v| over v[i−window … i].
    ``None`` if the series never plateaus (or a value in the window is not finite)."""
    if isinstance(window, bool) or int(window) < 1:
        raise ConfigError(f"plateau window must be a positive integer, got {window!r}")
    if not (isinstance(rel_tol, (int, float)) and math.isfinite(rel_tol) and rel_tol >= 0):
        raise ConfigError(f"plateau rel_tol must be a finite number >= 0, got {rel_tol!r}")
    v = np.asarray(values, float)
    for i in range(int(window), len(v)):
        w = v[i - int(window): i + 1]
        if np.all(np.isfinite(w)) and np.ptp(w) <= rel_tol * np.mean(np.abs(w)):
            return i
    return None


# -- verdicts ----------------------------------------------------------------------------------
def decide(interval: tuple[float, float], threshold: float | tuple[float, float], direction: str,
           problem: str | None = None) -> tuple[str, str]:
    """(outcome, reason) from an interval and a pinned threshold (see the module docstring).

    ``problem`` (e.g. "runs not converged") makes the verdict inconclusive whatever the interval.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)}")
    if problem:
        return "inconclusive", problem
    lo, hi = (float(interval[0]), float(interval[1]))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive", "no finite interval (too few usable runs)"
    iv = f"interval [{lo:.4g}, {hi:.4g}]"
    if direction == "within":
        a, b = (float(threshold[0]), float(threshold[1]))  # type: ignore[index]
        if a <= lo and hi <= b:
            return "supported", f"{iv} inside [{a:.4g}, {b:.4g}]"
        if hi < a or lo > b:
            return "not supported", f"{iv} outside [{a:.4g}, {b:.4g}]"
        return "inconclusive", f"{iv} straddles an end of [{a:.4g}, {b:.4g}]"
    t = float(threshold)  # type: ignore[arg-type]
    if direction == "above":
        if lo > t:
            return "supported", f"{iv} above {t:.4g}"
        if hi <= t:
            return "not supported", f"{iv} not above {t:.4g}"
    else:
        if hi < t:
            return "supported", f"{iv} below {t:.4g}"
        if lo >= t:
            return "not supported", f"{iv} not below {t:.4g}"
    return "inconclusive", f"{iv} straddles the threshold {t:.4g}"


@dataclass(frozen=True)
class Verdict:
    """One claim tested: words, statistic, value, pinned threshold, runs, interval, outcome."""

    name: str
    claim: str
    statistic: str
    value: float
    threshold: float | tuple[float, float]
    direction: str
    interval: tuple[float, float]
    interval_method: str
    runs: dict[str, Any]
    outcome: str
    reason: str
    threshold_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ConfigError(f"unknown outcome {self.outcome!r}; one of {OUTCOMES}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"unknown direction {self.direction!r}; one of {DIRECTIONS}")

    def to_json(self) -> dict[str, Any]:
        """A plain dict (JSON-able with :func:`overparam.records.to_jsonable`)."""
        thr = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {"name": self.name, "claim": self.claim, "statistic": self.statistic, "value": self.value,
                "threshold": thr, "direction": self.direction, "threshold_source": self.threshold_source,
                "ci_low": self.interval[0], "ci_high": self.interval[1], "interval_method": self.interval_method,
                "runs": self.runs, "outcome": self.outcome, "reason": self.reason, **self.extra}

    def line(self) -> str:
        """One printable line: claim, statistic = value [interval] vs threshold -> OUTCOME (reason)."""
        if self.direction == "within":
            a, b = self.threshold  # type: ignore[misc]
            thr = f"within [{a:.4g}, {b:.4g}]"
        else:
            thr = f"{'>' if self.direction == 'above' else '<'} {float(self.threshold):.4g}"  # type: ignore[arg-type]
        n = self.runs.get("n")
        used = f", n={n}" if n is not None else ""
        return (f"[{self.outcome.upper()}] {self.claim}: {self.statistic} = {self.value:.4g} "
                f"(95% {self.interval_method} [{self.interval[0]:.4g}, {self.interval[1]:.4g}]{used}); "
                f"needs {thr}; {self.reason}")


def verdict(name: str, claim: str, statistic: str, value: float, interval: tuple[float, float],
            interval_method: str, threshold: float | tuple[float, float], direction: str,
            runs: dict[str, Any], problem: str | None = None, threshold_source: str = "",
            **extra: Any) -> Verdict:
    """Build a :class:`Verdict`, its outcome decided by :func:`decide`."""
    outcome, reason = decide(interval, threshold, direction, problem)
    thr = tuple(float(t) for t in threshold) if isinstance(threshold, (tuple, list)) else float(threshold)
    return Verdict(name, claim, statistic, float(value), thr, direction,
                   (float(interval[0]), float(interval[1])), interval_method, dict(runs), outcome, reason,
                   threshold_source, dict(extra))
