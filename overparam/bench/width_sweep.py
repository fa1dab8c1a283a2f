"""Width sweep: our jit + scan + vmap simulator against a plain numpy GDA loop.

Both sides run the same config (the study's defaults unless overridden) on the same random
instances (V, Z, W₀ and the data are taken from the JAX side), so the final residuals agree
and the timing compares like with like. Printed: wall time of each side, the ratio (with and
without our compile time) and steps·runs per second.
"""
from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf

from overparam.games.mean_matching import MeanMatching
from overparam.studies import width_sweep as ws
from overparam.studies.config import from_mapping

DESCRIPTION = "width-sweep study vs a straightforward numpy GDA loop (same config, one run)"

_NP_ACT = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "softplus": (lambda x: np.logaddexp(0, x), lambda x: 1 / (1 + np.exp(-x))),
    "gelu": (lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
             lambda x: 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
}


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m overparam.bench width-sweep", description=DESCRIPTION)
    p.add_argument("--widths", default=None, help="override widths, e.g. 8,64,512 (default: the study's)")
    p.add_argument("--steps", type=int, default=None, help="override steps")
    p.add_argument("--seeds", type=int, default=None, help="override seeds")
    args = p.parse_args(argv)
    over = {k: v for k, v in {"widths": args.widths, "steps": args.steps, "seeds": args.seeds}.items() if v is not None}
    cfg = from_mapping(ws.Config, over)
    if cfg.optimizer != "sgd" or cfg.scheme != "simultaneous" or cfg.disc != "linear" or cfg.depth != 1 or cfg.train_v:
        print("the numpy reference covers SGD, simultaneous GDA, a linear discriminator and a 1-hidden-layer generator")
        return 2
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), widths={cfg.widths}, "
          f"seeds={cfg.seeds}, steps={cfg.steps}")
    data = ws.load_data(cfg)

    # ours, cold: compile included (caches cleared), then warm
    ws._compiled.cache_clear()
    jax.clear_caches()
    t0 = time.perf_counter()
    for k in cfg.widths:
        ws.run_width(cfg, k, data)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = {k: ws.run_width(cfg, k, data)[0] for k in cfg.widths}
    warm = time.perf_counter() - t0

    # numpy: the same instances, seed by seed, width by width
    base = jax.random.PRNGKey(cfg.seed)
    t_np = 0.0
    max_diff = 0.0
    for k in cfg.widths:
        spec = cfg.spec(k)
        for s in range(cfg.seeds):
            key = jax.random.fold_in(jax.random.fold_in(base, k), s)
            kg, ki, _ = jax.random.split(key, 3)
            game = MeanMatching.create(spec, kg, jnp.asarray(data))
            gen0, _ = game.init(ki)
            V, Z, W = (np.asarray(a, np.float32) for a in (game.V, game.Z, gen0["W"]))
            xbar = np.asarray(game.target(), np.float32)
            t0 = time.perf_counter()
            res = numpy_gda(V, Z, xbar, W, cfg.phi, np.float32(cfg.mu), np.float32(cfg.eta), cfg.steps, cfg.record_every)
            t_np += time.perf_counter() - t0
            rel = res[-1] / res[0]
            ref = ours[k][s]["final_residual"]
            if np.isfinite(ref) and max(rel, ref) > 1e-4:  # compare where float32 noise does not dominate
                max_diff = max(max_diff, abs(rel - ref) / ref)
    runs = len(cfg.widths) * cfg.seeds
    print(f"numpy loop:        {t_np:8.2f} s   {runs * cfg.steps / t_np:12.0f} steps*runs/s")
    print(f"ours (cold, jit):  {cold:8.2f} s   {runs * cfg.steps / cold:12.0f} steps*runs/s   ratio {t_np / cold:6.1f}x")
    print(f"ours (warm):       {warm:8.2f} s   {runs * cfg.steps / warm:12.0f} steps*runs/s   ratio {t_np / warm:6.1f}x")
    print(f"agreement: max relative difference of final residuals (where > 1e-4) = {max_diff:.2e}")
    return 0
