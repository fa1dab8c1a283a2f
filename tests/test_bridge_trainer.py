"""Conv-GAN trainer: the step is dynamics.make_step on the conv game and equals a hand-written
reference of every scheme, exact resume (also with extragradient and spectral norm), checkpoints
(last/best, corrupt), scores committed with checkpoints, damaged logs, custom optimizers and
initial weights, the singular-value monitor, NaN handling, batches from (seed, step), and two
forced host devices giving the numbers of one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optax  # noqa: E402

from overparam import optim  # noqa: E402
from overparam.bridge import checkpoints as ck_mod, losses, nets, trainer as tr_mod  # noqa: E402
from overparam.bridge.trainer import TrainConfig, Trainer  # noqa: E402
from overparam.errors import ConfigError  # noqa: E402

# orbax's reader threads can outlive a failed restore and complain about a closed event loop
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

DATA = np.tanh(np.random.default_rng(0).normal(size=(32, 8, 8, 1))).astype(np.float32)
BASE = dict(arch="stoch_dcgan", width=1 / 32, latent_dim=8, batch_size=8, steps=8, steps_per_call=4, log_every=2,
            ckpt_every=4, n_disc=2, fixed_latents=True, latent_noise_var=0.5, ema_decay=0.9)


def cfg(out_dir="", **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(out_dir), **{**BASE, **kw})


def score(trainer: Trainer) -> float:
    return float(abs(trainer.step - 4))  # best at step 4


def leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    t = Trainer(cfg(out), DATA, score_fn=score)
    t.train(progress=False)
    return t


# -- resume ---------------------------------------------------------------------------------------
def test_resume_equals_uninterrupted(uninterrupted, tmp_path):
    a = uninterrupted
    b = Trainer(cfg(tmp_path), DATA, score_fn=score)
    s = b.train(stop_at=4, progress=False)
    assert s["status"] == "stopped" and s["step"] == 4
    # a run killed after writing its log but before the next checkpoint: the stale row goes
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 6, "finite": True, "loss_d": 123.0}) + "\n")
    del b
    c = Trainer(cfg(tmp_path), DATA, score_fn=score)
    assert c.resumed_from == 4 and c.step == 4
    s = c.train(progress=False)
    assert s["status"] == "completed" and s["step"] == 8
    for x, y in zip(leaves(a.state), leaves(c.state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert json.dumps(a.records) == json.dumps(c.records)
    assert (Path(a.config.out_dir) / "log.jsonl").read_text() == (tmp_path / "log.jsonl").read_text()
    assert (Path(a.config.out_dir) / "log.csv").read_text() == (tmp_path / "log.csv").read_text()
    assert a.best == c.best == {"step": 4, "score": 0.0}
    for run in (Path(a.config.out_dir), tmp_path):
        assert sorted(p.name for p in (run / "checkpoints" / "last").iterdir() if p.name.isdigit()) == ["8"]
        assert sorted(p.name for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit()) == ["4"]


def test_logs_hold_losses_grad_norms_and_top3_singular_values(uninterrupted):
    t = uninterrupted
    out = Path(t.config.out_dir)
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4, 6, 8]
    csv_lines = (out / "log.csv").read_text().splitlines()
    header = csv_lines[0].split(",")
    assert len(csv_lines) == 1 + len(rows)
    for col in ("loss_d", "loss_g", "grad_norm_d", "grad_norm_g", "d_real", "d_fake"):
        assert col in header and all(np.isfinite(r[col]) for r in rows[1:])
    assert all(r["grad_norm_d"] > 0 and r["grad_norm_g"] > 0 for r in rows[1:])
    last = rows[-1]
    for player, params in (("G", t.state.gen), ("D", t.state.disc)):
        for name, kernel in nets.kernels(params):
            layer = f"{player}/{name.removesuffix('/kernel')}"
            ref = np.linalg.svd(np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1]), compute_uv=False)
            for j in range(min(3, ref.size)):
                assert f"{layer}/sv{j}" in header
                np.testing.assert_allclose(last[f"{layer}/sv{j}"], ref[j], rtol=1e-4)
    summary = json.loads((out / "trainer.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 8 and summary["diverged_at"] is None


@pytest.mark.parametrize("which", ["every file", "array data", "missing arrays", "flipped bytes"])
def test_corrupt_checkpoint_is_a_config_error(uninterrupted, tmp_path, which):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted.config.out_dir, run)
    step_dir = run / "checkpoints" / "last" / "8"
    if which == "every file":
        files = [p for p in step_dir.rglob("*") if p.is_file()]
    else:  # the array payload only; the JSON record stays readable
        files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        if which == "missing arrays":
            p.unlink()
        elif which == "flipped bytes":  # same size, so only a checksum can tell
            b = bytearray(p.read_bytes())
            b[len(b) // 2] ^= 0x01
            p.write_bytes(bytes(b))
        else:
            p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2] + b"\x00garbage")
    with pytest.raises(ConfigError, match="corrupt") as err:
        Trainer(cfg(run), DATA)
    # the advice names what to do, and no option that does not exist on the command line
    assert "resume=false" not in str(err.value)
    assert f"delete the folder {run / 'checkpoints'}" in str(err.value) and "--out-dir" in str(err.value)


def test_resume_guards(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted.config.out_dir, run)
    with pytest.raises(ConfigError, match="resume=true"):
        Trainer(cfg(run, resume=False), DATA)
    with pytest.raises(ConfigError, match="different data"):
        Trainer(cfg(run), DATA[::-1].copy())
    with pytest.raises(ConfigError, match="different config"):
        Trainer(cfg(run, lr_d=2e-4), DATA)


def test_nan_stops_the_run_cleanly(tmp_path):
    t = Trainer(cfg(tmp_path), DATA)
    t.train(stop_at=4, progress=False)
    # an overflowed discriminator weight: the next steps produce NaN/Inf everywhere
    poisoned = jax.tree_util.tree_map(lambda x: x * jnp.nan, t.state.disc)
    t.state = t.state._replace(disc=poisoned)
    s = t.train(progress=False)  # no exception
    assert s["status"] == "diverged" and s["diverged_at"] == 6
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and rows[-1]["finite"] is False
    assert json.loads((tmp_path / "trainer.json").read_text())["status"] == "diverged"
    ckpts = [p.name for p in (tmp_path / "checkpoints" / "last").iterdir() if p.name.isdigit()]
    assert ckpts == ["4"]  # nothing non-finite was checkpointed
    assert t.train(progress=False)["status"] == "diverged"  # stays stopped


def test_sampling(uninterrupted):
    t = uninterrupted
    x = t.sample(5, seed=1, truncation=0.5)
    assert x.shape == (5, 8, 8, 1) and np.all(np.abs(x) <= 1)
    z = t.latents[:3]
    np.testing.assert_array_equal(t.generate(z), t.generate(z))
    assert np.max(np.abs(t.generate(z, ema=True) - t.generate(z, ema=False))) > 0


# -- scheme semantics: the conv step against a hand-written reference --------------------------------
def numpy_state(gan, c, opt_g, opt_d, data):
    """A ConvState with numpy-drawn weights (no compile of flax's random initializers)."""
    rng = np.random.default_rng(1)

    def params(net, x):
        v = jax.eval_shape(lambda: net.init({"params": jax.random.PRNGKey(0)}, x, train=False))
        assert set(v) == {"params"}  # stateless: no SN vectors, no BN averages
        return jax.tree_util.tree_map(
            lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]) if len(s.shape) > 1
                                                                     else 10.0), jnp.float32), v["params"])

    gen = params(gan.G, jnp.zeros((2, gan.latent_dim)))
    disc = params(gan.D, jnp.zeros((2, 8, 8, 1)))
    game = tr_mod.ConvGame.from_config(gan, c, data)
    init = jax.jit(lambda g, d: tr_mod.initial_state(game, c, opt_g, opt_d, g, d, {}, {}))
    return init(gen, disc)


