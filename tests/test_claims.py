"""overparam.claims: Wilson and bootstrap intervals, disjoint seeds, plateau rule, outcome logic."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from overparam import claims
from overparam.errors import ConfigError
from overparam.records import to_jsonable

Z = claims.Z95


# -- Wilson --------------------------------------------------------------------------------------
def _wilson_by_quadratic(k, n, z=Z):
    """Independent route: the roots p of (p̂ − p)² = z² p (1 − p) / n (score-test inversion)."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    r = np.sort(np.roots([a, b, c]).real)
    return float(r[0]), float(r[1])


@pytest.mark.parametrize("k,n", [(0, 1), (0, 30), (30, 30), (1, 30), (15, 30), (3, 10), (7, 40), (999, 1000)])
def test_wilson_matches_score_inversion_and_scipy(k, n):
    lo, hi = claims.wilson(k, n)
    qlo, qhi = _wilson_by_quadratic(k, n)
    assert lo == pytest.approx(max(qlo, 0.0), abs=1e-12) and hi == pytest.approx(min(qhi, 1.0), abs=1e-12)
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


@pytest.mark.parametrize("n", [1, 5, 30, 100])
def test_wilson_edges_closed_form(n):
    # 0 of n: [0, z²/(n + z²)];  n of n: [n/(n + z²), 1]
    assert claims.wilson(0, n) == (0.0, pytest.approx(Z * Z / (n + Z * Z), abs=1e-14))
    assert claims.wilson(n, n) == (pytest.approx(n / (n + Z * Z), abs=1e-14), 1.0)


def test_wilson_bad_input_and_empty():
    assert all(math.isnan(v) for v in claims.wilson(0, 0))
    for bad in ((5, 3), (-1, 3), (True, 3)):
        with pytest.raises(ConfigError):
            claims.wilson(*bad)
    with pytest.raises(ConfigError):
        claims.wilson(1, 3, level=1.5)


@given(st.integers(1, 500), st.data())
def test_wilson_contains_the_estimate_and_shrinks(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = claims.wilson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    lo4, hi4 = claims.wilson(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


# -- bootstrap ---------------------------------------------------------------------------------
def test_bootstrap_mean_matches_normal_interval():
    x = np.random.default_rng(3).normal(1.0, 2.0, 400)
    lo, hi = claims.bootstrap_mean(x, n_boot=4000, seed=1)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - Z * se, abs=0.08 * Z * se)
    assert hi == pytest.approx(x.mean() + Z * se, abs=0.08 * Z * se)


def test_bootstrap_is_deterministic_and_seeded():
    x = np.random.default_rng(0).exponential(size=50)
    a = claims.bootstrap_mean(x, n_boot=500, seed=7)
    assert a == claims.bootstrap_mean(x, n_boot=500, seed=7)
    assert a != claims.bootstrap_mean(x, n_boot=500, seed=8)
    assert all(math.isnan(v) for v in claims.bootstrap_mean([1.0], n_boot=100))
    with pytest.raises(ConfigError):
        claims.bootstrap_mean(x, n_boot=0)


def test_bootstrap_paired_difference_equals_bootstrap_of_differences():
    rng = np.random.default_rng(1)
    a = rng.normal(size=60)
    b = a + 0.3 + 0.1 * rng.normal(size=60)
    lo, hi = claims.bootstrap_paired_difference(b, a, n_boot=2000, seed=4)
    assert (lo, hi) == claims.bootstrap_mean(b - a, n_boot=2000, seed=4)
    se = np.std(b - a, ddof=1) / math.sqrt(60)
    assert lo == pytest.approx(0.3 + np.mean(b - a - 0.3) - Z * se, abs=0.15 * Z * se)
    assert lo > 0.2 and hi < 0.4
    with pytest.raises(ConfigError):
        claims.bootstrap_paired_difference([1.0, 2.0], [1.0])


def test_loglog_slope_and_cluster_bootstrap():
    k = np.array([8, 16, 32, 64, 128] * 6, float)
    g = np.repeat(np.arange(6), 5)
    y = 3.0 * k ** -0.5 * np.exp(np.random.default_rng(2).normal(0, 0.02, k.size))
    assert claims.loglog_slope(k, 3.0 * k ** -0.5) == pytest.approx(-0.5, abs=1e-12)
    assert claims.loglog_slope(k, y) == pytest.approx(np.polyfit(np.log(k), np.log(y), 1)[0], abs=1e-12)
    lo, hi = claims.bootstrap_slope(k, y, groups=g, n_boot=1000, seed=0)
    assert lo < claims.loglog_slope(k, y) < hi and -0.53 < lo and hi < -0.47
    # linear slope without logs; a single group has no interval
    lo, hi = claims.bootstrap_slope(np.arange(20.0), 2 * np.arange(20.0) + 1, log=False, n_boot=200)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    assert all(math.isnan(v) for v in claims.bootstrap_slope(k, y, groups=np.zeros(k.size), n_boot=50))


# -- seeds -------------------------------------------------------------------------------------
@given(st.integers(0, 50), st.integers(0, 80), st.integers(0, 30), st.integers(0, 1000))
def test_split_seeds_are_disjoint(n_tune, n_eval, gap, start):
    tune, ev = claims.split_seeds(n_tune, n_eval, eval_offset=n_tune + gap, start=start)
    assert len(tune) == n_tune and len(ev) == n_eval
    assert not set(tune) & set(ev)
    assert len(set(tune)) == n_tune and len(set(ev)) == n_eval


def test_overlapping_seeds_are_rejected():
    with pytest.raises(ConfigError, match="overlap"):
        claims.check_disjoint((0, 1, 2), (2, 3))
    with pytest.raises(ConfigError):
        claims.check_disjoint((0, 0), (3,))
    with pytest.raises(ConfigError):
        claims.split_seeds(5, 3, eval_offset=2)


# -- plateau -----------------------------------------------------------------------------------
def _plateau_brute(v, window, tol):
    for i in range(window, len(v)):
        w = v[i - window: i + 1]
        if all(math.isfinite(x) for x in w) and max(w) - min(w) <= tol * sum(abs(x) for x in w) / len(w):
            return i
    return None


def test_plateau_on_a_decaying_curve():
    v = 1 + np.exp(-np.arange(40) / 3.0)           # ptp over a window of 3 steps < 1 % once e^{-i/3} small
    i = claims.plateau_index(v, 3, 0.01)
    assert i == _plateau_brute(list(v), 3, 0.01)
    assert np.exp(-(i - 3) / 3) - np.exp(-i / 3) <= 0.01 * 1.0 + 1e-12
    assert claims.plateau_index(np.arange(10.0), 2, 0.01) is None
    with pytest.raises(ConfigError):
        claims.plateau_index(v, 0, 0.1)


@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=0, max_size=30), st.integers(1, 5),
       st.floats(0, 1))
