"""Width sweep of GDA on the mean-matching game: does width make GDA converge?

For every generator width k and seed, run GDA (jit + lax.scan, seeds vmapped) and record
the relative residual ‖f(W_t) − x̄‖/‖f(W₀) − x̄‖ (eq. R), ‖d_t‖, the measured linear rate
(tail slope of log residual), the predicted rate from J₀J₀ᵀ (1 − μλ_min and the exact
frozen-block radius, docs/theory.md), the relative movement ‖W_T − W₀‖/‖W₀‖ and the
converged / diverged flags. The theory predicts: no global saddle point below k = m (rank
JJᵀ ≤ k), linear convergence above a threshold width, measured ≈ predicted rate for wide
models, and movement ∝ k^{-1/2} (lazy training).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from overparam import claims, executors, optim
from overparam.dynamics import Scheme, init_state, make_step, run as run_dynamics
from overparam.errors import ConfigError, finite_positive, positive_int
from overparam.games.activations import activation
from overparam.games.mean_matching import (MeanMatching, MeanMatchingSpec, PaddedMeanMatching, jjt_eigenvalues,
                                           teacher_data)
from overparam.metrics.convergence import tail_rate
from overparam.studies import common
from overparam.studies.config import check_types, help_meta as _h
from overparam.theory.spectral import predicted_rates

NAME = "width-sweep"
DESCRIPTION = """GDA on the mean-matching game across generator widths (Balaji et al., ICLR 2021).

