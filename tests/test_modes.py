"""Multimodal games, mode metrics and the modes study (issue 4, item 3)."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from overparam import claims, optim
from overparam.bench.modes import mlp_backward, mlp_forward, neurons_grads, numpy_neurons_run
from overparam.dynamics import Scheme, init_state, make_step, run as run_dynamics
from overparam.errors import ConfigError
from overparam.games.multimodal import Mixture2D, Mixture2DSpec, Neurons, NeuronsSpec, mixture_centers
from overparam.metrics.modes import mixture_coverage, neuron_modes
from overparam.studies import modes as study


# -- metrics on hand-built generator outputs -------------------------------------------------------
def _brute_neurons(v, U, alphas):
    out = []
    for j in range(U.shape[0]):
        hit = False
        for vk in v:
            p = float(vk @ U[j])
            c = p / float(np.linalg.norm(vk)) if np.linalg.norm(vk) > 0 else 0.0
            hit |= c > 0.9 and 0.5 * alphas[j] <= p <= 1.5 * alphas[j]
        out.append(hit)
    return np.array(out)


def test_neuron_modes_hand_built():
    U = np.eye(5)[:3]
    alphas = np.array([1.0, 0.6, 0.4])
    v = np.array([
        [1.0, 0, 0, 0, 0],          # mode 0: cos 1, projection 1.0 α_0        -> recovered
        [0, 0.6, 0, 0.3, 0],        # mode 1: cos 0.894 < 0.9                  -> not
        [0, 0, 0.21, 0, 0],         # mode 2: projection 0.21 ≥ 0.5·0.4        -> recovered
        [0, 0.95, 0, 0, 0],         # mode 1: projection 0.95 > 1.5·0.6 = 0.9  -> not
        [0, -0.6, 0, 0, 0],         # opposite direction                       -> not
    ])
    got = np.asarray(neuron_modes(jnp.asarray(v), jnp.asarray(U), jnp.asarray(alphas)))
    assert got.tolist() == [True, False, True]
    assert int(got.sum()) == 2
    v2 = v.copy()
    v2[1] = [0, 0.6, 0, 0.2, 0]     # cos 0.949 > 0.9, projection 0.6          -> recovered
    assert np.asarray(neuron_modes(jnp.asarray(v2), jnp.asarray(U), jnp.asarray(alphas))).tolist() == [True] * 3
    # a diverged run recovers none: NaN in v, or the run's own finiteness flag False
    v3 = v2.copy()
    v3[4, 0] = np.nan
    assert not np.asarray(neuron_modes(jnp.asarray(v3), jnp.asarray(U), jnp.asarray(alphas))).any()
    assert not np.asarray(neuron_modes(jnp.asarray(v2), jnp.asarray(U), jnp.asarray(alphas), finite=False)).any()


@given(st.integers(0, 10_000))
def test_neuron_modes_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((6, 3)))[0].T
    alphas = rng.uniform(0.3, 1.2, 3)
    # vectors near the modes, some off in angle or length
    j = rng.integers(0, 3, 5)
    v = alphas[j, None] * U[j] * rng.uniform(0.3, 1.8, (5, 1)) + rng.normal(0, 0.3, (5, 6)) * rng.uniform(0, 1, (5, 1))
    got = np.asarray(neuron_modes(jnp.asarray(v, jnp.float32), jnp.asarray(U, jnp.float32), jnp.asarray(alphas, jnp.float32)))
    # float32 vs float64 only disagree at the exact boundaries; skip those draws
    proj = v @ U.T
    cos = proj / np.linalg.norm(v, axis=1, keepdims=True)
    margin = min(np.min(np.abs(cos - 0.9)), np.min(np.abs(proj - 0.5 * alphas)), np.min(np.abs(proj - 1.5 * alphas)))
    if margin > 1e-4:
        assert got.tolist() == _brute_neurons(v, U, alphas).tolist()


def test_mixture_coverage_hand_built():
    spec = Mixture2DSpec(layout="ring")
    c = mixture_centers(spec)
    std = spec.std                                  # 3 std = 0.06
    x = np.zeros((2000, 2))                         # the origin is 2 from every ring mode
    x[:30] = c[0] + [0.05, 0.0]                     # 30 within 3 std of mode 0
    x[30:50] = c[1] + [0.0, -0.059]                 # exactly 1 % (20 of 2000) at mode 1 -> covered
    x[50:69] = c[2]                                 # 19 at mode 2 -> not covered
    x[69:169] = c[3] + [0.07, 0.0]                  # 100 just outside 3 std of mode 3 -> not covered
    covered, quality = mixture_coverage(jnp.asarray(x), jnp.asarray(c), std)
    assert np.asarray(covered).tolist() == [True, True, False, False, False, False, False, False]
    assert float(quality) == pytest.approx((30 + 20 + 19) / 2000, abs=1e-7)
    x[5, 1] = np.inf                                # a diverged generator covers nothing
    covered, quality = mixture_coverage(jnp.asarray(x), jnp.asarray(c), std)
    assert not np.asarray(covered).any() and float(quality) == 0.0


def test_grid_layout_and_coverage_of_exact_samples():
    spec = Mixture2DSpec(layout="grid")
    c = mixture_centers(spec)
    assert c.shape == (25, 2)
    assert sorted(set(np.round(c[:, 0], 6))) == [-2, -1, 0, 1, 2]
    # 2000 samples of the data distribution itself: every mode covered, and the share within
    # 3 std of its centre is P(|ξ| ≤ 3σ) = 1 − e^{−9/2} for a 2-D isotropic Gaussian
    game = Mixture2D.create(spec)
    x = game.sample_data(jax.random.PRNGKey(0), 2000)
    covered, quality = mixture_coverage(x, game.centers, spec.std)
    assert bool(np.all(covered))
    assert float(quality) == pytest.approx(1 - math.exp(-4.5), abs=0.01)


@given(st.integers(0, 10_000))
def test_mixture_coverage_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    c = mixture_centers(Mixture2DSpec(layout="ring"))
    n = 400
    x = c[rng.integers(0, 3, n)] + rng.normal(0, 0.04, (n, 2))        # only modes 0..2, some outside 3 std
    far = rng.random(n) < 0.3
    x[far] = rng.normal(0, 1.0, (int(far.sum()), 2))
    d = np.linalg.norm(x[:, None] - c[None], axis=-1)
    keep = np.abs(d - 0.06) > 1e-5                                     # avoid float32 boundary ties
    x = x[keep.all(1)]
    d = d[keep.all(1)]
    n = len(x)
    counts = (d <= 0.06).sum(0)
    covered, quality = mixture_coverage(jnp.asarray(x, jnp.float32), jnp.asarray(c, jnp.float32), 0.02)
    assert np.asarray(covered).tolist() == (counts >= math.ceil(0.01 * n)).tolist()
    assert float(quality) == pytest.approx((d <= 0.06).any(1).mean(), abs=1e-6)


# -- the exact-expectation gradient ------------------------------------------------------------------
@pytest.mark.parametrize("sigma", ["cubic", "cubic_linear", "relu"])
def test_exact_gradient_vs_finite_differences_and_hand_derivation(sigma):
    with jax.enable_x64(True):
        game = Neurons.create(NeuronsSpec(sigma=sigma, d=8, probs=(0.5, 0.3, 0.2)), 0)
        gen, disc = game.init(jax.random.PRNGKey(1))
        gen = {"v": gen["v"] * 20}                                   # away from the flat start
        disc = {"w": disc["w"] * 20, "a": disc["a"] * jnp.linspace(0.5, 1.5, 6)}
        batch = game.exact_batch()
        gg = jax.grad(game.gen_loss)(gen, disc, batch)
        gd = jax.grad(game.disc_loss, argnums=1)(gen, disc, batch)
        rng = np.random.default_rng(0)
        h = 1e-6
        for loss, params, grad, which in ((game.gen_loss, gen, gg, 0), (game.disc_loss, disc, gd, 1)):
            for _ in range(3):
                dirn = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
                plus = {k: params[k] + h * dirn[k] for k in params}
                minus = {k: params[k] - h * dirn[k] for k in params}
                args = lambda p: (p, disc, batch) if which == 0 else (gen, p, batch)
                fd = (loss(*args(plus)) - loss(*args(minus))) / (2 * h)
                an = sum(jnp.sum(grad[k] * dirn[k]) for k in params)
                assert float(fd) == pytest.approx(float(an), rel=1e-6, abs=1e-12)
        # the hand-written numpy gradients of the benchmark's reference agree with autodiff
        ng, nd = neurons_grads(np.asarray(game.means), np.asarray(game.probs), {"v": np.asarray(gen["v"])},
                               {k: np.asarray(v) for k, v in disc.items()}, sigma)
        np.testing.assert_allclose(ng["v"], gg["v"], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(nd["w"], gd["w"], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(nd["a"], gd["a"], rtol=1e-10, atol=1e-14)


def test_minibatch_gradient_is_unbiased_for_the_exact_one():
    with jax.enable_x64(True):
        spec = NeuronsSpec(d=8, batch_size=32, probs=(0.5, 0.3, 0.2))
        game = Neurons.create(spec, 0)
        gen, disc = game.init(jax.random.PRNGKey(1))
        gen, disc = {"v": gen["v"] * 20}, {"w": disc["w"] * 20, "a": disc["a"]}
        exact = jax.grad(game.disc_loss, argnums=1)(gen, disc, game.exact_batch())["w"]
        exact_g = jax.grad(game.gen_loss)(gen, disc, game.exact_batch())["v"]
        keys = jax.random.split(jax.random.PRNGKey(2), 1000)
        per = jax.vmap(lambda k: jax.grad(game.disc_loss, argnums=1)(gen, disc, game.sample_batch(k))["w"])(keys)
        per_g = jax.vmap(lambda k: jax.grad(game.gen_loss)(gen, disc, game.sample_batch(k))["v"])(keys)
        for p, e in ((per, exact), (per_g, exact_g)):
            se = np.asarray(p.std(0)) / math.sqrt(len(keys))
            z = np.abs(np.asarray(p.mean(0) - e)) / np.maximum(se, 1e-300)
            assert np.mean(z < 4.5) == 1.0 and np.mean(z < 2) > 0.85
        x, wx, wz = game.sample_batch(keys[0])
        assert x.shape == (32, 8) and float(wx.sum()) == pytest.approx(1) and float(wz.sum()) == pytest.approx(1)


def test_mixture_gradients_match_hand_backprop():
    spec = Mixture2DSpec(layout="ring", hidden=16, batch_size=32)
    with jax.enable_x64(True):
        game = Mixture2D.create(spec)
        gen, disc = game.init(jax.random.PRNGKey(0))
        gen = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), gen)
        disc = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), disc)
        z, x = (jnp.asarray(a, jnp.float64) for a in game.sample_batch(jax.random.PRNGKey(1)))
        gg = jax.grad(game.gen_loss)(gen, disc, (z, x))
        gd = jax.grad(game.disc_loss, argnums=1)(gen, disc, (z, x))
        npg = {k: np.asarray(v) for k, v in gen.items()}
        npd = {k: np.asarray(v) for k, v in disc.items()}
        fake, gc = mlp_forward(npg, np.asarray(z))
        logits, dc = mlp_forward(npd, np.concatenate([np.asarray(x), fake]))
        b = spec.batch_size
        sig = lambda t: 1 / (1 + np.exp(-t))
        hd, _ = mlp_backward(npd, dc, np.concatenate([-sig(-logits[:b, 0]), sig(logits[b:, 0])])[:, None] / b)
        _, dx = mlp_backward(npd, dc, np.concatenate([np.zeros(b), -sig(-logits[b:, 0])])[:, None] / b)
        hg, _ = mlp_backward(npg, gc, dx[b:])
        for k in gd:
            np.testing.assert_allclose(hd[k], gd[k], rtol=1e-9, atol=1e-12)
        for k in gg:
            np.testing.assert_allclose(hg[k], gg[k], rtol=1e-9, atol=1e-12)


# -- step sizes as injected hyperparameters ----------------------------------------------------------
@pytest.mark.parametrize("name", ["sgd", "momentum", "nsgd_global", "nsgd_tensor", "adam", "rmsprop", "ogd",
                                  "ada_nsgda", "sgda_ada"])
def test_injected_step_size_gives_identical_updates(name):
    """optax.inject_hyperparams(η) reproduces optim.make(name, η) step after step: bit for bit op by
    op, and within 2 float32 ulps under jit (XLA may fold a Python-float η into a fused ratio)."""
    opts = {"b1": 0.5, "b2": 0.999} if name in study.ADAM_BASED else {}
    params = {"v": jnp.ones((3, 4)), "w": jnp.full((2,), 0.5)}
    lr = 0.037
    for jit in (False, True):
        ref, inj = optim.make(name, lr, **opts), study.injected(name, jnp.float32(lr), **opts)
        sr, si = ref.init(params), inj.init(params)
        rng = np.random.default_rng(0)
        step_r, step_i = (jax.jit(ref.update), jax.jit(inj.update)) if jit else (ref.update, inj.update)
        for _ in range(5):
            g = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in params.items()}
            ur, sr = step_r(g, sr, params)
            ui, si = step_i(g, si, params)
            for k in params:
                a, b = np.asarray(ur[k]), np.asarray(ui[k])
                assert float(np.abs(a).max()) > 0
                if jit:
                    np.testing.assert_array_max_ulp(a, b, maxulp=2)
                else:
                    assert np.array_equal(a, b), (name, k)
    # the injected step size really is the one used: doubling it doubles SGD's step
    two = study.injected("sgd", jnp.float32(2 * lr))
    u2, _ = two.update(g, two.init(params), params)
    u1, _ = study.injected("sgd", jnp.float32(lr)).update(g, study.injected("sgd", lr).init(params), params)
    np.testing.assert_allclose(np.asarray(u2["v"]), 2 * np.asarray(u1["v"]), rtol=1e-6)


def test_adam_betas_reach_every_adam_based_arm():
    cfg = study.Config()
    for name in study.ADAM_BASED:
        assert cfg.options_for(name) == {"b1": 0.5, "b2": 0.999}
    assert cfg.options_for("sgd") == {} and cfg.options_for("nsgd_global") == {}
    # b1 changes the update of each arm (it is not silently ignored)
    params = {"v": jnp.ones((3,))}
    for name in study.ADAM_BASED:
        outs = []
        for b1 in (0.5, 0.9):
            opt = study.injected(name, 0.1, b1=b1, b2=0.999)
            s = opt.init(params)
            for g in (jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 1.0, -1.0])):
                u, s = opt.update({"v": g}, s, params)
            outs.append(np.asarray(u["v"]))
        assert not np.allclose(outs[0], outs[1]), name


# -- the vmapped grid equals each cell run alone ---------------------------------------------------
def _close(a, b, rel):
    """‖a − b‖ ≤ rel·‖b‖ (float32 rounding differs between the vmapped and the plain program)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.linalg.norm(a - b) <= rel * np.linalg.norm(b), (np.linalg.norm(a - b), np.linalg.norm(b))


