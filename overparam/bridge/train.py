"""One conv-GAN training run from the command line, on one process or several (``jax.distributed``).

    python -m overparam.bridge.train --out-dir runs/a --data digits --width 1/32 --steps 1000
    # two hosts (10.0.0.1 is host 0, 1234 a free port there); on host 0, then the same with 1 on host 1:
    python -m overparam.bridge.train --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0 \
        --out-dir /shared/a ...
    # inside a SLURM allocation (one task per host or per GPU): srun python -m overparam.bridge.train --cluster auto ...

Every field of :class:`overparam.bridge.config.TrainConfig` is an option (``--out-dir``,
``--width`` (``1/32`` accepted), ``--ema`` / ``--no-ema``, ``none`` for an optional value). The
placement options (``--coordinator``, ``--num-processes``, ``--process-id``, ``--cluster``,
``--local-device-ids``, ``--init-timeout``) are not config fields: they change where the run
executes, never its numbers, and enter no hash (:mod:`overparam.bridge.distributed`). Running
the same command again resumes from ``out_dir``'s last checkpoint, with any number of processes.
Process 0 prints the run's summary as one JSON line; a bad option is one ``error:`` line, exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from fractions import Fraction
from typing import Any, Callable, Sequence

from overparam.errors import ConfigError

__all__ = ["build_parser", "config_from_args", "main"]


def _number(kind: type) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            return kind(text) if kind is int else float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")

    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def inner(text: str):
        return None if text.lower() in ("none", "null", "") else parse(text)

    return inner


_KINDS = {"str": str, "int": _number(int), "float": _number(float)}


def build_parser() -> argparse.ArgumentParser:
    """Options from TrainConfig's fields (names, defaults, help) plus the placement options."""
    from overparam.bridge.config import TrainConfig

    p = argparse.ArgumentParser(prog="python -m overparam.bridge.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("training (TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        kind = str(f.type).replace(" ", "")
        if kind == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
            continue
        base, _, rest = kind.partition("|")
        if base not in _KINDS or rest not in ("", "None"):
            raise TypeError(f"TrainConfig.{f.name}: type {f.type} has no command-line parser")  # a new field type
        parse = _optional(_KINDS[base]) if rest else _KINDS[base]
        g.add_argument(flag, dest=f.name, type=parse, default=f.default, help=help_)
    d = p.add_argument_group("several processes (jax.distributed; not part of the config)")
    d.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (a free TCP port there)")
    d.add_argument("--num-processes", type=_number(int), default=None, help="processes in all (env JAX_NUM_PROCESSES)")
    d.add_argument("--process-id", type=_number(int), default=None,
                   help="this process's rank, 0..N-1; 0 writes logs (env JAX_PROCESS_ID)")
    d.add_argument("--cluster", choices=("off", "auto"), default="off",
                   help="auto: let jax.distributed detect SLURM / Open MPI / JAX_COORDINATOR_ADDRESS")
    d.add_argument("--local-device-ids", default=None, help="this process's accelerators on its host, e.g. 0 or 0,1")
    d.add_argument("--init-timeout", type=_number(int), default=300, help="seconds to wait for every process")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(ns: argparse.Namespace):
    from overparam.bridge.config import TrainConfig

    return TrainConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig)})


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        from overparam.bridge import distributed

        opts = distributed.options(ns.coordinator, ns.num_processes, ns.process_id, auto=ns.cluster == "auto",
                                   local_device_ids=ns.local_device_ids, timeout=ns.init_timeout)
        config = config_from_args(ns)  # checked before the processes meet
        distributed.initialize(opts)
        from overparam.bridge.loop import Trainer

        summary = Trainer(config).train(progress=not ns.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if distributed.is_primary():
        from overparam import records

        print(json.dumps(records.to_jsonable(summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
