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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m overparam.simulate",
        description="Run an overparam study: simulate, write tidy CSV + JSON + a manifest, "
        "save figures (PNG and PDF) and print a summary table.",
    )
    sub = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name in STUDIES:
        module = load_study(name)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    module = load_study(args.study)
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