def reference_step(gan, c, data, gen, disc, opt_g, opt_d, og, od):
    """One step of c.scheme written out from the losses module (not from ConvGame or dynamics):
    L_D = d_loss(D(x), D(sg G(z))) + penalties, L_G = g_loss(D(G(z))) + ortho; keys as documented."""
    def G(p, z):
        return gan.G.apply({"params": p}, z, train=True)

    def D(p, x):
        return gan.D.apply({"params": p}, x, train=True)

    def L_D(g, d, b):
        fake = jax.lax.stop_gradient(G(g, b.z))
        m = b.real.shape[0]
        logits = D(d, jnp.concatenate([fake, b.real]))
        total = losses.d_loss(c.loss, logits[m:], logits[:m])
        d_fn = lambda x: D(d, x)  # noqa: E731
        if c.gp:
            total = total + losses.gradient_penalty(d_fn, b.real, fake, b.key, c.gp)
        if c.r1:
            total = total + losses.r1_penalty(d_fn, b.real, c.r1)
        return total

    def L_G(g, d, b):
        total = losses.g_loss(c.loss, D(d, G(g, b.z)))
        return total + (losses.orthogonal_penalty(g, c.ortho_g) if c.ortho_g else 0.0)

    def batch(k):
        return tr_mod.draw_batch(k, data, None, c.batch_size, gan.latent_dim)

    def upd(opt, grads, state, params):
        u, state = opt.update(grads, state, params)
        return optax.apply_updates(params, u), state

    key = jax.random.fold_in(tr_mod.stream_key(c.seed), 0)
    gG, gD = jax.grad(L_G, 0), jax.grad(L_D, 1)
    if c.scheme == "simultaneous":
        b = batch(key)
        return upd(opt_g, gG(gen, disc, b), og, gen)[0], upd(opt_d, gD(gen, disc, b), od, disc)[0]
    if c.scheme == "alternating":
        kg, kd = jax.random.split(key)
        d, g = disc, gen
        if c.order == "g_first":
            g, og = upd(opt_g, gG(gen, disc, batch(kg)), og, gen)
        for k in jax.random.split(kd, c.n_disc):
            d, od = upd(opt_d, gD(g, d, batch(k)), od, d)
        if c.order == "d_first":
            g, og = upd(opt_g, gG(gen, d, batch(kg)), og, gen)
        return g, d
    k1, k2 = jax.random.split(key)
    if c.scheme == "extragradient":
        b1 = batch(k1)
        g0, d0 = gG(gen, disc, b1), gD(gen, disc, b1)
    else:  # past extragradient: the warm-start gradients at step 0
        b0 = batch(jax.random.fold_in(jax.random.PRNGKey(c.seed), 3))
        g0, d0 = gG(gen, disc, b0), gD(gen, disc, b0)
    gh, dh = upd(opt_g, g0, og, gen)[0], upd(opt_d, d0, od, disc)[0]
    b2 = batch(k2)
    return upd(opt_g, gG(gh, dh, b2), og, gen)[0], upd(opt_d, gD(gh, dh, b2), od, disc)[0]