Per (width, seed): final relative residual, |d_T|, measured vs predicted linear rate,
relative movement |W_T - W_0|/|W_0|, converged/diverged flags and the residual curve.
Writes summary.csv, curves.csv, results.json, manifest.json and width_sweep.png/.pdf."""


def _check_verdict_options(cfg: "Config") -> None:
    """Verdict thresholds and ranges (checked in Config.__post_init__, before any work)."""
    finite_positive("blowup (divergence bound on the relative residual)", cfg.blowup)
    if cfg.blowup <= 1.0:
        raise ConfigError(f"blowup must exceed 1 (the relative residual starts at 1), got {cfg.blowup}")
    finite_positive("rate_k_factor", cfg.rate_k_factor)
    finite_positive("rate_error_max", cfg.rate_error_max)
    finite_positive("lazy_k_factor", cfg.lazy_k_factor)
    if len(cfg.slope_band) != 2 or not all(np.isfinite(cfg.slope_band)) or cfg.slope_band[0] >= cfg.slope_band[1]:
        raise ConfigError(f"slope_band must be two finite numbers lo < hi, e.g. -0.6,-0.4; got {cfg.slope_band}")
    for name in ("below_share_max", "wide_share_min"):
        v = finite_positive(name, getattr(cfg, name))
        if v > 1:
            raise ConfigError(f"{name} is a share and must be in (0, 1], got {v}")
    positive_int("n_boot", cfg.n_boot)


@dataclass(frozen=True)
class Config:
    """Width-sweep configuration (defaults show the theory in under a minute on 2 cores)."""

    widths: tuple[int, ...] = field(default=(2, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1024),
                                    metadata=_h("generator widths k, comma-separated"))
    seeds: int = field(default=5, metadata=_h("number of seeds per width (vmapped)"))
    seed: int = field(default=0, metadata=_h("base seed: seed s of width k uses fold_in(seed, s)"))
    steps: int = field(default=2000, metadata=_h("GDA steps"))
    record_every: int = field(default=10, metadata=_h("record metrics every this many steps"))
    m: int = field(default=8, metadata=_h("data dimension m"))
    d: int = field(default=8, metadata=_h("latent dimension d"))
    n: int = field(default=64, metadata=_h("number of fixed latent codes n"))
    phi: str = field(default="relu", metadata=_h("generator activation: relu, tanh, softplus, gelu"))
    depth: int = field(default=1, metadata=_h("generator hidden layers: 1 or 2"))
    train_v: bool = field(default=False, metadata=_h("also train the readout V"))
    disc: str = field(default="linear", metadata=_h("discriminator: linear or random_features"))
    p: int = field(default=8, metadata=_h("random features p (random_features discriminator)"))
    psi: str = field(default="tanh", metadata=_h("random-feature activation"))
    batch_size: int | None = field(default=None, metadata=_h("latent minibatch per step; none = fixed set, full batch"))
    mu: float = field(default=0.5, metadata=_h("generator step size mu"))
    eta: float = field(default=1.0, metadata=_h("discriminator step size eta"))
    optimizer: str = field(default="sgd", metadata=_h("optimizer of both players, one of: " + ", ".join(optim.OPTIMIZERS)))
    scheme: str = field(default="simultaneous", metadata=_h("simultaneous, alternating, extragradient, past_extragradient"))
    order: str = field(default="d_first", metadata=_h("alternating order: d_first or g_first"))
    n_disc: int = field(default=1, metadata=_h("discriminator steps per generator step (alternating)"))
    data: str = field(default="teacher", metadata=_h("'teacher' (realizable default) or a .npy/.npz/.csv file of shape (N, m)"))
    n_data: int = field(default=256, metadata=_h("teacher samples"))
    teacher_width: int = field(default=512, metadata=_h("teacher generator width"))
    data_seed: int = field(default=1234, metadata=_h("seed of the teacher data"))
    tol: float = field(default=1e-3, metadata=_h("converged when the final relative residual is below this"))
    floor: float = field(default=1e-5, metadata=_h("rate fit uses records with relative residual above this"))
    x64: bool = field(default=False, metadata=_h("run in float64"))
    bucket_min: int = field(default=32, metadata=_h(
        "speed: widths are padded to buckets of max(bucket_min, next power of two) units, one program for all"))
    fast_grad: bool = field(default=True, metadata=_h(
        "speed: closed-form gradient for the ReLU / depth-1 / linear-discriminator game (autodiff otherwise)"))
    block_max: int = field(default=1024, metadata=_h(
        "speed (fast path): at most this many units per block; wider widths run as several blocks"))
    devices: int = field(default=1, metadata=_h("speed: split the buckets over this many local devices (0 = all)"))
    out_dir: str = field(default="results/width-sweep", metadata=_h("output directory"))
    # -- verdict thresholds and ranges (pinned in sims/width_sweep.toml before the runs) --
    blowup: float = field(default=1e3, metadata=_h(
        "divergence bound: a run whose relative residual exceeds this at any record (or is non-finite) diverged"))
    rate_k_factor: float = field(default=8.0, metadata=_h(
        "rate verdict range: widths k >= rate_k_factor * feature dim"))
    rate_error_max: float = field(default=0.1, metadata=_h(
        "rate verdict: mean per-seed |rho_meas - rho_pred|/(1 - rho_pred) must be below this"))
    lazy_k_factor: float = field(default=8.0, metadata=_h(
        "movement verdict (lazy) range: widths k >= lazy_k_factor * feature dim"))
    slope_band: tuple[float, ...] = field(default=(-0.6, -0.4), metadata=_h(
        "movement verdict: the log-log slope of movement vs k must lie in this band (theory -1/2)"))
    below_share_max: float = field(default=0.25, metadata=_h(
        "below k = feature dim: the share of converged runs must be below this"))
    wide_share_min: float = field(default=0.9, metadata=_h(
        "in the rate range: the share of converged runs must be above this"))
    n_boot: int = field(default=10000, metadata=_h("bootstrap resamples of the verdict intervals"))
    boot_seed: int = field(default=0, metadata=_h("seed of the verdict bootstrap"))

    #: verdict options change no run's numbers: finished cells stay valid when they change
    NOT_CONTENT = ("blowup", "rate_k_factor", "rate_error_max", "lazy_k_factor", "slope_band",
                   "below_share_max", "wide_share_min", "n_boot", "boot_seed")

    def __post_init__(self) -> None:
        check_types(self)
        _check_verdict_options(self)
        if not self.widths:
            raise ConfigError("widths is empty; give at least one width, e.g. --widths 8,64,512")
        if len(set(self.widths)) != len(self.widths):
            dup = sorted({k for k in self.widths if self.widths.count(k) > 1})
            raise ConfigError(f"widths lists {dup} more than once; give each width once (seeds sets the runs per width)")
        for k in self.widths:
            positive_int("every width k", k)
        for name in ("seeds", "steps", "record_every", "n_data", "teacher_width"):
            positive_int(name, getattr(self, name))
        finite_positive("mu (generator step size)", self.mu)
        finite_positive("eta (discriminator step size)", self.eta)
        finite_positive("tol", self.tol)
        finite_positive("floor", self.floor)
        if self.optimizer not in optim.OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(optim.OPTIMIZERS)}")
        if self.steps % self.record_every:
            raise ConfigError(f"steps ({self.steps}) must be a multiple of record_every ({self.record_every})")
        self.scheme_obj  # validates scheme/order/n_disc
        self.spec(self.widths[0])  # validates the game options
        positive_int("bucket_min", self.bucket_min)
        positive_int("block_max", self.block_max)
        if not isinstance(self.devices, int) or self.devices < 0:
            raise ConfigError(f"devices must be 0 (all local devices) or a positive count, got {self.devices!r}")

    @property
    def scheme_obj(self) -> Scheme:
        return Scheme(self.scheme, self.order, self.n_disc)

    def spec(self, k: int) -> MeanMatchingSpec:
        return MeanMatchingSpec(m=self.m, d=self.d, k=k, n=self.n, phi=self.phi, depth=self.depth,
                                train_v=self.train_v, disc=self.disc, p=self.p, psi=self.psi,
                                batch_size=self.batch_size)


@dataclass
class Results:
    config: Config
    rows: list[dict[str, Any]]      # one per (width, seed)
    curves: list[dict[str, Any]]    # one per (width, seed, recorded step)
    seconds: float
    verdicts: dict[str, Any] = dataclasses.field(default_factory=dict)
    execution: dict[str, Any] = dataclasses.field(default_factory=dict)  # where the cells ran (manifest)
    cells_report: str = ""          # "cells: reused N of M, computed K (executor E)"


# -- data ------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _teacher_program(m: int, d: int, n_samples: int, width: int, phi: str, depth: int):
    """jit of :func:`teacher_data` with bit-identical results (optimization barriers between
    the ops keep XLA from fusing and reassociating them, so every op rounds as in the
    op-by-op original; the divisors √d, √k are runtime values for the same reason)."""
    act = activation(phi)
    B = jax.lax.optimization_barrier  # op-by-op rounding, as the eager original

    def program(key, sqrt_d, sqrt_k):
        kv, kw, kz = jax.random.split(key, 3)
        kv2, _, _ = jax.random.split(kv, 3)              # MeanMatching.create: V from the first key
        k1, k2 = jax.random.split(kw)                    # MeanMatching.init
        L = max(m * width, width * d, n_samples * d)     # one threefry + erfinv for the three draws
        g = B(jax.vmap(lambda kk: jax.random.normal(kk, (L,)))(jnp.stack([kv2, k1, kz])))
        V = B(g[0, : m * width].reshape(m, width))
        W = B(g[1, : width * d].reshape(width, d) / sqrt_d)
        z = B(g[2, : n_samples * d].reshape(n_samples, d))
        h = B(act(B(z @ B(W.T))))
        if depth == 2:
            W2 = B(jax.random.normal(k2, (width, width)))
            h = B(act(B(B(h @ B(W2.T)) / sqrt_k)))
        return B(h @ B(V.T)) / sqrt_k

    return jax.jit(program)


def _teacher(config: Config) -> np.ndarray:
    prog = _teacher_program(config.m, config.d, config.n_data, config.teacher_width, config.phi, config.depth)
    dt = jnp.float64 if config.x64 else jnp.float32
    return np.asarray(prog(jax.random.PRNGKey(config.data_seed), jnp.asarray(np.sqrt(config.d), dt),
                           jnp.asarray(np.sqrt(config.teacher_width), dt)))


def load_data(config: Config) -> np.ndarray:
    """The (N, m) data array: the teacher's samples or the user's file."""
    if config.data == "teacher":
        if config.depth == 1:  # one compiled program, bit-identical to the op-by-op teacher_data (tested)
            return _teacher(config)
        x = teacher_data(jax.random.PRNGKey(config.data_seed), config.m, config.d, config.n_data,
                         width=config.teacher_width, phi=config.phi, depth=config.depth)
        return np.asarray(x)
    path = Path(config.data)
    if not path.exists():
        raise ConfigError(f"data file not found: {path}; give a .npy/.npz/.csv file of shape (N, m) or 'teacher'")
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "x" not in keys and len(keys) != 1:
                    raise ConfigError(f"{path} holds arrays {keys}; store the data under the key 'x'")
                x = z["x" if "x" in keys else keys[0]]
        elif path.suffix == ".csv":
            x = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise ConfigError(f"unsupported data file {path}; use .npy, .npz or .csv")
    except ConfigError:
        raise
    except Exception as exc:  # corrupt or unreadable file
        raise ConfigError(f"could not read data file {path}: {exc}") from None
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != config.m:
        raise ConfigError(f"data in {path} has shape {x.shape}; expected (N, m) with m = {config.m}: "
                          f"set --m {x.shape[-1] if x.ndim == 2 else '?'} or reshape the data")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"data in {path} contains NaN or Inf")
    return x


# -- one width: all seeds in one compiled call ------------------------------------------------
@lru_cache(maxsize=64)
def _compiled(spec: MeanMatchingSpec, optimizer: str, mu: float, eta: float, scheme: Scheme,
              steps: int, record_every: int):
    """jit(vmap over seeds) of one GDA run; cached so each shape compiles once."""
    opt_g, opt_d = optim.make(optimizer, mu), optim.make(optimizer, eta)

    def one(key: jax.Array, data: jax.Array):
        kg, ki, kr = jax.random.split(key, 3)
        game = MeanMatching.create(spec, kg, data)
        gen0, disc0 = game.init(ki)
        step = make_step(game, opt_g, opt_d, scheme)
        state = init_state(game, opt_g, opt_d, gen0, disc0, scheme, kr)
        r0 = jnp.linalg.norm(game.residual(gen0))

        def metrics(s):
            return {"residual": jnp.linalg.norm(game.residual(s.gen)) / r0,
                    "disc_norm": jnp.linalg.norm(s.disc["d"])}

        final, recs = run_dynamics(step, state, kr, steps, record_every, metrics)
        # J0 J0^T of the mean map (autodiff through every trained leaf) and its spectrum.
        leaves, tdef = jax.tree_util.tree_flatten(gen0)
        jac = jax.jacobian(lambda ls: game.mean_map(jax.tree_util.tree_unflatten(tdef, ls)))(leaves)
        J = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)
        eigs = jnp.linalg.eigvalsh(J @ J.T)
        sq = lambda t: sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(t))
        moved = jax.tree_util.tree_map(lambda a, b: a - b, final.gen, gen0)
        movement = jnp.sqrt(sq(moved) / sq(gen0))
        return recs, eigs, movement

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


# -- the whole sweep: one draws program, host-side setup, one scanned program over buckets ----
def bucket_size(k: int, bucket_min: int) -> int:
    """The padded width of k's bucket: max(bucket_min, the next power of two ≥ k)."""
    return max(bucket_min, 1 << (int(k) - 1).bit_length())


