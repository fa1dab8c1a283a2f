"""Multimodal games, mode metrics and the modes study (issue 4, item 3)."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from overparam import optim
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


# -- the vmapped grid equals each cell run alone ---------------------------------------------------
def _close(a, b, rel):
    """‖a − b‖ ≤ rel·‖b‖ (float32 rounding differs between the vmapped and the plain program)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.linalg.norm(a - b) <= rel * np.linalg.norm(b), (np.linalg.norm(a - b), np.linalg.norm(b))


@pytest.mark.parametrize("name", ["sgd", "nsgd_global", "nsgd_tensor", "adam", "ada_nsgda", "sgda_ada"])
def test_neurons_grid_cell_equals_single_run_and_numpy(name):
    # init_scale 1: O(1) gradients, so every optimizer moves the players within 40 steps
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
        assert float(jnp.linalg.norm(final.gen["v"] - g0["v"])) > 1e-2
        assert float(jnp.linalg.norm(final.disc["w"] - d0["w"])) > 1e-2
        _close(gen["v"][c, s], final.gen["v"], 1e-4)
        _close(disc["w"][c, s], final.disc["w"], 1e-4)
        _close(disc["a"][c, s], final.disc["a"], 1e-4)
        # and the hand-written numpy loop (float64) agrees over this short horizon
        gn, dn = numpy_neurons_run(game, g0, d0, name, float(lg.ravel()[c]), float(ld.ravel()[c]), steps, steps)
        _close(gen["v"][c, s], gn["v"], 1e-3)
        _close(disc["w"][c, s], dn["w"], 1e-3)
        _close(disc["a"][c, s], dn["a"], 1e-3)


def test_mixture_grid_cell_equals_single_run():
    spec = Mixture2DSpec(layout="grid", hidden=8, batch_size=16)
    game = Mixture2D.create(spec)
    steps = 20
    lg, ld = np.array([1e-3, 1e-1]), np.array([1e-2, 1e-3])
    fn = study.grid_runner(game, lambda s: {}, "adam", Scheme(), steps, steps)
    keys = study.seed_keys(2)
    gen, _, _ = fn(jnp.asarray(lg, jnp.float32), jnp.asarray(ld, jnp.float32), keys)
    c, s = 1, 1
    opt_g, opt_d = optim.make("adam", float(lg[c])), optim.make("adam", float(ld[c]))
    k_init, k_run = jax.random.split(keys[s])
    g0, d0 = game.init(k_init)
    final, _ = run_dynamics(make_step(game, opt_g, opt_d), init_state(game, opt_g, opt_d, g0, d0), k_run,
                            steps, steps, lambda s: {})
    for k in final.gen:
        _close(gen[k][c, s], final.gen[k], 1e-4)


# -- analysis on hand-built results ------------------------------------------------------------------
def _fake_results(sgd_final, nsgd_final, n_modes=3):
    """Results whose final per-run mode counts are the given (n, n, S) integer arrays."""
    def per_mode(counts):
        pm = np.zeros((*counts.shape, 2, n_modes), bool)
        for idx in np.ndindex(*counts.shape):
            pm[idx][-1, : counts[idx]] = True
        return pm

    cfg = study.Config(n_lr=sgd_final.shape[0], seeds=sgd_final.shape[2], optimizers=("sgd", "nsgd_global"))
    shape = sgd_final.shape
    res = study.Results(cfg, cfg.lrs, np.array([0, 1]), n_modes,
                        {"sgd": per_mode(sgd_final), "nsgd_global": per_mode(nsgd_final)},
                        {k: np.full((*shape, 2), np.nan) for k in ("sgd", "nsgd_global")},
                        {k: np.ones(shape, bool) for k in ("sgd", "nsgd_global")}, {"sgd": 1.0, "nsgd_global": 1.0})
    res.table = study.summary_table(res)
    res.claim = study.claim(res)
    return res


