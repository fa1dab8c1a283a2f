"""The width-sweep study end to end: the theory's effects on a small sweep, outputs, resume, CLI."""
import csv
import json

import numpy as np
import pytest

from overparam import simulate
from overparam.errors import ConfigError
from overparam import compile_cache
from overparam.studies import width_sweep as ws

@pytest.fixture(autouse=True)
def _compile_cache_in_tmp(tmp_path, monkeypatch):
    """CLI calls enable the persistent compile cache: keep it in a temporary folder, then off."""
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "jax-cache"))
    yield
    compile_cache.disable()


SMALL = dict(widths=(2, 128), seeds=2, steps=600, record_every=20, m=4, d=4, n=16)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws")
    cfg = ws.Config(**SMALL, out_dir=str(out))
    res = ws.run(cfg, progress=False)
    ws.save(res)
    return cfg, res


def test_wide_model_converges_and_narrow_does_not(small):
    cfg, res = small
    narrow = [r for r in res.rows if r["width"] == 2]
    wide = [r for r in res.rows if r["width"] == 128]
    assert all(not r["converged"] and r["final_residual"] > 0.05 for r in narrow)
    assert all(r["converged"] and r["final_residual"] < 1e-4 for r in wide)
    assert not any(r["diverged"] for r in res.rows)
    # the wide model's measured rate is close to the linear prediction
    for r in wide:
        assert abs(r["measured_rate"] - r["predicted_rate"]) < 0.25 * (1 - r["predicted_rate"])
    assert res.verdicts["converged_below_feature_dim"] == 0
    assert res.verdicts["threshold_width_all_converge"] == 128


def test_same_config_gives_identical_numbers(small, tmp_path):
    cfg, res = small
    again = ws.run(ws.Config(**SMALL, out_dir=str(tmp_path)), progress=False)
    assert [r["final_residual"] for r in again.rows] == [r["final_residual"] for r in res.rows]


def test_outputs_are_tidy_and_complete(small):
    cfg, res = small
    out = cfg.out_dir
    with open(f"{out}/summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {"width", "seed", "final_residual", "measured_rate", "predicted_rate",
                               "movement", "converged", "diverged"} <= set(rows[0])
    with open(f"{out}/curves.csv") as fh:
        curves = list(csv.DictReader(fh))
    assert len(curves) == 4 * (600 // 20 + 1)
    man = json.load(open(f"{out}/manifest.json"))
    assert man["config"]["widths"] == [2, 128] and "jax" in man["versions"] and man["study"] == "width-sweep"
    for ext in ("png", "pdf"):
        assert (ws.Path(out) / f"width_sweep.{ext}").stat().st_size > 1000


def test_resume_skips_finished_cells(small, monkeypatch):
    cfg, res = small

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(ws, "run_width", boom)
    monkeypatch.setattr(ws, "run_widths", boom)
    again = ws.run(cfg, progress=False)
    assert [r["final_residual"] for r in again.rows] == [r["final_residual"] for r in res.rows]


def test_divergence_is_reported_not_averaged(tmp_path):
    cfg = ws.Config(widths=(64,), seeds=2, steps=200, record_every=20, m=4, d=4, n=16, mu=200.0, eta=1.0,
                    out_dir=str(tmp_path))
    res = ws.run(cfg, progress=False)
    assert all(r["diverged"] and not r["converged"] for r in res.rows)
    assert all(np.isnan(r["final_residual"]) for r in res.rows)
    assert "diverged" in ws.summary(res)


def test_user_data_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 4)) * 0.3
    np.save(tmp_path / "x.npy", x)
    cfg = ws.Config(widths=(64,), seeds=1, steps=200, record_every=20, m=4, d=4, n=16,
                    data=str(tmp_path / "x.npy"), out_dir=str(tmp_path / "o"))
    assert ws.load_data(cfg).shape == (50, 4)
    with pytest.raises(ConfigError, match="expected \\(N, m\\)"):
        ws.load_data(ws.Config(m=5, data=str(tmp_path / "x.npy")))
    with pytest.raises(ConfigError, match="not found"):
        ws.load_data(ws.Config(data=str(tmp_path / "missing.npy")))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="could not read"):
        ws.load_data(ws.Config(data=str(tmp_path / "bad.npy")))


