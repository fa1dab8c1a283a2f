"""Stochasticity vs overfitting and mode drop on a conv GAN (Yazici et al. 2020, Table 1).

Setting of the paper (section 4): a fixed latent set Z = {z_1..z_n} ~ N(0, I), one code per
training image (k = n); alternating GDA with one D step then one G step (1:1, D first); the
non-saturating loss; Adam(1e-4, beta1 = 0, beta2 = 0.9) for both players; spectral
normalization in D; an EMA of G's weights used for evaluation; the paper's DCGAN
(``stoch_dcgan``). Two kinds of stochasticity, one at a time:

* mini-batch size m = n/d for d in ``batch_divisors`` (m = n is deterministic full-batch GDA);
* latent noise at batch n/``noise_divisor``: G(z + eps), eps ~ N(0, sigma^2 I) drawn afresh at every
  step, sigma^2 = ``noise_var`` = 0.5. The paper writes eps ~ N(0, 0.5 I), i.e. 0.5 is the
  variance (covariance 0.5 I; standard deviation sqrt(0.5) ~ 0.707), and so does this study.

By default every run takes the same number of generator updates T = ``steps`` (one D update
each), so a run with batch m sees T m / n epochs (the table's ``epochs`` column) and the batch
trend mixes gradient noise with less training (the summary says so); ``budget = "epochs"`` gives
every run the epochs of the largest-batch run instead (T m_max / m updates at batch m). After training, the EMA
generator's images g_j = G(z_j) of the n fixed codes (no noise, as in the paper's inference)
are compared with the n training images x_i by 1-NN distances
(:mod:`overparam.metrics.nn`): overfitting o_j = min_i d(g_j, x_i) (precision side), mode drop
r_i = min_j d(g_j, x_i) (recall side); each reported as the average, the mean of the worst
10 % and of the worst 5 %. d is the pixel L1 distance on [0, 255] per pixel and channel (the
scale of the paper's Table 1; both image sets quantized to 8-bit levels, as saved), and the
Euclidean distance in a feature space: the built-in digits classifier's 128-d features for
digits / mnist5k (overparam.bridge.classifier), Inception pool3 features when an
Inception weights file is given (the paper's choice), otherwise none.

Presets (``preset``): "small" (digits, n = 256, width 1/32, latent 64, m = n, n/4, n/16, n/64,
noise at m = n, 2,000 generator steps, EMA decay 0.99; a few minutes on 2 CPU cores) and "paper"
(n = 12,800 images at 32x32, width 1, latent 512, m = 3,200/800/200/50 = n/4 ... n/256 and the
noise run at 3,200 as in the paper, which used m = 3,200 as its stand-in for full batch; 50,000
generator steps and EMA decay 0.999, our choices: the paper trains "till convergence of our
metrics" and gives no decay). The EMA starts at the initial weights, which keep weight decay^T
after T steps (0.999^2000 = 0.14), hence the shorter EMA of the small preset; "auto" picks "paper" for
cifar10 / celeba / folder / npz and "small" for digits / mnist5k. Any field left at none takes
the preset's value; e.g. ``--data cifar10 --path DIR`` runs the paper's setting on a GPU. A folder or
.npz of one's own has no preset size: it needs ``--n``. Presets, the paper's train config, curve
rows and the 1-NN statistics are shared with conv-width-sweep (overparam.studies.conv_common,
overparam.metrics.nn).

The trend checked (the paper's claim): more stochasticity -> larger 1-NN distances both ways.
From the table: Spearman's rank correlation between m and each distance statistic over the
noise-free runs (negative = smaller batches are farther) and the ratio noisy / noise-free at the
same m. Writes table.csv, curves.csv, results.json, manifest.json, train.npz,
samples/<run>.npz (uint8 images, so the table can be recomputed), nn_overfitting.png/.pdf,
nn_mode_drop.png/.pdf and curves.png/.pdf."""
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

from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.metrics.pixels import to_uint8
from overparam.studies import common, conv_common
from overparam.studies.config import help_meta as _h
from overparam.studies.conv_common import CLASSIFIER_DATA, DATASETS, curve_rows

