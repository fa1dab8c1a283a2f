"""Convergence measurements on recorded curves."""
from __future__ import annotations

import numpy as np


def tail_rate(steps: np.ndarray, values: np.ndarray, floor: float = 1e-5, tail: float = 0.5) -> float:
    """Measured per-step linear rate ρ from the tail slope of log(values).

    Uses the records with ``values > floor`` (the float precision floor, relative units) up to
    the last such record t_end, keeps those at steps ≥ (1 − tail)·t_end, fits
    log v = a + t log ρ by least squares and returns ρ = exp(slope). NaN when fewer than 3
    usable records (e.g. a diverged run) — never a made-up number.
    """
    steps = np.asarray(steps, float)
    values = np.asarray(values, float)
    ok = np.isfinite(values) & (values > floor)
    if ok.sum() < 3 or not np.all(np.isfinite(values)):
        return float("nan")
    t_end = steps[ok].max()
    sel = ok & (steps >= (1.0 - tail) * t_end)
    if sel.sum() < 3:
        idx = np.flatnonzero(ok)[-3:]
        sel = np.zeros_like(ok)
        sel[idx] = True
    slope = np.polyfit(steps[sel], np.log(values[sel]), 1)[0]
    return float(np.exp(slope))
