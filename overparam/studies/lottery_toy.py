"""The toy's lottery ticket: iterative magnitude pruning of the mean-matching generator.

A wide generator G(z) = V φ(W z)/√k (k ≫ m) plays simultaneous GDA against a linear
discriminator (docs/theory.md). IMP (:class:`overparam.prune.IMP`) prunes a fraction p of
the surviving entries of W per round (sparsity 1 − (1 − p)^r), rewinds the survivors to
initialization (or to step ``rewind_step`` of the dense run), resets the optimizer and
retrains. Per round, three arms start from the same kind of point:

* ``ticket``  the magnitude mask on the rewound weights;
* ``random``  a random mask with the same number of survivors, rewound the same way;
* ``reinit``  the ticket's mask on a fresh initialization.

Per (round, arm, seed): sparsity, live hidden units (rows of W with a surviving weight) vs
m, final relative residual, measured rate, the rate predicted from the *masked* Jacobian
J_M J_Mᵀ at the arm's starting point (overparam.theory.masked), converged flag. The verdict
compares the ticket's measured rate with each control's, paired by seed, in units of the
dense network's per-step decrease, with a bootstrap interval over seeds and a margin pinned
in sims/lottery_toy.toml.
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

from overparam import claims, optim, prune
from overparam.dynamics import Scheme, TrainState, make_step, run as run_dynamics
from overparam.errors import ConfigError, finite_positive, one_of, positive_int
from overparam.games.mean_matching import MeanMatching, MeanMatchingSpec, teacher_data
from overparam.metrics.convergence import tail_rate
from overparam.studies import common
from overparam.studies.config import check_types, help_meta as _h
from overparam.theory.masked import masked_jjt_mean_matching, masked_predicted_rates

NAME = "lottery-toy"
DESCRIPTION = """Lottery tickets in the mean-matching toy: IMP with rewinding on the generator's W.

