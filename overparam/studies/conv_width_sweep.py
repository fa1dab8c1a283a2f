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

**Protocol (issue 8, item 5).** Every width and seed trains until its FD plateaus
(:func:`overparam.claims.plateau_index` over the evaluations: the last ``plateau_window`` + 1 values within
``plateau_rel_tol`` of their mean; conv_common.train_until_plateau) or reaches ``steps`` (its maximum).
Per seed, a *real-image floor*: the same FD for ``n_eval`` real images that are not in the training
subset (the next images of the seeded permutation) against the training images; the pinned *level*
is ``level_factor`` x that floor. Verdicts (thresholds pinned in sims/conv_width_sweep.toml; each a
per-seed Spearman rank correlation over the widths, averaged over ``seeds`` with a bootstrap 95 %
interval over seeds; ``tuning_seeds`` are recorded and disjoint):

* final FD decreasing in width: mean rho(width, final FD) below ``rho_threshold``;
* steps to the level decreasing in width: mean rho(width, first evaluated step with FD <= level)
  below ``rho_threshold`` (a width that never reaches it ranks last: +inf);
* stability against width: mean rho(width, largest relative FD rise between consecutive evaluations,
  max_t (FD_t - FD_{t-1}) / FD_{t-1}, 0 if it never rises) below ``rho_threshold``.
The final-FD and stability verdicts are ``inconclusive`` ("runs not converged") when a run stopped
at its maximum before its plateau; every verdict is when a run diverged.

Presets: "small" (digits, n = 256, widths 1/128 ... 1/16 (a factor 8), latent 64, batch 64, at most 2,000
generator steps, an FD evaluation every 200, EMA decay 0.99; the default, 3 seeds; the larger CPU set,
widths 1/64 ... 1/8 at n = 512, is sims/conv_width_sweep_large.toml) and "paper" (all training images at 32x32, widths
0.125, 0.25, 0.5, 1, latent 512, 50,000 steps, EMA decay 0.999, for a GPU); "auto" picks "small" for digits / mnist5k. Fields left at none take
the preset's value. Writes widths.csv, curves.csv, fd_curves.csv, results.json, manifest.json and
conv_width_sweep.png/.pdf. Shared with the stochasticity study: overparam.studies.conv_common (presets,
the paper's train config, curve rows, 1-NN summaries).

A width's trainer checkpoints at every evaluation, and the checkpoint's record carries every score so
far, so a sweep killed right after a checkpoint write resumes with its whole FD curve."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from overparam import claims
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.studies import common, conv_common
from overparam.studies.config import check_types, help_meta as _h
from overparam.studies.conv_common import CLASSIFIER_DATA, DATASETS, curve_rows

NAME = "conv-width-sweep"
DESCRIPTION = __doc__

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n": 256, "widths": (1 / 128, 1 / 64, 1 / 32, 1 / 16), "latent_dim": 64, "steps": 2000, "eval_every": 200,
              "n_eval": 256, "log_every": 50, "resolution": None, "ema_decay": 0.99},
    "paper": {"n": None, "widths": (0.125, 0.25, 0.5, 1.0), "latent_dim": 512, "steps": 50000, "eval_every": 5000,
              "n_eval": 10000, "log_every": 500, "resolution": 32, "ema_decay": 0.999},
}
DROP = 0.9  # convergence = 90 % of the total FD drop (fixed before any run; descriptive)
THRESHOLDS = "sims/conv_width_sweep.toml"