def _instance_keys(base: jax.Array, widths: jax.Array, seeds: int) -> jax.Array:
    """Key of (width k, seed s) = fold_in(fold_in(base, k), s), shape (len(widths), seeds, 2)."""
    ss = jnp.arange(seeds, dtype=jnp.uint32)
    per_k = jax.vmap(lambda k: jax.random.fold_in(base, k))(widths)
    return jax.vmap(lambda kk: jax.vmap(lambda s: jax.random.fold_in(kk, s))(ss))(per_k)


@lru_cache(maxsize=16)
def _draws_program(m: int, d: int, n: int, p: int, kmax: int, disc: str, init_scale: float, psi: str, seeds: int):
    """jit of every instance's draws at fixed lengths (m·kmax for V, kmax·d for W).

    Per instance the same key tree as ``MeanMatching.create`` / ``init`` / the run:
    key → (kg, ki, kr); kg → (kv, kz, kf); ki → (k1, k2). With jax's partitionable threefry
    (the default) a draw's element i depends only on its flat index, so the first m·k
    entries of the length-m·kmax draw are exactly ``normal(kv, (m, k))`` flattened (tested).
    """

    lengths = {"V": m * kmax, "Z": n * d, "F": p * m}
    L = max(lengths.values())

    def one(key: jax.Array, X: jax.Array):
        kg, ki, kr = jax.random.split(key, 3)
        kv, kz, kf = jax.random.split(kg, 3)
        k1, k2 = jax.random.split(ki)
        # one threefry + erfinv for V, Z, F (a prefix of a length-L draw = the shorter draw); W
        # keeps its own draw: XLA folds init_scale/√d into that fusion, and so did the old program
        g = jax.vmap(lambda kk: jax.random.normal(kk, (L,)))(jnp.stack([kv, kz, kf]))
        out = {"V": g[0, : lengths["V"]], "Z": g[1, : lengths["Z"]].reshape(n, d),
               "W": init_scale * jax.random.normal(k1, (kmax * d,)) / np.sqrt(d), "k2": k2, "kr": kr}
        if disc == "random_features":
            F = g[2, : lengths["F"]].reshape(p, m)
            out["F"] = F
            out["xbar"] = jnp.mean(activation(psi)(X @ F.T) / np.sqrt(p), axis=0)
        else:
            out["xbar"] = jnp.mean(X, axis=0)
        return out

    per_instance = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, None))
    return jax.jit(lambda seed, widths, X: per_instance(_instance_keys(jax.random.PRNGKey(seed), widths, seeds), X))


@lru_cache(maxsize=64)
def _draw_w2(k: int):
    """W₂ ~ N(0, 1) of shape (k, k) per seed (depth 2 only; drawn per width)."""
    return jax.jit(jax.vmap(lambda k2: jax.random.normal(k2, (k, k))))


def draws(config: Config, widths: tuple[int, ...], data: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """Every (width, seed) instance of the sweep, as numpy arrays per width (leading axis: seed).

    ``V`` (S, m, k), ``Z`` (S, n, d), ``W`` (S, k, d) (``W1`` for depth 2, plus ``W2`` (S, k, k)),
    ``F`` (S, p, m) for random features, ``xbar`` (S, q) and the run keys ``kr`` (S, 2):
    bit-identical to what the per-width programs drew (tests/test_width_sweep.py keeps that
    reference).
    """
    kmax = max(widths)
    prog = _draws_program(config.m, config.d, config.n, config.p, kmax, config.disc,
                          config.spec(kmax).init_scale, config.psi, config.seeds)
    X = jnp.asarray(data, dtype=jnp.float64 if config.x64 else jnp.float32)
    out = jax.device_get(prog(config.seed, np.asarray(widths, np.uint32), X))
    per: dict[int, dict[str, np.ndarray]] = {}
    for i, k in enumerate(widths):
        S = config.seeds
        inst = {"V": out["V"][i][:, : config.m * k].reshape(S, config.m, k),
                "Z": out["Z"][i], "xbar": out["xbar"][i], "kr": out["kr"][i]}
        W = out["W"][i][:, : k * config.d].reshape(S, k, config.d)
        if config.depth == 1:
            inst["W"] = W
        else:
            inst["W1"] = W
            inst["W2"] = np.asarray(_draw_w2(k)(jnp.asarray(out["k2"][i])))
        if "F" in out:
            inst["F"] = out["F"][i]
        per[k] = inst
    return per


def _fast_relu(config: Config) -> bool:
    return config.fast_grad and config.phi == "relu" and config.depth == 1 and config.disc == "linear"


@lru_cache(maxsize=64)
def _bucket_runner(spec: MeanMatchingSpec, optimizer: str, mu: float, eta: float, scheme: Scheme,
                   steps: int, record_every: int, fast_relu: bool, with_f: bool):
    """vmap over the instances of one bucket (spec.k = the bucket size K) of one GDA run."""
    opt_g, opt_d = optim.make(optimizer, mu), optim.make(optimizer, eta)

    def one(V, Z, X, xbar, sqrt_k, mask, F, gen0, kr):
        game = PaddedMeanMatching(spec, V, Z, X, xbar, sqrt_k, mask, F, fast_relu=fast_relu)
        disc0 = {"d": jnp.zeros((spec.feature_dim,), V.dtype)}
        step = make_step(game, opt_g, opt_d, scheme)
        state = init_state(game, opt_g, opt_d, gen0, disc0, scheme, kr)

        def metrics(s):  # absolute ‖r_t‖; divided by the record at t = 0 on the host
            return {"residual": jnp.linalg.norm(game.residual(s.gen)), "disc_norm": jnp.linalg.norm(s.disc["d"])}

        final, recs = run_dynamics(step, state, kr, steps, record_every, metrics)
        sq = lambda t: sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(t))
        moved = jax.tree_util.tree_map(lambda a, b: a - b, final.gen, gen0)
        return recs, jnp.sqrt(sq(moved) / sq(gen0))

    return jax.vmap(one, in_axes=(0, 0, None, 0, 0, 0, 0 if with_f else None, 0, 0))


def _sweep_program(config: Config, sizes: tuple[int, ...]):
    """One jit over the given buckets: a tuple of per-bucket argument tuples in, results out."""
    runners = [_bucket_runner(config.spec(K), config.optimizer, config.mu, config.eta, config.scheme_obj,
                              config.steps, config.record_every, _fast_relu(config), config.disc != "linear")
               for K in sizes]
    return _jit_buckets(tuple(runners))


@lru_cache(maxsize=64)
def _jit_buckets(runners: tuple):
    return jax.jit(lambda args: [r(*a) for r, a in zip(runners, args)])


def _pad(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - a.shape[axis])
    return np.pad(a, pad)


