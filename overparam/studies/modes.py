"""Multimodal nSGDA-vs-SGDA study: does normalized SGDA recover every mode where SGDA collapses?

Claim checked (Jelassi et al., "Dissecting adaptive methods in GANs"): SGDA collapses to
few modes *for every* step-size pair (η_G, η_D), while normalized SGDA recovers all modes.
The games are our construction (overparam.games.multimodal; the paper's exact setting is
not published): ``neurons`` (K orthonormal modes α_j u_j in R^d, a generator of m vectors,
a discriminator of m_D cubic neurons, exact expectations by default; the default family,
pinned with m = m_D = K so that no optimizer has spare neurons), ``ring`` (8 Gaussians) and
``grid`` (25 Gaussians) with MLP players on minibatches.

Protocol (pre-registered; grids, seeds and thresholds pinned in ``sims/modes_neurons.toml``
and ``sims/modes.toml`` before the runs):

1. **One grid per optimizer**: SGDA (and other plain-gradient optimizers) on a wide log grid
   of (η_G, η_D) (``sgd_lrs``); nSGDA on a grid in units of the smallest mode's scale
   (``nsgd_units`` × α_min for neurons, × std for ring/grid), since its step has a fixed
   length; the Adam-based arms on ``adam_lrs``. Adam's b1, b2 (``adam_b1``, ``adam_b2``;
   GAN setting 0.5, 0.999) apply to every Adam-based arm (adam, ada_nsgda, sgda_ada).
2. **Recovery**: a mode counts only when it is recovered (overparam.metrics.modes) at both
   ``late_fraction`` · T and T; a run recovers "all modes" when it recovers all K.
3. **Divergence**: a run diverged once a recorded value is non-finite or its scale exceeds
   ``blowup`` × the data's scale (neurons: max_k ‖v_k‖ / α_max; ring/grid: the mean
   ‖G(z)‖ over the evaluation latents / the largest centre norm). A diverged run recovers
   no mode (it counts as a failure in every share) and is left out of the descriptive
   median of modes, with the number of runs used printed.
4. **Tuning**: every cell of an optimizer's grid on ``tuning_seeds`` seeds (0 …); the chosen
   cell maximizes the share of runs with all modes (ties: more modes on average, then the
   first cell in grid order).
5. **Evaluation**: the chosen cell on ``heldout_seeds`` seeds (``heldout_offset`` …,
   disjoint from the tuning seeds): the share of runs with all K modes and its Wilson 95 %
   interval.
6. **Verdicts** (overparam.claims), decided separately:
   * "nSGDA recovers all modes" (per normalization granularity): held-out share's Wilson
     interval above ``nsgd_share_min``;
   * "SGDA collapses at its best step size": held-out share's interval below ``sgd_share_max``;
   * "SGDA collapses for every step size": SGDA's grid-wide maximum share on the tuning
     seeds (a bound that favours SGDA), Wilson interval of that cell, below ``sgd_share_max``.
   Medians of modes and the share of cells with all modes are descriptive only.

Every (optimizer, phase) grid is one jit(vmap(vmap(scan))) call: η is a vmapped
hyperparameter (``optax.inject_hyperparams``), so there is no Python loop over cells or steps.
Writes cells.csv, recovery_over_training.csv, results.json (per optimizer ``tuning_seeds``,
``heldout_seeds``, the chosen cell, ``all_modes_share``, ``ci_low``, ``ci_high``; and
``verdicts``), manifest.json, heatmap_<optimizer>.png/.pdf, recovery_over_training.png/.pdf.
Cost: see docs/modes.md (the default neurons run takes a few minutes on 2 CPU cores)."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam import claims, executors, optim
from overparam.dynamics import Scheme, init_state, make_step, run as run_dynamics
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.games.multimodal import Mixture2D, Mixture2DSpec, Neurons, NeuronsSpec
from overparam.metrics.modes import mixture_coverage, neuron_modes
from overparam.studies import common
from overparam.studies.config import check_types, help_meta as _h

NAME = "modes"
DESCRIPTION = __doc__

FAMILIES = ("neurons", "ring", "grid")
DEFAULT_OPTIMIZERS = ("sgd", "nsgd_global", "nsgd_tensor", "adam", "ada_nsgda", "sgda_ada")
NSGDA = ("nsgd_global", "nsgd_tensor", "nsgd")
ADAM_BASED = ("adam", "ada_nsgda", "sgda_ada")
N_EVAL = 2000            # generator samples per coverage measurement (ring / grid)
DEFAULT_FAMILY = "neurons"
# Family defaults (pinned in sims/modes_neurons.toml and sims/modes.toml before the runs).
# neurons: nSGDA's smallest step is 0.003 α_min = 1.2e-3, so T = 10,000 steps let it travel
# 12 (α_max = 1) -- several passes over the modes.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "neurons": {"steps": 10000, "tuning_seeds": 16, "heldout_seeds": 40,
                "sgd_lrs": (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0),
                "nsgd_units": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
                "adam_lrs": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)},
    "ring": {"steps": 3000, "tuning_seeds": 4, "heldout_seeds": 30,
             "sgd_lrs": (1e-4, 1e-3, 1e-2, 0.1, 1.0),
             "nsgd_units": (0.05, 0.2, 1.0, 5.0),
             "adam_lrs": (1e-4, 3e-4, 1e-3, 3e-3)},
    "grid": {"steps": 3000, "tuning_seeds": 4, "heldout_seeds": 30,
             "sgd_lrs": (1e-4, 1e-3, 1e-2, 0.1, 1.0),
             "nsgd_units": (0.05, 0.2, 1.0, 5.0),
             "adam_lrs": (1e-4, 3e-4, 1e-3, 3e-3)},
}


def grid_kind(name: str) -> str:
    """Which pinned grid an optimizer uses: ``nsgd`` (normalized), ``adam`` (Adam-based) or ``sgd``."""
    if name in NSGDA:
        return "nsgd"
    if name in ADAM_BASED or name == "rmsprop":
        return "adam"
    return "sgd"


@dataclass(frozen=True)
class Config:
    """Mode-recovery protocol configuration; ``None`` fields take the family's default."""

    family: str = field(default=DEFAULT_FAMILY, metadata=_h("neurons, ring or grid (default neurons)"))
    optimizers: tuple[str, ...] = field(default=DEFAULT_OPTIMIZERS, metadata=_h(
        "optimizers of both players (overparam.optim names); nsgd_global / nsgd_tensor make the "
        "normalization granularity explicit"))
    sgd_lrs: tuple[float, ...] | None = field(default=None, metadata=_h(
        "SGDA's step sizes (both axes of its grid; also momentum/ogd); none: the family's pinned grid"))
    nsgd_units: tuple[float, ...] | None = field(default=None, metadata=_h(
        "nSGDA's step sizes in units of the smallest mode scale (alpha_min, or std for ring/grid)"))
    adam_lrs: tuple[float, ...] | None = field(default=None, metadata=_h(
        "step sizes of the Adam-based arms (adam, ada_nsgda, sgda_ada)"))
    n_lr: int | None = field(default=None, metadata=_h(
        "none: the grids as given; else n_lr log-spaced points between each grid's ends (quick runs)"))
    tuning_seeds: int | None = field(default=None, metadata=_h("tuning seeds 0..N-1 per cell (none: family default)"))
    heldout_seeds: int | None = field(default=None, metadata=_h("held-out seeds at the chosen cell (none: family default)"))
    heldout_offset: int = field(default=1000, metadata=_h("first held-out seed (must exceed the tuning seeds)"))
    steps: int | None = field(default=None, metadata=_h("training steps T (none: family default)"))
    record_every: int = field(default=100, metadata=_h("record per-mode recovery every this many steps"))
    late_fraction: float = field(default=0.8, metadata=_h(
        "a mode counts only when recovered at both late_fraction*T and T"))
    adam_b1: float = field(default=0.5, metadata=_h("Adam b1 of every Adam-based arm (GAN setting 0.5)"))
    adam_b2: float = field(default=0.999, metadata=_h("Adam b2 of every Adam-based arm"))
    scheme: str = field(default="simultaneous", metadata=_h("simultaneous or alternating (D first)"))
    gradients: str = field(default="auto", metadata=_h(
        "exact (expectations; neurons only), minibatch, or auto (neurons exact, ring/grid minibatch)"))
    batch_size: int = field(default=128, metadata=_h("minibatch size (minibatch gradients)"))
    data_seed: int = field(default=7, metadata=_h("seed of the data (mode directions) and evaluation latents"))
    k: int = field(default=3, metadata=_h("neurons: number of modes K"))
    d: int = field(default=50, metadata=_h("neurons: dimension d"))
    alphas: tuple[float, ...] = field(default=(1.0, 0.6, 0.4), metadata=_h("neurons: mode scales α_j"))
    probs: tuple[float, ...] | None = field(default=None, metadata=_h("neurons: mode probabilities (none: uniform)"))
    m: int = field(default=3, metadata=_h("neurons: generator vectors m (pinned = K)"))
    m_disc: int = field(default=3, metadata=_h("neurons: discriminator neurons m_D (pinned = K)"))
    sigma: str = field(default="cubic", metadata=_h("neurons: discriminator activation cubic, cubic_linear or relu"))
    init_scale: float = field(default=0.1, metadata=_h("neurons: initialization scale s, N(0, s²/d)"))
    noise: float = field(default=0.0, metadata=_h("neurons: data noise std (minibatch gradients only)"))
    latent_dim: int = field(default=2, metadata=_h("ring/grid: Gaussian latent dimension"))
    hidden: int = field(default=64, metadata=_h("ring/grid: width of the two hidden layers"))
    std: float = field(default=0.02, metadata=_h("ring/grid: std of each Gaussian"))
    blowup: float = field(default=10.0, metadata=_h(
        "divergence bound: a run diverged once its scale exceeds blowup x the data's scale (or is non-finite)"))
    nsgd_share_min: float = field(default=0.8, metadata=_h(
        "verdict: nSGDA's held-out all-modes share must be above this (Wilson interval)"))
    sgd_share_max: float = field(default=0.2, metadata=_h(
        "verdict: SGDA's all-modes share (held-out at its best cell; grid maximum on tuning seeds) must be below this"))
    out_dir: str = field(default="results/modes", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        check_types(self)
        one_of("family", self.family, FAMILIES)
        require(len(self.optimizers) > 0, "optimizers is empty; give e.g. --optimizers sgd,nsgd_global")
        require(len(set(self.optimizers)) == len(self.optimizers), f"optimizers lists a name twice: {self.optimizers}")
        for name in self.optimizers:
            one_of("optimizer", name, optim.OPTIMIZERS)
        positive_int("record_every", self.record_every)
        one_of("scheme", self.scheme, ("simultaneous", "alternating"))
        one_of("gradients", self.gradients, ("auto", "exact", "minibatch"))
        positive_int("batch_size", self.batch_size)
        if self.gradients == "exact" and self.family != "neurons":
            raise ConfigError(f"exact expectations exist only for the neurons family; use --gradients minibatch "
                              f"for {self.family}")
        r = self.resolved
        for key in ("sgd_lrs", "nsgd_units", "adam_lrs"):
            require(len(r[key]) > 0, f"{key} is empty; give at least one step size")
            for v in r[key]:
                finite_positive(f"every entry of {key}", v)
            require(len(set(r[key])) == len(r[key]), f"{key} lists a step size twice: {r[key]}")
        if self.n_lr is not None:
            positive_int("n_lr", self.n_lr)
        positive_int("tuning_seeds", r["tuning_seeds"])
        positive_int("heldout_seeds", r["heldout_seeds"])
        if isinstance(self.heldout_offset, bool) or not isinstance(self.heldout_offset, int):
            raise ConfigError(f"heldout_offset must be an integer, got {self.heldout_offset!r}")
        require(self.heldout_offset >= r["tuning_seeds"],
                f"heldout_offset ({self.heldout_offset}) must be >= tuning_seeds ({r['tuning_seeds']}) so the "
                "held-out seeds are disjoint from the tuning seeds")
        claims.check_disjoint(self.tuning, self.heldout)
        positive_int("steps", r["steps"])
        if r["steps"] % self.record_every:
            raise ConfigError(f"steps ({r['steps']}) must be a multiple of record_every ({self.record_every})")
        lf = finite_positive("late_fraction", self.late_fraction)
        require(lf <= 1.0, f"late_fraction must be in (0, 1], got {lf}")
        require(self.late_step > 0,
                f"late_fraction * steps ({lf * r['steps']:g}) falls before the first record after the start "
                f"(record_every {self.record_every}); raise steps or lower record_every")
        for name in ("adam_b1", "adam_b2"):
            v = finite_positive(name, getattr(self, name), allow_zero=True)
            require(v < 1.0, f"{name} must be in [0, 1), got {v}")
        b = finite_positive("blowup", self.blowup)
        require(b > 1.0, f"blowup must exceed 1 (a multiple of the data's scale), got {b}")
        for name in ("nsgd_share_min", "sgd_share_max"):
            v = finite_positive(name, getattr(self, name))
            require(v < 1.0, f"{name} is a share threshold in (0, 1), got {v}")
        self.neurons_spec, self.mixture_spec  # validate both families' options, whichever runs

    @property
    def resolved(self) -> dict[str, Any]:
        """steps, seeds and grids with the family defaults filled in (``seeds`` = tuning seeds)."""
        base = FAMILY_DEFAULTS[self.family]
        out = {key: base[key] if getattr(self, key) is None else getattr(self, key) for key in base}
        out["seeds"] = out["tuning_seeds"]
        return out

    @property
    def exact(self) -> bool:
        return self.family == "neurons" and self.gradients in ("auto", "exact")

    @property
    def neurons_spec(self) -> NeuronsSpec:
        return NeuronsSpec(k=self.k, d=self.d, alphas=self.alphas, probs=self.probs, m=self.m,
                           m_disc=self.m_disc, sigma=self.sigma, init_scale=self.init_scale,
                           noise=self.noise, batch_size=None if self.exact else self.batch_size)

    @property
    def mixture_spec(self) -> Mixture2DSpec:
        layout = self.family if self.family in ("ring", "grid") else "ring"
        return Mixture2DSpec(layout=layout, std=self.std, latent_dim=self.latent_dim, hidden=self.hidden,
                             batch_size=self.batch_size)

    @property
    def game_spec(self) -> NeuronsSpec | Mixture2DSpec:
        return self.neurons_spec if self.family == "neurons" else self.mixture_spec

    @property
    def mode_scale(self) -> float:
        """The smallest mode's scale: α_min (neurons) or the Gaussians' std (ring / grid)."""
        return float(min(self.alphas)) if self.family == "neurons" else float(self.std)

    def lrs_for(self, name: str) -> np.ndarray:
        """The (sorted) step sizes of optimizer ``name``'s grid, both axes."""
        r = self.resolved
        kind = grid_kind(name)
        lrs = np.sort(np.asarray(r["nsgd_units"], float) * self.mode_scale if kind == "nsgd"
                      else np.asarray(r[f"{kind}_lrs"], float))
        if self.n_lr is not None:
            lrs = np.logspace(np.log10(lrs[0]), np.log10(lrs[-1]), self.n_lr) if self.n_lr > 1 else lrs[:1]
        return lrs

    @property
    def lrs(self) -> np.ndarray:
        """The grid of the first optimizer (a benchmark runs one optimizer per config)."""
        return self.lrs_for(self.optimizers[0])

    def options_for(self, name: str) -> dict[str, float]:
        """Optimizer options: Adam's b1, b2 for every Adam-based arm, none otherwise."""
        return {"b1": self.adam_b1, "b2": self.adam_b2} if name in ADAM_BASED else {}

    @property
    def tuning(self) -> tuple[int, ...]:
        return tuple(range(self.resolved["tuning_seeds"]))

    @property
    def heldout(self) -> tuple[int, ...]:
        return tuple(range(self.heldout_offset, self.heldout_offset + self.resolved["heldout_seeds"]))

    @property
    def late_step(self) -> int:
        """The last recorded step at or before late_fraction · T (exactly 0.8 T in the pinned configs)."""
        r = self.record_every
        return int(math.floor(self.late_fraction * self.resolved["steps"] / r + 1e-9)) * r

    @property
    def scheme_obj(self) -> Scheme:
        return Scheme(self.scheme, "d_first", 1)


@dataclass
class Arm:
    """One optimizer's tuning grid and held-out evaluation (arrays are numpy)."""

    lrs: np.ndarray                 # (n,) step sizes of both axes
    tune_modes: np.ndarray          # (n, n, S_t, R, M) bool, per mode and record (False once diverged)
    tune_alive: np.ndarray          # (n, n, S_t, R) bool, not diverged up to that record
    tune_quality: np.ndarray        # (n, n, S_t, R) (ring/grid; NaN for neurons)
    eval_modes: np.ndarray          # (S_e, R, M) at the chosen cell
    eval_alive: np.ndarray          # (S_e, R)
    eval_quality: np.ndarray        # (S_e, R)
    chosen: tuple[int, int]         # (i, j): η_G = lrs[i], η_D = lrs[j]
    seconds: float


@dataclass
class Results:
    config: Config
    record_steps: np.ndarray        # (R,) recorded steps
    late_index: int                 # record index of late_fraction * T
    n_modes: int
    arms: dict[str, Arm]
    table: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    protocol: dict[str, Any] = dataclasses.field(default_factory=dict)
    verdicts: list[claims.Verdict] = dataclasses.field(default_factory=list)
    cells_report: str = ""
    execution: dict[str, Any] = dataclasses.field(default_factory=dict)  # where the cells ran


# -- games and metrics --------------------------------------------------------------------------
def make_game(config: Config) -> tuple[Any, Callable[[Any], dict[str, jax.Array]], int]:
    """(game, metrics(state) -> {"modes": (M,) bool, "quality", "scale"}, number of modes M).

    ``scale`` is the divergence statistic: max_k ‖v_k‖ / α_max (neurons) or the mean ‖G(z)‖
    over the evaluation latents / the largest centre norm (ring / grid).
    """
    spec = config.game_spec
    if isinstance(spec, NeuronsSpec):
        game = Neurons.create(spec, config.data_seed)
        alphas = jnp.asarray(spec.alphas, jnp.float32)
        amax = float(max(spec.alphas))

        def metrics(s):
            v = game.generate(s.gen)
            return {"modes": neuron_modes(v, game.U, alphas),
                    "quality": jnp.asarray(jnp.nan, jnp.float32),
                    "scale": jnp.max(jnp.linalg.norm(v, axis=1)) / amax}

        return game, metrics, spec.k
    game = Mixture2D.create(spec)
    z_eval = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.data_seed), 1), (N_EVAL, spec.latent_dim))
    cmax = float(np.max(np.linalg.norm(np.asarray(game.centers), axis=1)))

    def metrics(s):
        x = game.generate(s.gen, z_eval)
        covered, quality = mixture_coverage(x, game.centers, spec.std)
        return {"modes": covered, "quality": quality, "scale": jnp.mean(jnp.linalg.norm(x, axis=1)) / cmax}

    return game, metrics, game.n_modes