@pytest.mark.parametrize("name", ["sgd", "nsgd_global", "nsgd_tensor", "adam", "ada_nsgda", "sgda_ada"])
def test_neurons_grid_cell_equals_single_run_and_numpy(name):
    # init_scale 1: O(1) gradients, so every optimizer moves the players within 40 steps.
    # The comparisons are on the displacement from the start, so they fail if nothing moved.
    game = Neurons.create(NeuronsSpec(init_scale=1.0), 0)
    steps, lrs = 40, np.array([1e-2, 3e-2, 1.0])
    lg, ld = np.meshgrid(lrs, lrs, indexing="ij")
    fn = study.grid_runner(game, lambda s: {}, name, Scheme(), steps, steps)
    keys = study.seed_keys(2)
    gen, disc, _ = fn(jnp.asarray(lg.ravel(), jnp.float32), jnp.asarray(ld.ravel(), jnp.float32), keys)
    for c, s in ((1, 1), (3, 0)):                    # cells (η_G, η_D) = (1e-2, 3e-2) and (3e-2, 1e-2)
        # alone: optim.make with the step size built in, the plain runner, no vmap
        opt_g, opt_d = optim.make(name, float(lg.ravel()[c])), optim.make(name, float(ld.ravel()[c]))
        g0, d0 = game.init(jax.random.split(keys[s])[0])
        state = init_state(game, opt_g, opt_d, g0, d0)
        final, _ = run_dynamics(make_step(game, opt_g, opt_d), state, jax.random.PRNGKey(9), steps, steps, lambda s: {})
        moved_g, moved_d = final.gen["v"] - g0["v"], final.disc["w"] - d0["w"]
        assert float(jnp.linalg.norm(moved_g)) > 1e-2 and float(jnp.linalg.norm(moved_d)) > 1e-2
        _close(gen["v"][c, s] - g0["v"], moved_g, 1e-3)
        _close(disc["w"][c, s] - d0["w"], moved_d, 1e-3)
        _close(disc["a"][c, s] - d0["a"], final.disc["a"] - d0["a"], 1e-3)
        # and the hand-written numpy loop (float64) agrees over this short horizon
        gn, dn = numpy_neurons_run(game, g0, d0, name, float(lg.ravel()[c]), float(ld.ravel()[c]), steps, steps)
        _close(gen["v"][c, s] - g0["v"], gn["v"] - np.asarray(g0["v"]), 1e-2)
        _close(disc["w"][c, s] - d0["w"], dn["w"] - np.asarray(d0["w"]), 1e-2)


