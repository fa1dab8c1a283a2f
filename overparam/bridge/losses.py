"""GAN losses and regularizers for the conv-GAN bridge (each player minimizes its loss).

With r = D(x) the discriminator's logits on real images and f = D(G(z)) on generated ones
(means over the batch are written E):

* non-saturating (Goodfellow et al. 2014, the "-log D" trick)
      L_D = E softplus(-r) + E softplus(f),      L_G = E softplus(-f)
* saturating (the minimax value):
      L_D as above,                              L_G = -E softplus(f)  = E log(1 - sigmoid(f))
* hinge (Lim & Ye 2017; Miyato et al. 2018):
      L_D = E relu(1 - r) + E relu(1 + f),       L_G = -E f
* Wasserstein (Arjovsky et al. 2017):
      L_D = E f - E r,                           L_G = -E f

Regularizers:

* gradient penalty (Gulrajani et al. 2017):  lambda E (||grad_x D(x_hat)|| - 1)^2,
  x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per sample
* R1 (Mescheder et al. 2018):               gamma/2 E ||grad_x D(x)||^2 on real images
* orthogonal regularization, BigGAN's off-diagonal form (Brock et al. 2019, sec. 3.1):
      R_beta(W) = beta ||W^T W (.) (1 - I)||_F^2  summed over kernels,
  W the kernel as a (fan_in, out) matrix, so W^T W holds the filters' pairwise inner products
* EMA of the generator's weights (Yazici et al. 2019): theta_bar_t = theta_t for t <= start,
  theta_bar_t = decay theta_bar_{t-1} + (1 - decay) theta_t afterwards
* truncation trick (BigGAN sec. 3.1): z ~ N(0, I) with every entry |z_i| > tau resampled
  until all lie in [-tau, tau]
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from overparam.errors import ConfigError, finite_positive, one_of

__all__ = [
    "LOSSES",
    "d_loss",
    "ema_update",
    "g_loss",
    "gradient_penalty",
    "orthogonal_penalty",
    "r1_penalty",
    "sample_latents",
    "top_singular_values",
    "truncated_normal",
]

LOSSES = ("non_saturating", "saturating", "hinge", "wasserstein")
DFn = Callable[[jax.Array], jax.Array]


def d_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The discriminator's loss L_D (module docstring) from its logits on real and fake images."""
    one_of("loss", kind, LOSSES)
    r, f = real_logits, fake_logits
    if kind in ("non_saturating", "saturating"):
        return jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f))
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
    return jnp.mean(f) - jnp.mean(r)


def g_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
    """The generator's loss L_G (module docstring) from the discriminator's logits on fakes."""
    one_of("loss", kind, LOSSES)
    f = fake_logits
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-f))
    if kind == "saturating":
        return -jnp.mean(jax.nn.softplus(f))
    return -jnp.mean(f)


def _input_grads(d_fn: DFn, x: jax.Array) -> jax.Array:
    """grad_x of sum_i D(x)_i: per-sample input gradients (exact when samples do not interact)."""
    return jax.grad(lambda xx: jnp.sum(d_fn(xx)))(x)


def _sq_norms(g: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1)


def gp_interpolates(key: jax.Array, real: jax.Array, fake: jax.Array) -> jax.Array:
    """x_hat = eps x + (1 - eps) G(z) with eps ~ U[0, 1], one eps per sample."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    return eps * real + (1.0 - eps) * fake


def gradient_penalty(d_fn: DFn, real: jax.Array, fake: jax.Array, key: jax.Array, weight: float = 10.0) -> jax.Array:
    """WGAN-GP: weight * E (||grad_x D(x_hat)||_2 - 1)^2 (x_hat from :func:`gp_interpolates`)."""
    x_hat = gp_interpolates(key, real, jax.lax.stop_gradient(fake))
    norms = jnp.sqrt(_sq_norms(_input_grads(d_fn, x_hat)) + 1e-12)
    return weight * jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(d_fn: DFn, real: jax.Array, gamma: float) -> jax.Array:
    """R1: gamma/2 * E ||grad_x D(x)||_2^2 over real images."""
    return 0.5 * gamma * jnp.mean(_sq_norms(_input_grads(d_fn, real)))


def orthogonal_penalty(params: Any, beta: float = 1e-4) -> jax.Array:
    """BigGAN's R_beta = beta * sum_W ||W^T W (.) (1 - I)||_F^2 over every kernel (ndim >= 2)."""
    total = jnp.zeros((), jnp.float32)
    for leaf in jax.tree_util.tree_leaves(params):
        if leaf.ndim < 2:
            continue
        w = leaf.reshape(-1, leaf.shape[-1])
        gram = w.T @ w
        off = gram * (1.0 - jnp.eye(gram.shape[0], dtype=gram.dtype))
        total = total + jnp.sum(jnp.square(off))
    return beta * total


def ema_update(ema: Any, params: Any, step: jax.Array, decay: float, start: int) -> Any:
    """theta_bar_t = theta_t if t <= start else decay theta_bar_{t-1} + (1 - decay) theta_t.

    ``step`` is t, the number of generator updates that produced ``params`` (1 after the first).
    """
    copy = step <= start
    return jax.tree_util.tree_map(
        lambda e, p: jnp.where(copy, p, decay * e + (1.0 - decay) * p), ema, params
    )


def truncated_normal(key: jax.Array, shape: tuple[int, ...], tau: float) -> jax.Array:
    """N(0, I) with every entry of magnitude > tau resampled until none is (BigGAN's trick)."""
    tau = finite_positive("truncation threshold tau", tau)

    def cond(carry):
        return jnp.any(jnp.abs(carry[0]) > tau)

    def body(carry):
        z, k = carry
        k, sub = jax.random.split(k)
        return jnp.where(jnp.abs(z) > tau, jax.random.normal(sub, shape), z), k

    k0, k1 = jax.random.split(key)
    z, _ = jax.lax.while_loop(cond, body, (jax.random.normal(k0, shape), k1))
    return z


def sample_latents(key: jax.Array, n: int, dim: int, truncation: float | None = None) -> jax.Array:
    """n latent codes in R^dim: N(0, I), or truncated at tau = ``truncation``."""
    if truncation is None:
        return jax.random.normal(key, (n, dim))
    return truncated_normal(key, (n, dim), truncation)


def top_singular_values(kernel: jax.Array, k: int = 3) -> jax.Array:
    """The k largest singular values of the kernel as a (fan_in, out) matrix, descending.

    Computed as sqrt of the top eigenvalues of the smaller Gram matrix (exact up to rounding,
    cheap for the top of the spectrum); fewer than k values when the matrix has fewer.
    """
    if kernel.ndim < 2:
        raise ConfigError(f"singular values need a matrix or conv kernel, got shape {kernel.shape}")
    w = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)
    gram = w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T
    ev = jnp.linalg.eigvalsh(gram)[::-1][: min(k, gram.shape[0])]
    return jnp.sqrt(jnp.maximum(ev, 0.0))
