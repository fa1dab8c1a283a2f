"""The conv-GAN host loop: :class:`Trainer` (train, resume, log, checkpoint, sample).

``steps_per_call`` steps run per host call through :func:`overparam.dynamics.run` (one jitted
``lax.scan`` of the step of :mod:`overparam.bridge.step`), recording every ``log_every`` steps
the losses, gradient norms and the top-3 singular values of every G and D kernel plus a
finiteness flag. A non-finite record stops the run cleanly: the log keeps the record,
``trainer.json`` says ``"status": "diverged"`` and the step, and no checkpoint of the non-finite
state is written.

Files under ``out_dir``: ``log.jsonl`` and ``log.csv`` (one row per record), ``trainer.json``
(status, timings, scores, best score), ``checkpoints/last/<step>`` and ``checkpoints/best/<step>``
(:mod:`overparam.bridge.checkpoints`). A resume restores ``last`` (checked against the config, the
data, the initial weights), keeps the log rows up to its step (a damaged ``log.jsonl`` loses only
its damaged lines) and the scores committed with it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam import dynamics, records
from overparam.bridge import distributed, losses, nets, sharding
from overparam.bridge.checkpoints import Checkpoints, data_fingerprint, tree_digest
from overparam.bridge.config import TrainConfig, core_config
from overparam.bridge.game import fixed_latent_set
from overparam.bridge.step import ConvState, init_train_state, make_optimizers, make_train_step, record_metrics
from overparam.errors import ConfigError, positive_int, require

__all__ = ["FORMAT", "Trainer"]

FORMAT = 2  # checkpoint state layout: dynamics.TrainState with aux (1 = the trainer before the split)


# -- compiled programs (shared by every Trainer with the same core config and optimizers) ------------
class _Program(NamedTuple):
    gan: nets.GAN
    opt_g: Any
    opt_d: Any
    mesh: Any
    init: Callable
    advance: Callable
    generate: Callable


@functools.lru_cache(maxsize=32)
def _program(core: TrainConfig, resolution: int, channels: int, opt_gen=None, opt_disc=None) -> _Program:
    gan = nets.make_gan(core.arch, resolution, channels, core.width, core.latent_dim, core.sn_d, core.sn_g)
    opt_g, opt_d = make_optimizers(core, opt_gen, opt_disc)
    mesh = sharding.data_mesh(core.devices)  # global over every process's devices under jax.distributed

    def advance(state, data, latents, n_steps):
        step = make_train_step(gan, core, opt_g, opt_d, data, latents, mesh)
        return dynamics.run(step, state, jax.random.PRNGKey(0), n_steps, core.log_every, record_metrics)

    donate = (0,) if jax.default_backend() != "cpu" else ()
    advance_jit = jax.jit(advance, static_argnums=(3,), donate_argnums=donate,
                          out_shardings=sharding.replicated(mesh))  # every process can read state and records

    @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
    def generate(params, g_state, z):
        return nets.apply(gan.G, params, g_state, z, train=False)[0]

    init = jax.jit(functools.partial(init_train_state, gan, core, opt_g, opt_d, mesh=mesh),
                   out_shardings=sharding.replicated(mesh))
    return _Program(gan, opt_g, opt_d, mesh, init, advance_jit, generate)


def _check_params(gan: nets.GAN, seed: int, params: Any) -> Any:
    """``params`` = (gen, disc) checked against the network's parameter structure, shapes, dtypes."""
    if params is None:
        return None
    if not (isinstance(params, (tuple, list)) and len(params) == 2):
        raise ConfigError("params must be a pair (gen_params, disc_params) of parameter pytrees")
    like = jax.eval_shape(lambda k: nets.init_gan(gan, k), jax.random.PRNGKey(seed))
    out = []
    for name, given, want in (("gen", params[0], like[0]), ("disc", params[1], like[2])):
        gl, gt = jax.tree_util.tree_flatten(given)
        wl, wt = jax.tree_util.tree_flatten(want)
        if gt != wt:
            raise ConfigError(f"params[{name}] has the structure {gt}, the network's is {wt}")
        for a, b in zip(gl, wl):
            if tuple(np.shape(a)) != tuple(b.shape) or np.asarray(a).dtype != b.dtype:
                raise ConfigError(f"params[{name}] holds an array {np.shape(a)} {np.asarray(a).dtype} where the "
                                  f"network has {b.shape} {b.dtype}")
        out.append(jax.tree_util.tree_map(jnp.asarray, given))
    return tuple(out)


