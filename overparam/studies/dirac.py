"""The Dirac-GAN study: which training methods converge (Mescheder, Geiger & Nowozin, ICML 2018).

Every variant of overparam/games/dirac.py (standard, non-saturating, WGAN with clipping,
WGAN-GP, consensus optimization, instance noise, R1 with the standard and the
non-saturating generator) is trained from (θ₀, ψ₀) under simultaneous GD and alternating
GD (generator first, n_disc discriminator steps per generator step). One run per (variant,
scheme) is a jitted lax.scan; variants that differ only in numbers (the R1 strengths) are
vmapped in one call.

Status of a run, with r_t = √(θ_t² + ψ_t²), r₀ the starting distance and the window the
last ``window`` fraction of the steps (fixed criteria, options of the config):

* ``diverging``  some value is NaN/Inf, or the mean of r over the window ≥ ``diverged_factor`` · r₀
* ``converged``  the max of r over the window ≤ ``converged_tol`` · r₀
* ``circling``   otherwise (bounded, not approaching (0, 0))

Theory (overparam/theory/dirac.py): the sympy Jacobian of every field at (0, 0), its
eigenvalues, the same eigenvalues from an autodiff Jacobian, and the spectral radius of
the linearized discrete map of each scheme (the predicted per-step factor near (0, 0)).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from overparam import executors, optim
from overparam.dynamics import Scheme, init_state, make_step, run as run_dynamics
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam.games.dirac import VARIANTS, DiracGAN, vector_field
from overparam.studies import common
from overparam.studies.config import check_types, help_meta as _h
from overparam.theory import dirac as theory

NAME = "dirac"
DESCRIPTION = """Dirac-GAN: GD on every classic variant, simultaneous vs alternating (Mescheder et al. 2018).

