"""Elementwise activations φ, ψ used by the toy generators and discriminators."""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from overparam.errors import one_of

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "gelu": partial(jax.nn.gelu, approximate=False),  # x Φ(x), the exact form
    "linear": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; a clear error for an unknown one."""
    return ACTIVATIONS[one_of("activation", name, ACTIVATIONS)]
