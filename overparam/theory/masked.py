"""The masked Jacobian of a pruned generator and the GDA rate it predicts (docs/lottery.md).

A pruned generator trains only its surviving weights: with a mask M (True = survives) the
mean map of the pruned network is f_M(W) = f(W ⊙ M), whose Jacobian is

    J_M = J(W ⊙ M) diag(M),     J_M J_Mᵀ = Σ_{surviving e} ∂f/∂w_e (∂f/∂w_e)ᵀ.        (JJ_M)

For the one-hidden-layer mean-matching generator G(z) = V φ(W z)/√k this is the closed form

    J_M J_Mᵀ = V diag(‖a_l ⊙ m_l‖²) Vᵀ / k,   a_l = mean_j φ'(w̃_lᵀ z_j) z_j,  w̃_l = w_l ⊙ m_l,

with m_l the mask of row l. Only *live* hidden units (rows with a surviving weight) enter, so
rank J_M J_Mᵀ ≤ min(#live units, m): a ticket with fewer than m live units cannot reach a
generic target. Near the rewound point the per-step contraction of simultaneous GDA is the
frozen-block radius of :func:`overparam.theory.spectral.predicted_rates` on J_M J_Mᵀ.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError
from overparam.games.activations import activation
from overparam.prune import apply_mask
from overparam.theory.spectral import predicted_rates

__all__ = ["live_units", "masked_jjt", "masked_jjt_mean_matching", "masked_predicted_rates"]


def masked_jjt(mean_map: Callable[[Any], jax.Array], gen: Any, mask: Any) -> jax.Array:
    """J_M J_Mᵀ by autodiff of the masked map W ↦ f(W ⊙ M) (eq. JJ_M); jit-able, ``mask``
    is a pytree of booleans (None leaves are unpruned and trained)."""
    leaves, treedef = jax.tree_util.tree_flatten(gen)
    fm = lambda ls: mean_map(apply_mask(jax.tree_util.tree_unflatten(treedef, ls), mask))
    jac = jax.jacobian(fm)(leaves)
    J = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)
    return J @ J.T


def masked_jjt_mean_matching(game: Any, gen: dict, mask: dict) -> jax.Array:
    """Closed form V diag(‖a_l ⊙ m_l‖²) Vᵀ / k of (JJ_M) for the one-hidden-layer mean-matching
    generator with a linear discriminator and V fixed; ``mask["W"]`` masks W (jit-able)."""
    s = game.spec
    if s.depth != 1 or s.disc != "linear" or s.train_v:
        raise ConfigError("the closed-form masked JJᵀ holds for depth=1, a linear discriminator and V fixed; "
                          "use masked_jjt (autodiff) for other games")
    if set(gen) != {"W"} or mask.get("W") is None:
        raise ConfigError("masked_jjt_mean_matching needs gen = {'W': ...} and mask = {'W': bool array}")
    M = jnp.asarray(mask["W"], bool)
    W = jnp.where(M, gen["W"], 0.0)
    dphi = jax.vmap(jax.vmap(jax.grad(activation(s.phi))))(game.Z @ W.T)   # φ'(w̃_l·z_j), (n, k)
    a = (dphi.T @ game.Z / s.n) * M                                          # a_l ⊙ m_l, (k, d)
    return (game.V * jnp.sum(a * a, axis=1)) @ game.V.T / s.k


def masked_predicted_rates(JJt_masked: Any, mu: float, eta: float, scheme: str = "simultaneous",
                           n_disc: int = 1) -> dict[str, float]:
    """λ_min, λ_max of J_M J_Mᵀ, the simple rate 1 − μλ_min and the frozen-block radius."""
    JJt = np.asarray(JJt_masked, np.float64)
    if JJt.ndim != 2 or JJt.shape[0] != JJt.shape[1] or not np.all(np.isfinite(JJt)):
        raise ConfigError(f"J_M J_Mᵀ must be a finite square matrix, got shape {JJt.shape}")
    return predicted_rates(0.5 * (JJt + JJt.T), mu, eta, scheme, n_disc)


def live_units(mask_w: Any) -> Any:
    """Hidden units (rows of W) with at least one surviving weight; works with a leading axis."""
    return jnp.sum(jnp.any(jnp.asarray(mask_w, bool), axis=-1), axis=-1)

