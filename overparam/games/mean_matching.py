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

__all__ = ["MeanMatching", "MeanMatchingSpec", "PaddedMeanMatching", "relu_mean_hidden", "teacher_data"]

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


# -- the same game with its hidden width padded to a bucket size (one program for many widths) --
@jax.custom_vjp
def relu_mean_hidden(W: jax.Array, Z: jax.Array) -> jax.Array:
    """h̄ = mean_j relu(Wᵀ z_j) for W stored as (d, K): shape (K,)  (mean hidden layer of eq. V).

    Closed-form reverse mode for the default ReLU game: ∂⟨g, h̄⟩/∂W = Zᵀ 1[ZW > 0] diag(g) / n,
    i.e. column l is g_l · a_l with a_l = mean_j 1[w_lᵀ z_j > 0] z_j (the a_l of eq. JJ). One
    (n, d)·(d, K) product forward and one (d, n)·(n, K) product backward, the indicator shared.
    No gradient flows to Z (the latent codes are data). Tested equal to autodiff.
    """
    return jnp.mean(jax.nn.relu(Z @ W), axis=0)


def _relu_mean_fwd(W, Z):
    pre = Z @ W
    on = (pre > 0).astype(W.dtype)
    return jnp.mean(pre * on, axis=0), (on, Z)


def _relu_mean_bwd(res, g):
    on, Z = res
    return (Z.T @ on) * (g / Z.shape[0]), jnp.zeros_like(Z)


relu_mean_hidden.defvjp(_relu_mean_fwd, _relu_mean_bwd)


@dataclass(frozen=True)
class PaddedMeanMatching:
    """The mean-matching game of eq. V with the hidden width padded from k to a bucket size K ≥ k.

    Many widths then share one compiled program (vmapped over (width, seed) instances). The
    true width enters only as data: ``sqrt_k`` = √k (outputs are divided by it, as in
    :class:`MeanMatching`) and ``mask`` (K,) with ones on the k real
    units. Padded units start at exactly zero (their W columns, V columns and W₂ rows/columns
    are 0) and stay exactly zero and inert: their hidden outputs are multiplied by ``mask``
    before they reach anything, so their gradients are exactly 0 for every φ, optimizer and
    scheme. Layout: W is stored as (d, K) (W_here = Wᵀ), so the contraction is Z·W with the
    hidden units on the fast axis; the readout is V ∈ R^{m×K} as in :class:`MeanMatching`
    (trained V: the leaf ``"V"``); depth 2 stores W₂ᵀ as ``"W2"``. With a linear
    discriminator the mean over latent codes is taken before the readout:
    f(W) = V mean_j φ(Wᵀ z_j)/√k, which equals mean_j G(z_j) by linearity.
    ``fast_relu`` (ReLU, depth 1, full batch) uses :func:`relu_mean_hidden`'s closed-form
    gradient; autodiff is the route for everything else.
    """

    spec: MeanMatchingSpec       # static options; spec.k is the bucket size K
    V: jax.Array                 # (m, K) readout, zero columns beyond k
    Z: jax.Array                 # (n, d) fixed latent codes
    X: jax.Array                 # (N, m) data (used for minibatches)
    xbar: jax.Array              # (q,) target mean embedding x̄ (precomputed)
    sqrt_k: jax.Array            # () √k of the true width
    mask: jax.Array              # (K,) 1 on real units, 0 on padding
    F: jax.Array | None = None   # (p, m) random-feature matrix
    fast_relu: bool = False      # static: closed-form ReLU gradient
    zero_sum = True

    def hidden_mean_or_batch(self, gen: dict, z: jax.Array, mean: bool) -> jax.Array:
        """mean_j h(z_j) (shape (K,)) or the batch h(z) (shape (b, K)), masked; h = last hidden layer."""
        s = self.spec
        phi = activation(s.phi)
        if s.depth == 1:
            if mean and self.fast_relu:
                return relu_mean_hidden(gen["W"], z) * self.mask
            h = phi(z @ gen["W"]) * self.mask
        else:
            h1 = phi(z @ gen["W1"]) * self.mask
            h = phi((h1 @ gen["W2"]) / self.sqrt_k) * self.mask
        return jnp.mean(h, axis=0) if mean else h

    def mean_map(self, gen: dict, z: jax.Array | None = None) -> jax.Array:
        """f(W) = mean_j e(G(z_j)), G(z) = V φ(Wᵀz)/√k (mean taken before V when e is linear)."""
        z = self.Z if z is None else z
        V = gen.get("V", self.V)
        if self.spec.disc == "linear":
            return (V @ self.hidden_mean_or_batch(gen, z, True)) / self.sqrt_k
        g = (self.hidden_mean_or_batch(gen, z, False) @ V.T) / self.sqrt_k
        e = activation(self.spec.psi)(g @ self.F.T) / math.sqrt(self.spec.p)
        return jnp.mean(e, axis=0)

    def target(self, x: jax.Array | None = None) -> jax.Array:
        if x is None:
            return self.xbar
        if self.spec.disc == "linear":
            return jnp.mean(x, axis=0)
        return jnp.mean(activation(self.spec.psi)(x @ self.F.T) / math.sqrt(self.spec.p), axis=0)

    def residual(self, gen: dict) -> jax.Array:
        """r = f(W) − x̄ on the fixed codes and all data."""
        return self.mean_map(gen) - self.xbar

    def value(self, gen: dict, disc: dict, batch: Any) -> jax.Array:
        """h = ⟨d, f(W) − x̄⟩ − ½‖d‖²  (eq. V); ``batch`` None = fixed codes and all data."""
        dvec = disc["d"]
        if batch is None:
            r = self.residual(gen)
        else:
            z, x = batch
            r = self.mean_map(gen, z) - self.target(x)
        return jnp.dot(dvec, r) - 0.5 * jnp.dot(dvec, dvec)

    def gen_loss(self, gen: dict, disc: dict, batch: Any) -> jax.Array:
        return self.value(gen, disc, batch)

    def disc_loss(self, gen: dict, disc: dict, batch: Any) -> jax.Array:
        return -self.value(gen, disc, batch)

    def sample_batch(self, key: jax.Array) -> Any:
        """None (the fixed set, full batch) or the same fresh minibatch draws as :class:`MeanMatching`."""
        b = self.spec.batch_size
        if b is None:
            return None
        kz, kx = jax.random.split(key)
        z = jax.random.normal(kz, (b, self.spec.d), self.V.dtype)
        idx = jax.random.randint(kx, (b,), 0, self.X.shape[0])
        return z, self.X[idx]