def test_plateau_matches_brute_force(v, window, tol):
    assert claims.plateau_index(v, window, tol) == _plateau_brute(v, window, tol)


# -- outcomes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("interval,direction,threshold,outcome", [
    ((0.9, 1.0), "above", 0.8, "supported"),
    ((0.5, 0.7), "above", 0.8, "not supported"),
    ((0.7, 0.9), "above", 0.8, "inconclusive"),
    ((0.0, 0.1), "below", 0.2, "supported"),
    ((0.3, 0.5), "below", 0.2, "not supported"),
    ((0.1, 0.3), "below", 0.2, "inconclusive"),
    ((-0.55, -0.45), "within", (-0.6, -0.4), "supported"),
    ((-0.9, -0.7), "within", (-0.6, -0.4), "not supported"),
    ((-0.65, -0.5), "within", (-0.6, -0.4), "inconclusive"),
    ((float("nan"), float("nan")), "above", 0.5, "inconclusive"),
])
def test_outcome_logic(interval, direction, threshold, outcome):
    got, reason = claims.decide(interval, threshold, direction)
    assert got == outcome
    if outcome == "inconclusive" and math.isfinite(interval[0]):
        assert "straddles" in reason


def test_problem_makes_inconclusive_and_verdict_round_trip():
    v = claims.verdict("x", "nSGDA recovers all modes", "share of runs with all modes", 0.95, (0.9, 0.99),
                       "Wilson", 0.8, "above", {"n": 40, "seeds": list(range(40))}, threshold_source="sims/a.toml")
    assert v.outcome == "supported" and "n=40" in v.line() and "SUPPORTED" in v.line()
    blob = json.loads(json.dumps(to_jsonable(v.to_json())))
    assert blob["ci_low"] == 0.9 and blob["threshold"] == 0.8 and blob["outcome"] == "supported"
    w = claims.verdict("x", "c", "s", 0.95, (0.9, 0.99), "Wilson", 0.8, "above", {"n": 3},
                       problem="runs not converged")
    assert w.outcome == "inconclusive" and w.reason == "runs not converged"
    with pytest.raises(ConfigError):
        claims.decide((0, 1), 0.5, "sideways")
    with pytest.raises(ConfigError):
        claims.Verdict("x", "c", "s", 1.0, 0.5, "above", (0, 1), "m", {}, "maybe", "")
