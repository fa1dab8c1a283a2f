"""Sympy derivations for the mean-matching game, lambdified for numeric checks.

These are an *independent route* to the formulas the simulator uses through autodiff:
tests compare the two.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from overparam.errors import one_of

SYMPY_ACTIVATIONS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "relu": lambda x: sp.Max(0, x),
    "tanh": sp.tanh,
    "softplus": lambda x: sp.log(1 + sp.exp(x)),
    "gelu": lambda x: x * (1 + sp.erf(x / sp.sqrt(2))) / 2,
    "linear": lambda x: x,
}
_MODULES = [{"Heaviside": lambda x, h0=0.5: np.heaviside(x, h0)}, "scipy", "numpy"]


@lru_cache(maxsize=None)
def best_response_sympy(m: int) -> tuple[Callable, Callable, sp.Expr, sp.Expr]:
    """Solve ∂h/∂d = 0 for h = ⟨d, f − x̄⟩ − ½‖d‖² symbolically (m coordinates).

    Returns ``(best_response(f, xbar), reduced(f, xbar), d*_expr, reduced_expr)`` where the
    lambdified functions take numpy vectors of length m: d* = f − x̄ (eq. BR) and
    max_d h = ½‖f − x̄‖² (eq. R).
    """
    d = sp.symbols(f"d0:{m}", real=True)
    f = sp.symbols(f"f0:{m}", real=True)
    xb = sp.symbols(f"xb0:{m}", real=True)
    h = sum(d[i] * (f[i] - xb[i]) for i in range(m)) - sp.Rational(1, 2) * sum(di**2 for di in d)
    sol = sp.solve([sp.diff(h, di) for di in d], d, dict=True)[0]
    dstar = sp.Matrix([sol[di] for di in d])
    reduced = sp.simplify(h.subs(sol))
    br = sp.lambdify((f, xb), list(dstar), "numpy")
    red = sp.lambdify((f, xb), reduced, "numpy")
    return (lambda fv, xv: np.asarray(br(tuple(fv), tuple(xv)), float)), (
        lambda fv, xv: float(red(tuple(fv), tuple(xv)))
    ), dstar, reduced


def mean_matching_value_sympy(
    phi: str, V: np.ndarray, Z: np.ndarray, xbar: np.ndarray
) -> tuple[Callable, Callable, Callable]:
    """h(W, d) = ⟨d, mean_j V φ(W z_j)/√k − x̄⟩ − ½‖d‖² with symbolic W (k×d) and d (m).

    V (m×k), Z (n×d) and x̄ (m) are numeric. Returns lambdified ``value(W, dvec)``,
    ``grad_W(W, dvec)`` (k×d) and ``grad_d(W, dvec)`` (m), derived by sympy's ``diff``.
    Meant for small shapes (the expression has k·n activation terms).
    """
    act = SYMPY_ACTIVATIONS[one_of("activation", phi, SYMPY_ACTIVATIONS)]
    V = np.asarray(V, float)
    Z = np.asarray(Z, float)
    m, k = V.shape
    n, dz = Z.shape
    W = sp.Matrix(k, dz, lambda a, b: sp.Symbol(f"w_{a}_{b}", real=True))
    dv = sp.Matrix(m, 1, lambda a, _: sp.Symbol(f"d_{a}", real=True))
    Vs, Zs = sp.Matrix(V), sp.Matrix(Z)
    hidden_mean = sp.zeros(k, 1)
    for j in range(n):
        pre = W * Zs[j, :].T
        hidden_mean += pre.applyfunc(act) / n
    f = Vs * hidden_mean / sp.sqrt(k)
    h = (dv.T * (f - sp.Matrix(np.asarray(xbar, float))))[0, 0] - (dv.T * dv)[0, 0] / 2
    wsyms = list(W)
    dsyms = list(dv)
    gW = [sp.diff(h, w) for w in wsyms]
    gd = [sp.diff(h, s) for s in dsyms]
    args = wsyms + dsyms
    fh = sp.lambdify(args, h, _MODULES)
    fgW = sp.lambdify(args, gW, _MODULES)
    fgd = sp.lambdify(args, gd, _MODULES)

    def pack(Wn, dn):
        return list(np.asarray(Wn, float).ravel()) + list(np.asarray(dn, float).ravel())

    return (
        lambda Wn, dn: float(fh(*pack(Wn, dn))),
        lambda Wn, dn: np.asarray(fgW(*pack(Wn, dn)), float).reshape(k, dz),
        lambda Wn, dn: np.asarray(fgd(*pack(Wn, dn)), float),
    )


@lru_cache(maxsize=None)
def frozen_block_eigenvalues_sympy() -> tuple[Callable, list[sp.Expr]]:
    """Eigenvalues of the frozen-time simultaneous-GDA block [[1, −μs], [η, 1−η]].

    For an eigenvalue s of JJᵀ the (r, d) dynamics decouple into this 2×2 block. Sympy
    gives λ = (2 − η ± √(η(η − 4μs)))/2. Returns ``(eigs(mu, eta, s) -> complex pair, exprs)``.
    """
    mu, eta, s = sp.symbols("mu eta s", positive=True)
    block = sp.Matrix([[1, -mu * s], [eta, 1 - eta]])
    eigs = list(block.eigenvals().keys())
    fn = sp.lambdify((mu, eta, s), eigs, "numpy")
    return (lambda a, b, c: np.asarray(fn(complex(a), complex(b), complex(c)), complex)), eigs
