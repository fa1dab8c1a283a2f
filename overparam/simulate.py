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

from overparam.errors import ConfigError
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
        add_arguments(p, module.Config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in STUDIES else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    module, problem = _load(args.study)
    if module is None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        config = from_args(module.Config, args)
        results = module.run(config, progress=not args.no_progress)
        paths = module.save(results)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(module.summary(results))
    if paths:
        print(f"\nwrote {len(paths)} files to {config.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
