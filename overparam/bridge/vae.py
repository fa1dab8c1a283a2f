"""A convolutional VAE and a plain autoencoder whose decoder IS the GAN's generator.

The decoder is the generator module of :mod:`overparam.bridge.nets` (``make_gan(...).G``), so
its parameter pytree has exactly the generator's structure and shapes: a generator mask (a
lottery ticket found on a GAN) applies to the decoder leaf for leaf, and the reverse
(``tests/test_vae.py`` checks the structures). The encoder mirrors the discriminator's trunk:
``n_stages(resolution)`` convs 4×4 stride 2 (padding 1) with the discriminator's channel counts
times ``width``, LeakyReLU(0.2), then a dense layer to 2·latent_dim outputs (μ, log σ²) for the
VAE, latent_dim outputs (the code) for the autoencoder.

Images x ∈ [-1, 1]^D (D = H·W·C); the decoder's tanh output t = G(z) ∈ (-1, 1) is the mean of
the likelihood:

* Gaussian:  log p(x | z) = −‖x − t‖² / (2 s²) − (D/2) log(2π s²)                  (LG)
* Bernoulli: y = (x + 1)/2, p = clip((t + 1)/2, ε, 1 − ε),
             log p(x | z) = Σ_d y_d log p_d + (1 − y_d) log(1 − p_d)                 (LB)
  (exact for binary pixels; for grey levels it is the usual cross-entropy reading).

VAE (Kingma & Welling 2014): q(z | x) = N(μ(x), diag σ²(x)), prior N(0, I),

    KL(q ‖ p) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)                                  (KL)
    ELBO(x)  = E_q[log p(x | z)] − KL,   estimated with z = μ + σ ⊙ ε, ε ~ N(0, I)   (ELBO)

(one reparametrized sample per image). Autoencoder: z = enc(x), loss −log p(x | z) (LG or LB).
Losses are per image, in nats, averaged over the batch.

Training (:func:`make_train`): one jitted ``lax.scan`` over steps of Adam (any optax
transformation, e.g. ``prune.masked(...)``), batch b of step t drawn with key fold_in(key, t) —
the same (seed, steps) give the same numbers bit for bit. IMP prunes conv / dense kernels only
(``prune.default_prunable``; :data:`DECODER_ONLY` for the decoder alone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from overparam import prune
from overparam.bridge import nets
from overparam.errors import ConfigError, finite_positive, one_of, positive_int

__all__ = ["DECODER_ONLY", "KINDS", "LIKELIHOODS", "Encoder", "VAEModel", "bernoulli_loglik", "decode",
           "elbo", "encode", "gaussian_kl", "gaussian_loglik", "init_vae", "loss_fn", "make_train", "make_vae",
           "reconstruct", "sample"]

KINDS = ("vae", "ae")
LIKELIHOODS = ("gaussian", "bernoulli")
BERNOULLI_EPS = 1e-6
LOG_2PI = math.log(2.0 * math.pi)

#: Prune the decoder's kernels only (the leaves a generator mask covers).
DECODER_ONLY = lambda path, leaf: prune.matching("dec/*")(path, leaf) and prune.default_prunable(path, leaf)  # noqa: E731


class Encoder(nn.Module):
    """The discriminator's trunk (convs 4×4 stride 2 to 4×4 maps) and a dense head of ``out`` units."""

    resolution: int
    width: float
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = nets.n_stages(self.resolution)
        for i in range(k):
            c = nets.channels(512 // 2 ** (k - 1 - i), self.width)
            x = nets.lrelu(nets.Conv(c, (4, 4), strides=2, padding=1, name=f"conv{i}")(x))
        return nets.Dense(self.out, name="head")(x.reshape(x.shape[0], -1))


@dataclass(frozen=True)
class VAEModel:
    """A VAE or autoencoder: ``encoder`` and ``gan.G`` as the decoder (the generator module itself)."""

    kind: str
    likelihood: str
    sigma: float          # Gaussian observation std s (LG)
    gan: nets.GAN         # the GAN whose generator is the decoder
    encoder: Encoder

    @property
    def latent_dim(self) -> int:
        return self.gan.latent_dim

    @property
    def decoder(self) -> nn.Module:
        return self.gan.G


def make_vae(arch: str, resolution: int, channels: int, width: float = 1.0, latent_dim: int | None = None,
             kind: str = "vae", likelihood: str = "gaussian", sigma: float = 0.1) -> VAEModel:
    """The VAE (``kind="vae"``) or autoencoder (``"ae"``) whose decoder is the generator of
    ``nets.make_gan(arch, resolution, channels, width, latent_dim)``."""
    one_of("model kind", kind, KINDS)
    one_of("likelihood", likelihood, LIKELIHOODS)
    finite_positive("sigma (Gaussian observation std)", sigma)
    gan = nets.make_gan(arch, resolution, channels, width, latent_dim)
    out = 2 * gan.latent_dim if kind == "vae" else gan.latent_dim
    return VAEModel(kind, likelihood, float(sigma), gan, Encoder(gan.resolution, gan.width, out))


def init_vae(model: VAEModel, key: jax.Array) -> tuple[dict, dict]:
    """(params ``{"enc", "dec"}``, decoder collections ``{"dec": ...}``). ``params["dec"]`` has the
    generator's structure; with the key of ``nets.init_gan`` it is the same generator init."""
    ke, kd = jax.random.split(key)
    x = jnp.zeros((2, model.gan.resolution, model.gan.resolution, model.gan.channels), jnp.float32)
    z = jnp.zeros((2, model.latent_dim), jnp.float32)
    enc = model.encoder.init({"params": ke}, x)["params"]
    dvars = dict(model.decoder.init({"params": kd}, z, train=False))
    dec = dvars.pop("params")
    return {"enc": enc, "dec": dec}, {"dec": dvars}


# -- the equations ------------------------------------------------------------------------------
def gaussian_loglik(x: jax.Array, mean: jax.Array, sigma: float) -> jax.Array:
    """(LG) per image: −‖x − t‖²/(2s²) − (D/2) log(2π s²)."""
    d = x[0].size
    sq = jnp.sum((x - mean).reshape(x.shape[0], -1) ** 2, axis=1)
    return -sq / (2.0 * sigma**2) - 0.5 * d * (LOG_2PI + 2.0 * math.log(sigma))


def bernoulli_loglik(x: jax.Array, mean: jax.Array) -> jax.Array:
    """(LB) per image, with y = (x+1)/2 and p = clip((t+1)/2, ε, 1−ε)."""
    y = ((x + 1.0) / 2.0).reshape(x.shape[0], -1)
    p = jnp.clip((mean + 1.0) / 2.0, BERNOULLI_EPS, 1.0 - BERNOULLI_EPS).reshape(x.shape[0], -1)
    return jnp.sum(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p), axis=1)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """(KL) per row: KL(N(μ, diag e^{logvar}) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)."""
    return 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def loglik(model: VAEModel, x: jax.Array, mean: jax.Array) -> jax.Array:
    if model.likelihood == "gaussian":
        return gaussian_loglik(x, mean, model.sigma)
    return bernoulli_loglik(x, mean)


