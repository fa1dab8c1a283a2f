"""Stochasticity vs overfitting and mode drop on a conv GAN (Yazici et al. 2020, Table 1), as a
pre-registered protocol with verdicts (issue 8).

Setting of the paper (section 4): a fixed latent set Z = {z_1..z_n} ~ N(0, I), one code per
training image (k = n); alternating GDA with one D step then one G step (1:1, D first); the
non-saturating loss; Adam(lr, beta1 = 0, beta2 = 0.9) for both players; spectral normalization in D;
an EMA of G's weights used for evaluation; the paper's DCGAN (``stoch_dcgan``). Two kinds of
stochasticity, one at a time:

* mini-batch size m = n/d for d in ``batch_divisors`` (m = n is deterministic full-batch GDA);
* latent noise at batch n/``noise_divisor``: G(z + eps), eps ~ N(0, sigma^2 I) drawn afresh at every
  step, sigma^2 = ``noise_var`` = 0.5 (the paper's N(0, 0.5 I): 0.5 is the variance).

**Training to a plateau.** Every ``eval_every`` * m_max / m generator updates (the same number of
epochs for every batch m; m_max the largest batch) the EMA generator's images
g_j = G(z_j) of the n fixed codes (no noise, as in the paper's inference) are compared with the n
training images x_i by 1-NN distances (:mod:`overparam.metrics.nn`): overfitting o_j = min_i d(g_j, x_i)
(generated -> nearest training), mode drop r_i = min_j d(g_j, x_i) (training -> nearest generated);
each reported as the average, the mean of the worst 10 % and of the worst 5 %; d = pixel L1 on
[0, 255] per pixel and channel (Table 1's scale; both sets quantized to 8 bits) and, where a feature
extractor exists, the Euclidean distance in the digits classifier's 128-d features (Inception pool3
with ``--inception-weights``). A run stops at the first evaluation where the pixel overfitting
average has plateaued (:func:`overparam.claims.plateau_index` with ``plateau_window`` and
``plateau_rel_tol``: max - min <= rel_tol * mean over the last window + 1 evaluations) or at its
maximum number of updates (conv_common.train_until_plateau); the table says which (``stop``).

**Budgets.** ``steps`` is the maximum number of updates of the largest batch m_max. A smaller batch
m is run under two labelled budgets (``budget = "both"``): *equal updates* (at most ``steps``
updates: fewer epochs than m_max) and *equal epochs* (at most steps * m_max / m updates); the second
continues the first run's trainer (same trajectory), so it costs only the extra updates. The
noise run follows its noise-free counterpart at the same m (equal updates, as in the paper).

**Real-image baseline.** Next to the table: the same statistics for n real images that are NOT in
the training subset (the next n of the seeded permutation) against the training subset; every row
gets its ratio to it (``*_ratio``). A memorizing generator is far below 1.

**Verdicts** (``overparam.claims``; thresholds pinned in sims/stochasticity.toml before the runs;
``seeds`` are held out, ``tuning_seeds`` were used to choose n, lr and the budget; both recorded):

* memorization check: mean over seeds of (full-batch pixel overfitting avg / baseline), bootstrap
  95 % interval over seeds, below ``memorization_ratio``. It gates the others: if the full batch
  does not memorize, every arm verdict is ``inconclusive`` with that reason;
* batch arm, per smaller m and budget and side (overfitting, mode drop): mean over seeds of the
  per-seed ratio (batch m / full batch) of the pixel average, above ``effect_ratio`` (smaller batch ->
  larger distances); under equal epochs the smaller-batch runs must have plateaued;
* latent-noise arm, per side: mean ratio noisy / noise-free at the same m, above ``effect_ratio``.
Every arm needs the full-batch runs to have plateaued ("runs not converged" otherwise).

Presets: "small" (digits 8x8, n = 64, width 1/32, latent 64, m = 64 and 16, noise at m = 64, at most
10,000 updates of m = 64, lr 4e-4, EMA 0.99; the default: about 15 minutes on an idle 2-core machine
for 3 seeds), "full" (the full table on digits: m = 64, 16, 4 under both budgets, 5 seeds; hours of
CPU, documented in docs/stochasticity.md, not run here) and "paper" (n = 12,800 at 32x32, width 1,
latent 512, m = 3,200/800/200/50 and the noise run at 3,200; for a GPU). "auto" picks "paper" for
cifar10 / celeba / folder / npz and "small" otherwise. Fields left at none take the preset's value.

Writes table.csv (one row per seed and run), curves.csv (losses, singular values), nn_curves.csv
(the 1-NN statistics at every evaluation), baseline.csv, results.json (rows, baselines, ``verdicts``,
tuning and held-out seeds), manifest.json, train.npz, samples/<seed>_<run>.npz (uint8),
nn_overfitting.png/.pdf, nn_mode_drop.png/.pdf (first seed) and curves.png/.pdf."""
from __future__ import annotations

import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Callable

import numpy as np

from overparam import claims
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.metrics.pixels import to_uint8
from overparam.studies import common, conv_common
from overparam.studies.config import check_types, help_meta as _h
from overparam.studies.conv_common import CLASSIFIER_DATA, DATASETS, curve_rows

NAME = "stochasticity"
DESCRIPTION = __doc__

