"""GAN losses and regularizers against independent computations: numpy formulas in float64,
finite differences for the input-gradient penalties, numpy loops for the orthogonal penalty and
the EMA, scipy's truncated normal for the truncation trick, numpy's SVD for the monitor."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from scipy import stats  # noqa: E402

from overparam.bridge import losses, nets  # noqa: E402
from overparam.errors import ConfigError  # noqa: E402

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=64) * 3
FAKE = RNG.normal(size=64) * 3 - 1


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_d_loss(kind, r, f):
    if kind in ("non_saturating", "saturating"):  # -E log D(x) - E log(1 - D(G(z)))
        return -np.mean(np.log(sig(r))) - np.mean(np.log(1.0 - sig(f)))
    if kind == "hinge":
        return np.mean(np.maximum(0.0, 1.0 - r)) + np.mean(np.maximum(0.0, 1.0 + f))
    return np.mean(f) - np.mean(r)


def np_g_loss(kind, f):
    if kind == "non_saturating":
        return -np.mean(np.log(sig(f)))
    if kind == "saturating":
        return np.mean(np.log(1.0 - sig(f)))
    return -np.mean(f)


@pytest.mark.parametrize("kind", losses.LOSSES)
def test_losses_match_numpy_formulas(kind):
    r, f = jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32)
    np.testing.assert_allclose(float(losses.d_loss(kind, r, f)), np_d_loss(kind, REAL, FAKE), rtol=1e-5)
    np.testing.assert_allclose(float(losses.g_loss(kind, f)), np_g_loss(kind, FAKE), rtol=1e-5)


def test_generator_gradients_saturating_vs_non_saturating():
    """dL_G/df_i: non-saturating -(1 - sigmoid(f))/B, saturating -sigmoid(f)/B: the saturating
    one vanishes where D rejects the fakes (f -> -inf), the non-saturating one does not."""
    f = jnp.asarray([-20.0, -2.0, 0.0, 3.0])
    g_ns = np.asarray(jax.grad(lambda x: losses.g_loss("non_saturating", x))(f))
    g_s = np.asarray(jax.grad(lambda x: losses.g_loss("saturating", x))(f))
    fn = np.asarray(f, np.float64)
    np.testing.assert_allclose(g_ns, -(1 - sig(fn)) / 4, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(g_s, -sig(fn) / 4, rtol=1e-4, atol=1e-12)
    assert abs(g_s[0]) < 1e-9 < abs(g_ns[0])


def test_losses_stable_for_large_logits():
    big = jnp.asarray([80.0, -80.0])
    assert np.isfinite(float(losses.d_loss("non_saturating", big, -big)))
    g = jax.grad(lambda x: losses.g_loss("non_saturating", x))(big)
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(float(losses.g_loss("non_saturating", jnp.asarray([-80.0]))), 80.0, rtol=1e-6)


def test_unknown_loss():
    with pytest.raises(ConfigError, match="loss"):
        losses.d_loss("lsgan", jnp.zeros(2), jnp.zeros(2))


# -- input-gradient penalties vs central finite differences (float64) ----------------------------
def _small_disc():
    """The stochasticity paper's D (8x8, 1/32 width), weights N(0, 1/fan_in) from numpy."""
    gan = nets.make_gan("stoch_dcgan", 8, 1, width=1 / 32, latent_dim=4, sn_d=False)
    shapes = jax.eval_shape(lambda: gan.D.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 8, 8, 1))))
    rng = np.random.default_rng(5)
    dp = jax.tree_util.tree_map(
        lambda s: rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10.0),
        shapes["params"])
    return gan, dp


def _fd_input_grads(d_np, x, h=1e-5):
    """Central differences of D (per sample) w.r.t. each input pixel, all perturbations batched."""
    b, d = x.shape[0], int(np.prod(x.shape[1:]))
    eye = np.eye(d).reshape(d, *x.shape[1:])
    grads = np.zeros((b, d))
    for i in range(b):
        xp = x[i][None] + h * eye
        xm = x[i][None] - h * eye
        grads[i] = (d_np(xp) - d_np(xm)) / (2 * h)
    return grads


def test_gradient_penalty_and_r1_vs_finite_differences():
    gan, dp = _small_disc()
    with jax.enable_x64(True):
        dp64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), dp)
        assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(dp64))

        def d_fn(x):
            return gan.D.apply({"params": dp64}, x)

        def d_np(x):
            return np.asarray(d_fn(jnp.asarray(x)))

        rng = np.random.default_rng(1)
        real = rng.uniform(-1, 1, size=(3, 8, 8, 1))
        fake = rng.uniform(-1, 1, size=(3, 8, 8, 1))
        key = jax.random.PRNGKey(7)
        x_hat = np.asarray(losses.gp_interpolates(key, jnp.asarray(real), jnp.asarray(fake)))
        # the interpolation itself: x_hat = eps x + (1 - eps) G(z) with one eps in [0, 1] per sample
        eps = (x_hat - fake).reshape(3, -1) / (real - fake).reshape(3, -1)
        assert np.allclose(eps, eps[:, :1]) and np.all((eps >= 0) & (eps <= 1))
        g_hat = _fd_input_grads(d_np, x_hat)
        gp_ref = 10.0 * np.mean((np.linalg.norm(g_hat, axis=1) - 1.0) ** 2)
        gp = float(losses.gradient_penalty(d_fn, jnp.asarray(real), jnp.asarray(fake), key, 10.0))
        np.testing.assert_allclose(gp, gp_ref, rtol=1e-6)
        g_real = _fd_input_grads(d_np, real)
        r1_ref = 0.5 * 2.5 * np.mean(np.sum(g_real ** 2, axis=1))
        r1 = float(losses.r1_penalty(d_fn, jnp.asarray(real), 2.5))
        np.testing.assert_allclose(r1, r1_ref, rtol=1e-6)
        assert r1_ref > 1e-6  # not a vacuous comparison


