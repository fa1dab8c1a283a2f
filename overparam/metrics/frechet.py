"""Fréchet distance between two Gaussians (the distance behind FID), in float64 numpy.

    d²(N(μ₁, Σ₁), N(μ₂, Σ₂)) = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}

(Dowson & Landau 1982; FID = d² of Inception pool3 features, Heusel et al. 2017). The trace of
the matrix square root is computed without ``scipy.linalg.sqrtm``: with S = Σ₁^{1/2} (symmetric
square root by ``eigh``), Σ₁Σ₂ = S⁻¹ (S Σ₂ S) S is similar to the symmetric PSD matrix S Σ₂ S,
so tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ(S Σ₂ S). Both eigen-decompositions are of symmetric matrices, so
the result is real and stable even for singular covariances (fewer samples than dimensions),
where sqrtm needs an ε·I fudge. Eigenvalues below zero from rounding are clipped to 0.
"""
from __future__ import annotations

import numpy as np

from overparam.errors import ConfigError


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of features (N, D): the sample mean and the unbiased covariance (``np.cov``, ddof 1),
    the convention of the TF and pytorch-fid FID code."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"features must be a 2-D array (samples, dims), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ConfigError(f"need at least 2 samples for a covariance, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("features contain NaN or Inf; check the generator output (a diverged run?)")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root S = V diag(√max(λ, 0)) Vᵀ of a symmetric matrix (eigh route)."""
    sym = 0.5 * (sigma + sigma.T)
    lam, vec = np.linalg.eigh(sym)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Σ₁ Σ₂)^{1/2} = Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}) for symmetric PSD Σ₁, Σ₂."""
    s = sqrtm_psd(sigma1)
    m = s @ sigma2 @ s
    lam = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def _check(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ConfigError(f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                          f"sigma2 {sigma2.shape}; need (D,), (D, D) for one feature dimension D")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(a)):
            raise ConfigError(f"{name} contains NaN or Inf")
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        scale = max(1.0, float(np.max(np.abs(s))))
        if np.max(np.abs(s - s.T)) > 1e-6 * scale:
            raise ConfigError(f"{name} is not symmetric; pass a covariance matrix (see gaussian_stats)")
    return mu1, sigma1, mu2, sigma2


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2} (module docstring), as a float ≥ 0.

    Rounding can leave a tiny negative value (≈ −1e−12 · tr Σ) for identical inputs; it is clipped
    to 0. A large negative value cannot occur for PSD inputs.
    """
    mu1, sigma1, mu2, sigma2 = _check(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return max(value, 0.0)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """d² between the Gaussians fitted by :func:`gaussian_stats` to two feature sets."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
