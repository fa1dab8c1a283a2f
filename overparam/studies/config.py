"""Typed study configs: build them from dicts, TOML files and command-line options.

A study config is a frozen dataclass whose fields carry ``metadata={"help": ...}``. The
same coercion serves the Python API (:func:`from_mapping`), ``--config file.toml`` and
each ``--option value`` of the CLI, so all three accept the same spellings:
lists as ``2,4,8``, booleans as ``true/false``, ``none`` for optional values.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from overparam.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def help_meta(text: str) -> dict[str, str]:
    """Field metadata carrying the ``--help`` text of a config option."""
    return {"help": text}


def _coerce(name: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        last: Exception | None = None
        for a in non_none:
            try:
                return _coerce(name, a, value)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"bad value for {name}: {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        inner = args[0] if args else str
        return tuple(_coerce(name, inner, v) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def _type_ok(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, value) for a in args)
    if tp is type(None):
        return value is None
    if origin in (tuple, list):
        inner = args[0] if args else Any
        return isinstance(value, (tuple, list)) and all(_type_ok(inner, v) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, (str, Path))
    return True


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        return f"a tuple (each {_type_name(args[0]) if args else 'a value'})"
    return {bool: "true/false (bool)", int: "an integer", float: "a number", str: "a string",
            type(None): "None"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_types(config: Any) -> None:
    """Check every field of a config dataclass against its type hint (the Python API path).

    ``Config(mu="0.5")`` raises one :class:`ConfigError` at construction, naming the field,
    the expected type and the value, instead of a TypeError deep inside a run. Call it first
    in each study config's ``__post_init__``.
    """
    for name, tp in field_types(type(config)).items():
        value = getattr(config, name)
        if not _type_ok(tp, value):
            raise ConfigError(f"{type(config).__name__}.{name} must be {_type_name(tp)}, got {value!r} "
                              f"({type(value).__name__}); e.g. --{name.replace('_', '-')} on the command line "
                              "takes the text form")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_mapping(cls: type, mapping: Mapping[str, Any], base: Any = None) -> Any:
    """Build config ``cls`` from ``mapping`` (keys may use '-' or '_'), on top of ``base``."""
    types_ = field_types(cls)
    values = dataclasses.asdict(base) if base is not None else {}
    for raw_key, value in mapping.items():
        key = raw_key.replace("-", "_")
        if key not in types_:
            raise ConfigError(
                f"unknown option {raw_key!r} for {cls.__name__}; valid options: {', '.join(sorted(types_))}"
            )
        values[key] = _coerce(key, types_[key], value)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad config for {cls.__name__}: {exc}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config; a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a folder; give a TOML file such as sims/width_sweep.toml") from None
    except PermissionError:
        raise ConfigError(f"--config {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not a text TOML file (it is not UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Allow either top-level keys or a single [config] table; a [quick] table holds the
    # overrides of the paper-figure quick mode (see load_sim) and is not a config option.
    if "config" in data and not isinstance(data["config"], dict):
        raise ConfigError(f"config file {path}: 'config' must be a table ([config])")
    data = dict(data.get("config", data))
    data.pop("quick", None)
    return data


def load_sim(path: str | Path, quick: bool = False) -> dict[str, Any]:
    """A pinned config from ``sims/``: its options, with its ``[quick]`` table applied if ``quick``."""
    path = Path(path)
    base = load_toml(path)
    if quick:
        with path.open("rb") as fh:
            base.update(tomllib.load(fh).get("quick", {}))
    return base


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--option`` per config field, with the field's help text and default."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (default: {shown})",
        )


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """Defaults, then ``--config`` TOML, then the options given on the command line."""
    config = cls()
    if getattr(args, "config", None):
        config = from_mapping(cls, load_toml(args.config), base=config)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return from_mapping(cls, given, base=config)