# -- orthogonal regularization ------------------------------------------------------------------
def test_orthogonal_penalty_pairwise_loop_and_gradient():
    """beta * sum_{i != j} <w_i, w_j>^2 over filter pairs (columns of W), summed over kernels;
    gradient 4 beta W (W^T W (.) (1 - I))."""
    rng = np.random.default_rng(2)
    params = {"a": {"kernel": rng.normal(size=(3, 3, 2, 5)), "bias": rng.normal(size=5)},
              "b": {"kernel": rng.normal(size=(4, 6))}}
    beta = 1e-4
    ref = 0.0
    for k in (params["a"]["kernel"], params["b"]["kernel"]):
        w = k.reshape(-1, k.shape[-1])
        for i in range(w.shape[1]):
            for j in range(w.shape[1]):
                if i != j:
                    ref += (w[:, i] @ w[:, j]) ** 2
    p32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    np.testing.assert_allclose(float(losses.orthogonal_penalty(p32, beta)), beta * ref, rtol=1e-5)
    g = jax.grad(losses.orthogonal_penalty)(p32, beta)
    w = params["b"]["kernel"]
    gram = w.T @ w
    np.testing.assert_allclose(np.asarray(g["b"]["kernel"]), 4 * beta * w @ (gram * (1 - np.eye(6))), rtol=1e-4)
    assert float(jnp.max(jnp.abs(g["a"]["bias"]))) == 0.0
    # an orthogonal matrix (any column norms) is not penalized: off-diagonal only
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    scaled = {"kernel": jnp.asarray(q * np.arange(1, 7), jnp.float32)}
    assert float(losses.orthogonal_penalty(scaled, 1.0)) < 1e-8


# -- EMA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("start", [0, 3])
def test_ema_matches_numpy_recursion(start):
    rng = np.random.default_rng(3)
    thetas = rng.normal(size=(8, 4))
    decay = 0.9
    ema = jnp.zeros(4)
    ref = np.zeros(4)
    for t in range(1, 9):
        theta = thetas[t - 1]
        ref = theta.copy() if t <= start else decay * ref + (1 - decay) * theta
        ema = losses.ema_update(ema, jnp.asarray(theta, jnp.float32), jnp.asarray(t), decay, start)
    np.testing.assert_allclose(np.asarray(ema), ref, rtol=1e-5, atol=1e-6)


# -- truncation trick -----------------------------------------------------------------------------
def test_truncated_normal_bounds_and_distribution():
    tau = 0.7
    z = np.asarray(losses.truncated_normal(jax.random.PRNGKey(0), (4000, 8), tau)).ravel()
    assert np.all(np.abs(z) <= tau)
    ks = stats.kstest(z, stats.truncnorm(-tau, tau).cdf)
    assert ks.pvalue > 1e-3
    np.testing.assert_allclose(z.var(), stats.truncnorm(-tau, tau).var(), rtol=0.03)
    # deterministic given the key; the codes already inside [-tau, tau] are kept as drawn
    z2 = np.asarray(losses.truncated_normal(jax.random.PRNGKey(0), (4000, 8), tau)).ravel()
    np.testing.assert_array_equal(z, z2)
    first = np.asarray(jax.random.normal(jax.random.split(jax.random.PRNGKey(0))[0], (4000, 8))).ravel()
    inside = np.abs(first) <= tau
    np.testing.assert_array_equal(z[inside], first[inside])


def test_sample_latents_and_bad_tau():
    z = losses.sample_latents(jax.random.PRNGKey(1), 5, 3)
    assert z.shape == (5, 3)
    with pytest.raises(ConfigError, match="tau"):
        losses.sample_latents(jax.random.PRNGKey(1), 5, 3, truncation=0.0)


# -- singular-value monitor ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 5, 4, 6), (3, 3, 16, 2), (7, 3), (10, 1)])
def test_top_singular_values_vs_numpy_svd(shape):
    k = np.random.default_rng(4).normal(size=shape)
    ref = np.linalg.svd(k.reshape(-1, shape[-1]), compute_uv=False)[:3]
    out = np.asarray(losses.top_singular_values(jnp.asarray(k, jnp.float32), 3))
    np.testing.assert_allclose(out, ref, rtol=1e-4)