Variants: gan, ns_gan, wgan (clipped), wgan_gp, consensus, instance_noise, r1 and ns_r1 (one
run per R1 strength). Schemes: simultaneous GD and alternating GD (generator first, n_disc
discriminator steps per generator step). Per run: final distance to (0, 0) and the status
converged / circling / diverging; per variant: sympy Jacobian eigenvalues at (0, 0) and the
linearized maps' spectral radii. Writes trajectories.csv (variant, scheme, step, theta,
psi), summary.csv, theory.csv, results.json, manifest.json and dirac.png/.pdf."""


@dataclass(frozen=True)
class Config:
    """Dirac-GAN configuration; the defaults are the classic study's."""

    variants: tuple[str, ...] = field(default=VARIANTS, metadata=_h("variants, comma-separated: " + ", ".join(VARIANTS)))
    steps: int = field(default=500, metadata=_h("generator steps per run"))
    lr_gen: float = field(default=0.2, metadata=_h("generator step size h_G"))
    lr_disc: float = field(default=0.2, metadata=_h("discriminator step size h_D"))
    theta0: float = field(default=1.0, metadata=_h("starting generator parameter theta"))
    psi0: float = field(default=1.0, metadata=_h("starting discriminator parameter psi"))
    optimizer: str = field(default="sgd", metadata=_h("optimizer of both players, one of: " + ", ".join(optim.OPTIMIZERS)))
    simultaneous: bool = field(default=True, metadata=_h("include simultaneous GD"))
    n_disc: tuple[int, ...] = field(default=(1, 5), metadata=_h("alternating GD: discriminator steps per generator "
                                                                 "step, one run each (empty: no alternating run)"))
    order: str = field(default="g_first", metadata=_h("alternating order: g_first or d_first"))
    wgan_clip: float = field(default=1.0, metadata=_h("WGAN: clip psi to [-c, c] after each discriminator step"))
    gp_gamma: float = field(default=0.7, metadata=_h("WGAN-GP penalty strength gamma"))
    gp_target: float = field(default=1.0, metadata=_h("WGAN-GP gradient-norm target g0"))
    consensus_gamma: float = field(default=1.0, metadata=_h("consensus optimization strength gamma"))
    noise_std: float = field(default=0.7, metadata=_h("instance noise standard deviation sigma"))
    noise_samples: int = field(default=1000, metadata=_h("instance noise: samples per gradient evaluation"))
    r1_gammas: tuple[float, ...] = field(default=(0.3, 1.0), metadata=_h("R1 strengths gamma for r1 and ns_r1 "
                                                                          "(1.0 = 2 f'(0) is critical damping)"))
    seed: int = field(default=0, metadata=_h("seed of the instance noise"))
    window: float = field(default=0.1, metadata=_h("status: fraction of the last steps looked at"))
    converged_tol: float = field(default=0.1, metadata=_h("status converged: max distance in the window <= this * r0"))
    diverged_factor: float = field(default=1.5, metadata=_h("status diverging: mean distance in the window >= this * r0"))
    plot_range: float = field(default=3.5, metadata=_h("figure: axes span [-range, range] in theta and psi"))
    x64: bool = field(default=True, metadata=_h("run in float64"))
    out_dir: str = field(default="results/dirac", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        check_types(self)
        require(len(self.variants) > 0, "variants is empty; give at least one, e.g. --variants gan,r1")
        for v in self.variants:
            one_of("Dirac-GAN variant", v, VARIANTS)
        require(len(set(self.variants)) == len(self.variants), f"variants has duplicates: {self.variants}")
        positive_int("steps", self.steps)
        positive_int("noise_samples", self.noise_samples)
        for name in ("lr_gen", "lr_disc", "wgan_clip", "noise_std", "plot_range", "converged_tol", "window"):
            finite_positive(name, getattr(self, name))
        for name in ("gp_gamma", "gp_target", "consensus_gamma"):
            finite_positive(name, getattr(self, name), allow_zero=True)
        for name in ("theta0", "psi0"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and np.isfinite(v), f"{name} must be a finite number, got {v!r}")
        require(self.theta0 != 0 or self.psi0 != 0, "the start (theta0, psi0) is the equilibrium (0, 0); "
                "start elsewhere, e.g. --theta0 1 --psi0 1")
        require(self.window <= 1, f"window must be a fraction in (0, 1], got {self.window}")
        require(self.converged_tol < 1, f"converged_tol must be < 1 (a fraction of r0), got {self.converged_tol}")
        finite_positive("diverged_factor", self.diverged_factor)
        require(self.diverged_factor > 1, f"diverged_factor must be > 1, got {self.diverged_factor}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(optim.OPTIMIZERS)}")
        one_of("alternating order", self.order, ("g_first", "d_first"))
        for n in self.n_disc:
            positive_int("every n_disc", n)
        require(self.simultaneous or len(self.n_disc) > 0,
                "no scheme to run: set --simultaneous true or give --n-disc 1,5")
        if any(v in ("r1", "ns_r1") for v in self.variants):
            require(len(self.r1_gammas) > 0, "r1_gammas is empty; give at least one R1 strength, e.g. 0.3,1.0")
            for g in self.r1_gammas:
                finite_positive("every R1 strength in r1_gammas", g, allow_zero=True)

    def schemes(self) -> list[tuple[str, Scheme]]:
        """(label, scheme) of every scheme to run."""
        out = [("simultaneous", Scheme("simultaneous"))] if self.simultaneous else []
        out += [(f"alternating_{self.order}_{n}d", Scheme("alternating", self.order, n)) for n in self.n_disc]
        return out

    def runs(self) -> list[tuple[str, list[tuple[str, dict[str, float]]]]]:
        """Per variant: [(label, numeric parameters)], several labels for the R1 strengths."""
        base = {"gamma": 0.0, "target": self.gp_target, "noise_std": 0.0, "clip": self.wgan_clip}
        out = []
        for v in self.variants:
            if v in ("r1", "ns_r1"):
                out.append((v, [(f"{v}_{g:g}", {**base, "gamma": float(g)}) for g in self.r1_gammas]))
            elif v == "wgan_gp":
                out.append((v, [(v, {**base, "gamma": self.gp_gamma})]))
            elif v == "consensus":
                out.append((v, [(v, {**base, "gamma": self.consensus_gamma})]))
            elif v == "instance_noise":
                out.append((v, [(v, {**base, "noise_std": self.noise_std})]))
            else:
                out.append((v, [(v, dict(base))]))
        return out


@dataclass
class Results:
    config: Config
    trajectories: list[dict[str, Any]]  # one per (variant, scheme, step)
    rows: list[dict[str, Any]]          # one per (variant, scheme)
    theory: list[dict[str, Any]]        # one per variant label
    seconds: float
    cells_report: str = ""              # "cells: reused N of M, computed K"
    execution: dict[str, Any] = field(default_factory=dict)  # where the cells ran (manifest)


# -- simulation ------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _compiled(variant: str, noise_samples: int, optimizer: str, lr_gen: float, lr_disc: float,
              scheme: Scheme, steps: int):
    """jit(vmap over parameter sets) of one run; one compile per (variant, scheme, shape)."""
    opt_g, opt_d = optim.make(optimizer, lr_gen), optim.make(optimizer, lr_disc)

    def one(params: dict, start: jax.Array, key: jax.Array):
        game = DiracGAN(variant, noise_samples=noise_samples, **params)
        step = make_step(game, opt_g, opt_d, scheme)
        state = init_state(game, opt_g, opt_d, start[0], start[1], scheme, key)
        _, recs = run_dynamics(step, state, key, steps, 1, lambda s: {"theta": s.gen, "psi": s.disc})
        return recs

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def classify(r: np.ndarray, r0: float, window: float, converged_tol: float, diverged_factor: float) -> str:
    """converged / circling / diverging from the distances r_0..r_T (criteria in the module docstring)."""
    r = np.asarray(r, float)
    if not np.all(np.isfinite(r)):
        return "diverging"
    n = max(1, int(round(window * (len(r) - 1))))
    tail = r[-n:]
    if tail.mean() >= diverged_factor * r0:
        return "diverging"
    if tail.max() <= converged_tol * r0:
        return "converged"
    return "circling"


