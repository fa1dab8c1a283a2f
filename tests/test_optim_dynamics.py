"""Optimizers and schemes: normalized steps, scale invariance, determinism, divergence."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from overparam import optim
from overparam.dynamics import AuxState, Scheme, init_state, make_step, run
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


def test_nsgd_matches_optax_normalize_by_update_norm():
    """Global nSGD against optax's own normalization: optax divides by (‖g‖ + eps)/scale_factor,
    so with eps = 0 and scale_factor = −lr it is Δ = −lr g/‖g‖ exactly."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        for lr in (1e-3, 0.1, 3.0):
            g = {"u": jnp.asarray(rng.normal(size=(3, 2))), "v": jnp.asarray(rng.normal(size=4))}
            ours = optim.make("nsgd", lr)
            ref = optax.normalize_by_update_norm(scale_factor=-lr, eps=0.0)
            ua, _ = ours.update(g, ours.init(g))
            ub, _ = ref.update(g, ref.init(g))
            for key in g:
                np.testing.assert_allclose(ua[key], ub[key], rtol=1e-13, atol=0)


def test_adam_matches_the_written_out_rule():
    """optim's adam against Adam's update written out (Kingma & Ba 2015, Algorithm 1), two steps."""
    lr, b1, b2, eps = 0.01, 0.5, 0.9, 1e-8
    g1, g2 = np.array([0.3, -1.0]), np.array([-0.2, 0.4])
    tx = optim.make("adam", lr, b1=b1, b2=b2, eps=eps)
    state = tx.init({"w": jnp.zeros(2)})
    m = v = np.zeros(2)
    for t, g in enumerate((g1, g2), start=1):
        u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected = -lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(np.asarray(u["w"]), expected, rtol=1e-5)


def test_takes_option_reads_the_builders():
    assert [n for n in optim.OPTIMIZERS if optim.takes_option(n, "b1")] == ["adam", "ada_nsgda", "sgda_ada"]
    assert optim.takes_option("momentum", "nesterov") and not optim.takes_option("sgd", "b1")
    with pytest.raises(ConfigError, match="unknown optimizer"):
        optim.takes_option("lamb", "b1")


# -- games with auxiliary state -----------------------------------------------------------------------
class CountingGame:
    """``game``'s losses with auxiliary state: each player counts its loss evaluations and keeps
    the norm of the last gradient it was updated with (via observe_grads)."""

    has_aux = True

    def __init__(self, game):
        self.game = game

    def gen_loss(self, g, d, b, aux):
        return self.game.gen_loss(g, d, b), {"evals": aux.gen["evals"] + 1, "gnorm": aux.gen["gnorm"]}

    def disc_loss(self, g, d, b, aux):
        return self.game.disc_loss(g, d, b), {"evals": aux.disc["evals"] + 1, "gnorm": aux.disc["gnorm"]}

    def sample_batch(self, key):
        return self.game.sample_batch(key)

    def observe_grads(self, player, a, grads):
        return {**a, "gnorm": optim.tree_norm(grads)}


AUX_SCHEMES = [(Scheme(), (1, 1)), (Scheme("alternating", "d_first", 3), (1, 3)),
               (Scheme("alternating", "g_first", 2), (1, 2)), (Scheme("extragradient"), (2, 2)),
               (Scheme("past_extragradient"), (1, 1))]


@pytest.mark.parametrize("scheme, per_step", AUX_SCHEMES)
def test_aux_state_game_follows_the_plain_game_and_counts_evaluations(scheme, per_step):
    """A game whose losses carry auxiliary state but ignore it gives exactly the plain game's
    trajectory under every scheme; the state advances once per gradient evaluation of its player
    (extragradient: two per step, past-extragradient: one), and observe_grads sees the update's
    gradient, checked against a gradient computed here."""
    game, gen, disc = _game(batch_size=4)
    og, od = optim.make("sgd", 0.05), optim.make("sgd", 0.1)
    steps = 3
    plain = run(make_step(game, og, od, scheme), init_state(game, og, od, gen, disc, scheme),
                jax.random.PRNGKey(5), steps, 1, lambda s: {"W": s.gen["W"], "d": s.disc["d"]})[1]
    aux_game = CountingGame(game)
    zero = {"evals": jnp.zeros((), jnp.int32), "gnorm": jnp.zeros(())}
    s0 = init_state(aux_game, og, od, gen, disc, scheme, aux=AuxState(zero, zero))
    final, rec = run(make_step(aux_game, og, od, scheme), s0, jax.random.PRNGKey(5), steps, 1,
                     lambda s: {"W": s.gen["W"], "d": s.disc["d"], "ge": s.aux.gen["evals"],
                                "de": s.aux.disc["evals"]})
    np.testing.assert_array_equal(np.asarray(rec["W"]), np.asarray(plain["W"]))
    np.testing.assert_array_equal(np.asarray(rec["d"]), np.asarray(plain["d"]))
    assert np.asarray(rec["ge"]).tolist() == [per_step[0] * t for t in range(steps + 1)]
    assert np.asarray(rec["de"]).tolist() == [per_step[1] * t for t in range(steps + 1)]
    if scheme.kind == "simultaneous":  # the last step's gradients, recomputed from its batch
        keys = jax.random.split(jax.random.split(jax.random.PRNGKey(5), steps)[-1], 1)
        b = game.sample_batch(keys[0])
        g_prev, d_prev = {"W": rec["W"][-2]}, {"d": rec["d"][-2]}
        gg = jax.grad(game.gen_loss, 0)(g_prev, d_prev, b)
        gd = jax.grad(game.disc_loss, 1)(g_prev, d_prev, b)
        np.testing.assert_allclose(float(final.aux.gen["gnorm"]), float(optim.tree_norm(gg)), rtol=1e-5)
        np.testing.assert_allclose(float(final.aux.disc["gnorm"]), float(optim.tree_norm(gd)), rtol=1e-5)


def test_plain_games_carry_no_aux_state():
    game, gen, disc = _game()
    s = init_state(game, optim.make("sgd", 0.1), optim.make("sgd", 0.1), gen, disc)
    assert s.aux == ()
    s1 = make_step(game, optim.make("sgd", 0.1), optim.make("sgd", 0.1))(s, jax.random.PRNGKey(0))
    assert s1.aux == () and int(s1.step) == 1
