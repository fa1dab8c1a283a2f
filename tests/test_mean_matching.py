"""Mean-matching game: gradients, closed forms, invariances (issue: foundation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from overparam import optim
from overparam.dynamics import Scheme, init_state, make_step, run
from overparam.errors import ConfigError
from overparam.games import MeanMatching, MeanMatchingSpec, teacher_data
from overparam.theory import best_response_sympy, mean_matching_value_sympy


def make_game(seed=0, **kw):
    spec = MeanMatchingSpec(**{"m": 3, "d": 2, "k": 4, "n": 5, **kw})
    x = teacher_data(jax.random.PRNGKey(100 + seed), spec.m, spec.d, 7, width=16, phi=spec.phi)
    game = MeanMatching.create(spec, jax.random.PRNGKey(seed), x)
    gen, _ = game.init(jax.random.PRNGKey(seed + 1))
    disc = {"d": jax.random.normal(jax.random.PRNGKey(seed + 2), (spec.feature_dim,))}
    return game, gen, disc


@pytest.mark.parametrize("phi", ["tanh", "softplus", "gelu", "relu"])
def test_gradients_match_sympy_and_finite_differences(phi):
    with jax.enable_x64(True):
        game, gen, disc = make_game(phi=phi)
        batch = game.sample_batch(jax.random.PRNGKey(0))
        val_s, gW_s, gd_s = mean_matching_value_sympy(phi, np.asarray(game.V), np.asarray(game.Z),
                                                      np.asarray(game.target()))
        W, dv = np.asarray(gen["W"]), np.asarray(disc["d"])
        gW, gd = jax.grad(game.value, argnums=(0, 1))(gen, disc, batch)
        assert float(game.value(gen, disc, batch)) == pytest.approx(val_s(W, dv), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(np.asarray(gW["W"]), gW_s(W, dv), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(gd["d"]), gd_s(W, dv), rtol=1e-10, atol=1e-12)
        # central finite differences on W, independent of both symbolic and autodiff routes
        eps = 1e-6
        fd = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            e = np.zeros_like(W)
            e[idx] = eps
            fd[idx] = (val_s(W + e, dv) - val_s(W - e, dv)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(gW["W"]), fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("disc_kind", ["linear", "random_features"])
@given(seed=st.integers(0, 2**16))
def test_best_response_zeroes_disc_gradient_and_gives_reduced_objective(disc_kind, seed):
    with jax.enable_x64(True):
        game, gen, _ = make_game(seed, disc=disc_kind, p=4)
        batch = game.sample_batch(jax.random.PRNGKey(0))
        dstar = game.best_response(gen)
        g = jax.grad(game.value, argnums=1)(gen, dstar, batch)
        np.testing.assert_allclose(np.asarray(g["d"]), 0.0, atol=1e-12)
        assert float(game.value(gen, dstar, batch)) == pytest.approx(float(game.reduced_objective(gen)), rel=1e-12)
        # the sympy derivation agrees: d* = f − x̄ and max h = ½‖f − x̄‖²
        m = game.spec.feature_dim
        br, red, _, _ = best_response_sympy(m)
        f, xb = np.asarray(game.mean_map(gen)), np.asarray(game.target())
        np.testing.assert_allclose(br(f, xb), np.asarray(dstar["d"]), rtol=1e-12, atol=1e-14)
        assert red(f, xb) == pytest.approx(float(game.reduced_objective(gen)), rel=1e-12)


def test_jjt_closed_form_matches_autodiff():
    from overparam.theory import jjt

    with jax.enable_x64(True):
        game, gen, _ = make_game(3, k=6)
        np.testing.assert_allclose(np.asarray(game.jjt_closed_form(gen)), jjt(game.mean_map, gen), rtol=1e-10)


def _trajectory(game, gen, disc, steps=30, mu=0.3, eta=0.7):
    opt_g, opt_d = optim.make("sgd", mu), optim.make("sgd", eta)
    step = make_step(game, opt_g, opt_d, Scheme())
    state = init_state(game, opt_g, opt_d, gen, disc)
    _, recs = run(step, state, jax.random.PRNGKey(0), steps, 1,
                  lambda s: {"W": s.gen["W"], "d": s.disc["d"], "r": game.residual(s.gen)})
    return recs


@settings(max_examples=6)  # each example compiles two 30-step runs
@given(seed=st.integers(0, 2**16))
def test_permuting_hidden_units_leaves_trajectory_unchanged(seed):
    with jax.enable_x64(True):
        game, gen, disc = make_game(seed, k=5)
        perm = np.random.default_rng(seed).permutation(game.spec.k)
        game_p = MeanMatching(game.spec, game.V[:, perm], game.Z, game.X, game.F)
        a = _trajectory(game, gen, disc)
        b = _trajectory(game_p, {"W": gen["W"][perm]}, disc)
        np.testing.assert_allclose(np.asarray(b["W"]), np.asarray(a["W"])[:, perm], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(b["d"]), np.asarray(a["d"]), rtol=1e-10, atol=1e-12)


def test_simultaneous_gda_eta_one_is_lagged_gradient_descent_on_reduced_objective():
    """With η = 1: d_{t+1} = f(W_t) − x̄ and W_{t+1} = W_t − μ J(W_t)ᵀ (f(W_{t−1}) − x̄)."""
    with jax.enable_x64(True):
        game, gen, disc = make_game(7, k=6)
        mu = 0.3
        recs = _trajectory(game, gen, disc, steps=20, mu=mu, eta=1.0)
        Ws, ds, rs = (np.asarray(recs[k]) for k in ("W", "d", "r"))
        for t in range(1, 20):
            np.testing.assert_allclose(ds[t + 1], rs[t], rtol=1e-12, atol=1e-14)
            J = jax.jacobian(lambda W: game.mean_map({"W": W}))(jnp.asarray(Ws[t]))  # (m, k, d)
            expect = Ws[t] - mu * np.einsum("i,ikd->kd", rs[t - 1], np.asarray(J))
            np.testing.assert_allclose(Ws[t + 1], expect, rtol=1e-11, atol=1e-13)


def test_stochastic_batches_are_fresh_and_seeded():
    game, gen, disc = make_game(0, batch_size=16)
    z1, x1 = game.sample_batch(jax.random.PRNGKey(1))
    z2, _ = game.sample_batch(jax.random.PRNGKey(2))
    z1b, x1b = game.sample_batch(jax.random.PRNGKey(1))
    assert z1.shape == (16, 2) and x1.shape == (16, 3)
    assert not np.allclose(z1, z2)
    np.testing.assert_array_equal(z1, z1b)
    np.testing.assert_array_equal(x1, x1b)


def test_depth_two_and_trained_readout_gradients_match_finite_differences():
    with jax.enable_x64(True):
        game, gen, disc = make_game(4, depth=2, train_v=True, k=3)
        batch = game.sample_batch(jax.random.PRNGKey(0))
        grads = jax.grad(game.value)(gen, disc, batch)
        eps = 1e-6
        for name in ("W1", "W2", "V"):
            flat = np.asarray(gen[name]).ravel()
            for i in range(0, flat.size, max(1, flat.size // 4)):
                e = np.zeros_like(flat)
                e[i] = eps
                up = dict(gen, **{name: jnp.asarray((flat + e).reshape(gen[name].shape))})
                dn = dict(gen, **{name: jnp.asarray((flat - e).reshape(gen[name].shape))})
                fd = (game.value(up, disc, batch) - game.value(dn, disc, batch)) / (2 * eps)
                assert float(grads[name].ravel()[i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kw, match", [
    ({"k": 0}, "k"), ({"k": -3}, "k"), ({"phi": "swish"}, "phi"), ({"disc": "mlp"}, "discriminator"),
    ({"depth": 3}, "depth"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_spec_gives_one_clear_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        MeanMatchingSpec(**kw)


def test_wrong_data_shape_is_a_config_error():
    spec = MeanMatchingSpec(m=3)
    with pytest.raises(ConfigError, match=r"\(N, m\)"):
        MeanMatching.create(spec, jax.random.PRNGKey(0), np.zeros((10, 4)))
    with pytest.raises(ConfigError, match="NaN"):
        MeanMatching.create(spec, jax.random.PRNGKey(0), np.full((10, 3), np.nan))