def elbo(x: jax.Array, mu: jax.Array, logvar: jax.Array, eps: jax.Array,
         decode_fn: Callable[[jax.Array], jax.Array], loglik_fn: Callable[[jax.Array, jax.Array], jax.Array]
         ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(ELBO) per image with the reparametrized sample z = μ + e^{logvar/2} ⊙ ε; returns
    (elbo, log p(x | z), KL). ``decode_fn(z)`` is the likelihood's mean t."""
    z = mu + jnp.exp(0.5 * logvar) * eps
    ll = loglik_fn(x, decode_fn(z))
    kl = gaussian_kl(mu, logvar)
    return ll - kl, ll, kl


# -- the networks --------------------------------------------------------------------------------
def encode(model: VAEModel, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """(μ, log σ²) for the VAE, (code, None) for the autoencoder."""
    h = model.encoder.apply({"params": params["enc"]}, x)
    if model.kind == "ae":
        return h, None
    return h[:, : model.latent_dim], h[:, model.latent_dim:]


def decode(model: VAEModel, params: dict, state: dict, z: jax.Array, train: bool) -> tuple[jax.Array, dict]:
    """G(z) with the decoder's collections (batch norm); returns (t, new collections)."""
    out, new = nets.apply(model.decoder, params["dec"], state["dec"], z, train=train)
    return out, {"dec": new}


def loss_fn(model: VAEModel, params: dict, state: dict, x: jax.Array, key: jax.Array
            ) -> tuple[jax.Array, tuple[dict, dict]]:
    """Mean over the batch of −ELBO (VAE) or −log p(x | enc(x)) (AE); aux = (new collections, metrics)."""
    mu, logvar = encode(model, params, x)
    holder = {}

    def dec(z):
        t, holder["state"] = decode(model, params, state, z, train=True)
        return t

    if model.kind == "vae":
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        e, ll, kl = elbo(x, mu, logvar, eps, dec, partial(loglik, model))
        loss = -jnp.mean(e)
        met = {"loss": loss, "loglik": jnp.mean(ll), "kl": jnp.mean(kl)}
    else:
        ll = loglik(model, x, dec(mu))
        loss = -jnp.mean(ll)
        met = {"loss": loss, "loglik": jnp.mean(ll), "kl": jnp.zeros((), jnp.float32)}
    return loss, (holder["state"], met)


def make_train(model: VAEModel, opt: optax.GradientTransformation, batch_size: int
               ) -> Callable[..., tuple[dict, dict, Any, dict]]:
    """``train(params, state, opt_state, data, key, start, n_steps) -> (params, state, opt_state,
    metrics)``: jitted ``lax.scan`` of n_steps Adam (``opt``) steps on the loss of
    :func:`loss_fn`; step t (counted from ``start``) uses key fold_in(key, t) for its batch (b
    distinct images) and its ε. ``metrics``: per-step loss, log-likelihood and KL. ``opt`` may be
    ``prune.masked(inner, mask)`` (the mask then lives in ``opt_state``)."""
    positive_int("batch_size", batch_size)

    def one(carry, t):
        params, state, opt_state, data, key = carry
        kt = jax.random.fold_in(key, t)
        kb, ke = jax.random.split(kt)
        x = data[jax.random.permutation(kb, data.shape[0])[:batch_size]]
        (_, (new_state, met)), g = jax.value_and_grad(lambda p: loss_fn(model, p, state, x, ke), has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, upd), new_state, opt_state, data, key), met

    @partial(jax.jit, static_argnums=(6,))
    def train(params, state, opt_state, data, key, start, n_steps: int):
        if data.shape[0] < batch_size:
            raise ConfigError(f"batch_size {batch_size} exceeds the {data.shape[0]} training images")
        ts = start + jnp.arange(n_steps, dtype=jnp.int32)
        (params, state, opt_state, _, _), met = jax.lax.scan(one, (params, state, opt_state, data, key), ts)
        return params, state, opt_state, met

    return train


def sample(model: VAEModel, params: dict, state: dict, z: jax.Array) -> jax.Array:
    """Decoded prior samples G(z), z ~ N(0, I) given (eval mode)."""
    return decode(model, params, state, z, train=False)[0]


def reconstruct(model: VAEModel, params: dict, state: dict, x: jax.Array) -> jax.Array:
    """G(μ(x)) (VAE) or G(enc(x)) (AE), eval mode."""
    mu, _ = encode(model, params, x)
    return decode(model, params, state, mu, train=False)[0]
