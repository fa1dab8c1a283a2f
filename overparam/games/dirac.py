"""The Dirac-GAN (Mescheder, Geiger & Nowozin, ICML 2018) and its regularized variants.

Notation (docs/theory.md, "Dirac-GAN"): the data is a point mass at 0, the generator is a
point θ ∈ R (p_θ = δ_θ), the discriminator is linear, D_ψ(x) = ψ x. With a function f, the
value is

    L(θ, ψ) = E f(D_ψ(x_fake)) + E f(−D_ψ(x_real)) = f(θψ) + f(0)               (eq. D)

which the generator minimizes and the discriminator maximizes. Standard GAN:
f(t) = −log(1 + e^{−t}) (f'(0) = 1/2); WGAN: f(t) = t. The unique equilibrium is
(θ, ψ) = (0, 0). Each variant below is one short pair of player losses (ℓ_G, ℓ_D), both
minimized; the training vector field is v = (−∂_θ ℓ_G, −∂_ψ ℓ_D) and one SGD step with step
size h is (θ, ψ) ← (θ, ψ) + h v. Regularizers are written out in terms of D_ψ and
differentiated by autodiff (the penalties' input gradients ∇ₓD_ψ too).

Variants (``VARIANTS``):

* ``gan``             ℓ_G = L,            ℓ_D = −L                                   (eq. D-gan)
* ``ns_gan``          ℓ_G = −E f(−D_ψ(x_fake)) = −f(−θψ),  ℓ_D = −L                   (eq. D-ns)
* ``wgan``            f(t) = t, ℓ_G = L, ℓ_D = −L, ψ clipped to [−c, c] after each D step
* ``wgan_gp``         f(t) = t, ℓ_D = −L + γ/2 (|∇ₓD_ψ(x̂)| − g₀)²                      (eq. D-gp)
* ``consensus``       ℓ_{G,D} = ±L + γ/2 ‖v_L‖²,  v_L = (∂_θ L, ∂_ψ L)                  (eq. D-co)
* ``instance_noise``  L_σ = E_ε f(D_ψ(θ + σε₁)) + E_ε f(−D_ψ(σε₂)), ℓ_G = L_σ, ℓ_D = −L_σ  (eq. D-in)
* ``r1``              ℓ_D = −L + γ/2 E_real |∇ₓD_ψ(x)|²  (zero-centred, real data)       (eq. D-r1)
* ``ns_r1``           the non-saturating generator of ``ns_gan`` with the R1 discriminator

Instance noise draws ``noise_samples`` Gaussian samples per gradient evaluation (seeded by
the step's key), or with ``quadrature=True`` uses Gauss–Hermite nodes: the exact expected
field (used for the streamline plot and the Jacobian checks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import finite_positive, one_of, positive_int

__all__ = ["VARIANTS", "DiracGAN", "f_gan", "f_wgan", "discriminator", "value", "vector_field"]

VARIANTS = ("gan", "ns_gan", "wgan", "wgan_gp", "consensus", "instance_noise", "r1", "ns_r1")
Batch = tuple[jax.Array, jax.Array, jax.Array]  # (ε_fake, ε_real, weights)


def f_gan(t: jax.Array) -> jax.Array:
    """f(t) = −log(1 + e^{−t}); f'(t) = 1/(1 + e^t), f'(0) = 1/2, f''(0) = −1/4."""
    return -jnp.logaddexp(0.0, -t)


def f_wgan(t: jax.Array) -> jax.Array:
    """f(t) = t (Wasserstein GAN); f'(0) = 1."""
    return t


def discriminator(psi: jax.Array, x: jax.Array) -> jax.Array:
    """D_ψ(x) = ψ x."""
    return psi * x


def _input_grad(psi: jax.Array, x: jax.Array) -> jax.Array:
    """∇ₓD_ψ(x) for every sample of x (autodiff of :func:`discriminator`)."""
    return jax.vmap(jax.grad(discriminator, argnums=1), in_axes=(None, 0))(psi, x)


def _mean(w: jax.Array, values: jax.Array) -> jax.Array:
    """E over the batch with weights w (1/n for samples, Gauss–Hermite weights for quadrature)."""
    return jnp.sum(w * values)