@dataclass(frozen=True)
class Config:
    """Conv width-sweep configuration; fields left at none take the preset's value."""

    data: str = field(default="digits", metadata=_h("data set: " + ", ".join(DATASETS)))
    path: str | None = field(default=None, metadata=_h("data location (cifar10, celeba, folder, npz)"))
    preset: str = field(default="auto", metadata=_h("small, paper, or auto (small for digits/mnist5k)"))
    n: int | None = field(default=None, metadata=_h("training images (preset: 256 / all)"))
    resolution: int | None = field(default=None, metadata=_h("image side (preset: data's own / 32)"))
    widths: tuple[float, ...] | None = field(default=None, metadata=_h("width multipliers, comma-separated decimals "
                                                                       "(preset: 0.0078125,0.015625,0.03125,0.0625 / "
                                                                       "0.125,0.25,0.5,1)"))
    arch: str = field(default="stoch_dcgan", metadata=_h("network: stoch_dcgan, dcgan, resnet"))
    latent_dim: int | None = field(default=None, metadata=_h("latent dimension (preset: 64 / 512)"))
    batch_size: int = field(default=64, metadata=_h("mini-batch size"))
    fixed_latents: bool = field(default=False, metadata=_h("train on a fixed latent set (one code per image)"))
    steps: int | None = field(default=None, metadata=_h("maximum generator updates per width; a run stops earlier "
                                                        "at its FD plateau (preset: 2000 / 50000)"))
    n_disc: int = field(default=1, metadata=_h("discriminator steps per generator step"))
    loss: str = field(default="non_saturating", metadata=_h("GAN loss"))
    lr: float = field(default=1e-4, metadata=_h("Adam learning rate of both players"))
    b1: float = field(default=0.0, metadata=_h("Adam beta1"))
    b2: float = field(default=0.9, metadata=_h("Adam beta2"))
    ema_decay: float | None = field(default=None, metadata=_h("EMA decay of G, used for evaluation (preset: "
                                                              "0.99 / 0.999)"))
    seeds: tuple[int, ...] = field(default=(1000, 1001, 1002), metadata=_h(
        "held-out evaluation seeds (each: data subset, init, batches, evaluation codes)"))
    tuning_seeds: tuple[int, ...] = field(default=(100,), metadata=_h(
        "seeds used to choose the budget (recorded; disjoint from seeds; not run)"))
    plateau_window: int = field(default=4, metadata=_h("plateau rule: the last window+1 FD evaluations ..."))
    plateau_rel_tol: float = field(default=0.1, metadata=_h("... vary by at most this fraction of their mean"))
    level_factor: float = field(default=2.0, metadata=_h("the FD level of 'steps to level': this many times the "
                                                         "real-image floor"))
    rho_threshold: float = field(default=0.0, metadata=_h("verdicts: the mean Spearman rho over seeds must lie "
                                                          "below this"))
    n_boot: int = field(default=10000, metadata=_h("bootstrap resamples of the seeds"))
    eval_every: int | None = field(default=None, metadata=_h("evaluate the FD every this many steps (preset: 200 / "
                                                             "5000)"))
    n_eval: int | None = field(default=None, metadata=_h("generated samples per evaluation (preset: 256 / 10000)"))
    log_every: int | None = field(default=None, metadata=_h("record losses and singular values every this many steps"))
    fd_threshold: float | None = field(default=None, metadata=_h("also report the first step with FD <= this"))
    inception_weights: str | None = field(default=None, metadata=_h("FID Inception weights (.pth/.npz); none = FID "
                                                                    "skipped"))
    classifier_steps: int | None = field(default=None, metadata=_h("training steps of the digits classifier"))
    out_dir: str = field(default="results/conv-width-sweep", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        check_types(self)
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
        require(len(self.seeds) > 0, "seeds is empty; give e.g. --seeds 1000,1001,1002")
        claims.check_disjoint(self.tuning_seeds, self.seeds)
        positive_int("plateau_window", self.plateau_window)
        finite_positive("plateau_rel_tol", self.plateau_rel_tol, allow_zero=True)
        finite_positive("level_factor", self.level_factor)
        positive_int("n_boot", self.n_boot)
        require(-1.0 <= self.rho_threshold <= 1.0, f"rho_threshold must lie in [-1, 1], got {self.rho_threshold}")
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

    def cell_config(self) -> "Config":
        """What a cell depends on: without the seed lists and the verdict thresholds."""
        return dataclasses.replace(self, seeds=(0,), tuning_seeds=(), level_factor=1.0, rho_threshold=0.0, n_boot=1)


@dataclass
class Results:
    config: Config
    resolved: dict[str, Any]
    rows: list[dict[str, Any]]        # one per seed and width
    curves: list[dict[str, Any]]      # one per width and recorded step (losses, singular values)
    fd_curves: list[dict[str, Any]]   # one per width and evaluation
    seconds: float
    fid_note: str = ""
    score_note: str = ""
    floors: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per seed
    verdicts: list[claims.Verdict] = dataclasses.field(default_factory=list)


# -- one width --------------------------------------------------------------------------------
def train_config(config: Config, width: float, out_dir: str, seed: int | None = None):
    """One width's trainer config: the stochasticity paper's setting (conv_common.paper_train_config)
    with a checkpoint (and an evaluation) every ``eval_every`` steps."""
    r = config.resolved
    return conv_common.paper_train_config(
        out_dir, arch=config.arch, width=width, latent_dim=r["latent_dim"], batch_size=config.batch_size,
        steps=r["steps"], log_every=r["log_every"], ckpt_every=r["eval_every"],
        seed=config.seeds[0] if seed is None else seed,
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


def eval_codes(config: Config, latent_dim: int, seed: int | None = None) -> np.ndarray:
    """The fixed evaluation codes of a seed (the same for every width and step)."""
    import jax

    seed = config.seeds[0] if seed is None else seed
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed + 7919), (config.resolved["n_eval"], latent_dim)))


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
              fid_stats: tuple[np.ndarray, np.ndarray] | None = None, seed: int | None = None) -> dict:
    """Train one width of one seed until its FD plateaus or ``steps`` (conv_common.train_until_plateau)."""
    from overparam.bridge import nets
    from overparam.bridge.trainer import Trainer

    seed = config.seeds[0] if seed is None else seed
    folder = conv_common.run_folder(config.out_dir, f"s{seed}_w{width:g}", config.cell_config())
    trainer = Trainer(train_config(config, width, str(folder), seed), data)
    codes = eval_codes(config, trainer.gan.latent_dim, seed)

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
    r = config.resolved
    if scorer is not None:
        stop = conv_common.train_until_plateau(trainer, r["steps"], r["eval_every"], config.plateau_window,
                                               config.plateau_rel_tol, progress=progress)
    else:
        trainer.train(progress=progress)
        stop = {"stop": "diverged" if trainer.status == "diverged" else "max", "stop_step": trainer.step,
                "plateau_step": None}
    summ = trainer.summary()
    fd = ([{"step": 0, "score": fd0}] if fd0 is not None else []) + [
        {"step": s["step"], "score": s["score"]} for s in summ["scores"]]
    fd = sorted({c["step"]: c for c in fd}.values(), key=lambda c: c["step"])
    row: dict[str, Any] = {"seed": seed, "width": width, "stop": stop["stop"],
                           "params_g": nets.param_count(trainer.state.gen),
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
        c["seed"] = seed
    return {"row": row, "curves": curves, "fd": [{"seed": seed, "width": width, **c} for c in fd]}


def load_seed_data(config: Config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training subset, held-out real images, at most n_eval of them) of one seed; with n = all
    images there is no held-out set (and no real-image floor)."""
    from overparam.bridge.data import load_dataset

    r = config.resolved
    if r["n"] is None:
        data = load_dataset(config.data, config.path, n=None, seed=seed, resolution=r["resolution"])
        return data, data[:0]
    return conv_common.heldout_split(config.data, config.path, r["n"], seed, r["resolution"], r["n_eval"])


def run(config: Config = Config(), progress: bool = True) -> Results:
    """Train every seed's widths to their FD plateau or maximum (finished widths in ``out_dir/cells``
    are reused, unfinished ones resume from their checkpoints), evaluate them and decide."""
    common.check_out_dir(config.out_dir)  # one error line before any work
    t0 = time.perf_counter()
    r = config.resolved
    store = common.CellStore(config.out_dir, config.cell_config())
    note, fid_stats = None, None
    rows, curves, fds, floors = [], [], [], []
    for seed in common.progress(config.seeds, desc="conv width sweep", enabled=progress):
        data, held = load_seed_data(config, seed)
        if config.batch_size > data.shape[0]:
            raise ConfigError(f"batch_size {config.batch_size} exceeds the {data.shape[0]} training images")
        scorer, fid_stats = None, None
        floor = store.get(f"s{seed}_floor")
        if floor is None:
            scorer, note = make_scorer(config, data)
            value = float(scorer(held)) if scorer is not None and len(held) >= 2 else float("nan")
            floor = store.put(f"s{seed}_floor", {"seed": seed, "n_ref": int(len(held)), "floor": value,
                                                 "score_note": note})
        floors.append(floor)
        for w in r["widths"]:
            cell = store.get(f"s{seed}_w{w:g}")
            if cell is None:
                if scorer is None:
                    scorer, note = make_scorer(config, data)
                if config.inception_weights and fid_stats is None:
                    from overparam.bridge import inception

                    fid_stats = inception.reference_statistics(data, config.inception_weights)
                cell = run_width(config, w, data, scorer, progress, fid_stats, seed)
                cell["score_note"] = note
                store.put(f"s{seed}_w{w:g}", cell)
            note = cell["score_note"]
            fd = [{"step": c["step"], "score": c["score"]} for c in cell["fd"]]
            level = config.level_factor * floor["floor"]
            rows.append({**cell["row"], **convergence(fd, config.fd_threshold), **stability(fd),
                         "fd_level": level, "steps_to_level": steps_to(fd, level)})  # derived from the stored curve
            curves += cell["curves"]
            fds += cell["fd"]
    fid_note = ("FID computed at the end against the n training images" if config.inception_weights else
                "FID skipped: no Inception weights file given (--inception-weights PATH; see "
                "overparam.bridge.inception for the protocol)")
    res = Results(config, r, rows, curves, fds, time.perf_counter() - t0, fid_note, note or "", floors)
    res.verdicts = decide_verdicts(config, rows)
    return res


def steps_to(fd: list[dict[str, Any]], level: float) -> float:
    """The first evaluated step with FD <= level (after step 0); +inf if never (or no finite level)."""
    if not math.isfinite(level):
        return math.nan
    return float(next((c["step"] for c in fd if c["step"] > 0 and c["score"] <= level), math.inf))


def stability(fd: list[dict[str, Any]]) -> dict[str, float]:
    """``max_rise``: the largest relative FD rise between consecutive evaluations after step 0,
    max_t (FD_t - FD_{t-1}) / FD_{t-1} (0 when it never rises); ``last_spread``: (max - min) / mean
    of the last 3 evaluations (descriptive)."""
    v = [c["score"] for c in sorted(fd, key=lambda c: c["step"]) if c["step"] > 0]
    if len(v) < 2 or not all(math.isfinite(x) for x in v):
        return {"max_rise": math.nan, "last_spread": math.nan}
    rises = [(b - a) / a for a, b in zip(v, v[1:]) if a > 0]
    last = np.asarray(v[-3:])
    return {"max_rise": max(0.0, max(rises)) if rises else 0.0,
            "last_spread": float(np.ptp(last) / np.mean(last)) if np.mean(last) > 0 else math.nan}


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties, +inf ranks last); NaN with < 3 pairs
    or a constant side."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return float("nan")
    return float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)


VERDICTS = (
    ("final_fd", "final_score", "wider conv GANs reach a lower classifier-feature FD (better sample quality)",
     "final FD"),
    ("steps_to_level", "steps_to_level", "wider conv GANs reach the pinned FD level in fewer steps (faster)",
     "steps to FD <= level"),
    ("stability", "max_rise", "wider conv GANs train more stably (smaller FD rises between evaluations)",
     "largest relative FD rise"),
)


def decide_verdicts(config: Config, rows: list[dict[str, Any]]) -> list[claims.Verdict]:
    """Per seed Spearman rho(width, statistic); mean over seeds with a bootstrap interval over seeds,
    below the pinned ``rho_threshold`` (module docstring)."""
    seeds = sorted({r["seed"] for r in rows})
    out = []
    diverged = sorted({(r["seed"], r["width"]) for r in rows if r.get("stop") == "diverged"})
    open_ = sorted({(r["seed"], r["width"]) for r in rows if r.get("stop") not in ("plateau", "diverged")})
    for name, key, claim, label in VERDICTS:
        rhos = []
        for s in seeds:
            rs = sorted((r for r in rows if r["seed"] == s), key=lambda r: r["width"])
            rhos.append(spearman([r["width"] for r in rs], [float(r.get(key, math.nan)) for r in rs]))
        vals = np.asarray(rhos, float)
        finite = vals[np.isfinite(vals)]
        problem = None
        if diverged:
            problem = f"runs diverged (seed, width): {diverged}"
        elif open_ and name != "steps_to_level":
            problem = f"runs not converged: no FD plateau within {config.resolved['steps']} steps at (seed, width) {open_}"
        elif finite.size < len(vals):
            problem = (f"{len(vals) - finite.size} of {len(vals)} seeds give no rank correlation (the statistic is "
                       "constant over the widths, e.g. no width reached the level or no FD ever rose, or not finite)")
        elif finite.size < 2:
            problem = f"{finite.size} usable seed(s); an interval needs at least 2"
        iv = claims.bootstrap_mean(finite, n_boot=config.n_boot, seed=0) if finite.size >= 2 else (math.nan, math.nan)
        out.append(claims.verdict(
            name, claim, f"mean over seeds of Spearman rho(width, {label})",
            float(finite.mean()) if finite.size else math.nan, iv, "bootstrap over seeds", config.rho_threshold,
            "below", {"n": int(finite.size), "seeds": seeds, "per_seed": [float(v) for v in vals],
                      "widths": sorted({r["width"] for r in rows})},
            problem=problem, threshold_source=THRESHOLDS))
    return out


# -- output -------------------------------------------------------------------------------------
def summary(results: Results) -> str:
    r, cfg = results.resolved, results.config
    score = cfg.score_name or "none"
    shown = []
    for row in results.rows:
        shown.append({
            "seed": row.get("seed", ""), "width": f"{row['width']:g}", "params G": row["params_g"],
            "params D": row["params_d"], "steps": row["steps"], "stop": row.get("stop", ""),
            f"{score} final": row.get("final_score", float("nan")),
            "steps to level": row.get("steps_to_level", float("nan")),
            "max FD rise": row.get("max_rise", float("nan")),
            "steps to 90% drop": ("no drop" if row.get("steps_to_90pct_drop") is None else
                                  f"{row['steps_to_90pct_drop']}" + (" (still falling)" if row.get("still_falling")
                                                                     else "")),
            **({"steps to thr": row.get("steps_to_threshold") if row.get("steps_to_threshold") is not None
                else "not reached"} if cfg.fd_threshold is not None else {}),
            "1-NN OF avg": row.get("pixel_overfitting_avg", float("nan")),
            "1-NN MD avg": row.get("pixel_mode_drop_avg", float("nan")),
            "FID": row["fid"] if "fid" in row else "skipped",
            "img/s": row.get("images_per_s") or float("nan")})
    cols = list(shown[0]) if shown else []
    n_train = r["n"] if r["n"] is not None else "all"
    return "\n".join([
        f"Conv width sweep ({cfg.data}, n = {n_train}, preset {r['preset']}, {cfg.arch}, latent {r['latent_dim']}, "
        f"batch {cfg.batch_size}, at most {r['steps']} generator steps, Adam({cfg.lr:g}, {cfg.b1:g}, {cfg.b2:g}), "
        f"{cfg.loss}, SN in D, EMA {r['ema_decay']:g}).",
        f"Per-evaluation distance: {results.score_note} (n_eval = {r['n_eval']} EMA samples, "
        f"every {r['eval_every']} steps).",
        "1-NN: pixel L1 on [0, 255] per pixel and channel, avg (OF = generated -> training, MD = training -> "
        "generated). " + results.fid_note + ".",
        f"A run stops when its FD plateaus (last {cfg.plateau_window + 1} evaluations within "
        f"{cfg.plateau_rel_tol:.0%} of their mean) or at the maximum. Held-out seeds {list(cfg.seeds)} (tuning seeds "
        f"{list(cfg.tuning_seeds)}, not run here).",
        "Real-image floor (the same FD for real images not in the training subset) per seed: " + ", ".join(
            f"{f['seed']}: {f['floor']:.4g} (n_ref {f['n_ref']})" for f in results.floors)
        + f"; level = {cfg.level_factor:g} x floor; 'steps to level' inf = never reached.",
        "", common.format_table(shown, cols, floatfmt=".3g"),
        "", f"Verdicts (thresholds pinned in {THRESHOLDS}; per-seed Spearman rho over the widths, bootstrap 95 % "
        "intervals over seeds):", *["  " + v.line() for v in results.verdicts],
        f"({results.seconds:.0f} s)"])


def plot(results: Results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_fid = any("fid" in r for r in results.rows)
    fig, axes = plt.subplots(1, 5 if has_fid else 4, figsize=(18 if has_fid else 15, 3.4))
    score = results.config.score_name or "no distance"
    seed0 = results.rows[0].get("seed") if results.rows else None
    first = [r for r in results.rows if r.get("seed") == seed0]
    for row in first:
        w = row["width"]
        fd = [c for c in results.fd_curves if c["width"] == w and c.get("seed") == seed0]
        axes[0].plot([c["step"] for c in fd], [c["score"] for c in fd], "o-", ms=3, label=f"width {w:g}")
        cur = [c for c in results.curves if c["width"] == w and c.get("seed") == seed0]
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
    ws = sorted({r["width"] for r in results.rows})
    for key, label in (("pixel_overfitting_avg", "overfitting avg"), ("pixel_mode_drop_avg", "mode drop avg")):
        axes[3].plot(ws, [common.finite_mean([r.get(key, float("nan")) for r in results.rows if r["width"] == w])
                          for w in ws], "o-", label=label)
    axes[3].set_xscale("log", base=2)
    axes[3].set_xlabel("width multiplier")
    axes[3].set_title("1-NN pixel L1 [0, 255] vs width", fontsize=9)
    axes[3].legend(fontsize=7)
    if has_fid:
        axes[4].plot(ws, [common.finite_mean([r.get("fid", float("nan")) for r in results.rows if r["width"] == w])
                          for w in ws], "o-")
        axes[4].set_xscale("log", base=2)
        axes[4].set_title("FID vs width", fontsize=9)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    paths = [
        common.write_csv(out / "widths.csv", results.rows),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_csv(out / "fd_curves.csv", results.fd_curves),
        common.write_json(out / "results.json", {"resolved": results.resolved, "rows": results.rows,
                                                  "score": results.score_note, "floors": results.floors,
                                                  "verdicts": [v.to_json() for v in results.verdicts],
                                                  "heldout_seeds": list(results.config.seeds),
                                                  "tuning_seeds": list(results.config.tuning_seeds),
                                                  "fid": results.fid_note, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, resolved=results.resolved,
                                                                 seconds=results.seconds)),
    ]
    fig = plot(results)
    paths += common.save_figure(fig, out / "conv_width_sweep")
    return paths
