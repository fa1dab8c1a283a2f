"""Toy games: value functions for two players, plus the closed forms the theory layer uses.

Games know nothing about optimizers or schemes (see :mod:`overparam.dynamics`).
"""
from overparam.games.activations import ACTIVATIONS, activation
from overparam.games.mean_matching import MeanMatching, MeanMatchingSpec, teacher_data

__all__ = ["ACTIVATIONS", "MeanMatching", "MeanMatchingSpec", "activation", "teacher_data"]