FEATURES = ("auto", "classifier", "inception", "none")
BUDGETS = ("both", "updates", "epochs")
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n": 64, "width": 1 / 32, "latent_dim": 64, "steps": 10000, "batch_divisors": (1, 4),
              "noise_divisor": 1, "log_every": 100, "eval_every": 500, "resolution": None, "ema_decay": 0.99,
              "lr": 4e-4},
    "full": {"n": 64, "width": 1 / 32, "latent_dim": 64, "steps": 16000, "batch_divisors": (1, 4, 16),
             "noise_divisor": 1, "log_every": 100, "eval_every": 1000, "resolution": None, "ema_decay": 0.99,
             "lr": 4e-4},
    "paper": {"n": 12800, "width": 1.0, "latent_dim": 512, "steps": 50000, "batch_divisors": (4, 16, 64, 256),
              "noise_divisor": 4, "log_every": 500, "eval_every": 2500, "resolution": 32, "ema_decay": 0.999,
              "lr": 1e-4},
}
STATS = ("overfitting_avg", "overfitting_worst10", "overfitting_worst5",
         "mode_drop_avg", "mode_drop_worst10", "mode_drop_worst5")
PLATEAU_STAT = "pixel_overfitting_avg"
SIDES = ("overfitting", "mode_drop")