def injected(name: str, lr: jax.Array | float, **options: Any) -> optax.GradientTransformation:
    """``optim`` optimizer ``name`` with its step size as an injected (traceable) hyperparameter.

    ``optax.inject_hyperparams`` rebuilds the optimizer with ``learning_rate = lr`` inside
    ``init``/``update``, so a vmapped η gives exactly the updates of ``optim.make(name, η)``
    for every optimizer (no assumption that the update is linear in η).
    """
    if name not in optim.OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(optim.OPTIMIZERS)}")
    factory = optim.OPTIMIZERS[name]
    return optax.inject_hyperparams(lambda learning_rate: factory(learning_rate, **options))(learning_rate=lr)


def grid_runner(game: Any, metrics: Callable, optimizer: str, scheme: Scheme, steps: int,
                record_every: int, options: dict[str, Any] | None = None) -> Callable:
    """jit(vmap over cells (η_G, η_D) of vmap over seed keys) of one scanned run.

    Returns ``f(lr_g (C,), lr_d (C,), keys (S, 2)) -> (gen, disc, records)`` with leading
    axes (C, S); records have a further axis of steps // record_every + 1 records. Seed s
    starts from ``game.init(k_init)``, ``k_init, k_run = split(keys[s])``, in every cell.
    """
    opts = dict(options or {})

    def one(lr_g, lr_d, key):
        opt_g, opt_d = injected(optimizer, lr_g, **opts), injected(optimizer, lr_d, **opts)
        k_init, k_run = jax.random.split(key)
        gen, disc = game.init(k_init)
        state = init_state(game, opt_g, opt_d, gen, disc, scheme, k_run)
        final, recs = run_dynamics(make_step(game, opt_g, opt_d, scheme), state, k_run, steps, record_every, metrics)
        return final.gen, final.disc, recs

    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(0, 0, None)))