NAME = "stochasticity"
DESCRIPTION = __doc__

FEATURES = ("auto", "classifier", "inception", "none")
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"n": 256, "width": 1 / 32, "latent_dim": 64, "steps": 2000, "batch_divisors": (1, 4, 16, 64),
              "noise_divisor": 1, "log_every": 50, "resolution": None, "ema_decay": 0.99, "ckpt_every": 0},
    "paper": {"n": 12800, "width": 1.0, "latent_dim": 512, "steps": 50000, "batch_divisors": (4, 16, 64, 256),
              "noise_divisor": 4, "log_every": 500, "resolution": 32, "ema_decay": 0.999, "ckpt_every": 5000},
}
NOISE_MARGIN = 0.05  # see trend()
STATS = ("overfitting_avg", "overfitting_worst10", "overfitting_worst5",
         "mode_drop_avg", "mode_drop_worst10", "mode_drop_worst5")


@dataclass(frozen=True)
class Config:
    """Stochasticity-study configuration; fields left at none take the preset's value."""

    data: str = field(default="digits", metadata=_h("data set: " + ", ".join(DATASETS)))
    path: str | None = field(default=None, metadata=_h("data location (cifar10, celeba, folder, npz)"))
    preset: str = field(default="auto", metadata=_h("small, paper, or auto (paper for cifar10/celeba/folder/npz)"))
    n: int | None = field(default=None, metadata=_h("training images n = fixed latent codes (preset: 256 / 12800)"))
    resolution: int | None = field(default=None, metadata=_h("image side (preset: data's own / 32)"))
    batch_divisors: tuple[int, ...] | None = field(
        default=None, metadata=_h("batch sizes m = n/d, comma-separated d (preset: 1,4,16,64 / 4,16,64,256)"))
    noise_var: float = field(default=0.5, metadata=_h("latent noise variance sigma^2: z + eps, eps ~ N(0, sigma^2 I) "
                                                      "(the paper's N(0, 0.5 I)); 0 = no noise run"))
    noise_divisor: int | None = field(default=None, metadata=_h("batch of the noise run m = n/d (preset: 1 / 4)"))
    steps: int | None = field(default=None, metadata=_h("generator updates per run, the same for every run "
                                                        "(preset: 2000 / 50000)"))
    budget: str = field(default="updates", metadata=_h("what is equal across runs: 'updates' (every run takes `steps` "
                                                       "generator updates) or 'epochs' (every run sees the epochs of "
                                                       "the largest-batch run: steps * m_max / m updates)"))
    arch: str = field(default="stoch_dcgan", metadata=_h("network (overparam.bridge.nets): stoch_dcgan, dcgan, resnet"))
    width: float | None = field(default=None, metadata=_h("width multiplier (preset: 1/32 / 1)"))
    latent_dim: int | None = field(default=None, metadata=_h("latent dimension (preset: 64 / 512)"))
    lr: float = field(default=1e-4, metadata=_h("Adam learning rate of both players"))
    b1: float = field(default=0.0, metadata=_h("Adam beta1"))
    b2: float = field(default=0.9, metadata=_h("Adam beta2"))
    ema_decay: float | None = field(default=None, metadata=_h("decay of the generator's EMA, used for evaluation "
                                                              "(preset: 0.99 / 0.999; the EMA starts at the "
                                                              "initial weights, whose weight after T steps is "
                                                              "decay^T)"))
    seed: int = field(default=0, metadata=_h("seed of the data subset, initialization, latents and batches"))
    log_every: int | None = field(default=None, metadata=_h("record losses and singular values every this many "
                                                            "steps (preset: 50 / 500)"))
    ckpt_every: int | None = field(default=None, metadata=_h("checkpoint each run every this many steps (multiple "
                                                             "of log_every; 0 = only at the end; preset: 0 / 5000)"))
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
        one_of("data", self.data, DATASETS)
        one_of("preset", self.preset, ("auto", "small", "paper"))
        one_of("features", self.features, FEATURES)
        one_of("budget", self.budget, ("updates", "epochs"))
        from overparam.bridge import nets

        one_of("arch", self.arch, nets.ARCHS)
        if self.data in ("folder", "npz") and self.n is None:
            raise ConfigError(f"data {self.data!r} has no preset size: give --n, the number of training images "
                              "(at most the images in it, a multiple of every batch divisor; the paper used 12800)")
        r = self.resolved
        n = positive_int("n", r["n"])
        finite_positive("noise_var", self.noise_var, allow_zero=True)
        require(len(r["batch_divisors"]) > 0, "batch_divisors is empty; give e.g. --batch-divisors 1,4,16,64")
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
        for name in ("steps", "log_every", "latent_dim"):
            positive_int(name, r[name])
        finite_positive("width", r["width"])
        finite_positive("lr", self.lr)
        require(0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0, f"b1, b2 must lie in [0, 1), got {self.b1}, {self.b2}")
        require(0.0 < r["ema_decay"] < 1.0, f"ema_decay must lie in (0, 1), got {r['ema_decay']}")
        for rn in runs(self):
            require(rn["steps"] % r["log_every"] == 0,
                    f"run {rn['name']} takes {rn['steps']} steps, not a multiple of log_every ({r['log_every']}); "
                    "change steps or log_every")
        require(isinstance(r["ckpt_every"], int) and r["ckpt_every"] >= 0, "ckpt_every must be >= 0")
        require(r["ckpt_every"] % r["log_every"] == 0,
                f"ckpt_every ({r['ckpt_every']}) must be a multiple of log_every ({r['log_every']})")
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


