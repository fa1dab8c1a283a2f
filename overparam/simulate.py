"""Command line for the studies: ``python -m overparam.simulate <study> [options]``.

Each study is a module in :mod:`overparam.studies` with a ``Config`` dataclass, ``run``,
``save`` and ``summary``; this file only parses options and calls them. Options are
``--config sims/<file>.toml`` (a pinned config) and one ``--option`` per config field;
command-line options override the file. Run ``python -m overparam.simulate <study> --help``
for a study's options.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from overparam import executors
from overparam.errors import ConfigError
from overparam.records import check_out_dir
from overparam.studies import STUDIES, load_study
from overparam.studies.config import add_arguments, from_args


def _load(name: str):
    """The study module, or the reason it cannot load (a missing optional extra)."""
    try:
        return load_study(name), None
    except (ImportError, ConfigError) as exc:
        return None, (f"study {name!r} needs the conv-GAN extra: pip install -e \".[bridge]\" ({exc})")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with ``only`` just that study's options are built (no other study is imported)."""
    parser = argparse.ArgumentParser(
        prog="python -m overparam.simulate",
        description="Run an overparam study: simulate, write tidy CSV + JSON + a manifest, "
        "save figures (PNG and PDF) and print a summary table.",
    )
    sub = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name in STUDIES:
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        module, problem = _load(name)
        if module is None:
            sub.add_parser(name, help=f"(unavailable: {problem})", description=problem)
            continue
        p = sub.add_parser(
            name,
            help=module.DESCRIPTION.splitlines()[0],
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", metavar="TOML", help="load options from a TOML file (e.g. sims/<study>.toml); "
                       "options given on the command line override it")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("--no-compile-cache", action="store_true",
                       help="do not use the persistent compilation cache (see overparam.compile_cache)")
        add_arguments(p, module.Config)
        if executors.supports(module):  # --executor/--workers/--scheduler/--resources
            executors.add_arguments(p)
    return parser


def join_option_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--widths -4,8`` → ``--widths=-4,8``: argparse takes a value that starts with '-' for an
    option, so a negative list value would get "expected one argument" instead of the
    config's own error message. Values of options that take one are joined with '='."""
    takes_value: set[str] = set()
    known: set[str] = set()
    for action in parser._actions:  # the study subparsers' options
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    known |= set(a.option_strings)
                    if a.option_strings and a.nargs is None and not isinstance(
                            a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
                        takes_value |= set(a.option_strings)
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] not in known and not argv[i + 1].startswith("--"):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in STUDIES else None
    parser = build_parser(only)
    args = parser.parse_args(join_option_values(argv, parser))
    module, problem = _load(args.study)
    if module is None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not getattr(args, "no_compile_cache", False):
        from overparam import compile_cache

        compile_cache.enable()
    try:
        config = from_args(module.Config, args)
        check_out_dir(config.out_dir)  # one clear error before any work
        where = executors.options_from_args(args) if executors.supports(module) else {}
        results = module.run(config, progress=not args.no_progress, **where)
        paths = module.save(results)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(module.summary(results))
    cells = getattr(results, "cells_report", None)
    if cells:
        print(cells)
    if paths:
        print(f"\nwrote {len(paths)} files to {config.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
