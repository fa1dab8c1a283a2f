"""The bilinear game min_x max_y x·y: the smallest game where GDA's schemes differ in closed form.

Notation: generator x ∈ R^n (or a scalar), discriminator y of the same shape.

* Value (eq. B):  V(x, y) = x·y = Σ_i x_i y_i; the generator minimizes V, the discriminator
  maximizes it (its loss is −V). The unique equilibrium is (0, 0).
* With step size η for both players (SGD), per step (docs/theory.md):

  - simultaneous GDA  x' = x − ηy, y' = y + ηx:                ‖(x', y')‖ = √(1 + η²) ‖(x, y)‖  (eq. B-sim)
  - alternating, generator first  x' = x − ηy, y' = y + ηx':  Q = ‖x‖² + ‖y‖² − η x·y is conserved  (eq. B-alt)
    (discriminator first: Q = ‖x‖² + ‖y‖² + η x·y)
  - extragradient  x' = x − η(y + ηx), y' = y + η(x − ηy):    ‖(x', y')‖ = √(1 − η² + η⁴) ‖(x, y)‖  (eq. B-eg)

The closed forms live here for the tests and the theory layer; the simulator never uses them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from overparam.errors import finite_positive, one_of

__all__ = ["Bilinear", "alternating_invariant", "extragradient_factor", "simultaneous_factor"]


@dataclass(frozen=True)
class Bilinear:
    """min_x max_y x·y; ``gen`` is x, ``disc`` is y (arrays of equal shape, scalars allowed)."""

    def value(self, gen: jax.Array, disc: jax.Array, batch: Any = None) -> jax.Array:
        """V(x, y) = Σ_i x_i y_i  (eq. B)."""
        del batch
        return jnp.sum(gen * disc)

    def gen_loss(self, gen: jax.Array, disc: jax.Array, batch: Any = None) -> jax.Array:
        return self.value(gen, disc, batch)

    def disc_loss(self, gen: jax.Array, disc: jax.Array, batch: Any = None) -> jax.Array:
        return -self.value(gen, disc, batch)

    def sample_batch(self, key: jax.Array) -> None:
        """Deterministic game: no data."""
        del key
        return None


def simultaneous_factor(eta: float) -> float:
    """Per-step growth of ‖(x, y)‖ under simultaneous GDA: √(1 + η²)  (eq. B-sim)."""
    eta = finite_positive("eta", eta)
    return math.sqrt(1.0 + eta**2)


def extragradient_factor(eta: float) -> float:
    """Per-step factor of ‖(x, y)‖ under extragradient: √(1 − η² + η⁴)  (eq. B-eg)."""
    eta = finite_positive("eta", eta)
    return math.sqrt(1.0 - eta**2 + eta**4)


def alternating_invariant(x: Any, y: Any, eta: float, order: str = "g_first") -> Any:
    """Q = ‖x‖² + ‖y‖² ∓ η x·y, conserved by alternating GDA (− for g_first, + for d_first)  (eq. B-alt)."""
    eta = finite_positive("eta", eta)
    sign = -1.0 if one_of("alternating order", order, ("g_first", "d_first")) == "g_first" else 1.0
    x, y = jnp.asarray(x), jnp.asarray(y)
    return jnp.sum(x * x) + jnp.sum(y * y) + sign * eta * jnp.sum(x * y)


jax.tree_util.register_pytree_node(Bilinear, lambda g: ((), None), lambda aux, ch: Bilinear())
