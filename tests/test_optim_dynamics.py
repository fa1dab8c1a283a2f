"""Optimizers and schemes: normalized steps, scale invariance, determinism, divergence."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from overparam import optim
from overparam.dynamics import Scheme, init_state, make_step, run
from overparam.errors import ConfigError
from overparam.games import MeanMatching, MeanMatchingSpec, teacher_data

arrays = st.lists(st.floats(-100, 100, allow_nan=False, width=64), min_size=6, max_size=6)


@given(a=arrays, lr=st.floats(1e-4, 10.0))
def test_nsgd_global_step_has_norm_lr(a, lr):
    with jax.enable_x64(True):
        g = {"u": jnp.asarray(a[:4], jnp.float64).reshape(2, 2), "v": jnp.asarray(a[4:], jnp.float64)}
        if float(optim.tree_norm(g)) == 0:
            return
        tx = optim.make("nsgd", lr)
        upd, _ = tx.update(g, tx.init(g))
        assert float(optim.tree_norm(upd)) == pytest.approx(lr, rel=1e-12)
        # and it points against the gradient
        dot = sum(float(jnp.vdot(u, x)) for u, x in zip(jax.tree_util.tree_leaves(upd), jax.tree_util.tree_leaves(g)))
        assert dot == pytest.approx(-lr * float(optim.tree_norm(g)), rel=1e-10)


@given(a=arrays, lr=st.floats(1e-4, 10.0))
def test_nsgd_per_tensor_each_step_has_norm_lr(a, lr):
    with jax.enable_x64(True):
        g = {"u": jnp.asarray(a[:4], jnp.float64).reshape(2, 2), "v": jnp.asarray(a[4:], jnp.float64)}
        tx = optim.make("nsgd_tensor", lr)
        upd, _ = tx.update(g, tx.init(g))
        for u, x in zip(jax.tree_util.tree_leaves(upd), jax.tree_util.tree_leaves(g)):
            expected = lr if float(jnp.linalg.norm(x)) > 0 else 0.0
            assert float(jnp.linalg.norm(u)) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_nsgd_zero_gradient_gives_zero_step_not_nan():
    tx = optim.make("nsgd", 0.1)
    g = {"u": jnp.zeros(3)}
    upd, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(upd["u"], 0.0)


class ScaledGame:
    """A game whose losses are c times another's."""

    def __init__(self, game, c):
        self.game, self.c = game, c

    def gen_loss(self, g, d, b):
        return self.c * self.game.gen_loss(g, d, b)

    def disc_loss(self, g, d, b):
        return self.c * self.game.disc_loss(g, d, b)

    def sample_batch(self, key):
        return self.game.sample_batch(key)


def _game(seed=0, **kw):
    spec = MeanMatchingSpec(**{"m": 4, "d": 3, "k": 16, "n": 8, **kw})
    x = teacher_data(jax.random.PRNGKey(9), spec.m, spec.d, 10, width=32)
    game = MeanMatching.create(spec, jax.random.PRNGKey(seed), x)
    gen, disc = game.init(jax.random.PRNGKey(seed + 1))
    return game, gen, disc


def _run(game, gen, disc, opt_name, scheme=Scheme(), steps=25, lr=(0.05, 0.1), record_every=1, key=0):
    og, od = optim.make(opt_name, lr[0]), optim.make(opt_name, lr[1])
    step = make_step(game, og, od, scheme)
    st_ = init_state(game, og, od, gen, disc, scheme)
    return run(step, st_, jax.random.PRNGKey(key), steps, record_every, lambda s: {"W": s.gen["W"], "d": s.disc["d"]})


