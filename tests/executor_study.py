"""A tiny synthetic study for the executor tests (numpy only, so worker start-up is cheap).

It follows the executor protocol of :mod:`overparam.executors`: ``cells(config)`` names
the cells in a fixed order, ``compute_cell(config, name)`` is a pure function of
(config, name), and ``run`` merges the cells in that order into ``summary.csv``.

Test hooks that never change a number (so they stay out of the content hash):
``sleep`` makes later cells finish *first* (cell i sleeps sleep·(cells − i) seconds), so
the merge order is exercised; ``compute_cells`` is the inline executor's batch route; ``kill_marker`` kills the worker process running cell
``kill_cell`` on its first attempt (the marker file records that the attempt happened);
``log`` gets one "start"/"end" line per attempt, to count executions.
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from overparam import executors
from overparam.records import CellStore, write_csv

NAME = "executor-test"


@dataclass(frozen=True)
class Config:
    NOT_CONTENT = ("sleep", "kill_marker", "kill_cell", "log")

    cells: int = 6
    rows_per_cell: int = 3
    seed: int = 0
    sleep: float = 0.0
    kill_marker: str | None = None
    kill_cell: str = "c01"
    log: str | None = None
    out_dir: str = "results/executor-test"


def cells(config: Config) -> list[str]:
    return [f"c{i:02d}" for i in range(config.cells)]


def _log(config: Config, line: str) -> None:
    if config.log:
        with open(config.log, "a") as fh:  # one short append per line: atomic enough on POSIX
            fh.write(f"{line} {os.getpid()}\n")


def compute_cell(config: Config, name: str) -> dict[str, Any]:
    """Rows x_j ~ N(0, 1) from the generator seeded by (seed, cell index), their running sum."""
    i = int(name[1:])
    _log(config, f"start {name}")
    if config.kill_marker and name == config.kill_cell and not Path(config.kill_marker).exists():
        Path(config.kill_marker).write_text(f"killed {name} in {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(config.sleep * (config.cells - i))
    x = np.random.default_rng([config.seed, i]).standard_normal(config.rows_per_cell)
    rows = [{"cell": name, "j": j, "x": float(x[j]), "cumsum": float(np.cumsum(x)[j]),
             "log_abs": math.log(abs(x[j])) if j else float("nan")} for j in range(config.rows_per_cell)]
    _log(config, f"end {name}")
    return {"rows": rows}


def compute_cells(config: Config, names: list[str]) -> dict[str, Any]:
    """The inline executor's batch route: one call for all missing cells (logged as "batch")."""
    _log(config, "batch " + ",".join(names))
    return {name: compute_cell(config, name) for name in names}


def run(config: Config, progress: bool = False, **executor_options: Any) -> tuple[list[dict], dict]:
    """All cells through :func:`overparam.executors.run_cells`; writes out_dir/summary.csv."""
    store = CellStore(config.out_dir, config)
    done = executors.run_cells(__name__, config, store, progress=progress, **executor_options)
    rows = [r for cell in done.values() for r in cell["rows"]]
    write_csv(Path(config.out_dir) / "summary.csv", rows)
    return rows, {**done.info, "report": done.report}