def test_mixture_grid_cell_equals_single_run():
    spec = Mixture2DSpec(layout="grid", hidden=8, batch_size=16)
    game = Mixture2D.create(spec)
    steps = 20
    lg, ld = np.array([1e-3, 1e-1]), np.array([1e-2, 1e-3])
    fn = study.grid_runner(game, lambda s: {}, "adam", Scheme(), steps, steps, {"b1": 0.5, "b2": 0.999})
    keys = study.seed_keys(2)
    gen, _, _ = fn(jnp.asarray(lg, jnp.float32), jnp.asarray(ld, jnp.float32), keys)
    c, s = 1, 1
    opt_g, opt_d = optim.make("adam", float(lg[c]), b1=0.5), optim.make("adam", float(ld[c]), b1=0.5)
    k_init, k_run = jax.random.split(keys[s])
    g0, d0 = game.init(k_init)
    final, _ = run_dynamics(make_step(game, opt_g, opt_d), init_state(game, opt_g, opt_d, g0, d0), k_run,
                            steps, steps, lambda s: {})
    total = 0.0
    for k in final.gen:                              # displacements: this fails if nothing moved
        moved = final.gen[k] - g0[k]
        total += float(jnp.sum(moved ** 2))
        if float(jnp.linalg.norm(moved)) > 0:
            _close(gen[k][c, s] - g0[k], moved, 1e-3)
    assert math.sqrt(total) > 0.1                    # 20 Adam steps of 0.1 move the generator