def test_best_median_and_claim_on_hand_built_results():
    sgd = np.zeros((3, 3, 2), int)
    sgd[2, 1] = [1, 2]                                   # best SGDA cell: 1.5 modes at (i, j) = (2, 1)
    nsgd = np.full((3, 3, 2), 3)
    nsgd[0] = 0                                          # 6 of 9 cells recover all: median 3
    res = _fake_results(sgd, nsgd)
    rows = {r["optimizer"]: r for r in res.table}
    assert rows["sgd"]["best_modes"] == 1.5 and study.best_cell(res, "sgd") == (2, 1)
    assert rows["sgd"]["best_lr_g"] == pytest.approx(res.lrs[2]) and rows["sgd"]["median_modes"] == 0
    assert rows["nsgd_global"]["median_modes"] == 3 and rows["nsgd_global"]["cells_all_modes"] == pytest.approx(6 / 9)
    assert res.claim["sgda_best_below_nsgd_global_median"] is True
    assert res.claim["sgda_collapses_everywhere"] is True
    assert "claim holds for nsgd_global" in res.claim["statement"]
    # the same SGDA against an nSGDA whose median cell is worse: the claim must fail
    nsgd[1:] = 1
    res = _fake_results(sgd, nsgd)
    assert res.claim["sgda_best_below_nsgd_global_median"] is False
    assert "does not hold for nsgd_global" in res.claim["statement"]
    sgd[0, 0] = [3, 0]                                   # one SGDA run recovers all modes
    assert _fake_results(sgd, nsgd).claim["sgda_collapses_everywhere"] is False
    i, j = study.typical_cell(res, "nsgd_global")
    assert study.cell_means(res, "nsgd_global")[i, j] == 1.0


# -- configuration errors -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"family": "moons"},
    {"optimizers": ("sgd", "sgdd")},
    {"optimizers": ()},
    {"optimizers": ("sgd", "sgd")},
    {"lr_min": 1.0, "lr_max": 0.1},
    {"lr_min": -1.0},
    {"lr_max": float("inf")},
    {"n_lr": 0},
    {"seeds": 0},
    {"steps": 250, "record_every": 100},
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
    argv = ["modes", "--no-progress", "--family", "neurons", "--steps", "100", "--record-every", "50",
            "--seeds", "2", "--n-lr", "3",
            "--optimizers", "sgd,nsgd_global", "--out-dir", str(out)]
    assert simulate.main(argv) == 0
    text = capsys.readouterr().out
    assert "modes study: family=neurons" in text and "SGDA's best cell" in text
    rows = (out / "cells.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 9 * 2
    header = rows[0].split(",")
    assert {"optimizer", "lr_g", "lr_d", "seed", "modes_recovered"} <= set(header)
    for stem in ("heatmap_sgd", "heatmap_nsgd_global", "recovery_over_training"):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    res = json.loads((out / "results.json").read_text())
    assert res["resolved"]["steps"] == 100 and "statement" in res["claim"]
    assert {r["optimizer"] for r in res["table"]} == {"sgd", "nsgd_global"}
    # the table's best cell is the maximum of the per-run CSV averaged over seeds
    idx = {h: i for i, h in enumerate(header)}
    sums: dict = {}
    for line in rows[1:]:
        f = line.split(",")
        key = (f[idx["optimizer"]], f[idx["lr_g"]], f[idx["lr_d"]])
        sums.setdefault(key, []).append(int(f[idx["modes_recovered"]]))
    for r in res["table"]:
        best = max(np.mean(v) for k, v in sums.items() if k[0] == r["optimizer"])
        assert r["best_modes"] == pytest.approx(best)
    traj = (out / "recovery_over_training.csv").read_text().splitlines()
    assert len(traj) == 1 + 2 * 3 * 3    # 2 highlighted cells x 3 records x 3 modes
    assert (out / "manifest.json").exists()
    # rerun: every optimizer is read back from out_dir/cells, same table
    assert simulate.main(argv) == 0
    assert json.loads((out / "results.json").read_text())["table"][0]["best_modes"] == res["table"][0]["best_modes"]
