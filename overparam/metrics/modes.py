"""Mode recovery and coverage of multimodal generators (jit- and vmap-able).

* Neurons family (:func:`neuron_modes`): mode j is recovered when some generator vector
  v_k has cos(v_k, u_j) > 0.9 and a projection v_k·u_j within [0.5, 1.5]·α_j.
* Ring / grid (:func:`mixture_coverage`): of n generated samples (2,000 in the study), mode
  c counts as covered when at least 1 % of them lie within 3 std of it; quality is the
  share of samples within 3 std of some mode.

A diverged run (any non-finite value) recovers no mode and has quality 0. The thresholds
are fixed here (docs/theory.md §7) and are not study options: the criterion is never widened after the fact.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from overparam.errors import require

__all__ = ["COS_MIN", "MIN_SHARE", "N_STD", "PROJ_BAND", "mixture_coverage", "neuron_modes"]

COS_MIN = 0.9
PROJ_BAND = (0.5, 1.5)
N_STD = 3.0
MIN_SHARE = 0.01


def neuron_modes(
    v: jax.Array,
    directions: jax.Array,
    alphas: jax.Array,
    finite: jax.Array | bool = True,
    cos_min: float = COS_MIN,
    band: tuple[float, float] = PROJ_BAND,
) -> jax.Array:
    """Per-mode recovery (K,) bool: ∃k cos(v_k, u_j) > cos_min and v_k·u_j ∈ [lo, hi]·α_j.

    ``v``: (m, d) generator vectors; ``directions``: (K, d) unit u_j; ``alphas``: (K,).
    ``finite`` (the run's own finiteness flag) and the finiteness of v gate the result.
    """
    require(v.ndim == 2 and directions.ndim == 2 and v.shape[1] == directions.shape[1],
            f"v (m, d) and directions (K, d) must share d; got {v.shape} and {directions.shape}")
    proj = v @ directions.T                                   # (m, K): v_k·u_j
    norm = jnp.linalg.norm(v, axis=1, keepdims=True)          # (m, 1)
    cos = proj / jnp.where(norm > 0, norm, 1.0)
    lo, hi = band
    hit = (cos > cos_min) & (proj >= lo * alphas) & (proj <= hi * alphas)
    ok = jnp.all(jnp.isfinite(v)) & jnp.asarray(finite)
    return jnp.any(hit, axis=0) & ok


def mixture_coverage(
    samples: jax.Array,
    centers: jax.Array,
    std: float,
    finite: jax.Array | bool = True,
    n_std: float = N_STD,
    min_share: float = MIN_SHARE,
) -> tuple[jax.Array, jax.Array]:
    """(covered (M,) bool, quality scalar) of ``samples`` (n, 2) against ``centers`` (M, 2).

    covered_c: #{samples within n_std·std of centre c} ≥ min_share·n;
    quality:   #{samples within n_std·std of some centre} / n.
    """
    require(samples.ndim == 2 and centers.ndim == 2 and samples.shape[1] == centers.shape[1],
            f"samples (n, D) and centers (M, D) must share D; got {samples.shape} and {centers.shape}")
    n = samples.shape[0]
    need = max(1, math.ceil(min_share * n - 1e-9))
    d2 = jnp.sum((samples[:, None, :] - centers[None, :, :]) ** 2, axis=-1)   # (n, M)
    near = d2 <= (n_std * std) ** 2
    ok = jnp.all(jnp.isfinite(samples)) & jnp.asarray(finite)
    covered = (jnp.sum(near, axis=0) >= need) & ok
    quality = jnp.where(ok, jnp.mean(jnp.any(near, axis=1)), 0.0)
    return covered, quality