@dataclass(frozen=True)
class Config:
    """Stochasticity-study configuration; fields left at none take the preset's value."""

    data: str = field(default="digits", metadata=_h("data set: " + ", ".join(DATASETS)))
    path: str | None = field(default=None, metadata=_h("data location (cifar10, celeba, folder, npz)"))
    preset: str = field(default="auto", metadata=_h("small, full, paper, or auto (paper for "
                                                    "cifar10/celeba/folder/npz, small otherwise)"))
    n: int | None = field(default=None, metadata=_h("training images n = fixed latent codes (preset: 64 / 12800)"))
    resolution: int | None = field(default=None, metadata=_h("image side (preset: data's own / 32)"))
    batch_divisors: tuple[int, ...] | None = field(
        default=None, metadata=_h("batch sizes m = n/d, comma-separated d (preset: 1,4 / 1,4,16 / 4,16,64,256)"))
    noise_var: float = field(default=0.5, metadata=_h("latent noise variance sigma^2: z + eps, eps ~ N(0, sigma^2 I) "
                                                      "(the paper's N(0, 0.5 I)); 0 = no noise run"))
    noise_divisor: int | None = field(default=None, metadata=_h("batch of the noise run m = n/d, one of the batch "
                                                                "divisors (preset: 1 / 4)"))
    steps: int | None = field(default=None, metadata=_h("maximum generator updates of the largest batch (and of "
                                                        "every run under equal updates) (preset: 10000 / 50000)"))
    budget: str = field(default="both", metadata=_h("budgets of the smaller batches: 'both' (equal updates and "
                                                    "equal epochs, labelled), 'updates' or 'epochs'"))
    eval_every: int | None = field(default=None, metadata=_h("1-NN evaluation (and checkpoint) every this many "
                                                             "updates (preset: 500 / 2500)"))
    plateau_window: int = field(default=4, metadata=_h("plateau rule: the last window+1 evaluations of the pixel "
                                                       "overfitting average ..."))
    plateau_rel_tol: float = field(default=0.15, metadata=_h("... vary by at most this fraction of their mean"))
    memorization_ratio: float = field(default=0.5, metadata=_h("memorization check: full-batch overfitting avg / "
                                                               "real-image baseline must lie below this"))
    effect_ratio: float = field(default=1.1, metadata=_h("arm verdicts: stochastic / deterministic distance ratio "
                                                         "must lie above this"))
    n_boot: int = field(default=10000, metadata=_h("bootstrap resamples of the seeds"))
    arch: str = field(default="stoch_dcgan", metadata=_h("network (overparam.bridge.nets): stoch_dcgan, dcgan, resnet"))
    width: float | None = field(default=None, metadata=_h("width multiplier (preset: 1/32 / 1)"))
    latent_dim: int | None = field(default=None, metadata=_h("latent dimension (preset: 64 / 512)"))
    lr: float | None = field(default=None, metadata=_h("Adam learning rate of both players (preset: 4e-4 on "
                                                       "digits, chosen on the tuning seeds / 1e-4, the paper's)"))
    b1: float = field(default=0.0, metadata=_h("Adam beta1"))
    b2: float = field(default=0.9, metadata=_h("Adam beta2"))
    ema_decay: float | None = field(default=None, metadata=_h("decay of the generator's EMA, used for evaluation "
                                                              "(preset: 0.99 / 0.999)"))
    seeds: tuple[int, ...] = field(default=(1000, 1001, 1002), metadata=_h(
        "held-out evaluation seeds (each: data subset, initialization, latents, batches)"))
    tuning_seeds: tuple[int, ...] = field(default=(100,), metadata=_h(
        "seeds used to choose n, lr and the budget (recorded; must be disjoint from seeds; not run)"))
    log_every: int | None = field(default=None, metadata=_h("record losses and singular values every this many "
                                                            "steps (preset: 100 / 500)"))
    features: str = field(default="auto", metadata=_h("feature space of the L2 1-NN: auto, classifier, inception, "
                                                      "none"))
    inception_weights: str | None = field(default=None, metadata=_h("FID Inception weights file (.pth or .npz) "
                                                                    "for Inception features"))
    classifier_steps: int | None = field(default=None, metadata=_h("training steps of the digits classifier "
                                                                   "(none = its default)"))
    nn_queries: int | None = field(default=None, metadata=_h("1-NN with this many query samples per side, each "
                                                             "searched in the whole other set (the paper: 200); "
                                                             "none = all n"))
    n_show: int = field(default=10, metadata=_h("samples per row of the nearest-neighbour figures"))
    out_dir: str = field(default="results/stochasticity", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        check_types(self)
        one_of("data", self.data, DATASETS)
        one_of("preset", self.preset, ("auto", *PRESETS))
        one_of("features", self.features, FEATURES)
        one_of("budget", self.budget, BUDGETS)
        from overparam.bridge import nets

        one_of("arch", self.arch, nets.ARCHS)
        if self.data in ("folder", "npz") and self.n is None:
            raise ConfigError(f"data {self.data!r} has no preset size: give --n, the number of training images "
                              "(at most the images in it, a multiple of every batch divisor; the paper used 12800)")
        r = self.resolved
        n = positive_int("n", r["n"])
        finite_positive("noise_var", self.noise_var, allow_zero=True)
        require(len(r["batch_divisors"]) > 0, "batch_divisors is empty; give e.g. --batch-divisors 1,4")
        divisors = (*r["batch_divisors"], *((r["noise_divisor"],) if self.noise_var > 0 else ()))
        for d in divisors:
            positive_int("every batch divisor", d)
        lcm = reduce(math.lcm, divisors, 1)
        if n % lcm:
            below, above = n - n % lcm, n - n % lcm + lcm
            hint = f"--n {below} or --n {above}" if below > 0 else f"--n {above}"
            bad = next(d for d in divisors if n % d)
            raise ConfigError(f"n = {n} is not divisible by {bad}; choose n a multiple of every batch divisor "
                              f"{sorted(set(divisors))} (e.g. {hint})")
        require(len(set(r["batch_divisors"])) == len(r["batch_divisors"]), "batch_divisors has duplicates")
        if self.noise_var > 0:
            require(r["noise_divisor"] in r["batch_divisors"],
                    f"noise_divisor {r['noise_divisor']} must be one of the batch divisors {r['batch_divisors']} "
                    "(the noise run is compared with the noise-free run at the same batch)")
        for name in ("steps", "log_every", "latent_dim", "eval_every"):
            positive_int(name, r[name])
        finite_positive("width", r["width"])
        finite_positive("lr", r["lr"])
        require(0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0, f"b1, b2 must lie in [0, 1), got {self.b1}, {self.b2}")
        require(0.0 < r["ema_decay"] < 1.0, f"ema_decay must lie in (0, 1), got {r['ema_decay']}")
        require(r["eval_every"] % r["log_every"] == 0,
                f"eval_every ({r['eval_every']}) must be a multiple of log_every ({r['log_every']})")
        require(r["steps"] % r["log_every"] == 0,
                f"steps ({r['steps']}) must be a multiple of log_every ({r['log_every']})")
        positive_int("plateau_window", self.plateau_window)
        finite_positive("plateau_rel_tol", self.plateau_rel_tol, allow_zero=True)
        finite_positive("memorization_ratio", self.memorization_ratio)
        finite_positive("effect_ratio", self.effect_ratio)
        positive_int("n_boot", self.n_boot)
        require(len(self.seeds) > 0, "seeds is empty; give e.g. --seeds 1000,1001,1002")
        claims.check_disjoint(self.tuning_seeds, self.seeds)
        if self.nn_queries is not None:
            positive_int("nn_queries", self.nn_queries)
        positive_int("n_show", self.n_show)
        if self.classifier_steps is not None:
            positive_int("classifier_steps", self.classifier_steps)
        if self.features == "classifier" and self.data not in CLASSIFIER_DATA:
            raise ConfigError(f"features='classifier' needs the digits classifier's data (digits, mnist5k), not "
                              f"{self.data!r}; use features=inception with --inception-weights, or none")
        if self.features == "inception" and not self.inception_weights:
            raise ConfigError("features='inception' needs --inception-weights PATH (the FID weights file)")
        conv_common.need_path(self)
        if r["resolution"] is not None:
            nets.check_resolution(r["resolution"])

    @property
    def resolved(self) -> dict[str, Any]:
        """The preset's values overridden by every field that is not none."""
        return conv_common.resolve_preset(self, PRESETS)

    @property
    def feature_space(self) -> str:
        """'classifier', 'inception' or 'none' (auto resolved)."""
        if self.features != "auto":
            return self.features
        if self.data in CLASSIFIER_DATA:
            return "classifier"
        return "inception" if self.inception_weights else "none"

    def cell_config(self) -> "Config":
        """The config a cell's content depends on: without the seed lists (a cell names its seed),
        the verdict thresholds and the figure options, so adding a seed or re-reading the verdicts
        reuses every finished run."""
        return dataclasses.replace(self, seeds=(0,), tuning_seeds=(), memorization_ratio=1.0, effect_ratio=1.0,
                                   n_boot=1, n_show=1)


@dataclass
class Results:
    config: Config
    resolved: dict[str, Any]
    rows: list[dict[str, Any]]                 # one per seed and run (the Table-1 rows)
    baselines: list[dict[str, Any]]            # one per seed: real held-out images vs the training subset
    curves: list[dict[str, Any]]               # one per run and recorded step (losses, singular values)
    nn_curves: list[dict[str, Any]]            # one per run and evaluation (1-NN statistics)
    nn: dict[str, dict[str, list[int]]]        # run (first seed) -> 1-NN indices shown in the figures
    seconds: float
    verdicts: list[claims.Verdict] = dataclasses.field(default_factory=list)
    feature_note: str = ""


# -- runs -------------------------------------------------------------------------------------
def runs(config: Config) -> list[dict[str, Any]]:
    """The runs of one seed, in training order: per batch divisor (no noise) the largest batch once
    (budget "both": equal updates = equal epochs), a smaller batch under "updates" (at most ``steps``
    updates) then "epochs" (at most steps * m_max / m, continuing the same trainer), as ``budget``
    says; then the noise run at m = n / noise_divisor with its noise-free counterpart's budgets.
    ``steps`` is a run's maximum; ``trainer`` names the trainer folder it shares; ``eval_every`` is
    the evaluation cadence eval_every * m_max / m updates, the same number of epochs for every m, so
    the plateau rule looks at the same span of epochs in every run."""
    r = config.resolved
    ms = [r["n"] // d for d in r["batch_divisors"]]
    m_max = max(ms)
    budgets = ("updates", "epochs") if config.budget == "both" else (config.budget,)

    def arm(m: int, noise: float) -> list[dict[str, Any]]:
        base = f"m{m}" + ("_noise" if noise > 0 else "")
        if m == m_max:
            return [{"name": base, "trainer": base, "m": m, "noise_var": noise, "budget": "both", "steps": r["steps"],
                     "eval_every": r["eval_every"]}]
        return [{"name": f"{base}_{b}", "trainer": base, "m": m, "noise_var": noise, "budget": b,
                 "steps": r["steps"] if b == "updates" else r["steps"] * m_max // m,
                 "eval_every": r["eval_every"] * m_max // m} for b in budgets]

    out = [x for m in ms for x in arm(m, 0.0)]
    if config.noise_var > 0:
        out += arm(r["n"] // r["noise_divisor"], config.noise_var)
    return out


def train_config(config: Config, run: dict[str, Any], seed: int, out_dir: str):
    """The trainer config of one run (the paper's setting, section 4; conv_common.paper_train_config),
    a checkpoint and a 1-NN evaluation every ``run["eval_every"]`` updates exactly and at the run's
    maximum (the last evaluation of a budget that is not a multiple of it); ``steps`` is the
    longest budget of the run's trainer, so both budgets of one batch share one trainer."""
    r = config.resolved
    return conv_common.paper_train_config(
        out_dir, arch=config.arch, width=r["width"], latent_dim=r["latent_dim"], batch_size=run["m"],
        steps=max(x["steps"] for x in runs(config) if x["trainer"] == run["trainer"]), log_every=r["log_every"], ckpt_every=run["eval_every"], seed=seed,
        ema_decay=r["ema_decay"], lr=r["lr"], b1=config.b1, b2=config.b2, fixed_latents=True,
        latent_noise_var=run["noise_var"])


def load_data(config: Config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training subset, held-out real images) of one seed (conv_common.heldout_split)."""
    r = config.resolved
    return conv_common.heldout_split(config.data, config.path, r["n"], seed, r["resolution"])


# -- metrics ----------------------------------------------------------------------------------
def feature_extractor(config: Config, images: np.ndarray) -> tuple[Callable | None, str]:
    """(images in [-1, 1] -> features, label) of the configured feature space, or (None, why not)."""
    space = config.feature_space
    if space == "classifier":
        from overparam.bridge.classifier import get_classifier

        clf = get_classifier(config.data, images.shape[1], seed=0, steps=config.classifier_steps)
        return clf.features, (f"L2 in the {config.data} classifier's 128-d features "
                              f"(test accuracy {clf.test_accuracy:.3f}; not Inception)")
    if space == "inception":
        from overparam.bridge import inception

        params = inception.load_inception_params(config.inception_weights)
        return (lambda x: inception.inception_features(x, params)), "L2 in Inception-v3 pool3 features"
    return None, ("feature-space 1-NN skipped: no feature extractor for this data set (give "
                  "--inception-weights PATH for Inception features)")


def nn_metrics(gen_u8: np.ndarray, train_u8: np.ndarray, queries: np.ndarray | None,
               feats: Callable | None) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Table-1 statistics of the pixel (and feature) 1-NN distances, and the 1-NN indices
    (:func:`overparam.metrics.nn.nn_statistics`)."""
    from overparam.metrics.nn import nn_statistics

    return nn_statistics(gen_u8, train_u8, queries, feats)


def baseline(heldout_u8: np.ndarray, train_u8: np.ndarray, queries: np.ndarray | None,
             feats: Callable | None) -> dict[str, float]:
    """The real-image baseline: the Table-1 statistics with real held-out images in the place of
    the generated ones — overfitting side = held-out -> nearest training image, mode-drop side =
    training image -> nearest held-out image (same distances, same worst-q means)."""
    if len(heldout_u8) == 0:
        return {}
    q = None if queries is None else queries[queries < len(heldout_u8)]
    return nn_metrics(heldout_u8, train_u8, q, feats)[0]


def with_ratios(row: dict[str, Any], base: dict[str, float]) -> dict[str, Any]:
    """``<space>_<stat>_ratio`` = row value / baseline value for every statistic both have."""
    out = dict(row)
    for space in ("pixel", "feature"):
        for s in STATS:
            k = f"{space}_{s}"
            if k in row and k in base:
                b = base[k]
                out[f"{k}_ratio"] = row[k] / b if b > 0 and math.isfinite(row[k]) else float("nan")
    return out


def query_indices(config: Config, n: int) -> np.ndarray | None:
    if config.nn_queries is None or config.nn_queries >= n:
        return None
    return np.sort(np.random.default_rng(config.seeds[0] + 1).permutation(n)[: config.nn_queries])


# -- one seed's runs ----------------------------------------------------------------------------
def _folder(config: Config, seed: int, run: dict[str, Any]) -> Path:
    return conv_common.run_folder(config.out_dir, f"s{seed}_{run['trainer']}", config.cell_config())


def make_trainer(config: Config, run: dict[str, Any], seed: int, data: np.ndarray, train_u8: np.ndarray,
                 feats: Callable | None):
    """The run's Trainer (resuming its folder), scoring at every checkpoint: the 1-NN statistics of
    G_ema(z_j) against the training images are appended to ``nn_curve.json`` and the pixel
    overfitting average is the score the plateau rule looks at."""
    from overparam.bridge.trainer import Trainer

    folder = _folder(config, seed, run)
    trainer = Trainer(train_config(config, run, seed, str(folder)), data)
    curve_file = folder / "nn_curve.json"
    stored = common.read_json(curve_file) if curve_file.exists() else []
    trainer.nn_curve = [c for c in stored if c["step"] <= trainer.step]
    queries = query_indices(config, len(train_u8))

    def score(t) -> float:
        gen = t.generate(t.latents, ema=True)
        if not np.all(np.isfinite(gen)):
            stats = {f"pixel_{k}": float("nan") for k in STATS}
        else:
            stats = nn_metrics(to_uint8(gen), train_u8, queries, feats)[0]
        t.nn_curve = [c for c in t.nn_curve if c["step"] < t.step] + [{"step": t.step, **stats}]
        common.write_json(curve_file, t.nn_curve)  # before the checkpoint that commits the score
        return float(stats[PLATEAU_STAT])

    trainer.score_fn = score
    return trainer


def evaluate_run(config: Config, run: dict[str, Any], seed: int, trainer, stop: dict[str, Any],
                 train_u8: np.ndarray, feats: Callable | None, base: dict[str, float],
                 samples_dir: Path) -> dict[str, Any]:
    """Generate G_ema(z_j) for the fixed codes at the stop, save them, compute the 1-NN statistics
    and their ratios to the real-image baseline."""
    r = config.resolved
    row: dict[str, Any] = {"seed": seed, "run": run["name"], "m": run["m"], "noise": run["noise_var"] > 0,
                           "noise_var": run["noise_var"], "budget": run["budget"], "max_steps": run["steps"],
                           "steps": trainer.step, "epochs": trainer.step * run["m"] / r["n"],
                           "stop": stop["stop"], "eval_every": run["eval_every"]}
    gen = trainer.generate(trainer.latents, ema=True)
    idx: dict[str, list[int]] = {}
    if stop["stop"] == "diverged" or not np.all(np.isfinite(gen)):
        row.update({f"pixel_{k}": float("nan") for k in STATS})
        if feats is not None:
            row.update({f"feature_{k}": float("nan") for k in STATS})
    else:
        gen_u8 = to_uint8(gen)
        common.atomic_write_bytes(samples_dir / f"s{seed}_{run['name']}.npz",
                                  _npz(generated=gen_u8, config_hash=np.array(common.config_hash(config.cell_config()))))
        stats, idx = nn_metrics(gen_u8, train_u8, query_indices(config, len(train_u8)), feats)
        row.update(stats)
    row = with_ratios(row, base)
    nn_curve = [{"seed": seed, "run": run["name"], **c} for c in trainer.nn_curve if c["step"] <= trainer.step]
    curves = [{"seed": seed, **c} for c in curve_rows(run["name"], trainer.records) if c["step"] <= trainer.step]
    return {"row": row, "curves": curves, "nn_curve": nn_curve, "nn": idx}


def _samples_ok(out: Path, seed: int, name: str, config: Config) -> bool:
    try:
        with np.load(out / "samples" / f"s{seed}_{name}.npz") as z:
            return str(z["config_hash"]) == common.config_hash(config.cell_config())
    except (OSError, KeyError, ValueError):
        return False


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# -- the study --------------------------------------------------------------------------------
def run(config: Config = Config(), progress: bool = True) -> Results:
    """Train every seed's runs to their plateau or maximum (finished runs in ``out_dir/cells`` are
    reused, unfinished trainers resume from their checkpoints), evaluate them and decide."""
    common.check_out_dir(config.out_dir)  # one error line before any work
    t0 = time.perf_counter()
    out = Path(config.out_dir)
    store = common.CellStore(out, config.cell_config())
    feats, note = None, feature_note(config)
    need_feats = config.feature_space != "none"
    rows, baselines, curves, nn_curves, nn = [], [], [], [], {}
    plan = [(s, rn) for s in config.seeds for rn in runs(config)]
    loaded: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, dict]] = {}
    for seed, rn in common.progress(plan, desc="stochasticity", enabled=progress):
        if seed not in loaded:
            data, held = load_data(config, seed)
            if seed == config.seeds[0]:
                common.atomic_write_bytes(out / "train.npz", _npz(images=to_uint8(data)))
            base_cell = store.get(f"s{seed}_baseline")
            if base_cell is None:
                if need_feats and feats is None:
                    feats, note = feature_extractor(config, data)
                base_cell = store.put(f"s{seed}_baseline", {
                    "seed": seed, "n_ref": len(held), "feature_note": note,
                    **baseline(to_uint8(held), to_uint8(data), query_indices(config, len(data)), feats)})
            loaded = {seed: (data, to_uint8(data), held, base_cell)}
            baselines.append(base_cell)
        data, train_u8, _, base = loaded[seed]
        name = f"s{seed}_{rn['name']}"
        cell = store.get(name)
        if cell is not None and cell["row"]["stop"] != "diverged" and not _samples_ok(out, seed, rn["name"], config):
            cell = None  # its samples are gone or belong to another config: recompute
        if cell is None:
            if need_feats and feats is None:
                feats, note = feature_extractor(config, data)
            cell = train_and_evaluate(config, rn, seed, data, train_u8, feats, base, out / "samples", progress)
            cell["feature_note"] = note
            store.put(name, cell)
        note = cell.get("feature_note", note)
        rows.append(cell["row"])
        curves += cell["curves"]
        nn_curves += cell["nn_curve"]
        if seed == config.seeds[0]:
            nn[rn["name"]] = cell["nn"]
    res = Results(config, config.resolved, rows, baselines, curves, nn_curves, nn, time.perf_counter() - t0,
                  feature_note=note)
    res.verdicts = decide_verdicts(config, rows, baselines)
    return res


def train_and_evaluate(config: Config, rn: dict[str, Any], seed: int, data: np.ndarray, train_u8: np.ndarray,
                       feats: Callable | None, base: dict[str, float], samples_dir: Path,
                       progress: bool = False) -> dict[str, Any]:
    """Train one run to its plateau or maximum (conv_common.train_until_plateau) and evaluate it."""
    trainer = make_trainer(config, rn, seed, data, train_u8, feats)
    stop = conv_common.train_until_plateau(trainer, rn["steps"], rn["eval_every"], config.plateau_window,
                                           config.plateau_rel_tol, progress=progress)
    return evaluate_run(config, rn, seed, trainer, stop, train_u8, feats, base, samples_dir)


def feature_note(config: Config) -> str:
    space = config.feature_space
    if space == "classifier":
        return f"L2 in the {config.data} classifier's 128-d features (not Inception)"
    if space == "inception":
        return "L2 in Inception-v3 pool3 features"
    return "feature-space 1-NN skipped: no feature extractor for this data set (give --inception-weights PATH)"


# -- verdicts, computed from the rows -------------------------------------------------------------
THRESHOLDS = "sims/stochasticity.toml"


def _ratio(a: float, b: float) -> float:
    return a / b if (math.isfinite(a) and math.isfinite(b) and b > 0) else float("nan")


def _ratio_verdict(config: Config, name: str, claim: str, statistic: str, ratios: list[float], seeds: list[int],
                   threshold: float, direction: str, problem: str | None, **runs: Any) -> claims.Verdict:
    vals = np.asarray(ratios, float)
    finite = vals[np.isfinite(vals)]
    if problem is None and finite.size < len(vals):
        problem = f"{len(vals) - finite.size} of {len(vals)} seeds have no finite value (diverged run)"
    if problem is None and finite.size < 2:
        problem = f"{finite.size} usable seed(s); an interval needs at least 2"
    value = float(finite.mean()) if finite.size else float("nan")
    iv = claims.bootstrap_mean(finite, n_boot=config.n_boot, seed=0) if finite.size >= 2 else (math.nan, math.nan)
    return claims.verdict(name, claim, statistic, value, iv, "bootstrap over seeds", threshold, direction,
                          {"n": int(finite.size), "seeds": list(seeds), "per_seed": [float(v) for v in vals], **runs},
                          problem=problem, threshold_source=THRESHOLDS)


def decide_verdicts(config: Config, rows: list[dict[str, Any]], baselines: list[dict[str, Any]]
                    ) -> list[claims.Verdict]:
    """The memorization check, then the batch and latent-noise arms (module docstring), from the
    table rows (one per seed and run) and the per-seed real-image baselines."""
    base = {b["seed"]: b for b in baselines}
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["seed"], r["run"]): r for r in rows}
    m_max = max(r["m"] for r in rows)
    full = f"m{m_max}"
    key_of = {side: f"pixel_{side}_avg" for side in SIDES}
    of = key_of["overfitting"]

    q = [_ratio(by[(s, full)][of], base.get(s, {}).get(of, math.nan)) if (s, full) in by else math.nan for s in seeds]
    mem_problem = None if all(s in base and base[s].get(of) for s in seeds) else \
        "no real-image baseline (too few images outside the training subset)"
    mem = _ratio_verdict(
        config, "memorization",
        "full-batch GDA on a fixed latent set memorizes its training images (generated -> nearest training "
        "image far closer than real held-out images are)",
        f"mean over seeds of {full} {of} / real-image baseline", q, seeds, config.memorization_ratio, "below",
        mem_problem, run=full)
    out = [mem]
    gate = None
    if mem.outcome != "supported":
        gate = (f"memorization check {mem.outcome}: the full batch does not memorize (ratio {mem.value:.3g} to the "
                f"real-image baseline, needs < {config.memorization_ratio:g}), so the regime of the claim is not "
                "reached")
    not_conv = [s for s in seeds if by.get((s, full), {}).get("stop") != "plateau"]
    conv_problem = (f"runs not converged: the full-batch run did not plateau within its maximum at seeds {not_conv}"
                    if not_conv else None)

    def arm_rows(pred) -> list[dict[str, Any]]:
        return [r for r in rows if pred(r)]

    names = list(dict.fromkeys(r["run"] for r in rows))
    for name in names:
        r0 = next(r for r in rows if r["run"] == name)
        if r0["noise"]:
            ref = name.replace("_noise", "")
            what = f"latent noise (m = {r0['m']}, sigma^2 = {r0['noise_var']:g}, budget {r0['budget']})"
            arm = "noise"
        elif r0["m"] < m_max:
            ref = full
            what = f"a smaller batch (m = {r0['m']} vs {m_max}, equal {r0['budget']})"
            arm = "batch"
        else:
            continue
        runs_ = arm_rows(lambda r, n=name: r["run"] == n)
        problem = gate or conv_problem
        if problem is None and arm == "batch" and r0["budget"] == "epochs":
            nc = [r["seed"] for r in runs_ if r["stop"] != "plateau"]
            if nc:
                problem = f"runs not converged: {name} did not plateau within its maximum at seeds {nc}"
        for side in SIDES:
            k = key_of[side]
            ratios = [_ratio(by[(s, name)][k], by[(s, ref)][k]) if (s, name) in by and (s, ref) in by else math.nan
                      for s in seeds]
            out.append(_ratio_verdict(
                config, f"{arm}_{name}_{side}",
                f"{what} gives larger 1-NN {side.replace('_', ' ')} distances than {ref}",
                f"mean over seeds of {k} ratio {name} / {ref}", ratios, seeds, config.effect_ratio, "above",
                problem, run=name, reference=ref))
    return out


# -- output -------------------------------------------------------------------------------------
SHORT = {"overfitting_avg": "OF avg", "overfitting_worst10": "OF 10%", "overfitting_worst5": "OF 5%",
         "mode_drop_avg": "MD avg", "mode_drop_worst10": "MD 10%", "mode_drop_worst5": "MD 5%"}


def mean_table(rows: list[dict[str, Any]], baselines: list[dict[str, Any]], space: str) -> list[dict[str, Any]]:
    """Per run: the mean over seeds of every statistic and of its ratio to the baseline; the
    real-image baseline (mean over seeds) as the last row."""
    out = []
    for name in dict.fromkeys(r["run"] for r in rows):
        rs = [r for r in rows if r["run"] == name]
        d: dict[str, Any] = {"run": name, "m": rs[0]["m"], "noise": "yes" if rs[0]["noise"] else "no",
                             "budget": rs[0]["budget"], "seeds": len(rs),
                             "updates": f"{np.mean([r['steps'] for r in rs]):.0f}",
                             "epochs": f"{np.mean([r['epochs'] for r in rs]):.4g}",
                             "plateau": f"{sum(r['stop'] == 'plateau' for r in rs)}/{len(rs)}"}
        for s in STATS:
            d[SHORT[s]] = common.finite_mean([r.get(f"{space}_{s}", float("nan")) for r in rs])
        for s in ("overfitting_avg", "mode_drop_avg"):
            d[f"{SHORT[s]} / real"] = common.finite_mean([r.get(f"{space}_{s}_ratio", float("nan")) for r in rs])
        out.append(d)
    if baselines and any(f"{space}_overfitting_avg" in b for b in baselines):
        d = {"run": "real held-out", "m": "-", "noise": "-", "budget": "-", "seeds": len(baselines), "updates": "-",
             "epochs": "-", "plateau": "-"}
        for s in STATS:
            d[SHORT[s]] = common.finite_mean([b.get(f"{space}_{s}", float("nan")) for b in baselines])
        d["OF avg / real"] = d["MD avg / real"] = 1.0
        out.append(d)
    return out


def _table(rows: list[dict[str, Any]], baselines: list[dict[str, Any]], space: str) -> str:
    shown = mean_table(rows, baselines, space)
    cols = ["run", "m", "noise", "budget", "seeds", "updates", "epochs", "plateau", *SHORT.values(),
            "OF avg / real", "MD avg / real"]
    return common.format_table(shown, cols, floatfmt=".2f")


def summary(results: Results) -> str:
    r, rows, cfg = results.resolved, results.rows, results.config
    m_max = max((x["m"] for x in rows), default=r["n"])
    noise = (f"latent noise run: m = {r['n'] // r['noise_divisor']}, z + eps, eps ~ N(0, {cfg.noise_var} I) "
             f"(variance {cfg.noise_var}, std {math.sqrt(cfg.noise_var):.3f})" if cfg.noise_var > 0 else
             "no latent-noise run")
    lines = [
        f"Stochasticity study ({cfg.data}, n = {r['n']}, preset {r['preset']}, {cfg.arch} width {r['width']:g}, "
        f"latent {r['latent_dim']}): alternating GDA 1:1, non-saturating loss, Adam({r['lr']:g}, {cfg.b1:g}, "
        f"{cfg.b2:g}), SN in D, EMA {r['ema_decay']:g}; {noise}.",
        f"Each run stops when the pixel overfitting avg plateaus (last {cfg.plateau_window + 1} evaluations within "
        f"{cfg.plateau_rel_tol:.0%} of their mean; an evaluation every {r['eval_every']} * {m_max}/m updates) or at "
        f"its maximum: {r['steps']} updates (budget 'updates'; m = {m_max} is 'both'), {r['steps']} * {m_max}/m "
        "(budget 'epochs').",
        f"Held-out seeds {list(cfg.seeds)} (tuning seeds {list(cfg.tuning_seeds)}, not run here); table = mean over "
        "seeds (per seed in table.csv).",
        "1-NN distances of G_ema(z_j) (fixed codes, no noise) vs the n training images; OF = overfitting "
        "(generated -> nearest training), MD = mode drop (training -> nearest generated); avg, mean of worst 10 %, 5 %;",
        "'real held-out' = n real images not in the training subset in the place of the generated ones; '/ real' = "
        "ratio to it (a memorizing generator is far below 1).",
        "", "Pixel L1 on [0, 255], mean per pixel and channel (Table 1's scale):", _table(rows, results.baselines, "pixel")]
    if any("feature_overfitting_avg" in x for x in rows):
        lines += ["", f"Feature space: {results.feature_note}:", _table(rows, results.baselines, "feature")]
    else:
        lines += ["", results.feature_note]
    lines += ["", f"Verdicts (thresholds pinned in {THRESHOLDS}; bootstrap 95 % intervals over seeds):"]
    lines += ["  " + v.line() for v in results.verdicts]
    bad = sorted({f"s{x['seed']}_{x['run']}" for x in rows if x["stop"] == "diverged"})
    if bad:
        lines.append(f"  diverged runs: {', '.join(bad)}")
    lines.append(f"({results.seconds:.0f} s)")
    return "\n".join(lines)


GAP = 0.25  # space between tiles, in tile widths


def _image_grid(ax, images: np.ndarray, label: str) -> None:
    """A row of images (uint8, (k, H, W, C)) in one axis: one image per tile, the tiles separated by
    empty space (the figure's background), never by drawn pixels that could read as part of a digit."""
    k, h, w, c = images.shape
    for i, im in enumerate(images):
        x0 = i * w * (1 + GAP)
        ax.imshow(im[..., 0] if c == 1 else im, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
                  interpolation="nearest", extent=(x0, x0 + w, h, 0))
    ax.set_xlim(0, k * w + (k - 1) * w * GAP)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)