# -- the protocol on hand-built arrays -----------------------------------------------------------------
def test_recovered_needs_both_late_and_final_records():
    pm = np.zeros((4, 3), bool)                      # R = 4 records, M = 3 modes
    pm[3] = [True, True, True]                        # all at T
    pm[2] = [True, False, True]                       # mode 1 missing at 0.8T
    assert study.recovered(pm, 2).tolist() == [True, False, True]
    assert not study.all_modes(pm, 2)
    pm[2, 1] = True
    assert study.all_modes(pm, 2)
    pm[3, 0] = False                                  # lost at T
    assert not study.all_modes(pm, 2)


def _tune(shares_counts, S, M=3, R=3):
    """(n, n, S, R, M) modes whose cell (i, j) has shares_counts[i][j] runs with all modes."""
    n = len(shares_counts)
    out = np.zeros((n, n, S, R, M), bool)
    for i in range(n):
        for j in range(n):
            out[i, j, : shares_counts[i][j]] = True
            out[i, j, shares_counts[i][j]:, :, 0] = True   # the rest recover one mode
    return out


def test_choose_cell_maximizes_all_modes_share_with_ties_by_mean_modes():
    tm = _tune([[0, 2], [2, 1]], S=4)
    tm[1, 0, 3, :, 1] = True                          # cell (1, 0): same share, more modes on average
    assert study.choose_cell(tm, 1) == (1, 0)
    assert study.choose_cell(_tune([[0, 0], [0, 0]], S=2), 1) == (0, 0)


