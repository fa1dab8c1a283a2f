"""Metrics: convergence of toy runs, Fréchet distance, 1-NN overfitting / mode-drop distances,
and the package's one pixel convention ([-1, 1] ↔ [0, 255], :mod:`overparam.metrics.pixels`).

``nn_distances``, ``pixel_l1_distances``, ``summarize_nn`` and ``paired_nn`` (:mod:`overparam.metrics.nn`,
which imports jax) load on first use, so importing this package does not start jax. The metrics
know no network: the digits classifier whose features give ``fd_<data>_classifier`` lives beside
the Inception network in :mod:`overparam.bridge.classifier`.
"""
from overparam.metrics.convergence import tail_rate
from overparam.metrics.frechet import frechet_distance, gaussian_stats

_LAZY = {"nn_distances", "pixel_l1_distances", "summarize_nn", "paired_nn", "nn_statistics"}

__all__ = ["tail_rate", "frechet_distance", "gaussian_stats", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        from overparam.metrics import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'overparam.metrics' has no attribute {name!r}")
