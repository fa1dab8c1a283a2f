"""Metrics: convergence of toy runs, Fréchet distance, 1-NN overfitting / mode-drop distances.

``nn_distances``, ``pixel_l1_distances`` and ``summarize_nn`` (:mod:`overparam.metrics.nn`, which
imports jax) load on first use, so importing this package does not start jax. The
classifier-feature Fréchet distance (:mod:`overparam.metrics.classifier_features`) needs flax.
"""
from overparam.metrics.convergence import tail_rate
from overparam.metrics.frechet import frechet_distance, gaussian_stats

_LAZY = {"nn_distances", "pixel_l1_distances", "summarize_nn"}

__all__ = ["tail_rate", "frechet_distance", "gaussian_stats", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        from overparam.metrics import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'overparam.metrics' has no attribute {name!r}")
