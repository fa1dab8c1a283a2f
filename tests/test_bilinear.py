"""Schemes and optimistic GD on the bilinear game min_x max_y x·y, against closed forms.

Every run goes through ``dynamics.make_step`` / ``dynamics.run`` in float64 and is compared
per step with the closed form (eqs. B-sim, B-alt, B-eg in overparam/games/bilinear.py) or a
recursion written out by hand in numpy.
"""
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, strategies as st

from overparam import optim
from overparam.dynamics import Scheme, init_state, make_step, run
from overparam.errors import ConfigError
from overparam.games.bilinear import Bilinear, alternating_invariant, extragradient_factor, simultaneous_factor

RTOL = 1e-12
coords = st.lists(st.floats(-3, 3, allow_nan=False, allow_infinity=False), min_size=6, max_size=6)
etas = st.sampled_from([0.05, 0.3, 0.9, 1.4])  # few values: one compile each


def _start(c):
    x, y = np.asarray(c[:3]), np.asarray(c[3:])
    if np.linalg.norm(np.concatenate([x, y])) < 1e-3:
        x = x + 1.0
    return x, y


@lru_cache(maxsize=None)
def _compiled(scheme, opt, eta, steps, eta_d):
    """One jitted run per (scheme, optimizer, step sizes, steps); start points are arguments."""
    game = Bilinear()
    og, od = optim.make(opt, eta), optim.make(opt, eta if eta_d is None else eta_d)
    step = make_step(game, og, od, scheme)

    def go(x0, y0):
        state = init_state(game, og, od, x0, y0, scheme)
        _, recs = run(step, state, jax.random.PRNGKey(0), steps, 1, lambda s: {"x": s.gen, "y": s.disc})
        return recs

    return jax.jit(go)


def _trajectory(x0, y0, scheme, opt="sgd", eta=0.1, steps=30, eta_d=None):
    """(xs, ys) of shape (steps + 1, n): every step of ``scheme`` on the bilinear game, float64."""
    with jax.enable_x64(True):
        recs = _compiled(scheme, opt, eta, steps, eta_d)(jnp.asarray(x0, jnp.float64), jnp.asarray(y0, jnp.float64))
        assert recs["x"].dtype == jnp.float64
        return np.asarray(recs["x"]), np.asarray(recs["y"])


def _q(xs, ys, eta, order):
    """The alternating invariant of every record, in float64."""
    with jax.enable_x64(True):
        return np.array([float(alternating_invariant(x, y, eta, order)) for x, y in zip(xs, ys)])


def _norms(xs, ys):
    return np.sqrt(np.sum(xs**2, axis=-1) + np.sum(ys**2, axis=-1))


@given(c=coords, eta=etas)
def test_simultaneous_gda_grows_norm_by_sqrt_1_plus_eta2(c, eta):
    x0, y0 = _start(c)
    xs, ys = _trajectory(x0, y0, Scheme("simultaneous"), eta=eta, steps=20)
    r = _norms(xs, ys)
    np.testing.assert_allclose(r[1:] / r[:-1], simultaneous_factor(eta), rtol=RTOL)


@given(c=coords, eta=st.sampled_from([0.05, 0.5, 1.9]))
@pytest.mark.parametrize("order", ["g_first", "d_first"])
def test_alternating_gda_conserves_quadratic(order, c, eta):
    x0, y0 = _start(c)
    xs, ys = _trajectory(x0, y0, Scheme("alternating", order), eta=eta, steps=40)
    q = _q(xs, ys, eta, order)
    scale = np.sum(x0**2) + np.sum(y0**2)
    np.testing.assert_allclose(q, q[0], rtol=0, atol=RTOL * 40 * scale)


def test_alternating_invariant_sign_matters():
    """Guard: the g_first invariant is not conserved by d_first (the test above can fail)."""
    xs, ys = _trajectory([1.0, 0.5, -0.2], [0.3, -1.0, 0.7], Scheme("alternating", "d_first"), eta=0.3, steps=10)
    q = _q(xs, ys, 0.3, "g_first")
    assert np.ptp(q) > 1e-2
    # and plain ‖(x, y)‖² is not conserved either
    assert np.ptp(_norms(xs, ys)) > 1e-2


