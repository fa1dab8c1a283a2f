"""Sympy derivations for the Dirac-GAN: Jacobians of every variant's field at (0, 0).

An independent route to overparam/games/dirac.py: the losses are written again with sympy
(same equations, eqs. D … D-r1), the field v = (−∂_θ ℓ_G, −∂_ψ ℓ_D) is differentiated
symbolically and evaluated at the equilibrium (θ, ψ) = (0, 0).

* unregularized (gan, ns_gan, wgan):  J = [[0, −f'(0)], [f'(0), 0]],  eigenvalues ±i f'(0)
* R1 with strength γ (r1, ns_r1):     J = [[0, −f'(0)], [f'(0), −γ]],
                                      eigenvalues (−γ ± √(γ² − 4 f'(0)²)) / 2          (eq. D-r1-eig)
* consensus:                          J − γ f'(0)² I, eigenvalues −γ f'(0)² ± i f'(0)
* instance noise σ:                   J₂₂ = 2 f''(0) σ², eigenvalues f''(0)σ² ± √(f''(0)²σ⁴ − f'(0)²)
* wgan_gp:                            |ψ| is not differentiable at ψ = 0 and the field does not
                                      vanish there (v_ψ(0, 0±) = ±γ g₀): no Jacobian at the
                                      equilibrium; :func:`jacobian` returns the one-sided ones.

The expectation over instance noise commutes with the derivatives; at (0, 0) every Jacobian
entry is a polynomial in ε, so E is taken exactly with Gaussian moments.

Linearized discrete maps with step sizes (h_G, h_D): simultaneous GD I + diag(h) J;
alternating (generator first, n discriminator steps) Dⁿ G with the one-player maps
G = [[1 + h_G J₁₁, h_G J₁₂], [0, 1]] and D = [[1, 0], [h_D J₂₁, 1 + h_D J₂₂]].
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import sympy as sp

from overparam.errors import ConfigError, one_of
from overparam.games.dirac import VARIANTS
from overparam.theory.linear import linear_map, spectral_radius  # noqa: F401  (re-exported)

__all__ = ["jacobian", "eigenvalues", "r1_eigenvalues", "linear_map", "spectral_radius", "fprime0"]

theta, psi, x = sp.symbols("theta psi x", real=True)
eps1, eps2 = sp.symbols("epsilon_1 epsilon_2", real=True)
GAMMA, TARGET, SIGMA = sp.symbols("gamma g_0 sigma", positive=True)


def f_sym(variant: str, t: sp.Expr) -> sp.Expr:
    """f(t) = −log(1 + e^{−t}) (GAN variants) or f(t) = t (wgan, wgan_gp)."""
    return t if variant in ("wgan", "wgan_gp") else -sp.log(1 + sp.exp(-t))


def fprime0(variant: str) -> float:
    """f'(0): 1/2 for the GAN variants, 1 for the Wasserstein ones."""
    t = sp.Symbol("t")
    return float(sp.diff(f_sym(one_of("Dirac-GAN variant", variant, VARIANTS), t), t).subs(t, 0))


def _D(p: sp.Expr, at: sp.Expr) -> sp.Expr:
    """D_ψ(x) = ψ x."""
    return p * at


def _dDdx(at: sp.Expr) -> sp.Expr:
    """∇ₓD_ψ(x) at x = ``at`` (sympy diff of D_ψ(x) in x)."""
    return sp.diff(_D(psi, x), x).subs(x, at)


