"""Optimizers for the two players, each an ``optax.GradientTransformation``.

Every player *minimizes its own loss* (the discriminator's loss is minus the value in a
zero-sum game), so the same transformations drive both players, every toy game and the
conv GANs. The update rules, with g the player's gradient and lr its step size:

* ``sgd``          Δ = −lr · g
* ``momentum``     heavy ball, optax.sgd(lr, momentum)
* ``nsgd``         Δ = −lr · g / ‖g‖, the norm taken over the whole pytree (``per_tensor=False``)
                   or per array (``per_tensor=True``); a zero gradient gives a zero step
* ``adam``         optax.adam
* ``rmsprop``      optax.rmsprop
* ``ogd``          optimistic gradient, Δ_t = −lr · (2 g_t − g_{t−1})  (optax's form; optax sets
                   g_{−1} := g_0, so the first step is plain GD, Δ_0 = −lr · g_0)
* ``graft``        magnitude of one optimizer's step, direction of another's:
                   Δ = ‖Δ_M‖ / (‖Δ_D‖ + ε) · Δ_D  per array or over the whole pytree
* ``ada_nsgda``    graft(M=adam, D=sgd): Adam's magnitude on SGD's direction
* ``sgda_ada``     graft(M=sgd, D=adam): SGD's magnitude on Adam's direction

:func:`make` builds any of them by name with checked arguments.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from overparam.errors import ConfigError, finite_positive

__all__ = [
    "OPTIMIZERS",
    "graft",
    "make",
    "normalize",
    "nsgd",
    "takes_option",
    "tree_norm",
]


def tree_norm(tree: Any) -> jax.Array:
    """Euclidean norm of all leaves of ``tree`` taken together."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def _safe_unit(x: jax.Array, norm: jax.Array) -> jax.Array:
    """x / norm, and 0 where norm == 0 (no NaN from a zero gradient)."""
    ok = norm > 0
    return jnp.where(ok, x / jnp.where(ok, norm, 1.0), jnp.zeros_like(x))


def normalize(per_tensor: bool = False) -> optax.GradientTransformation:
    """g ↦ g/‖g‖ (global norm over the pytree, or per array with ``per_tensor``)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        if per_tensor:
            updates = jax.tree_util.tree_map(lambda g: _safe_unit(g, jnp.linalg.norm(g.ravel())), updates)
        else:
            n = tree_norm(updates)
            updates = jax.tree_util.tree_map(lambda g: _safe_unit(g, n), updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def nsgd(learning_rate: float, per_tensor: bool = False) -> optax.GradientTransformation:
    """Normalized SGD: Δ = −lr · g/‖g‖; ‖Δ‖ = lr exactly (per array with ``per_tensor``)."""
    return optax.chain(normalize(per_tensor), optax.scale(-learning_rate))


class GraftState(NamedTuple):
    magnitude: Any
    direction: Any


def graft(
    magnitude: optax.GradientTransformation,
    direction: optax.GradientTransformation,
    per_tensor: bool = True,
    eps: float = 1e-16,
) -> optax.GradientTransformation:
    """Grafted optimizer: Δ = ‖Δ_M‖ / (‖Δ_D‖ + ε) · Δ_D.

    Both children see the same gradient and keep their own state. With ``per_tensor`` the
    two norms are taken array by array, otherwise over the whole pytree.
    """

    def init_fn(params):
        return GraftState(magnitude.init(params), direction.init(params))

    def update_fn(updates, state, params=None):
        um, sm = magnitude.update(updates, state.magnitude, params)
        ud, sd = direction.update(updates, state.direction, params)
        if per_tensor:
            out = jax.tree_util.tree_map(
                lambda a, b: jnp.linalg.norm(a.ravel()) / (jnp.linalg.norm(b.ravel()) + eps) * b, um, ud
            )
        else:
            scale = tree_norm(um) / (tree_norm(ud) + eps)
            out = jax.tree_util.tree_map(lambda b: scale * b, ud)
        return out, GraftState(sm, sd)

    return optax.GradientTransformation(init_fn, update_fn)


def _adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    return optax.adam(lr, b1=b1, b2=b2, eps=eps)


def _ada_nsgda(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, per_tensor: bool = True):
    # Adam's magnitude, SGD's direction: the SGD child's own scale cancels in the ratio.
    return graft(_adam(lr, b1, b2, eps), optax.sgd(lr), per_tensor=per_tensor)


def _sgda_ada(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, per_tensor: bool = True):
    # SGD's magnitude, Adam's direction.
    return graft(optax.sgd(lr), _adam(lr, b1, b2, eps), per_tensor=per_tensor)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr, momentum=0.9, nesterov=False: optax.sgd(lr, momentum=momentum, nesterov=nesterov),
    "nsgd": lambda lr, per_tensor=False: nsgd(lr, per_tensor=per_tensor),
    "nsgd_global": lambda lr: nsgd(lr, per_tensor=False),
    "nsgd_tensor": lambda lr: nsgd(lr, per_tensor=True),
    "adam": _adam,
    "rmsprop": lambda lr, decay=0.9, eps=1e-8: optax.rmsprop(lr, decay=decay, eps=eps),
    "ogd": lambda lr: optax.optimistic_gradient_descent(lr, alpha=1.0, beta=1.0),
    "ada_nsgda": _ada_nsgda,
    "sgda_ada": _sgda_ada,
}


def make(name: str, learning_rate: float, **options: Any) -> optax.GradientTransformation:
    """Build the optimizer ``name`` (a key of :data:`OPTIMIZERS`) with step size ``learning_rate``.

    Raises :class:`ConfigError` for an unknown name, a non-finite or non-positive step size,
    or an option the optimizer does not take.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    lr = finite_positive(f"learning rate of {name}", learning_rate)
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"option {key} of optimizer {name} must be finite, got {value}")
    try:
        return OPTIMIZERS[name](lr, **options)
    except TypeError as exc:
        raise ConfigError(f"optimizer {name!r} does not take options {sorted(options)}: {exc}") from None


def takes_option(name: str, option: str) -> bool:
    """Whether the optimizer ``name`` of :data:`OPTIMIZERS` accepts the keyword ``option``
    (e.g. ``takes_option("adam", "b1")``: Adam's moment decays), read from its builder's signature."""
    import inspect

    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return option in inspect.signature(OPTIMIZERS[name]).parameters
