"""Modes study: our jit(vmap(vmap(scan))) grid against a straightforward numpy loop.

For each family (neurons, ring) both sides run the same (η_G, η_D) grid × seeds × steps with
the same optimizer, recording the mode metric every ``record_every`` steps. Ours is timed on
the whole grid, cold (compile included) and warm. The numpy loop (hand-written gradients
and optimizer updates, one Python step at a time, run after run) is timed on a subset of
runs when the whole grid would be slow; the grid time is extrapolated per run and the
output says so. The numpy runs start from the same initial parameters as ours; for the
deterministic neurons family their final parameters are compared to ours as a check.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from typing import Any

import jax
import numpy as np

from overparam import compile_cache
from overparam.bench.width_sweep import blas_info
from overparam.errors import ConfigError
from overparam.studies import modes as study
from overparam.studies.config import from_mapping

DESCRIPTION = "modes study grid (neurons, ring) vs a straightforward numpy loop (same grid, one run)"

EPS_GRAFT = 1e-16


# -- numpy optimizers with the step size built in: the semantics of optim.make(name, lr) -------
class NumpyOptimizer:
    """sgd, nsgd_global, nsgd_tensor, adam, ada_nsgda, sgda_ada on dicts of numpy arrays.

    Returns the update Δ (to be added), with optax's Adam (bias-corrected, ε outside the
    root) and grafting ‖Δ_M‖/(‖Δ_D‖ + ε)·Δ_D per array.
    """

    def __init__(self, name: str, lr: float, params: dict, b1=0.9, b2=0.999, eps=1e-8):
        if name not in ("sgd", "nsgd_global", "nsgd_tensor", "adam", "ada_nsgda", "sgda_ada"):
            raise ConfigError(f"the numpy reference has no optimizer {name!r}")
        self.name, self.lr, self.b1, self.b2, self.eps = name, lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def _adam(self, g: dict) -> dict:
        self.t += 1
        out = {}
        for k, gk in g.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * gk
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * gk * gk
            mh = self.m[k] / (1 - self.b1 ** self.t)
            vh = self.v[k] / (1 - self.b2 ** self.t)
            out[k] = -self.lr * mh / (np.sqrt(vh) + self.eps)
        return out

    def update(self, g: dict) -> dict:
        lr = self.lr
        if self.name == "sgd":
            return {k: -lr * x for k, x in g.items()}
        if self.name == "nsgd_global":
            n = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
            return {k: (-lr * x / n if n > 0 else np.zeros_like(x)) for k, x in g.items()}
        if self.name == "nsgd_tensor":
            out = {}
            for k, x in g.items():
                n = np.linalg.norm(x)
                out[k] = -lr * x / n if n > 0 else np.zeros_like(x)
            return out
        a = self._adam(g)
        s = {k: -lr * x for k, x in g.items()}
        if self.name == "adam":
            return a
        mag, dirn = (a, s) if self.name == "ada_nsgda" else (s, a)
        return {k: np.linalg.norm(mag[k]) / (np.linalg.norm(dirn[k]) + EPS_GRAFT) * dirn[k] for k in g}


def _add(p: dict, u: dict) -> dict:
    return {k: p[k] + u[k] for k in p}


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


# -- neurons: exact-expectation gradients by hand -----------------------------------------------
_SIG = {
    "cubic": (lambda t: t ** 3, lambda t: 3 * t ** 2),
    "cubic_linear": (lambda t: t ** 3 + t, lambda t: 3 * t ** 2 + 1),
    "relu": (lambda t: np.maximum(t, 0), lambda t: (t > 0).astype(t.dtype)),
}


def neurons_grads(means, probs, gen: dict, disc: dict, sigma: str) -> tuple[dict, dict]:
    """∇_v L_G and ∇_(w,a) L_D of eq. L_G / L_D with exact expectations, written out."""
    f, df = _SIG[sigma]
    v, w, a = gen["v"], disc["w"], disc["a"]
    m = v.shape[0]
    tr, tf = means @ w.T, v @ w.T                       # (K, mD), (m, mD)
    dr, dfk = f(tr) @ a, f(tf) @ a                      # D(μ_j), D(v_k)
    cr = -probs * _sigmoid(-dr)                         # ∂L_D/∂D(μ_j)
    cf = _sigmoid(dfk) / m                              # ∂L_D/∂D(v_k)
    ga = f(tr).T @ cr + f(tf).T @ cf
    gw = (df(tr) * cr[:, None] * a).T @ means + (df(tf) * cf[:, None] * a).T @ v
    cg = -_sigmoid(-dfk) / m                            # ∂L_G/∂D(v_k)
    gv = (df(tf) * a * cg[:, None]) @ w
    return {"v": gv}, {"w": gw, "a": ga}


def numpy_neurons_run(game, gen: dict, disc: dict, optimizer: str, lr_g: float, lr_d: float,
                      steps: int, record_every: int, dtype=np.float64) -> tuple[dict, dict]:
    """Simultaneous GDA on the neurons game, one Python step at a time (exact expectations)."""
    means = np.asarray(game.means, dtype)
    probs = np.asarray(game.probs, dtype)
    U, alphas = np.asarray(game.U, dtype), np.asarray(game.spec.alphas, dtype)
    gen = {k: np.asarray(x, dtype) for k, x in gen.items()}
    disc = {k: np.asarray(x, dtype) for k, x in disc.items()}
    og, od = NumpyOptimizer(optimizer, lr_g, gen), NumpyOptimizer(optimizer, lr_d, disc)
    for t in range(1, steps + 1):
        gg, gd = neurons_grads(means, probs, gen, disc, game.spec.sigma)
        gen, disc = _add(gen, og.update(gg)), _add(disc, od.update(gd))
        if t % record_every == 0:
            numpy_neuron_modes(gen["v"], U, alphas)
    return gen, disc


def numpy_neuron_modes(v, U, alphas) -> np.ndarray:
    proj = v @ U.T
    cos = proj / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    return np.any((cos > 0.9) & (proj >= 0.5 * alphas) & (proj <= 1.5 * alphas), axis=0)


# -- ring: MLP forward and backward by hand -------------------------------------------------------
def mlp_forward(p: dict, x):
    """Activations of h_{l+1} = relu(h_l W_l + b_l), linear last layer; returns (out, cache)."""
    n = len(p) // 2
    hs, pres = [x], []
    for i in range(n):
        z = hs[-1] @ p[f"W{i}"] + p[f"b{i}"]
        pres.append(z)
        hs.append(np.maximum(z, 0) if i < n - 1 else z)
    return hs[-1], (hs, pres)


def mlp_backward(p: dict, cache, dout) -> tuple[dict, Any]:
    """(parameter gradients, input gradient) for the upstream gradient ``dout``."""
    hs, pres = cache
    n = len(p) // 2
    g = {}
    for i in reversed(range(n)):
        if i < n - 1:
            dout = dout * (pres[i] > 0)
        g[f"W{i}"] = hs[i].T @ dout
        g[f"b{i}"] = dout.sum(0)
        dout = dout @ p[f"W{i}"].T
    return g, dout


def numpy_mixture_run(game, gen: dict, disc: dict, optimizer: str, lr_g: float, lr_d: float, steps: int,
                      record_every: int, rng: np.random.Generator, dtype=np.float32) -> tuple[dict, dict]:
    """Simultaneous SGDA-type training of the ring/grid GAN (eq. L_D, L_G), one step at a time."""
    s = game.spec
    centers = np.asarray(game.centers, dtype)
    gen = {k: np.asarray(x, dtype) for k, x in gen.items()}
    disc = {k: np.asarray(x, dtype) for k, x in disc.items()}
    og, od = NumpyOptimizer(optimizer, lr_g, gen), NumpyOptimizer(optimizer, lr_d, disc)
    b = s.batch_size
    z_eval = rng.standard_normal((study.N_EVAL, s.latent_dim)).astype(dtype)
    for t in range(1, steps + 1):
        z = rng.standard_normal((b, s.latent_dim)).astype(dtype)
        x = centers[rng.integers(0, len(centers), b)] + s.std * rng.standard_normal((b, 2)).astype(dtype)
        fake, gcache = mlp_forward(gen, z)
        logits, dcache = mlp_forward(disc, np.concatenate([x, fake]))
        lr_, lf = logits[:b, 0], logits[b:, 0]
        dl = np.concatenate([-_sigmoid(-lr_), _sigmoid(lf)])[:, None] / b
        gd, _ = mlp_backward(disc, dcache, dl)
        dg = np.concatenate([np.zeros_like(lr_), -_sigmoid(-lf)])[:, None] / b
        _, dx = mlp_backward(disc, dcache, dg)
        gg, _ = mlp_backward(gen, gcache, dx[b:])
        gen, disc = _add(gen, og.update(gg)), _add(disc, od.update(gd))
        if t % record_every == 0:
            out, _ = mlp_forward(gen, z_eval)
            d2 = ((out[:, None, :] - centers[None]) ** 2).sum(-1)
            near = d2 <= (3 * s.std) ** 2
            _ = (near.sum(0) >= 20, near.any(1).mean())
    return gen, disc


# -- the benchmark -------------------------------------------------------------------------------
@contextlib.contextmanager
def _blas_threads(threads: int | None):
    """Limit numpy's BLAS threads (threadpoolctl); yields a label, or None if it cannot."""
    if threads is None:
        yield "default BLAS threads"
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it only the default setting is timed
        yield None
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield f"{threads} BLAS thread"


