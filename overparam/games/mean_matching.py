"""The mean-matching game of the overparameterization theorem (Balaji et al., ICLR 2021).

Notation (docs/theory.md): latent codes z_j ∈ R^d (j = 1..n), data x_i ∈ R^m.

* Generator, one hidden layer:   G(z) = V φ(W z) / √k,   W ∈ R^{k×d} trained, V ∈ R^{m×k}
  fixed Gaussian (``train_v=True`` trains it too).
  Two hidden layers (``depth=2``): G(z) = V φ(W₂ φ(W₁ z)/√k) / √k.
* Discriminator, linear:          D(x) = dᵀ x.
  Random features:                D(x) = dᵀ ψ(F x) / √p, F ∈ R^{p×m} fixed Gaussian.
  Write e(x) for the discriminator's embedding (x, or ψ(Fx)/√p).
* Value (eq. V):  h(W, d) = ⟨d, mean_j e(G(z_j)) − mean_i e(x_i)⟩ − ½‖d‖².
  The generator minimizes h, the discriminator maximizes it.
* Mean map f(W) = mean_j e(G(z_j)), target x̄ = mean_i e(x_i), residual r = f(W) − x̄.
  Best response d*(W) = r (eq. BR), reduced objective max_d h = ½‖r‖² (eq. R).

Deterministic GDA uses the fixed latent set and all data every step (``batch_size=None``);
stochastic GDA draws a fresh Gaussian latent minibatch and a data minibatch each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError, finite_positive, one_of, positive_int
from overparam.games.activations import ACTIVATIONS, activation

__all__ = ["MeanMatching", "MeanMatchingSpec", "teacher_data"]

DISCRIMINATORS = ("linear", "random_features")


@dataclass(frozen=True)
class MeanMatchingSpec:
    """Static shape and options of a mean-matching game (hashable; one compile per spec)."""

    m: int = 8                  # data dimension
    d: int = 8                  # latent dimension
    k: int = 64                 # generator width (hidden units)
    n: int = 64                 # number of fixed latent codes
    phi: str = "relu"           # generator activation φ
    depth: int = 1              # hidden layers of the generator: 1 or 2
    train_v: bool = False       # also train the readout V
    disc: str = "linear"        # "linear" or "random_features"
    p: int = 8                  # random features (random_features discriminator only)
    psi: str = "tanh"           # random-feature activation ψ
    batch_size: int | None = None  # None: fixed latent set, full batch (deterministic GDA)
    init_scale: float = 1.0     # W ~ N(0, init_scale² / d)

    def __post_init__(self) -> None:
        for name in ("m", "d", "k", "n", "p"):
            positive_int(f"{name} (mean-matching game)", getattr(self, name))
        one_of("generator activation phi", self.phi, ACTIVATIONS)
        one_of("random-feature activation psi", self.psi, ACTIVATIONS)
        one_of("discriminator", self.disc, DISCRIMINATORS)
        if self.depth not in (1, 2):
            raise ConfigError(f"generator depth must be 1 or 2 hidden layers, got {self.depth!r}")
        if self.batch_size is not None:
            positive_int("batch_size (use None for the full fixed latent set)", self.batch_size)
        finite_positive("init_scale", self.init_scale)

    @property
    def feature_dim(self) -> int:
        """Dimension of the discriminator's embedding e(x): m (linear) or p (random features)."""
        return self.m if self.disc == "linear" else self.p


def teacher_data(
    key: jax.Array, m: int, d: int, n_samples: int, width: int = 512, phi: str = "relu", depth: int = 1
) -> jax.Array:
    """Realizable data: x_i = V_t φ(W_t z_i)/√k_t from a wide random teacher (k_t = ``width``)."""
    spec = MeanMatchingSpec(m=m, d=d, k=width, n=n_samples, phi=phi, depth=depth)
    kv, kw, kz = jax.random.split(key, 3)
    teacher = MeanMatching.create(spec, kv, data=jnp.zeros((1, m)))
    gen, _ = teacher.init(kw)
    z = jax.random.normal(kz, (n_samples, d))
    return teacher.generate(gen, z)


