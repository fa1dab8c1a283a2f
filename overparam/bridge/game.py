"""A conv GAN as an :mod:`overparam.dynamics` game with auxiliary state.

The players' parameters are the flax networks' ``params``; their *auxiliary state*
(``dynamics.AuxState(gen=PlayerAux, disc=PlayerAux)``) is each network's non-trainable
collections (spectral-norm power-iteration vectors, batch-norm running averages) plus the
metrics of that player's last update. With r = D(x) on real images x and f = D(G(z)) on
generated ones (:mod:`overparam.bridge.losses` for L_D, L_G and the penalties):

* discriminator: L_D(r, f) + GP + R1 + R_beta(D). D runs once, in training mode, on the
  concatenation [G(z); x] (as in BigGAN-PyTorch), so it advances its spectral vectors by one power
  iteration (and its BN statistics) per evaluation; G runs in training mode with its state read-only
  and its output held constant (stop-gradient);
* generator: L_G(f) + R_beta(G); G's new state is kept, D runs in training mode read-only.

:func:`overparam.dynamics.make_step` on this game is the conv-GAN training step (every scheme:
simultaneous, alternating, extragradient, past-extragradient). Batches: ``m`` distinct training
images and ``m`` distinct codes of the fixed latent set (or fresh N(0, I) codes), plus latent
noise eps ~ N(0, var I) (:func:`draw_batch`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from overparam import dynamics, optim
from overparam.bridge import losses, nets, sharding

__all__ = ["Batch", "ConvGame", "METRICS", "PlayerAux", "draw_batch", "fixed_latent_set", "stream_key"]

METRICS_D = ("loss_d", "gan_loss_d", "gp", "r1", "ortho_d", "d_real", "d_fake", "grad_norm_d")
METRICS_G = ("loss_g", "gan_loss_g", "ortho_g", "grad_norm_g")
METRICS = ("loss_d", "loss_g", "gan_loss_d", "gan_loss_g", "gp", "r1", "ortho_d", "ortho_g",
           "d_real", "d_fake", "grad_norm_d", "grad_norm_g")


class Batch(NamedTuple):
    real: jax.Array   # (m, H, W, C) training images
    z: jax.Array      # (m, latent_dim) latent codes (+ noise)
    key: jax.Array    # key of the step's penalty randomness (GP interpolation)


class PlayerAux(NamedTuple):
    """One player's auxiliary state: its network's non-trainable collections and its last metrics."""

    state: dict
    metrics: dict


def draw_batch(key: jax.Array, data: jax.Array, latents: jax.Array | None, batch_size: int, latent_dim: int,
               noise_var: float = 0.0) -> Batch:
    """m distinct training images; m distinct codes of the fixed set (or fresh N(0, I) codes);
    plus eps ~ N(0, noise_var I). Images and codes are drawn independently (a GAN pairs none)."""
    kx, kz, kn, kp = jax.random.split(key, 4)
    real = data[jax.random.permutation(kx, data.shape[0])[:batch_size]]
    if latents is None:
        z = jax.random.normal(kz, (batch_size, latent_dim), jnp.float32)
    else:
        z = latents[jax.random.permutation(kz, latents.shape[0])[:batch_size]]
    if noise_var > 0:
        z = z + math.sqrt(noise_var) * jax.random.normal(kn, z.shape, z.dtype)
    return Batch(real, z, kp)


def stream_key(seed: int) -> jax.Array:
    """The key from which step t's key fold_in(stream, t) is derived."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def fixed_latent_set(seed: int, n: int, latent_dim: int) -> jax.Array:
    """The fixed latent codes z_1..z_n ~ N(0, I) (one per training image)."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 2), (n, latent_dim), jnp.float32)


def _zero() -> jax.Array:
    return jnp.zeros((), jnp.float32)


def _f32(metrics: dict) -> dict:
    return {k: jnp.asarray(v).astype(jnp.float32) for k, v in metrics.items()}


@dataclass(frozen=True, eq=False)
class ConvGame:
    """The conv GAN ``gan`` on ``data`` (float images in [-1, 1], (N, H, W, C)) as a dynamics game.

    ``latents``: the fixed latent set (None = fresh codes each batch); ``mesh``: when given, the
    batch axis of every batch is sharded over its ``data`` axis (:mod:`overparam.bridge.sharding`).
    """

    gan: nets.GAN
    data: jax.Array
    latents: jax.Array | None
    batch_size: int
    loss: str = "non_saturating"
    gp: float = 0.0
    r1: float = 0.0
    ortho_g: float = 0.0
    ortho_d: float = 0.0
    noise_var: float = 0.0
    mesh: Any = None
    has_aux: ClassVar[bool] = True

    @classmethod
    def from_config(cls, gan: nets.GAN, cfg, data: jax.Array, latents: jax.Array | None = None,
                    mesh: Any = None) -> "ConvGame":
        """The game of a :class:`overparam.bridge.config.TrainConfig` (loss, penalties, batch, noise)."""
        return cls(gan, data, latents, cfg.batch_size, cfg.loss, cfg.gp, cfg.r1, cfg.ortho_g, cfg.ortho_d,
                   cfg.latent_noise_var, mesh)

    # -- the dynamics.Game protocol (with auxiliary state) --
    def sample_batch(self, key: jax.Array) -> Batch:
        b = draw_batch(key, self.data, self.latents, self.batch_size, self.gan.latent_dim, self.noise_var)
        if self.mesh is not None:
            b = b._replace(real=sharding.constrain_batch(b.real, self.mesh),
                           z=sharding.constrain_batch(b.z, self.mesh))
        return b

    def disc_loss(self, gen, disc, batch: Batch, aux: dynamics.AuxState) -> tuple[jax.Array, PlayerAux]:
        """L_D + GP + R1 + R_beta(D); returns D's new state and metrics."""
        gan, m = self.gan, batch.real.shape[0]
        fake, _ = nets.apply(gan.G, gen, aux.gen.state, batch.z, train=True)
        fake = jax.lax.stop_gradient(fake)
        logits, new_state = nets.apply(gan.D, disc, aux.disc.state, jnp.concatenate([fake, batch.real]), train=True)
        lf, lr = logits[:m], logits[m:]
        gan_loss = losses.d_loss(self.loss, lr, lf)

        def d_fn(x):
            return nets.apply(gan.D, disc, new_state, x, train=True)[0]

        gp = losses.gradient_penalty(d_fn, batch.real, fake, batch.key, self.gp) if self.gp else _zero()
        r1 = losses.r1_penalty(d_fn, batch.real, self.r1) if self.r1 else _zero()
        od = losses.orthogonal_penalty(disc, self.ortho_d) if self.ortho_d else _zero()
        total = gan_loss + gp + r1 + od
        met = {"loss_d": total, "gan_loss_d": gan_loss, "gp": gp, "r1": r1, "ortho_d": od,
               "d_real": jnp.mean(lr), "d_fake": jnp.mean(lf), "grad_norm_d": aux.disc.metrics["grad_norm_d"]}
        return total, PlayerAux(new_state, _f32(met))

    def gen_loss(self, gen, disc, batch: Batch, aux: dynamics.AuxState) -> tuple[jax.Array, PlayerAux]:
        """L_G + R_beta(G); returns G's new state and metrics."""
        gan = self.gan
        fake, new_state = nets.apply(gan.G, gen, aux.gen.state, batch.z, train=True)
        logits, _ = nets.apply(gan.D, disc, aux.disc.state, fake, train=True)
        gan_loss = losses.g_loss(self.loss, logits)
        og = losses.orthogonal_penalty(gen, self.ortho_g) if self.ortho_g else _zero()
        total = gan_loss + og
        met = {"loss_g": total, "gan_loss_g": gan_loss, "ortho_g": og, "grad_norm_g": aux.gen.metrics["grad_norm_g"]}
        return total, PlayerAux(new_state, _f32(met))

    def observe_grads(self, player: str, aux: PlayerAux, grads) -> PlayerAux:
        """Record ‖grad‖ (over the player's whole parameter pytree) of the update's gradient."""
        key = "grad_norm_g" if player == "gen" else "grad_norm_d"
        return aux._replace(metrics={**aux.metrics, key: optim.tree_norm(grads).astype(jnp.float32)})

    # -- helpers --
    @staticmethod
    def initial_aux(gen_state: dict, disc_state: dict) -> dynamics.AuxState:
        """The auxiliary state at the start: the networks' collections, every metric 0."""
        return dynamics.AuxState(PlayerAux(gen_state, {k: _zero() for k in METRICS_G}),
                                 PlayerAux(disc_state, {k: _zero() for k in METRICS_D}))