@pytest.mark.parametrize("args, match", [
    (["--widths", "0,8"], "width"), (["--widths", "-4"], "width"), (["--phi", "swish"], "phi"),
    (["--optimizer", "lion"], "optimizer"), (["--mu", "nan"], "finite"), (["--eta", "inf"], "finite"),
    (["--steps", "100", "--record-every", "7"], "multiple"), (["--bogus", "1"], None),
])
def test_cli_bad_input_gives_one_clear_error(args, match, capsys, tmp_path):
    if match is None:
        with pytest.raises(SystemExit):
            simulate.main(["width-sweep", *args])
        return
    code = simulate.main(["width-sweep", *args, "--out-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_small_run_and_toml(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('widths = [64]\nseeds = 1\nsteps = 100\nrecord_every = 10\nm = 4\nd = 4\nn = 8\n')
    code = simulate.main(["width-sweep", "--config", str(toml), "--steps", "200", "--out-dir", str(tmp_path / "o"),
                          "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "width sweep" in out and "steps=200" in out
    assert (tmp_path / "o" / "summary.csv").exists()


# -- one program per sweep: same instances, same numbers ------------------------------------------
import dataclasses  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from overparam.games.mean_matching import (MeanMatching, PaddedMeanMatching, jjt_eigenvalues,  # noqa: E402
                                           relu_mean_hidden, teacher_data)


def _old_draws(cfg, k, data):
    """Reference: the per-width program's draws as the study made them before (one jit per width)."""
    def one(key, X):
        kg, ki, kr = jax.random.split(key, 3)
        game = MeanMatching.create(cfg.spec(k), kg, X)
        gen0, _ = game.init(ki)
        return game.V, game.Z, gen0, game.target(), game.F, kr

    base = jax.random.PRNGKey(cfg.seed)
    keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, k), s) for s in range(cfg.seeds)])
    return jax.device_get(jax.jit(jax.vmap(one, in_axes=(0, None)))(keys, jnp.asarray(data)))


@pytest.mark.parametrize("over", [
    dict(widths=(2, 24, 1024)),                     # the default sweep's shapes (its widest and two small)
    dict(widths=(3, 130), seeds=2, m=4, d=3, n=16, phi="tanh", n_data=50, teacher_width=64, seed=7),
])
def test_sweep_draws_are_bit_identical_to_the_per_width_draws(over):
    cfg = ws.Config(**over)
    data = ws.load_data(cfg)
    old_x = np.asarray(teacher_data(jax.random.PRNGKey(cfg.data_seed), cfg.m, cfg.d, cfg.n_data,
                                    width=cfg.teacher_width, phi=cfg.phi, depth=cfg.depth))
    assert np.array_equal(data, old_x)  # the one-program teacher equals the op-by-op teacher bit for bit
    inst = ws.draws(cfg, cfg.widths, data)
    for k in cfg.widths:
        V, Z, gen0, xbar, _, kr = _old_draws(cfg, k, data)
        assert np.array_equal(inst[k]["V"], V) and np.array_equal(inst[k]["Z"], Z)
        assert np.array_equal(inst[k]["W"], gen0["W"]) and np.array_equal(inst[k]["xbar"], xbar)
        assert np.array_equal(inst[k]["kr"], kr)


@pytest.mark.slow
def test_random_feature_and_depth2_draws_match():
    cfg = ws.Config(widths=(33,), seeds=2, m=4, d=3, n=8, disc="random_features", p=6, depth=2,
                    n_data=20, teacher_width=16)
    data = ws.load_data(cfg)
    inst = ws.draws(cfg, cfg.widths, data)
    for k in cfg.widths:
        V, Z, gen0, xbar, F, _ = _old_draws(cfg, k, data)
        for a, b in ((inst[k]["V"], V), (inst[k]["Z"], Z), (inst[k]["F"], F), (inst[k]["W1"], gen0["W1"]),
                     (inst[k]["W2"], gen0["W2"])):
            assert np.array_equal(a, b)
        np.testing.assert_allclose(inst[k]["xbar"], xbar, rtol=1e-6, atol=1e-7)  # same formula, own fusion


TINY = dict(widths=(3, 40, 64), seeds=2, steps=200, record_every=20, m=4, d=4, n=16, x64=True)


def _curves(out, k):
    return np.array([[c["residual"], c["disc_norm"]] for c in out[k][1]])


@pytest.fixture(scope="module")
def three_routes():
    """float64: fast path (closed form, unit blocks), buckets + autodiff + optax, one program per width."""
    cfg = ws.Config(**TINY)
    with jax.enable_x64(True):
        data = ws.load_data(cfg)
        fast = ws.run_widths(cfg, cfg.widths, data)
        auto = ws.run_widths(dataclasses.replace(cfg, fast_grad=False), cfg.widths, data)
        ref = {k: ws.run_width_reference(cfg, k, data) for k in cfg.widths}
    return cfg, fast, auto, ref


