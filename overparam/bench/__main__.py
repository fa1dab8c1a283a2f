"""``python -m overparam.bench <name> [options]``: run one side-by-side benchmark."""
from __future__ import annotations

import importlib
import sys

from overparam.bench import BENCHES


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print("usage: python -m overparam.bench {%s} [--no-compile-cache] [options]\n" % ",".join(BENCHES))
        for name, mod in BENCHES.items():
            print(f"  {name:14s} {importlib.import_module(mod).DESCRIPTION.splitlines()[0]}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown benchmark {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    rest = argv[1:]
    if "--no-compile-cache" in rest:  # on by default (overparam.compile_cache); this turns it off
        rest = [a for a in rest if a != "--no-compile-cache"]
    else:
        from overparam import compile_cache

        compile_cache.enable()
    from overparam.errors import ConfigError

    try:
        return importlib.import_module(BENCHES[argv[0]]).main(rest)
    except ConfigError as exc:  # bad input: one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
