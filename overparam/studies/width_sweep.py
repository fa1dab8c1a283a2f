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

from overparam import optim
from overparam.dynamics import Scheme, init_state, make_step, run as run_dynamics
from overparam.errors import ConfigError, finite_positive, positive_int
from overparam.games.mean_matching import MeanMatching, MeanMatchingSpec, teacher_data
from overparam.metrics.convergence import tail_rate
from overparam.studies import common
from overparam.studies.config import help_meta as _h
from overparam.theory.spectral import predicted_rates

NAME = "width-sweep"
DESCRIPTION = """GDA on the mean-matching game across generator widths (Balaji et al., ICLR 2021).

Per (width, seed): final relative residual, |d_T|, measured vs predicted linear rate,
relative movement |W_T - W_0|/|W_0|, converged/diverged flags and the residual curve.
Writes summary.csv, curves.csv, results.json, manifest.json and width_sweep.png/.pdf."""


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
    optimizer: str = field(default="sgd", metadata=_h("optimizer of both players (see overparam.optim)"))
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
    out_dir: str = field(default="results/width-sweep", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        if not self.widths:
            raise ConfigError("widths is empty; give at least one width, e.g. --widths 8,64,512")
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


# -- data ------------------------------------------------------------------------------------
def load_data(config: Config) -> np.ndarray:
    """The (N, m) data array: the teacher's samples or the user's file."""
    if config.data == "teacher":
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


def _predicted(config: Config, eigs: np.ndarray) -> dict[str, float]:
    nan = float("nan")
    if config.optimizer != "sgd" or config.scheme not in ("simultaneous", "alternating"):
        return {"lambda_min": float(max(eigs[0], 0)), "lambda_max": float(eigs[-1]),
                "rate_simple": nan, "rate_block": nan}  # no linear prediction for these
    sch = "simultaneous" if config.scheme == "simultaneous" else config.order
    return predicted_rates(np.diag(eigs), config.mu, config.eta, sch, config.n_disc)


def run_width(config: Config, k: int, data: np.ndarray) -> tuple[list[dict], list[dict]]:
    """All seeds of width k: (rows, curves)."""
    fn = _compiled(config.spec(k), config.optimizer, config.mu, config.eta, config.scheme_obj,
                   config.steps, config.record_every)
    base = jax.random.PRNGKey(config.seed)
    keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, k), s) for s in range(config.seeds)])
    recs, eigs, movement = jax.device_get(fn(keys, jnp.asarray(data)))
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


def run(config: Config = Config(), progress: bool = True) -> Results:
    """Run the sweep; finished widths found in ``config.out_dir/cells`` are reused (resume)."""
    t0 = time.perf_counter()
    ctx = jax.enable_x64(True) if config.x64 else contextlib.nullcontext()
    store = common.CellStore(config.out_dir, config)
    rows: list[dict] = []
    curves: list[dict] = []
    with ctx:
        data = load_data(config)
        for k in common.progress(config.widths, desc="width sweep", enabled=progress):
            cell = store.get(f"k{k}")
            if cell is None:
                r, c = run_width(config, k, data)
                cell = {"rows": r, "curves": c}
                store.put(f"k{k}", cell)
            rows += [_restore(r) for r in cell["rows"]]
            curves += cell["curves"]
    res = Results(config, rows, curves, time.perf_counter() - t0)
    res.verdicts = verdicts(res)
    return res


def _restore(row: dict) -> dict:
    """JSON stores non-finite floats as strings; turn them back into floats."""
    return {k: (float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v) for k, v in row.items()}


# -- analysis --------------------------------------------------------------------------------
def per_width(results: Results) -> list[dict[str, Any]]:
    """One summary row per width; medians over non-diverged seeds (diverged ones are counted)."""
    out = []
    for k in results.config.widths:
        rs = [r for r in results.rows if r["width"] == k]
        ok = [r for r in rs if not r["diverged"]]
        med = lambda key: float(np.median([r[key] for r in ok])) if ok else float("nan")
        out.append({
            "k": k, "seeds": len(rs),
            "converged": sum(r["converged"] for r in rs),
            "diverged": sum(r["diverged"] for r in rs),
            "final_res": med("final_residual"),
            "rate_meas": float(np.nanmedian([r["measured_rate"] for r in ok])) if ok and any(
                np.isfinite(r["measured_rate"]) for r in ok) else float("nan"),
            "rate_pred": med("predicted_rate"),
            "lam_min": med("lambda_min"),
            "movement": med("movement"),
        })
    return out