# -- the host loop --------------------------------------------------------------------------------
def _check_data(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 4:
        raise ConfigError(f"training images must be an array (N, H, W, C), got shape {arr.shape}")
    if arr.shape[1] != arr.shape[2]:
        raise ConfigError(f"images must be square, got {arr.shape[1]}x{arr.shape[2]}; resize them (resolution=...)")
    nets.check_resolution(arr.shape[1])
    if not np.issubdtype(arr.dtype, np.floating):
        raise ConfigError(f"images must be floats in [-1, 1], got dtype {arr.dtype}; map 8-bit pixels with "
                          "overparam.metrics.pixels.from_uint8 (x = v/127.5 - 1)")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ConfigError("training images contain NaN or Inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.001 or hi > 1.001:
        raise ConfigError(f"images must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]; map 8-bit pixels with "
                          "overparam.metrics.pixels.from_uint8 (x = v/127.5 - 1)")
    return arr


def _row(recs: dict, i: int, with_metrics: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"step": int(recs["step"][i]), "finite": bool(recs["finite"][i])}
    for k, v in recs.items():
        if k in ("step", "finite"):
            continue
        if k.startswith("sv:"):
            for j, s in enumerate(np.asarray(v[i]).ravel()):
                row[f"{k[3:]}/sv{j}"] = float(s)
        elif with_metrics:
            row[k] = float(v[i])
    return row


def _row_finite(row: dict[str, Any]) -> bool:
    return bool(row["finite"]) and all(math.isfinite(v) for k, v in row.items() if isinstance(v, float))


class Trainer:
    """Train a conv GAN; ``train()`` runs (or resumes) to ``config.steps``.

    ``data``: float images (N, H, W, C) in [-1, 1]; None loads ``config.data`` with
    :func:`overparam.bridge.data.load_dataset`. ``score_fn(trainer) -> float`` (lower is better)
    is evaluated at every checkpoint and decides the ``best`` checkpoint; without it only
    ``last`` is written.

    ``opt_gen`` / ``opt_disc``: an ``optax.GradientTransformation`` per player used instead of
    ``config.opt_*``/``lr_*`` (e.g. a mask-wrapped optimizer that keeps pruned weights at zero);
    G's is still wrapped by the EMA. ``params``: (gen, disc) parameter pytrees replacing the
    seeded initialization of the trainable weights (same structure, shapes and dtypes as the
    network's; e.g. a rewound lottery-ticket initialization); the non-trainable collections stay
    the seeded ones. A checkpoint records whether custom optimizers were used and the digest of
    given initial weights; a resume must pass the same (the optimizers themselves cannot be
    compared: passing the same ones is the caller's responsibility).
    """

    def __init__(self, config: TrainConfig, data: Any = None, score_fn: Callable[["Trainer"], float] | None = None,
                 *, opt_gen: optax.GradientTransformation | None = None,
                 opt_disc: optax.GradientTransformation | None = None,
                 params: tuple[Any, Any] | None = None):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        if data is None:
            from overparam.bridge.data import load_dataset

            data = load_dataset(config.data, config.data_path, n=config.n, seed=config.seed,
                                resolution=config.resolution)
        self.data = _check_data(data)
        n, res, _, ch = self.data.shape
        if config.batch_size > n:
            raise ConfigError(f"batch_size {config.batch_size} exceeds the {n} training images; use batch_size <= {n}")
        for name, tx in (("opt_gen", opt_gen), ("opt_disc", opt_disc)):
            if tx is not None and not isinstance(tx, optax.GradientTransformation):
                raise ConfigError(f"{name} must be an optax.GradientTransformation (init/update), got "
                                  f"{type(tx).__name__}")
        self.core = core_config(config)
        self.custom_optimizers = [name for name, tx in (("gen", opt_gen), ("disc", opt_disc)) if tx is not None]
        self.program = _program(self.core, res, ch, opt_gen, opt_disc)
        self.gan = self.program.gan
        self._params = _check_params(self.gan, config.seed, params)
        if self._params is not None:
            self._params = sharding.replicate(self._params, self.program.mesh)
        self.init_digest = None if params is None else tree_digest(jax.tree_util.tree_leaves(self._params))
        sharding.check_batch(self.program.mesh, config.batch_size)
        self.fingerprint = data_fingerprint(self.data)
        self.out = Path(config.out_dir) if config.out_dir else None
        self.ckpt = Checkpoints(self.out / "checkpoints") if self.out else None
        if jax.process_count() > 1:  # several processes must run one program on one checkpoint
            last = self.out / "checkpoints" / "last" if self.out else None
            distributed.check_same({
                "options": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out_dir", "data_path")},
                "data": self.fingerprint, "params": self.init_digest, "custom optimizers": self.custom_optimizers,
                "checkpoints seen": sorted(p.name for p in last.iterdir()) if last and last.is_dir() else []})
        meta = self._check_resumable()  # fails fast, before any compilation
        mesh = self.program.mesh
        self._data = sharding.replicate(jnp.asarray(self.data), mesh)
        self._latents = None
        if config.fixed_latents:
            self._latents = sharding.replicate(fixed_latent_set(config.seed, n, self.gan.latent_dim), mesh)
        self.state: ConvState = self.program.init(self._data, self._latents, self._params)
        self.score_fn = score_fn
        self.records: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.timings: list[dict[str, float]] = []
        self.status = "running"
        self.diverged_at: int | None = None
        self.best: dict[str, Any] | None = None
        self.resumed_from: int | None = None
        if meta is not None:
            self._resume()

    # -- properties --
    @property
    def step(self) -> int:
        return int(self.state.step)

    @property
    def latents(self) -> np.ndarray | None:
        """The fixed latent set (one code per training image), or None."""
        return None if self._latents is None else np.asarray(self._latents)

    # -- resume --
    def _meta(self, score: float | None = None) -> dict[str, Any]:
        """The JSON record of a checkpoint: what it was trained with, and every score so far
        (committed with the arrays, so a run killed after the save loses no score row)."""
        return {"format": FORMAT, "step": self.step, "config_hash": records.config_hash(self.core),
                "data": self.fingerprint, "init": self.init_digest, "custom_optimizers": self.custom_optimizers,
                "score": score, "scores": list(self.scores), "status": self.status}

    def _check_resumable(self) -> dict | None:
        """The last checkpoint's record if this run should resume from it (checked against
        the config and the data), None for a fresh start."""
        if self.ckpt is None:
            return None
        last = self.ckpt.latest_step("last")
        if last is None:
            return None
        if not self.config.resume:
            raise ConfigError(f"{self.out} already holds a checkpoint (step {last}); set resume=true to continue "
                              "it or choose another out_dir")
        meta = self.ckpt.read_meta("last")
        if meta.get("format") != FORMAT:
            raise ConfigError(f"the checkpoint in {self.out} was written by another version of the trainer (state "
                              f"layout {meta.get('format', 1)}, this one reads {FORMAT}); delete "
                              f"{self.out / 'checkpoints'} to retrain, or give another out_dir")
        if meta.get("config_hash") != records.config_hash(self.core):
            raise ConfigError(f"the checkpoint in {self.out} was written with a different config; use the same "
                              "config to resume, or another out_dir")
        if meta.get("data") != self.fingerprint:
            raise ConfigError(f"the checkpoint in {self.out} was trained on different data (fingerprint "
                              f"{meta.get('data')} vs {self.fingerprint}); give the same data or another out_dir")
        if meta.get("init") != self.init_digest:
            raise ConfigError(f"the checkpoint in {self.out} started from other initial weights (params=...); "
                              "pass the same params to resume, or another out_dir")
        if meta.get("custom_optimizers", []) != self.custom_optimizers:
            raise ConfigError(f"the checkpoint in {self.out} was trained with custom optimizers for "
                              f"{meta.get('custom_optimizers') or 'no player'}, this Trainer has them for "
                              f"{self.custom_optimizers or 'no player'}; pass the same opt_gen/opt_disc, or another "
                              "out_dir")
        return meta

    def _resume(self) -> None:
        state, meta = self.ckpt.restore("last", self.state)
        self.state = state
        self.resumed_from = int(meta["step"])
        self.records = [r for r in self._read_log() if r["step"] <= self.resumed_from]
        scores = meta.get("scores")
        if not isinstance(scores, list):  # the summary file is written after the checkpoint
            scores = self._read_summary().get("scores", [])
        self.scores = [records.from_jsonable(s) for s in scores
                       if isinstance(s, dict) and isinstance(s.get("step"), int) and s["step"] <= self.resumed_from]
        best_step = self.ckpt.latest_step("best")
        if best_step is not None and best_step <= self.resumed_from:
            self.best = next((s for s in self.scores if s["step"] == best_step), None)

    def _read_log(self) -> list[dict[str, Any]]:
        """The rows of ``log.jsonl``; lines that are not UTF-8 JSON objects with an integer step
        (a damaged or hand-edited log) are dropped with one warning line, never a crash."""
        path = self.out / "log.jsonl"
        if not path.exists():
            return []
        rows, bad = [], 0
        for raw in path.read_bytes().splitlines():
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad += 1
                continue
            if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row["step"], bool):
                bad += 1
                continue
            rows.append(records.from_jsonable(row))
        steps = [r["step"] for r in rows]
        if steps != sorted(set(steps)):  # duplicated or reordered rows: keep the first of each step, in order
            seen: dict[int, dict] = {}
            for r in rows:
                seen.setdefault(r["step"], r)
            bad += len(rows) - len(seen)
            rows = [seen[s] for s in sorted(seen)]
        if bad:
            print(f"warning: {path}: dropped {bad} damaged line(s); the log keeps {len(rows)} row(s)",
                  file=sys.stderr, flush=True)
        return rows

    def _read_summary(self) -> dict[str, Any]:
        path = self.out / "trainer.json"
        if not path.exists():
            return {}
        try:
            blob = records.read_json(path)
        except ConfigError:
            return {}
        return blob if isinstance(blob, dict) else {}

    # -- output --
    def summary(self) -> dict[str, Any]:
        """Status ("running", "completed", "stopped", "diverged"), step, timings, scores."""
        run_t = [t for t in self.timings[1:]] or self.timings
        steps = sum(t["steps"] for t in run_t)
        secs = sum(t["seconds"] for t in run_t)
        return {
            "status": self.status, "step": self.step, "diverged_at": self.diverged_at,
            "resumed_from": self.resumed_from, "best": self.best, "scores": self.scores,
            "steps_per_s": steps / secs if secs > 0 else None,
            "images_per_s": self.config.batch_size * steps / secs if secs > 0 else None,
            "first_call_s": self.timings[0]["seconds"] if self.timings else None,
            "devices": [str(d) for d in self.program.mesh.devices.ravel()],
            "config": dataclasses.asdict(self.config),
        }

    def _write_outputs(self) -> None:
        if self.out is None or not distributed.is_primary():  # several processes: process 0 writes
            return
        lines = "".join(json.dumps(records.to_jsonable(r)) + "\n" for r in self.records)
        records.atomic_write_text(self.out / "log.jsonl", lines)
        records.write_csv(self.out / "log.csv", self.records)
        records.write_json(self.out / "trainer.json", self.summary())

    def save_checkpoint(self) -> None:
        """Write ``best`` (when score_fn says this state is the best so far), then ``last``, whose
        record carries every score so far; then the logs."""
        if self.ckpt is None or self.status == "diverged" or self.ckpt.latest_step("last") == self.step:
            return
        score = None
        if self.score_fn is not None:
            score = float(self.score_fn(self))
            if not any(s["step"] == self.step for s in self.scores):
                self.scores.append({"step": self.step, "score": score})
        if score is not None and math.isfinite(score) and (self.best is None or score < self.best["score"]):
            self.ckpt.save("best", self.state, self._meta(score))
            self.best = {"step": self.step, "score": score}
        self.ckpt.save("last", self.state, self._meta(score))
        self._write_outputs()

    # -- training --
    def train(self, stop_at: int | None = None, progress: bool = True) -> dict[str, Any]:
        """Run to ``config.steps`` (or to ``stop_at``, a multiple of log_every); returns :meth:`summary`."""
        cfg = self.config
        target = cfg.steps if stop_at is None else min(positive_int("stop_at", stop_at), cfg.steps)
        require(target % cfg.log_every == 0, f"stop_at ({target}) must be a multiple of log_every ({cfg.log_every})")
        if self.status == "diverged" or self.step >= target:
            self.status = "completed" if self.step >= cfg.steps and self.status != "diverged" else self.status
            self._write_outputs()
            return self.summary()
        self.status = "running"
        bar = None
        if progress and distributed.is_primary():
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=self.step, desc=f"train {cfg.arch}", leave=False, dynamic_ncols=True)
        try:
            while self.step < target and self.status == "running":
                self._one_call(target)
                if bar is not None:
                    bar.update(self.step - bar.n)
                    last = self.records[-1] if self.records else {}
                    bar.set_postfix(loss_d=last.get("loss_d"), loss_g=last.get("loss_g"))
        finally:
            if bar is not None:
                bar.close()
        if self.status == "running":
            self.status = "completed" if self.step >= cfg.steps else "stopped"
            self.save_checkpoint()
        self._write_outputs()
        return self.summary()

    def _one_call(self, target: int) -> None:
        cfg = self.config
        next_ckpt = (self.step // cfg.ckpt_every + 1) * cfg.ckpt_every
        n = min(cfg.steps_per_call, target - self.step, next_ckpt - self.step)
        first_row = self.step == 0 and not self.records
        t0 = time.perf_counter()
        state, recs = self.program.advance(self.state, self._data, self._latents, n)
        recs = jax.device_get(recs)
        self.timings.append({"steps": n, "seconds": time.perf_counter() - t0})
        rows = [_row(recs, i, with_metrics=i > 0) for i in range(0 if first_row else 1, len(recs["step"]))]
        bad = next((i for i, r in enumerate(rows) if not _row_finite(r)), None)
        self.state = state
        if bad is not None:
            self.records += rows[: bad + 1]
            self.status = "diverged"
            self.diverged_at = rows[bad]["step"]
            self._write_outputs()
            return
        self.records += rows
        self._write_outputs()
        if self.step % cfg.ckpt_every == 0:
            self.save_checkpoint()

    # -- sampling --
    def generate(self, z: Any, ema: bool = True, chunk: int = 256) -> np.ndarray:
        """G(z) in eval mode (BN running averages, stored SN vectors) with the EMA weights by default.

        The EMA generator uses the current G's batch-norm averages.
        """
        z = np.asarray(z, np.float32)
        require(z.ndim == 2 and z.shape[1] == self.gan.latent_dim,
                f"latent codes must have shape (n, {self.gan.latent_dim}), got {z.shape}")
        params = self.state.ema if ema else self.state.gen
        chunk = min(chunk, len(z))
        out = []
        for i in range(0, len(z), chunk):
            zz = z[i:i + chunk]
            pad = chunk - len(zz)
            if pad:
                zz = np.concatenate([zz, np.zeros((pad, zz.shape[1]), np.float32)])
            out.append(np.asarray(self.program.generate(params, self.state.gen_state, zz))[: chunk - pad])
        return np.concatenate(out)

    def sample(self, n: int, seed: int = 0, ema: bool = True, truncation: float | None = None) -> np.ndarray:
        """n images from fresh N(0, I) codes (truncated at ``truncation`` if given)."""
        z = losses.sample_latents(jax.random.PRNGKey(seed), positive_int("n", n), self.gan.latent_dim, truncation)
        return self.generate(z, ema=ema)
