"""Linearized one-step maps of the schemes for a two-player game with scalar coordinates.

With (u, v) the generator's and the discriminator's coordinates and J the 2×2 Jacobian of
the (descent/ascent) vector field, one step of size (h_G, h_D) is, to first order,

* simultaneous:            M = I + diag(h_G, h_D) J
* player maps:             G = I + e₁ e₁ᵀ h_G J,    D = I + e₂ e₂ᵀ h_D J
* alternating, D first:    M = G Dⁿ      (n = n_disc)
* alternating, G first:    M = Dⁿ G

Both the Dirac-GAN (J at the equilibrium) and the mean-matching game (per eigenvalue s of
J₀J₀ᵀ, J = [[0, −s], [1, −1]] in (r, d) coordinates) use these maps.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from overparam.errors import ConfigError, positive_int


def linear_map(J: Any, h_gen: float, h_disc: float, scheme: str = "simultaneous", n_disc: int = 1) -> np.ndarray:
    """The linearized one-step map of ``scheme`` for field Jacobian J (see the module docstring)."""
    J = np.asarray(np.array(J, dtype=complex).real, dtype=float)
    n_disc = positive_int("n_disc", n_disc)
    if scheme == "simultaneous":
        if n_disc != 1:
            raise ConfigError("simultaneous GD takes n_disc = 1")
        return np.eye(2) + np.diag([h_gen, h_disc]) @ J
    G = np.array([[1 + h_gen * J[0, 0], h_gen * J[0, 1]], [0.0, 1.0]])
    D = np.array([[1.0, 0.0], [h_disc * J[1, 0], 1 + h_disc * J[1, 1]]])
    Dn = np.linalg.matrix_power(D, n_disc)
    if scheme == "g_first":
        return Dn @ G
    if scheme == "d_first":
        return G @ Dn
    raise ConfigError(f"unknown scheme {scheme!r}; use simultaneous, g_first or d_first")


def spectral_radius(J: Any, h_gen: float, h_disc: float, scheme: str = "simultaneous", n_disc: int = 1) -> float:
    """Largest |eigenvalue| of :func:`linear_map`: the predicted per-step factor near equilibrium."""
    return float(np.max(np.abs(np.linalg.eigvals(linear_map(J, h_gen, h_disc, scheme, n_disc)))))
