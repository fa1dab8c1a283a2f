"""Spectral predictions for GDA on the mean-matching game (docs/theory.md, "rates").

Near initialization the residual r = f(W) − x̄ and the discriminator d follow, per
eigenvalue s of J₀J₀ᵀ (J = ∂f/∂W), a 2×2 linear map. With the player maps
G: (r, d) ↦ (r − μ s d, d) and D: (r, d) ↦ (r, (1 − η) d + η r):

* simultaneous GDA:          [[1, −μs], [η, 1 − η]]       (the frozen-time block)
* alternating, D first:      G ∘ Dⁿ   (n = n_disc)
* alternating, G first:      Dⁿ ∘ G

The predicted per-step contraction is the largest spectral radius over the eigenvalues s;
for simultaneous GDA with 4μs ≤ η ≤ 1 it is at most 1 − μs, hence the simple prediction
1 − μ λ_min(J₀J₀ᵀ).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from overparam.theory.linear import linear_map


def jjt(mean_map, gen: Any) -> np.ndarray:
    """J Jᵀ of ``mean_map(gen)`` w.r.t. every leaf of ``gen`` (autodiff, float64 numpy)."""
    leaves, treedef = jax.tree_util.tree_flatten(gen)
    jac = jax.jacobian(lambda ls: mean_map(jax.tree_util.tree_unflatten(treedef, ls)))(leaves)
    J = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)
    J = np.asarray(J, dtype=np.float64)
    return J @ J.T


def linear_map_2x2(mu: float, eta: float, s: Any, scheme: str = "simultaneous", n_disc: int = 1) -> np.ndarray:
    """The linearized (r, d) map for eigenvalue(s) s; shape s.shape + (2, 2).

    In (r, d) coordinates the field's Jacobian is [[0, −s], [1, −1]] with step sizes (μ, η),
    so simultaneous GDA gives the frozen-time block [[1, −μs], [η, 1 − η]].
    """
    s = np.asarray(s, dtype=np.float64)
    mats = [linear_map([[0.0, -x], [1.0, -1.0]], mu, eta, scheme, n_disc) for x in s.ravel()]
    return np.asarray(mats).reshape(s.shape + (2, 2))


def block_radius(mu: float, eta: float, eigs: Any, scheme: str = "simultaneous", n_disc: int = 1) -> float:
    """max over s ∈ eigs of the spectral radius of :func:`linear_map_2x2`."""
    mats = linear_map_2x2(mu, eta, np.atleast_1d(eigs), scheme, n_disc)
    return float(np.max(np.abs(np.linalg.eigvals(mats))))


def gda_block(mu: float, eta: float, JJt: np.ndarray) -> np.ndarray:
    """The full frozen-time simultaneous block [[I, −μ JJᵀ], [η I, (1−η) I]] (2m × 2m)."""
    m = JJt.shape[0]
    eye = np.eye(m)
    return np.block([[eye, -mu * JJt], [eta * eye, (1 - eta) * eye]])


def predicted_rates(
    JJt: np.ndarray, mu: float, eta: float, scheme: str = "simultaneous", n_disc: int = 1
) -> dict[str, float]:
    """λ_min, λ_max of J₀J₀ᵀ, the simple rate 1 − μλ_min and the exact block radius."""
    eigs = np.linalg.eigvalsh(np.asarray(JJt, np.float64))
    lam_min, lam_max = float(max(eigs[0], 0.0)), float(eigs[-1])
    return {
        "lambda_min": lam_min,
        "lambda_max": lam_max,
        "rate_simple": 1.0 - mu * lam_min,
        "rate_block": block_radius(mu, eta, np.clip(eigs, 0.0, None), scheme, n_disc),
    }