@lru_cache(maxsize=16)
def _cached_runner(config: Config, optimizer: str):
    game, metrics, _ = make_game(config)
    return grid_runner(game, metrics, optimizer, config.scheme_obj, config.resolved["steps"], config.record_every,
                       config.options_for(optimizer))


def seed_keys(seeds: int | tuple[int, ...] | list[int]) -> jax.Array:
    """PRNGKey(s) for each seed s (``n`` alone means seeds 0..n-1): the same key in every cell and
    for every optimizer (common random numbers)."""
    seeds = tuple(range(seeds)) if isinstance(seeds, (int, np.integer)) else tuple(seeds)
    return jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))


def _alive(recs: dict[str, np.ndarray], blowup: float) -> np.ndarray:
    """Not diverged up to each record: finite and scale <= blowup, once failed failed for good."""
    scale = np.asarray(recs["scale"], float)
    ok = np.asarray(recs["finite"], bool) & np.isfinite(scale) & (scale <= blowup)
    return np.logical_and.accumulate(ok, axis=-1)


def run_cells(config: Config, optimizer: str, lr_g: np.ndarray, lr_d: np.ndarray,
              seeds: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Cells (lr_g[c], lr_d[c]) × seeds in one compiled call: modes (C, S, R, M), alive, quality, steps."""
    fn = _cached_runner(config, optimizer)
    _, _, recs = fn(jnp.asarray(lr_g, jnp.float32), jnp.asarray(lr_d, jnp.float32), seed_keys(seeds))
    recs = jax.device_get(recs)
    alive = _alive(recs, config.blowup)
    modes = np.asarray(recs["modes"], bool) & alive[..., None]
    quality = np.where(alive, np.asarray(recs["quality"], float), 0.0)
    if config.family == "neurons":
        quality = np.full_like(quality, np.nan)
    return {"modes": modes, "alive": alive, "quality": quality, "steps": np.asarray(recs["step"])[0, 0]}


def run_optimizer(config: Config, optimizer: str) -> dict[str, np.ndarray]:
    """The optimizer's full tuning grid (η_G, η_D) × tuning seeds in one compiled call.

    Returns ``per_mode`` (n, n, S, R, M), ``alive`` (n, n, S, R), ``quality``, ``finite``
    (n, n, S, alive at the end) and ``steps`` (R,).
    """
    lrs = config.lrs_for(optimizer)
    lg, ld = np.meshgrid(lrs, lrs, indexing="ij")
    out = run_cells(config, optimizer, lg.ravel(), ld.ravel(), config.tuning)
    n, s = len(lrs), len(config.tuning)
    return {"per_mode": out["modes"].reshape(n, n, s, *out["modes"].shape[2:]),
            "alive": out["alive"].reshape(n, n, s, -1), "quality": out["quality"].reshape(n, n, s, -1),
            "finite": out["alive"][..., -1].reshape(n, n, s), "steps": out["steps"]}


# -- protocol: recovery, cell choice -------------------------------------------------------------
def recovered(per_mode: np.ndarray, late_index: int) -> np.ndarray:
    """(..., R, M) -> (..., M): mode recovered at both the late record and the last record."""
    return per_mode[..., late_index, :] & per_mode[..., -1, :]


def all_modes(per_mode: np.ndarray, late_index: int) -> np.ndarray:
    """(..., R, M) -> (...): the run recovers every mode at both the late and the last record."""
    return recovered(per_mode, late_index).all(-1)


def choose_cell(tune_modes: np.ndarray, late_index: int) -> tuple[int, int]:
    """The tuning cell with the largest all-modes share; ties: more modes on average, then grid order."""
    share = all_modes(tune_modes, late_index).mean(-1)                    # (n, n)
    mean = recovered(tune_modes, late_index).sum(-1).mean(-1)            # (n, n)
    order = np.lexsort((-mean.ravel(), -share.ravel()))
    return tuple(int(i) for i in np.unravel_index(order[0], share.shape))  # type: ignore[return-value]


def _late_index(config: Config, record_steps: np.ndarray) -> int:
    idx = np.flatnonzero(np.asarray(record_steps) == config.late_step)
    require(idx.size == 1, f"late step {config.late_step} is not a recorded step")
    return int(idx[0])


# -- the study -----------------------------------------------------------------------------------
def cells(config: Config) -> list[str]:
    """The study's cells in their fixed order: one per optimizer arm (its tuning grid and its
    held-out evaluation, which depends on the cell the tuning chose)."""
    return [f"arm_{name}" for name in config.optimizers]


def compute_cell(config: Config, name: str) -> dict[str, Any]:
    """One arm on its own: tune on the pinned grid and tuning seeds, choose the cell
    (:func:`choose_cell`), evaluate it on the held-out seeds. What a worker runs."""
    arm = name[len("arm_"):] if name.startswith("arm_") else None
    if arm not in config.optimizers:
        raise ConfigError(f"unknown modes cell {name!r}; cells of this config: {', '.join(cells(config))}")
    lrs = config.lrs_for(arm)
    t0 = time.perf_counter()
    out = run_optimizer(config, arm)
    tune = {"modes": out["per_mode"].astype(np.int8), "alive": out["alive"], "quality": out["quality"],
            "steps": out["steps"], "seconds": time.perf_counter() - t0}
    i, j = choose_cell(np.asarray(tune["modes"], bool), _late_index(config, np.asarray(out["steps"], int)))
    t1 = time.perf_counter()
    ev = run_cells(config, arm, np.array([lrs[i]]), np.array([lrs[j]]), config.heldout)
    heldout = {"modes": ev["modes"][0].astype(np.int8), "alive": ev["alive"][0], "quality": ev["quality"][0],
               "chosen": [int(i), int(j)], "seconds": time.perf_counter() - t1}
    return {"tune": tune, "heldout": heldout}


def run(config: Config = Config(), progress: bool = True, executor: str = "inline", workers: int | None = None,
        scheduler: str | None = None, resources: str | None = None) -> Results:
    """Tune every optimizer on its grid, evaluate its chosen cell on held-out seeds (resumable:
    one content-keyed cell per arm). ``executor``/``workers``/``scheduler``/``resources``: where
    the missing arms run (:func:`overparam.executors.run_cells`); they never change a number."""
    common.check_out_dir(config.out_dir)
    store = common.CellStore(config.out_dir, config)
    done = executors.run_cells(__name__, config, store, executor=executor, workers=workers, scheduler=scheduler,
                               progress=progress, resources=resources)
    arms: dict[str, Arm] = {}
    steps = None
    for name in config.optimizers:
        tune, ev = done[f"arm_{name}"]["tune"], done[f"arm_{name}"]["heldout"]
        steps = np.asarray(tune["steps"], int)
        arms[name] = Arm(config.lrs_for(name), np.asarray(tune["modes"], bool), np.asarray(tune["alive"], bool),
                         np.asarray(tune["quality"], float), np.asarray(ev["modes"], bool),
                         np.asarray(ev["alive"], bool), np.asarray(ev["quality"], float), tuple(ev["chosen"]),
                         float(tune["seconds"]) + float(ev["seconds"]))
    n_modes = next(iter(arms.values())).tune_modes.shape[-1]
    res = Results(config, steps, _late_index(config, steps), n_modes, arms)
    analyse(res)
    res.cells_report = done.report
    res.execution = done.info
    return res


# -- analysis ------------------------------------------------------------------------------------
def arm_summary(results: Results, name: str) -> dict[str, Any]:
    """The protocol's numbers for one optimizer (the results.json entry)."""
    cfg, arm, late = results.config, results.arms[name], results.late_index
    i, j = arm.chosen
    tune_all = all_modes(arm.tune_modes, late)                       # (n, n, S_t)
    share = tune_all.mean(-1)
    ev_all = all_modes(arm.eval_modes, late)                         # (S_e,)
    k, n = int(ev_all.sum()), int(ev_all.size)
    lo, hi = claims.wilson(k, n)
    gi, gj = np.unravel_index(int(np.argmax(share)), share.shape)
    g_k = int(tune_all[gi, gj].sum())
    g_lo, g_hi = claims.wilson(g_k, tune_all.shape[-1])
    alive_t = arm.tune_alive[..., -1]
    rec_t = recovered(arm.tune_modes, late).sum(-1).astype(float)   # (n, n, S_t)
    used = rec_t[alive_t]
    return {
        "optimizer": name, "grid": grid_kind(name), "lrs": arm.lrs.tolist(),
        "options": cfg.options_for(name),
        "tuning_seeds": list(cfg.tuning), "heldout_seeds": list(cfg.heldout),
        "chosen_cell": {"i": i, "j": j, "lr_g": float(arm.lrs[i]), "lr_d": float(arm.lrs[j]),
                        "lr_g_units": float(arm.lrs[i] / cfg.mode_scale), "lr_d_units": float(arm.lrs[j] / cfg.mode_scale)},
        "tuning_share_chosen": float(share[i, j]),
        # the chosen cell on the grid's boundary: a larger or smaller step might do better
        "chosen_at_edge": bool(len(arm.lrs) > 1 and (i in (0, len(arm.lrs) - 1) or j in (0, len(arm.lrs) - 1))),
        "all_modes_share": k / n, "all_modes_runs": k, "heldout_n": n, "ci_low": lo, "ci_high": hi,
        "heldout_mean_modes": float(recovered(arm.eval_modes, late).sum(-1).mean()),
        "heldout_diverged": int((~arm.eval_alive[:, -1]).sum()),
        "grid_max_share_tuning": float(share[gi, gj]), "grid_max_cell": {"lr_g": float(arm.lrs[gi]), "lr_d": float(arm.lrs[gj])},
        "grid_max_runs": g_k, "grid_max_ci_low": g_lo, "grid_max_ci_high": g_hi,
        # descriptive only (band widths of the grid; not used by any verdict)
        "median_modes_tuning": float(np.median(used)) if used.size else float("nan"),
        "median_modes_n_used": int(used.size),
        "share_cells_all_modes": float(np.mean(np.all(tune_all, axis=-1))),
        "tuning_diverged": int((~alive_t).sum()), "tuning_runs": int(alive_t.size),
        "seconds": arm.seconds,
    }


