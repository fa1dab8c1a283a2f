"""Dirac-GAN: closed forms, sympy vs autodiff Jacobians, regularizers, the study and its CLI.

Closed forms (docs: overparam/games/dirac.py, overparam/theory/dirac.py):
* unregularized simultaneous GD: θ'² + ψ'² = (1 + h² f'(θψ)²)(θ² + ψ²) exactly, per step;
* alternating GD's linearization at (0, 0) has determinant 1;
* R1 of strength γ: Jacobian eigenvalues (−γ ± √(γ² − 4 f'(0)²))/2, and GD converges for γ > 0.
"""
import csv
import json
import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, strategies as st

from overparam import optim, simulate
from overparam.dynamics import Scheme, init_state, make_step, run
from overparam.errors import ConfigError
from overparam.games.dirac import VARIANTS, DiracGAN, vector_field
from overparam.studies import dirac as study
from overparam.theory import dirac as theory

PARAMS = {"gamma": 0.3, "target": 1.0, "noise_std": 0.7, "clip": 1.0}


def fprime(t):
    """f'(t) = 1/(1 + e^t) for f(t) = −log(1 + e^{−t}), written out in numpy (independent of jax)."""
    return 1.0 / (1.0 + np.exp(t))


@lru_cache(maxsize=None)
def _runner(variant, scheme, h, steps, noise_samples=1000):
    """jit of a GD run of ``variant`` (float64); the numeric parameters and the start are arguments."""
    opt = optim.make("sgd", h)

    def go(params, start, key):
        game = DiracGAN(variant, noise_samples=noise_samples, **params)
        state = init_state(game, opt, opt, start[0], start[1], scheme, key)
        _, recs = run(make_step(game, opt, opt, scheme), state, key, steps, 1, lambda s: {"t": s.gen, "p": s.disc})
        return recs["t"], recs["p"]

    return jax.jit(go)


def trajectory(variant, scheme=Scheme(), h=0.2, steps=50, start=(1.0, 1.0), seed=0, **params):
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in {**PARAMS, **params}.items()}
        t, s = _runner(variant, scheme, h, steps)(p, jnp.asarray(start, jnp.float64), jax.random.PRNGKey(seed))
        assert t.dtype == jnp.float64
        return np.asarray(t), np.asarray(s)


def step_jacobian(variant, scheme, h=0.2, **params):
    """∂(θ', ψ')/∂(θ, ψ) of one training step at (0, 0), by autodiff through make_step."""
    with jax.enable_x64(True):
        game = DiracGAN(variant, **{**PARAMS, **params})
        opt = optim.make("sgd", h)
        step = make_step(game, opt, opt, scheme)

        def one(z):
            s = step(init_state(game, opt, opt, z[0], z[1], scheme), jax.random.PRNGKey(0))
            return jnp.stack([s.gen, s.disc])

        return np.asarray(jax.jacfwd(one)(jnp.zeros(2, jnp.float64)))


def field_jacobian(variant, at=(0.0, 0.0), **params):
    """∂v/∂(θ, ψ) by autodiff of the game's field (expected field for instance noise)."""
    with jax.enable_x64(True):
        game = DiracGAN(variant, noise_samples=40, quadrature=True, **{**PARAMS, **params})
        return np.asarray(jax.jacfwd(lambda z: jnp.stack(vector_field(game, z[0], z[1])))(
            jnp.asarray(at, jnp.float64)))


def _sorted(e):
    e = np.asarray(e, complex)
    return e[np.lexsort((np.round(e.imag, 9), np.round(e.real, 9)))]


# -- closed forms ----------------------------------------------------------------------------------
starts = st.tuples(st.floats(-3, 3), st.floats(-3, 3)).filter(lambda z: math.hypot(*z) > 1e-2)


@given(start=starts, h=st.sampled_from([0.05, 0.2, 0.7]))
def test_simultaneous_gd_grows_radius_by_exact_factor(start, h):
    t, p = trajectory("gan", Scheme(), h=h, steps=30, start=start)
    r2 = t**2 + p**2
    expected = 1.0 + h**2 * fprime(t[:-1] * p[:-1]) ** 2
    np.testing.assert_allclose(r2[1:] / r2[:-1], expected, rtol=1e-12)