def _bucket_args(config: Config, members: list[int], inst: dict[int, dict[str, np.ndarray]], K: int, X):
    """Host-side padding of one bucket's instances (width-major, then seed) to width K."""
    dt = np.float64 if config.x64 else np.float32
    cat = lambda f: np.concatenate([f(k) for k in members])
    S = config.seeds
    V = cat(lambda k: _pad(inst[k]["V"], 2, K)).astype(dt)
    Z = cat(lambda k: inst[k]["Z"]).astype(dt)
    xbar = cat(lambda k: inst[k]["xbar"]).astype(dt)
    sqrt_k = cat(lambda k: np.full(S, np.sqrt(k), dt)).astype(dt)
    mask = cat(lambda k: np.broadcast_to((np.arange(K) < k).astype(dt), (S, K))).astype(dt)
    F = cat(lambda k: inst[k]["F"]).astype(dt) if config.disc != "linear" else None
    kr = cat(lambda k: inst[k]["kr"])
    if config.depth == 1:
        gen = {"W": cat(lambda k: _pad(np.swapaxes(inst[k]["W"], 1, 2), 2, K)).astype(dt)}
    else:
        gen = {"W1": cat(lambda k: _pad(np.swapaxes(inst[k]["W1"], 1, 2), 2, K)).astype(dt),
               "W2": cat(lambda k: _pad(_pad(np.swapaxes(inst[k]["W2"], 1, 2), 1, K), 2, K)).astype(dt)}
    if config.train_v:
        gen["V"] = V
    return (V, Z, X, xbar, sqrt_k, mask, F, gen, kr)