@pytest.mark.parametrize("name", ["nsgd_global", "nsgd_tensor"])
@settings(max_examples=6)  # each example compiles a 25-step run
@given(c=st.floats(1e-3, 1e3))
def test_nsgd_trajectory_invariant_to_loss_scale(name, c):
    with jax.enable_x64(True):
        game, gen, disc = _game()
        _, a = _run(game, gen, disc, name)
        _, b = _run(ScaledGame(game, c), gen, disc, name)
        np.testing.assert_allclose(np.asarray(b["W"]), np.asarray(a["W"]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(b["d"]), np.asarray(a["d"]), rtol=1e-9, atol=1e-12)


def test_sgd_is_not_scale_invariant():
    """Guard: the invariance test above can fail (plain SGD changes with c)."""
    with jax.enable_x64(True):
        game, gen, disc = _game()
        _, a = _run(game, gen, disc, "sgd")
        _, b = _run(ScaledGame(game, 3.0), gen, disc, "sgd")
        assert np.max(np.abs(np.asarray(a["W"]) - np.asarray(b["W"]))) > 1e-3


@pytest.mark.parametrize("scheme", [Scheme(), Scheme("alternating", "d_first", 3), Scheme("alternating", "g_first", 2),
                                    Scheme("extragradient"), Scheme("past_extragradient")])
def test_same_seed_gives_identical_results(scheme):
    game, gen, disc = _game(batch_size=4)
    _, a = _run(game, gen, disc, "adam", scheme, key=3)
    _, b = _run(game, gen, disc, "adam", scheme, key=3)
    _, c = _run(game, gen, disc, "adam", scheme, key=4)
    np.testing.assert_array_equal(np.asarray(a["W"]), np.asarray(b["W"]))
    assert not np.array_equal(np.asarray(a["W"]), np.asarray(c["W"]))


def test_alternating_d_first_matches_hand_written_loop():
    with jax.enable_x64(True):
        game, gen, disc = _game()
        mu, eta, n_disc = 0.05, 0.2, 3
        _, recs = _run(game, gen, disc, "sgd", Scheme("alternating", "d_first", n_disc), steps=5, lr=(mu, eta))
        W, d = np.asarray(gen["W"]), np.asarray(disc["d"])
        b = game.sample_batch(None)
        for t in range(5):
            for _ in range(n_disc):
                d = d - eta * np.asarray(jax.grad(game.disc_loss, 1)({"W": W}, {"d": d}, b)["d"])
            W = W - mu * np.asarray(jax.grad(game.gen_loss, 0)({"W": W}, {"d": d}, b)["W"])
            np.testing.assert_allclose(np.asarray(recs["W"][t + 1]), W, rtol=1e-12)
            np.testing.assert_allclose(np.asarray(recs["d"][t + 1]), d, rtol=1e-12)


def test_divergence_is_recorded_not_raised():
    game, gen, disc = _game()
    _, recs = _run(game, gen, disc, "sgd", steps=400, lr=(50.0, 50.0), record_every=10)
    fin = np.asarray(recs["finite"])
    assert fin[0] and not fin[-1]


@pytest.mark.parametrize("name, lr, match", [
    ("sgdd", 0.1, "unknown optimizer"), ("sgd", float("nan"), "finite"), ("adam", float("inf"), "finite"),
    ("sgd", -0.1, "> 0"), ("sgd", 0.0, "> 0"),
])
def test_bad_optimizer_config(name, lr, match):
    with pytest.raises(ConfigError, match=match):
        optim.make(name, lr)


def test_bad_scheme_and_runner_config():
    with pytest.raises(ConfigError, match="scheme"):
        Scheme("leapfrog")
    with pytest.raises(ConfigError, match="alternating"):
        Scheme("simultaneous", n_disc=2)
    with pytest.raises(ConfigError, match="n_disc"):
        Scheme("alternating", n_disc=0)
    game, gen, disc = _game()
    with pytest.raises(ConfigError, match="multiple"):
        _run(game, gen, disc, "sgd", steps=10, record_every=3)


def test_adam_matches_optax_reference():
    g = {"w": jnp.array([0.3, -1.0])}
    a, b = optim.make("adam", 0.01), optax.adam(0.01)
    ua, _ = a.update(g, a.init(g))
    ub, _ = b.update(g, b.init(g))
    np.testing.assert_allclose(ua["w"], ub["w"])
