"""VAE / autoencoder of the bridge: decoder = generator (structure), ELBO terms against closed
forms and scipy, deterministic masked training, IMP on them."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from overparam import prune
from overparam.bridge import nets, vae
from overparam.errors import ConfigError


def _model(kind="vae", arch="stoch_dcgan", likelihood="gaussian"):
    return vae.make_vae(arch, 8, 1, width=1 / 64, latent_dim=4, kind=kind, likelihood=likelihood, sigma=0.3)


@pytest.mark.parametrize("arch", nets.ARCHS)
def test_decoder_has_the_generators_structure(arch):
    m = vae.make_vae(arch, 8, 1, width=1 / 32, latent_dim=6)
    params, state = vae.init_vae(m, jax.random.PRNGKey(0))
    gp, gs, _, _ = nets.init_gan(nets.make_gan(arch, 8, 1, 1 / 32, 6), jax.random.PRNGKey(1))
    assert jax.tree_util.tree_structure(params["dec"]) == jax.tree_util.tree_structure(gp)
    assert [x.shape for x in jax.tree_util.tree_leaves(params["dec"])] == [x.shape for x in jax.tree_util.tree_leaves(gp)]
    assert jax.tree_util.tree_structure(state["dec"]) == jax.tree_util.tree_structure(gs)
    # a generator mask applies to the decoder leaf for leaf
    gmask = prune.magnitude_mask(gp, 0.5)
    masked = prune.apply_mask(params["dec"], gmask)
    for a, m_ in zip(jax.tree_util.tree_leaves(masked), jax.tree_util.tree_leaves(gmask, is_leaf=lambda x: x is None)):
        if m_ is not None:
            assert np.all(np.asarray(a)[~np.asarray(m_)] == 0)


def test_kl_closed_form_against_quadrature():
    mu, logvar = 0.7, math.log(0.3)
    s = math.exp(0.5 * logvar)
    q, p = stats.norm(mu, s), stats.norm(0, 1)
    num, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -12, 12)
    got = float(vae.gaussian_kl(jnp.array([[mu]]), jnp.array([[logvar]]))[0])
    assert got == pytest.approx(num, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-0.99, 0.99), min_size=4, max_size=4), st.lists(st.floats(-0.99, 0.99), min_size=4,
                                                                             max_size=4), st.floats(0.05, 2.0))
def test_gaussian_loglik_is_scipys(x, t, s):
    x = np.asarray(x, np.float32).reshape(1, 2, 2, 1)
    t = np.asarray(t, np.float32).reshape(1, 2, 2, 1)
    want = stats.norm(t.ravel(), s).logpdf(x.ravel()).sum()
    assert float(vae.gaussian_loglik(jnp.asarray(x), jnp.asarray(t), s)[0]) == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_bernoulli_loglik_on_binary_pixels_is_scipys():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(3, 2, 2, 1)).astype(np.float32)
    p = rng.uniform(0.05, 0.95, size=y.shape).astype(np.float32)
    want = stats.bernoulli(p.reshape(3, -1)).logpmf(y.reshape(3, -1)).sum(1)
    got = vae.bernoulli_loglik(jnp.asarray(2 * y - 1), jnp.asarray(2 * p - 1))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_elbo_monte_carlo_matches_linear_gaussian_closed_form():
    """Linear decoder t = W z: E_q log p = −(‖x − Wμ‖² + Σ_j σ_j² ‖W_j‖²)/(2s²) − (D/2) log 2πs²."""
    rng = np.random.default_rng(1)
    D, k, s = 6, 3, 0.5
    W = rng.normal(size=(D, k)).astype(np.float32) * 0.3
    x = rng.uniform(-1, 1, size=(1, D)).astype(np.float32)
    mu = rng.normal(size=(1, k)).astype(np.float32) * 0.5
    logvar = np.log(rng.uniform(0.1, 0.8, size=(1, k))).astype(np.float32)
    n = 200_000
    eps = jax.random.normal(jax.random.PRNGKey(0), (n, k))
    e, ll, kl = vae.elbo(jnp.repeat(x, n, 0), jnp.repeat(mu, n, 0), jnp.repeat(logvar, n, 0), eps,
                         lambda z: z @ W.T, lambda a, b: vae.gaussian_loglik(a, b, s))
    var = np.exp(logvar)[0]
    ell = -(np.sum((x[0] - W @ mu[0]) ** 2) + np.sum(var * np.sum(W**2, 0))) / (2 * s * s) - D / 2 * math.log(
        2 * math.pi * s * s)
    kl_cf = 0.5 * np.sum(mu**2 + var - 1 - logvar)
    assert float(jnp.mean(ll)) == pytest.approx(ell, abs=4 * float(jnp.std(ll)) / math.sqrt(n))
    assert float(kl[0]) == pytest.approx(kl_cf, rel=1e-5)
    assert float(jnp.mean(e)) == pytest.approx(ell - kl_cf, abs=4 * float(jnp.std(ll)) / math.sqrt(n))


@pytest.mark.parametrize("kind", vae.KINDS)
def test_masked_training_is_deterministic_keeps_pruned_zero_and_learns(kind):
    m = _model(kind)
    params, state = vae.init_vae(m, jax.random.PRNGKey(0))
    mask = prune.magnitude_mask(params, 0.6, prunable=vae.DECODER_ONLY)
    params = prune.apply_mask(params, mask)
    opt = prune.masked(optax.adam(3e-3), mask)
    data = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)), jnp.float32)
    train = vae.make_train(m, opt, 16)
    out1 = train(params, state, opt.init(params), data, jax.random.PRNGKey(3), 0, 60)
    out2 = train(params, state, opt.init(params), data, jax.random.PRNGKey(3), 0, 60)
    for a, b in zip(jax.tree_util.tree_leaves(out1[0]), jax.tree_util.tree_leaves(out2[0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for p, mk in zip(jax.tree_util.tree_leaves(out1[0]), jax.tree_util.tree_leaves(mask, is_leaf=lambda x: x is None)):
        if mk is not None:
            assert np.all(np.asarray(p)[~np.asarray(mk)] == 0.0)
    loss = np.asarray(out1[3]["loss"])
    assert loss[-10:].mean() < loss[:10].mean()
    # two chunks of 30 steps give the 60-step run exactly (the batch key depends on t only)
    a = train(params, state, opt.init(params), data, jax.random.PRNGKey(3), 0, 30)
    b = train(a[0], a[1], a[2], data, jax.random.PRNGKey(3), 30, 30)
    for x, y in zip(jax.tree_util.tree_leaves(b[0]), jax.tree_util.tree_leaves(out1[0])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_imp_runs_on_the_vae_with_exact_sparsity():
    m = _model("ae")
    params, state = vae.init_vae(m, jax.random.PRNGKey(0))
    data = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)), jnp.float32)
    inner = optax.adam(1e-3)
    train = vae.make_train(m, prune.masked(inner, prune.dense_mask(params, vae.DECODER_ONLY)), 8)

    def train_fn(p, mask, opt_state):
        out = train(p, state, opt_state, data, jax.random.PRNGKey(0), 0, 5)
        return prune.TrainOutcome(out[0], p, None)

    imp = prune.IMP(prune.IMPConfig(rounds=3, arms=("ticket", "random")), train_fn,
                    lambda p, mask: prune.masked(inner, mask).init(p), prunable=vae.DECODER_ONLY)
    s = imp.run(params)
    n = sum(c[1] for c in prune.leaf_counts(s.mask).values())
    assert all(k.startswith("dec/") for k in prune.leaf_counts(s.mask))
    assert sum(c[0] for c in prune.leaf_counts(s.mask).values()) == math.floor(0.8**3 * n + 0.5)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="likelihood"):
        vae.make_vae("stoch_dcgan", 8, 1, likelihood="poisson")
    with pytest.raises(ConfigError, match="kind"):
        vae.make_vae("stoch_dcgan", 8, 1, kind="gan")
    with pytest.raises(ConfigError, match="sigma"):
        vae.make_vae("stoch_dcgan", 8, 1, sigma=0.0)