def test_alternating_invariant_derivation_sympy():
    """Derive the invariant: the quadratic forms P with MᵀPM = P for the g_first map M."""
    a, b = sp.symbols("a b", positive=True)  # generator and discriminator step sizes
    p11, p12, p22 = sp.symbols("p11 p12 p22")
    shear_x = sp.Matrix([[1, -a], [0, 1]])   # x ← x − a y
    shear_y = sp.Matrix([[1, 0], [b, 1]])    # y ← y + b x
    M = shear_y * shear_x
    P = sp.Matrix([[p11, p12], [p12, p22]])
    sol = sp.solve(list(M.T * P * M - P), [p11, p12, p22], dict=True)
    assert len(sol) == 1
    Q = P.subs(sol[0])
    # one free parameter (p22): P ∝ [[b, −ab/2], [−ab/2, a]]  →  Q = b x² + a y² − ab x y
    free = list(Q.free_symbols - {a, b})
    assert len(free) == 1
    expected = sp.Matrix([[b, -a * b / 2], [-a * b / 2, a]]) * free[0] / a
    assert sp.simplify(Q - expected) == sp.zeros(2, 2)
    assert sp.simplify(M.det()) == 1
    # with a = b = η this is η (x² + y² − η x y): the formula in alternating_invariant
    x, y, eta = sp.symbols("x y eta")
    v = sp.Matrix([x, y])
    q_eta = sp.expand((v.T * expected.subs({a: eta, b: eta, free[0]: eta}) * v)[0] / eta)
    assert sp.simplify(q_eta - (x**2 + y**2 - eta * x * y)) == 0


@pytest.mark.parametrize("n_disc", [2, 5])
def test_alternating_with_n_disc_conserves_generalized_quadratic(n_disc):
    """g_first with n_disc SGD discriminator steps is the shear pair with b = n_disc·η."""
    eta = 0.2
    xs, ys = _trajectory([1.0, -0.4, 0.3], [0.5, 0.2, -1.1], Scheme("alternating", "g_first", n_disc),
                         eta=eta, steps=40)
    a, b = eta, n_disc * eta
    q = b * np.sum(xs**2, -1) + a * np.sum(ys**2, -1) - a * b * np.sum(xs * ys, -1)
    np.testing.assert_allclose(q, q[0], rtol=1e-12)


@given(c=coords, eta=etas)
def test_extragradient_shrinks_norm_by_sqrt_1_minus_eta2_plus_eta4(c, eta):
    x0, y0 = _start(c)
    xs, ys = _trajectory(x0, y0, Scheme("extragradient"), eta=eta, steps=20)
    r = _norms(xs, ys)
    ok = r[:-1] > 1e-250  # far from underflow
    np.testing.assert_allclose((r[1:] / r[:-1])[ok], extragradient_factor(eta), rtol=RTOL)


@given(c=coords, eta=etas)
def test_past_extragradient_matches_popov_recursion(c, eta):
    """Popov: x̃_t = x_t − η g(x̃_{t−1}), x_{t+1} = x_t − η g(x̃_t), with x̃_{−1} = x_0."""
    x0, y0 = _start(c)
    steps = 25
    xs, ys = _trajectory(x0, y0, Scheme("past_extragradient"), eta=eta, steps=steps)
    x, y = x0.copy(), y0.copy()
    gx_prev, gy_prev = y0.copy(), -x0.copy()       # gradients of x·y and −x·y at the start
    for t in range(steps):
        xh, yh = x - eta * gx_prev, y - eta * gy_prev  # extrapolate with the stored gradient
        gx, gy = yh, -xh                                # one new gradient, at the extrapolated point
        x, y = x - eta * gx, y - eta * gy
        gx_prev, gy_prev = gx, gy
        scale = max(1.0, np.linalg.norm(np.concatenate([x, y])))
        np.testing.assert_allclose(xs[t + 1], x, rtol=RTOL, atol=RTOL * scale)
        np.testing.assert_allclose(ys[t + 1], y, rtol=RTOL, atol=RTOL * scale)


