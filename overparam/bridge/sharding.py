"""Data-parallel placement over the local devices with ``jax.sharding``.

One mesh axis, ``"data"``, over the first ``n`` local devices. Parameters, optimizer states
and the training set are replicated (``P()``); every batch is split along its leading axis
(``P("data")``). Inside ``jit`` the compiler (GSPMD) then computes each device's share of the
forward and backward pass and all-reduces the gradients, so one device and n devices run the
same mathematics: the mean over the global batch. Batch-norm statistics are likewise taken
over the global batch (cross-replica BN, as in BigGAN). Only the summation order differs,
hence "the same numbers within tolerance".

Several processes (``jax.distributed``, :mod:`overparam.bridge.distributed`): :func:`data_mesh`
is then one global 1-D mesh over ``jax.devices()`` (every process's devices, process after
process), parameters are replicated on all of them and each batch is split over all of them, so
n processes with one device each run the mathematics of one process with the same global batch.
A multi-process array is built from what each process holds: :func:`replicate` from the same full
value on every process, :func:`shard_batch` from the same global batch on every process (each
process places only its own rows), :func:`from_local_batch` from each process's own slice
(:func:`local_rows` says which rows of the global batch are this process's).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from overparam.errors import ConfigError

__all__ = ["AXIS", "batch_sharding", "constrain_batch", "data_mesh", "from_local_batch", "global_mesh", "local_mesh",
           "local_rows", "replicate", "replicated", "shard_batch"]

AXIS = "data"


def local_mesh(n_devices: int = 0) -> Mesh:
    """A 1-D mesh over the first ``n_devices`` local devices (0 = all of them)."""
    devices = jax.local_devices()
    n = len(devices) if n_devices in (0, None) else int(n_devices)
    if n < 1 or n > len(devices):
        raise ConfigError(f"devices={n_devices} but this process sees {len(devices)} local device(s) "
                          f"({devices[0].platform}); use devices=0 for all of them or a number <= {len(devices)}")
    return Mesh(np.array(devices[:n]), (AXIS,))


def global_mesh(n_devices: int = 0) -> Mesh:
    """A 1-D mesh over every process's devices, ``jax.devices()`` (0 or their number: all of them)."""
    devices = jax.devices()
    if n_devices not in (0, None) and int(n_devices) != len(devices):
        raise ConfigError(f"devices={n_devices} but this run has {jax.process_count()} processes with "
                          f"{len(devices)} devices in all; a multi-process run trains on all of them: use devices=0 "
                          f"(or devices={len(devices)}), or start fewer processes")
    return Mesh(np.array(devices), (AXIS,))


def data_mesh(n_devices: int = 0) -> Mesh:
    """The trainer's mesh: :func:`local_mesh` in a single process, :func:`global_mesh` when
    ``jax.distributed`` runs several."""
    return global_mesh(n_devices) if jax.process_count() > 1 else local_mesh(n_devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def check_batch(mesh: Mesh, batch_size: int) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {n} devices of the mesh; "
                          f"use a multiple of {n} or set devices to a divisor of {batch_size}")


def _multi_process(mesh: Mesh) -> bool:
    return not all(d.process_index == jax.process_index() for d in mesh.devices.flat)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh`` (a full copy on each). On a mesh
    over several processes every process must pass the same values (each places its own copies)."""
    if not _multi_process(mesh):
        return jax.device_put(tree, replicated(mesh))
    sh = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), tree)


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place arrays split along their leading axis over the mesh. On a mesh over several
    processes every process passes the same global batch and places only its own rows."""
    if not _multi_process(mesh):
        return jax.device_put(tree, batch_sharding(mesh))
    sh = batch_sharding(mesh)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

    return jax.tree_util.tree_map(place, tree)


def local_rows(mesh: Mesh, global_rows: int) -> slice:
    """The rows of a global batch of ``global_rows`` that this process's devices hold on ``mesh``
    (contiguous: the mesh lists each process's devices together)."""
    n = mesh.devices.size
    if global_rows % n:
        raise ConfigError(f"a global batch of {global_rows} rows does not split over the {n} devices of the mesh; "
                          f"use a multiple of {n}")
    per = global_rows // n
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if not mine:
        raise ConfigError("this process has no device on the mesh")
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise ConfigError("this process's devices are not contiguous on the mesh; build it from jax.devices()")
    return slice(mine[0] * per, (mine[-1] + 1) * per)


def from_local_batch(tree: Any, mesh: Mesh) -> Any:
    """The global batch whose rows :func:`local_rows` are ``tree`` (this process's slice, e.g.
    from its own data loader): ``jax.make_array_from_process_local_data`` along the leading axis."""
    sh = batch_sharding(mesh)
    n_mine = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def place(x):
        x = np.asarray(x)
        if x.shape[0] % n_mine:
            raise ConfigError(f"a local batch of {x.shape[0]} rows does not split over this process's {n_mine} "
                              f"devices; use a multiple of {n_mine}")
        rows = x.shape[0] // n_mine * mesh.devices.size
        return jax.make_array_from_process_local_data(sh, x, (rows, *x.shape[1:]))

    return jax.tree_util.tree_map(place, tree)


def constrain_batch(tree: Any, mesh: Mesh) -> Any:
    """Inside jit: ask for ``tree``'s leading axis to be split over the mesh."""
    if mesh.devices.size == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def constrain_replicated(tree: Any, mesh: Mesh) -> Any:
    """Inside jit: ask for ``tree`` to be replicated on every device of the mesh."""
    if mesh.devices.size == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, replicated(mesh))