def simulate_variant(config: Config, variant: str, params: list[dict[str, float]], scheme: Scheme) -> dict:
    """θ_t, ψ_t (arrays of shape (len(params), steps + 1)) of every parameter set of ``variant``."""
    fn = _compiled(variant, config.noise_samples, config.optimizer, config.lr_gen, config.lr_disc,
                   scheme, config.steps)
    stacked = {k: jnp.asarray([p[k] for p in params], jnp.result_type(float)) for k in params[0]}
    start = jnp.asarray([config.theta0, config.psi0], jnp.result_type(float))
    recs = jax.device_get(fn(stacked, start, jax.random.PRNGKey(config.seed)))
    return {"theta": np.asarray(recs["theta"], float), "psi": np.asarray(recs["psi"], float)}


# -- theory ----------------------------------------------------------------------------------
def _fmt_eigs(eigs: np.ndarray) -> str:
    return " ; ".join(f"{e.real:.4g}{e.imag:+.4g}i" for e in eigs)


def _sorted(eigs: Any) -> np.ndarray:
    e = np.asarray(eigs, complex)
    return e[np.lexsort((e.imag, e.real))]


def numeric_jacobian(variant: str, params: dict[str, float]) -> np.ndarray:
    """∂v/∂(θ, ψ) at (0, 0) by autodiff of the game's field (expected field for instance noise).

    For wgan_gp the field is taken at ψ = 0 where jax's d|ψ|/dψ = 1, i.e. the branch ψ → 0⁺.
    """
    game = DiracGAN(variant, noise_samples=40, quadrature=True, **params)
    with jax.enable_x64(True):
        J = jax.jacfwd(lambda z: jnp.stack(vector_field(game, z[0], z[1])))(jnp.zeros(2, jnp.float64))
    return np.asarray(J, float)


def theory_row(config: Config, variant: str, label: str, params: dict[str, float]) -> dict[str, Any]:
    """Sympy Jacobian at (0, 0), its eigenvalues, the autodiff check and the maps' spectral radii."""
    J = theory.jacobian(variant, **params)
    Jn = np.asarray(np.array(J.evalf(), dtype=complex).real, float)
    eig_sym = _sorted([complex(e.evalf()) for e in theory.eigenvalues(variant, **params)])
    eig_num = _sorted(np.linalg.eigvals(numeric_jacobian(variant, params)))
    stationary = all(abs(complex(v.evalf(subs={theory.GAMMA: params["gamma"], theory.TARGET: params["target"]})))
                     == 0 for v in theory.field_at_equilibrium(variant))
    row = {"variant": label, "J": Jn.tolist(), "eigenvalues": _fmt_eigs(eig_sym),
           "eig_autodiff_max_err": float(np.max(np.abs(eig_sym - eig_num))),
           "stationary_at_0": stationary}
    for name, sch in config.schemes():
        rho = float("nan")
        if stationary and config.optimizer == "sgd":
            kind = "simultaneous" if sch.kind == "simultaneous" else sch.order
            rho = theory.spectral_radius(Jn, config.lr_gen, config.lr_disc, kind, sch.n_disc)
        row[f"rho_{name}"] = rho
    return row