def losses(variant: str, side: int = 1) -> tuple[sp.Expr, sp.Expr]:
    """(ℓ_G, ℓ_D) of ``variant`` with symbols θ, ψ, γ, g₀, σ, ε₁, ε₂ (noise inside E).

    ``side`` (±1) picks the branch |ψ| = ±ψ of WGAN-GP's penalty near ψ = 0.
    """
    one_of("Dirac-GAN variant", variant, VARIANTS)
    f = lambda t: f_sym(variant, t)
    noisy = variant == "instance_noise"
    x_fake = theta + SIGMA * eps1 if noisy else theta
    x_real = SIGMA * eps2 if noisy else sp.Integer(0)
    L = f(_D(psi, x_fake)) + f(-_D(psi, x_real))                       # eq. D
    lg, ld = L, -L
    if variant in ("ns_gan", "ns_r1"):
        lg = -f(-_D(psi, x_fake))                                      # eq. D-ns
    if variant == "wgan_gp":
        grad = _dDdx((x_fake + x_real) / 2)                            # = ψ
        ld = ld + GAMMA / 2 * (side * grad - TARGET) ** 2              # eq. D-gp, |ψ| = side·ψ
    if variant == "consensus":
        reg = GAMMA / 2 * (sp.diff(L, theta) ** 2 + sp.diff(L, psi) ** 2)  # eq. D-co
        lg, ld = lg + reg, ld + reg
    if variant in ("r1", "ns_r1"):
        ld = ld + GAMMA / 2 * _dDdx(x_real) ** 2                       # eq. D-r1
    return lg, ld


def field(variant: str, side: int = 1) -> sp.Matrix:
    """v(θ, ψ) = (−∂_θ ℓ_G, −∂_ψ ℓ_D) (inside the noise expectation for instance noise)."""
    lg, ld = losses(variant, side)
    return sp.Matrix([-sp.diff(lg, theta), -sp.diff(ld, psi)])


def _gaussian_expectation(expr: sp.Expr) -> sp.Expr:
    """E over independent ε₁, ε₂ ~ N(0, 1) of a polynomial in ε (E ε^k = (k−1)!! for even k)."""
    poly = sp.Poly(sp.expand(expr), eps1, eps2)
    moment = lambda k: 0 if k % 2 else sp.factorial2(k - 1)
    return sp.nsimplify(sum(c * moment(a) * moment(b) for (a, b), c in poly.terms()))


@lru_cache(maxsize=None)
def _jacobian_symbolic(variant: str, side: int) -> sp.Matrix:
    J = field(variant, side).jacobian([theta, psi]).subs({theta: 0, psi: 0})
    if variant == "instance_noise":
        J = J.applyfunc(_gaussian_expectation)
    return J.applyfunc(sp.nsimplify)


def jacobian(variant: str, side: int = 1, **params: Any) -> sp.Matrix:
    """∂v/∂(θ, ψ) at (0, 0), with ``gamma``, ``target``, ``noise_std`` substituted when given.

    For ``wgan_gp`` the one-sided Jacobian of the branch ψ → 0 with sign ``side``.
    """
    if side not in (1, -1):
        raise ConfigError(f"side must be +1 or -1, got {side!r}")
    J = _jacobian_symbolic(one_of("Dirac-GAN variant", variant, VARIANTS), side)
    subs = {GAMMA: params.pop("gamma", GAMMA), TARGET: params.pop("target", TARGET),
            SIGMA: params.pop("noise_std", SIGMA)}
    params.pop("clip", None)  # the clip is inactive near the equilibrium
    if params:
        raise ConfigError(f"unknown Dirac-GAN parameters {sorted(params)}; use gamma, target, noise_std, clip")
    return J.subs(subs)


def field_at_equilibrium(variant: str, side: int = 1) -> sp.Matrix:
    """v(0, 0) (expected over noise); nonzero only for wgan_gp, where it is (0, side·γ g₀)."""
    v = field(variant, side).subs({theta: 0, psi: 0})
    if variant == "instance_noise":
        v = v.applyfunc(_gaussian_expectation)
    return sp.simplify(v)


def eigenvalues(variant: str, side: int = 1, **params: Any) -> list[sp.Expr]:
    """Eigenvalues of :func:`jacobian` (with multiplicity)."""
    return [ev for ev, mult in jacobian(variant, side, **params).eigenvals().items() for _ in range(mult)]


def r1_eigenvalues(gamma: Any, fp0: Any = sp.Rational(1, 2)) -> list[sp.Expr]:
    """(−γ ± √(γ² − 4 f'(0)²)) / 2, the closed form of eq. D-r1-eig."""
    root = sp.sqrt(sp.sympify(gamma) ** 2 - 4 * sp.sympify(fp0) ** 2)
    return [(-gamma + root) / 2, (-gamma - root) / 2]