def _spectra(config: Config, k: int, inst: dict[str, np.ndarray], data: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of J₀J₀ᵀ per seed, shape (S, q): closed form on the host where it
    holds (depth 1, linear discriminator, V fixed), else autodiff through every trained leaf."""
    if config.depth == 1 and config.disc == "linear" and not config.train_v:
        return np.stack([jjt_eigenvalues(inst["V"][s], inst["Z"][s], inst["W"][s], config.phi)
                         for s in range(config.seeds)])
    fn = _spectra_autodiff(config.spec(k))
    gen = {key: jnp.asarray(inst[key]) for key in ("W", "W1", "W2") if key in inst}
    if config.train_v:
        gen["V"] = jnp.asarray(inst["V"])
    F = jnp.asarray(inst["F"]) if "F" in inst else None
    return np.asarray(fn(jnp.asarray(inst["V"]), jnp.asarray(inst["Z"]), jnp.asarray(data, gen[next(iter(gen))].dtype),
                         F, gen), float)


@lru_cache(maxsize=64)
def _spectra_autodiff(spec: MeanMatchingSpec):
    def one(V, Z, X, F, gen0):
        game = MeanMatching(spec, V, Z, X, F)
        leaves, tdef = jax.tree_util.tree_flatten(gen0)
        jac = jax.jacobian(lambda ls: game.mean_map(jax.tree_util.tree_unflatten(tdef, ls)))(leaves)
        J = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)
        return jnp.linalg.eigvalsh(J @ J.T)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0 if spec.disc != "linear" else None, 0)))


# -- fast path: SGD, simultaneous GDA, depth 1, linear discriminator, V fixed, full batch -------
def _fast_path(config: Config) -> bool:
    """The default game family, run as unit blocks with its closed-form gradient (see _block_program)."""
    return (config.fast_grad and config.optimizer == "sgd" and config.scheme == "simultaneous"
            and config.depth == 1 and config.disc == "linear" and not config.train_v and config.batch_size is None)


@lru_cache(maxsize=16)
def _block_program(phi: str, mu: float, eta: float, steps: int, record_every: int, n_inst: int):
    """jit of simultaneous GDA with SGD for every (width, seed) instance at once, units in blocks.

    Every instance's k hidden units are cut into blocks of U units (the last one zero-padded),
    so all widths share one shape and one compiled program. Block b belongs to instance
    i(b); with W_b ∈ R^{d×U}, V_b ∈ R^{m×U}, Z_b = Z_{i(b)}, the closed forms are (eq. V):

        h̄_b = mean_j φ(W_bᵀ z_j),  f_i = Σ_{b∈i} V_b h̄_b / √k_i,  r_i = f_i − x̄_i,
        ∇_d h = r − d,  ∇_{W_b} h = Z_bᵀ φ'(Z_b W_b) diag(V_bᵀ d_{i(b)}) / (n √k_i).

    Padded units have zero W and V columns, so their gradient is exactly zero and they stay
    zero. Sums over an instance's blocks are segment sums (a NaN stays in its instance).
    """
    act = activation(phi)
    dact = (lambda x: (x > 0)) if phi == "relu" else jax.vmap(jax.grad(act))
    seg_sum = lambda x, seg: jax.ops.segment_sum(x, seg, num_segments=n_inst, indices_are_sorted=True)

    def program(W0, D0, Zb, Vb, xbar, sqrt_k, seg):
        n = Zb.shape[1]
        scale_b = 1.0 / (n * sqrt_k[seg])                               # (B,)

        def residual(W):
            pre = jnp.einsum("bnd,bdu->bnu", Zb, W)
            hbar = jnp.mean(act(pre), axis=1)                          # (B, U)
            f = seg_sum(jnp.einsum("bmu,bu->bm", Vb, hbar), seg) / sqrt_k[:, None]
            return f - xbar, pre

        def step(carry, _):
            W, D = carry
            r, pre = residual(W)
            c = jnp.einsum("bmu,bm->bu", Vb, D[seg]) * scale_b[:, None]   # (B, U)
            if phi == "relu":
                A = jnp.einsum("bnd,bnu->bdu", Zb, (pre > 0).astype(W.dtype))
            else:
                A = jnp.einsum("bnd,bnu->bdu", Zb, dact(pre.reshape(-1)).reshape(pre.shape))
            return (W - mu * (A * c[:, None, :]), D + eta * (r - D)), None

        def record(W, D):
            r, _ = residual(W)
            bad = seg_sum(jnp.sum(~jnp.isfinite(W), axis=(1, 2)).astype(W.dtype), seg)
            return {"residual": jnp.linalg.norm(r, axis=1), "disc_norm": jnp.linalg.norm(D, axis=1),
                    "finite": (bad == 0) & jnp.all(jnp.isfinite(D), axis=1)}

        def chunk(carry, _):
            carry, _ = jax.lax.scan(step, carry, None, length=record_every)
            return carry, record(*carry)

        first = record(W0, D0)
        (W, D), recs = jax.lax.scan(chunk, (W0, D0), None, length=steps // record_every)
        recs = {key: jnp.concatenate([first[key][None], recs[key]]).T for key in recs}
        moved = seg_sum(jnp.sum((W - W0) ** 2, axis=(1, 2)), seg)
        movement = jnp.sqrt(moved / seg_sum(jnp.sum(W0 ** 2, axis=(1, 2)), seg))
        return recs, movement

    return jax.jit(program)


def block_size(k: int, config: Config) -> int:
    """Units per block of width k: its bucket size, capped at ``block_max`` (wider widths use several blocks)."""
    return min(bucket_size(k, config.bucket_min), max(config.block_max, config.bucket_min))


@lru_cache(maxsize=16)
def _blocks_jit(phi: str, mu: float, eta: float, steps: int, record_every: int, n_insts: tuple[int, ...]):
    """One jit over the block groups (one group per block size)."""
    progs = [_block_program(phi, mu, eta, steps, record_every, n) for n in n_insts]
    return jax.jit(lambda args: [p(*a) for p, a in zip(progs, args)])


def _run_blocks(config: Config, widths: tuple[int, ...], inst: dict[int, dict[str, np.ndarray]], device=None):
    """Launch the fast path for ``widths`` (one program); returns (group widths, device outputs)."""
    dt = np.float64 if config.x64 else np.float32
    S = config.seeds
    by_u: dict[int, list[int]] = {}
    for k in widths:
        by_u.setdefault(block_size(k, config), []).append(k)
    groups = sorted(by_u.items())
    all_args = []
    for U, ks in groups:
        Wb, Vb, Zb, seg, xbar, sqrt_k = [], [], [], [], [], []
        i = 0
        for k in ks:
            nb = -(-k // U)
            for s in range(S):
                W = _pad(inst[k]["W"][s].T, 1, nb * U)                          # (d, nb·U)
                V = _pad(inst[k]["V"][s], 1, nb * U)                            # (m, nb·U)
                Wb.append(W.reshape(config.d, nb, U).transpose(1, 0, 2))
                Vb.append(V.reshape(config.m, nb, U).transpose(1, 0, 2))
                Zb.append(np.broadcast_to(inst[k]["Z"][s], (nb, config.n, config.d)))
                seg.append(np.full(nb, i, np.int32))
                xbar.append(inst[k]["xbar"][s])
                sqrt_k.append(np.sqrt(k))
                i += 1
        args = (np.concatenate(Wb).astype(dt), np.zeros((i, config.m), dt), np.concatenate(Zb).astype(dt),
                np.concatenate(Vb).astype(dt), np.stack(xbar).astype(dt), np.asarray(sqrt_k, dt), np.concatenate(seg))
        all_args.append(jax.device_put(args, device) if device is not None else args)
    prog = _blocks_jit(config.phi, config.mu, config.eta, config.steps, config.record_every,
                       tuple(len(ks) * S for _, ks in groups))
    return [ks for _, ks in groups], prog(all_args)


def _block_records(config: Config, launched) -> dict[int, tuple[dict, np.ndarray]]:
    group_widths, out = launched
    steps = np.arange(0, config.steps + 1, config.record_every)
    res = {}
    for ks, (recs, movement) in zip(group_widths, jax.device_get(out)):
        for j, k in enumerate(ks):
            sl = slice(j * config.seeds, (j + 1) * config.seeds)
            r = {key: v[sl] for key, v in recs.items()}
            r["step"] = np.broadcast_to(steps, r["residual"].shape)
            res[k] = (r, movement[sl])
    return res


def _split(items: list[tuple[int, Any]], n_groups: int) -> list[list[Any]]:
    """Greedy balance of (work, payload) items over n_groups, largest first; empty groups dropped."""
    groups: list[list] = [[] for _ in range(max(n_groups, 1))]
    load = [0] * len(groups)
    for work, payload in sorted(items, key=lambda it: -it[0]):
        i = int(np.argmin(load))
        groups[i].append(payload)
        load[i] += work
    return [g for g in groups if g]


def run_widths(config: Config, widths: tuple[int, ...], data: np.ndarray) -> dict[int, tuple[list[dict], list[dict]]]:
    """All seeds of all ``widths`` in one compiled program (one per device with ``devices``): {k: (rows, curves)}.

    One small program draws every instance; padding and the J₀J₀ᵀ spectra are host-side;
    the runs are one program: the unit-block fast path (SGD, simultaneous GDA, depth 1,
    linear discriminator, V fixed, full batch; closed-form gradient) or, for every other
    option, width buckets vmapped over instances with autodiff and the optax optimizers.
    """
    widths = tuple(dict.fromkeys(widths))
    inst = draws(config, widths, data)
    dt = jnp.float64 if config.x64 else jnp.float32
    devs = jax.local_devices()
    n_dev = len(devs) if config.devices == 0 else min(config.devices, len(devs))
    if _fast_path(config):
        groups = _split([(bucket_size(k, config.bucket_min), k) for k in widths], n_dev)
        groups = [tuple(k for k in widths if k in g) for g in groups]

        def launch(i: int, group):
            return _run_blocks(config, group, inst, devs[i])

        def collect(group, out):
            return _block_records(config, out)
    else:
        by_size: dict[int, list[int]] = {}
        for k in widths:
            by_size.setdefault(bucket_size(k, config.bucket_min), []).append(k)
        groups = _split([(K * len(ks), (K, ks)) for K, ks in by_size.items()], n_dev)
        groups = [sorted(g) for g in groups]

        def launch(i: int, group):
            dev = devs[i]
            X = jax.device_put(jnp.asarray(data, dt), dev)
            args = [jax.device_put(_bucket_args(config, ks, inst, K, X), dev) for K, ks in group]
            return _sweep_program(config, tuple(K for K, _ in group))(args)

        def collect(group, out):
            res = {}
            for (K, ks), (recs, movement) in zip(group, jax.device_get(out)):
                for j, k in enumerate(ks):
                    sl = slice(j * config.seeds, (j + 1) * config.seeds)
                    res[k] = ({key: v[sl] for key, v in recs.items()}, movement[sl])
            return res

    if len(groups) == 1:
        outs = [launch(0, groups[0])]
    else:  # compile and run the device groups concurrently
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(groups)) as pool:
            outs = list(pool.map(lambda ig: launch(*ig), enumerate(groups)))
    eig = {k: _spectra(config, k, inst[k], data) for k in widths}  # host-side while the program runs
    result: dict[int, tuple[list[dict], list[dict]]] = {}
    for group, out in zip(groups, outs):
        for k, (recs, movement) in collect(group, out).items():
            result[k] = _rows(config, k, recs, eig[k], movement)
    return {k: result[k] for k in widths}


def _rows(config: Config, k: int, recs: dict, eigs: np.ndarray, movement: np.ndarray) -> tuple[list[dict], list[dict]]:
    """Rows and curves of one width from its records (absolute ‖r_t‖ is made relative here)."""
    absres = np.asarray(recs["residual"])
    rel = absres / absres[:, :1]  # same-precision division as the program's ‖r_t‖/‖r_0‖
    return _rows_from(config, k, {**recs, "residual": rel}, eigs, movement)


def _predicted(config: Config, eigs: np.ndarray) -> dict[str, float]:
    nan = float("nan")
    if config.optimizer != "sgd" or config.scheme not in ("simultaneous", "alternating"):
        return {"lambda_min": float(max(eigs[0], 0)), "lambda_max": float(eigs[-1]),
                "rate_simple": nan, "rate_block": nan}  # no linear prediction for these
    sch = "simultaneous" if config.scheme == "simultaneous" else config.order
    return predicted_rates(np.diag(eigs), config.mu, config.eta, sch, config.n_disc)


def run_width(config: Config, k: int, data: np.ndarray) -> tuple[list[dict], list[dict]]:
    """All seeds of width k: (rows, curves) (the sweep's program restricted to one width)."""
    return run_widths(config, (k,), data)[k]


def run_width_reference(config: Config, k: int, data: np.ndarray) -> tuple[list[dict], list[dict]]:
    """The per-width reference route: one program per width (draws, autodiff J₀, the run inside)."""
    fn = _compiled(config.spec(k), config.optimizer, config.mu, config.eta, config.scheme_obj,
                   config.steps, config.record_every)
    base = jax.random.PRNGKey(config.seed)
    keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, k), s) for s in range(config.seeds)])
    recs, eigs, movement = jax.device_get(fn(keys, jnp.asarray(data)))
    return _rows_from(config, k, recs, eigs, movement)


