"""One exception type for every wrong input, with a message that says what to change."""
from __future__ import annotations

import math
from typing import Any, Iterable


class ConfigError(ValueError):
    """A configuration or input the package cannot use; the message says how to fix it."""


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(message)


def positive_int(name: str, value: Any) -> int:
    """Check that ``value`` is an integer > 0 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value}; use a value >= 1")
    return value


def finite_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number > 0 (or >= 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}; give a real number such as 0.1")
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {v}")
    return v


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")
    return value
