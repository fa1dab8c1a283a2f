"""Run a study's missing cells inline, in local processes or on a Dask cluster.

A *cell* is a study's unit of finished work (one width of a sweep, one optimizer's grid,
...). A study that supports executors exposes, at module level:

``cells(config) -> list[str]``
    the names of its cells, in a fixed order (names are file-name safe: ``[A-Za-z0-9_.-]``);
``compute_cell(config, name) -> data``
    the cell's JSON-able data, a pure function of ``(config, name)``; it sets up whatever
    it needs itself (data, float64 scope), because it may run in another process or host.

and assembles its results from :func:`run_cells`, whose answer is ordered like
``cells(config)``. Optionally ``compute_cells(config, names) -> {name: data}`` computes
several cells in one go (e.g. one compiled program for all of them); the ``inline``
executor then uses it for all missing cells at once. It must give the same data as
``compute_cell`` one by one (the executor tests compare the bytes). This module knows no particular study: a worker imports the study by its
module name and calls ``compute_cell``; it returns the data and never writes. Every finished
cell is written by the parent process alone (atomically, through
:class:`overparam.records.CellStore`, keyed by content), so a cell computed twice (a worker
lost and the cell retried) is stored once, and the merged output does not depend on which
worker finished first.

Executors:

- ``inline``: in this process (the default; today's behaviour): all missing cells in one
  ``compute_cells`` call where the study has one, else one after the other.
- ``processes``: a local ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
  start method (JAX is not fork-safe), ``workers`` processes. A worker that dies breaks the
  pool; the unfinished cells are resubmitted to a fresh pool, at most ``retries`` times.
- ``dask``: ``dask.distributed`` (the optional extra ``distributed``). With ``scheduler``
  (``tcp://host:port``) the cells go to that running scheduler; without, to a
  ``LocalCluster`` of ``workers`` single-threaded worker processes on 127.0.0.1, closed
  afterwards. Each cell is one task ``submit(..., key=<content key>, pure=True,
  retries=retries)``: a cell that raises is retried ``retries`` times; a cell whose worker
  dies is rescheduled by the scheduler (up to its ``distributed.scheduler.allowed-failures``,
  default 3). ``resources={"GPU": 1}`` makes each cell wait for a worker that declares that
  resource (``dask worker ADDRESS --resources GPU=1``; see docs/cluster.md).

Local worker processes (``processes`` and the ``LocalCluster``) get this process's JAX
persistent compilation cache folder (:func:`worker_environ`), so a program compiled once
is loaded, not compiled again, by every worker.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

from overparam.errors import ConfigError
from overparam.records import CellStore, to_jsonable

EXECUTORS: tuple[str, ...] = ("inline", "processes", "dask")
DISTRIBUTED_INSTALL = 'pip install -e ".[distributed]"'
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")


class CellResults(dict):
    """``{cell name: data}`` in the study's fixed cell order, plus :attr:`info`: what ran
    where (executor, workers, scheduler, resources, cells, reused, computed, seconds); the
    study records ``info`` in its manifest (it never enters the content hash)."""

    info: dict[str, Any]

    @property
    def report(self) -> str:
        """``cells: reused R of N, computed C`` (the format of :meth:`CellStore.report`), plus
        `` (executor E)`` when the cells did not run inline: the line a study prints."""
        i = self.info
        where = "" if i["executor"] == "inline" else f" (executor {i['executor']})"
        return f"cells: reused {i['reused']} of {i['cells']}, computed {i['computed']}{where}"


# -- options ---------------------------------------------------------------------------------
def supports(module: ModuleType) -> bool:
    """Whether a study module exposes ``cells`` and ``compute_cell`` (so runs on executors)."""
    return callable(getattr(module, "cells", None)) and callable(getattr(module, "compute_cell", None))


def parse_resources(text: str | Mapping[str, Any] | None) -> dict[str, float] | None:
    """``"GPU=1,MEM=4e9"`` (or a mapping) -> ``{"GPU": 1.0, "MEM": 4e9}``; None stays None."""
    if text is None:
        return None
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            name, eq, value = part.partition("=")
            if not eq or not name.strip():
                raise ConfigError(f"--resources {text!r}: give NAME=AMOUNT pairs, e.g. GPU=1 or GPU=1,MEM=4e9")
            items.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in items:
        try:
            amount = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"resource {name}: amount {value!r} is not a number; e.g. GPU=1") from None
        if not amount > 0 or amount == float("inf"):
            raise ConfigError(f"resource {name}: amount must be a finite number > 0, got {value!r}")
        out[str(name)] = amount
    if not out:
        raise ConfigError(f"--resources {text!r} names no resource; e.g. GPU=1")
    return out


def _dask_available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def check_options(executor: str = "inline", workers: int | None = None, scheduler: str | None = None,
                  resources: str | Mapping[str, Any] | None = None, retries: int = 2
                  ) -> tuple[str, int | None, str | None, dict[str, float] | None, int]:
    """Validate the executor options before any work; one :class:`ConfigError` saying what to change."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
        if executor == "inline":
            raise ConfigError("--workers needs --executor processes or dask (inline runs in this process)")
        if executor == "dask" and scheduler:
            raise ConfigError("--workers sizes a local cluster; with --scheduler the cluster's own workers "
                              "run the cells: drop --workers (or drop --scheduler for a LocalCluster)")
    if scheduler is not None:
        if executor != "dask":
            raise ConfigError("--scheduler needs --executor dask")
        if not re.match(r"^[a-z0-9+]+://\S+$", scheduler) and not re.match(r"^[\w.-]+:\d+$", scheduler):
            raise ConfigError(f"--scheduler {scheduler!r} is not a scheduler address; give e.g. tcp://10.0.0.5:8786")
    res = parse_resources(resources)
    if res is not None and executor != "dask":
        raise ConfigError("--resources needs --executor dask (resources are Dask worker resources)")
    if res is not None and scheduler is None:
        raise ConfigError("--resources needs --scheduler: the workers declare their resources when started "
                          "(dask worker ADDRESS --resources GPU=1), a LocalCluster has none to declare")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
    if executor == "dask" and not _dask_available():
        raise ConfigError(f"--executor dask needs the optional extra 'distributed' (dask.distributed), "
                          f"which is not installed: {DISTRIBUTED_INSTALL}")
    return executor, workers, scheduler, res, retries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLI options of a study that supports executors (none of them changes a number)."""
    g = parser.add_argument_group("executor (where the cells run; never changes a number)")
    g.add_argument("--executor", choices=EXECUTORS, default="inline",
                   help="inline (default, this process), processes (a local process pool) or dask "
                        "(a dask.distributed cluster; needs the 'distributed' extra)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for --executor processes, or of the LocalCluster of "
                        "--executor dask without --scheduler (default: the CPU count, at most one per cell)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(default: start a LocalCluster on 127.0.0.1)")
    g.add_argument("--resources", default=None, metavar="NAME=N[,NAME=N]",
                   help="Dask worker resources each cell needs, e.g. GPU=1 (workers declare theirs with "
                        "dask worker ADDRESS --resources GPU=1)")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of a study's ``run`` from the options of :func:`add_arguments`."""
    return {"executor": args.executor, "workers": args.workers, "scheduler": args.scheduler,
            "resources": args.resources}