@given(start=starts)
def test_unclipped_wgan_grows_radius_by_1_plus_h2(start):
    """f(t) = t has f' = 1: the factor is 1 + h² (clip far away, so the projection never acts)."""
    t, p = trajectory("wgan", Scheme(), h=0.2, steps=30, start=start, clip=1e9)
    r2 = t**2 + p**2
    np.testing.assert_allclose(r2[1:] / r2[:-1], 1.04, rtol=1e-12)


def test_growth_factor_fails_for_the_non_saturating_generator():
    """Guard: ns_gan's generator uses f'(−θψ), so the exact factor does not hold (test above can fail)."""
    t, p = trajectory("ns_gan", Scheme(), h=0.2, steps=10)
    r2 = t**2 + p**2
    expected = 1.0 + 0.04 * fprime(t[:-1] * p[:-1]) ** 2
    assert np.max(np.abs(r2[1:] / r2[:-1] / expected - 1)) > 1e-3


@pytest.mark.parametrize("variant", ["gan", "ns_gan", "wgan"])
@pytest.mark.parametrize("order", ["g_first", "d_first"])
@pytest.mark.parametrize("n_disc", [1, 5])
def test_alternating_linearization_has_determinant_one(variant, order, n_disc):
    M = step_jacobian(variant, Scheme("alternating", order, n_disc))
    assert np.linalg.det(M) == pytest.approx(1.0, abs=1e-12)
    # and it is the product of the two shears built from the sympy Jacobian
    J = np.array(theory.jacobian(variant).evalf(), dtype=float)
    np.testing.assert_allclose(M, theory.linear_map(J, 0.2, 0.2, order, n_disc), atol=1e-12)


@pytest.mark.parametrize("gamma", [0.3, 1.0])
def test_alternating_linearization_with_r1_contracts(gamma):
    """Guard: with R1 the determinant is (1 − hγ)^n_disc < 1, so det = 1 above is a real check."""
    for n in (1, 5):
        M = step_jacobian("r1", Scheme("alternating", "g_first", n), gamma=gamma)
        assert np.linalg.det(M) == pytest.approx((1 - 0.2 * gamma) ** n, rel=1e-12)


def test_simultaneous_linearization_is_identity_plus_hJ():
    for variant in ("gan", "r1", "consensus"):
        M = step_jacobian(variant, Scheme())
        J = np.array(theory.jacobian(variant, **PARAMS).evalf(), dtype=float)
        np.testing.assert_allclose(M, np.eye(2) + 0.2 * J, atol=1e-12)


@given(gamma=st.floats(0.0, 3.0))
@pytest.mark.parametrize("variant", ["r1", "ns_r1"])
def test_r1_eigenvalues_closed_form(variant, gamma):
    """Autodiff Jacobian eigenvalues = (−γ ± √(γ² − 4 f'(0)²))/2 with f'(0) = 1/2."""
    J = field_jacobian(variant, gamma=gamma)
    root = np.sqrt(complex(gamma**2 - 4 * 0.25))
    expected = _sorted([(-gamma + root) / 2, (-gamma - root) / 2])
    np.testing.assert_allclose(_sorted(np.linalg.eigvals(J)), expected, atol=1e-7)  # sqrt near γ = 1


def test_r1_eigenvalues_symbolic():
    """Sympy, with γ a symbol: the Jacobian's eigenvalues are exactly eq. D-r1-eig."""
    for variant in ("r1", "ns_r1"):
        got = theory.eigenvalues(variant)
        want = theory.r1_eigenvalues(theory.GAMMA, sp.Rational(1, 2))
        assert len(got) == 2
        for g in got:
            assert any(sp.simplify(g - w) == 0 for w in want)
    assert theory.fprime0("gan") == 0.5 and theory.fprime0("wgan") == 1.0


