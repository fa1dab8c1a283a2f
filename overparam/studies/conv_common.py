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
