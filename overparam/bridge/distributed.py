"""Multi-process (multi-host) conv training with ``jax.distributed``.

One training run, several processes (one per host, or one per GPU): every process runs the same
program on its own devices, and :func:`overparam.bridge.sharding.data_mesh` is then one global
1-D mesh over all of them. Parameters and optimizer states are replicated, each global batch is
split over every device (the gradient is the mean over the global batch, all-reduced by XLA's
collectives: NCCL on GPUs, gloo on CPUs), so N processes give the numbers of one process with the
same global batch up to the summation order. Checkpoints go through orbax's multi-process path
(every process takes part, the primary process 0 writes the replicated arrays and the JSON
record, barriers between); ``log.jsonl``, ``log.csv`` and ``trainer.json`` are written by process
0 only. ``out_dir`` must be one folder every process sees (a shared file system, or a bucket
orbax can write).

How the processes find each other (:func:`options`), in this order:

* explicit: ``coordinator="HOST:PORT"`` (process 0's address and a free port), ``num_processes``
  and ``process_id`` (all three, or none); ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` fill the
  last two when unset;
* ``auto=True``, or ``JAX_COORDINATOR_ADDRESS`` in the environment: ``jax.distributed.initialize``
  finds them itself (``JAX_COORDINATOR_ADDRESS``; SLURM, Open MPI, Kubernetes and Cloud TPU
  auto-detection);
* otherwise a single process, and nothing is initialized.

These options say where the run executes, never what it computes: they are not fields of
:class:`overparam.bridge.config.TrainConfig`, so they enter neither its content hash nor the
checkpoint's config hash (a run checkpointed by 2 processes resumes in 1, and vice versa).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from overparam import records
from overparam.errors import ConfigError

__all__ = ["Distributed", "check_same", "initialize", "is_primary", "options", "parse_local_device_ids"]


@dataclass(frozen=True)
class Distributed:
    """Where a run's processes meet: explicit (coordinator, num_processes, process_id) or
    ``auto`` (``jax.distributed.initialize``'s own environment detection)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    auto: bool = False
    timeout: int = 300

    @property
    def single(self) -> bool:
        """One explicit process: nothing to coordinate, nothing is initialized."""
        return not self.auto and self.num_processes == 1


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator must be HOST:PORT (process 0's host name or IP and a free TCP port, "
                          f"e.g. 10.0.0.1:1234), got {address!r}")
    return address


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"the environment variable {name}={raw!r} must be an integer") from None


def parse_local_device_ids(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"0,1"`` -> (0, 1) (which of this host's accelerators this process uses)."""
    if text is None or text == "":
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        ids = tuple(int(i) for i in items)
    except (TypeError, ValueError):
        raise ConfigError(f"--local-device-ids must be comma-separated integers such as 0,1, got {text!r}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--local-device-ids must be distinct non-negative integers, got {text!r}")
    return ids


def options(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
            *, auto: bool = False, local_device_ids: str | Sequence[int] | None = None, timeout: int = 300,
            env: Mapping[str, str] | None = None) -> Distributed | None:
    """The checked options (module docstring for the order), or None for a single process."""
    env = os.environ if env is None else env
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ConfigError(f"the initialization timeout must be a positive number of seconds, got {timeout!r}")
    ids = parse_local_device_ids(local_device_ids)
    if num_processes is None:
        num_processes = _env_int(env, "JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int(env, "JAX_PROCESS_ID")
    if coordinator is None and not auto:
        if env.get("JAX_COORDINATOR_ADDRESS"):
            auto = True
        elif num_processes is not None or process_id is not None:
            raise ConfigError("--num-processes and --process-id need --coordinator HOST:PORT (process 0's address), "
                              "or --cluster auto inside a SLURM / MPI job")
        else:
            return None
    if coordinator is not None:
        _check_address(coordinator)
    if not auto and (num_processes is None or process_id is None):
        raise ConfigError("--coordinator needs --num-processes N and --process-id I (0 on the coordinator's host, "
                          "1..N-1 on the others)")
    if num_processes is not None and (isinstance(num_processes, bool) or num_processes < 1):
        raise ConfigError(f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None:
        if num_processes is not None and not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id must lie in 0..{num_processes - 1} for --num-processes {num_processes}, "
                              f"got {process_id}")
        if process_id < 0:
            raise ConfigError(f"--process-id must be >= 0, got {process_id}")
    return Distributed(coordinator, num_processes, process_id, ids, auto, timeout)


def initialize(opts: Distributed | None) -> bool:
    """Start ``jax.distributed`` (once, before any JAX computation); True when this run has
    several processes. CPU devices talk through gloo collectives. Calling it again with the
    same run already initialized does nothing."""
    if opts is None or opts.single:
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise ConfigError("jax.distributed must start before any JAX computation in this process; call "
                          "overparam.bridge.distributed.initialize(...) first (before building a Trainer or any "
                          "array)")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(initialization_timeout=opts.timeout)
    if opts.local_device_ids is not None:
        kwargs["local_device_ids"] = list(opts.local_device_ids)
    try:
        jax.distributed.initialize(opts.coordinator, opts.num_processes, opts.process_id, **kwargs)
    except (ValueError, TypeError) as exc:  # jax's own checks of missing / auto-detected values
        raise ConfigError(f"jax.distributed could not start: {exc}; give --coordinator HOST:PORT --num-processes N "
                          "--process-id I, or run inside a job jax detects (SLURM, Open MPI)") from None
    return jax.process_count() > 1


def check_same(what: Mapping[str, Any]) -> None:
    """Collective (every process calls it with the same keys): a :class:`ConfigError` on every
    process, naming the keys, when the values differ between processes. Processes started with
    different options would otherwise run different programs and wait on each other forever."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    keys = sorted(what)
    mine = np.array([int.from_bytes(hashlib.sha256(records.canonical_json(records.to_jsonable(what[k]))).digest()[:4],
                                    "little") & 0x7FFFFFFF for k in keys], np.int32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), len(keys))
    bad = [k for j, k in enumerate(keys) if len(set(every[:, j].tolist())) > 1]
    if bad:
        raise ConfigError(f"the {jax.process_count()} processes of this run differ in: {', '.join(bad)}; start every "
                          "process with the same options and data, with an --out-dir every process sees (a shared "
                          "file system)")


def is_primary() -> bool:
    """True in process 0 (the one that writes logs and JSON), and in a single-process run."""
    return jax.process_index() == 0