@pytest.mark.parametrize("gamma", [0.1, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("scheme", [Scheme(), Scheme("alternating", "g_first", 1), Scheme("alternating", "g_first", 5)])
def test_r1_converges_at_the_predicted_rate(gamma, scheme):
    """Any γ > 0 (here with h = 0.2 < γ/f'(0)², the simultaneous map's stability bound) converges."""
    J = np.array(theory.jacobian("r1", gamma=gamma).evalf(), dtype=float)
    kind = "simultaneous" if scheme.kind == "simultaneous" else scheme.order
    rho = theory.spectral_radius(J, 0.2, 0.2, kind, scheme.n_disc)
    assert rho < 1
    # e^{-60} of linear decay (r stays far above the float floor): long enough that γ = 1's
    # Jordan block (decay ∝ t ρ^t) biases the fitted factor by less than the tolerance
    steps = 100 * math.ceil(-60 / math.log(rho) / 100)
    t, p = trajectory("r1", scheme, h=0.2, steps=steps, gamma=gamma)
    r = np.hypot(t, p)
    assert r[-1] < 1e-6 * r[0]
    # measured per-step factor: least-squares slope of log r over the second half of the run
    # (a fit, because r_t oscillates around ρ^t when the map's eigenvalues are complex)
    tail = np.arange(len(r) // 2, len(r))
    measured = math.exp(np.polyfit(tail, np.log(r[tail]), 1)[0])
    assert measured == pytest.approx(rho, abs=3e-3)


def test_r1_rate_prediction_can_fail():
    """Guard: without the penalty the same measurement gives ≥ 1, not the R1 prediction."""
    t, p = trajectory("gan", Scheme(), steps=300)
    r = np.hypot(t, p)
    assert (r[-1] / r[150]) ** (1 / 150) > 1.0


# -- sympy vs autodiff for every variant -------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_sympy_jacobian_matches_autodiff(variant):
    J_sym = np.array(theory.jacobian(variant, **PARAMS).evalf(), dtype=float)
    J_num = field_jacobian(variant)  # for wgan_gp: jax's d|ψ|/dψ at 0 is +1, the ψ → 0⁺ branch
    np.testing.assert_allclose(J_num, J_sym, atol=1e-12)
    eig_sym = _sorted([complex(e) for e in theory.eigenvalues(variant, **PARAMS)])
    np.testing.assert_allclose(_sorted(np.linalg.eigvals(J_num)), eig_sym, atol=1e-12)


def test_wgan_gp_one_sided_jacobians_and_nonzero_field():
    J_minus = np.array(theory.jacobian("wgan_gp", side=-1, **PARAMS).evalf(), dtype=float)
    np.testing.assert_allclose(field_jacobian("wgan_gp", at=(0.0, -1e-9)), J_minus, atol=1e-12)
    v = theory.field_at_equilibrium("wgan_gp", side=1).subs({theory.GAMMA: 0.7, theory.TARGET: 1.0})
    assert float(v[1]) == pytest.approx(0.7)
    with jax.enable_x64(True):
        vt, vp = vector_field(DiracGAN("wgan_gp", gamma=0.7, target=1.0), jnp.float64(0.0), jnp.float64(1e-12))
        assert float(vt) == pytest.approx(0.0, abs=1e-11) and float(vp) == pytest.approx(0.7, rel=1e-9)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "wgan_gp"])
def test_field_vanishes_at_equilibrium(variant):
    with jax.enable_x64(True):
        game = DiracGAN(variant, noise_samples=40, quadrature=True, **PARAMS)
        v = vector_field(game, jnp.float64(0.0), jnp.float64(0.0))
        assert max(abs(float(x)) for x in v) < 1e-15
    assert all(x == 0 for x in theory.field_at_equilibrium(variant))


# -- regularizers from autodiff vs hand-derived fields ---------------------------------------------
points = st.tuples(st.floats(-3, 3), st.floats(-3, 3))


def _sig(t):
    return 1 / (1 + np.exp(-t))


@given(z=points, gamma=st.floats(0, 2))
def test_regularized_fields_match_hand_derivations(z, gamma):
    th, ps = z
    fp, fpp = fprime(th * ps), -_sig(th * ps) * _sig(-th * ps)  # f'(θψ), f''(θψ)
    hand = {
        "gan": (-ps * fp, th * fp),
        "ns_gan": (-ps * fprime(-th * ps), th * fp),
        "r1": (-ps * fp, th * fp - gamma * ps),
        "ns_r1": (-ps * fprime(-th * ps), th * fp - gamma * ps),
        "wgan_gp": (-ps, th - gamma * (abs(ps) - 1.0) * np.sign(ps)),
        # consensus: v − γ ∇ ½ (θ² + ψ²) f'(θψ)²
        "consensus": (-ps * fp - gamma * (th * fp**2 + (th**2 + ps**2) * fp * fpp * ps),
                      th * fp - gamma * (ps * fp**2 + (th**2 + ps**2) * fp * fpp * th)),
    }
    with jax.enable_x64(True):
        for variant, (v1, v2) in hand.items():
            if variant == "wgan_gp" and abs(ps) < 1e-300:
                continue  # |ψ| has no derivative at 0 (and XLA flushes subnormal ψ to 0)
            got = _field_fn(variant)(jnp.float64(gamma), jnp.float64(th), jnp.float64(ps))
            np.testing.assert_allclose([float(g) for g in got], [v1, v2], rtol=1e-10, atol=1e-12, err_msg=variant)


@lru_cache(maxsize=None)
def _field_fn(variant):
    """jit of v(θ, ψ) with γ as an argument (one compile per variant)."""
    return jax.jit(lambda gamma, th, ps: vector_field(DiracGAN(variant, gamma=gamma, target=1.0), th, ps))


def test_instance_noise_samples_estimate_the_expected_field():
    """Monte Carlo field (seeded samples) vs Gauss–Hermite quadrature: within 5 standard errors."""
    with jax.enable_x64(True):
        th, ps = jnp.float64(0.8), jnp.float64(-1.3)
        exact = np.array(vector_field(DiracGAN("instance_noise", noise_std=0.7), th, ps), float)
        n = 20000
        game = DiracGAN("instance_noise", noise_std=0.7, noise_samples=n)
        est = np.array(vector_field(game, th, ps, game.sample_batch(jax.random.PRNGKey(3))), float)
        # per-sample standard deviation bounded by |ψ|·max f' + |θ + σε| terms: use a loose bound of 3
        assert np.all(np.abs(est - exact) < 5 * 3 / np.sqrt(n))
        assert np.any(np.abs(est - exact) > 0)  # it is a sample, not the quadrature


def test_instance_noise_is_seeded():
    a = trajectory("instance_noise", Scheme(), steps=20, seed=1)
    b = trajectory("instance_noise", Scheme(), steps=20, seed=1)
    c = trajectory("instance_noise", Scheme(), steps=20, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("scheme", [Scheme(), Scheme("alternating", "g_first", 5), Scheme("extragradient")])
def test_wgan_clipping_keeps_psi_in_the_box(scheme):
    t, p = trajectory("wgan", scheme, steps=100, start=(2.0, 0.5), clip=1.0)
    assert np.all(np.abs(p) <= 1.0) and np.isclose(np.abs(p).max(), 1.0)  # the clip is active
    _, q = trajectory("wgan", scheme, steps=100, start=(2.0, 0.5), clip=1e9)
    assert np.abs(q).max() > 1.5  # guard: without the clip ψ leaves the box


# -- status classification --------------------------------------------------------------------------
def test_classify_hand_built_trajectories():
    s = np.arange(101)
    c = dict(window=0.1, converged_tol=0.1, diverged_factor=1.5)
    assert study.classify(np.exp(-0.1 * s), 1.0, **c) == "converged"
    assert study.classify(1.0 + 0.1 * np.sin(s), 1.0, **c) == "circling"
    assert study.classify(1.02 ** s, 1.0, **c) == "diverging"
    assert study.classify(np.r_[np.ones(50), np.nan * np.ones(51)], 1.0, **c) == "diverging"
    # the window is the last 10 % of the 100 steps: records 91..100
    assert study.classify(np.r_[np.ones(91), 0.05 * np.ones(10)], 1.0, **c) == "converged"
    assert study.classify(np.r_[np.ones(92), 0.05 * np.ones(9)], 1.0, **c) == "circling"
    assert study.classify(np.r_[np.ones(91), [0.05] * 9, 0.2], 1.0, **c) == "circling"  # max in window
    assert study.classify(np.r_[np.ones(91), 1.6 * np.ones(10)], 1.0, **c) == "diverging"  # mean in window


# -- the study ----------------------------------------------------------------------------------------
SMALL = dict(variants=("gan", "wgan", "r1"), r1_gammas=(0.3, 1.0), steps=500)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("dirac")
    cfg = study.Config(**SMALL, out_dir=str(out))
    res = study.run(cfg, progress=False)
    study.save(res)
    return cfg, res


def test_study_reproduces_the_classic_picture(small):
    _, res = small
    status = {(r["variant"], r["scheme"]): r["status"] for r in res.rows}
    assert status[("gan", "simultaneous")] == "diverging"
    assert status[("gan", "alternating_g_first_1d")] == "circling"
    assert status[("wgan", "alternating_g_first_1d")] == "circling"
    for g in ("r1_0.3", "r1_1"):
        for s in ("simultaneous", "alternating_g_first_1d", "alternating_g_first_5d"):
            assert status[(g, s)] == "converged"
    rho = {(r["variant"], r["scheme"]): r["rho_linear"] for r in res.rows}
    assert rho[("gan", "simultaneous")] == pytest.approx(math.sqrt(1 + 0.04 * 0.25), rel=1e-12)
    assert rho[("gan", "alternating_g_first_1d")] == pytest.approx(1.0, rel=1e-12)


def test_study_final_distance_matches_trajectory_and_direct_run(small):
    _, res = small
    last = {(r["variant"], r["scheme"]): (r["theta"], r["psi"]) for r in res.trajectories if r["step"] == 500}
    for row in res.rows:
        th, ps = last[(row["variant"], row["scheme"])]
        assert row["final_distance"] == pytest.approx(math.hypot(th, ps), rel=1e-12)
    t, p = trajectory("gan", Scheme(), h=0.2, steps=500)
    gan = next(r for r in res.rows if r["variant"] == "gan" and r["scheme"] == "simultaneous")
    assert gan["final_distance"] == pytest.approx(math.hypot(t[-1], p[-1]), rel=1e-12)


def test_study_outputs(small):
    cfg, res = small
    out = study.Path(cfg.out_dir)
    with open(out / "trajectories.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["variant", "scheme", "step", "theta", "psi"]
    assert len(rows) == 4 * 3 * 501  # gan, wgan, r1_0.3, r1_1 × 3 schemes × (steps + 1)
    with open(out / "summary.csv") as fh:
        summ = list(csv.DictReader(fh))
    assert {"variant", "scheme", "final_distance", "status", "rho_linear"} <= set(summ[0]) and len(summ) == 12
    man = json.load(open(out / "manifest.json"))
    assert man["study"] == "dirac" and man["config"]["steps"] == 500
    for ext in ("png", "pdf"):
        assert (out / f"dirac.{ext}").stat().st_size > 1000
    text = study.summary(res)
    assert "r1_0.3" in text and "converged" in text and "eigenvalues" in text


def test_cli_small_run(tmp_path, capsys):
    rc = simulate.main(["dirac", "--no-progress", "--steps", "40", "--variants", "ns_gan,wgan_gp",
                        "--n-disc", "2", "--out-dir", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "wgan_gp" in text and "alternating_g_first_2d" in text
    with open(tmp_path / "trajectories.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 41
    assert (tmp_path / "dirac.pdf").exists() and (tmp_path / "theory.csv").exists()


@pytest.mark.parametrize("opts, match", [
    ({"variants": ("gan", "lsgan")}, "variant"),
    ({"variants": ()}, "empty"),
    ({"steps": 0}, "steps"),
    ({"lr_gen": -0.2}, "lr_gen"),
    ({"lr_disc": float("nan")}, "lr_disc"),
    ({"r1_gammas": (-0.3,)}, "R1"),
    ({"r1_gammas": ()}, "r1_gammas"),
    ({"n_disc": (0,)}, "n_disc"),
    ({"simultaneous": False, "n_disc": ()}, "no scheme"),
    ({"theta0": 0.0, "psi0": 0.0}, "equilibrium"),
    ({"noise_std": -0.7}, "noise_std"),
    ({"window": 2.0}, "window"),
    ({"diverged_factor": 0.5}, "diverged_factor"),
    ({"converged_tol": 1.5}, "converged_tol"),
    ({"optimizer": "sgdd"}, "optimizer"),
    ({"order": "both"}, "order"),
])
def test_bad_config_raises_config_error(opts, match):
    with pytest.raises(ConfigError, match=match):
        study.Config(**opts)


def test_bad_game_and_theory_inputs():
    with pytest.raises(ConfigError, match="variant"):
        DiracGAN("lsgan")
    with pytest.raises(ConfigError, match="gamma"):
        DiracGAN("r1", gamma=-1.0)
    with pytest.raises(ConfigError, match="noise_samples"):
        DiracGAN("instance_noise", noise_samples=0)
    with pytest.raises(ConfigError, match="variant"):
        theory.jacobian("lsgan")
    with pytest.raises(ConfigError, match="side"):
        theory.jacobian("wgan_gp", side=0)
    with pytest.raises(ConfigError, match="unknown"):
        theory.jacobian("r1", strength=1.0)


def test_cli_bad_option_gives_clear_error(tmp_path, capsys):
    rc = simulate.main(["dirac", "--no-progress", "--steps", "0", "--out-dir", str(tmp_path)])
    assert rc == 2
    assert "steps" in capsys.readouterr().err