def _fake_results(cfg, tune, evals):
    arms = {}
    for name in tune:
        t = tune[name]
        arms[name] = study.Arm(cfg.lrs_for(name)[: t.shape[0]], t, np.ones(t.shape[:4], bool),
                               np.full(t.shape[:4], np.nan), evals[name], np.ones(evals[name].shape[:2], bool),
                               np.full(evals[name].shape[:2], np.nan), study.choose_cell(t, 1), 1.0)
    res = study.Results(cfg, np.array([0, 80, 100]), 1, 3, arms)
    return study.analyse(res)


def test_verdicts_on_hand_built_protocol():
    cfg = study.Config(optimizers=("sgd", "nsgd_global"), sgd_lrs=(0.1, 1.0), nsgd_units=(0.1, 0.3),
                       tuning_seeds=16, heldout_seeds=40)
    S, E = 16, 40
    ev_good = np.zeros((E, 3, 3), bool)
    ev_good[:39] = True                               # 39 of 40 held-out nSGDA runs recover all
    ev_sgd = np.zeros((E, 3, 3), bool)
    ev_sgd[:, :, 0] = True                            # SGDA recovers one mode in every run
    res = _fake_results(cfg, {"sgd": _tune([[0, 0], [0, 0]], S), "nsgd_global": _tune([[3, 16], [5, 0]], S)},
                        {"sgd": ev_sgd, "nsgd_global": ev_good})
    rows = {r["optimizer"]: r for r in res.table}
    n = rows["nsgd_global"]
    assert n["chosen_cell"]["i"] == 0 and n["chosen_cell"]["j"] == 1 and n["tuning_share_chosen"] == 1.0
    assert n["all_modes_share"] == pytest.approx(39 / 40)
    assert (n["ci_low"], n["ci_high"]) == pytest.approx(claims.wilson(39, 40))
    assert n["tuning_seeds"] == list(range(16)) and n["heldout_seeds"] == list(range(1000, 1040))
    assert n["chosen_cell"]["lr_d_units"] == pytest.approx(0.3)
    assert n["chosen_at_edge"] is True and "edge of the pinned grid for sgd, nsgd_global" in study.summary(res)
    v = {x.name: x for x in res.verdicts}
    assert v["nsgd_global_recovers_all_modes"].outcome == "supported"          # Wilson low 0.87 > 0.8
    assert v["sgda_collapses_at_best_cell"].outcome == "supported"             # 0/40: high 0.088 < 0.2
    assert v["sgda_collapses_every_cell"].outcome == "supported"               # 0/16: high 0.194 < 0.2
    assert v["sgda_collapses_every_cell"].interval == pytest.approx(claims.wilson(0, 16))
    # descriptive: median over cells and share of cells are reported, not used
    assert rows["nsgd_global"]["share_cells_all_modes"] == pytest.approx(1 / 4)
    # one SGDA cell where 2 of 16 tuning runs recover all: the grid-wide bound is now inconclusive
    res = _fake_results(cfg, {"sgd": _tune([[0, 2], [0, 0]], S), "nsgd_global": _tune([[3, 16], [5, 0]], S)},
                        {"sgd": ev_sgd, "nsgd_global": ev_good})
    v = {x.name: x for x in res.verdicts}
    assert v["sgda_collapses_every_cell"].outcome == "inconclusive"
    assert v["sgda_collapses_every_cell"].value == pytest.approx(2 / 16)
    # nSGDA recovering all modes in only half of the held-out runs: not supported
    half = np.zeros((E, 3, 3), bool)
    half[:20] = True
    res = _fake_results(cfg, {"sgd": _tune([[0, 0], [0, 0]], S), "nsgd_global": _tune([[3, 16], [5, 0]], S)},
                        {"sgd": ev_sgd, "nsgd_global": half})
    assert {x.name: x for x in res.verdicts}["nsgd_global_recovers_all_modes"].outcome == "not supported"
    assert "NOT SUPPORTED" in study.summary(res)


