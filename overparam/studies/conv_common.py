"""What the conv-GAN studies share (stochasticity, conv-width-sweep); neither imports the other.

* the data sets they train on and which of them have the digits classifier (:data:`DATASETS`,
  :data:`CLASSIFIER_DATA`) and need a path (:data:`ON_DISK`);
* presets: :func:`resolve_preset` fills every config field left at none from the chosen preset
  ("auto" = "small" on the built-in digits / mnist5k, "paper" on data from disk);
* the stochasticity paper's training setting (Yazici et al. 2020, sec. 4), :func:`paper_train_config`:
  alternating GDA with one D step then one G step, Adam(lr, beta1, beta2) for both players, spectral
  normalization in D only, an EMA of G's weights for evaluation;
* :func:`steps_per_call`: the host-call chunk, chosen to divide every boundary (run length,
  checkpoints, evaluations), so a requested checkpoint interval is honoured exactly, never rounded;
* :func:`curve_rows`: trainer log rows as tidy curve rows;
* :func:`pixel_nn_summary`: the Table-1 pixel 1-NN statistics (:mod:`overparam.metrics.nn`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from overparam.errors import ConfigError
from overparam.studies import common

__all__ = ["CLASSIFIER_DATA", "DATASETS", "ON_DISK", "curve_rows", "paper_train_config", "pixel_nn_summary",
           "resolve_preset", "run_folder", "steps_per_call"]

DATASETS = ("digits", "mnist5k", "cifar10", "celeba", "folder", "npz")
CLASSIFIER_DATA = ("digits", "mnist5k")
ON_DISK = ("cifar10", "celeba", "folder", "npz")


def resolve_preset(config: Any, presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The chosen preset's values overridden by every field of ``config`` that is not none; the
    preset "auto" is "small" for the built-in data (digits, mnist5k) and "paper" otherwise."""
    preset = config.preset
    if preset == "auto":
        preset = "small" if config.data in CLASSIFIER_DATA else "paper"
    out = dict(presets[preset])
    out["preset"] = preset
    for key in presets["small"]:
        value = getattr(config, key)
        if value is not None:
            out[key] = value
    return out


def need_path(config: Any) -> None:
    if config.data in ON_DISK and not config.path:
        raise ConfigError(f"data {config.data!r} needs --path (where the images are on disk)")


def steps_per_call(steps: int, log_every: int, *boundaries: int, limit: int = 500) -> int:
    """The largest multiple k of ``log_every`` with k <= max(limit, log_every) that divides
    ``steps`` and every boundary (checkpoint or evaluation interval); ``log_every`` always does
    when they are multiples of it."""
    best = log_every
    k = log_every
    while k <= max(limit, log_every):
        if steps % k == 0 and all(b % k == 0 for b in boundaries):
            best = k
        k += log_every
    return best


def paper_train_config(out_dir: str, *, arch: str, width: float, latent_dim: int, batch_size: int, steps: int,
                       log_every: int, ckpt_every: int, seed: int, ema_decay: float, lr: float, b1: float, b2: float,
                       fixed_latents: bool, latent_noise_var: float = 0.0, n_disc: int = 1,
                       loss: str = "non_saturating", chunk: int | None = None):
    """The trainer config of the stochasticity paper's setting (module docstring); ``chunk`` (steps
    per host call) defaults to :func:`steps_per_call` of the run length and checkpoint interval."""
    from overparam.bridge.trainer import TrainConfig

    spc = chunk if chunk is not None else steps_per_call(steps, log_every, ckpt_every)
    return TrainConfig(
        out_dir=out_dir, arch=arch, width=width, latent_dim=latent_dim, sn_d=True, sn_g=False, loss=loss,
        opt_g="adam", opt_d="adam", lr_g=lr, lr_d=lr, b1=b1, b2=b2, scheme="alternating", order="d_first",
        n_disc=n_disc, batch_size=batch_size, fixed_latents=fixed_latents, latent_noise_var=latent_noise_var,
        ema=True, ema_decay=ema_decay, ema_start=0, steps=steps, steps_per_call=spc, log_every=log_every,
        ckpt_every=ckpt_every, seed=seed, resume=True)


def run_folder(out_dir: str, name: str, config: Any) -> Path:
    """``out_dir/runs/<name>-<content hash>``: one run's trainer folder (logs and checkpoints)."""
    return Path(out_dir) / "runs" / f"{name}-{common.config_hash(config)[:8]}"


