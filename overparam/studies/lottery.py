"""Lottery tickets in conv generative models: IMP on the bridge's DCGAN, a VAE and an autoencoder
(decoder = the generator), early-bird tickets and GAN <-> VAE ticket transfer.

Kalibhat, Balaji & Feizi (2020) claim that iterative magnitude pruning (IMP) with late rewinding
finds generators of 89 % sparsity (93 % for VAEs, 99 % for autoencoders) that train to the dense
network's quality, that tickets transfer between GANs and VAEs of the same architecture, and
that early-bird tickets appear early in training. Per model (gan, vae, ae), seed and IMP round
r (sparsity s_r = 1 − (1 − p)^r of the generator's / decoder's conv and dense kernels; the
discriminator and the encoder are trained dense):

* arms: ``ticket`` (magnitude mask of the previous ticket's trained weights, survivors rewound
  to the dense run's weights after ``rewind_epoch`` epochs), ``random`` (a random mask with the
  same per-layer counts, rewound the same way), ``reinit`` (the ticket's mask on a fresh
  initialization; GAN only); all through :class:`overparam.prune.IMP`;
* ``early_bird`` (GAN): the IMP chain in which each round's mask is taken from the weights at
  the epoch where :class:`overparam.prune.EarlyBird` fires (fed after every epoch the magnitude
  mask at the next round's sparsity), instead of the end of training; the run continues to the
  end only to score the ticket. Cost saved = 1 − Σ_r epochs to fire / Σ_r full epochs;
* transfer: ``from_vae`` on the GAN (the VAE ticket's decoder mask and rewound decoder weights
  as the generator, D from the GAN's rewind point) and ``from_gan`` on the VAE (the GAN
  ticket's generator mask and rewound weights as the decoder, the encoder from the VAE's
  rewind point), trained with the target's loss.

Scores of every run (n_eval samples from fixed codes; for the AE, reconstructions of n_eval
held-out images): the Fréchet distance in the digit classifier's features against the training
images and against held-out images (``fd_<data>_classifier_train`` / ``_heldout``; NOT FID),
the 1-NN pixel L1 distances both ways (overfitting: generated → train, mode drop: train →
generated; overparam.metrics.nn), and the classes covered (classes with at least ``cover_min``
of the samples, by the classifier). Quality = the held-out classifier FD (FID with
``--inception-weights`` on other data, else the 1-NN mode-drop distance); ratio = quality /
the same seed's dense quality. Verdicts (overparam.claims, margin pinned in sims/lottery.toml):
"within margin of dense" when the bootstrap interval over seeds of the mean ratio lies below
1 + margin; the highest sparsity within the margin per model and arm.

Each (model, round, arm, seed) is a content-keyed cell (the ticket's cell holds the prunable
leaves of its trained weights, round 0's the rewind point, the early-bird cell its fire-epoch
weights), so a killed run resumes, replaying IMP from the cells to the same numbers.
"""
from __future__ import annotations

import base64
import zlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam import claims, prune
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.studies import common, conv_common
from overparam.studies.config import check_types, help_meta as _h
from overparam.studies.conv_common import CLASSIFIER_DATA

NAME = "lottery"
DESCRIPTION = """Lottery tickets in conv generative models: IMP with late rewinding on the bridge's DCGAN,
a VAE and an autoencoder whose decoder is the generator; early-bird tickets; GAN <-> VAE transfer.

Per IMP round, arm (ticket, random mask with the same layer counts, ticket mask on a fresh init,
early-bird ticket, transferred ticket) and seed: sparsity, classifier-feature Frechet distance
(fd_<data>_classifier, not FID) against training and held-out images, 1-NN both ways, classes
covered; the highest sparsity within a pinned margin of the dense network; early-bird fire
epochs and cost saved; a transfer table. Writes runs.csv, per_round.csv, transfer.csv,
early_bird.csv, results.json (verdicts), manifest.json and lottery.png/.pdf."""

MODELS = ("gan", "vae", "ae")
GAN_ARMS = ("ticket", "random", "reinit")
SIDE_ARMS = ("ticket", "random")

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"resolution": 16, "n_train": 1024, "n_heldout": 1000, "width": 1 / 32, "latent_dim": 32,
              "batch_size": 32, "epochs": 16, "rounds": 6, "n_eval": 512},
    "paper": {"resolution": 32, "n_train": None, "n_heldout": 10000, "width": 0.25, "latent_dim": 128,
              "batch_size": 64, "epochs": 50, "rounds": 10, "n_eval": 10000},
}