@dataclass
class Results:
    config: Config
    resolved: dict[str, Any]
    rows: list[dict[str, Any]]                 # one per run (the Table-1 rows)
    curves: list[dict[str, Any]]               # one per run and recorded step
    nn: dict[str, dict[str, list[int]]]        # run -> 1-NN indices shown in the figures
    seconds: float
    trend: dict[str, Any] = dataclasses.field(default_factory=dict)
    feature_note: str = ""


# -- runs -------------------------------------------------------------------------------------
def runs(config: Config) -> list[dict[str, Any]]:
    """The runs: one per batch divisor (no noise), then the noise run (if noise_var > 0)."""
    r = config.resolved
    out = [{"name": f"m{r['n'] // d}", "m": r["n"] // d, "noise_var": 0.0} for d in r["batch_divisors"]]
    if config.noise_var > 0:
        m = r["n"] // r["noise_divisor"]
        out.append({"name": f"m{m}_noise", "m": m, "noise_var": config.noise_var})
    m_max = max(x["m"] for x in out)
    for x in out:  # budget: equal updates, or equal epochs (steps * m_max / m updates)
        x["steps"] = r["steps"] if config.budget == "updates" else r["steps"] * m_max // x["m"]
    return out


def train_config(config: Config, run: dict[str, Any], out_dir: str):
    """The trainer config of one run (the paper's setting, section 4; conv_common.paper_train_config).
    Checkpoints every ``ckpt_every`` steps exactly (0 = only at the end): the host-call chunk is
    chosen to divide it."""
    r = config.resolved
    return conv_common.paper_train_config(
        out_dir, arch=config.arch, width=r["width"], latent_dim=r["latent_dim"], batch_size=run["m"],
        steps=run["steps"], log_every=r["log_every"], ckpt_every=r["ckpt_every"] or run["steps"], seed=config.seed,
        ema_decay=r["ema_decay"], lr=config.lr, b1=config.b1, b2=config.b2, fixed_latents=True,
        latent_noise_var=run["noise_var"])


def load_data(config: Config) -> np.ndarray:
    from overparam.bridge.data import load_dataset

    r = config.resolved
    return load_dataset(config.data, config.path, n=r["n"], seed=config.seed, resolution=r["resolution"])


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


def query_indices(config: Config, n: int) -> np.ndarray | None:
    if config.nn_queries is None or config.nn_queries >= n:
        return None
    return np.sort(np.random.default_rng(config.seed + 1).permutation(n)[: config.nn_queries])


# -- one run ----------------------------------------------------------------------------------
def train_run(config: Config, run: dict[str, Any], data: np.ndarray, progress: bool):
    """Train one run (resuming its checkpoint if any); returns the finished Trainer."""
    from overparam.bridge.trainer import Trainer

    folder = conv_common.run_folder(config.out_dir, run["name"], config)
    trainer = Trainer(train_config(config, run, str(folder)), data)
    trainer.train(progress=progress)
    return trainer


def evaluate_run(config: Config, run: dict[str, Any], trainer, train_u8: np.ndarray, feats: Callable | None,
                 samples_dir: Path) -> dict[str, Any]:
    """Generate G_ema(z_j) for the fixed codes, save them, and compute the 1-NN statistics."""
    summ = trainer.summary()
    r = config.resolved
    row: dict[str, Any] = {"run": run["name"], "m": run["m"], "noise": run["noise_var"] > 0,
                           "noise_var": run["noise_var"], "steps": trainer.step,
                           "epochs": trainer.step * run["m"] / r["n"], "status": summ["status"],
                           "diverged_at": summ["diverged_at"], "images_per_s": summ["images_per_s"]}
    gen = trainer.generate(trainer.latents, ema=True)
    idx: dict[str, list[int]] = {}
    if summ["status"] == "diverged" or not np.all(np.isfinite(gen)):
        row.update({f"pixel_{k}": float("nan") for k in STATS})
        if feats is not None:
            row.update({f"feature_{k}": float("nan") for k in STATS})
    else:
        gen_u8 = to_uint8(gen)
        common.atomic_write_bytes(samples_dir / f"{run['name']}.npz",
                                  _npz(generated=gen_u8, config_hash=np.array(common.config_hash(config))))
        stats, idx = nn_metrics(gen_u8, train_u8, query_indices(config, len(train_u8)), feats)
        row.update(stats)
    return {"row": row, "curves": curve_rows(run["name"], trainer.records), "nn": idx}


def _samples_ok(out: Path, name: str, config: Config) -> bool:
    try:
        with np.load(out / "samples" / f"{name}.npz") as z:
            return str(z["config_hash"]) == common.config_hash(config)
    except (OSError, KeyError, ValueError):
        return False


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# -- the study --------------------------------------------------------------------------------
def run(config: Config = Config(), progress: bool = True) -> Results:
    """Train every run (finished runs in ``out_dir/cells`` are reused) and evaluate it."""
    common.check_out_dir(config.out_dir)  # one error line before any work
    t0 = time.perf_counter()
    out = Path(config.out_dir)
    store = common.CellStore(out, config)
    data = load_data(config)
    train_u8 = to_uint8(data)
    common.atomic_write_bytes(out / "train.npz", _npz(images=train_u8))
    feats, note, cell_note = None, feature_note(config), ""
    rows, curves, nn = [], [], {}
    for rn in common.progress(runs(config), desc="stochasticity", enabled=progress):
        cell = store.get(rn["name"])
        if cell is not None and cell["row"]["status"] != "diverged" and not _samples_ok(out, rn["name"], config):
            cell = None  # its samples are gone or belong to another config: recompute
        if cell is None:
            if feats is None and config.feature_space != "none":
                feats, cell_note = feature_extractor(config, data)
            trainer = train_run(config, rn, data, progress)
            cell = evaluate_run(config, rn, trainer, train_u8, feats, out / "samples")
            cell["feature_note"] = cell_note if feats is not None else note
            store.put(rn["name"], cell)
        note = cell.get("feature_note", note)
        rows.append(cell["row"])
        curves += cell["curves"]
        nn[rn["name"]] = cell["nn"]
    res = Results(config, config.resolved, rows, curves, nn, time.perf_counter() - t0, feature_note=note)
    res.trend = trend(rows)
    return res


def feature_note(config: Config) -> str:
    space = config.feature_space
    if space == "classifier":
        return f"L2 in the {config.data} classifier's 128-d features (not Inception)"
    if space == "inception":
        return "L2 in Inception-v3 pool3 features"
    return "feature-space 1-NN skipped: no feature extractor for this data set (give --inception-weights PATH)"


# -- the trend, computed from the table ---------------------------------------------------------
def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with < 3 finite pairs."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return float("nan")
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return float(rho)


def trend(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Does more stochasticity give larger 1-NN distances both ways? (module docstring)

    Batch: rho(m, statistic) over the noise-free runs, for every statistic; the trend "appears"
    for a side when rho <= -0.8 for its average (at most one adjacent swap among 4 runs),
    "is monotone" when rho = -1. Noise: ratio noisy / noise-free average at the same m; the trend
    appears when it is >= 1 + NOISE_MARGIN, reversed when <= 1 - NOISE_MARGIN (one run each, no
    error bars: smaller differences are not called either way). Thresholds fixed before any run."""
    clean = [r for r in rows if not r["noise"]]
    out: dict[str, Any] = {"rho": {}, "noise_ratio": {}}
    spaces = [s for s in ("pixel", "feature") if any(f"{s}_overfitting_avg" in r for r in rows)]
    for space in spaces:
        for stat in STATS:
            key = f"{space}_{stat}"
            out["rho"][key] = spearman([r["m"] for r in clean], [r.get(key, float("nan")) for r in clean])
        noisy = [r for r in rows if r["noise"]]
        for nr in noisy:
            base = next((r for r in clean if r["m"] == nr["m"]), None)
            if base is None:
                continue
            for stat in STATS:
                key = f"{space}_{stat}"
                a, b = nr.get(key, float("nan")), base.get(key, float("nan"))
                out["noise_ratio"][key] = a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")
    verdicts = {}
    for space in spaces:
        for side in ("overfitting", "mode_drop"):
            rho = out["rho"].get(f"{space}_{side}_avg", float("nan"))
            ratio = out["noise_ratio"].get(f"{space}_{side}_avg", float("nan"))
            verdicts[f"{space}_{side}"] = {
                "rho": rho,
                "batch_trend": "n/a" if not math.isfinite(rho) else
                ("monotone" if rho <= -1 + 1e-9 else "appears" if rho <= -0.8 else "does not appear"),
                "noise_ratio": ratio,
                "noise_trend": "n/a" if not math.isfinite(ratio) else
                ("appears" if ratio >= 1 + NOISE_MARGIN else "reversed" if ratio <= 1 - NOISE_MARGIN
                 else f"no clear difference (within {NOISE_MARGIN:.0%})"),
            }
    out["verdicts"] = verdicts
    return out


# -- output -------------------------------------------------------------------------------------
TABLE_COLUMNS = ["m", "noise", "epochs", *[f"pixel_{s}" for s in STATS]]
SHORT = {"overfitting_avg": "OF avg", "overfitting_worst10": "OF 10%", "overfitting_worst5": "OF 5%",
         "mode_drop_avg": "MD avg", "mode_drop_worst10": "MD 10%", "mode_drop_worst5": "MD 5%"}


def _table(rows: list[dict[str, Any]], space: str) -> str:
    shown = []
    for r in rows:
        d = {"m": r["m"], "noise": "yes" if r["noise"] else "no", "epochs": f"{r['epochs']:.4g}",
             "status": r["status"]}
        for s in STATS:
            d[SHORT[s]] = r.get(f"{space}_{s}", float("nan"))
        shown.append(d)
    return common.format_table(shown, ["m", "noise", "epochs", *SHORT.values(), "status"], floatfmt=".2f")


def summary(results: Results) -> str:
    r, rows = results.resolved, results.rows
    budget = (f"{r['steps']} generator updates in every run (fixed across batch sizes; epochs = steps*m/n)"
              if results.config.budget == "updates" else
              f"equal epochs in every run ({r['steps']} updates at the largest batch, steps*m_max/m at batch m)")
    noise = (f"latent noise run: m = {r['n'] // r['noise_divisor']}, z + eps, eps ~ N(0, {results.config.noise_var} I) "
             f"(variance {results.config.noise_var}, std {math.sqrt(results.config.noise_var):.3f})"
             if results.config.noise_var > 0 else "no latent-noise run")
    lines = [
        f"Stochasticity study ({results.config.data}, n = {r['n']}, preset {r['preset']}, {results.config.arch} width "
        f"{r['width']:g}, latent {r['latent_dim']}): {budget}, alternating GDA 1:1, non-saturating loss, Adam({results.config.lr:g}, "
        f"{results.config.b1:g}, {results.config.b2:g}), SN in D, EMA {r['ema_decay']:g}; {noise}.",
        "1-NN distances of G_ema(z_j) (fixed codes, no noise) vs the n training images; OF = overfitting "
        "(generated -> nearest training), MD = mode drop (training -> nearest generated); avg, mean of worst 10 %, 5 %.",
        "", "Pixel L1 on [0, 255], mean per pixel and channel (Table 1's scale):", _table(rows, "pixel")]
    if any("feature_overfitting_avg" in x for x in rows):
        lines += ["", f"Feature space: {results.feature_note}:", _table(rows, "feature")]
    else:
        lines += ["", results.feature_note]
    lines += ["", "Trend (paper: more stochasticity -> larger 1-NN distances both ways), from the table:"]
    for key, v in results.trend.get("verdicts", {}).items():
        lines.append(f"  {key:22s} batch: Spearman rho(m, avg) = {v['rho']:+.2f} -> {v['batch_trend']}; "
                     f"noise: noisy/noise-free avg = {v['noise_ratio']:.2f} -> {v['noise_trend']}")
    if results.config.budget == "updates" and len({x["epochs"] for x in rows if not x["noise"]}) > 1:
        lines.append("  caveat: with equal updates a smaller m also sees fewer epochs (column epochs), so the batch "
                     "trend mixes gradient noise with less training; the paper trains every run to convergence of its "
                     "metrics (--budget epochs equalizes epochs instead)")
    bad = [x["run"] for x in rows if x["status"] != "completed"]
    if bad:
        lines.append(f"  runs not completed (diverged or stopped): {', '.join(bad)}")
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
    n_rows = len(results.rows) * (1 + len(spaces))
    fig, axes = plt.subplots(n_rows, 1, figsize=(0.55 * len(shown) + 1.5, 0.62 * n_rows + 0.4), squeeze=False)
    i = 0
    for row in results.rows:
        name = row["run"]
        title = f"m={row['m']}{' +noise' if row['noise'] else ''}"
        file = out / "samples" / f"{name}.npz"
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
    """Losses and top singular values (largest over each player's layers) vs generator step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for row in results.rows:
        name = row["run"]
        cur = [c for c in results.curves if c["run"] == name]
        label = f"m={row['m']}{' +noise' if row['noise'] else ''}"
        steps = [c["step"] for c in cur]
        for ax, key in zip(axes, ("loss_d", "loss_g", "G_top_sv", "D_top_sv")):
            ax.plot(steps, [c.get(key, float("nan")) for c in cur], label=label)
    for ax, title in zip(axes, ("D loss", "G loss (non-saturating)", "G: largest top singular value",
                                "D: largest top singular value (raw kernel)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("generator step")
    axes[2].set_yscale("log")
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    import matplotlib.pyplot as plt

    out = Path(results.config.out_dir)
    paths = [
        common.write_csv(out / "table.csv", results.rows),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_json(out / "results.json", {"resolved": results.resolved, "rows": results.rows,
                                                  "trend": results.trend, "feature_space": results.feature_note,
                                                  "nn": results.nn, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, resolved=results.resolved,
                                                                 seconds=results.seconds)),
    ]
    for side in ("overfitting", "mode_drop"):
        fig = plot_nn(results, side)
        paths += common.save_figure(fig, out / f"nn_{side}")
        plt.close(fig)
    fig = plot_curves(results)
    paths += common.save_figure(fig, out / "curves")
    plt.close(fig)
    return paths