def test_fast_path_equals_autodiff_equals_per_width_reference(three_routes):
    cfg, fast, auto, ref = three_routes
    assert ws._fast_path(cfg) and not ws._fast_path(dataclasses.replace(cfg, fast_grad=False))
    # k = 3 (below m) has chaotic dynamics where rounding grows; checked for its first 100 steps
    for k in cfg.widths:
        a, b, c = _curves(fast, k), _curves(auto, k), _curves(ref, k)
        sel = slice(None) if k > 3 else slice(0, 6 * cfg.seeds)
        # absolute floor: rounding of ‖r_0‖ (~1e-16) stays while the residual decays
        np.testing.assert_allclose(a[sel], c[sel], rtol=1e-8, atol=1e-13)
        np.testing.assert_allclose(b[sel], c[sel], rtol=1e-8, atol=1e-13)
        for rf, ra, rr in zip(fast[k][0], auto[k][0], ref[k][0]):
            assert set(rf) == set(rr)
            if k > 3:
                np.testing.assert_allclose([rf["movement"], ra["movement"]], rr["movement"], rtol=1e-10)
                assert rf["converged"] == rr["converged"]
            # J0 J0^T spectrum: host closed form vs autodiff in the program
            np.testing.assert_allclose(rf["lambda_min"], rr["lambda_min"], atol=1e-10)
            np.testing.assert_allclose(rf["lambda_max"], rr["lambda_max"], rtol=1e-10)
            np.testing.assert_allclose(rf["predicted_rate"], rr["predicted_rate"], rtol=1e-10)


@pytest.mark.parametrize("over", [
    dict(optimizer="adam", mu=0.05, eta=0.05),
    pytest.param(dict(scheme="alternating", phi="softplus"), marks=pytest.mark.slow),
    pytest.param(dict(train_v=True, phi="gelu"), marks=pytest.mark.slow),
    pytest.param(dict(depth=2, phi="tanh", mu=0.2), marks=pytest.mark.slow),
    pytest.param(dict(disc="random_features", p=6), marks=pytest.mark.slow),
])
def test_general_bucket_route_equals_per_width_reference(over):
    cfg = ws.Config(**{**TINY, "widths": (8, 40), "steps": 100, **over})
    assert not ws._fast_path(cfg)
    with jax.enable_x64(True):
        data = ws.load_data(cfg)
        got = ws.run_widths(cfg, cfg.widths, data)
        for k in cfg.widths:
            ref = ws.run_width_reference(cfg, k, data)
            a, c = _curves(got, k), _curves({k: ref}, k)
            np.testing.assert_allclose(a, c, rtol=1e-7, atol=1e-12)
            np.testing.assert_allclose([r["movement"] for r in got[k][0]], [r["movement"] for r in ref[0]], rtol=1e-9)
            np.testing.assert_allclose([r["lambda_max"] for r in got[k][0]], [r["lambda_max"] for r in ref[0]],
                                       rtol=1e-9)


def test_relu_closed_form_gradient_equals_autodiff():
    rng = np.random.default_rng(0)
    W, Z = jnp.asarray(rng.normal(size=(5, 37))), jnp.asarray(rng.normal(size=(11, 5)))
    g = jnp.asarray(rng.normal(size=37))
    with jax.enable_x64(True):
        W, Z, g = W.astype(jnp.float64), Z.astype(jnp.float64), g.astype(jnp.float64)
        plain = lambda W: jnp.dot(g, jnp.mean(jax.nn.relu(Z @ W), axis=0))
        fast = lambda W: jnp.dot(g, relu_mean_hidden(W, Z))
        np.testing.assert_allclose(fast(W), plain(W), rtol=1e-14)
        np.testing.assert_allclose(jax.grad(fast)(W), jax.grad(plain)(W), rtol=1e-13, atol=1e-15)
        # and a finite-difference check of the closed form itself
        E = jnp.zeros_like(W).at[2, 7].set(1e-6)
        fd = (fast(W + E) - fast(W - E)) / 2e-6
        np.testing.assert_allclose(jax.grad(fast)(W)[2, 7], fd, rtol=1e-6)


@pytest.mark.parametrize("kw", [dict(phi="softplus"), dict(phi="softplus", train_v=True), dict(depth=2, phi="softplus"),
                                dict(disc="random_features", phi="gelu")])