@pytest.mark.parametrize("kw", [
    pytest.param(dict(scheme="simultaneous", n_disc=1, loss="hinge", r1=1.0), marks=pytest.mark.slow),
    pytest.param(dict(scheme="alternating", order="g_first", n_disc=2, loss="wasserstein", gp=10.0),
                 marks=pytest.mark.slow),
    dict(scheme="alternating", order="d_first", n_disc=1, loss="saturating", ortho_g=1e-2, opt_g="nsgd",
         lr_g=1e-2, opt_d="sgd", lr_d=1e-2),
    dict(scheme="extragradient", n_disc=1, loss="hinge", opt_g="sgd", lr_g=1e-2, opt_d="sgd", lr_d=1e-2),
    dict(scheme="past_extragradient", n_disc=1, loss="non_saturating"),
])
def test_one_step_equals_a_hand_written_reference(kw):
    """Stateless networks (no SN, no BN): the trainer's step (dynamics.make_step on the conv game)
    equals the scheme written out by hand; the EMA moves to decay*theta_0 + (1-decay)*theta_1."""
    c = cfg(**{**kw, "sn_d": False, "fixed_latents": False, "latent_noise_var": 0.0})
    gan = nets.make_gan(c.arch, 8, 1, c.width, c.latent_dim, c.sn_d, c.sn_g)
    opt_g, opt_d = tr_mod.make_optimizers(c)
    data = jnp.asarray(DATA)
    state = numpy_state(gan, c, opt_g, opt_d, data)
    ours = jax.jit(tr_mod.make_train_step(gan, c, opt_g, opt_d, data, None))(state, jax.random.PRNGKey(99))
    plain_g = optim.make(c.opt_g, c.lr_g, **({"b1": c.b1, "b2": c.b2} if c.opt_g == "adam" else {}))
    plain_d = optim.make(c.opt_d, c.lr_d, **({"b1": c.b1, "b2": c.b2} if c.opt_d == "adam" else {}))
    ref = jax.jit(lambda g, d: reference_step(gan, c, data, g, d, plain_g, plain_d, plain_g.init(g),
                                              plain_d.init(d)))(state.gen, state.disc)
    for x, y in zip(leaves((ours.gen, ours.disc)), leaves(ref), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(ours.gen), leaves(state.gen)))
    assert moved > 1e-6
    for e, p0, p1 in zip(leaves(ours.ema), leaves(state.gen), leaves(ours.gen)):
        np.testing.assert_allclose(e, 0.9 * p0 + 0.1 * p1, rtol=1e-5, atol=1e-7)
    assert int(ours.step) == 1 and np.isfinite(float(ours.last["loss_d"]))
    assert float(ours.last["grad_norm_d"]) > 0 and float(ours.last["grad_norm_g"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["extragradient", "past_extragradient"])
def test_extragradient_with_spectral_norm_and_batch_norm_resumes_exactly(tmp_path, scheme):
    """dcgan (BN in G) with SN in D carries auxiliary state through both gradient evaluations of
    an extragradient step; a run stopped and resumed equals an uninterrupted one bit for bit."""
    kw = dict(scheme=scheme, n_disc=1, arch="dcgan", sn_d=True, steps=4, steps_per_call=2, ckpt_every=2)
    a = Trainer(cfg(tmp_path / "a", **kw), DATA)
    assert a.train(progress=False)["status"] == "completed"
    b = Trainer(cfg(tmp_path / "b", **kw), DATA)
    b.train(stop_at=2, progress=False)
    c = Trainer(cfg(tmp_path / "b", **kw), DATA)
    assert c.resumed_from == 2 and c.train(progress=False)["status"] == "completed"
    for x, y in zip(leaves(a.state), leaves(c.state), strict=True):
        np.testing.assert_array_equal(x, y)
    s0 = Trainer(cfg(**kw), DATA).state  # the spectral vectors and BN averages moved
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(s0.disc_state), leaves(a.state.disc_state)))
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(s0.gen_state), leaves(a.state.gen_state)))


