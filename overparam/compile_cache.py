"""JAX's persistent compilation cache, on by default for ``simulate`` and ``bench``.

A compiled XLA program is stored on disk keyed by its HLO, the jax/jaxlib versions, the
backend and the compile options, so a second process that builds the same program loads it
instead of compiling it again (on two CPU cores compilation is most of a cold width sweep).

Folder, first match wins:

1. ``$OVERPARAM_COMPILE_CACHE`` (an empty value or ``0``/``off`` turns the cache off);
2. ``$XDG_CACHE_HOME/overparam/jax-compile-cache`` where ``XDG_CACHE_HOME`` is set;
3. the platform's user cache directory + ``overparam/jax-compile-cache``:
   ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows.

The command lines take ``--no-compile-cache`` to run without it. Deleting the folder is
always safe: it only costs the next run its compile time again. This module is bottom
layer: it imports jax and nothing of the package.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["ENV_VAR", "default_dir", "enable", "disable", "active_dir"]

ENV_VAR = "OVERPARAM_COMPILE_CACHE"
SUBDIR = ("overparam", "jax-compile-cache")
_OFF = ("", "0", "off", "false", "no", "none")


def _user_cache_root() -> Path:
    """The user's cache directory of this platform (no third-party helper needed)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    return Path.home() / ".cache"


def default_dir() -> Path | None:
    """The cache folder this process would use, or None when ``$OVERPARAM_COMPILE_CACHE`` turns it off."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return _user_cache_root().joinpath(*SUBDIR)


def enable(path: str | os.PathLike | None = None, min_compile_secs: float = 0.0) -> Path | None:
    """Turn on the persistent cache in ``path`` (default :func:`default_dir`); returns the folder.

    ``min_compile_secs``: programs that compiled faster than this are not stored (0 stores
    all; loading even a small program from disk is faster than compiling it on XLA:CPU).
    Returns None (and leaves the cache off) when the folder is switched off or cannot be
    created; the run then simply compiles, it never fails because of the cache.
    """
    import jax

    folder = Path(path).expanduser() if path is not None else default_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_enable_compilation_cache", True)
    _reset()
    return folder


def disable() -> None:
    """Turn the persistent cache off for the rest of this process."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    _reset()


def active_dir() -> Path | None:
    """The folder in use, or None when the persistent cache is off."""
    import jax

    if not jax.config.jax_enable_compilation_cache or not jax.config.jax_compilation_cache_dir:
        return None
    return Path(jax.config.jax_compilation_cache_dir)


def _reset() -> None:
    """Make jax re-read the settings (it initializes its cache object once per process)."""
    try:
        from jax._src import compilation_cache as cc

        cc.reset_cache()
    except (ImportError, AttributeError):  # older/newer jax without the private hook
        pass
