"""Closed forms: sympy derivations (lambdified) and spectral predictions for GDA."""
from overparam.theory.spectral import (
    block_radius,
    gda_block,
    jjt,
    linear_map_2x2,
    predicted_rates,
)
from overparam.theory.symbolic import (
    best_response_sympy,
    frozen_block_eigenvalues_sympy,
    mean_matching_value_sympy,
)

__all__ = [
    "best_response_sympy",
    "block_radius",
    "frozen_block_eigenvalues_sympy",
    "gda_block",
    "jjt",
    "linear_map_2x2",
    "mean_matching_value_sympy",
    "predicted_rates",
]