Per IMP round and arm (ticket, random mask with the same counts, ticket mask on a fresh
init): sparsity, live hidden units vs m, final residual, measured rate vs the rate
predicted from the masked Jacobian at the rewound point, converged flag; verdict: does the
ticket converge faster, the same or slower than the controls? Writes summary.csv,
per_round.csv, curves.csv, results.json, manifest.json and lottery_toy.png/.pdf."""

ARMS = ("ticket", "random", "reinit")
CONTROLS = ("random", "reinit")


@dataclass(frozen=True)
class Config:
    """Lottery-toy configuration (the defaults finish in about a minute on 2 cores)."""

    k: int = field(default=64, metadata=_h("generator width k (hidden units; k >> m)"))
    m: int = field(default=8, metadata=_h("data dimension m"))
    d: int = field(default=8, metadata=_h("latent dimension d"))
    n: int = field(default=64, metadata=_h("number of fixed latent codes n"))
    phi: str = field(default="relu", metadata=_h("generator activation: relu, tanh, softplus, gelu"))
    seeds: int = field(default=5, metadata=_h("number of seeds (vmapped; >= 3 for the verdict)"))
    seed: int = field(default=0, metadata=_h("base seed: seed s uses fold_in(seed, s)"))
    steps: int = field(default=2000, metadata=_h("GDA steps per training run"))
    record_every: int = field(default=20, metadata=_h("record metrics every this many steps"))
    mu: float = field(default=0.5, metadata=_h("generator step size mu"))
    eta: float = field(default=1.0, metadata=_h("discriminator step size eta"))
    optimizer: str = field(default="sgd", metadata=_h("optimizer of both players (the rate prediction needs sgd)"))
    scheme: str = field(default="simultaneous", metadata=_h("simultaneous or alternating"))
    order: str = field(default="d_first", metadata=_h("alternating order: d_first or g_first"))
    rounds: int = field(default=20, metadata=_h("IMP pruning rounds after the dense round 0"))
    prune_fraction: float = field(default=0.2, metadata=_h("fraction p of the surviving weights pruned per round"))
    rewind_step: int = field(default=0, metadata=_h("rewind survivors to this step of the dense run (0 = init)"))
    n_data: int = field(default=256, metadata=_h("teacher samples"))
    teacher_width: int = field(default=512, metadata=_h("teacher generator width"))
    data_seed: int = field(default=1234, metadata=_h("seed of the teacher data"))
    tol: float = field(default=1e-3, metadata=_h("converged when the final relative residual is below this"))
    floor: float = field(default=1e-5, metadata=_h("rate fit uses records with relative residual above this"))
    margin: float = field(default=0.1, metadata=_h("verdict margin on the rate difference, in units of the dense "
                                                   "network's per-step decrease 1 - rho_dense"))
    ci: float = field(default=0.95, metadata=_h("bootstrap interval level of the verdict"))
    n_boot: int = field(default=4000, metadata=_h("bootstrap resamples over seeds"))
    boot_seed: int = field(default=0, metadata=_h("seed of the bootstrap resampling"))
    x64: bool = field(default=False, metadata=_h("run in float64"))
    out_dir: str = field(default="results/lottery-toy", metadata=_h("output directory"))

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("k", "m", "d", "n", "seeds", "steps", "record_every", "rounds", "n_data",
                     "teacher_width", "n_boot"):
            positive_int(name, getattr(self, name))
        if self.seeds < 3:
            raise ConfigError(f"seeds = {self.seeds}: the paired verdict needs at least 3 seeds; use --seeds 3 or more")
        finite_positive("mu (generator step size)", self.mu)
        finite_positive("eta (discriminator step size)", self.eta)
        finite_positive("tol", self.tol)
        finite_positive("floor", self.floor)
        finite_positive("margin", self.margin, allow_zero=True)
        if not 0.0 < self.ci < 1.0:
            raise ConfigError(f"ci is an interval level in (0, 1), got {self.ci}")
        if not 0.0 < self.prune_fraction < 1.0:
            raise ConfigError(f"prune_fraction must be in (0, 1) (a fraction, not a percentage), got {self.prune_fraction}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(optim.OPTIMIZERS)}")
        one_of("scheme (lottery-toy)", self.scheme, ("simultaneous", "alternating"))
        if self.steps % self.record_every:
            raise ConfigError(f"steps ({self.steps}) must be a multiple of record_every ({self.record_every})")
        if self.rewind_step < 0 or self.rewind_step >= self.steps or self.rewind_step % self.record_every:
            raise ConfigError(f"rewind_step ({self.rewind_step}) must be 0 (init) or a multiple of record_every "
                              f"({self.record_every}) below steps ({self.steps})")
        self.scheme_obj  # validates order
        self.spec  # validates the game options

    @property
    def scheme_obj(self) -> Scheme:
        return Scheme(self.scheme, self.order, 1)

    @property
    def spec(self) -> MeanMatchingSpec:
        return MeanMatchingSpec(m=self.m, d=self.d, k=self.k, n=self.n, phi=self.phi)

    @property
    def imp(self) -> prune.IMPConfig:
        return prune.IMPConfig(rounds=self.rounds, prune_fraction=self.prune_fraction, scope="global",
                               seed=self.seed, arms=ARMS)


@dataclass
class Results:
    config: Config
    rows: list[dict[str, Any]]      # one per (round, arm, seed)
    curves: list[dict[str, Any]]    # one per (round, arm, seed, recorded step)
    seconds: float
    verdicts: dict[str, Any] = dataclasses.field(default_factory=dict)
    cells_report: str = ""


PRUNABLE = prune.matching("gen/W")


# -- the compiled programs (one per shape; masks and parameters are data) ---------------------
@lru_cache(maxsize=8)
def _programs(spec: MeanMatchingSpec, optimizer: str, mu: float, eta: float, scheme: Scheme,
              steps: int, record_every: int, rewind_step: int):
    """jit(vmap over seeds) of: initial parameters, fresh optimizer state, one training run."""
    inner_g, opt_d = optim.make(optimizer, mu), optim.make(optimizer, eta)

    def game_of(key, data):
        return MeanMatching.create(spec, jax.random.fold_in(key, 0), data)

    def init_params(key, data, which):
        gen, disc = game_of(key, data).init(jax.random.fold_in(key, 1 + which))
        return {"gen": gen, "disc": disc}

    def init_opt(params, mask):
        return (prune.masked(inner_g, mask["gen"]).init(params["gen"]), opt_d.init(params["disc"]))

    def train(key, data, params, mask, opt_state):
        game = game_of(key, data)
        step = make_step(game, prune.masked(inner_g, mask["gen"]), opt_d, scheme)
        state = TrainState(params["gen"], params["disc"], opt_state[0], opt_state[1], (), jnp.zeros((), jnp.int32))
        r0 = jnp.linalg.norm(game.residual(params["gen"]))

        def metrics(s):
            return {"residual": jnp.linalg.norm(game.residual(s.gen)) / r0}

        kr = jax.random.PRNGKey(0)  # full batch: the step ignores its key
        if rewind_step:
            mid, rec1 = run_dynamics(step, state, kr, rewind_step, record_every, metrics)
            final, rec2 = run_dynamics(step, mid, kr, steps - rewind_step, record_every, metrics)
            recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b[1:]]), rec1, rec2)
            rewind = {"gen": mid.gen, "disc": mid.disc}
        else:
            final, recs = run_dynamics(step, state, kr, steps, record_every, metrics)
            rewind = params
        jjt = jnp.stack([masked_jjt_mean_matching(game, params["gen"], mask["gen"]),  # at the start point
                         masked_jjt_mean_matching(game, final.gen, mask["gen"])])  # and at the end
        moved = jnp.linalg.norm(final.gen["W"] - params["gen"]["W"]) / jnp.linalg.norm(params["gen"]["W"])
        return {"gen": final.gen, "disc": final.disc}, rewind, {**recs, "movement": moved}, jjt

    return (jax.jit(jax.vmap(init_params, in_axes=(0, None, None)), static_argnums=2),
            jax.jit(jax.vmap(init_opt)),
            jax.jit(jax.vmap(train, in_axes=(0, None, 0, 0, 0))))


def _keys(config: Config) -> jax.Array:
    base = jax.random.PRNGKey(config.seed)
    return jnp.stack([jax.random.fold_in(base, s) for s in range(config.seeds)])


def _data(config: Config) -> jax.Array:
    return teacher_data(jax.random.PRNGKey(config.data_seed), config.m, config.d, config.n_data,
                        width=config.teacher_width, phi=config.phi)


def _predicted(config: Config, jjt: np.ndarray) -> dict[str, float]:
    nan = float("nan")
    if config.optimizer != "sgd":
        p = masked_predicted_rates(jjt, config.mu, config.eta)
        return {**p, "rate_simple": nan, "rate_block": nan}  # no linear prediction for adaptive optimizers
    sch = "simultaneous" if config.scheme == "simultaneous" else config.order
    return masked_predicted_rates(jjt, config.mu, config.eta, sch)


def _arm_rows(config: Config, r: int, target: float, arm: str, run: prune.ArmRun) -> tuple[list, list]:
    recs, jjt = run.outcome.metrics
    W = np.asarray(run.mask["gen"]["W"], bool)
    rows, curves = [], []
    for s in range(config.seeds):
        res = np.asarray(recs["residual"][s], float)
        steps = np.asarray(recs["step"][s])
        diverged = not bool(np.all(np.asarray(recs["finite"][s])) and np.all(np.isfinite(res)))
        pred = _predicted(config, np.asarray(jjt[s, 0], float))
        lam_end = float(max(np.linalg.eigvalsh(np.asarray(jjt[s, 1], np.float64))[0], 0.0))
        final = float(res[-1]) if not diverged else float("nan")
        kept = int(W[s].sum())
        rows.append({
            "round": r, "arm": arm, "seed": s,
            "target_sparsity": target, "sparsity": 1.0 - kept / W[s].size, "kept": kept,
            "live_units": int(W[s].any(axis=1).sum()), "m": config.m,
            "final_residual": final,
            "measured_rate": tail_rate(steps, res, config.floor) if not diverged else float("nan"),
            "predicted_rate": pred["rate_block"], "predicted_rate_simple": pred["rate_simple"],
            "lambda_min": pred["lambda_min"], "lambda_max": pred["lambda_max"], "lambda_min_end": lam_end,
            "movement": float(recs["movement"][s]) if not diverged else float("nan"),
            "converged": (not diverged) and final <= config.tol, "diverged": diverged,
        })
        curves += [{"round": r, "arm": arm, "seed": s, "step": int(t), "residual": float(v)}
                   for t, v in zip(steps, res)]
    return rows, curves


def run(config: Config = Config(), progress: bool = True) -> Results:
    """IMP rounds 0..rounds; finished rounds in ``out_dir/cells`` are reused (each cell holds
    the round's rows and the IMP state after it, so a killed run resumes to the same numbers)."""
    t0 = time.perf_counter()
    common.check_out_dir(config.out_dir)
    ctx = jax.enable_x64(True) if config.x64 else contextlib.nullcontext()
    store = common.CellStore(config.out_dir, config)
    rows: list[dict] = []
    curves: list[dict] = []
    with ctx:
        init_params, init_opt, train = _programs(config.spec, config.optimizer, config.mu, config.eta,
                                                 config.scheme_obj, config.steps, config.record_every,
                                                 config.rewind_step)
        keys, data = _keys(config), _data(config)
        params0 = jax.device_get(init_params(keys, data, 0))
        fresh = jax.device_get(init_params(keys, data, 1))

        def train_fn(params, mask, opt_state):
            final, rewind, recs, jjt = jax.device_get(train(keys, data, params, mask, opt_state))
            return prune.TrainOutcome(final, rewind, (recs, jjt))

        imp = prune.IMP(config.imp, train_fn, init_opt, prunable=PRUNABLE, members=config.seeds, fresh=fresh)
        state = imp.init(params0)
        for r in common.progress(range(config.rounds + 1), desc="IMP rounds", enabled=progress):
            cell = store.get(f"round{r}")
            if cell is None:
                state, runs = imp.step(state)
                target = config.imp.target_sparsity(r)
                rr, cc = [], []
                for arm, arm_run in runs.items():
                    a, b = _arm_rows(config, r, target, arm, arm_run)
                    rr += a
                    cc += b
                cell = store.put(f"round{r}", {"rows": rr, "curves": cc,
                                               "state": prune.state_to_jsonable(state, params0)})
            else:
                state = prune.state_from_jsonable(cell["state"], params0)
            rows += cell["rows"]
            curves += cell["curves"]
    res = Results(config, rows, curves, time.perf_counter() - t0, cells_report=store.report())
    res.verdicts = verdicts(res)
    return res


# -- analysis --------------------------------------------------------------------------------
def per_round(results: Results) -> list[dict[str, Any]]:
    """One row per (round, arm): medians over seeds of the non-diverged runs."""
    out = []
    for r in range(results.config.rounds + 1):
        for arm in ARMS:
            rs = [x for x in results.rows if x["round"] == r and x["arm"] == arm]
            if not rs:
                continue
            ok = [x for x in rs if not x["diverged"]]
            med = lambda key: float(np.nanmedian([x[key] for x in ok])) if ok and any(
                np.isfinite(x[key]) for x in ok) else float("nan")
            out.append({"round": r, "arm": arm, "sparsity": float(np.mean([x["sparsity"] for x in rs])),
                        "live": med("live_units"), "seeds": len(rs),
                        "converged": sum(x["converged"] for x in rs), "diverged": sum(x["diverged"] for x in rs),
                        "final_res": med("final_residual"), "rate_meas": med("measured_rate"),
                        "rate_pred": med("predicted_rate"), "lam_min": med("lambda_min"),
                        "lam_min_end": med("lambda_min_end"), "movement": med("movement")})
    return out


CONTROL_WORDS = {"random": "a random mask with the same layer counts, rewound the same way",
                 "reinit": "the ticket's mask on a fresh initialization"}


def compare(results: Results, r: int, control: str) -> dict[str, Any]:
    """Paired comparison at round r: δ_s = (ρ_control − ρ_ticket) / (1 − ρ_dense) per seed.

    δ > 0: the ticket contracts faster per step, by that fraction of the dense network's
    per-step decrease. The interval is the percentile bootstrap of mean δ over seeds
    (:func:`overparam.claims.bootstrap_mean`, level ``ci``); with the pinned ``margin`` the
    outcome is ``faster`` (interval above +margin), ``slower`` (below −margin), ``same``
    (inside [−margin, +margin]) or ``inconclusive`` (straddles a margin; too few seeds).
    The claim "the ticket converges faster" is also kept as a :class:`overparam.claims.Verdict`.
    """
    cfg = results.config
    by = {(x["round"], x["arm"], x["seed"]): x for x in results.rows}
    deltas, conv = [], {"ticket": 0, control: 0}
    for s in range(cfg.seeds):
        dense = by[(0, "ticket", s)]["measured_rate"]
        t, c = by.get((r, "ticket", s)), by.get((r, control, s))
        if t is None or c is None:
            continue
        conv["ticket"] += bool(t["converged"])
        conv[control] += bool(c["converged"])
        d = (c["measured_rate"] - t["measured_rate"]) / (1.0 - dense)
        if np.isfinite(d):
            deltas.append(d)
    out = {"round": r, "control": control,
           "sparsity": float(np.mean([by[(r, "ticket", s)]["sparsity"] for s in range(cfg.seeds)])),
           "paired_seeds": len(deltas), "converged_ticket": conv["ticket"], "converged_control": conv[control]}
    mean = float(np.mean(deltas)) if deltas else float("nan")
    problem = None if len(deltas) >= 3 else f"only {len(deltas)} seeds with both rates measured (need 3)"
    lo, hi = claims.bootstrap_mean(deltas, n_boot=cfg.n_boot, seed=cfg.boot_seed + 1000 * r,
                                   level=cfg.ci) if not problem else (float("nan"), float("nan"))
    v = claims.verdict(
        f"ticket_faster_than_{control}_round{r}",
        f"at sparsity {out['sparsity']:.3f} the ticket converges faster than {CONTROL_WORDS[control]}",
        "mean over seeds of (rho_control - rho_ticket) / (1 - rho_dense)", mean, (lo, hi),
        f"{cfg.ci:.0%} percentile bootstrap over seeds", cfg.margin, "above",
        {"n": len(deltas), "seeds": cfg.seeds}, problem=problem, threshold_source="sims/lottery_toy.toml: margin")
    if problem:
        outcome, reason = "inconclusive", problem
    elif v.outcome == "supported":
        outcome, reason = "faster", v.reason
    elif claims.decide((lo, hi), -cfg.margin, "below")[0] == "supported":
        outcome, reason = "slower", claims.decide((lo, hi), -cfg.margin, "below")[1]
    elif claims.decide((lo, hi), (-cfg.margin, cfg.margin), "within")[0] == "supported":
        outcome, reason = "same", claims.decide((lo, hi), (-cfg.margin, cfg.margin), "within")[1]
    else:
        outcome, reason = "inconclusive", f"interval [{lo:.4g}, {hi:.4g}] straddles a margin of +-{cfg.margin}"
    return {**out, "mean_delta": mean, "lo": lo, "hi": hi, "outcome": outcome, "reason": reason,
            "claim": v.to_json()}


def verdicts(results: Results) -> dict[str, Any]:
    """The ticket against each control at every pruned round, and the prediction's accuracy."""
    cfg = results.config
    comps = [compare(results, r, c) for r in range(1, cfg.rounds + 1) for c in CONTROLS]
    by_control = {}
    for c in CONTROLS:
        words: dict[str, list[int]] = {"faster": [], "same": [], "slower": [], "inconclusive": []}
        for x in comps:
            if x["control"] == c:
                words[x["outcome"]].append(x["round"])
        by_control[c] = words
    ok = [x for x in results.rows if np.isfinite(x["measured_rate"]) and np.isfinite(x["predicted_rate"])
          and x["live_units"] >= cfg.m and x["predicted_rate"] < 1.0]
    rel = [abs(x["measured_rate"] - x["predicted_rate"]) / (1.0 - x["predicted_rate"]) for x in ok]
    below = [x for x in results.rows if x["live_units"] < cfg.m]
    return {
        "comparisons": comps,
        "rounds_by_outcome": by_control,
        "median_relative_rate_error": float(np.median(rel)) if rel else float("nan"),
        "runs_with_rate_prediction": len(ok),
        "runs_below_m_live_units": len(below),
        "converged_below_m_live_units": int(sum(x["converged"] for x in below)),
        "margin": cfg.margin, "ci": cfg.ci,
    }


def summary(results: Results) -> str:
    cfg = results.config
    v = results.verdicts
    cols = ["round", "arm", "sparsity", "live", "converged", "final_res", "rate_meas", "rate_pred", "lam_min",
            "lam_min_end", "movement"]
    lines = [
        f"lottery toy: k={cfg.k} m={cfg.m} d={cfg.d} n={cfg.n} phi={cfg.phi} optimizer={cfg.optimizer} "
        f"scheme={cfg.scheme} mu={cfg.mu} eta={cfg.eta} steps={cfg.steps} seeds={cfg.seeds} rounds={cfg.rounds} "
        f"p={cfg.prune_fraction} rewind={'init' if cfg.rewind_step == 0 else f'step {cfg.rewind_step}'} "
        f"({results.seconds:.1f} s; {results.cells_report})",
        common.format_table(per_round(results), cols, ".4g"),
        "",
        f"paired by seed: delta = (rho_control - rho_ticket) / (1 - rho_dense); {cfg.ci:.0%} bootstrap interval "
        f"over {cfg.seeds} seeds; margin +-{cfg.margin} (sims/lottery_toy.toml)",
        common.format_table(v["comparisons"], ["round", "control", "sparsity", "mean_delta", "lo", "hi", "outcome",
                                               "converged_ticket", "converged_control"], ".3g"),
        "",
    ]
    for c in CONTROLS:
        w = v["rounds_by_outcome"][c]
        name = "the random mask (same counts)" if c == "random" else "the ticket's mask on a fresh init"
        lines.append(f"VERDICT ticket vs {name}: faster at rounds {w['faster'] or 'none'}; same at "
                     f"{w['same'] or 'none'}; slower at {w['slower'] or 'none'}; inconclusive at "
                     f"{w['inconclusive'] or 'none'}")
    lines += [
        f"masked-Jacobian prediction: median |rho_meas - rho_pred| / (1 - rho_pred) = "
        f"{v['median_relative_rate_error']:.3g} over {v['runs_with_rate_prediction']} runs with >= m live units",
        f"runs with fewer than m = {cfg.m} live hidden units: {v['runs_below_m_live_units']}, of which "
        f"{v['converged_below_m_live_units']} converged (theory: none, rank J_M J_M^T <= live units)",
    ]
    diverged = sum(x["diverged"] for x in results.rows)
    if diverged:
        lines.append(f"WARNING: {diverged} runs diverged (NaN/Inf); excluded from medians, listed in summary.csv")
    return "\n".join(lines)


def plot(results: Results):
    """Final residual, per-step decrease (measured and predicted) and live units vs sparsity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.config
    table = per_round(results)
    dense = [t for t in table if t["round"] == 0]
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    marks = {"ticket": "o-", "random": "s-", "reinit": "^-"}
    for i, arm in enumerate(ARMS):
        t = dense + [x for x in table if x["arm"] == arm and x["round"] > 0]
        dens = np.array([100 * (1 - x["sparsity"]) for x in t])
        ax[0].semilogy(dens, [max(x["final_res"], 1e-12) for x in t], marks[arm], color=f"C{i}", label=arm, ms=4)
        ax[1].semilogy(dens, [max(1 - x["rate_meas"], 1e-7) for x in t], marks[arm], color=f"C{i}",
                       label=f"{arm} measured", ms=4)
        ax[1].semilogy(dens, [max(1 - x["rate_pred"], 1e-7) for x in t], "--", color=f"C{i}", alpha=0.7,
                       label=f"{arm} predicted (masked JJᵀ)")
        ax[2].plot(dens, [x["live"] for x in t], marks[arm], color=f"C{i}", label=arm, ms=4)
    ax[0].axhline(cfg.tol, color="C3", ls=":", label="tol")
    ax[0].set(ylabel="final ‖r_T‖ / ‖r_0‖ (median)", title="final residual")
    ax[1].set(ylabel="per-step decrease 1 − ρ (median)", title="measured vs predicted rate")
    ax[2].axhline(cfg.m, color="k", ls=":", label=f"m = {cfg.m}")
    ax[2].set(ylabel="live hidden units (median)", title="rows of W with a surviving weight")
    for a in ax[:3]:
        a.set_xscale("log")
        a.invert_xaxis()
        a.set_xlabel("weights remaining (%)")
        a.legend(fontsize=6)
    cmap = plt.get_cmap("viridis")
    for r in range(cfg.rounds + 1):
        c = [x for x in results.curves if x["round"] == r and x["arm"] == "ticket" and x["seed"] == 0]
        ax[3].semilogy([x["step"] for x in c], [max(x["residual"], 1e-12) for x in c],
                       color=cmap(r / max(cfg.rounds, 1)), lw=0.8,
                       label=f"r={r}" if r in (0, cfg.rounds // 2, cfg.rounds) else None)
    ax[3].set(xlabel="step", ylabel="‖r_t‖ / ‖r_0‖", title="ticket residual per round (seed 0)")
    ax[3].legend(fontsize=6)
    fig.tight_layout()
    return fig


def save(results: Results) -> list[Path]:
    out = Path(results.config.out_dir)
    fig = plot(results)
    paths = [
        common.write_csv(out / "summary.csv", results.rows),
        common.write_csv(out / "per_round.csv", per_round(results)),
        common.write_csv(out / "curves.csv", results.curves),
        common.write_json(out / "results.json", {"per_round": per_round(results), "verdicts": results.verdicts,
                                                 "rows": results.rows, "seconds": results.seconds}),
        common.write_json(out / "manifest.json", common.manifest(NAME, results.config, seconds=results.seconds)),
        *common.save_figure(fig, out / "lottery_toy"),
    ]
    return paths
