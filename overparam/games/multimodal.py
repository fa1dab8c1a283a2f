"""Multimodal games for the nSGDA-vs-SGDA mode-coverage study (Jelassi et al. 2022).

The exact setting of the paper is not published: both families are our construction
(docs/theory.md §7).

Two families; both are plain games in the sense of :mod:`overparam.dynamics`
(``gen_loss``, ``disc_loss``, ``sample_batch``) and know nothing about optimizers.

**Neurons** (:class:`Neurons`, in the style of Jelassi et al.'s theory).
K orthonormal directions u_j ∈ R^d (seeded), mode j at μ_j = α_j u_j with probability p_j,
optionally plus N(0, noise² I) (minibatch gradients only).

* Generator: m vectors v_1..v_m; a uniform one-hot latent z picks one, G(z) = v_z.
* Discriminator: D(x) = Σ_i a_i σ(w_i·x), i = 1..m_D, σ(t) = t³ (``cubic``),
  t³ + t (``cubic_linear``) or max(t, 0) (``relu``); w and a trained.
* Initialization: v_k, w_i ~ N(0, s²/d · I) with s = ``init_scale`` (0.1); a_i = 1.
* Losses (eq. L_D, L_G), with softplus(t) = log(1 + e^t):
      L_D = E_x softplus(−D(x)) + E_z softplus(D(G(z)))      (logistic loss)
      L_G = E_z softplus(−D(G(z)))                            (non-saturating)
  A batch is ``(x, wx, wz)``: points x, their weights wx (summing to 1) and the latent
  weights wz (m,). With exact expectations (``batch_size=None``) x = (μ_j), wx = p and
  wz = 1/m, so every gradient is the exact expectation (deterministic GDA); a minibatch
  draws b modes ~ p and b latents ~ uniform and uses the empirical weights.

**Mixture of 2-D Gaussians** (:class:`Mixture2D`, the community's standard).
8 Gaussians on a circle of radius 2 (``ring``) or 25 on a 5×5 grid (``grid``), std 0.02,
equal weights. Generator and discriminator are MLPs with two hidden layers of 64 ReLU
units; z ~ N(0, I_latent). Same losses (eq. L_D, L_G) on minibatches of 128.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require

__all__ = [
    "SIGMAS",
    "LAYOUTS",
    "Mixture2D",
    "Mixture2DSpec",
    "Neurons",
    "NeuronsSpec",
    "mixture_centers",
    "orthonormal_directions",
]


# -- discriminator activations σ ------------------------------------------------------------
def _cubic(t: jax.Array) -> jax.Array:
    """σ(t) = t³."""
    return t * t * t


def _cubic_linear(t: jax.Array) -> jax.Array:
    """σ(t) = t³ + t."""
    return t * t * t + t


SIGMAS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "cubic": _cubic,
    "cubic_linear": _cubic_linear,
    "relu": jax.nn.relu,
}


def orthonormal_directions(seed: int, k: int, d: int) -> np.ndarray:
    """K orthonormal rows u_j ∈ R^d: the Q factor of a Gaussian d×K matrix (shape (K, d)).

    Drawn with numpy's ``default_rng(seed)`` (fixed data, no compile on the JAX side).
    """
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))
    return (q * np.sign(np.diagonal(r))).T


# -- neurons family -------------------------------------------------------------------------
@dataclass(frozen=True)
class NeuronsSpec:
    """Static options of the neurons game (hashable: one compile per spec)."""

    k: int = 3                                   # number of modes K
    d: int = 50                                  # ambient dimension
    alphas: tuple[float, ...] = (1.0, 0.6, 0.4)  # mode scales α_j
    probs: tuple[float, ...] | None = None       # mode probabilities p_j (None: uniform)
    m: int = 6                                   # generator vectors
    m_disc: int = 6                              # discriminator neurons m_D
    sigma: str = "cubic"                         # discriminator activation σ
    init_scale: float = 0.1                      # s in N(0, s²/d)
    noise: float = 0.0                           # data noise std (minibatch only)
    batch_size: int | None = None                # None: exact expectations

    def __post_init__(self) -> None:
        positive_int("k (number of modes)", self.k)
        positive_int("d (dimension)", self.d)
        positive_int("m (generator vectors)", self.m)
        positive_int("m_disc (discriminator neurons)", self.m_disc)
        require(self.k <= self.d, f"k={self.k} orthonormal directions need d >= k; raise d or lower k")
        require(len(self.alphas) == self.k,
                f"alphas has {len(self.alphas)} entries but k={self.k}; give one scale per mode")
        for a in self.alphas:
            finite_positive("each mode scale alpha", a)
        if self.probs is not None:
            require(len(self.probs) == self.k,
                    f"probs has {len(self.probs)} entries but k={self.k}; give one probability per mode")
            for p in self.probs:
                finite_positive("each mode probability", p)
            require(abs(sum(self.probs) - 1.0) < 1e-6, f"probs must sum to 1, got {sum(self.probs)}")
        one_of("discriminator activation sigma", self.sigma, SIGMAS)
        finite_positive("init_scale", self.init_scale)
        finite_positive("noise", self.noise, allow_zero=True)
        if self.batch_size is None:
            require(self.noise == 0.0, "exact expectations need noise = 0; set a batch_size for noisy data")
        else:
            positive_int("batch_size (None for exact expectations)", self.batch_size)

    @property
    def p(self) -> np.ndarray:
        return np.full(self.k, 1.0 / self.k) if self.probs is None else np.asarray(self.probs, float)


@dataclass(frozen=True)
class Neurons:
    """A neurons game instance: its spec, the directions U (K, d) and the modes μ = α ⊙ U."""

    spec: NeuronsSpec
    U: jax.Array       # (K, d) orthonormal directions u_j
    means: jax.Array   # (K, d) μ_j = α_j u_j
    probs: jax.Array   # (K,) p_j

    @classmethod
    def create(cls, spec: NeuronsSpec, seed: int = 0) -> "Neurons":
        """The game whose K orthonormal directions are drawn with data seed ``seed``."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"the data seed must be an integer, got {seed!r}")
        U = orthonormal_directions(int(seed), spec.k, spec.d)
        means = np.asarray(spec.alphas)[:, None] * U
        # float64 numpy -> JAX's default float (float32 unless x64 is enabled)
        return cls(spec, jnp.asarray(U), jnp.asarray(means), jnp.asarray(spec.p))

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """v_k, w_i ~ N(0, s²/d), a_i = 1."""
        s = self.spec
        kv, kw = jax.random.split(key)
        scale = s.init_scale / math.sqrt(s.d)
        gen = {"v": scale * jax.random.normal(kv, (s.m, s.d), self.U.dtype)}
        disc = {"w": scale * jax.random.normal(kw, (s.m_disc, s.d), self.U.dtype),
                "a": jnp.ones((s.m_disc,), self.U.dtype)}
        return gen, disc

    def discriminate(self, disc: dict, x: jax.Array) -> jax.Array:
        """D(x) = Σ_i a_i σ(w_i·x) for x of shape (n, d); returns (n,)."""
        # Σ_i as an elementwise product and sum: under vmap this fuses, a batched mat-vec does not.
        return jnp.sum(SIGMAS[self.spec.sigma](x @ disc["w"].T) * disc["a"], axis=-1)

    def generate(self, gen: dict) -> jax.Array:
        """The generator's support: all m outputs G(z) = v_z, shape (m, d)."""
        return gen["v"]

    def gen_loss(self, gen: dict, disc: dict, batch: tuple) -> jax.Array:
        """L_G = Σ_k wz_k softplus(−D(v_k))  (non-saturating, eq. L_G)."""
        _, _, wz = batch
        return jnp.dot(wz, jax.nn.softplus(-self.discriminate(disc, gen["v"])))

    def disc_loss(self, gen: dict, disc: dict, batch: tuple) -> jax.Array:
        """L_D = Σ_n wx_n softplus(−D(x_n)) + Σ_k wz_k softplus(D(v_k))  (logistic, eq. L_D)."""
        x, wx, wz = batch
        real = jnp.dot(wx, jax.nn.softplus(-self.discriminate(disc, x)))
        fake = jnp.dot(wz, jax.nn.softplus(self.discriminate(disc, gen["v"])))
        return real + fake

    def exact_batch(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(μ, p, 1/m): the batch whose weighted losses are the exact expectations."""
        m = self.spec.m
        return self.means, self.probs, jnp.full((m,), 1.0 / m, self.U.dtype)

    def sample_batch(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Exact-expectation batch, or b modes ~ p (+ noise) and b latents ~ uniform{1..m}."""
        b = self.spec.batch_size
        if b is None:
            return self.exact_batch()
        kj, kn, kz = jax.random.split(key, 3)
        j = jax.random.choice(kj, self.spec.k, (b,), p=self.probs)
        x = self.means[j] + self.spec.noise * jax.random.normal(kn, (b, self.spec.d), self.U.dtype)
        z = jax.random.randint(kz, (b,), 0, self.spec.m)
        wz = jnp.zeros((self.spec.m,), self.U.dtype).at[z].add(1.0 / b)
        return x, jnp.full((b,), 1.0 / b, self.U.dtype), wz


# -- mixture of 2-D Gaussians -----------------------------------------------------------------
LAYOUTS = ("ring", "grid")


@dataclass(frozen=True)
class Mixture2DSpec:
    """Static options of the ring / grid game."""

    layout: str = "ring"        # "ring" (8 on a circle) or "grid" (5×5)
    n_ring: int = 8             # modes on the ring
    radius: float = 2.0         # ring radius
    grid_size: int = 5          # grid is grid_size × grid_size
    grid_spacing: float = 1.0   # distance between grid neighbours (centred grid)
    std: float = 0.02           # std of every Gaussian
    latent_dim: int = 2         # Gaussian latent z ∈ R^latent_dim
    hidden: int = 64            # width of both hidden layers (G and D)
    batch_size: int = 128       # real and fake samples per gradient

    def __post_init__(self) -> None:
        one_of("layout", self.layout, LAYOUTS)
        for name in ("n_ring", "grid_size", "latent_dim", "hidden", "batch_size"):
            positive_int(name, getattr(self, name))
        for name in ("radius", "grid_spacing", "std"):
            finite_positive(name, getattr(self, name))


def mixture_centers(spec: Mixture2DSpec) -> np.ndarray:
    """Mode centres: radius·(cos 2πj/n, sin 2πj/n), or the centred grid spacing·(i − (g−1)/2, ·)."""
    if spec.layout == "ring":
        t = 2 * np.pi * np.arange(spec.n_ring) / spec.n_ring
        return spec.radius * np.stack([np.cos(t), np.sin(t)], axis=1)
    g = np.arange(spec.grid_size) - (spec.grid_size - 1) / 2
    xx, yy = np.meshgrid(g, g, indexing="ij")
    return spec.grid_spacing * np.stack([xx.ravel(), yy.ravel()], axis=1)


def _mlp_init(key: jax.Array, sizes: tuple[int, ...]) -> dict:
    """He-normal weights N(0, 2/fan_in) for ReLU layers, N(0, 1/fan_in) for the output; zero biases."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        gain = 1.0 if i == len(sizes) - 2 else 2.0
        params[f"W{i}"] = jax.random.normal(k, (n_in, n_out)) * math.sqrt(gain / n_in)
        params[f"b{i}"] = jnp.zeros((n_out,))
    return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
    """h_{l+1} = relu(h_l W_l + b_l) for the hidden layers, a linear last layer."""
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"W{i}"] + params[f"b{i}"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


@dataclass(frozen=True)
class Mixture2D:
    """A ring / grid game instance: its spec and the mode centres (M, 2)."""

    spec: Mixture2DSpec
    centers: jax.Array

    @classmethod
    def create(cls, spec: Mixture2DSpec) -> "Mixture2D":
        return cls(spec, jnp.asarray(mixture_centers(spec), jnp.float32))

    @property
    def n_modes(self) -> int:
        return int(self.centers.shape[0])

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        s = self.spec
        kg, kd = jax.random.split(key)
        gen = _mlp_init(kg, (s.latent_dim, s.hidden, s.hidden, 2))
        disc = _mlp_init(kd, (2, s.hidden, s.hidden, 1))
        return gen, disc

    def generate(self, gen: dict, z: jax.Array) -> jax.Array:
        """G(z) for z of shape (n, latent_dim); returns (n, 2)."""
        return mlp(gen, z)

    def discriminate(self, disc: dict, x: jax.Array) -> jax.Array:
        """D(x) (logit) for x of shape (n, 2); returns (n,)."""
        return mlp(disc, x)[:, 0]

    def gen_loss(self, gen: dict, disc: dict, batch: tuple) -> jax.Array:
        """L_G = mean softplus(−D(G(z)))  (non-saturating)."""
        z, _ = batch
        return jnp.mean(jax.nn.softplus(-self.discriminate(disc, self.generate(gen, z))))

    def disc_loss(self, gen: dict, disc: dict, batch: tuple) -> jax.Array:
        """L_D = mean softplus(−D(x)) + mean softplus(D(G(z)))  (logistic)."""
        z, x = batch
        real = jnp.mean(jax.nn.softplus(-self.discriminate(disc, x)))
        fake = jnp.mean(jax.nn.softplus(self.discriminate(disc, self.generate(gen, z))))
        return real + fake

    def sample_data(self, key: jax.Array, n: int) -> jax.Array:
        """n samples of the mixture: a uniform mode plus N(0, std² I)."""
        kj, kn = jax.random.split(key)
        j = jax.random.randint(kj, (n,), 0, self.n_modes)
        return self.centers[j] + self.spec.std * jax.random.normal(kn, (n, 2))

    def sample_batch(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z, x): b latents ~ N(0, I) and b data samples."""
        kz, kx = jax.random.split(key)
        b = self.spec.batch_size
        return jax.random.normal(kz, (b, self.spec.latent_dim)), self.sample_data(kx, b)


def _flatten_neurons(g: Neurons):
    return (g.U, g.means, g.probs), g.spec


def _flatten_mixture(g: Mixture2D):
    return (g.centers,), g.spec


jax.tree_util.register_pytree_node(Neurons, _flatten_neurons, lambda s, c: Neurons(s, *c))
jax.tree_util.register_pytree_node(Mixture2D, _flatten_mixture, lambda s, c: Mixture2D(s, *c))