def verdicts(results: Results) -> dict[str, Any]:
    """The four effects, computed from the rows (nothing here is set by hand)."""
    cfg = results.config
    table = per_width(results)
    fdim = cfg.m if cfg.disc == "linear" else cfg.p
    below = [t for t in table if t["k"] < fdim]
    all_conv = [t["k"] for t in table if t["converged"] == t["seeds"]]
    threshold = None
    for t in reversed(table):  # smallest width from which every wider width converges for all seeds
        if t["converged"] == t["seeds"]:
            threshold = t["k"]
        else:
            break
    wide = [t for t in table if t["k"] >= 8 * fdim and np.isfinite(t["rate_meas"]) and np.isfinite(t["rate_pred"])]
    rate_err = max((abs(t["rate_meas"] - t["rate_pred"]) / max(1 - t["rate_pred"], 1e-12) for t in wide), default=float("nan"))
    mv = [t for t in table if t["k"] >= 2 * fdim and np.isfinite(t["movement"]) and t["movement"] > 0]
    slope = float(np.polyfit(np.log([t["k"] for t in mv]), np.log([t["movement"] for t in mv]), 1)[0]) if len(mv) >= 2 else float("nan")
    return {
        "feature_dim": fdim,
        "converged_below_feature_dim": int(sum(t["converged"] for t in below)),
        "runs_below_feature_dim": int(sum(t["seeds"] for t in below)),
        "threshold_width_all_converge": threshold,
        "widths_all_converged": all_conv,
        "max_relative_rate_error_wide": rate_err,  # |ρ_meas − ρ_pred| / (1 − ρ_pred), k ≥ 8·dim
        "movement_loglog_slope": slope,            # theory: −1/2
        "diverged_runs": int(sum(r["diverged"] for r in results.rows)),
    }


def summary(results: Results) -> str:
    cfg = results.config
    cols = ["k", "converged", "diverged", "final_res", "rate_meas", "rate_pred", "lam_min", "movement"]
    v = results.verdicts
    lines = [
        f"width sweep: m={cfg.m} d={cfg.d} n={cfg.n} phi={cfg.phi} disc={cfg.disc} optimizer={cfg.optimizer} "
        f"scheme={cfg.scheme} mu={cfg.mu} eta={cfg.eta} steps={cfg.steps} seeds={cfg.seeds} "
        f"({results.seconds:.1f} s)",
        common.format_table(per_width(results), cols),
        "",
        f"below k = {v['feature_dim']}: {v['converged_below_feature_dim']} of {v['runs_below_feature_dim']} runs converged "
        f"(theory: none, rank JJ^T <= k)",
        (f"every seed converges for all widths >= {v['threshold_width_all_converge']}"
         if v["threshold_width_all_converge"] is not None else "the widest width does not converge for every seed"),
        f"wide models (k >= {8 * v['feature_dim']}): max |rate_meas - rate_pred| / (1 - rate_pred) = "
        f"{v['max_relative_rate_error_wide']:.3g}",
        f"movement |W_T - W_0|/|W_0| vs k: log-log slope {v['movement_loglog_slope']:.3f} (theory -0.5)",
    ]
    if v["diverged_runs"]:
        lines.append(f"WARNING: {v['diverged_runs']} runs diverged (NaN/Inf); they are excluded from medians "
                     "and listed in summary.csv with diverged=True")
    return "\n".join(lines)


def plot(results: Results):
    """Four panels: residual curves per width; final residual, rates and movement vs width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.config
    table = per_width(results)
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, k in enumerate(cfg.widths):
        c = [r for r in results.curves if r["width"] == k and r["seed"] == 0]
        ax[0].semilogy([r["step"] for r in c], [max(r["residual"], 1e-12) for r in c],
                       color=cmap(i / max(len(cfg.widths) - 1, 1)), label=f"k={k}")
    ax[0].set(xlabel="step", ylabel="‖f(W_t) − x̄‖ / ‖f(W_0) − x̄‖", title="residual (seed 0)")
    ax[0].legend(fontsize=6, ncol=2)
    ks = np.array([t["k"] for t in table], float)
    for r in results.rows:
        if not r["diverged"]:
            ax[1].loglog(r["width"], max(r["final_residual"], 1e-12), "o", color="C0", alpha=0.4, ms=4)
    fdim = results.verdicts["feature_dim"]
    ax[1].axvline(fdim, color="k", ls=":", label=f"k = {fdim}")
    ax[1].axhline(cfg.tol, color="C3", ls="--", label="tol")
    ax[1].set(xlabel="width k", ylabel="final relative residual", title="final residual vs width")
    ax[1].legend(fontsize=7)
    ax[2].semilogx(ks, [1 - t["rate_meas"] for t in table], "o-", label="measured 1 − ρ")
    ax[2].semilogx(ks, [1 - t["rate_pred"] for t in table], "s--", label="predicted 1 − ρ (block)")
    ax[2].set(xlabel="width k", ylabel="per-step decrease 1 − ρ", title="measured vs predicted rate")
    ax[2].legend(fontsize=7)
    mv = np.array([t["movement"] for t in table], float)
    ax[3].loglog(ks, mv, "o-", label="median movement")
    ref = ks >= 2 * fdim
    if ref.any() and np.isfinite(mv[ref]).any():
        k0 = ks[ref][0]
        ax[3].loglog(ks[ref], mv[ref][0] * (ks[ref] / k0) ** -0.5, "k--", label="∝ k^{-1/2}")
    ax[3].set(xlabel="width k", ylabel="‖W_T − W_0‖ / ‖W_0‖", title="relative movement")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    import matplotlib.pyplot as plt

    fig = plot(results)
    paths = [
        common.write_csv(out / "summary.csv", results.rows),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_json(out / "results.json", {"per_width": per_width(results), "verdicts": results.verdicts,
                                                 "rows": results.rows, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, seconds=results.seconds)),
        *common.save_figure(fig, out / "width_sweep"),
    ]
    plt.close(fig)
    return paths