def protocol_verdicts(results: Results) -> list[claims.Verdict]:
    """The two halves of the claim, decided separately with the pinned thresholds."""
    cfg, K = results.config, results.n_modes
    src = "sims/modes_neurons.toml" if cfg.family == "neurons" else "sims/modes.toml"
    rows = {r["optimizer"]: r for r in results.table}
    out = []
    for name in NSGDA:
        if name not in rows:
            continue
        r = rows[name]
        out.append(claims.verdict(
            f"{name}_recovers_all_modes", f"{name} recovers all {K} modes at its tuned step sizes",
            f"held-out share of runs with all {K} modes at both {cfg.late_fraction:g}T and T",
            r["all_modes_share"], (r["ci_low"], r["ci_high"]), "Wilson", cfg.nsgd_share_min, "above",
            {"n": r["heldout_n"], "heldout_seeds": [cfg.heldout[0], cfg.heldout[-1]],
             "cell": r["chosen_cell"], "diverged": r["heldout_diverged"]}, threshold_source=src))
    if "sgd" in rows:
        r = rows["sgd"]
        out.append(claims.verdict(
            "sgda_collapses_at_best_cell", "SGDA collapses (fails to recover all modes) at its tuned step sizes",
            f"held-out share of runs with all {K} modes at SGDA's chosen cell",
            r["all_modes_share"], (r["ci_low"], r["ci_high"]), "Wilson", cfg.sgd_share_max, "below",
            {"n": r["heldout_n"], "heldout_seeds": [cfg.heldout[0], cfg.heldout[-1]],
             "cell": r["chosen_cell"], "diverged": r["heldout_diverged"]}, threshold_source=src))
        out.append(claims.verdict(
            "sgda_collapses_every_cell", "SGDA collapses for every step size pair of its grid",
            f"grid-wide maximum over {len(r['lrs'])}x{len(r['lrs'])} cells of the tuning-seed share of runs with all "
            f"{K} modes (a bound that favours SGDA)",
            r["grid_max_share_tuning"], (r["grid_max_ci_low"], r["grid_max_ci_high"]), "Wilson (that cell)",
            cfg.sgd_share_max, "below",
            {"n": len(cfg.tuning), "tuning_seeds": [cfg.tuning[0], cfg.tuning[-1]], "cell": r["grid_max_cell"],
             "lrs": r["lrs"]}, threshold_source=src))
    return out


