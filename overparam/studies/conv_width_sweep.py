"""Conv-GAN width sweep: the same trainer config over width multipliers (the scale-up of width-sweep).

Every width trains the same GAN (overparam.bridge.trainer; by default the stochasticity paper's
setting: its DCGAN, alternating GDA 1:1, non-saturating loss, Adam(1e-4, 0, 0.9), SN in D,
EMA of G, fresh latents z ~ N(0, I) each step) with every channel count multiplied by the width.
Per width it measures

* sample quality over training: on the built-in digits / mnist5k, the Fréchet distance in the
  digits classifier's features (``fd_<data>_classifier``; overparam.bridge.classifier —
  a Fréchet distance, NOT FID) of n_eval EMA samples (fixed codes) against the n training images,
  at step 0 and every ``eval_every`` steps; on other data FID plays this role when an Inception
  weights file is given, and nothing does otherwise;
* convergence speed from that curve: the first step at which the distance has made 90 % of its
  total drop, FD(t) - min FD <= 0.1 (FD(0) - min FD) — marked "still falling" when the last
  evaluation is the lowest, i.e. the run ended before the curve flattened — and, with
  ``fd_threshold``, the first step at which FD <= fd_threshold ("not reached" otherwise);
* FID at the end, only when ``--inception-weights PATH`` is given (protocol in
  overparam.bridge.inception; reference = the n training images); otherwise it says it is skipped;
* 1-NN pixel distances at the end (overfitting / mode drop, L1 on [0, 255] per pixel and channel,
  overparam.metrics.nn) between n_eval EMA samples and the n training images;
* the top singular value of every G and D layer over training (BigGAN's monitor; the curves show
  the largest over each player's layers), the losses, and parameter counts and images/s.

Presets: "small" (digits, n = 512, widths 0.015625, 0.03125, 0.0625, latent 64, batch 64, 1,000 generator
steps, EMA decay 0.99; a few CPU minutes) and "paper" (all training images at 32x32, widths
0.125, 0.25, 0.5, 1, latent 512, 50,000 steps, EMA decay 0.999, for a GPU); "auto" picks "small" for digits / mnist5k. Fields left at none take
the preset's value. Writes widths.csv, curves.csv, fd_curves.csv, results.json, manifest.json and
conv_width_sweep.png/.pdf. Shared with the stochasticity study: overparam.studies.conv_common (presets,
the paper's train config, curve rows, 1-NN summaries).

A width's trainer checkpoints at every evaluation, and the checkpoint's record carries every score so
far, so a sweep killed right after a checkpoint write resumes with its whole FD curve."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.studies import common, conv_common
from overparam.studies.config import help_meta as _h
from overparam.studies.conv_common import CLASSIFIER_DATA, DATASETS, curve_rows

NAME = "conv-width-sweep"
DESCRIPTION = __doc__

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n": 512, "widths": (1 / 64, 1 / 32, 1 / 16), "latent_dim": 64, "steps": 1000, "eval_every": 250,
              "n_eval": 512, "log_every": 50, "resolution": None, "ema_decay": 0.99},
    "paper": {"n": None, "widths": (0.125, 0.25, 0.5, 1.0), "latent_dim": 512, "steps": 50000, "eval_every": 5000,
              "n_eval": 10000, "log_every": 500, "resolution": 32, "ema_decay": 0.999},
}
DROP = 0.9  # convergence = 90 % of the total FD drop (fixed before any run)


@dataclass(frozen=True)
class Config:
    """Conv width-sweep configuration; fields left at none take the preset's value."""

    data: str = field(default="digits", metadata=_h("data set: " + ", ".join(DATASETS)))
    path: str | None = field(default=None, metadata=_h("data location (cifar10, celeba, folder, npz)"))
    preset: str = field(default="auto", metadata=_h("small, paper, or auto (small for digits/mnist5k)"))
    n: int | None = field(default=None, metadata=_h("training images (preset: 512 / all)"))
    resolution: int | None = field(default=None, metadata=_h("image side (preset: data's own / 32)"))
    widths: tuple[float, ...] | None = field(default=None, metadata=_h("width multipliers, comma-separated decimals "
                                                                       "(preset: 0.015625,0.03125,0.0625 / "
                                                                       "0.125,0.25,0.5,1)"))
    arch: str = field(default="stoch_dcgan", metadata=_h("network: stoch_dcgan, dcgan, resnet"))
    latent_dim: int | None = field(default=None, metadata=_h("latent dimension (preset: 64 / 512)"))
    batch_size: int = field(default=64, metadata=_h("mini-batch size"))
    fixed_latents: bool = field(default=False, metadata=_h("train on a fixed latent set (one code per image)"))
    steps: int | None = field(default=None, metadata=_h("generator updates per width (preset: 1000 / 50000)"))
    n_disc: int = field(default=1, metadata=_h("discriminator steps per generator step"))
    loss: str = field(default="non_saturating", metadata=_h("GAN loss"))
    lr: float = field(default=1e-4, metadata=_h("Adam learning rate of both players"))
    b1: float = field(default=0.0, metadata=_h("Adam beta1"))
    b2: float = field(default=0.9, metadata=_h("Adam beta2"))
    ema_decay: float | None = field(default=None, metadata=_h("EMA decay of G, used for evaluation (preset: "
                                                              "0.99 / 0.999)"))
    seed: int = field(default=0, metadata=_h("seed (data subset, init, batches, evaluation codes)"))
    eval_every: int | None = field(default=None, metadata=_h("evaluate the FD every this many steps (preset: 250 / "
                                                             "5000)"))
    n_eval: int | None = field(default=None, metadata=_h("generated samples per evaluation (preset: 512 / 10000)"))
    log_every: int | None = field(default=None, metadata=_h("record losses and singular values every this many steps"))
    fd_threshold: float | None = field(default=None, metadata=_h("also report the first step with FD <= this"))
    inception_weights: str | None = field(default=None, metadata=_h("FID Inception weights (.pth/.npz); none = FID "
                                                                    "skipped"))
    classifier_steps: int | None = field(default=None, metadata=_h("training steps of the digits classifier"))
    out_dir: str = field(default="results/conv-width-sweep", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        from overparam.bridge import losses, nets

        one_of("data", self.data, DATASETS)
        one_of("preset", self.preset, ("auto", "small", "paper"))
        one_of("arch", self.arch, nets.ARCHS)
        one_of("loss", self.loss, losses.LOSSES)
        r = self.resolved
        require(len(r["widths"]) > 0, "widths is empty; give e.g. --widths 0.03125,0.0625")
        for w in r["widths"]:
            finite_positive("every width", w)
        require(len(set(r["widths"])) == len(r["widths"]), "widths has duplicates")
        if r["n"] is not None:
            positive_int("n", r["n"])
            require(self.batch_size <= r["n"], f"batch_size {self.batch_size} exceeds n = {r['n']}")
        for name in ("steps", "eval_every", "n_eval", "log_every", "latent_dim"):
            positive_int(name, r[name])
        require(r["n_eval"] >= 2, "n_eval must be >= 2 (a covariance needs two samples)")
        positive_int("batch_size", self.batch_size)
        positive_int("n_disc", self.n_disc)
        finite_positive("lr", self.lr)
        require(0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0, f"b1, b2 must lie in [0, 1), got {self.b1}, {self.b2}")
        require(0.0 < r["ema_decay"] < 1.0, f"ema_decay must lie in (0, 1), got {r['ema_decay']}")
        require(r["eval_every"] % r["log_every"] == 0,
                f"eval_every ({r['eval_every']}) must be a multiple of log_every ({r['log_every']})")
        require(r["steps"] % r["eval_every"] == 0,
                f"steps ({r['steps']}) must be a multiple of eval_every ({r['eval_every']})")
        if self.fd_threshold is not None:
            finite_positive("fd_threshold", self.fd_threshold)
        if self.classifier_steps is not None:
            positive_int("classifier_steps", self.classifier_steps)
        conv_common.need_path(self)
        if r["resolution"] is not None:
            nets.check_resolution(r["resolution"])

    @property
    def resolved(self) -> dict[str, Any]:
        """The preset's values overridden by every field that is not none."""
        return conv_common.resolve_preset(self, PRESETS)

    @property
    def score_name(self) -> str | None:
        """The per-evaluation distance: the classifier FD, FID, or none."""
        if self.data in CLASSIFIER_DATA:
            return f"fd_{self.data}_classifier"
        return "fid" if self.inception_weights else None


@dataclass
class Results:
    config: Config
    resolved: dict[str, Any]
    rows: list[dict[str, Any]]        # one per width
    curves: list[dict[str, Any]]      # one per width and recorded step (losses, singular values)
    fd_curves: list[dict[str, Any]]   # one per width and evaluation
    seconds: float
    fid_note: str = ""
    score_note: str = ""


# -- one width --------------------------------------------------------------------------------
def train_config(config: Config, width: float, out_dir: str):
    """One width's trainer config: the stochasticity paper's setting (conv_common.paper_train_config)
    with a checkpoint (and an evaluation) every ``eval_every`` steps."""
    r = config.resolved
    return conv_common.paper_train_config(
        out_dir, arch=config.arch, width=width, latent_dim=r["latent_dim"], batch_size=config.batch_size,
        steps=r["steps"], log_every=r["log_every"], ckpt_every=r["eval_every"], seed=config.seed,
        ema_decay=r["ema_decay"], lr=config.lr, b1=config.b1, b2=config.b2, fixed_latents=config.fixed_latents,
        n_disc=config.n_disc, loss=config.loss)


def make_scorer(config: Config, data: np.ndarray) -> tuple[Callable[[np.ndarray], float] | None, str]:
    """(images -> distance to the training set, note) for the per-evaluation metric."""
    name = config.score_name
    if name is None:
        return None, ("no per-evaluation distance: the classifier FD exists only for digits/mnist5k and FID needs "
                      "--inception-weights PATH; convergence speed is not measured")
    if name == "fid":
        from overparam.bridge import inception

        stats = inception.reference_statistics(data, config.inception_weights)
        return (lambda g: inception.fid(g, stats, config.inception_weights)), "FID (Inception pool3)"
    from overparam.bridge.classifier import get_classifier
    from overparam.metrics.frechet import frechet_distance, gaussian_stats

    clf = get_classifier(config.data, data.shape[1], seed=0, steps=config.classifier_steps)
    ref = gaussian_stats(clf.features(data))
    note = (f"{clf.label}: Fréchet distance in the {config.data} classifier's 128-d features (test accuracy "
            f"{clf.test_accuracy:.3f}); NOT FID, not comparable with FID values")
    return (lambda g: frechet_distance(*gaussian_stats(clf.features(g)), *ref)), note


def eval_codes(config: Config, latent_dim: int) -> np.ndarray:
    """The fixed evaluation codes (the same for every width and step)."""
    import jax

    return np.asarray(jax.random.normal(jax.random.PRNGKey(config.seed + 7919), (config.resolved["n_eval"], latent_dim)))


def convergence(fd: list[dict[str, Any]], threshold: float | None) -> dict[str, Any]:
    """Steps to 90 % of the FD drop, FD(t) - min <= (1 - DROP)(FD(0) - min), and to FD <= threshold."""
    vals = [(c["step"], c["score"]) for c in fd if math.isfinite(c["score"])]
    out: dict[str, Any] = {"steps_to_90pct_drop": None, "steps_to_threshold": None, "still_falling": False}
    if len(vals) < 2:
        return out
    first, low = vals[0][1], min(v for _, v in vals)
    out["still_falling"] = vals[-1][1] == low and vals[-1][1] < vals[-2][1]  # the drop is not over: speed censored
    if not first > low:
        return out  # the distance never fell below its starting value: no convergence to time
    target = low + (1 - DROP) * (first - low)
    out["steps_to_90pct_drop"] = next(s for s, v in vals if v <= target + 1e-12)
    if threshold is not None:
        out["steps_to_threshold"] = next((s for s, v in vals if v <= threshold), None)
    return out


def run_width(config: Config, width: float, data: np.ndarray, scorer: Callable | None, progress: bool,
              fid_stats: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    from overparam.bridge import nets
    from overparam.bridge.trainer import Trainer

    folder = conv_common.run_folder(config.out_dir, f"w{width:g}", config)
    trainer = Trainer(train_config(config, width, str(folder)), data)
    codes = eval_codes(config, trainer.gan.latent_dim)

    def score(t: Trainer) -> float:
        g = t.generate(codes, ema=True)
        return float(scorer(g)) if np.all(np.isfinite(g)) else float("nan")

    fd0 = None
    if scorer is not None:  # the distance at initialization, kept beside the run for a resume
        fd0_file = folder / "score_step0.json"
        fd0 = common.read_json(fd0_file)["score"] if trainer.step > 0 and fd0_file.exists() else None
        if trainer.step == 0:
            fd0 = score(trainer)
            common.write_json(fd0_file, {"score": fd0})
    trainer.score_fn = score if scorer is not None else None
    summ = trainer.train(progress=progress)
    fd = ([{"step": 0, "score": fd0}] if fd0 is not None else []) + [
        {"step": s["step"], "score": s["score"]} for s in summ["scores"]]
    fd = sorted({c["step"]: c for c in fd}.values(), key=lambda c: c["step"])
    row: dict[str, Any] = {"width": width, "params_g": nets.param_count(trainer.state.gen),
                           "params_d": nets.param_count(trainer.state.disc), "status": summ["status"],
                           "steps": trainer.step, "images_per_s": summ["images_per_s"],
                           "final_score": fd[-1]["score"] if fd else float("nan"),
                           **convergence(fd, config.fd_threshold)}
    gen = trainer.generate(codes, ema=True)
    if np.all(np.isfinite(gen)) and summ["status"] != "diverged":
        row.update(conv_common.pixel_nn_summary(gen, data))
        if fid_stats is not None:
            from overparam.bridge import inception

            row["fid"] = inception.fid(gen, fid_stats, config.inception_weights)
    curves = curve_rows(f"w{width:g}", trainer.records)
    for c in curves:
        c["width"] = width
    return {"row": row, "curves": curves, "fd": [{"width": width, **c} for c in fd]}


def run(config: Config = Config(), progress: bool = True) -> Results:
    """Train every width (finished widths in ``out_dir/cells`` are reused) and evaluate it."""
    from overparam.bridge.data import load_dataset

    common.check_out_dir(config.out_dir)  # one error line before any work
    t0 = time.perf_counter()
    r = config.resolved
    store = common.CellStore(config.out_dir, config)
    data = load_dataset(config.data, config.path, n=r["n"], seed=config.seed, resolution=r["resolution"])
    if config.batch_size > data.shape[0]:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {data.shape[0]} training images")
    scorer, note, fid_stats = None, None, None
    rows, curves, fds = [], [], []
    for w in common.progress(r["widths"], desc="conv width sweep", enabled=progress):
        cell = store.get(f"w{w:g}")
        if cell is None:
            if note is None:
                scorer, note = make_scorer(config, data)
            if config.inception_weights and fid_stats is None:
                from overparam.bridge import inception

                fid_stats = inception.reference_statistics(data, config.inception_weights)
            cell = run_width(config, w, data, scorer, progress, fid_stats)
            cell["score_note"] = note
            store.put(f"w{w:g}", cell)
        note = cell["score_note"]
        fd = [{"step": c["step"], "score": c["score"]} for c in cell["fd"]]
        rows.append({**cell["row"], **convergence(fd, config.fd_threshold)})  # derived from the stored curve
        curves += cell["curves"]
        fds += cell["fd"]
    fid_note = ("FID computed at the end against the n training images" if config.inception_weights else
                "FID skipped: no Inception weights file given (--inception-weights PATH; see "
                "overparam.bridge.inception for the protocol)")
    return Results(config, r, rows, curves, fds, time.perf_counter() - t0, fid_note, note or "")


# -- output -------------------------------------------------------------------------------------
def summary(results: Results) -> str:
    r, cfg = results.resolved, results.config
    score = cfg.score_name or "none"
    shown = []
    for row in results.rows:
        shown.append({
            "width": f"{row['width']:g}", "params G": row["params_g"], "params D": row["params_d"],
            f"{score} final": row.get("final_score", float("nan")),
            "steps to 90% drop": ("no drop" if row.get("steps_to_90pct_drop") is None else
                                  f"{row['steps_to_90pct_drop']}" + (" (still falling)" if row.get("still_falling")
                                                                     else "")),
            **({"steps to thr": row.get("steps_to_threshold") if row.get("steps_to_threshold") is not None
                else "not reached"} if cfg.fd_threshold is not None else {}),
            "1-NN OF avg": row.get("pixel_overfitting_avg", float("nan")),
            "1-NN MD avg": row.get("pixel_mode_drop_avg", float("nan")),
            "FID": row["fid"] if "fid" in row else "skipped",
            "img/s": row.get("images_per_s") or float("nan"), "status": row["status"]})
    cols = list(shown[0]) if shown else []
    n_train = r["n"] if r["n"] is not None else "all"
    return "\n".join([
        f"Conv width sweep ({cfg.data}, n = {n_train}, preset {r['preset']}, {cfg.arch}, latent {r['latent_dim']}, "
        f"batch {cfg.batch_size}, {r['steps']} generator steps, Adam({cfg.lr:g}, {cfg.b1:g}, {cfg.b2:g}), "
        f"{cfg.loss}, SN in D, EMA {r['ema_decay']:g}).",
        f"Per-evaluation distance: {results.score_note} (n_eval = {r['n_eval']} EMA samples, "
        f"every {r['eval_every']} steps).",
        "1-NN: pixel L1 on [0, 255] per pixel and channel, avg (OF = generated -> training, MD = training -> "
        "generated). " + results.fid_note + ".",
        "", common.format_table(shown, cols, floatfmt=".3g"), f"({results.seconds:.0f} s)"])


def plot(results: Results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_fid = any("fid" in r for r in results.rows)
    fig, axes = plt.subplots(1, 5 if has_fid else 4, figsize=(18 if has_fid else 15, 3.4))
    score = results.config.score_name or "no distance"
    for row in results.rows:
        w = row["width"]
        fd = [c for c in results.fd_curves if c["width"] == w]
        axes[0].plot([c["step"] for c in fd], [c["score"] for c in fd], "o-", ms=3, label=f"width {w:g}")
        cur = [c for c in results.curves if c["width"] == w]
        axes[1].plot([c["step"] for c in cur], [c["G_top_sv"] for c in cur], label=f"width {w:g}")
        axes[2].plot([c["step"] for c in cur], [c["D_top_sv"] for c in cur], label=f"width {w:g}")
    axes[0].set_title(f"{score} vs step" + (" (not FID)" if "classifier" in score else ""), fontsize=9)
    axes[0].set_yscale("log")
    axes[1].set_title("G: largest top singular value", fontsize=9)
    axes[2].set_title("D: largest top singular value (raw kernel)", fontsize=9)
    for ax in axes[:3]:
        ax.set_xlabel("generator step")
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    ws = [r["width"] for r in results.rows]
    for key, label in (("pixel_overfitting_avg", "overfitting avg"), ("pixel_mode_drop_avg", "mode drop avg")):
        axes[3].plot(ws, [r.get(key, float("nan")) for r in results.rows], "o-", label=label)
    axes[3].set_xscale("log", base=2)
    axes[3].set_xlabel("width multiplier")
    axes[3].set_title("1-NN pixel L1 [0, 255] vs width", fontsize=9)
    axes[3].legend(fontsize=7)
    if has_fid:
        axes[4].plot(ws, [r.get("fid", float("nan")) for r in results.rows], "o-")
        axes[4].set_xscale("log", base=2)
        axes[4].set_title("FID vs width", fontsize=9)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    import matplotlib.pyplot as plt

    out = Path(results.config.out_dir)
    paths = [
        common.write_csv(out / "widths.csv", results.rows),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_csv(out / "fd_curves.csv", results.fd_curves),
        common.write_json(out / "results.json", {"resolved": results.resolved, "rows": results.rows,
                                                  "score": results.score_note,
                                                  "fid": results.fid_note, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, resolved=results.resolved,
                                                                 seconds=results.seconds)),
    ]
    fig = plot(results)
    paths += common.save_figure(fig, out / "conv_width_sweep")
    plt.close(fig)
    return paths
