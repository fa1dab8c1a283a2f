"""Metrics: convergence of toy runs; (later) mode coverage, 1-NN distances, Frechet distance."""
from overparam.metrics.convergence import tail_rate

__all__ = ["tail_rate"]