def _shown(results: Results) -> np.ndarray:
    n = results.resolved["n"]
    q = query_indices(results.config, n)
    pool = np.arange(n) if q is None else q
    return pool[: results.config.n_show]


def plot_nn(results: Results, side: str):
    """Per run: the queries (generated samples for overfitting, training samples for mode drop)
    and their nearest neighbours in pixel (and feature) space, as in the paper's Figs. 1-2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(results.config.out_dir)
    train = np.load(out / "train.npz")["images"]
    shown = _shown(results)
    q = query_indices(results.config, len(train))
    pos = {int(j): i for i, j in enumerate(q)} if q is not None else None
    spaces = [s for s in ("pixel", "feature") if any(f"{s}_{side}" in v for v in results.nn.values())]
    first = [r for r in results.rows if r["seed"] == results.config.seeds[0]]
    n_rows = len(first) * (1 + len(spaces))
    fig, axes = plt.subplots(n_rows, 1, figsize=(0.55 * len(shown) + 1.5, 0.62 * n_rows + 0.4), squeeze=False)
    i = 0
    for row in first:
        name = row["run"]
        title = f"m={row['m']}{' +noise' if row['noise'] else ''}" + (f" ({row['budget']})" if row["budget"] != "both" else "")
        file = out / "samples" / f"s{row['seed']}_{name}.npz"
        if not file.exists():
            for _ in range(1 + len(spaces)):
                axes[i, 0].axis("off")
                i += 1
            continue
        gen = np.load(file)["generated"]
        query, pool = (gen, train) if side == "overfitting" else (train, gen)
        _image_grid(axes[i, 0], query[shown], f"{title}\n{'generated' if side == 'overfitting' else 'data'}")
        i += 1
        for space in spaces:
            index = np.asarray(results.nn[name][f"{space}_{side}"])
            nearest = [index[pos[int(j)] if pos is not None else int(j)] for j in shown]
            _image_grid(axes[i, 0], pool[nearest], f"nearest ({space})")
            i += 1
    what = ("generated samples and their nearest training images" if side == "overfitting"
            else "training images and their nearest generated samples")
    fig.suptitle(f"{'Overfitting' if side == 'overfitting' else 'Mode drop'}: {what}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(results: Results):
    """First seed: losses, top singular values (largest over each player's layers) and the pixel
    overfitting average at every evaluation (with the real-image baseline) vs generator step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(19, 3.4))
    seed = results.config.seeds[0]
    base = next((b for b in results.baselines if b["seed"] == seed), {})
    for row in [r for r in results.rows if r["seed"] == seed]:
        name = row["run"]
        cur = [c for c in results.curves if c["run"] == name and c.get("seed", seed) == seed]
        label = f"m={row['m']}{' +noise' if row['noise'] else ''}" + (f" ({row['budget']})" if row["budget"] != "both" else "")
        nnc = [c for c in results.nn_curves if c["run"] == name and c["seed"] == seed]
        axes[4].plot([c["step"] for c in nnc], [c.get(PLATEAU_STAT, float("nan")) for c in nnc], "o-", ms=2,
                     label=label)
        steps = [c["step"] for c in cur]
        for ax, key in zip(axes, ("loss_d", "loss_g", "G_top_sv", "D_top_sv")):
            ax.plot(steps, [c.get(key, float("nan")) for c in cur], label=label)
    for ax, title in zip(axes, ("D loss", "G loss (non-saturating)", "G: largest top singular value",
                                "D: largest top singular value (raw kernel)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("generator step")
    axes[2].set_yscale("log")
    axes[3].set_yscale("log")
    if PLATEAU_STAT in base:
        axes[4].axhline(base[PLATEAU_STAT], color="k", ls="--", lw=1, label="real held-out images")
    axes[4].set_title("1-NN overfitting avg (pixel L1, [0, 255]) at each evaluation", fontsize=9)
    axes[4].set_xlabel("generator step")
    axes[4].set_yscale("log")
    axes[4].legend(fontsize=6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    cfg = results.config
    paths = [
        common.write_csv(out / "table.csv", results.rows),
        common.write_csv(out / "baseline.csv", results.baselines),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_csv(out / "nn_curves.csv", results.nn_curves),
        common.write_json(out / "results.json", {
            "resolved": results.resolved, "rows": results.rows, "baselines": results.baselines,
            "mean_table": mean_table(results.rows, results.baselines, "pixel"),
            "verdicts": [v.to_json() for v in results.verdicts], "heldout_seeds": list(cfg.seeds),
            "tuning_seeds": list(cfg.tuning_seeds), "feature_space": results.feature_note, "nn": results.nn,
            "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, resolved=results.resolved,
                                                                 seconds=results.seconds)),
    ]
    for side in ("overfitting", "mode_drop"):
        fig = plot_nn(results, side)
        paths += common.save_figure(fig, out / f"nn_{side}")
    fig = plot_curves(results)
    paths += common.save_figure(fig, out / "curves")
    return paths
