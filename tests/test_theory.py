"""Spectral predictions: frozen-time block, sympy eigenvalues, rate bound, simulation check."""
import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

from overparam import optim
from overparam.dynamics import Scheme, init_state, make_step, run
from overparam.games import MeanMatching, MeanMatchingSpec, teacher_data
from overparam.theory import (block_radius, frozen_block_eigenvalues_sympy, gda_block, jjt, linear_map_2x2,
                              predicted_rates)


@given(mu=st.floats(1e-4, 2.0), x=st.floats(1e-6, 0.25), frac=st.floats(0.0, 1.0))
def test_frozen_block_radius_at_most_one_minus_mu_s(mu, x, frac):
    """Whenever 4μs ≤ η ≤ 1 the simultaneous block's spectral radius is ≤ 1 − μs (x = μs)."""
    s = x / mu
    eta = 4 * x + frac * (1.0 - 4 * x)
    rho = block_radius(mu, eta, [s])
    assert rho <= 1 - mu * s + 1e-12


@given(mu=st.floats(1e-3, 2.0), eta=st.floats(1e-3, 1.5), s=st.floats(0.0, 5.0))
def test_sympy_eigenvalues_match_numeric(mu, eta, s):
    eigs_fn, _ = frozen_block_eigenvalues_sympy()
    sym = np.sort_complex(eigs_fn(mu, eta, s))
    num = np.sort_complex(np.linalg.eigvals(linear_map_2x2(mu, eta, s)).astype(complex))
    np.testing.assert_allclose(sym, num, atol=1e-9)


def test_full_block_spectrum_is_union_of_2x2_blocks():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 7))
    JJt = A @ A.T / 7
    mu, eta = 0.1, 0.8
    full = np.max(np.abs(np.linalg.eigvals(gda_block(mu, eta, JJt))))
    assert full == pytest.approx(block_radius(mu, eta, np.linalg.eigvalsh(JJt)), rel=1e-10)


def test_alternating_maps_compose_player_maps():
    mu, eta, s = 0.2, 0.5, 0.7
    G = np.array([[1, -mu * s], [0, 1]])
    D = np.array([[1, 0], [eta, 1 - eta]])
    np.testing.assert_allclose(linear_map_2x2(mu, eta, s, "d_first", 2), G @ D @ D)
    np.testing.assert_allclose(linear_map_2x2(mu, eta, s, "g_first", 1), D @ G)


def test_predicted_rate_matches_linearized_simulation():
    """A very wide model stays in the linear regime: the measured per-step contraction of the
    residual approaches the frozen-block radius computed from J0 J0ᵀ."""
    with jax.enable_x64(True):
        spec = MeanMatchingSpec(m=4, d=4, k=2048, n=32)
        x = teacher_data(jax.random.PRNGKey(1), 4, 4, 64)
        game = MeanMatching.create(spec, jax.random.PRNGKey(0), x)
        gen, disc = game.init(jax.random.PRNGKey(2))
        mu, eta = 0.5, 1.0
        pred = predicted_rates(jjt(game.mean_map, gen), mu, eta)
        og, od = optim.make("sgd", mu), optim.make("sgd", eta)
        step = make_step(game, og, od, Scheme())
        _, recs = run(step, init_state(game, og, od, gen, disc), jax.random.PRNGKey(0), 300, 10,
                      lambda s: {"r": jax.numpy.linalg.norm(game.residual(s.gen))})
        r = np.asarray(recs["r"])
        # slope over steps 150..300, far from both the transient and the precision floor
        meas = np.exp(np.polyfit(np.arange(15, 31) * 10, np.log(r[15:31]), 1)[0])
        assert meas == pytest.approx(pred["rate_block"], abs=0.1 * (1 - pred["rate_block"]))
        assert pred["rate_block"] <= pred["rate_simple"] + 1e-12