def test_divergence_bound_marks_blow_ups_for_good():
    recs = {"finite": np.array([[True] * 5, [True] * 5, [True, True, False, True, True]]),
            "scale": np.array([[0.5, 1, 2, 3, 4], [0.5, 12.0, 2, 1, 1], [0.5, 1, 1, 1, 1]])}
    alive = study._alive(recs, 10.0)
    assert alive.tolist() == [[True] * 5, [True, False, False, False, False], [True, True, False, False, False]]
    recs["scale"][0, 3] = np.inf
    assert not study._alive(recs, 10.0)[0, -1]


# -- configuration errors -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"family": "moons"},
    {"optimizers": ("sgd", "sgdd")},
    {"optimizers": ()},
    {"optimizers": ("sgd", "sgd")},
    {"sgd_lrs": ()},
    {"sgd_lrs": (-1.0, 0.1)},
    {"nsgd_units": (float("inf"),)},
    {"adam_lrs": (0.1, 0.1)},
    {"n_lr": 0},
    {"tuning_seeds": 0},
    {"heldout_seeds": 0},
    {"tuning_seeds": 20, "heldout_offset": 10},       # held-out seeds would overlap tuning seeds
    {"steps": 250, "record_every": 100},
    {"steps": 100, "record_every": 100},              # 0.8 T falls before the first record
    {"late_fraction": 1.5},
    {"adam_b1": 1.0},
    {"adam_b2": -0.1},
    {"blowup": 1.0},
    {"nsgd_share_min": 1.2},
    {"family": "ring", "gradients": "exact"},
    {"gradients": "sometimes"},
    {"alphas": (1.0, 0.5)},
    {"probs": (0.5, 0.5, 0.5)},
    {"family": "neurons", "noise": 0.1},              # noisy data needs minibatch gradients
    {"sigma": "tanh"},
    {"k": 60, "alphas": tuple([1.0] * 60)},           # more modes than dimensions
    {"scheme": "extragradient"},
    {"init_scale": 0.0},
    {"family": "neurons", "hidden": 0},               # every family's options are checked
    {"std": -0.02},
])
def test_bad_config_raises_config_error(bad):
    with pytest.raises(ConfigError):
        study.Config(**bad)