def _rows_from(config: Config, k: int, recs: dict, eigs: np.ndarray, movement: np.ndarray
               ) -> tuple[list[dict], list[dict]]:
    """Rows (one per seed) and curves (one per seed and record) of width k."""
    rows, curves = [], []
    for s in range(config.seeds):
        res = np.asarray(recs["residual"][s], float)
        steps = np.asarray(recs["step"][s])
        finite = np.asarray(recs["finite"][s]) & np.isfinite(res)
        diverged = not bool(finite.all())
        pred = _predicted(config, np.asarray(eigs[s], float))
        final = float(res[-1]) if not diverged else float("nan")
        rows.append({
            "width": k, "seed": s,
            "final_residual": final,
            "final_disc_norm": float(recs["disc_norm"][s][-1]) if not diverged else float("nan"),
            "measured_rate": tail_rate(steps, res, config.floor) if not diverged else float("nan"),
            "predicted_rate": pred["rate_block"],
            "predicted_rate_simple": pred["rate_simple"],
            "lambda_min": pred["lambda_min"], "lambda_max": pred["lambda_max"],
            "movement": float(movement[s]) if not diverged else float("nan"),
            "converged": (not diverged) and final <= config.tol,
            "diverged": diverged,
            "diverged_step": int(steps[np.argmin(finite)]) if diverged else -1,
        })
        for t, r, dn in zip(steps, res, recs["disc_norm"][s]):
            curves.append({"width": k, "seed": s, "step": int(t), "residual": float(r), "disc_norm": float(dn)})
    return rows, curves


# -- cells: one width bucket each (overparam.executors runs the missing ones) ---------------
def _buckets(config: Config) -> dict[int, list[int]]:
    """{bucket size K: the widths of ``config.widths`` padded to K}, smallest K first."""
    out: dict[int, list[int]] = {}
    for k in dict.fromkeys(config.widths):
        out.setdefault(bucket_size(k, config.bucket_min), []).append(k)
    return dict(sorted(out.items()))


def cells(config: Config) -> list[str]:
    """The sweep's cells in their fixed order: ``b<K>`` = every width whose bucket is K."""
    return [f"b{K}" for K in _buckets(config)]


def compute_cells(config: Config, names: list[str]) -> dict[str, dict[str, Any]]:
    """The cells ``names`` in one :func:`run_widths` call (one compiled program for all of them):
    ``{name: {"k<k>": {"rows": [...], "curves": [...]}}}``. A pure function of (config, names);
    the numbers of a width do not depend on which other cells share the call (tests compare bytes)."""
    members = _buckets(config)
    for name in names:
        if not (name[:1] == "b" and name[1:].isdigit() and int(name[1:]) in members):
            raise ConfigError(f"unknown width-sweep cell {name!r}; cells of this config: {', '.join(cells(config))}")
    ks = tuple(k for name in names for k in members[int(name[1:])])
    ctx = jax.enable_x64(True) if config.x64 else contextlib.nullcontext()
    with ctx:
        out = run_widths(config, ks, load_data(config))
    return {name: {f"k{k}": {"rows": out[k][0], "curves": out[k][1]} for k in members[int(name[1:])]}
            for name in names}


def compute_cell(config: Config, name: str) -> dict[str, Any]:
    """One cell (a width bucket) on its own: what a worker process runs."""
    return compute_cells(config, [name])[name]


def run(config: Config = Config(), progress: bool = True, executor: str = "inline", workers: int | None = None,
        scheduler: str | None = None, resources: str | None = None) -> Results:
    """Run the sweep; finished cells found in ``config.out_dir/cells`` are reused (resume).

    ``executor`` (inline, processes, dask), ``workers``, ``scheduler`` and ``resources`` say
    where the missing cells run (:func:`overparam.executors.run_cells`); they never change a
    number. Inline runs every missing cell in one compiled program.
    """
    t0 = time.perf_counter()
    store = common.CellStore(config.out_dir, config)
    done = executors.run_cells(__name__, config, store, executor=executor, workers=workers, scheduler=scheduler,
                               progress=progress, resources=resources)
    by_width = {key: value for cell in done.values() for key, value in cell.items()}
    rows: list[dict] = []
    curves: list[dict] = []
    for k in config.widths:
        rows += [_restore(r) for r in by_width[f"k{k}"]["rows"]]
        curves += by_width[f"k{k}"]["curves"]
    res = Results(config, rows, curves, time.perf_counter() - t0, execution=done.info, cells_report=done.report)
    res.verdicts = verdicts(res)
    return res


def _restore(row: dict) -> dict:
    """JSON stores non-finite floats as strings; turn them back into floats."""
    return {k: (float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v) for k, v in row.items()}


# -- analysis --------------------------------------------------------------------------------
def feature_dim(config: Config) -> int:
    """The width below which no global saddle point is reachable: m (linear D) or p (random features)."""
    return config.m if config.disc == "linear" else config.p


def divergence(results: Results) -> dict[tuple[int, int], str]:
    """(width, seed) -> reason, for every diverged run.

    A run diverged when a recorded value is non-finite (the run's own flag) or its relative
    residual ‖f(W_t) − x̄‖/‖f(W₀) − x̄‖ exceeds ``config.blowup`` at any recorded step (the
    curves) or at the end (the row). Computed from the stored rows and curves, so the bound
    can be read again without recomputing.
    """
    bound = results.config.blowup
    peak: dict[tuple[int, int], float] = {}
    for c in results.curves:
        key = (int(c["width"]), int(c["seed"]))
        r = float(c["residual"])
        peak[key] = max(peak.get(key, 0.0), r if np.isfinite(r) else np.inf)
    out = {}
    for r in results.rows:
        key = (int(r["width"]), int(r["seed"]))
        final = float(r["final_residual"])
        if r["diverged"] or not np.isfinite(final):
            out[key] = "non-finite"
        elif max(final, peak.get(key, 0.0)) > bound:
            out[key] = f"relative residual above {bound:g}"
    return out


def rate_error(row: dict[str, Any]) -> float:
    """Per-seed relative rate error |ρ_meas − ρ_pred| / (1 − ρ_pred).

    NaN when either rate is missing or ρ_pred ≥ 1 (the prediction is no contraction, so a
    relative error of the contraction 1 − ρ is undefined; below k = m this is the rule).
    """
    m, p = float(row["measured_rate"]), float(row["predicted_rate"])
    if not (np.isfinite(m) and np.isfinite(p)) or p >= 1.0:
        return float("nan")
    return abs(m - p) / (1.0 - p)


def outside_validity(config: Config, row: dict[str, Any]) -> bool:
    """4 μ λ_max(J₀J₀ᵀ) > η: the linear prediction 1 − μλ_min is outside its validity (docs/theory.md)."""
    lam = float(row.get("lambda_max", float("nan")))
    return bool(np.isfinite(lam) and 4.0 * config.mu * lam > config.eta)


def used_rows(results: Results) -> list[dict[str, Any]]:
    """Rows of runs that did not diverge (by :func:`divergence`)."""
    div = divergence(results)
    return [r for r in results.rows if (int(r["width"]), int(r["seed"])) not in div]