@dataclass(frozen=True)
class MeanMatching:
    """A mean-matching game instance: its spec plus the fixed arrays (V, Z, X, F)."""

    spec: MeanMatchingSpec
    V: jax.Array                 # (m, k) readout (fixed unless train_v; then the initial value)
    Z: jax.Array                 # (n, d) fixed latent codes
    X: jax.Array                 # (N, m) data
    F: jax.Array | None = None   # (p, m) random-feature matrix
    zero_sum = True              # gen_loss = value, disc_loss = −value (one backward pass)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(cls, spec: MeanMatchingSpec, key: jax.Array, data: Any) -> "MeanMatching":
        """Draw V ~ N(0,1), the n latent codes z_j ~ N(0, I_d) and F ~ N(0,1) from ``key``.

        ``data`` is an (N, m) array of samples (see :func:`teacher_data` for the realizable
        default).
        """
        if isinstance(data, (np.ndarray, list, tuple)) or hasattr(data, "shape"):
            shape = tuple(np.shape(data))
            if len(shape) != 2 or shape[1] != spec.m or shape[0] < 1:
                raise ConfigError(
                    f"data must be an array of shape (N, m) = (N, {spec.m}) with N >= 1, got shape {shape}; "
                    "set m to the data's dimension or reshape the data"
                )
            if isinstance(data, np.ndarray) and not np.all(np.isfinite(data)):
                raise ConfigError("data contains NaN or Inf values; clean the data file")
        else:
            raise ConfigError(f"data must be an (N, {spec.m}) array, got {type(data).__name__}")
        kv, kz, kf = jax.random.split(key, 3)
        V = jax.random.normal(kv, (spec.m, spec.k))
        Z = jax.random.normal(kz, (spec.n, spec.d))
        F = jax.random.normal(kf, (spec.p, spec.m)) if spec.disc == "random_features" else None
        return cls(spec, V, Z, jnp.asarray(data, dtype=V.dtype), F)

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """Initial players: W ~ N(0, init_scale²/d) (W₂ ~ N(0,1) for depth 2), d = 0."""
        s = self.spec
        k1, k2 = jax.random.split(key)
        if s.depth == 1:
            gen = {"W": s.init_scale * jax.random.normal(k1, (s.k, s.d)) / math.sqrt(s.d)}
        else:
            gen = {
                "W1": s.init_scale * jax.random.normal(k1, (s.k, s.d)) / math.sqrt(s.d),
                "W2": jax.random.normal(k2, (s.k, s.k)),
            }
        if s.train_v:
            gen["V"] = self.V
        disc = {"d": jnp.zeros((s.feature_dim,), self.V.dtype)}
        return gen, disc

    # -- the model -----------------------------------------------------------------------
    def hidden(self, gen: dict, z: jax.Array) -> jax.Array:
        """Last hidden layer, shape (b, k): φ(W z) or φ(W₂ φ(W₁ z)/√k)."""
        phi = activation(self.spec.phi)
        if self.spec.depth == 1:
            return phi(z @ gen["W"].T)
        h1 = phi(z @ gen["W1"].T)
        return phi(h1 @ gen["W2"].T / math.sqrt(self.spec.k))

    def generate(self, gen: dict, z: jax.Array) -> jax.Array:
        """G(z) for a batch z of shape (b, d); returns (b, m)."""
        V = gen.get("V", self.V)
        return self.hidden(gen, z) @ V.T / math.sqrt(self.spec.k)

    def embed(self, x: jax.Array) -> jax.Array:
        """Discriminator embedding e(x): x (linear) or ψ(F x)/√p (random features)."""
        if self.spec.disc == "linear":
            return x
        return activation(self.spec.psi)(x @ self.F.T) / math.sqrt(self.spec.p)

    def mean_map(self, gen: dict, z: jax.Array | None = None) -> jax.Array:
        """f(W) = mean_j e(G(z_j)) over the fixed codes (or the batch ``z``)."""
        return jnp.mean(self.embed(self.generate(gen, self.Z if z is None else z)), axis=0)

    def target(self, x: jax.Array | None = None) -> jax.Array:
        """x̄ = mean_i e(x_i) over the data (or the batch ``x``)."""
        return jnp.mean(self.embed(self.X if x is None else x), axis=0)

    def value(self, gen: dict, disc: dict, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """h = ⟨d, mean e(G(z)) − mean e(x)⟩ − ½‖d‖²  (eq. V)."""
        z, x = batch
        dvec = disc["d"]
        return jnp.dot(dvec, self.mean_map(gen, z) - self.target(x)) - 0.5 * jnp.dot(dvec, dvec)

    def gen_loss(self, gen: dict, disc: dict, batch: Any) -> jax.Array:
        return self.value(gen, disc, batch)

    def disc_loss(self, gen: dict, disc: dict, batch: Any) -> jax.Array:
        return -self.value(gen, disc, batch)

    def sample_batch(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Full fixed batch (Z, X), or a fresh latent minibatch and a data minibatch."""
        b = self.spec.batch_size
        if b is None:
            return self.Z, self.X
        kz, kx = jax.random.split(key)
        z = jax.random.normal(kz, (b, self.spec.d), self.V.dtype)
        idx = jax.random.randint(kx, (b,), 0, self.X.shape[0])
        return z, self.X[idx]

    # -- closed forms (used by the theory layer and metrics, never by the simulator) ------
    def residual(self, gen: dict) -> jax.Array:
        """r = f(W) − x̄ on the fixed codes and all data."""
        return self.mean_map(gen) - self.target()

    def best_response(self, gen: dict) -> dict:
        """d*(W) = f(W) − x̄, the maximizer of h in d  (eq. BR)."""
        return {"d": self.residual(gen)}

    def reduced_objective(self, gen: dict) -> jax.Array:
        """max_d h(W, d) = ½‖f(W) − x̄‖²  (eq. R)."""
        r = self.residual(gen)
        return 0.5 * jnp.dot(r, r)

    def jjt_closed_form(self, gen: dict) -> jax.Array:
        """J Jᵀ = V diag(‖a_l‖²) Vᵀ / k with a_l = mean_j φ'(w_lᵀ z_j) z_j  (eq. JJ).

        Valid for the one-hidden-layer generator, linear discriminator, W trained only.
        """
        s = self.spec
        if s.depth != 1 or s.disc != "linear" or s.train_v:
            raise ConfigError("the closed-form JJᵀ holds for depth=1, a linear discriminator and V fixed; "
                              "use overparam.theory.jjt (autodiff) for other games")
        phi = activation(s.phi)
        pre = self.Z @ gen["W"].T                           # (n, k)
        dphi = jax.vmap(jax.vmap(jax.grad(phi)))(pre)       # φ'(w_l·z_j)
        a = dphi.T @ self.Z / s.n                           # (k, d): a_l
        return (self.V * jnp.sum(a * a, axis=1)) @ self.V.T / s.k


def _flatten(g: MeanMatching):
    return (g.V, g.Z, g.X, g.F), g.spec


def _unflatten(spec, children):
    return MeanMatching(spec, *children)


jax.tree_util.register_pytree_node(MeanMatching, _flatten, _unflatten)
