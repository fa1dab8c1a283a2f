"""Width sweep: our one-program simulator against a plain numpy GDA loop, timed fairly.

Both sides run the same config (the study's defaults unless overridden) on the same random
instances (V, Z, W₀ and x̄ from the study's draws program), so the final residuals agree and
the timing compares like with like. Printed:

* ours in process: cold (compile included, persistent cache off) and warm;
* the numpy loop with numpy's BLAS at 1 thread and at its default thread count
  (threadpoolctl), both shown; the ratios use the faster (many BLAS threads on these tiny
  matrices are often slower, and much slower on a loaded machine); the BLAS library and
  kernel threadpoolctl reports are printed;
* the achieved GFLOP/s at the widest width (4·n·d·k flops per step and seed: the forward
  Z·W and the backward Zᵀ·1[ZW>0]) and its fraction of a same-shape pair of matmuls run in
  a compiled loop in the same process (the ceiling XLA:CPU reaches on exactly these shapes);
* the end-to-end time of ``python -m overparam.simulate width-sweep`` in a new process:
  without the compile cache, with an empty cache, and with the cache warm;
* the targets of issue 11, each marked met / not met, with the machine's load.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf

from overparam import compile_cache
from overparam.studies import width_sweep as ws
from overparam.studies.config import from_mapping

DESCRIPTION = "width-sweep study vs a numpy GDA loop (1 and default BLAS threads), GFLOP/s vs matmul, CLI end to end"

_NP_ACT = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "softplus": (lambda x: np.logaddexp(0, x), lambda x: 1 / (1 + np.exp(-x))),
    "gelu": (lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
             lambda x: 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
}

#: issue 11's targets on 2 cores (printed, never asserted in a timed test)
TARGETS = {"e2e_no_cache_s": 10.0, "e2e_cache_s": 4.0, "warm_ratio": 7.0, "warm_ratio_free": 10.0,
           "matmul_fraction": 0.40}


def numpy_gda(V, Z, xbar, W, phi, mu, eta, steps, record_every):
    """Simultaneous GDA on h(W, d) = ⟨d, V mean φ(Wz)/√k − x̄⟩ − ½‖d‖², one Python step at a time."""
    act, dact = _NP_ACT[phi]
    k, n = W.shape[0], Z.shape[0]
    d = np.zeros(V.shape[0], W.dtype)
    res = []
    for t in range(steps + 1):
        pre = Z @ W.T
        r = V @ act(pre).mean(0) / math.sqrt(k) - xbar
        if t % record_every == 0:
            res.append(np.linalg.norm(r))
        if t == steps:
            break
        gW = (dact(pre) * (V.T @ d)).T @ Z / (n * math.sqrt(k))
        W, d = W - mu * gW, d + eta * (r - d)
    return np.asarray(res)


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of numpy's BLAS (library, version, kernel architecture, threads)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: i.get(k) for k in keep} for i in threadpool_info() if i.get("user_api") == "blas"]


def _blas_limit(threads: int | None):
    from contextlib import nullcontext

    if threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def time_numpy(cfg: ws.Config, inst: dict, numpy_seeds: int, threads: int | None) -> tuple[float, dict]:
    """Seconds for the first ``numpy_seeds`` seeds of every width, and their final relative residuals."""
    t_np, finals = 0.0, {}
    with _blas_limit(threads):
        for k in cfg.widths:
            for s in range(numpy_seeds):
                V, Z, W = (np.asarray(inst[k][a][s], np.float32) for a in ("V", "Z", "W"))
                xbar = np.asarray(inst[k]["xbar"][s], np.float32)
                t0 = time.perf_counter()
                res = numpy_gda(V, Z, xbar, W, cfg.phi, np.float32(cfg.mu), np.float32(cfg.eta), cfg.steps,
                                cfg.record_every)
                t_np += time.perf_counter() - t0
                finals[(k, s)] = float(res[-1] / res[0])
    return t_np, finals


def flops_per_step(cfg: ws.Config, k: int) -> float:
    """The two (n·d·k) matmuls of a GDA step: forward Z·W and backward Zᵀ·φ'(ZW), 2 flops per FMA."""
    return 4.0 * cfg.n * cfg.d * k