# -- the work of one cell (runs wherever the executor puts it) --------------------------------
def compute_many(study: str, config: Any, names: Sequence[str]) -> dict[str, Any]:
    """``compute_cells(config, names)`` of the study (all at once) where it has one, else
    :func:`compute` per name; each value passed through ``to_jsonable``."""
    module = importlib.import_module(study)
    batch = getattr(module, "compute_cells", None)
    if not callable(batch):
        return {name: compute(study, config, name) for name in names}
    out = batch(config, list(names))
    if set(out) != set(names):
        raise ValueError(f"{study}.compute_cells returned cells {sorted(out)}, asked for {sorted(names)}")
    return {name: to_jsonable(out[name]) for name in names}


def compute(study: str, config: Any, name: str) -> Any:
    """Import study module ``study`` and return ``to_jsonable(compute_cell(config, name))``.

    Module level so a worker process can unpickle it by reference. It never writes a file.
    """
    module = importlib.import_module(study)
    return to_jsonable(module.compute_cell(config, name))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def worker_environ() -> dict[str, str]:
    """Environment for local worker processes: this process's JAX persistent compilation
    cache (turned on in-process by :func:`overparam.compile_cache.enable`), as the ``JAX_*``
    variables jax reads at import, so workers load programs instead of compiling them again.
    Empty when jax is not imported here or the cache is off."""
    jax = sys.modules.get("jax")
    if jax is None:
        return {}
    try:
        folder = jax.config.jax_compilation_cache_dir
        if not (folder and jax.config.jax_enable_compilation_cache):
            return {}
        return {"JAX_COMPILATION_CACHE_DIR": str(folder), "JAX_ENABLE_COMPILATION_CACHE": "true",
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS":
                    str(jax.config.jax_persistent_cache_min_compile_time_secs),
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES":
                    str(jax.config.jax_persistent_cache_min_entry_size_bytes)}
    except AttributeError:  # a jax without these options
        return {}


def _set_environ(env: dict[str, str]) -> None:
    """Process-pool initializer: set ``env`` before the worker imports anything heavy."""
    os.environ.update(env)


def _default_workers(n_cells: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_cells))