# -- the public API: custom optimizers per player and initial weights ----------------------------------
def test_mask_wrapped_optimizer_and_initial_params(tmp_path):
    """A mask-wrapped optimizer (updates multiplied by a 0/1 mask) with initial weights zero where the
    mask is 0 keeps those weights exactly zero; a resume must pass the same initial weights."""
    c = cfg(tmp_path, steps=4, ckpt_every=4, fixed_latents=False, latent_noise_var=0.0)
    like = Trainer(cfg(**{**BASE, "steps": 4, "ckpt_every": 4}), DATA).state
    rng = np.random.default_rng(3)
    mask_g = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.random(x.shape) < 0.5, x.dtype), like.gen)
    gen0 = jax.tree_util.tree_map(lambda x, m: x * m, like.gen, mask_g)

    def masked(tx, mask):
        def update(u, state, params=None):
            u, state = tx.update(u, state, params)
            return jax.tree_util.tree_map(lambda a, m: a * m, u, mask), state
        return optax.GradientTransformation(tx.init, update)

    t = Trainer(c, DATA, opt_gen=masked(optim.make("adam", 1e-3), mask_g), params=(gen0, like.disc))
    for x, y in zip(leaves(t.state.gen), leaves(gen0), strict=True):
        np.testing.assert_array_equal(x, y)
    assert t.train(progress=False)["status"] == "completed"
    moved = 0.0
    for p, m, p0 in zip(leaves(t.state.gen), leaves(mask_g), leaves(gen0), strict=True):
        assert np.all(p[m == 0] == 0.0)
        moved = max(moved, float(np.max(np.abs(p - p0))))
    assert moved > 1e-6
    with pytest.raises(ConfigError, match="initial weights"):
        Trainer(c, DATA, opt_gen=masked(optim.make("adam", 1e-3), mask_g), params=(like.gen, like.disc))
    with pytest.raises(ConfigError, match="custom optimizers"):
        Trainer(c, DATA, params=(gen0, like.disc))
    with pytest.raises(ConfigError, match="params"):
        Trainer(cfg(), DATA, params=(like.disc, like.gen))
    with pytest.raises(ConfigError, match="opt_disc must be an optax.GradientTransformation"):
        Trainer(cfg(), DATA, opt_disc=["adam"])