def test_padded_units_are_exactly_zero_and_inert(kw):
    """Same value as the unpadded game; every gradient entry of a padded unit is exactly 0."""
    from overparam.games.mean_matching import MeanMatchingSpec

    k, K, m, d = 5, 16, 3, 4
    spec = MeanMatchingSpec(m=m, d=d, k=k, n=7, **kw)
    rng = np.random.default_rng(1)
    game = MeanMatching.create(spec, jax.random.PRNGKey(0), rng.normal(size=(9, m)).astype(np.float32))
    gen, _ = game.init(jax.random.PRNGKey(1))
    disc = {"d": jnp.asarray(rng.normal(size=spec.feature_dim), jnp.float32)}
    pad = lambda a, axis: jnp.pad(a, [(0, K - a.shape[i]) if i == axis else (0, 0) for i in range(a.ndim)])
    Vp = pad(game.V, 1)
    pg = {"W": pad(gen["W"].T, 1)} if spec.depth == 1 else {"W1": pad(gen["W1"].T, 1),
                                                             "W2": pad(pad(gen["W2"].T, 0), 1)}
    if spec.train_v:
        pg["V"] = Vp
    padded = PaddedMeanMatching(dataclasses.replace(spec, k=K), Vp, game.Z, game.X, game.target(),
                                jnp.float32(np.sqrt(k)), (jnp.arange(K) < k).astype(jnp.float32), game.F)
    batch = game.sample_batch(None)
    np.testing.assert_allclose(padded.value(pg, disc, None), game.value(gen, disc, batch), rtol=1e-5)
    grads = jax.grad(padded.value)(pg, disc, None)
    assert float(jnp.max(jnp.abs(grads["W" if spec.depth == 1 else "W1"][:, k:]))) == 0.0
    if spec.depth == 2:
        assert float(jnp.max(jnp.abs(grads["W2"][k:, :]))) == 0.0 and float(jnp.max(jnp.abs(grads["W2"][:, k:]))) == 0.0
    if spec.train_v:
        assert float(jnp.max(jnp.abs(grads["V"][:, k:]))) == 0.0
    ref = jax.grad(game.value)(gen, disc, batch)
    key = "W" if spec.depth == 1 else "W1"
    np.testing.assert_allclose(grads[key][:, :k], ref[key].T, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 8, 20])
def test_host_jjt_spectrum_equals_the_game_closed_form(k):
    from overparam.games.mean_matching import MeanMatchingSpec

    spec = MeanMatchingSpec(m=6, d=4, k=k, n=10)
    with jax.enable_x64(True):
        game = MeanMatching.create(spec, jax.random.PRNGKey(k), np.zeros((3, 6)))
        gen, _ = game.init(jax.random.PRNGKey(k + 1))
        want = np.linalg.eigvalsh(np.asarray(game.jjt_closed_form(gen)))
    got = jjt_eigenvalues(game.V, game.Z, gen["W"], "relu")
    np.testing.assert_allclose(got, want, atol=1e-12 * max(want.max(), 1))
    if k < 6:  # rank <= k: the structural zeros are exact
        assert np.count_nonzero(got[: 6 - k]) == 0


def test_bucket_sizes_and_balanced_split():
    assert [ws.bucket_size(k, 32) for k in (1, 2, 32, 33, 64, 65, 1024, 1500)] == [32, 32, 32, 64, 64, 128, 1024, 2048]
    groups = ws._split([(32, "a"), (1024, "b"), (512, "c"), (512, "d")], 2)
    loads = sorted(sum({"a": 32, "b": 1024, "c": 512, "d": 512}[x] for x in g) for g in groups)
    assert loads == [1024, 1056]
    with pytest.raises(ConfigError, match="devices"):
        ws.Config(devices=-1)
    with pytest.raises(ConfigError, match="bucket_min"):
        ws.Config(bucket_min=0)


def test_split_over_two_local_devices_gives_the_same_rows(tmp_path):
    """Subprocess with two host devices: devices=2 runs two programs concurrently, same numbers."""
    import os
    import subprocess
    import sys

    code = ("import json, jax; from overparam.studies import width_sweep as ws\n"
            "assert len(jax.local_devices()) == 2\n"
            "out = {}\n"
            "for dv in (1, 2):\n"
            "    c = ws.Config(widths=(4, 40, 64), seeds=2, steps=60, record_every=20, m=4, d=4, n=8, devices=dv)\n"
            "    r = ws.run_widths(c, c.widths, ws.load_data(c))\n"
            "    out[dv] = [[row['final_residual'], row['movement']] for k in c.widths for row in r[k][0]]\n"
            "print(json.dumps(out))\n")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["2"], out["1"], rtol=1e-6)