def per_width(results: Results) -> list[dict[str, Any]]:
    """One summary row per width; medians over the non-diverged seeds (``n_used`` of ``seeds``).

    ``rate_err_med`` / ``rate_err_max``: median and max over seeds of the per-seed relative
    rate error; ``outside_valid``: seeds with 4μλ_max > η.
    """
    cfg = results.config
    div = divergence(results)
    out = []
    for k in cfg.widths:
        rs = [r for r in results.rows if r["width"] == k]
        ok = [r for r in rs if (k, int(r["seed"])) not in div]

        def med(key: str) -> float:
            v = np.asarray([r[key] for r in ok], float)
            v = v[np.isfinite(v)]
            return float(np.median(v)) if v.size else float("nan")

        errs = np.asarray([rate_error(r) for r in ok], float)
        errs = errs[np.isfinite(errs)]
        out.append({
            "k": k, "seeds": len(rs), "n_used": len(ok),
            "converged": sum(bool(r["converged"]) and (k, int(r["seed"])) not in div for r in rs),
            "diverged": len(rs) - len(ok),
            "final_res": med("final_residual"),
            "rate_meas": med("measured_rate"),
            "n_rate": int(sum(np.isfinite(float(r["measured_rate"])) for r in ok)),
            "rate_pred": med("predicted_rate"),
            "rate_err_med": float(np.median(errs)) if errs.size else float("nan"),
            "rate_err_max": float(np.max(errs)) if errs.size else float("nan"),
            "outside_valid": int(sum(outside_validity(cfg, r) for r in rs)),
            "lam_min": med("lambda_min"),
            "lam_max": med("lambda_max"),
            "movement": med("movement"),
        })
    return out


def claim_verdicts(results: Results) -> list[claims.Verdict]:
    """The width-sweep claims as pinned verdicts (thresholds from the config = sims/width_sweep.toml)."""
    cfg = results.config
    fdim = feature_dim(cfg)
    div = divergence(results)
    src = "sims/width_sweep.toml"
    ok = used_rows(results)
    out = []

    # 1. below k = feature dim no run converges (rank J J^T <= k < m)
    below = [r for r in results.rows if r["width"] < fdim]
    n_conv = sum(bool(r["converged"]) and (int(r["width"]), int(r["seed"])) not in div for r in below)
    out.append(claims.verdict(
        "no_convergence_below_feature_dim", f"no run converges below k = {fdim} (rank JJ^T <= k)",
        f"share of runs with k < {fdim} converged (tol {cfg.tol:g})", n_conv / len(below) if below else float("nan"),
        claims.wilson(n_conv, len(below)), "Wilson", cfg.below_share_max, "below",
        {"n": len(below), "widths": sorted({r["width"] for r in below}), "converged": n_conv},
        problem=None if below else f"no width below {fdim} in the sweep", threshold_source=src))

    # 2. wide models converge linearly at the predicted rate
    k_rate = cfg.rate_k_factor * fdim
    wide_all = [r for r in results.rows if r["width"] >= k_rate]
    n_conv = sum(bool(r["converged"]) and (int(r["width"]), int(r["seed"])) not in div for r in wide_all)
    out.append(claims.verdict(
        "wide_models_converge", f"every run with k >= {k_rate:g} converges",
        f"share of runs with k >= {k_rate:g} converged (tol {cfg.tol:g})",
        n_conv / len(wide_all) if wide_all else float("nan"), claims.wilson(n_conv, len(wide_all)), "Wilson",
        cfg.wide_share_min, "above", {"n": len(wide_all), "widths": sorted({r["width"] for r in wide_all}),
                                      "converged": n_conv},
        problem=None if wide_all else f"no width >= {k_rate:g} in the sweep", threshold_source=src))

    wide = [r for r in ok if r["width"] >= k_rate]
    errs = np.asarray([rate_error(r) for r in wide], float)
    keep = np.isfinite(errs)
    flagged = sum(outside_validity(cfg, r) for r in wide)
    problem = None
    if keep.sum() < 2:
        problem = f"fewer than 2 runs with k >= {k_rate:g} have a measured and a predicted rate"
    out.append(claims.verdict(
        "rate_matches_prediction", f"for k >= {k_rate:g} the measured linear rate matches the frozen-block prediction",
        "mean over runs of |rho_meas - rho_pred| / (1 - rho_pred)", float(np.mean(errs[keep])) if keep.any() else float("nan"),
        claims.bootstrap_mean(errs[keep], cfg.n_boot, cfg.boot_seed), "bootstrap over runs", cfg.rate_error_max,
        "below", {"n": int(keep.sum()), "widths": sorted({r["width"] for r in wide}),
                  "diverged_excluded": sum(1 for r in results.rows if r["width"] >= k_rate) - len(wide),
                  "outside_validity": int(flagged)},
        problem=problem, threshold_source=src, max_error=float(np.max(errs[keep])) if keep.any() else float("nan")))

    # 3. lazy training: movement ∝ k^{-1/2}, pooled over seeds, k >= lazy_k_factor * fdim
    k_lazy = cfg.lazy_k_factor * fdim
    lazy = [r for r in ok if r["width"] >= k_lazy and np.isfinite(float(r["movement"])) and float(r["movement"]) > 0]
    ks = np.asarray([r["width"] for r in lazy], float)
    mv = np.asarray([r["movement"] for r in lazy], float)
    seeds = np.asarray([r["seed"] for r in lazy])
    widths = sorted(set(ks.tolist()))
    problem = None if len(widths) >= 2 else f"fewer than 2 widths >= {k_lazy:g} (the lazy range)"
    slope = claims.loglog_slope(ks, mv) if len(widths) >= 2 else float("nan")
    iv = (claims.bootstrap_slope(ks, mv, groups=seeds, n_boot=cfg.n_boot, seed=cfg.boot_seed)
          if len(widths) >= 2 else (float("nan"), float("nan")))
    out.append(claims.verdict(
        "lazy_movement_slope", f"relative movement |W_T - W_0|/|W_0| ~ k^(-1/2) for k >= {k_lazy:g}",
        f"log-log slope of movement vs k, pooled over seeds, k in [{min(widths, default=float('nan')):g}, "
        f"{max(widths, default=float('nan')):g}]", slope, iv, "bootstrap over seeds",
        tuple(cfg.slope_band), "within", {"n": len(lazy), "widths": [int(w) for w in widths],
                                          "seeds": sorted(set(seeds.tolist()))},
        problem=problem, threshold_source=src))
    return out


def verdicts(results: Results) -> dict[str, Any]:
    """Descriptive numbers and the pinned verdicts (``claims``), all computed from the rows."""
    cfg = results.config
    table = per_width(results)
    fdim = feature_dim(cfg)
    below = [t for t in table if t["k"] < fdim]
    all_conv = [t["k"] for t in table if t["converged"] == t["seeds"]]
    threshold = None
    for t in reversed(table):  # smallest width from which every wider width converges for all seeds
        if t["converged"] == t["seeds"]:
            threshold = t["k"]
        else:
            break
    div = divergence(results)
    return {
        "feature_dim": fdim,
        "converged_below_feature_dim": int(sum(t["converged"] for t in below)),
        "runs_below_feature_dim": int(sum(t["seeds"] for t in below)),
        "threshold_width_all_converge": threshold,
        "widths_all_converged": all_conv,
        "diverged_runs": len(div),
        "diverged_nonfinite": sum(v == "non-finite" for v in div.values()),
        "blowup_bound": cfg.blowup,
        "rows_outside_validity": int(sum(t["outside_valid"] for t in table)),
        "claims": [v.to_json() for v in claim_verdicts(results)],
    }


