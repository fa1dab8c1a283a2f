"""Checkpoints of a conv-GAN run: orbax, one ``last`` and one ``best`` kept, verified on restore.

A checkpoint ``root/<name>/<step>`` holds the flat list of the training state's leaves and a JSON
record (config hash, data fingerprint, step, score, the scores so far, a SHA-256 digest of the
arrays). orbax writes into a temporary folder and renames it when complete, so a killed save leaves
the previous checkpoint intact; a damaged one is reported as one :class:`ConfigError` saying what to
delete.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from overparam import records
from overparam.errors import ConfigError

__all__ = ["Checkpoints", "data_fingerprint", "tree_digest"]


class Checkpoints:
    """orbax checkpoints ``root/<name>/<step>`` (name = last or best), one kept per name.

    orbax writes each into a temporary folder and renames it when complete, so a killed
    save leaves the previous checkpoint intact. A checkpoint is the list of the state's
    leaves plus a JSON record (config hash, data fingerprint, step, score).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._managers: dict[str, Any] = {}

    def _manager(self, name: str):
        import orbax.checkpoint as ocp

        if name not in self._managers:
            opts = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
            self._managers[name] = ocp.CheckpointManager((self.root / name).absolute(), options=opts)
        return self._managers[name]

    def latest_step(self, name: str) -> int | None:
        if not (self.root / name).exists():
            return None
        return self._manager(name).latest_step()

    def save(self, name: str, state: Any, meta: dict) -> None:
        import orbax.checkpoint as ocp

        mngr = self._manager(name)
        step = int(meta["step"])
        if mngr.latest_step() == step:
            return
        flat = jax.tree_util.tree_leaves(state)
        meta = {**meta, "digest": tree_digest(flat)}
        leaves = {f"{i:05d}": x for i, x in enumerate(flat)}
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                                meta=ocp.args.JsonSave(records.to_jsonable(meta))))
        mngr.wait_until_finished()

    def _corrupt(self, folder: Path, exc: Exception) -> ConfigError:
        return ConfigError(
            f"checkpoint {folder} is unreadable or corrupt ({type(exc).__name__}: {str(exc)[:200]}); "
            f"delete the folder {self.root} to retrain this run from step 0, or give another output folder "
            "(--out-dir on the command line, out_dir in the API)")

    def read_meta(self, name: str) -> dict:
        """The JSON record of the latest checkpoint ``name`` (read without the arrays)."""
        import orbax.checkpoint as ocp

        step = self.latest_step(name)
        if step is None:
            raise ConfigError(f"no checkpoint in {self.root / name}")
        try:
            out = self._manager(name).restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(out["meta"])
        except Exception as exc:  # orbax/tensorstore raise many types for damaged files
            raise self._corrupt(self.root / name / str(step), exc) from None
        if meta.get("step") != step:
            raise self._corrupt(self.root / name / str(step), ValueError(f"record says step {meta.get('step')}"))
        return meta

    def restore(self, name: str, like: Any) -> tuple[Any, dict]:
        """The latest checkpoint ``name`` restored into the structure of ``like``."""
        import orbax.checkpoint as ocp

        step = self.latest_step(name)
        folder = self.root / name
        if step is None:
            raise ConfigError(f"no checkpoint in {folder}")
        leaves, treedef = jax.tree_util.tree_flatten(like)
        target = {f"{i:05d}": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                  for i, x in enumerate(leaves)}
        try:
            out = self._manager(name).restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
            restored = [out["state"][f"{i:05d}"] for i in range(len(leaves))]
            meta = dict(out["meta"])
            for a, b in zip(restored, leaves):
                if a.shape != b.shape or a.dtype != b.dtype:
                    raise ValueError(f"array {a.shape} {a.dtype} where {b.shape} {b.dtype} was expected")
            if tree_digest(restored) != meta.get("digest"):
                raise ValueError("the arrays' SHA-256 digest differs from the one recorded at save time")
        except Exception as exc:  # orbax/tensorstore raise many types for damaged files
            raise self._corrupt(folder / str(step), exc) from None
        return jax.tree_util.tree_unflatten(treedef, restored), meta


def tree_digest(leaves: list) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes (detects silently flipped bits)."""
    h = hashlib.sha256()
    for x in leaves:
        a = np.asarray(jax.device_get(x))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def data_fingerprint(data: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str((data.shape, str(data.dtype))).encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()[:16]