def test_pinned_neurons_config_is_the_default_and_follows_the_protocol():
    from overparam.studies.config import from_mapping, load_sim

    pinned = from_mapping(study.Config, load_sim("sims/modes_neurons.toml"))
    default = study.Config()
    for f in ("family", "optimizers", "k", "m", "m_disc", "alphas", "adam_b1", "adam_b2", "late_fraction",
              "blowup", "nsgd_share_min", "sgd_share_max", "data_seed", "heldout_offset", "scheme"):
        assert getattr(pinned, f) == getattr(default, f), f
    assert pinned.resolved == default.resolved
    assert pinned.late_step == 0.8 * pinned.resolved["steps"]       # exactly 0.8 T
    assert pinned.m == pinned.m_disc == pinned.k                     # no spare neurons
    assert pinned.data_seed != 0                                     # a data seed no earlier run used
    assert not set(pinned.tuning) & set(pinned.heldout) and len(pinned.heldout) >= 30
    # nSGDA's smallest step travels several mode scales within T
    assert pinned.lrs_for("nsgd_global")[0] * pinned.resolved["steps"] >= 3 * max(pinned.alphas)
    np.testing.assert_allclose(pinned.lrs_for("nsgd_tensor"), np.array(pinned.resolved["nsgd_units"]) * 0.4)
    ring = from_mapping(study.Config, load_sim("sims/modes.toml"))
    assert ring.family == "ring" and len(ring.heldout) >= 30 and ring.adam_b1 == 0.5
    for quick in ("sims/modes_neurons.toml", "sims/modes.toml"):
        from_mapping(study.Config, load_sim(quick, quick=True))       # the quick tables are valid configs


