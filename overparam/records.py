"""Record I/O, the bottom layer beside :mod:`overparam.errors`.

Atomic writes, JSON with non-finite floats, tidy CSV, manifests, and the content-keyed cell
cache. Everything above (games … bridge, studies, CLI) writes through this module; it
imports nothing of the package but the errors.

Finished work is keyed by the *content* that determines it (:func:`content_hash`: the
config's fields that change numbers, plus the package version), never by a path, so
``results/x``, ``results/x/`` and ``./results/x`` share their cells. Each stored cell
carries a SHA-256 of its data; a cell that is unreadable, wrongly structured or fails its
checksum is recomputed with one warning line.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from overparam.errors import ConfigError

PACKAGES = ("overparam", "jax", "jaxlib", "optax", "numpy", "scipy", "sympy", "matplotlib",
            "flax", "orbax-checkpoint", "torch", "dask", "distributed")

#: Config fields that never change a number: they are left out of :func:`content_hash`.
#: A config class may extend this with a class attribute ``NOT_CONTENT = (...)``.
NOT_CONTENT: tuple[str, ...] = ("out_dir", "progress", "executor", "workers", "scheduler",
                                "compile_cache")


# -- atomic files ----------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_out_dir(path: str | os.PathLike) -> Path:
    """Check before any work that ``path`` is (or can become) a writable folder.

    Raises :class:`ConfigError` naming the problem (a file in the way, a read-only folder).
    """
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out-dir {path}: {parent} exists and is not a folder; "
                                  "give a folder path (or remove the file)")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"--out-dir {path} is not writable ({exc.strerror or exc}); "
                          "give a folder you can write to") from None
    return p


# -- JSON ------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Convert numpy/jax scalars and arrays, dataclasses, tuples and paths to JSON types.

    Non-finite floats become the strings "nan", "inf", "-inf" (JSON has no such numbers);
    :func:`from_jsonable` turns them back.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        arr = np.asarray(obj)
        return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return obj


_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def from_jsonable(obj: Any) -> Any:
    """Inverse of :func:`to_jsonable` for stored values: "nan"/"inf"/"-inf" become floats."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of ``obj`` (sorted keys, no whitespace): what hashes are taken of."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing, non-UTF-8 or malformed file is one :class:`ConfigError`."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it to recompute") from None


# -- CSV -------------------------------------------------------------------------------------
def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Tidy CSV (one row per dict) written atomically; ``pandas.read_csv`` reads it as is."""
    if columns is None:
        columns = []
        for r in rows:
            for key in r:
                if key not in columns:
                    columns.append(key)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return v


# -- manifest --------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The git commit of the package's checkout (with '-dirty' if modified), if any."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _package_version() -> str:
    from overparam import __version__

    return __version__


def content(config: Any) -> dict[str, Any]:
    """The part of ``config`` that determines numbers: its fields less :data:`NOT_CONTENT`."""
    blob = to_jsonable(config)
    if not isinstance(blob, dict):
        return {"value": blob}
    skip = set(NOT_CONTENT) | set(getattr(type(config), "NOT_CONTENT", ()))
    return {k: v for k, v in blob.items() if k not in skip}


def content_hash(config: Any, *extra: Any) -> str:
    """A short stable hash of what determines a result: :func:`content` of ``config``, the
    package version and any ``extra`` key parts (a cell's name). Never a path."""
    blob = canonical_json({"config": content(config), "version": _package_version(), "extra": list(extra)})
    return hashlib.sha256(blob).hexdigest()[:16]


#: Kept name: the hash that identifies a config's finished work (content only, see above).
config_hash = content_hash


def manifest(study: str, config: Any, **extra: Any) -> dict[str, Any]:
    """Everything needed to rerun: study, config, its content hash, versions, git commit, devices."""
    try:
        import jax

        devices = [str(d) for d in jax.devices()]
    except Exception:  # pragma: no cover - jax always importable in practice
        devices = []
    return {
        "study": study,
        "config": to_jsonable(config),
        "config_hash": content_hash(config),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "devices": devices,
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **to_jsonable(extra),
    }


# -- resumable cells -------------------------------------------------------------------------
def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class CellStore:
    """One JSON file per finished cell under ``out_dir/cells``, keyed by content.

    A cell file holds ``{"key": content_hash(config, name), "sha256": ..., "data": ...}``.
    :meth:`get` returns the stored data only when the key matches (same config content and
    package version) and the checksum of the data verifies; otherwise ``None`` (recompute),
    with one warning line when the file exists but is damaged. ``reused`` and ``computed``
    count what happened, for the study's "reused N of M cells" line.
    """

    def __init__(self, out_dir: str | os.PathLike, config: Any):
        self.dir = Path(out_dir) / "cells"
        self.config = config
        self.reused = 0
        self.computed = 0

    def key(self, name: str) -> str:
        return content_hash(self.config, name)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> Any | None:
        path = self._path(name)
        if not path.exists():
            return None
        try:
            blob = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
            _warn(f"cell {path} is damaged ({type(exc).__name__}); recomputing it")
            return None
        if not isinstance(blob, dict) or not {"key", "sha256", "data"} <= set(blob):
            _warn(f"cell {path} has the wrong structure; recomputing it")
            return None
        if blob["key"] != self.key(name):
            return None  # another config's (or version's) cell: silently replaced
        if hashlib.sha256(canonical_json(blob["data"])).hexdigest() != blob["sha256"]:
            _warn(f"cell {path} fails its checksum (edited or damaged); recomputing it")
            return None
        self.reused += 1
        return from_jsonable(blob["data"])

    def put(self, name: str, data: Any) -> Any:
        """Store ``data`` atomically; returns what :meth:`get` would return for it."""
        stored = to_jsonable(data)
        write_json(self._path(name), {"key": self.key(name),
                                      "sha256": hashlib.sha256(canonical_json(stored)).hexdigest(),
                                      "data": stored})
        self.computed += 1
        return from_jsonable(stored)

    def get_or_compute(self, name: str, compute) -> Any:
        """The stored cell ``name`` or ``compute()``, stored; the value as read back from JSON."""
        cell = self.get(name)
        return cell if cell is not None else self.put(name, compute())

    def report(self) -> str:
        total = self.reused + self.computed
        return f"cells: reused {self.reused} of {total}, computed {self.computed}"


def finite_mean(values: Iterable[float]) -> float:
    """Mean over finite values only (NaN when none); callers report how many were dropped."""
    arr = np.asarray([v for v in values], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