# -- reliability: scores committed with checkpoints, damaged logs ---------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_kill_right_after_a_checkpoint_write_keeps_every_score(uninterrupted, tmp_path, monkeypatch):
    real = ck_mod.Checkpoints.save

    def save_then_die(self, name, state, meta):
        real(self, name, state, meta)
        if name == "last" and meta["step"] == 4:
            raise Killed

    monkeypatch.setattr(ck_mod.Checkpoints, "save", save_then_die)
    with pytest.raises(Killed):
        Trainer(cfg(tmp_path), DATA, score_fn=score).train(progress=False)
    monkeypatch.setattr(ck_mod.Checkpoints, "save", real)
    c = Trainer(cfg(tmp_path), DATA, score_fn=score)
    assert c.resumed_from == 4 and c.scores == [{"step": 4, "score": 0.0}]
    s = c.train(progress=False)
    assert s["scores"] == uninterrupted.summary()["scores"] == [{"step": 4, "score": 0.0}, {"step": 8, "score": 4.0}]
    assert s["best"] == {"step": 4, "score": 0.0}


def test_damaged_log_does_not_crash_a_resume(uninterrupted, tmp_path, capsys):
    b = Trainer(cfg(tmp_path), DATA, score_fn=score)
    b.train(stop_at=4, progress=False)
    log = tmp_path / "log.jsonl"
    lines = log.read_bytes().splitlines()
    assert len(lines) == 3  # steps 0, 2, 4
    lines[1] = b"\xff\xfe not utf-8 {"  # the step-2 row destroyed
    log.write_bytes(b"\n".join(lines) + b"\n" + b'{"step": 6, "finite": tr' + b"\n[1, 2]\n")
    c = Trainer(cfg(tmp_path), DATA, score_fn=score)
    assert "dropped 3 damaged line(s)" in capsys.readouterr().err
    assert c.resumed_from == 4 and [r["step"] for r in c.records] == [0, 4]
    assert c.train(progress=False)["status"] == "completed"
    assert [r["step"] for r in c.records] == [0, 4, 6, 8]
    for x, y in zip(leaves(uninterrupted.state), leaves(c.state), strict=True):
        np.testing.assert_array_equal(x, y)
    (tmp_path / "trainer.json").write_bytes(b"\xff\x00")  # a damaged summary is no crash either
    assert Trainer(cfg(tmp_path), DATA).step == 8


# -- batches ------------------------------------------------------------------------------------------
def test_batches_from_seed_and_step_fixed_latents_and_noise():
    data = jnp.asarray(DATA)
    latents = tr_mod.fixed_latent_set(0, 32, 8)
    stream = tr_mod.stream_key(0)
    k3 = jax.random.fold_in(stream, 3)
    b = tr_mod.draw_batch(k3, data, latents, 32, 8)  # full batch: every image and every code once
    np.testing.assert_array_equal(np.sort(np.asarray(b.real).reshape(32, -1), axis=0),
                                  np.sort(DATA.reshape(32, -1), axis=0))
    np.testing.assert_array_equal(np.sort(np.asarray(b.z), axis=0), np.sort(np.asarray(latents), axis=0))
    again = tr_mod.draw_batch(k3, data, latents, 32, 8)
    np.testing.assert_array_equal(np.asarray(again.real), np.asarray(b.real))
    other = tr_mod.draw_batch(jax.random.fold_in(stream, 4), data, latents, 32, 8)
    assert not np.array_equal(np.asarray(other.real), np.asarray(b.real))
    # minibatch m < n: m distinct images
    small = tr_mod.draw_batch(k3, data, latents, 8, 8)
    assert len({np.asarray(x).tobytes() for x in small.real}) == 8
    # latent noise: z_hat - z ~ N(0, var I), checked on the codes drawn without noise
    noisy = tr_mod.draw_batch(k3, data, latents, 32, 8, noise_var=0.5)
    eps = np.asarray(noisy.z) - np.asarray(b.z)
    assert eps.shape == (32, 8)
    np.testing.assert_allclose(eps.var(), 0.5, rtol=0.15)
    assert abs(eps.mean()) < 0.1