# -- the executor ----------------------------------------------------------------------------
def run_cells(study: str, config: Any, store: CellStore, executor: str = "inline",
              workers: int | None = None, scheduler: str | None = None, progress: bool = True,
              resources: str | Mapping[str, Any] | None = None, retries: int = 2) -> CellResults:
    """Compute the cells of ``study`` (a module name) missing from ``store``; all cells, in order.

    Cells found in ``store`` (same content key, checksum verified) are reused and counted;
    the others run on ``executor``. Each finished cell is written by this process through
    ``store.put`` as soon as it arrives, so an interrupted run resumes from what finished.
    The answer is ordered like ``cells(config)`` whatever the finishing order; its
    :attr:`CellResults.report` says how many cells were reused and computed.
    """
    executor, workers, scheduler, res, retries = check_options(executor, workers, scheduler, resources, retries)
    module = importlib.import_module(study)
    if not supports(module):
        raise ConfigError(f"study module {study} has no cells()/compute_cell(); it runs inline only")
    names = list(module.cells(config))
    if len(set(names)) != len(names) or not all(isinstance(n, str) and _NAME_OK.match(n) for n in names):
        raise ValueError(f"{study}.cells() must give unique file-name-safe names, got {names}")
    label = getattr(module, "NAME", study)
    t0 = time.perf_counter()
    done: dict[str, Any] = {}
    for name in names:
        cell = store.get(name)
        if cell is not None:
            done[name] = cell
    missing = [n for n in names if n not in done]
    reused = len(done)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(names), initial=reused, desc=f"{label} cells", unit="cell", leave=False,
               dynamic_ncols=True, disable=not progress)

    def finish(name: str, data: Any) -> None:
        if name in done:  # a duplicate delivery (never expected): keep the first, write nothing
            return
        done[name] = store.put(name, data)
        bar.update(1)

    used_workers = workers
    try:
        if missing and executor == "inline":
            for name, data in compute_many(study, config, missing).items():
                finish(name, data)
        elif missing and executor == "processes":
            used_workers = workers or _default_workers(len(missing))
            _run_processes(study, config, missing, used_workers, retries, finish)
        elif missing and executor == "dask":
            if scheduler is None:
                used_workers = workers or _default_workers(len(missing))
            _run_dask(study, config, store, label, missing, used_workers, scheduler, res, retries, finish)
    finally:
        bar.close()
    out = CellResults((n, done[n]) for n in names)
    out.info = {"executor": executor, "workers": used_workers, "scheduler": scheduler, "resources": res,
                "cells": len(names), "reused": reused, "computed": len(names) - reused,
                "seconds": time.perf_counter() - t0}
    return out


def _run_processes(study: str, config: Any, missing: Sequence[str], workers: int, retries: int,
                   finish: Callable[[str, Any], None]) -> None:
    """A spawn-context process pool; a dead worker breaks the pool: resubmit the unfinished cells."""
    ctx = multiprocessing.get_context("spawn")
    pending = list(missing)
    breaks = 0
    while pending:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                   initializer=_set_environ, initargs=(worker_environ(),))
        broken = False
        try:
            futures = {pool.submit(compute, study, config, name): name for name in pending}
            for fut in as_completed(futures):
                name = futures[fut]
                try:
                    data = fut.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                finish(name, data)
                pending.remove(name)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if broken and pending:
            breaks += 1
            if breaks > retries:
                raise RuntimeError(f"worker processes died {breaks} times (retries={retries}); unfinished "
                                   f"cells: {', '.join(pending)}. The finished ones are stored: rerun to resume")
            _warn(f"a worker process died; resubmitting {len(pending)} unfinished cells "
                  f"(retry {breaks} of {retries})")


def _run_dask(study: str, config: Any, store: CellStore, label: str, missing: Sequence[str],
              workers: int | None, scheduler: str | None, resources: dict[str, float] | None,
              retries: int, finish: Callable[[str, Any], None]) -> None:
    """One task per missing cell on a dask.distributed cluster, gathered as they complete."""
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", env=worker_environ()))  # loopback, a free port (None still binds :8787)
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler))
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"could not reach the Dask scheduler at {scheduler} ({exc}); start one with "
                                  "`dask scheduler` and workers with `dask worker ADDRESS`, or drop --scheduler "
                                  "for a LocalCluster") from None
            if resources:
                declared = [w.get("resources", {}) for w in client.scheduler_info().get("workers", {}).values()]
                if not any(all(d.get(k, 0) >= v for k, v in resources.items()) for d in declared):
                    _warn(f"no worker of {scheduler} declares resources {resources} yet; the cells wait "
                          "until one joins (dask worker ADDRESS --resources GPU=1)")
        by_key = {}
        futures = []
        for name in missing:
            key = f"{label}-{name}-{store.key(name)}"
            fut = client.submit(compute, study, config, name, key=key, pure=True, retries=retries,
                                resources=resources)
            by_key[fut.key] = name
            futures.append(fut)
        try:
            for fut in dask_completed(futures):
                finish(by_key[fut.key], fut.result())
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            del futures