def test_extragradient_differs_from_past_extragradient():
    """Guard: the two extragradient variants are different algorithms."""
    a = _trajectory([1.0, 0, 0], [0, 1.0, 0], Scheme("extragradient"), eta=0.3, steps=5)
    b = _trajectory([1.0, 0, 0], [0, 1.0, 0], Scheme("past_extragradient"), eta=0.3, steps=5)
    assert np.max(np.abs(a[0] - b[0])) > 1e-3


# -- optimistic gradient descent -----------------------------------------------------------------
@given(eta=st.sampled_from([0.05, 0.3, 1.0]), c=coords)
def test_ogd_matches_two_step_form_on_bilinear_game(eta, c):
    """optax's OGD: x_{t+1} = x_t − η(2 g_t − g_{t−1}) with g_{−1} := g_0 (first step is plain GD)."""
    x0, y0 = _start(c)
    steps = 25
    xs, ys = _trajectory(x0, y0, Scheme("simultaneous"), opt="ogd", eta=eta, steps=steps)
    x, y = x0.copy(), y0.copy()
    gx_prev = gy_prev = None
    for t in range(steps):
        gx, gy = y.copy(), -x.copy()
        if gx_prev is None:
            gx_prev, gy_prev = gx, gy
        x, y = x - 2 * eta * gx + eta * gx_prev, y - 2 * eta * gy + eta * gy_prev
        gx_prev, gy_prev = gx, gy
        scale = max(1.0, np.linalg.norm(np.concatenate([x, y])))
        np.testing.assert_allclose(xs[t + 1], x, rtol=RTOL, atol=RTOL * scale)
        np.testing.assert_allclose(ys[t + 1], y, rtol=RTOL, atol=RTOL * scale)


@given(grads=st.lists(st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3), min_size=2, max_size=8),
       lr=st.floats(1e-3, 2.0))
def test_ogd_updates_match_hand_written_form(grads, lr):
    """Optimizer level, arbitrary gradient stream: Δ_0 = −lr g_0, Δ_t = −lr (2 g_t − g_{t−1})."""
    with jax.enable_x64(True):
        tx = optim.make("ogd", lr)
        params = jnp.zeros(3, jnp.float64)
        state = tx.init(params)
        prev = None
        for g in grads:
            g = np.asarray(g, float)
            upd, state = tx.update(jnp.asarray(g), state, params)
            expected = -lr * g if prev is None else -lr * (2 * g - prev)
            np.testing.assert_allclose(np.asarray(upd), expected, rtol=1e-12, atol=1e-12)
            prev = g


def test_ogd_converges_where_gda_diverges():
    """OGD's last iterate converges on the bilinear game (η = 0.2); simultaneous GDA does not."""
    x0, y0 = [1.0, 0.5], [-0.5, 1.0]
    ogd = _norms(*_trajectory(x0, y0, Scheme("simultaneous"), opt="ogd", eta=0.2, steps=300))
    gda = _norms(*_trajectory(x0, y0, Scheme("simultaneous"), opt="sgd", eta=0.2, steps=300))
    assert ogd[-1] < 1e-2 * ogd[0]
    assert gda[-1] > 100 * gda[0]


def test_scalar_players_work():
    xs, ys = _trajectory(1.0, 0.0, Scheme("simultaneous"), eta=0.5, steps=3)
    assert xs.shape == (4,)
    np.testing.assert_allclose(np.hypot(xs, ys), np.sqrt(1.25) ** np.arange(4), rtol=RTOL)


def test_bad_closed_form_inputs():
    with pytest.raises(ConfigError):
        simultaneous_factor(-0.1)
    with pytest.raises(ConfigError):
        extragradient_factor(float("nan"))
    with pytest.raises(ConfigError, match="order"):
        alternating_invariant(1.0, 1.0, 0.1, "sideways")