# -- the study -------------------------------------------------------------------------------
def _run_job(config: Config, variant: str, sets: list, sname: str, scheme: Scheme, r0: float) -> dict:
    """One cell: the runs of one variant (all its parameter sets) under one scheme."""
    rows, trajectories = [], []
    tr = simulate_variant(config, variant, [p for _, p in sets], scheme)
    for i, (label, _) in enumerate(sets):
        th, ps = tr["theta"][i], tr["psi"][i]
        r = np.hypot(th, ps)
        final = float(r[-1]) if np.isfinite(r[-1]) else float("nan")
        rows.append({"variant": label, "scheme": sname, "final_theta": float(th[-1]),
                     "final_psi": float(ps[-1]), "final_distance": final,
                     "status": classify(r, r0, config.window, config.converged_tol, config.diverged_factor)})
        trajectories += [{"variant": label, "scheme": sname, "step": t, "theta": float(a), "psi": float(b)}
                         for t, (a, b) in enumerate(zip(th, ps))]
    return {"rows": rows, "trajectories": trajectories}


def _jobs(config: Config) -> dict[str, tuple[str, list, str, Scheme]]:
    """{cell name ``<variant>-<scheme>``: (variant, parameter sets, scheme name, scheme)} in run order."""
    return {f"{v}-{sname}": (v, sets, sname, scheme) for v, sets in config.runs() for sname, scheme in config.schemes()}


def cells(config: Config) -> list[str]:
    """The study's cells in their fixed order: one per (variant, scheme)."""
    return list(_jobs(config))


def compute_cell(config: Config, name: str) -> dict:
    """One (variant, scheme) cell on its own (float64 when ``x64``): what a worker runs."""
    jobs = _jobs(config)
    if name not in jobs:
        raise ConfigError(f"unknown dirac cell {name!r}; cells of this config: {', '.join(jobs)}")
    variant, sets, sname, scheme = jobs[name]
    ctx = jax.enable_x64(True) if config.x64 else contextlib.nullcontext()
    with ctx:
        return _run_job(config, variant, sets, sname, scheme, float(np.hypot(config.theta0, config.psi0)))


def run(config: Config = Config(), progress: bool = True, executor: str = "inline", workers: int | None = None,
        scheduler: str | None = None, resources: str | None = None) -> Results:
    """Every (variant, scheme) run (finished ones in ``out_dir/cells`` are reused), the status
    table and the theory table. ``executor``/``workers``/``scheduler``/``resources``: where the
    missing cells run (:func:`overparam.executors.run_cells`); they never change a number."""
    t0 = time.perf_counter()
    trajectories: list[dict] = []
    rows: list[dict] = []
    theory_rows: list[dict] = []
    common.check_out_dir(config.out_dir)
    store = common.CellStore(config.out_dir, config)
    done = executors.run_cells(__name__, config, store, executor=executor, workers=workers, scheduler=scheduler,
                               progress=progress, resources=resources)
    for cell in done.values():
        rows += cell["rows"]
        trajectories += cell["trajectories"]
    for variant, sets in config.runs():
        for label, params in sets:
            theory_rows.append(theory_row(config, variant, label, params))
    rho = {(t["variant"], s): t[f"rho_{s}"] for t in theory_rows for s, _ in config.schemes()}
    for r in rows:
        r["rho_linear"] = rho[(r["variant"], r["scheme"])]
    order = {(t["variant"], s): i for i, (t, s) in enumerate((t, s) for t in theory_rows for s, _ in config.schemes())}
    rows.sort(key=lambda r: order[(r["variant"], r["scheme"])])  # variant by variant, schemes in config order
    res = Results(config, trajectories, rows, theory_rows, time.perf_counter() - t0)
    res.cells_report = done.report
    res.execution = done.info
    return res