def _init_params(game, n_seeds: int):
    keys = study.seed_keys(n_seeds)
    return [game.init(jax.random.split(keys[s])[0]) for s in range(n_seeds)]


def bench_family(family: str, optimizer: str, overrides: dict, numpy_runs: int) -> dict[str, Any]:
    cfg = from_mapping(study.Config, {"family": family, "optimizers": (optimizer,), **overrides})
    r = cfg.resolved
    n_runs = len(cfg.lrs) ** 2 * r["seeds"]
    # ours, cold (compile included, persistent compile cache off), then from a warm persistent
    # cache (a new process's case after a first run), then warm in process
    cache_dir = compile_cache.active_dir()
    compile_cache.disable()
    study._cached_runner.cache_clear()
    jax.clear_caches()
    t0 = time.perf_counter()
    ours = study.run_optimizer(cfg, optimizer)
    cold = time.perf_counter() - t0
    cold_cached = float("nan")
    if cache_dir is not None:
        compile_cache.enable(cache_dir)
        study._cached_runner.cache_clear()
        jax.clear_caches()
        study.run_optimizer(cfg, optimizer)  # fills the persistent cache
        study._cached_runner.cache_clear()
        jax.clear_caches()
        t0 = time.perf_counter()
        study.run_optimizer(cfg, optimizer)
        cold_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    study.run_optimizer(cfg, optimizer)
    warm = time.perf_counter() - t0

    # numpy: the first `numpy_runs` runs of the grid in grid order, from our initial parameters,
    # timed with numpy's BLAS limited to one thread and with its default threads; the faster
    # setting is the baseline (many BLAS threads on small matrices can be far slower).
    game, _, _ = study.make_game(cfg)
    inits = _init_params(game, r["seeds"])
    lrs = cfg.lrs
    cells = [(i, j, s) for i in range(len(lrs)) for j in range(len(lrs)) for s in range(r["seeds"])]
    timed = cells[: min(numpy_runs, n_runs)]
    per_run = {}
    for threads in (1, None):
        with _blas_threads(threads) as label:
            if label is None:
                continue
            t0 = time.perf_counter()
            for n, (i, j, s) in enumerate(timed):
                gen, disc = inits[s]
                if family == "neurons":
                    numpy_neurons_run(game, gen, disc, optimizer, lrs[i], lrs[j], r["steps"], cfg.record_every,
                                      dtype=np.float32)
                else:
                    numpy_mixture_run(game, gen, disc, optimizer, lrs[i], lrs[j], r["steps"], cfg.record_every,
                                      np.random.default_rng(n))
            per_run[label] = (time.perf_counter() - t0) / len(timed)
    check = float("nan")
    if family == "neurons":  # deterministic: compare a short run's final generator with ours
        check = _neurons_check(cfg, game, inits)
    best = min(per_run, key=per_run.get)
    est = per_run[best] * n_runs
    return {"family": family, "optimizer": optimizer, "grid": f"{len(lrs)}x{len(lrs)}", "seeds": r["seeds"],
            "steps": r["steps"], "runs": n_runs, "cold_s": cold, "cold_cached_s": cold_cached, "warm_s": warm, "numpy_runs_timed": len(timed),
            "numpy_s_per_run": per_run[best], "numpy_s_per_run_by_blas_threads": per_run, "numpy_blas": best,
            "numpy_grid_s": est, "numpy_extrapolated": len(timed) < n_runs,
            "ratio_cold": est / cold, "ratio_warm": est / warm,
            "ours_steps_runs_per_s": r["steps"] * n_runs / warm,
            "ours_cold_steps_runs_per_s": r["steps"] * n_runs / cold,
            "numpy_steps_runs_per_s": r["steps"] / per_run[best], "check_max_abs_diff": check,
            "modes_final_mean": float(ours["per_mode"][..., -1, :].sum(-1).mean())}