def samples(theta: jax.Array, sigma: Any, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x_fake = θ + σε₁ (generator at θ), x_real = 0 + σε₂ (data at 0), and the weights."""
    eps_fake, eps_real, w = batch
    return theta + sigma * eps_fake, sigma * eps_real, w


def value(f: Callable, theta: jax.Array, psi: jax.Array, sigma: Any, batch: Batch) -> jax.Array:
    """L(θ, ψ) = E f(D_ψ(x_fake)) + E f(−D_ψ(x_real))  (eq. D; = f(θψ) + f(0) without noise)."""
    x_fake, x_real, w = samples(theta, sigma, batch)
    return _mean(w, f(discriminator(psi, x_fake))) + _mean(w, f(-discriminator(psi, x_real)))


def ns_gen_loss(f: Callable, theta: jax.Array, psi: jax.Array, sigma: Any, batch: Batch) -> jax.Array:
    """Non-saturating generator: ℓ_G = −E f(−D_ψ(x_fake)) = −f(−θψ)  (eq. D-ns)."""
    x_fake, _, w = samples(theta, sigma, batch)
    return -_mean(w, f(-discriminator(psi, x_fake)))


def wgan_gp_penalty(gamma: Any, target: Any, theta: jax.Array, psi: jax.Array, batch: Batch) -> jax.Array:
    """γ/2 E (|∇ₓD_ψ(x̂)| − g₀)², x̂ = (x_fake + x_real)/2  (eq. D-gp).

    For the Dirac-GAN ∇ₓD_ψ = ψ at every x̂, so the interpolation weight does not matter.
    """
    x_fake, x_real, w = samples(theta, 0.0, batch)
    x_hat = 0.5 * (x_fake + x_real)
    return 0.5 * gamma * _mean(w, (jnp.abs(_input_grad(psi, x_hat)) - target) ** 2)


def r1_penalty(gamma: Any, theta: jax.Array, psi: jax.Array, batch: Batch) -> jax.Array:
    """R1 = γ/2 E_real |∇ₓD_ψ(x)|², zero-centred, on real data (= γψ²/2)  (eq. D-r1)."""
    _, x_real, w = samples(theta, 0.0, batch)
    return 0.5 * gamma * _mean(w, _input_grad(psi, x_real) ** 2)


def consensus_penalty(gamma: Any, theta: jax.Array, psi: jax.Array, batch: Batch) -> jax.Array:
    """γ/2 ‖v_L‖², v_L = (∂_θ L, ∂_ψ L) of the standard GAN (autodiff; eq. D-co)."""
    g_theta, g_psi = jax.grad(value, argnums=(1, 2))(f_gan, theta, psi, 0.0, batch)
    return 0.5 * gamma * (g_theta**2 + g_psi**2)


@dataclass(frozen=True)
class DiracGAN:
    """A Dirac-GAN variant. ``gen`` is θ and ``disc`` is ψ (0-d arrays).

    ``variant``, ``noise_samples`` and ``quadrature`` are static; ``gamma`` (regularizer
    strength: wgan_gp, consensus, r1, ns_r1), ``target`` (WGAN-GP's g₀), ``noise_std`` (σ)
    and ``clip`` (WGAN's c) are pytree leaves, so a batch of games can be vmapped.
    """

    variant: str = "gan"
    gamma: Any = 0.0
    target: Any = 1.0
    noise_std: Any = 0.0
    clip: Any = 1.0
    noise_samples: int = 1000
    quadrature: bool = False

    def __post_init__(self) -> None:
        one_of("Dirac-GAN variant", self.variant, VARIANTS)
        positive_int("noise_samples", self.noise_samples)
        for name in ("gamma", "target", "noise_std", "clip"):
            v = getattr(self, name)
            if isinstance(v, (int, float, np.floating, np.integer)):  # traced values are checked by the caller
                finite_positive(f"{name} of the Dirac-GAN", v, allow_zero=name != "clip")

    # -- the losses -----------------------------------------------------------------------------
    @property
    def f(self) -> Callable:
        return f_wgan if self.variant in ("wgan", "wgan_gp") else f_gan

    @property
    def sigma(self) -> Any:
        return self.noise_std if self.variant == "instance_noise" else 0.0

    def value(self, theta: jax.Array, psi: jax.Array, batch: Batch) -> jax.Array:
        """L(θ, ψ) of this variant's f (with instance noise for ``instance_noise``)."""
        return value(self.f, theta, psi, self.sigma, batch)

    def gen_loss(self, theta: jax.Array, psi: jax.Array, batch: Batch) -> jax.Array:
        """ℓ_G: L, or −f(−θψ) for the non-saturating generator, + the consensus term."""
        if self.variant in ("ns_gan", "ns_r1"):
            return ns_gen_loss(self.f, theta, psi, self.sigma, batch)
        loss = self.value(theta, psi, batch)
        if self.variant == "consensus":
            loss = loss + consensus_penalty(self.gamma, theta, psi, batch)
        return loss

    def disc_loss(self, theta: jax.Array, psi: jax.Array, batch: Batch) -> jax.Array:
        """ℓ_D = −L + this variant's regularizer (WGAN-GP, consensus or R1)."""
        loss = -self.value(theta, psi, batch)
        if self.variant == "wgan_gp":
            loss = loss + wgan_gp_penalty(self.gamma, self.target, theta, psi, batch)
        elif self.variant == "consensus":
            loss = loss + consensus_penalty(self.gamma, theta, psi, batch)
        elif self.variant in ("r1", "ns_r1"):
            loss = loss + r1_penalty(self.gamma, theta, psi, batch)
        return loss

    def project_disc(self, psi: jax.Array) -> jax.Array:
        """WGAN's weight clipping ψ ← clip(ψ, −c, c) after each discriminator step; else identity."""
        if self.variant == "wgan":
            return jnp.clip(psi, -self.clip, self.clip)
        return psi

    # -- data -----------------------------------------------------------------------------------
    def sample_batch(self, key: jax.Array) -> Batch:
        """(ε_fake, ε_real, weights): standard normal noise for instance noise, else one zero sample."""
        dtype = jnp.result_type(float)
        if self.variant != "instance_noise":
            return jnp.zeros(1, dtype), jnp.zeros(1, dtype), jnp.ones(1, dtype)
        n = self.noise_samples
        if self.quadrature:
            nodes, weights = np.polynomial.hermite_e.hermegauss(n)  # ∫ g(ε) e^{−ε²/2} dε
            nodes = jnp.asarray(nodes, dtype)
            w = jnp.asarray(weights / math.sqrt(2 * math.pi), dtype)
            return nodes, nodes, w
        k1, k2 = jax.random.split(key)
        return (jax.random.normal(k1, (n,), dtype), jax.random.normal(k2, (n,), dtype),
                jnp.full((n,), 1.0 / n, dtype))

    def start(self, theta0: float = 1.0, psi0: float = 1.0) -> tuple[jax.Array, jax.Array]:
        """Initial players (θ₀, ψ₀) as 0-d arrays of the current default float type."""
        dtype = jnp.result_type(float)
        return jnp.asarray(theta0, dtype), jnp.asarray(psi0, dtype)


def vector_field(game: DiracGAN, theta: jax.Array, psi: jax.Array, batch: Batch | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """v(θ, ψ) = (−∂_θ ℓ_G, −∂_ψ ℓ_D): the direction of one gradient step of each player.

    Without a batch, instance noise uses the exact expectation (Gauss–Hermite quadrature).
    """
    if batch is None:
        if game.variant == "instance_noise" and not game.quadrature:
            game = DiracGAN(game.variant, game.gamma, game.target, game.noise_std, game.clip,
                            noise_samples=40, quadrature=True)
        batch = game.sample_batch(jax.random.PRNGKey(0))
    v_theta = -jax.grad(game.gen_loss, argnums=0)(theta, psi, batch)
    v_psi = -jax.grad(game.disc_loss, argnums=1)(theta, psi, batch)
    return v_theta, v_psi


def _flatten(g: DiracGAN):
    return (g.gamma, g.target, g.noise_std, g.clip), (g.variant, g.noise_samples, g.quadrature)


def _unflatten(aux, children):
    variant, n, quad = aux
    obj = object.__new__(DiracGAN)
    for name, v in zip(("gamma", "target", "noise_std", "clip"), children):
        object.__setattr__(obj, name, v)
    object.__setattr__(obj, "variant", variant)
    object.__setattr__(obj, "noise_samples", n)
    object.__setattr__(obj, "quadrature", quad)
    return obj


jax.tree_util.register_pytree_node(DiracGAN, _flatten, _unflatten)