def summary(results: Results) -> str:
    cfg = results.config
    lines = [
        f"Dirac-GAN: h_G={cfg.lr_gen} h_D={cfg.lr_disc} start=({cfg.theta0}, {cfg.psi0}) steps={cfg.steps} "
        f"optimizer={cfg.optimizer} ({results.seconds:.1f} s)",
        f"status over the last {cfg.window:.0%} of steps: converged if max r <= {cfg.converged_tol} r0, "
        f"diverging if mean r >= {cfg.diverged_factor} r0 or non-finite, else circling; "
        "rho_linear = spectral radius of the linearized map at (0, 0)",
        common.format_table(results.rows, ["variant", "scheme", "final_distance", "status", "rho_linear"], ".4g"),
        "",
        "Jacobian of the field at (0, 0) (sympy) and its eigenvalues; max |sympy - autodiff| eigenvalue error:",
        common.format_table([{**t, "J": str(np.round(np.asarray(t["J"]), 4).tolist())} for t in results.theory],
                            ["variant", "J", "eigenvalues", "eig_autodiff_max_err", "stationary_at_0"], ".2g"),
    ]
    if any(not t["stationary_at_0"] for t in results.theory):
        lines.append("(wgan_gp: the field does not vanish at (0, 0) — |psi| is not differentiable there; "
                     "the Jacobian shown is the one-sided one for psi -> 0+)")
    return "\n".join(lines)


def plot(results: Results):
    """One panel per variant: streamlines of the field v and the trajectory of every scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.config
    labels = [(v, label, p) for v, sets in cfg.runs() for label, p in sets]
    ncol = min(5, len(labels))
    nrow = -(-len(labels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.4 * nrow), squeeze=False)
    R = cfg.plot_range
    grid = np.linspace(-R, R, 41)
    T, P = np.meshgrid(grid, grid)
    schemes = [s for s, _ in cfg.schemes()]
    by_key = {(r["variant"], r["scheme"]): r for r in results.rows}
    traj: dict[tuple[str, str], list] = {}
    for row in results.trajectories:
        traj.setdefault((row["variant"], row["scheme"]), []).append((row["theta"], row["psi"]))
    for ax, (variant, label, params) in zip(axes.ravel(), labels):
        game = DiracGAN(variant, noise_samples=40, quadrature=True, **params)
        with jax.enable_x64(True):
            field_fn = jax.jit(jax.vmap(lambda a, b: jnp.stack(vector_field(game, a, b))))
            V = np.asarray(field_fn(jnp.asarray(T.ravel()), jnp.asarray(P.ravel())), float)
        ax.streamplot(T, P, V[:, 0].reshape(T.shape), V[:, 1].reshape(T.shape), color="0.75",
                      density=0.9, linewidth=0.6, arrowsize=0.6)
        for i, s in enumerate(schemes):
            xy = np.asarray(traj.get((label, s), []), float)
            status = by_key[(label, s)]["status"] if (label, s) in by_key else ""
            if len(xy):
                ax.plot(xy[:, 0], xy[:, 1], color=f"C{i}", lw=0.9, label=f"{s} ({status})")
        if variant == "wgan":
            for c in (-cfg.wgan_clip, cfg.wgan_clip):
                ax.axhline(c, color="k", ls=":", lw=0.7)
        ax.plot([cfg.theta0], [cfg.psi0], "ko", ms=3)
        ax.plot([0], [0], "r*", ms=6)
        ax.set(xlim=(-R, R), ylim=(-R, R), title=label, xlabel="θ", ylabel="ψ")
        ax.set_aspect("equal")
        ax.legend(fontsize=5, loc="lower left")
    for ax in axes.ravel()[len(labels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    fig = plot(results)
    paths = [
        common.write_csv(out / "trajectories.csv", results.trajectories, ["variant", "scheme", "step", "theta", "psi"]),
        common.write_csv(out / "summary.csv", results.rows),
        common.write_csv(out / "theory.csv", [{**t, "J": str(t["J"])} for t in results.theory]),
        common.write_json(out / "results.json", {"rows": results.rows, "theory": results.theory,
                                                 "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, seconds=results.seconds,
                                                                  execution=results.execution)),
        *common.save_figure(fig, out / "dirac"),
    ]
    return paths