def summary(results: Results) -> str:
    cfg = results.config
    cols = ["k", "n_used", "converged", "diverged", "final_res", "rate_meas", "n_rate", "rate_pred",
            "rate_err_med", "rate_err_max", "outside_valid", "movement"]
    v = results.verdicts
    lines = [
        f"width sweep: m={cfg.m} d={cfg.d} n={cfg.n} phi={cfg.phi} disc={cfg.disc} optimizer={cfg.optimizer} "
        f"scheme={cfg.scheme} mu={cfg.mu} eta={cfg.eta} steps={cfg.steps} seeds={cfg.seeds} "
        f"({results.seconds:.1f} s)",
        common.format_table(per_width(results), cols),
        f"medians over n_used non-diverged seeds; diverged = non-finite or relative residual > {cfg.blowup:g} "
        f"at some record; rate_err = |rate_meas - rate_pred|/(1 - rate_pred) per seed (median, max); "
        f"outside_valid = seeds with 4 mu lambda_max > eta (linear prediction outside its validity)",
        "",
        f"below k = {v['feature_dim']}: {v['converged_below_feature_dim']} of {v['runs_below_feature_dim']} runs converged "
        f"(theory: none, rank JJ^T <= k)",
        (f"every seed converges for all widths >= {v['threshold_width_all_converge']}"
         if v["threshold_width_all_converge"] is not None else "the widest width does not converge for every seed"),
    ]
    if v["diverged_runs"]:
        lines.append(f"WARNING: {v['diverged_runs']} runs diverged ({v['diverged_nonfinite']} non-finite, the rest "
                     f"above the blow-up bound {cfg.blowup:g}); excluded from medians and verdicts (n_used), "
                     "listed in summary.csv")
    lines += ["", "verdicts (thresholds pinned in sims/width_sweep.toml):"]
    lines += ["  " + _verdict_line(c) for c in v["claims"]]
    return "\n".join(lines)


def _verdict_line(c: dict[str, Any]) -> str:
    """A stored verdict (its to_json dict) as the printable line of claims.Verdict.line."""
    thr = c["threshold"]
    v = claims.Verdict(c["name"], c["claim"], c["statistic"], float(c["value"]),
                       tuple(thr) if isinstance(thr, list) else thr, c["direction"],
                       (float(c["ci_low"]), float(c["ci_high"])), c["interval_method"], c["runs"],
                       c["outcome"], c["reason"])
    return v.line()


def plot(results: Results):
    """Four panels: residual curves per width; final residual, rates and movement vs width.

    Diverged runs (see :func:`divergence`) are drawn as red crosses at the top of the
    final-residual panel and counted in the legends; the shaded spans are the verdict ranges.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.config
    table = per_width(results)
    div = divergence(results)
    fdim = feature_dim(cfg)
    fs = 10
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.8))
    cmap = plt.get_cmap("viridis")
    shown = [k for i, k in enumerate(cfg.widths) if len(cfg.widths) <= 7 or i % 2 == 0 or k == cfg.widths[-1]]
    for i, k in enumerate(cfg.widths):
        c = [r for r in results.curves if r["width"] == k and r["seed"] == 0]
        if not c:
            continue
        ys = [min(max(float(r["residual"]), 1e-12), 1e12) if np.isfinite(float(r["residual"])) else np.nan for r in c]
        line, = ax[0].semilogy([r["step"] for r in c], ys, color=cmap(i / max(len(cfg.widths) - 1, 1)),
                               label=f"k={k}" if k in shown else None)
        if (k, 0) in div:
            ax[0].plot(c[-1]["step"], cfg.blowup, "x", color="C3", ms=8)
    ax[0].set(xlabel="step", ylabel="‖f(W_t) − x̄‖ / ‖f(W_0) − x̄‖", title="residual (seed 0; × = diverged)")
    ax[0].legend(fontsize=fs - 1, ncol=2)
    ks = np.array([t["k"] for t in table], float)
    ok = [r for r in results.rows if (int(r["width"]), int(r["seed"])) not in div]
    ax[1].loglog([r["width"] for r in ok], [max(float(r["final_residual"]), 1e-12) for r in ok], "o", color="C0",
                 alpha=0.4, ms=5, label=f"runs ({len(ok)})")
    bad = [r for r in results.rows if (int(r["width"]), int(r["seed"])) in div]
    if bad:
        ax[1].loglog([r["width"] for r in bad], [cfg.blowup] * len(bad), "x", color="C3", ms=8,
                     label=f"diverged ({len(bad)})")
    ax[1].axvline(fdim, color="k", ls=":", label=f"k = {fdim}")
    ax[1].axhline(cfg.tol, color="C3", ls="--", label=f"tol {cfg.tol:g}")
    ax[1].set(xlabel="width k", ylabel="final relative residual", title="final residual vs width")
    ax[1].legend(fontsize=fs)
    k_rate, k_lazy = cfg.rate_k_factor * fdim, cfg.lazy_k_factor * fdim
    ax[2].semilogx(ks, [1 - t["rate_meas"] for t in table], "o-", label="measured 1 − ρ (median)")
    ax[2].semilogx(ks, [1 - t["rate_pred"] for t in table], "s--", label="predicted 1 − ρ (block)")
    inval = [t for t in table if t["outside_valid"]]
    if inval:
        ax[2].semilogx([t["k"] for t in inval], [1 - t["rate_pred"] for t in inval], "D", mfc="none", color="C3",
                       ms=9, label="4μλ_max > η (some seeds)")
    ax[2].axvspan(k_rate, ks.max() * 1.2, color="0.9", zorder=0, label=f"rate verdict k ≥ {k_rate:g}")
    ax[2].set(xlabel="width k", ylabel="per-step decrease 1 − ρ", title="measured vs predicted rate")
    ax[2].legend(fontsize=fs)
    lazy = [r for r in ok if r["width"] >= k_lazy and float(r["movement"]) > 0]
    ax[3].loglog([r["width"] for r in ok], [r["movement"] for r in ok], "o", color="C0", alpha=0.35, ms=4,
                 label="runs")
    ax[3].loglog(ks, [t["movement"] for t in table], "-", color="C0", label="median")
    slope = next((c for c in results.verdicts.get("claims", []) if c["name"] == "lazy_movement_slope"), None)
    if lazy and slope is not None and np.isfinite(slope["value"]):
        kk = np.array(sorted({r["width"] for r in lazy}), float)
        lm = np.mean(np.log([r["movement"] for r in lazy]))
        lk = np.mean(np.log([r["width"] for r in lazy]))
        ax[3].loglog(kk, np.exp(lm + slope["value"] * (np.log(kk) - lk)), "k--",
                     label=f"fit: slope {slope['value']:.3f} [{slope['ci_low']:.3f}, {slope['ci_high']:.3f}]")
    ax[3].axvspan(k_lazy, ks.max() * 1.2, color="0.9", zorder=0, label=f"lazy range k ≥ {k_lazy:g}")
    ax[3].set(xlabel="width k", ylabel="‖W_T − W_0‖ / ‖W_0‖", title="relative movement")
    ax[3].legend(fontsize=fs)
    for a in ax:
        a.tick_params(labelsize=fs)
        a.title.set_fontsize(fs + 1)
        a.xaxis.label.set_fontsize(fs)
        a.yaxis.label.set_fontsize(fs)
    fig.suptitle(f"GDA width sweep: m = {cfg.m}, μ = {cfg.mu:g}, η = {cfg.eta:g}, {cfg.seeds} seeds, "
                 f"{cfg.steps} steps ({cfg.scheme}, {cfg.optimizer}, {cfg.disc} D)", fontsize=fs + 2)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    fig = plot(results)
    paths = [
        common.write_csv(out / "summary.csv", results.rows),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_json(out / "results.json", {"per_width": per_width(results), "verdicts": results.verdicts,
                                                 "rows": results.rows, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, seconds=results.seconds,
                                                                  execution=results.execution)),
        *common.save_figure(fig, out / "width_sweep"),
    ]
    return paths