def test_metric_shape_errors_and_cli_error(capsys):
    from overparam import simulate

    with pytest.raises(ConfigError):
        neuron_modes(jnp.zeros((4, 5)), jnp.eye(6)[:3], jnp.ones(3))
    with pytest.raises(ConfigError):
        mixture_coverage(jnp.zeros((10, 3)), jnp.zeros((8, 2)), 0.02)
    assert simulate.main(["modes", "--no-progress", "--family", "moons"]) == 2
    assert "family" in capsys.readouterr().err


# -- a tiny CLI run ------------------------------------------------------------------------------------
def test_cli_tiny_run(tmp_path, capsys):
    from overparam import simulate

    out = tmp_path / "modes"
    argv = ["modes", "--no-progress", "--family", "neurons", "--steps", "200", "--record-every", "40",
            "--tuning-seeds", "2", "--heldout-seeds", "3", "--n-lr", "2",
            "--optimizers", "sgd,nsgd_global", "--out-dir", str(out)]
    assert simulate.main(argv) == 0
    text = capsys.readouterr().out
    assert "modes study: family=neurons" in text and "verdicts (thresholds pinned" in text
    assert "sgda_collapses" not in text and "SGDA collapses for every step size" in text
    rows = (out / "cells.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * (4 * 2 + 3)           # per optimizer: 2x2 cells x 2 tuning seeds + 3 held-out
    header = rows[0].split(",")
    assert {"optimizer", "phase", "lr_g", "lr_d", "seed", "modes_recovered", "all_modes", "diverged"} <= set(header)
    for stem in ("heatmap_sgd", "heatmap_nsgd_global", "recovery_over_training"):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    res = json.loads((out / "results.json").read_text())
    for name in ("sgd", "nsgd_global"):
        r = res["optimizers"][name]
        assert r["tuning_seeds"] == [0, 1] and r["heldout_seeds"] == [1000, 1001, 1002]
        assert {"lr_g", "lr_d"} <= set(r["chosen_cell"]) and 0 <= r["ci_low"] <= r["all_modes_share"] <= r["ci_high"]
        # the held-out share is the CSV's held-out rows' share of all_modes
        idx = {h: i for i, h in enumerate(header)}
        held = [line.split(",") for line in rows[1:]]
        held = [f for f in held if f[idx["optimizer"]] == name and f[idx["phase"]] == "heldout"]
        assert len(held) == 3
        assert r["all_modes_share"] == pytest.approx(np.mean([f[idx["all_modes"]] == "True" for f in held]))
    assert {v["name"] for v in res["verdicts"]} == {"nsgd_global_recovers_all_modes", "sgda_collapses_at_best_cell",
                                                    "sgda_collapses_every_cell"}
    assert all(v["outcome"] in claims.OUTCOMES for v in res["verdicts"])
    assert (out / "manifest.json").exists()
    # rerun: every arm (tuning grid + held-out evaluation, one cell each) is read back, same numbers
    assert simulate.main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["optimizers"] == res["optimizers"] or all(
        again["optimizers"][n]["all_modes_share"] == res["optimizers"][n]["all_modes_share"] for n in res["optimizers"])
    assert "cells: reused 2 of 2, computed 0" in capsys.readouterr().out