def matmul_ceiling(cfg: ws.Config, k: int, steps: int) -> float:
    """GFLOP/s of a compiled loop doing only the step's two matmuls, same shapes and batch (seeds)."""
    S = cfg.seeds
    rng = np.random.default_rng(0)
    Z = jnp.asarray(rng.normal(size=(S, cfg.n, cfg.d)), jnp.float32)
    W = jnp.asarray(rng.normal(size=(S, cfg.d, k)), jnp.float32)

    @jax.jit
    def loop(W):
        def body(_, W):
            pre = jnp.einsum("snd,sdk->snk", Z, W)
            return W - 1e-6 * jnp.einsum("snd,snk->sdk", Z, pre)
        return jax.lax.fori_loop(0, steps, body, W)

    jax.block_until_ready(loop(W))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(loop(W))
        best = min(best, time.perf_counter() - t0)
    return S * steps * flops_per_step(cfg, k) / best / 1e9


def end_to_end(argv: list[str], timeout: float = 600) -> dict[str, float]:
    """Wall seconds of ``python -m overparam.simulate width-sweep ARGV`` in new processes."""
    out: dict[str, float] = {}
    tmp = tempfile.mkdtemp(prefix="overparam-bench-")
    try:
        env = dict(os.environ)
        env[compile_cache.ENV_VAR] = os.path.join(tmp, "cache")
        runs = [("no compile cache", ["--no-compile-cache"]), ("compile cache, empty", []),
                ("compile cache, warm", [])]
        for i, (label, extra) in enumerate(runs):
            cmd = [sys.executable, "-m", "overparam.simulate", "width-sweep", *argv, "--out-dir",
                   os.path.join(tmp, f"out{i}"), "--no-progress", *extra]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            out[label] = time.perf_counter() - t0
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m overparam.bench width-sweep", description=DESCRIPTION)
    p.add_argument("--widths", default=None, help="override widths, e.g. 8,64,512 (default: the study's)")
    p.add_argument("--steps", type=int, default=None, help="override steps")
    p.add_argument("--seeds", type=int, default=None, help="override seeds")
    p.add_argument("--numpy-seeds", type=int, default=2,
                   help="seeds per width timed on the numpy side (the rest extrapolated per run; default 2)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end CLI timings (new processes)")
    args = p.parse_args(argv)
    over = {k: v for k, v in {"widths": args.widths, "steps": args.steps, "seeds": args.seeds}.items() if v is not None}
    cfg = from_mapping(ws.Config, over)
    if not ws._fast_path(cfg):
        print("the numpy reference covers SGD, simultaneous GDA, a linear discriminator and a 1-hidden-layer generator")
        return 2
    kmax = max(cfg.widths)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), widths={cfg.widths}, "
          f"seeds={cfg.seeds}, steps={cfg.steps}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    for b in blas_info():
        print(f"numpy BLAS: {b['internal_api']} {b['version']} kernel {b['architecture']}, "
              f"{b['num_threads']} threads by default")
    env_hint = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ}
    if env_hint:
        print(f"note: {env_hint} set in the environment (they pin the OpenBLAS kernel)")
    data = ws.load_data(cfg)
    inst = ws.draws(cfg, cfg.widths, data)

    # ours, cold: compile included (in-process caches cleared, persistent cache off), then warm
    cache_dir = compile_cache.active_dir()
    compile_cache.disable()
    ws._blocks_jit.cache_clear()
    ws._block_program.cache_clear()
    jax.clear_caches()
    t0 = time.perf_counter()
    ws.run_widths(cfg, cfg.widths, data)
    cold = time.perf_counter() - t0
    if cache_dir is not None:
        compile_cache.enable(cache_dir)
    warm = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        ours = ws.run_widths(cfg, cfg.widths, data)
        warm = min(warm, time.perf_counter() - t0)

    # widest width alone: achieved GFLOP/s vs the same-shape matmul loop
    wide = from_mapping(ws.Config, {**over, "widths": (kmax,)})
    ws.run_widths(wide, wide.widths, data)
    t_wide = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        ws.run_widths(wide, wide.widths, data)
        t_wide = min(t_wide, time.perf_counter() - t0)
    gf_ours = cfg.seeds * cfg.steps * flops_per_step(cfg, kmax) / t_wide / 1e9
    gf_mm = matmul_ceiling(cfg, kmax, cfg.steps)

    # numpy at 1 BLAS thread and at the default
    ns = max(1, min(args.numpy_seeds, cfg.seeds))
    per_setting, finals = {}, {}
    for label, threads in (("1 BLAS thread", 1), ("default BLAS threads", None)):
        if threads is not None and not blas_info():
            continue
        t, finals = time_numpy(cfg, inst, ns, threads)
        per_setting[label] = t * cfg.seeds / ns
    best = min(per_setting, key=per_setting.get)
    t_np = per_setting[best]
    max_diff = 0.0
    for k in cfg.widths:
        for s in range(ns):
            ref, rel = ours[k][0][s]["final_residual"], finals[(k, s)]
            if np.isfinite(ref) and max(rel, ref) > 1e-4:  # where float32 noise does not dominate
                max_diff = max(max_diff, abs(rel - ref) / ref)

    runs = len(cfg.widths) * cfg.seeds
    extra = f", {ns} of {cfg.seeds} seeds timed, extrapolated per run" if ns < cfg.seeds else ""
    print(f"numpy loop ({best}{extra}): {t_np:8.2f} s   {runs * cfg.steps / t_np:12.0f} steps*runs/s")
    print("                 by BLAS setting: " + ", ".join(f"{k} {v:.2f} s" for k, v in per_setting.items()))
    print(f"ours (cold, jit, no persistent cache): {cold:6.2f} s   ratio {t_np / cold:6.1f}x")
    print(f"ours (warm):                           {warm:6.2f} s   ratio {t_np / warm:6.1f}x   "
          f"({runs * cfg.steps / warm:,.0f} steps*runs/s)")
    print(f"widest width k={kmax}: {gf_ours:.1f} GFLOP/s achieved; same-shape matmul loop {gf_mm:.1f} GFLOP/s "
          f"-> {gf_ours / gf_mm:.0%} of it")
    print(f"agreement: max relative difference of final residuals (where > 1e-4) = {max_diff:.2e}")

    e2e: dict[str, float] = {}
    if not args.no_e2e:
        cli = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in over.items()]
        e2e = end_to_end(cli)
        print("end to end, new process (python -m overparam.simulate width-sweep" + (" " + " ".join(cli) if cli else "")
              + "): " + ", ".join(f"{k} {v:.1f} s" for k, v in e2e.items()))

    load = os.getloadavg()[0]
    print(f"\ntargets (issue 11, 2 cores; load average now {load:.2f}):")
    if e2e and not over:
        print(f"  default CLI end to end without compile cache <= {TARGETS['e2e_no_cache_s']:.0f} s: "
              f"{e2e['no compile cache']:.1f} s  {_met(e2e['no compile cache'] <= TARGETS['e2e_no_cache_s'])}")
        print(f"  default CLI end to end with compile cache <= {TARGETS['e2e_cache_s']:.0f} s: "
              f"{e2e['compile cache, warm']:.1f} s  {_met(e2e['compile cache, warm'] <= TARGETS['e2e_cache_s'])}")
    elif not over:
        print("  end-to-end targets: not measured (--no-e2e)")
    else:
        print("  end-to-end targets refer to the default config: run without overrides to check them")
    ratio = t_np / warm
    print(f"  warm sweep >= {TARGETS['warm_ratio']:.0f}x the fair numpy loop (>= {TARGETS['warm_ratio_free']:.0f}x "
          f"with both cores free): {ratio:.1f}x  {_met(ratio >= TARGETS['warm_ratio'])}")
    frac = gf_ours / gf_mm
    print(f"  widest width >= {TARGETS['matmul_fraction']:.0%} of the same-shape matmul: {frac:.0%}  "
          f"{_met(frac >= TARGETS['matmul_fraction'])}")
    return 0