jax.tree_util.register_pytree_node(
    PaddedMeanMatching,
    lambda g: ((g.V, g.Z, g.X, g.xbar, g.sqrt_k, g.mask, g.F), (g.spec, g.fast_relu)),
    lambda aux, ch: PaddedMeanMatching(aux[0], *ch, fast_relu=aux[1]),
)


def jjt_eigenvalues(V: np.ndarray, Z: np.ndarray, W: np.ndarray, phi: str) -> np.ndarray:
    """Ascending eigenvalues of J₀J₀ᵀ = V diag(‖a_l‖²) Vᵀ / k, a_l = mean_j φ'(w_lᵀ z_j) z_j (eq. JJ), in float64.

    Host-side numpy for the one-hidden-layer generator, linear discriminator, V fixed
    (V: (m, k), Z: (n, d), W: (k, d)). Computed as the squared singular values of
    B = V diag(‖a_l‖)/√k (J₀J₀ᵀ = B Bᵀ), so for k < m the m − k structural zero eigenvalues
    are exactly 0 rather than rounding noise.
    """
    V, Z, W = (np.asarray(a, np.float64) for a in (V, Z, W))
    k = W.shape[0]
    a = (NUMPY_DPHI[phi](Z @ W.T).T @ Z) / Z.shape[0]          # (k, d)
    B = V * (np.linalg.norm(a, axis=1) / math.sqrt(k))           # (m, k)
    sv = np.linalg.svd(B, compute_uv=False)
    eig = np.zeros(V.shape[0])
    eig[: sv.size] = sv * sv
    return np.sort(eig)


def _gelu_dphi(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


NUMPY_DPHI = {  # φ' in numpy (φ'(0) = 0 for ReLU, as jax.grad(jax.nn.relu)(0.))
    "relu": lambda x: (x > 0).astype(x.dtype),
    "tanh": lambda x: 1 - np.tanh(x) ** 2,
    "softplus": lambda x: 1 / (1 + np.exp(-x)),
    "gelu": _gelu_dphi,
    "linear": np.ones_like,
}