def curve_rows(name: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trainer log rows -> tidy curve rows: losses, gradient norms, top singular value (largest
    over each player's layers) and every layer's top-3 singular values."""
    out = []
    for rec in records:
        row: dict[str, Any] = {"run": name, **{k: v for k, v in rec.items()}}
        for player in ("G", "D"):
            svs = [v for k, v in rec.items() if k.startswith(f"{player}/") and k.endswith("/sv0")]
            row[f"{player}_top_sv"] = max(svs) if svs else float("nan")
        out.append(row)
    return out


def pixel_nn_summary(generated: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """``pixel_<side>_<stat>``: 1-NN pixel L1 on [0, 255] per pixel and channel, both image sets
    quantized to 8 bits (:func:`overparam.metrics.nn.pixel_l1_distances`, :func:`summarize_nn`)."""
    from overparam.metrics.nn import pixel_l1_distances, summarize_nn

    return {f"pixel_{k}": v for k, v in summarize_nn(pixel_l1_distances(generated, train, quantize=True)).items()}


# -- training to a plateau (issue 8: stochasticity and conv-width-sweep protocols) -----------------
def scores_so_far(trainer: Any) -> tuple[list[int], list[float]]:
    """(steps, scores) of the trainer's ``score_fn`` evaluations up to its current step, in order."""
    pts = sorted((int(s["step"]), float(s["score"])) for s in trainer.scores if int(s["step"]) <= trainer.step)
    return [p[0] for p in pts], [p[1] for p in pts]


def train_until_plateau(trainer: Any, max_steps: int, every: int, window: int, rel_tol: float,
                        progress: bool = False) -> dict[str, Any]:
    """Advance ``trainer`` ``every`` generator steps at a time until its scores plateau, it reaches
    ``max_steps`` (scored there too, also when it is not a multiple of ``every``), or it diverges; returns ``{"stop": "plateau" | "max" | "diverged", "stop_step",
    "plateau_step"}``.

    The trainer must checkpoint (and so call its ``score_fn``) every ``every`` steps
    (``config.ckpt_every == every``) with ``config.steps >= max_steps``. The rule
    (:func:`overparam.claims.plateau_index`): with s_1, s_2, … the scores at steps every, 2·every, …
    the run stops at the first i ≥ window with max − min ≤ rel_tol · mean|s| over s_{i−window} … s_i.
    A resumed trainer keeps the scores committed with its checkpoint, so a run that had already
    plateaued stops at once (and a longer budget continues a run that stopped at its maximum)."""
    from overparam.claims import plateau_index

    if trainer.config.ckpt_every != every or trainer.config.steps < max_steps:
        raise ConfigError(f"train_until_plateau needs a trainer that checkpoints every {every} steps and runs to "
                          f">= {max_steps} steps (got ckpt_every={trainer.config.ckpt_every}, "
                          f"steps={trainer.config.steps})")
    while True:
        steps, vals = scores_so_far(trainer)
        p = plateau_index(vals, window, rel_tol) if vals else None
        if p is not None:
            return {"stop": "plateau", "stop_step": trainer.step, "plateau_step": steps[p]}
        if trainer.status == "diverged":
            return {"stop": "diverged", "stop_step": trainer.step, "plateau_step": None}
        if trainer.step >= max_steps:
            return {"stop": "max", "stop_step": trainer.step, "plateau_step": None}
        trainer.train(stop_at=min((trainer.step // every + 1) * every, max_steps), progress=progress)


def heldout_split(data: str, path: str | None, n: int, seed: int, resolution: int | None,
                  n_ref: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out): the seeded training subset of ``n`` images — exactly
    ``load_dataset(data, path, n=n, seed=seed)``, i.e. ``default_rng(seed).permutation(N)[:n]`` — and
    the next ``n_ref`` images of the same permutation (default n; fewer if the set is smaller;
    possibly none), real images that are never trained on."""
    from overparam.bridge.data import load_dataset, subset_indices

    every = load_dataset(data, path, n=None, seed=seed, resolution=resolution)
    perm = subset_indices(len(every), len(every), seed)
    if n > len(every):
        raise ConfigError(f"asked for n={n} images but the data set holds only {len(every)}; use n <= {len(every)}")
    k = n if n_ref is None else n_ref
    return every[perm[:n]], every[perm[n:n + k]]
