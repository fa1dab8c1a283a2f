"""Data-parallel placement over the local devices with ``jax.sharding``.

One mesh axis, ``"data"``, over the first ``n`` local devices. Parameters, optimizer states
and the training set are replicated (``P()``); every batch is split along its leading axis
(``P("data")``). Inside ``jit`` the compiler (GSPMD) then computes each device's share of the
forward and backward pass and all-reduces the gradients, so one device and n devices run the
same mathematics: the mean over the global batch. Batch-norm statistics are likewise taken
over the global batch (cross-replica BN, as in BigGAN). Only the summation order differs,
hence "the same numbers within tolerance".
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from overparam.errors import ConfigError

__all__ = ["AXIS", "batch_sharding", "constrain_batch", "local_mesh", "replicate", "replicated", "shard_batch"]

AXIS = "data"


def local_mesh(n_devices: int = 0) -> Mesh:
    """A 1-D mesh over the first ``n_devices`` local devices (0 = all of them)."""
    devices = jax.local_devices()
    n = len(devices) if n_devices in (0, None) else int(n_devices)
    if n < 1 or n > len(devices):
        raise ConfigError(f"devices={n_devices} but this process sees {len(devices)} local device(s) "
                          f"({devices[0].platform}); use devices=0 for all of them or a number <= {len(devices)}")
    return Mesh(np.array(devices[:n]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def check_batch(mesh: Mesh, batch_size: int) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {n} devices of the mesh; "
                          f"use a multiple of {n} or set devices to a divisor of {batch_size}")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh`` (a full copy on each)."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place arrays split along their leading axis over the mesh."""
    return jax.device_put(tree, batch_sharding(mesh))


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