# -- devices ------------------------------------------------------------------------------------------
SHARD_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, jax
    from overparam.bridge.trainer import Trainer, TrainConfig
    assert len(jax.local_devices()) == 2, jax.local_devices()
    data = np.tanh(np.random.default_rng(0).normal(size=(32, 8, 8, 1))).astype(np.float32)
    out = {}
    for dev in (1, 2):
        c = TrainConfig(arch="dcgan", width=1 / 32, latent_dim=8, batch_size=8, steps=4, steps_per_call=4,
                        log_every=2, ckpt_every=4, devices=dev)
        t = Trainer(c, data)
        s = t.train(progress=False)
        leaf = jax.tree_util.tree_leaves(t.state.gen)[0]
        text = t.program.advance.lower(t.state, t._data, t._latents, 4).as_text()
        out[dev] = {"status": s["status"], "devices": len(leaf.sharding.device_set),
                    "batch_split": '[{"data"}' in text,
                    "leaves": [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(
                        (t.state.gen, t.state.disc, t.state.gen_state, t.state.disc_state))],
                    "records": t.records}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_two_forced_host_devices_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    one, two = out["1"], out["2"]
    assert one["status"] == two["status"] == "completed"
    assert one["devices"] == 1 and two["devices"] == 2  # parameters replicated on both devices
    assert two["batch_split"] and not one["batch_split"]  # the batch axis is sharded
    for x, y in zip(one["leaves"], two["leaves"], strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)
    for r1, r2 in zip(one["records"], two["records"], strict=True):
        for k, v in r1.items():
            if isinstance(v, float):
                np.testing.assert_allclose(r2[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


# -- configuration errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    (dict(scheme="leapfrog"), "scheme"),
    (dict(scheme="simultaneous", n_disc=2), "n_disc"),
    (dict(steps=7), "multiple of log_every"),
    (dict(steps_per_call=3), "multiple of log_every"),
    (dict(ckpt_every=6), "multiple of steps_per_call"),
    (dict(loss="lsgan"), "loss"),
    (dict(opt_g="lamb"), "opt_g"),
    (dict(lr_d=0.0), "lr_d"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(gp=-1.0), "gp"),
])
def test_bad_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        cfg(**kw)


def test_bad_data():
    with pytest.raises(ConfigError, match="exceeds"):
        Trainer(cfg(batch_size=64), DATA)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        Trainer(cfg(), DATA * 3)
    with pytest.raises(ConfigError, match="power of two"):
        Trainer(cfg(), np.zeros((16, 12, 12, 1), np.float32))
    with pytest.raises(ConfigError, match="devices"):
        Trainer(cfg(devices=4), DATA)


def test_core_config_keeps_what_the_numbers_depend_on():
    c = TrainConfig(out_dir="/x", steps=1000, steps_per_call=500, log_every=500, ckpt_every=500, lr_d=3e-4)
    core = tr_mod.core_config(c)  # valid even when log_every exceeds the default steps_per_call
    assert core == tr_mod.core_config(TrainConfig(steps=3000, steps_per_call=1500, log_every=500,
                                                  ckpt_every=3000, lr_d=3e-4, resume=False))
    assert core != tr_mod.core_config(TrainConfig(steps=1000, steps_per_call=500, log_every=500, ckpt_every=500))