@dataclass(frozen=True)
class Config:
    """Conv lottery-ticket configuration; fields left at none take the preset's value."""

    #: A (model, round, arm, seed) cell does not depend on how many rounds follow it.
    NOT_CONTENT = ("rounds",)

    data: str = field(default="mnist5k", metadata=_h("data set: mnist5k, digits, cifar10, celeba, folder, npz"))
    path: str | None = field(default=None, metadata=_h("data location (cifar10, celeba, folder, npz)"))
    preset: str = field(default="auto", metadata=_h("small, paper, or auto (small for digits/mnist5k)"))
    resolution: int | None = field(default=None, metadata=_h("image side (preset: 16 / 32)"))
    n_train: int | None = field(default=None, metadata=_h("training images (preset: 1024 / all)"))
    n_heldout: int | None = field(default=None, metadata=_h("held-out images (preset: 1000 / 10000)"))
    arch: str = field(default="stoch_dcgan", metadata=_h("generator / decoder architecture: stoch_dcgan, dcgan, resnet"))
    width: float | None = field(default=None, metadata=_h("width multiplier (preset: 1/32 / 0.25)"))
    latent_dim: int | None = field(default=None, metadata=_h("latent dimension (preset: 32 / 128)"))
    batch_size: int | None = field(default=None, metadata=_h("mini-batch size (preset: 32 / 64)"))
    epochs: int | None = field(default=None, metadata=_h("epochs per dense run (preset: 16 / 50)"))
    lr: float = field(default=5e-4, metadata=_h("Adam learning rate (every model and player)"))
    b1: float = field(default=0.5, metadata=_h("Adam beta1"))
    b2: float = field(default=0.999, metadata=_h("Adam beta2"))
    sn_d: bool = field(default=True, metadata=_h("spectral normalization in D"))
    loss: str = field(default="non_saturating", metadata=_h("GAN loss"))
    likelihood: str = field(default="gaussian", metadata=_h("VAE/AE likelihood: gaussian or bernoulli"))
    sigma: float = field(default=0.2, metadata=_h("Gaussian observation std (pixels in [-1, 1])"))
    rounds: int | None = field(default=None, metadata=_h("IMP pruning rounds after the dense round (preset: 6 / 10)"))
    prune_fraction: float = field(default=0.2, metadata=_h("fraction of surviving weights pruned per round"))
    scope: str = field(default="global", metadata=_h("pruning scope: global or layer"))
    rewind_epoch: int = field(default=1, metadata=_h("rewind survivors to the dense run after this many epochs "
                                                     "(0 = init; late rewinding otherwise)"))
    models: tuple[str, ...] = field(default=MODELS, metadata=_h("models: gan, vae, ae"))
    early_bird: bool = field(default=True, metadata=_h("run the early-bird chain on the GAN"))
    transfer: bool = field(default=True, metadata=_h("train transferred tickets (GAN <-> VAE)"))
    eb_queue: int = field(default=5, metadata=_h("early-bird queue length"))
    eb_eps: float = field(default=0.1, metadata=_h("early-bird distance threshold"))
    seeds: int = field(default=3, metadata=_h("seeds (>= 3 for the intervals)"))
    seed: int = field(default=0, metadata=_h("first seed; seeds are seed, seed+1, ..."))
    data_seed: int = field(default=1234, metadata=_h("seed of the train / held-out split"))
    n_eval: int | None = field(default=None, metadata=_h("samples scored per run (preset: 512 / 10000)"))
    cover_min: float = field(default=0.02, metadata=_h("a class is covered with at least this share of samples"))
    margin: float = field(default=0.2, metadata=_h("quality margin: ratio to dense <= 1 + margin"))
    min_improvement: float = field(default=0.5, metadata=_h("the dense run counts as trained when its quality "
                                                            "is below (1 - this) x its quality at init"))
    ci: float = field(default=0.95, metadata=_h("bootstrap interval level"))
    n_boot: int = field(default=2000, metadata=_h("bootstrap resamples"))
    classifier_steps: int | None = field(default=None, metadata=_h("training steps of the digit classifier"))
    inception_weights: str | None = field(default=None, metadata=_h("FID Inception weights for non-digit data"))
    out_dir: str = field(default="results/lottery", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        check_types(self)
        from overparam.bridge import losses, nets

        one_of("data", self.data, conv_common.DATASETS)
        one_of("preset", self.preset, ("auto", "small", "paper"))
        one_of("arch", self.arch, nets.ARCHS)
        one_of("loss", self.loss, losses.LOSSES)
        one_of("likelihood", self.likelihood, ("gaussian", "bernoulli"))
        one_of("pruning scope", self.scope, prune.SCOPES)
        require(len(self.models) > 0 and len(set(self.models)) == len(self.models),
                "models must list distinct names among gan, vae, ae")
        for m in self.models:
            one_of("model", m, MODELS)
        r = self.resolved
        for name in ("resolution", "n_heldout", "latent_dim", "batch_size", "epochs", "rounds", "n_eval"):
            positive_int(name, r[name])
        if r["n_train"] is not None:
            positive_int("n_train", r["n_train"])
            require(r["batch_size"] <= r["n_train"], f"batch_size {r['batch_size']} exceeds n_train {r['n_train']}")
        nets.check_resolution(r["resolution"])
        finite_positive("width", r["width"])
        require(r["n_eval"] >= 2, "n_eval must be >= 2 (a covariance needs two samples)")
        positive_int("seeds", self.seeds)
        require(self.seeds >= 3, f"seeds = {self.seeds}: the intervals need at least 3 seeds; use --seeds 3 or more")
        require(0.0 < self.prune_fraction < 1.0,
                f"prune_fraction must be in (0, 1) (a fraction, not a percentage), got {self.prune_fraction}")
        require(isinstance(self.rewind_epoch, int) and 0 <= self.rewind_epoch < r["epochs"],
                f"rewind_epoch ({self.rewind_epoch}) must be in [0, epochs = {r['epochs']})")
        finite_positive("lr", self.lr)
        require(0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0, f"b1, b2 must lie in [0, 1), got {self.b1}, {self.b2}")
        finite_positive("sigma", self.sigma)
        finite_positive("margin", self.margin, allow_zero=True)
        require(0.0 <= self.min_improvement < 1.0, f"min_improvement must be in [0, 1), got {self.min_improvement}")
        require(0.0 < self.ci < 1.0, f"ci is an interval level in (0, 1), got {self.ci}")
        require(0.0 < self.cover_min < 1.0, f"cover_min is a share in (0, 1), got {self.cover_min}")
        positive_int("n_boot", self.n_boot)
        prune.EarlyBird(self.eb_queue, self.eb_eps)  # validates
        if self.transfer:
            require("gan" in self.models and "vae" in self.models, "transfer needs both gan and vae in models "
                    "(or transfer = false)")
        if self.early_bird:
            require("gan" in self.models, "the early-bird chain runs on the GAN: add gan to models or set "
                    "early_bird = false")
        if "ae" in self.models:
            require(r["n_eval"] <= r["n_heldout"], f"n_eval ({r['n_eval']}) must be <= n_heldout ({r['n_heldout']}): "
                    "the autoencoder is scored on reconstructions of held-out images")
        if self.classifier_steps is not None:
            positive_int("classifier_steps", self.classifier_steps)
        conv_common.need_path(self)

    @property
    def resolved(self) -> dict[str, Any]:
        return conv_common.resolve_preset(self, PRESETS)

    @property
    def imp(self) -> prune.IMPConfig:
        return prune.IMPConfig(rounds=self.resolved["rounds"], prune_fraction=self.prune_fraction, scope=self.scope,
                               seed=self.seed, arms=GAN_ARMS)

    @property
    def quality_key(self) -> str:
        if self.data in CLASSIFIER_DATA:
            return f"fd_{self.data}_classifier_heldout"
        return "fid_heldout" if self.inception_weights else "pixel_mode_drop_avg"


@dataclass
class Results:
    config: Config
    resolved: dict[str, Any]
    rows: list[dict[str, Any]]          # one per (model, round, arm, seed)
    seconds: float
    score_note: str = ""
    verdicts: dict[str, Any] = dataclasses.field(default_factory=dict)
    cells_report: str = ""


# -- arrays in cells --------------------------------------------------------------------------
def _enc(tree: Any) -> list[Any]:
    """Leaves of a pytree (None kept) as {dtype, shape, b64 of the raw bytes}: exact and compact."""
    out = []
    for x in jax.tree_util.tree_leaves(tree, is_leaf=lambda v: v is None):
        if x is None:
            out.append(None)
            continue
        a = np.ascontiguousarray(np.asarray(x))
        out.append({"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()})
    return out


def _dec(blob: list[Any], like: Any, fill: Any = None) -> Any:
    """Inverse of :func:`_enc` on the structure of ``like``; None entries take ``fill``'s leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    fills = jax.tree_util.tree_leaves(fill) if fill is not None else [None] * len(leaves)
    if len(blob) != len(leaves):
        raise ConfigError("a stored cell does not match the model's parameters; delete out_dir/cells to recompute")
    out = []
    for b, f in zip(blob, fills):
        if b is None:
            out.append(None if f is None else np.asarray(f))
        else:
            out.append(np.frombuffer(base64.b64decode(b["b64"]), dtype=np.dtype(b["dtype"])).reshape(b["shape"]).copy())
    return jax.tree_util.tree_unflatten(treedef, out)


def _prunable_only(tree: Any, mask: Any) -> Any:
    """The leaves the mask covers (others None): all that magnitude pruning reads."""
    return jax.tree_util.tree_map(lambda m, x: None if m is None else x, mask, tree, is_leaf=lambda v: v is None)


# -- training programs ------------------------------------------------------------------------
class GanProgram:
    """The conv GAN (overparam.bridge: ConvGame, dynamics.make_step) trained one epoch per host call;
    masks live in the optimizer state (prune.masked), so one compiled epoch serves every run."""

    def __init__(self, config: Config, data: np.ndarray, template_mask: Any = None):
        from overparam.bridge import nets
        from overparam.bridge.config import TrainConfig

        r = config.resolved
        self.config, self.r = config, r
        self.gan = nets.make_gan(config.arch, r["resolution"], data.shape[-1], r["width"], r["latent_dim"],
                                 sn_d=config.sn_d, sn_g=False)
        self.tcfg = TrainConfig(arch=config.arch, width=r["width"], latent_dim=r["latent_dim"], sn_d=config.sn_d,
                                loss=config.loss, lr_g=config.lr, lr_d=config.lr, b1=config.b1, b2=config.b2,
                                scheme="alternating", order="d_first", n_disc=1, batch_size=r["batch_size"],
                                ema=False)
        self.inner = optax.adam(config.lr, b1=config.b1, b2=config.b2)
        self.data = jnp.asarray(data)
        self.steps_per_epoch = data.shape[0] // r["batch_size"]
        self.prunable = lambda p, x: prune.matching("gen/*")(p, x) and prune.default_prunable(p, x)
        self._epoch = None
        self._gen = None

    def init(self, seed: int, which: int) -> tuple[dict, tuple]:
        from overparam.bridge import nets

        gp, gs, dp, ds = nets.init_gan(self.gan, jax.random.fold_in(jax.random.PRNGKey(seed), which))
        return jax.device_get({"gen": gp, "disc": dp}), (gs, ds)

    def init_opt(self, params: dict, mask: dict) -> dict:
        return {"gen": prune.masked(self.inner, mask["gen"]).init(params["gen"]),
                "disc": prune.masked(self.inner, mask["disc"]).init(params["disc"])}

    def _build(self, mask: dict) -> Callable:
        from overparam import dynamics
        from overparam.bridge.step import make_train_step

        og, od = prune.masked(self.inner, mask["gen"]), prune.masked(self.inner, mask["disc"])
        gan, tcfg, n = self.gan, self.tcfg, self.steps_per_epoch

        @jax.jit
        def epoch(state, data, seed):
            stream = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
            step = make_train_step(gan, tcfg, og, od, data, None, key_fn=lambda s, k: jax.random.fold_in(stream, s.step))
            state, rec = dynamics.run(step, state, jax.random.PRNGKey(0), n, n,
                                      lambda s: {"loss_d": s.aux.disc.metrics["loss_d"], "loss_g": s.aux.gen.metrics["loss_g"]})
            return state, rec

        return epoch

    def start(self, params: dict, opt_state: dict, colls: tuple):
        from overparam.bridge.game import ConvGame
        from overparam.bridge.step import ConvState

        return ConvState(jax.tree_util.tree_map(jnp.asarray, params["gen"]),
                         jax.tree_util.tree_map(jnp.asarray, params["disc"]), opt_state["gen"], opt_state["disc"],
                         (), jnp.zeros((), jnp.int32), ConvGame.initial_aux(*colls))

    def epoch(self, state, seed: int, mask: dict):
        if self._epoch is None:
            self._epoch = self._build(mask)
        return self._epoch(state, self.data, seed)

    @staticmethod
    def params_of(state) -> dict:
        return jax.device_get({"gen": state.gen, "disc": state.disc})

    def generate(self, state, codes: np.ndarray) -> np.ndarray:
        from overparam.bridge import nets

        if self._gen is None:
            G = self.gan.G
            self._gen = jax.jit(lambda p, s, z: nets.apply(G, p, s, z, train=False)[0])
        return np.asarray(self._gen(state.gen, state.aux.gen.state, jnp.asarray(codes)))


class VaeProgram:
    """The VAE / autoencoder of overparam.bridge.vae trained one epoch per host call."""

    def __init__(self, config: Config, data: np.ndarray, kind: str):
        from overparam.bridge import vae

        r = config.resolved
        self.config, self.r, self.kind = config, r, kind
        self.model = vae.make_vae(config.arch, r["resolution"], data.shape[-1], r["width"], r["latent_dim"], kind,
                                  config.likelihood, config.sigma)
        self.inner = optax.adam(config.lr, b1=config.b1, b2=config.b2)
        self.data = jnp.asarray(data)
        self.steps_per_epoch = data.shape[0] // r["batch_size"]
        self.prunable = vae.DECODER_ONLY
        self._train = None
        model = self.model
        self._sample = jax.jit(lambda p, s, z: vae.sample(model, p, s, z))
        self._recon = jax.jit(lambda p, s, x: vae.reconstruct(model, p, s, x))

    def init(self, seed: int, which: int) -> tuple[dict, dict]:
        from overparam.bridge import vae

        p, s = vae.init_vae(self.model, jax.random.fold_in(jax.random.PRNGKey(seed), which))
        return jax.device_get(p), s

    def init_opt(self, params: dict, mask: dict):
        return prune.masked(self.inner, mask).init(params)

    def start(self, params: dict, opt_state: Any, colls: dict):
        return (jax.tree_util.tree_map(jnp.asarray, params), colls, opt_state, 0)

    def epoch(self, state, seed: int, mask: dict):
        from overparam.bridge import vae

        if self._train is None:
            self._train = vae.make_train(self.model, prune.masked(self.inner, mask), self.r["batch_size"])
        params, colls, opt_state, t = state
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        params, colls, opt_state, met = self._train(params, colls, opt_state, self.data, key, t, self.steps_per_epoch)
        return (params, colls, opt_state, t + self.steps_per_epoch), met

    @staticmethod
    def params_of(state) -> dict:
        return jax.device_get(state[0])

    def generate(self, state, codes: np.ndarray, heldout: np.ndarray) -> np.ndarray:
        params, colls = state[0], state[1]
        if self.kind == "ae":
            return np.asarray(self._recon(params, colls, jnp.asarray(heldout[: len(codes)])))
        return np.asarray(self._sample(params, colls, jnp.asarray(codes)))


_PROGRAMS: dict[tuple, Any] = {}


def _program(config: Config, model: str, data: np.ndarray):
    """The compiled program of ``model`` (shared by runs whose configs agree on what it compiles;
    the data are an argument of the compiled functions, never a constant)."""
    r = config.resolved
    key = (model, config.arch, r["resolution"], data.shape, r["width"], r["latent_dim"], r["batch_size"], config.sn_d,
           config.loss, config.lr, config.b1, config.b2, config.likelihood, config.sigma)
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= 8:
            _PROGRAMS.clear()
        _PROGRAMS[key] = GanProgram(config, data) if model == "gan" else VaeProgram(config, data, model)
    prog = _PROGRAMS[key]
    prog.data = jnp.asarray(data)
    return prog


# -- scoring -----------------------------------------------------------------------------------
class Scorer:
    """Classifier FD (train / held-out), 1-NN both ways, classes covered (or FID on other data)."""

    def __init__(self, config: Config, train: np.ndarray, heldout: np.ndarray):
        from overparam.metrics.frechet import gaussian_stats

        self.config, self.train, self.heldout = config, train, heldout
        self.clf = None
        self.fid = None
        if config.data in CLASSIFIER_DATA:
            from overparam.bridge.classifier import get_classifier

            self.clf = get_classifier(config.data, train.shape[1], seed=0, steps=config.classifier_steps)
            self.ref = {"train": gaussian_stats(self.clf.features(train)),
                        "heldout": gaussian_stats(self.clf.features(heldout))}
            self.note = (f"{self.clf.label}: Fréchet distance in the {config.data} classifier's 128-d features (test "
                         f"accuracy {self.clf.test_accuracy:.3f}); NOT FID")
        elif config.inception_weights:
            from overparam.bridge import inception

            self.fid = {"train": inception.reference_statistics(train, config.inception_weights),
                        "heldout": inception.reference_statistics(heldout, config.inception_weights)}
            self.note = "FID (Inception pool3) against the training and held-out images"
        else:
            self.note = ("no Fréchet distance: the classifier exists for digits/mnist5k only and FID needs "
                         "--inception-weights; quality = 1-NN mode-drop distance")

    def __call__(self, images: np.ndarray) -> dict[str, float]:
        from overparam.metrics.frechet import frechet_distance, gaussian_stats

        if not np.all(np.isfinite(images)):
            return {"diverged": True}
        out: dict[str, Any] = {"diverged": False}
        if self.clf is not None:
            f = self.clf.features(images)
            st = gaussian_stats(f)
            for side in ("train", "heldout"):
                out[f"{self.clf.label}_{side}"] = float(frechet_distance(*st, *self.ref[side]))
            pred = self.clf.predict(images)
            share = np.bincount(pred, minlength=10) / len(pred)
            out["classes_covered"] = int(np.sum(share >= self.config.cover_min))
        elif self.fid is not None:
            from overparam.bridge import inception

            for side in ("train", "heldout"):
                out[f"fid_{side}"] = float(inception.fid(images, self.fid[side], self.config.inception_weights))
        out.update(conv_common.pixel_nn_summary(images, self.train))
        return out


# -- one study run ----------------------------------------------------------------------------
def load_data(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out): a seeded split of the built-in data sets; train / test splits on disk."""
    from overparam.bridge.data import load_dataset

    r = config.resolved
    if config.data in CLASSIFIER_DATA:
        x = load_dataset(config.data, None, resolution=r["resolution"])
        perm = np.random.default_rng(config.data_seed).permutation(len(x))
        n_h = r["n_heldout"]
        n_t = r["n_train"] if r["n_train"] is not None else len(x) - n_h
        require(n_t + n_h <= len(x), f"n_train + n_heldout = {n_t + n_h} exceeds the {len(x)} images of {config.data}")
        return x[perm[n_h:n_h + n_t]], x[perm[:n_h]]
    train = load_dataset(config.data, config.path, n=r["n_train"], seed=config.data_seed, resolution=r["resolution"])
    split = "val" if config.data == "celeba" else "test"
    try:
        held = load_dataset(config.data, config.path, n=r["n_heldout"], seed=config.data_seed,
                            resolution=r["resolution"], split=split)
    except ConfigError:  # no separate split on disk: hold out the end of a seeded permutation
        perm = np.random.default_rng(config.data_seed).permutation(len(train))
        n_h = min(r["n_heldout"], len(train) // 5)
        held, train = train[perm[:n_h]], train[perm[n_h:]]
    return train, held


class _Run:
    """The study's state for one call of :func:`run`."""

    def __init__(self, config: Config, progress: bool):
        self.config, self.r = config, config.resolved
        self.train, self.heldout = load_data(config)
        require(self.r["batch_size"] <= len(self.train), f"batch_size exceeds the {len(self.train)} training images")
        self.store = common.CellStore(config.out_dir, config)
        self.scorer = None
        self.progs: dict[str, Any] = {}
        self.codes = np.asarray(jax.random.normal(jax.random.PRNGKey(config.seed + 7919),
                                                  (self.r["n_eval"], self.r["latent_dim"])))
        self.rows: list[dict[str, Any]] = []
        self.E = self.r["epochs"]
        self.k = config.rewind_epoch
        self.imp_cfg = config.imp

    def prog(self, model: str):
        if model not in self.progs:
            self.progs[model] = _program(self.config, model, self.train)
        return self.progs[model]

    def score(self, prog, state) -> dict[str, Any]:
        if self.scorer is None:
            self.scorer = Scorer(self.config, self.train, self.heldout)
        if isinstance(prog, GanProgram):
            g = prog.generate(state, self.codes)
        else:
            g = prog.generate(state, self.codes, self.heldout)
        return self.scorer(g)

    def train_run(self, model: str, seed: int, params: dict, mask: dict, opt_state: Any, colls: Any,
                  epochs: int, rewind_at: int | None, eb_target: float | None) -> dict[str, Any]:
        """Train ``epochs`` epochs; returns trained params, the params after ``rewind_at`` epochs,
        the early-bird fire epoch (fed the magnitude mask at ``eb_target``) and its weights, metrics."""
        prog = self.prog(model)
        state = prog.start(params, opt_state, colls)
        rewind = params if rewind_at == 0 else None
        init_scores = {}
        if rewind_at is not None:  # the dense run: its score at initialization (has training converged?)
            init_scores = {f"init_{k}": v for k, v in self.score(prog, state).items() if k != "diverged"}
        eb = prune.EarlyBird(self.config.eb_queue, self.config.eb_eps)
        eb_state, fired, fired_params = eb.init(), None, None
        losses = []
        for e in range(1, epochs + 1):
            state, rec = prog.epoch(state, seed, mask)
            losses.append({k: float(np.asarray(v)[-1]) for k, v in rec.items() if k not in ("step", "finite")})
            if rewind_at is not None and e == rewind_at:
                rewind = prog.params_of(state)
            if eb_target is not None and fired is None:
                p = prog.params_of(state)
                eb_state = eb.update(eb_state, prune.magnitude_mask(p, eb_target, self.config.scope, prog.prunable,
                                                                    current=mask))
                if eb_state.fired:
                    fired, fired_params = e, p
        trained = prog.params_of(state)
        if fired_params is None:
            fired_params = trained
        finite = all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(trained))
        metrics = self.score(prog, state) if finite else {"diverged": True}
        metrics.update({f"final_{k}": v for k, v in (losses[-1] if losses else {}).items()})
        metrics.update(init_scores)
        return {"trained": trained, "rewind": rewind, "eb_epoch": fired, "eb_params": fired_params,
                "metrics": metrics}

    def row(self, model, r, arm, seed, mask, metrics, **extra) -> dict[str, Any]:
        counts = prune.leaf_counts(mask)
        kept, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        return {"model": model, "round": r, "arm": arm, "seed": seed,
                "target_sparsity": self.imp_cfg.target_sparsity(r), "sparsity": 1.0 - kept / total, "kept": kept,
                **extra, **metrics}


def _imp_for(run: _Run, model: str, seed: int):
    """An IMP driver for (model, seed) whose trainer reads and writes the (round, arm, seed) cells."""
    prog = run.prog(model)
    params0, colls = prog.init(seed, 0)
    fresh, fresh_colls = prog.init(seed, 1)
    arms = GAN_ARMS if model == "gan" else SIDE_ARMS
    cfg = dataclasses.replace(run.imp_cfg, arms=arms, seed=run.config.seed + 1000 * seed)
    ctx = {"round": 0, "calls": 0}
    E, k = run.E, run.k

    def train_fn(params, mask, opt_state):
        r = ctx["round"]
        arm = "ticket" if r == 0 else arms[ctx["calls"]]
        ctx["calls"] += 1
        name = f"{model}-r{r}-{arm}-s{seed}"
        cell = run.store.get(name)
        if cell is None:
            epochs = E if (r == 0 or arm == "reinit") else E - k
            eb_target = cfg.target_sparsity(r + 1) if (model == "gan" and arm == "ticket") else None
            out = run.train_run(model, seed, params, mask, opt_state, fresh_colls if arm == "reinit" else colls,
                                epochs, k if r == 0 else None, eb_target)
            data = {"row": run.row(model, r, arm, seed, mask, out["metrics"], eb_epoch=out["eb_epoch"],
                                   epochs=epochs)}
            if arm == "ticket":
                data["trained"] = _enc(_prunable_only(out["trained"], mask))
                data["eb_params"] = _enc(_prunable_only(out["eb_params"], mask))
            if r == 0:
                data["rewind"] = _enc(out["rewind"])
            cell = run.store.put(name, data)
        trained = _dec(cell["trained"], params, fill=params) if arm == "ticket" else None
        rewind = _dec(cell["rewind"], params) if r == 0 else params
        return prune.TrainOutcome(trained, rewind, cell)

    imp = prune.IMP(cfg, train_fn, prog.init_opt, prunable=prog.prunable, fresh=fresh if model == "gan" else None)
    return imp, ctx, params0, colls


def _b_start(run: _Run, target: str, state: prune.IMPState, src_state: prune.IMPState, src_key: str,
             dst_key: str) -> tuple[dict, dict]:
    """Transfer: the source ticket's mask and rewound weights as the target's generator / decoder."""
    rewind = jax.tree_util.tree_map(np.asarray, state.rewind)
    start = dict(rewind)
    start[dst_key] = prune.apply_mask(src_state.rewind[src_key], src_state.mask[src_key])
    mask = prune.dense_mask(rewind, run.prog(target).prunable)
    mask = dict(mask)
    mask[dst_key] = src_state.mask[src_key]
    return start, mask


def _round(st: _Run, config: Config, r: int, seed: int, imps: dict, states: dict, eb: list) -> None:
    """Round r of one seed: the IMP step of every model, the early-bird arm, the transfers."""
    for m in config.models:
        imp, ctx, _, _ = imps[m]
        ctx["round"], ctx["calls"] = r, 0
        states[m], runs = imp.step(states[m])
        for arm, ar in runs.items():
            st.rows.append(ar.outcome.metrics["row"])
        if m == "gan" and r == 0:
            cell = runs["ticket"].outcome.metrics
            eb[1] = _dec(cell["eb_params"], states[m].rewind, fill=states[m].rewind)
            eb[0] = states[m].mask
    if config.early_bird and r >= 1:
        gan = st.prog("gan")
        name = f"gan-r{r}-early_bird-s{seed}"
        eb[0] = prune.magnitude_mask(eb[1], config.imp.target_sparsity(r), config.scope, gan.prunable, current=eb[0])
        cell = st.store.get(name)
        if cell is None:
            start = prune.apply_mask(states["gan"].rewind, eb[0])
            out = st.train_run("gan", seed, start, eb[0], gan.init_opt(start, eb[0]), imps["gan"][3],
                               st.E - st.k, None, config.imp.target_sparsity(r + 1))
            dist = prune.mask_distance(eb[0], states["gan"].mask)
            cell = st.store.put(name, {
                "row": st.row("gan", r, "early_bird", seed, eb[0], out["metrics"], eb_epoch=out["eb_epoch"],
                              epochs=st.E - st.k, distance_to_ticket=dist),
                "eb_params": _enc(_prunable_only(out["eb_params"], eb[0]))})
        st.rows.append(cell["row"])
        eb[1] = _dec(cell["eb_params"], states["gan"].rewind, fill=states["gan"].rewind)
    if config.transfer and r >= 1:
        for target, src, src_key, dst_key, arm in (("vae", "gan", "gen", "dec", "from_gan"),
                                                   ("gan", "vae", "dec", "gen", "from_vae")):
            name = f"{target}-r{r}-{arm}-s{seed}"
            cell = st.store.get(name)
            if cell is None:
                colls = imps[target][3]
                start, mask = _b_start(st, target, states[target], states[src], src_key, dst_key)
                prog = st.prog(target)
                out = st.train_run(target, seed, start, mask, prog.init_opt(start, mask), colls, st.E - st.k,
                                   None, None)
                cell = st.store.put(name, {"row": st.row(target, r, arm, seed, mask, out["metrics"], eb_epoch=None,
                                                         epochs=st.E - st.k)})
            st.rows.append(cell["row"])


def run(config: Config = Config(), progress: bool = True) -> Results:
    """Every (model, round, arm, seed) cell; finished cells in ``out_dir/cells`` are reused."""
    common.check_out_dir(config.out_dir)
    t0 = time.perf_counter()
    R = config.resolved["rounds"]
    st = _Run(config, progress)
    seeds = [config.seed + i for i in range(config.seeds)]
    imps = {s: {m: _imp_for(st, m, s) for m in config.models} for s in seeds}
    states = {s: {m: imps[s][m][0].init(imps[s][m][2]) for m in config.models} for s in seeds}
    eb = {s: [None, None] for s in seeds}  # early-bird chain: (mask, fire-epoch weights) per seed
    # round-major: every seed finishes round r before any starts round r + 1 (a run stopped early
    # holds complete rounds; cells do not depend on the number of rounds, so --rounds K reuses them)
    bar = common.progress([(r, s) for r in range(R + 1) for s in seeds], desc="lottery (round, seed)",
                          enabled=progress)
    for r, seed in bar:
        _round(st, config, r, seed, imps[seed], states[seed], eb[seed])
    for seed in seeds:
        for m in config.models:  # the final IMP state (masks, rewind point, trained ticket) of each model and seed
            prune.save_state(Path(config.out_dir) / "imp_state" / f"{m}-seed{seed}.npz", states[seed][m],
                             imps[seed][m][2])
    res = Results(config, config.resolved, st.rows, time.perf_counter() - t0,
                  st.scorer.note if st.scorer else "", cells_report=st.store.report())
    res.verdicts = verdicts(res)
    return res


# -- analysis --------------------------------------------------------------------------------
def _by(results: Results) -> dict[tuple, dict]:
    return {(x["model"], x["round"], x["arm"], x["seed"]): x for x in results.rows}


def ratios(results: Results, model: str, r: int, arm: str) -> list[float]:
    """Per seed: quality(model, r, arm) / quality(model, dense); NaN for diverged runs."""
    q = results.config.quality_key
    by = _by(results)
    out = []
    for s in sorted({x["seed"] for x in results.rows}):
        d, a = by.get((model, 0, "ticket", s)), by.get((model, r, arm, s))
        if d is None or a is None:
            continue
        dv, av = d.get(q, float("nan")), a.get(q, float("nan"))
        out.append(float(av) / float(dv) if np.isfinite(dv) and np.isfinite(av) and dv > 0 else float("nan"))
    return out


def dense_untrained(results: Results, model: str) -> list[int]:
    """Seeds whose dense run did not improve its quality by the pinned factor over initialization."""
    q, cfg = results.config.quality_key, results.config
    out = []
    for x in results.rows:
        if x["model"] == model and x["round"] == 0 and x["arm"] == "ticket":
            a, b = x.get(q, float("nan")), x.get(f"init_{q}", float("nan"))
            if not (np.isfinite(a) and np.isfinite(b) and a <= (1.0 - cfg.min_improvement) * b):
                out.append(x["seed"])
    return out


def within_margin(results: Results, model: str, r: int, arm: str) -> dict[str, Any]:
    """Claim: at round r, the arm's quality is within the margin of the dense network's."""
    cfg = results.config
    rs = ratios(results, model, r, arm)
    ok = [v for v in rs if np.isfinite(v)]
    problem = None if len(ok) >= 3 else f"only {len(ok)} seeds with finite scores (need 3)"
    if len(ok) < len(rs) and not problem:
        problem = f"{len(rs) - len(ok)} of {len(rs)} runs diverged"
    untrained = dense_untrained(results, model)
    if untrained and not problem:
        problem = (f"the dense {model} is far from trained at seeds {untrained} ({cfg.quality_key} not below "
                   f"{1 - cfg.min_improvement:g} x its value at init)")
    lo, hi = claims.bootstrap_mean(ok, n_boot=cfg.n_boot, seed=1000 * r + zlib.crc32((model + arm).encode()) % 997,
                                   level=cfg.ci) if len(ok) >= 3 else (float("nan"), float("nan"))
    sp = [x["sparsity"] for x in results.rows if x["model"] == model and x["round"] == r and x["arm"] == arm]
    v = claims.verdict(f"{model}_{arm}_round{r}_within_margin",
                       f"{model} {arm} at sparsity {np.mean(sp):.3f} trains to within {cfg.margin:.0%} of the dense "
                       f"network's {cfg.quality_key}",
                       f"mean over seeds of {cfg.quality_key}(arm) / {cfg.quality_key}(dense)",
                       float(np.mean(ok)) if ok else float("nan"), (lo, hi), f"{cfg.ci:.0%} percentile bootstrap",
                       1.0 + cfg.margin, "below", {"n": len(ok), "seeds": len(rs)}, problem=problem,
                       threshold_source="sims/lottery.toml: margin")
    return {"model": model, "round": r, "arm": arm, "sparsity": float(np.mean(sp)) if sp else float("nan"),
            "mean_ratio": v.value, "lo": lo, "hi": hi, "outcome": v.outcome, "claim": v.to_json()}


def beats_random(results: Results, model: str, r: int, arm: str) -> dict[str, Any]:
    """Claim: the arm trains to better quality than the random mask at the same round and counts,
    paired by seed: mean of ratio_random − ratio_arm, interval above 0."""
    cfg = results.config
    a, b = np.asarray(ratios(results, model, r, "random")), np.asarray(ratios(results, model, r, arm))
    ok = np.isfinite(a) & np.isfinite(b)
    problem = None if ok.sum() >= 3 else f"only {int(ok.sum())} seeds with both arms scored (need 3)"
    untrained = dense_untrained(results, model)
    if untrained and not problem:
        problem = f"the dense {model} is far from trained at seeds {untrained}"
    lo, hi = (claims.bootstrap_paired_difference(a[ok], b[ok], n_boot=cfg.n_boot, seed=7 + 1000 * r, level=cfg.ci)
              if not problem else (float("nan"), float("nan")))
    v = claims.verdict(f"{model}_{arm}_round{r}_beats_random", f"{model} {arm} at round {r} trains to a better "
                       f"{cfg.quality_key} than a random mask with the same layer counts",
                       "mean over seeds of ratio(random) - ratio(arm)", float(np.mean(a[ok] - b[ok])) if ok.any()
                       else float("nan"), (lo, hi), f"{cfg.ci:.0%} paired percentile bootstrap", 0.0, "above",
                       {"n": int(ok.sum())}, problem=problem, threshold_source="sims/lottery.toml (threshold 0)")
    return {"model": model, "round": r, "arm": arm, "mean_diff": v.value, "lo": lo, "hi": hi, "outcome": v.outcome,
            "claim": v.to_json()}


def per_round(results: Results) -> list[dict[str, Any]]:
    """One row per (model, round, arm): means over seeds, the quality ratio and its verdict."""
    cfg = results.config
    q = cfg.quality_key
    out = []
    keys = sorted({(x["model"], x["round"], x["arm"]) for x in results.rows},
                  key=lambda t: (MODELS.index(t[0]), t[1], t[2]))
    for model, r, arm in keys:
        rs = [x for x in results.rows if (x["model"], x["round"], x["arm"]) == (model, r, arm)]
        ok = [x for x in rs if not x.get("diverged")]
        mean = lambda key: common.finite_mean(x.get(key, float("nan")) for x in ok)  # noqa: E731
        row = {"model": model, "round": r, "arm": arm, "sparsity": float(np.mean([x["sparsity"] for x in rs])),
               "seeds": len(rs), "diverged": len(rs) - len(ok), q: mean(q)}
        for key in (f"fd_{cfg.data}_classifier_train", "pixel_overfitting_avg", "pixel_mode_drop_avg",
                    "classes_covered"):
            if any(key in x for x in ok):
                row[key] = mean(key)
        if r > 0:
            w = within_margin(results, model, r, arm)
            row.update(ratio=w["mean_ratio"], ratio_lo=w["lo"], ratio_hi=w["hi"], within_margin=w["outcome"])
        else:
            row.update(ratio=1.0, ratio_lo=1.0, ratio_hi=1.0, within_margin="dense")
        eb = [x["eb_epoch"] for x in rs if x.get("eb_epoch") is not None]
        row["eb_fired"] = len(eb)
        row["eb_epoch_median"] = float(np.median(eb)) if eb else float("nan")
        out.append(row)
    return out


def highest_sparsity(table: list[dict[str, Any]], model: str, arm: str) -> dict[str, Any]:
    """Highest round whose mean ratio is <= 1 + margin (point), and whose verdict is supported."""
    rows = [t for t in table if t["model"] == model and t["arm"] == arm and t["round"] > 0]
    return {"model": model, "arm": arm,
            "point": max([t["sparsity"] for t in rows if np.isfinite(t["ratio"]) and t["within_point"]], default=0.0),
            "supported": max([t["sparsity"] for t in rows if t["within_margin"] == "supported"], default=0.0)}


def early_bird_table(results: Results) -> list[dict[str, Any]]:
    """Per seed: fire epoch per round of the early-bird chain, and the search cost saved."""
    cfg, R = results.config, results.resolved["rounds"]
    E, k = results.resolved["epochs"], cfg.rewind_epoch
    by = _by(results)
    out = []
    for s in sorted({x["seed"] for x in results.rows}):
        fires, used, full = [], 0, 0
        for r in range(R):  # the runs whose weights give the masks of rounds 1..R
            x = by.get(("gan", 0, "ticket", s)) if r == 0 else by.get(("gan", r, "early_bird", s))
            if x is None:
                continue
            n = E if r == 0 else E - k
            fires.append(x.get("eb_epoch"))
            used += x["eb_epoch"] if x.get("eb_epoch") is not None else n
            full += n
        out.append({"seed": s, "fire_epochs": fires, "epochs_used": used, "epochs_full": full,
                    "cost_saved": 1.0 - used / full if full else float("nan")})
    return out


def transfer_table(results: Results, table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for target, arm in (("vae", "from_gan"), ("gan", "from_vae")):
        for t in table:
            if t["model"] != target or t["arm"] != arm:
                continue
            own = next((u for u in table if u["model"] == target and u["round"] == t["round"] and u["arm"] == "ticket"),
                       {})
            rnd = next((u for u in table if u["model"] == target and u["round"] == t["round"] and u["arm"] == "random"),
                       {})
            out.append({"direction": f"{'gan->vae' if target == 'vae' else 'vae->gan'}", "round": t["round"],
                        "sparsity": t["sparsity"], "ratio_transfer": t["ratio"], "lo": t["ratio_lo"],
                        "hi": t["ratio_hi"], "ratio_own_ticket": own.get("ratio", float("nan")),
                        "ratio_random": rnd.get("ratio", float("nan")), "transfers": t["within_margin"]})
    return out


def verdicts(results: Results) -> dict[str, Any]:
    cfg = results.config
    table = per_round(results)
    for t in table:
        t["within_point"] = bool(np.isfinite(t["ratio"]) and t["ratio"] <= 1.0 + cfg.margin)
    models = sorted({t["model"] for t in table}, key=MODELS.index)
    highest = [highest_sparsity(table, m, a) for m in models
               for a in sorted({t["arm"] for t in table if t["model"] == m and t["round"] > 0})]
    claims_out = [t_ for t_ in (within_margin(results, t["model"], t["round"], t["arm"]) for t in table
                                if t["round"] > 0)]
    vs_random = [beats_random(results, t["model"], t["round"], t["arm"]) for t in table
                 if t["round"] > 0 and t["arm"] in ("ticket", "from_gan", "from_vae", "early_bird")
                 and any(u["model"] == t["model"] and u["round"] == t["round"] and u["arm"] == "random" for u in table)]
    eb = early_bird_table(results) if cfg.early_bird else []
    tr = transfer_table(results, table) if cfg.transfer else []
    return {"per_round": table, "highest_sparsity": highest,
            "claims": [c["claim"] for c in claims_out] + [c["claim"] for c in vs_random], "beats_random": vs_random,
            "early_bird": eb,
            "early_bird_cost_saved_mean": common.finite_mean(x["cost_saved"] for x in eb) if eb else float("nan"),
            "transfer": tr, "margin": cfg.margin, "quality": cfg.quality_key,
            "dense_untrained": {m: dense_untrained(results, m) for m in models},
            "max_sparsity": cfg.imp.target_sparsity(results.resolved["rounds"])}


def summary(results: Results) -> str:
    cfg, r = results.config, results.resolved
    v = results.verdicts
    q = cfg.quality_key
    cols = ["model", "round", "arm", "sparsity", q, f"fd_{cfg.data}_classifier_train", "pixel_overfitting_avg",
            "pixel_mode_drop_avg", "classes_covered", "ratio", "ratio_lo", "ratio_hi", "within_margin",
            "eb_epoch_median"]
    cols = [c for c in cols if any(c in t for t in v["per_round"])]
    lines = [
        f"lottery tickets (conv): {cfg.data} {r['resolution']}x{r['resolution']}, n_train={r['n_train']}, "
        f"held-out={r['n_heldout']}, {cfg.arch} width {r['width']:g}, latent {r['latent_dim']}, batch "
        f"{r['batch_size']}, {r['epochs']} epochs, Adam({cfg.lr:g}, {cfg.b1:g}, {cfg.b2:g}); IMP p={cfg.prune_fraction} "
        f"x {r['rounds']} rounds (max sparsity {v['max_sparsity']:.3f}), {cfg.scope}, rewind to epoch "
        f"{cfg.rewind_epoch}; {cfg.seeds} seeds ({results.seconds:.0f} s; {results.cells_report})",
        f"quality = {q} ({results.score_note}); ratio = quality / dense quality (same seed); margin "
        f"{cfg.margin} (sims/lottery.toml); {cfg.ci:.0%} bootstrap over seeds",
        common.format_table(v["per_round"], cols, ".3g"), ""]
    for m, bad in v["dense_untrained"].items():
        if bad:
            lines.append(f"WARNING: the dense {m} is far from trained at seeds {bad}: its verdicts are inconclusive")
    for h in v["highest_sparsity"]:
        lines.append(f"HIGHEST SPARSITY within {cfg.margin:.0%} of dense: {h['model']} {h['arm']}: point estimate "
                     f"{h['point']:.3f}, interval-supported {h['supported']:.3f}")
    if v["beats_random"]:
        lines.append("")
        lines.append(common.format_table(v["beats_random"], ["model", "round", "arm", "mean_diff", "lo", "hi",
                                                             "outcome"], ".3g"))
        lines.append("BEATS RANDOM: mean_diff = ratio(random) - ratio(arm), paired by seed; 'supported' = interval "
                     "above 0")
    if v["early_bird"]:
        lines.append("")
        lines.append(common.format_table(v["early_bird"], ["seed", "fire_epochs", "epochs_used", "epochs_full",
                                                           "cost_saved"], ".3g"))
        lines.append(f"EARLY BIRD: mean search cost saved {v['early_bird_cost_saved_mean']:.3f} (epochs to the "
                     "round-R mask, vs full IMP rounds; FLOPs of masked dense convs are not reduced here)")
    if v["transfer"]:
        lines.append("")
        lines.append(common.format_table(v["transfer"], ["direction", "round", "sparsity", "ratio_transfer", "lo",
                                                         "hi", "ratio_own_ticket", "ratio_random", "transfers"], ".3g"))
        lines.append("TRANSFER: 'supported' = the transferred ticket trains to within the margin of the target's "
                     "dense network (interval below 1 + margin)")
    return "\n".join(lines)


def plot(results: Results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = results.verdicts
    table = v["per_round"]
    models = sorted({t["model"] for t in table}, key=MODELS.index)
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(4.6 * (len(models) + 1), 3.8))
    marks = {"ticket": "o-", "random": "s--", "reinit": "^:", "early_bird": "D-", "from_gan": "v-", "from_vae": "v-"}
    for ax, m in zip(axes, models):
        arms = sorted({t["arm"] for t in table if t["model"] == m and t["round"] > 0})
        for i, arm in enumerate(arms):
            rows = [t for t in table if t["model"] == m and (t["arm"] == arm or t["round"] == 0)]
            rows = sorted(rows, key=lambda t: t["round"])
            x = [100 * (1 - t["sparsity"]) for t in rows]
            y = [t["ratio"] for t in rows]
            lo = [t["ratio"] - t["ratio_lo"] for t in rows]
            hi = [t["ratio_hi"] - t["ratio"] for t in rows]
            ax.errorbar(x, y, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt=marks.get(arm, "o-"), ms=4,
                        capsize=2, label=arm, color=f"C{i}")
        ax.axhline(1 + results.config.margin, color="k", ls=":", lw=1, label="1 + margin")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set(xlabel="weights remaining in G / decoder (%)", ylabel="quality / dense (lower is better)",
               title=f"{m}: {results.config.quality_key}")
        ax.legend(fontsize=7)
    ax = axes[-1]
    eb = v["early_bird"]
    if eb:
        E, k = results.resolved["epochs"], results.config.rewind_epoch
        for i, row in enumerate(eb):
            full = [E if r == 0 else E - k for r in range(len(row["fire_epochs"]))]
            used = [f if e is None else e for e, f in zip(row["fire_epochs"], full)]
            ax.plot(range(len(used)), used, "-", color=f"C{i}", label=f"seed {row['seed']}")
            for r, e in enumerate(row["fire_epochs"]):
                ax.plot(r, used[r], "o" if e is not None else "x", color=f"C{i}", ms=6)
        ax.axhline(E, color="k", ls=":", lw=1, label="full run (x: never fired)")
        ax.set(xlabel="round (mask found for round + 1)", ylabel="epochs to the mask (fire epoch)",
               title=f"early bird: search cost saved {v['early_bird_cost_saved_mean']:.0%}")
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    v = results.verdicts
    paths = [
        common.write_csv(out / "runs.csv", results.rows),
        common.write_csv(out / "per_round.csv", v["per_round"]),
        common.write_json(out / "results.json", {"resolved": results.resolved, "verdicts": v, "rows": results.rows,
                                                 "score": results.score_note, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, resolved=results.resolved,
                                                                 seconds=results.seconds)),
    ]
    if v["transfer"]:
        paths.append(common.write_csv(out / "transfer.csv", v["transfer"]))
    if v["early_bird"]:
        paths.append(common.write_csv(out / "early_bird.csv", [{**x, "fire_epochs": ",".join(
            "none" if e is None else str(e) for e in x["fire_epochs"])} for x in v["early_bird"]]))
    fig = plot(results)
    paths += common.save_figure(fig, out / "lottery")
    return paths
