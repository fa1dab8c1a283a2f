"""``python -m paper_figs [--quick] [--out DIR] [--only NAME ...]``: regenerate the figures."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from overparam.errors import ConfigError
from overparam.studies import load_study
from overparam.studies.config import from_mapping, load_sim
from paper_figs import FIGURES

SIMS = Path(__file__).resolve().parent.parent / "sims"


def make(name: str, out: Path, quick: bool, progress: bool = True) -> list[Path]:
    """Run figure ``name``'s study on its sims/ config; write everything under ``out/name``."""
    fig = FIGURES[name]
    try:
        module = load_study(fig.study)
    except ImportError as exc:
        raise ConfigError(f"figure {name!r} (study {fig.study}) needs an optional extra that is not installed "
                          f"({exc.name or exc}): pip install -e \".[bridge]\", or skip it with --only "
                          f"and the other figure names") from None
    options = load_sim(SIMS / fig.sim, quick=quick)
    options["out_dir"] = str(out / name)
    config = from_mapping(module.Config, options)
    results = module.run(config, progress=progress)
    paths = module.save(results)
    print(f"== {name} ({fig.study}, sims/{fig.sim}{', quick' if quick else ''}): {fig.shows}")
    print(module.summary(results), end="\n\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m paper_figs", description=__doc__ + "\n\nFigures: " + ", ".join(FIGURES),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="figs", help="output directory (default: figs)")
    p.add_argument("--quick", action="store_true", help="small sizes (each sims file's [quick] table)")
    p.add_argument("--only", nargs="*", default=None, metavar="NAME", help="make only these figures")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    names = args.only or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(f"error: unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        for name in names:
            make(name, Path(args.out), args.quick, progress=not args.no_progress)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"made {len(names)} figure(s) in {Path(args.out)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