def analyse(results: Results) -> Results:
    results.table = [arm_summary(results, name) for name in results.arms]
    results.verdicts = protocol_verdicts(results)
    cfg = results.config
    results.protocol = {
        "family": cfg.family, "n_modes": results.n_modes, "steps": cfg.resolved["steps"],
        "late_step": cfg.late_step, "mode_scale": cfg.mode_scale, "blowup": cfg.blowup,
        "tuning_seeds": list(cfg.tuning), "heldout_seeds": list(cfg.heldout), "data_seed": cfg.data_seed,
        "adam_b1": cfg.adam_b1, "adam_b2": cfg.adam_b2, "scheme": cfg.scheme,
        "gradients": "exact" if cfg.exact else f"minibatch {cfg.batch_size}",
    }
    return results


def summary(results: Results) -> str:
    cfg = results.config
    r = cfg.resolved
    spec = (f"K={cfg.k} d={cfg.d} m={cfg.m} m_D={cfg.m_disc} alphas={list(cfg.alphas)}" if cfg.family == "neurons"
            else f"std={cfg.std} hidden={cfg.hidden}")
    head = (f"modes study: family={cfg.family} ({results.n_modes} modes; {spec}) "
            f"gradients={results.protocol['gradients']} scheme={cfg.scheme} T={r['steps']} "
            f"(a mode counts when recovered at {cfg.late_step} and {r['steps']}) data_seed={cfg.data_seed}\n"
            f"tuning seeds {cfg.tuning[0]}..{cfg.tuning[-1]} ({len(cfg.tuning)}), held-out seeds "
            f"{cfg.heldout[0]}..{cfg.heldout[-1]} ({len(cfg.heldout)}); Adam-based arms b1={cfg.adam_b1} b2={cfg.adam_b2}; "
            f"diverged = non-finite or scale > {cfg.blowup:g}x the data's")
    rows = []
    for t in results.table:
        c = t["chosen_cell"]
        rows.append({"optimizer": t["optimizer"], "grid": f"{len(t['lrs'])}x{len(t['lrs'])} {t['lrs'][0]:.2g}..{t['lrs'][-1]:.2g}",
                     "chosen_lr_g": c["lr_g"], "chosen_lr_d": c["lr_d"], "tune_share": t["tuning_share_chosen"],
                     "heldout_all_modes": f"{t['all_modes_runs']}/{t['heldout_n']}",
                     "share": t["all_modes_share"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                     "grid_max_share": t["grid_max_share_tuning"],
                     "median_modes": t["median_modes_tuning"],
                     "n_used": f"{t['median_modes_n_used']}/{t['tuning_runs']}",
                     "cells_all": t["share_cells_all_modes"], "diverged": t["tuning_diverged"] + t["heldout_diverged"],
                     "seconds": t["seconds"]})
    cols = list(rows[0]) if rows else []
    note = ("share: held-out share of runs with all modes at the chosen cell (Wilson 95% ci_low..ci_high); "
            "tune_share / grid_max_share: on the tuning seeds at the chosen / best cell; median_modes (over n_used "
            "non-diverged tuning runs) and cells_all (share of cells where every tuning run has all modes) are "
            "descriptive only. nsgd grids are in units of the smallest mode scale "
            f"({cfg.mode_scale:g}); nsgd_global normalizes over all tensors, nsgd_tensor per tensor.")
    edge = [t["optimizer"] for t in results.table if t["chosen_at_edge"]]
    if edge:
        note += (f"\nNOTE: the chosen cell lies on the edge of the pinned grid for {', '.join(edge)} "
                 "(a step size outside the grid might do better; the grid is not widened after the run).")
    lines = [head, common.format_table(rows, cols), note, "",
             f"verdicts (thresholds pinned in {'sims/modes_neurons.toml' if cfg.family == 'neurons' else 'sims/modes.toml'}):"]
    lines += ["  " + v.line() for v in results.verdicts]
    if not results.verdicts:
        lines.append("  none: the claim needs sgd and an nsgd optimizer among --optimizers")
    return "\n".join(lines)


# -- output --------------------------------------------------------------------------------------
def cell_rows(results: Results) -> list[dict[str, Any]]:
    """Tidy rows: one per (optimizer, phase, η_G, η_D, seed) at the end of training."""
    rows = []
    late = results.late_index
    fam = results.config.family
    for name, arm in results.arms.items():
        n = len(arm.lrs)
        rec = recovered(arm.tune_modes, late)
        for i in range(n):
            for j in range(n):
                for s, seed in enumerate(results.config.tuning):
                    rows.append({"family": fam, "optimizer": name, "phase": "tuning", "lr_g": float(arm.lrs[i]),
                                 "lr_d": float(arm.lrs[j]), "seed": seed,
                                 "modes_recovered": int(rec[i, j, s].sum()), "modes_at_T": int(arm.tune_modes[i, j, s, -1].sum()),
                                 "all_modes": bool(rec[i, j, s].all()), "n_modes": results.n_modes,
                                 "diverged": bool(not arm.tune_alive[i, j, s, -1]),
                                 "quality": float(arm.tune_quality[i, j, s, -1])})
        i, j = arm.chosen
        rec = recovered(arm.eval_modes, late)
        for s, seed in enumerate(results.config.heldout):
            rows.append({"family": fam, "optimizer": name, "phase": "heldout", "lr_g": float(arm.lrs[i]),
                         "lr_d": float(arm.lrs[j]), "seed": seed, "modes_recovered": int(rec[s].sum()),
                         "modes_at_T": int(arm.eval_modes[s, -1].sum()), "all_modes": bool(rec[s].all()),
                         "n_modes": results.n_modes, "diverged": bool(not arm.eval_alive[s, -1]),
                         "quality": float(arm.eval_quality[s, -1])})
    return rows


def trajectory_rows(results: Results) -> list[dict[str, Any]]:
    """Per-mode recovery (share of held-out seeds) over training at each optimizer's chosen cell."""
    rows = []
    for name, arm in results.arms.items():
        i, j = arm.chosen
        frac = arm.eval_modes.mean(0)                                  # (R, M)
        for r, step in enumerate(results.record_steps):
            for mode in range(results.n_modes):
                rows.append({"optimizer": name, "lr_g": float(arm.lrs[i]), "lr_d": float(arm.lrs[j]),
                             "step": int(step), "mode": mode, "share_of_heldout_seeds": float(frac[r, mode])})
    return rows


def plot_heatmap(results: Results, name: str):
    """Tuning-seed share of runs with all modes per cell; the chosen cell boxed, diverged runs marked †."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    arm, cfg = results.arms[name], results.config
    share = all_modes(arm.tune_modes, results.late_index).mean(-1)
    div = (~arm.tune_alive[..., -1]).sum(-1)
    n = len(arm.lrs)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.6, 0.5 * n + 2.0))
    im = ax.imshow(share.T, origin="lower", vmin=0, vmax=1, cmap="viridis")
    ticks = [f"{v:.2g}" for v in arm.lrs]
    ax.set_xticks(range(n), ticks, rotation=60, fontsize=8)
    ax.set_yticks(range(n), ticks, fontsize=8)
    for i in range(n):
        for j in range(n):
            txt = f"{share[i, j]:.2f}" + (f"\n†{div[i, j]}" if div[i, j] else "")
            ax.text(i, j, txt, ha="center", va="center", fontsize=6, color="w" if share[i, j] < 0.6 else "k")
    ci, cj = arm.chosen
    ax.add_patch(Rectangle((ci - 0.5, cj - 0.5), 1, 1, fill=False, ec="C3", lw=2))
    unit = f" (grid in units of the mode scale {cfg.mode_scale:g})" if grid_kind(name) == "nsgd" else ""
    ax.set(xlabel=f"η_G{unit}", ylabel="η_D",
           title=f"{name}: share of {len(cfg.tuning)} tuning runs with all {results.n_modes} modes\n"
                 f"(box: chosen cell; †n: diverged runs)")
    ax.title.set_fontsize(9)
    fig.colorbar(im, ax=ax, label="share of tuning seeds")
    fig.tight_layout()
    return fig


def plot_trajectories(results: Results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results.arms)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        arm = results.arms[name]
        i, j = arm.chosen
        frac = arm.eval_modes.mean(0)
        for mode in range(results.n_modes):
            ax.plot(results.record_steps, frac[:, mode], lw=1, alpha=0.6,
                    label=f"mode {mode}" if results.n_modes <= 8 else None)
        ax.plot(results.record_steps, arm.eval_modes.all(-1).mean(0), "k", lw=2.2, label="all modes (at t)")
        ax.plot(results.record_steps, (~arm.eval_alive).mean(0), "C3:", lw=1.5, label="diverged")
        ax.axvline(results.config.late_step, color="0.5", ls="--", lw=1)
        ax.set(ylim=(-0.03, 1.03), xlabel="step", ylabel="share of held-out seeds",
               title=f"{name}\nη_G={arm.lrs[i]:.2g}, η_D={arm.lrs[j]:.2g}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    paths = [
        common.write_csv(out / "cells.csv", cell_rows(results)),
        common.write_csv(out / "recovery_over_training.csv", trajectory_rows(results)),
        common.write_json(out / "results.json", {
            "config": results.config, "resolved": results.config.resolved, "protocol": results.protocol,
            "n_modes": results.n_modes, "optimizers": {t["optimizer"]: t for t in results.table},
            "verdicts": [v.to_json() for v in results.verdicts]}),
        common.write_json(out / "manifest.json", common.manifest(
            NAME, results.config, seconds={n: a.seconds for n, a in results.arms.items()},
            execution=results.execution)),
    ]
    for name in results.arms:
        fig = plot_heatmap(results, name)
        paths += common.save_figure(fig, out / f"heatmap_{name}")
    fig = plot_trajectories(results)
    paths += common.save_figure(fig, out / "recovery_over_training")
    return paths