def _neurons_check(cfg, game, inits) -> float:
    """max |v_numpy − v_ours| after 50 steps at the grid's middle step size, seed 0 (float64 numpy).

    Only a short horizon is comparable: the dynamics are chaotic at larger step sizes, so
    float32 rounding differences grow exponentially (tests/test_modes.py checks agreement).
    """
    import jax.numpy as jnp

    steps = 50
    lr = float(cfg.lrs[len(cfg.lrs) // 2])
    small = study.grid_runner(game, lambda s: {}, cfg.optimizers[0], cfg.scheme_obj, steps, steps)
    gen, _, _ = small(jnp.asarray([lr], jnp.float32), jnp.asarray([lr], jnp.float32), study.seed_keys(1))
    g_np, _ = numpy_neurons_run(game, *inits[0], cfg.optimizers[0], lr, lr, steps, steps)
    return float(np.max(np.abs(np.asarray(gen["v"][0, 0], float) - g_np["v"])))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m overparam.bench modes", description=DESCRIPTION)
    p.add_argument("--families", default="neurons,ring", help="comma-separated: neurons, ring, grid")
    p.add_argument("--optimizer", default="nsgd_global", help="optimizer of both sides")
    p.add_argument("--steps", type=int, default=None, help="override steps (default: the study's)")
    p.add_argument("--seeds", type=int, default=None, help="override seeds (default: the study's)")
    p.add_argument("--n-lr", type=int, default=None, help="override grid points per player (default 7)")
    p.add_argument("--numpy-runs", type=int, default=None,
                   help="runs timed on the numpy side per BLAS setting (default: neurons 20, ring 2); "
                   "the rest is extrapolated per run")
    p.add_argument("--targets", action="store_true",
                   help="also time each family's default study (all optimizers, study.run) cold, without the "
                   "persistent compile cache, against issue 11's targets (neurons <= 10 s, ring <= 8 min)")
    args = p.parse_args(argv)
    over = {k: v for k, v in {"steps": args.steps, "tuning_seeds": args.seeds, "n_lr": args.n_lr}.items() if v is not None}
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), optimizer={args.optimizer}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    for b in blas_info():
        print(f"numpy BLAS: {b['internal_api']} {b['version']} kernel {b['architecture']}, "
              f"{b['num_threads']} threads by default")
    try:
        for fam in [f.strip() for f in args.families.split(",") if f.strip()]:
            nr = args.numpy_runs if args.numpy_runs is not None else (20 if fam == "neurons" else 2)
            res = bench_family(fam, args.optimizer, over, max(nr, 1))
            print(_report(res))
        if args.targets:
            print("\ntargets (issue 11, 2 cores; default study, all optimizers, cold, no persistent cache):")
            for fam in [f.strip() for f in args.families.split(",") if f.strip()]:
                if fam not in TARGETS_S:
                    continue
                secs = time_default_study(fam)
                ok = "met" if secs <= TARGETS_S[fam] else "NOT met"
                print(f"  {fam} default grid <= {TARGETS_S[fam]:.0f} s: {secs:.1f} s  {ok} "
                      f"(load average {os.getloadavg()[0]:.2f})")
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    return 0


#: issue 11's cold-time targets of the default study per family (seconds, 2 cores)
TARGETS_S = {"neurons": 10.0, "ring": 480.0}


def time_default_study(family: str) -> float:
    """Seconds of ``study.run`` for the family's default config (every optimizer), compile included."""
    import tempfile

    cache_dir = compile_cache.active_dir()
    compile_cache.disable()
    study._cached_runner.cache_clear()
    jax.clear_caches()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = from_mapping(study.Config, {"family": family, "out_dir": tmp})
            t0 = time.perf_counter()
            study.run(cfg, progress=False)
            return time.perf_counter() - t0
    finally:
        if cache_dir is not None:
            compile_cache.enable(cache_dir)


def _report(r: dict) -> str:
    timed = (f"{r['numpy_runs_timed']} of {r['runs']} runs timed, extrapolated per run"
             if r["numpy_extrapolated"] else f"all {r['runs']} runs timed")
    lines = [
        f"\n{r['family']}: grid {r['grid']} x {r['seeds']} seeds = {r['runs']} runs x {r['steps']} steps, "
        f"optimizer {r['optimizer']} (mean modes at the end: {r['modes_final_mean']:.2f})",
        f"  ours  (jit+vmap+scan): {r['cold_s']:.2f} s cold (compile included, no persistent cache), "
        f"{r['cold_cached_s']:.2f} s from the persistent compile cache, {r['warm_s']:.2f} s warm; "
        f"{r['ours_steps_runs_per_s']:,.0f} steps*runs/s warm ({r['ours_cold_steps_runs_per_s']:,.0f} cold)",
        f"  numpy loop:            {r['numpy_s_per_run']:.3f} s/run ({timed}; {r['numpy_blas']}) -> "
        f"{r['numpy_grid_s']:.1f} s for the grid; {r['numpy_steps_runs_per_s']:,.0f} steps*runs/s",
        "                         s/run by BLAS setting: " + ", ".join(
            f"{k} {v:.3f}" for k, v in r["numpy_s_per_run_by_blas_threads"].items()),
        f"  ratio numpy/ours:      {r['ratio_cold']:.1f}x cold, {r['ratio_warm']:.1f}x warm",
    ]
    if math.isfinite(r["check_max_abs_diff"]):
        lines.append(f"  check: max |v_numpy - v_ours| after 50 steps (middle step size, seed 0): {r['check_max_abs_diff']:.2e}")
    return "\n".join(lines)
