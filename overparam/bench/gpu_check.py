"""One prepared check for a GPU machine: ``python -m overparam.bench gpu-check --out DIR``.

Meant for a machine where jax (CUDA), flax, optax, orbax, torch, torchvision and
scikit-learn are installed and nothing can be downloaded; it finishes in under 8 minutes on
one GPU. Every section is timed and recorded; a section that fails records its error and the
others still run. Sections:

1. ``device``: jax devices, backend and kind, memory, library versions, the matmul precision
   in force (jax's default matmul precision; torch's TF32 switches for matmul and cuDNN).
2. ``conv_gan``: ``python -m overparam.bench conv-gan`` (DCGAN 32×32, batch 64, n_disc 2,
   Adam; ours vs PyTorch eager, ≥ 200 timed generator steps after warm-up; goal ≥ 1.5×);
   skipped with a note when torch is absent.
3. ``width_scaling``: train steps/s of our trainer (:class:`overparam.bridge.trainer.Trainer`,
   DCGAN 32×32, batch 64) against the width multiplier 1/8, 1/4, 1/2, 1 (warm-up call
   excluded).
4. ``stochasticity``: a short run of the stochasticity study on CIFAR-format batches
   (``data_batch_1..5``, ``test_batch``) written from the built-in digits (upscaled to
   32×32×3), i.e. the study's real CIFAR-10 loading path end to end.

Everything goes into ``DIR/gpu_check.json`` (rewritten after each section) and the printed
log into ``DIR/gpu_check.log``. ``--tiny`` runs a CPU-sized version (the test suite uses it).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import pickle
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from overparam.records import write_json

DESCRIPTION = "prepared GPU check: device, conv-gan vs torch, steps/s vs width, a short stochasticity run (one JSON)"

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

#: full (GPU) and tiny (CPU, test suite) sizes
SIZES = {
    "full": {"conv_gan": ["--steps", "200", "--steps-per-call", "20", "--warmup", "20"],
             "widths": (0.125, 0.25, 0.5, 1.0), "resolution": 32, "batch": 64, "steps_per_call": 50,
             "stoch": {"n": 256, "resolution": 32, "steps": 600, "eval_every": 200, "width": 0.25,
                       "latent_dim": 128, "batch_divisors": (1, 4), "noise_divisor": 1},
             "per_image": 100},
    "tiny": {"conv_gan": ["--steps", "2", "--steps-per-call", "1", "--warmup", "1", "--batch", "4",
                          "--n-data", "8", "--width", "0.0625"],
             "widths": (0.03125, 0.0625), "resolution": 8, "batch": 4, "steps_per_call": 2,
             "stoch": {"n": 8, "resolution": 8, "steps": 4, "eval_every": 2, "width": 0.0625, "latent_dim": 8,
                       "batch_divisors": (1, 2), "noise_divisor": 1},
             "per_image": 2},
}


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "torchvision", "scikit-learn", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict[str, Any]:
    """The accelerator as jax (and torch, when present) see it, and the precision settings."""
    import jax

    devs = jax.devices()
    info: dict[str, Any] = {
        "backend": jax.default_backend(), "n_devices": len(devs), "device_kind": devs[0].device_kind,
        "devices": [str(d) for d in devs], "host": platform.node(), "python": sys.version.split()[0],
        "cpus": os.cpu_count(), "versions": _versions(),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
    }
    try:
        stats = devs[0].memory_stats() or {}
        info["memory_bytes_limit"] = stats.get("bytes_limit")
    except Exception:  # not every backend reports memory
        info["memory_bytes_limit"] = None
    try:
        import torch

        info["torch_cuda"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
        info["torch_tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        info["torch_tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    except ImportError:
        info["torch_cuda"] = None
    return info


def conv_gan(size: dict) -> dict[str, Any]:
    """The conv-gan benchmark's printout and its ratio line (skipped without torch)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"skipped": "torch is not installed"}
    from overparam.bench import conv_gan as bench

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = bench.main(list(size["conv_gan"]))
    text = buf.getvalue()
    print(text, end="")
    ratio = None
    for line in text.splitlines():
        if "ratio ours / PyTorch eager =" in line:
            ratio = float(line.split("=")[1].split("x")[0])
    return {"exit_code": code, "output": text, "images_per_s_ratio": ratio, "goal_ratio": 1.5,
            "precision": "float32 parameters and activations on both sides; matmul/conv precision as in 'device' "
                         "(jax default matmul precision; torch TF32 flags)"}


def width_scaling(size: dict) -> dict[str, Any]:
    """Generator steps/s of our trainer against the width multiplier (warm-up call excluded)."""
    from overparam.bridge import nets
    from overparam.bridge.trainer import TrainConfig, Trainer

    res, spc = size["resolution"], size["steps_per_call"]
    rng = np.random.default_rng(0)
    data = np.tanh(rng.normal(size=(max(4 * size["batch"], 16), res, res, 3))).astype(np.float32)
    rows = []
    for w in size["widths"]:
        cfg = TrainConfig(out_dir="", arch="dcgan", width=w, latent_dim=100, sn_d=False, loss="non_saturating",
                          opt_g="adam", opt_d="adam", lr_g=2e-4, lr_d=2e-4, b1=0.5, b2=0.999, scheme="alternating",
                          n_disc=2, batch_size=size["batch"], ema=False, steps=2 * spc, steps_per_call=spc,
                          log_every=spc, ckpt_every=spc, seed=0, devices=1)
        tr = Trainer(cfg, data)
        t0 = time.perf_counter()
        tr.train(stop_at=spc, progress=False)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        tr.train(progress=False)
        secs = time.perf_counter() - t0
        row = {"width": w, "params_g": nets.param_count(tr.state.gen), "params_d": nets.param_count(tr.state.disc),
               "warmup_s": warm, "steps": spc, "seconds": secs, "steps_per_s": spc / secs,
               "images_per_s": spc * size["batch"] / secs, "status": tr.status}
        print(f"  width {w:g}: {row['steps_per_s']:.2f} gen steps/s ({row['images_per_s']:.0f} images/s), "
              f"G {row['params_g']:,} / D {row['params_d']:,} params, warm-up {warm:.1f} s")
        rows.append(row)
    return {"resolution": res, "batch": size["batch"], "n_disc": 2, "rows": rows}


def write_cifar_batches(folder: Path, per_batch: int, seed: int = 0) -> Path:
    """CIFAR-10 python batches (the layout of cifar-10-batches-py) made from the built-in digits.

    Each batch: a pickled dict with b"data" uint8 (N, 3072) as three 32×32 channel planes and
    b"labels" (N ints); the 8×8 digits are upscaled ×4 (nearest) and replicated to RGB.
    """
    from overparam.bridge.data import load_dataset_with_labels

    x, y = load_dataset_with_labels("digits")
    u8 = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)           # (N, 8, 8, 1)
    big = np.repeat(np.repeat(u8, 4, axis=1), 4, axis=2)                          # (N, 32, 32, 1)
    rgb = np.repeat(big, 3, axis=3)
    planes = rgb.transpose(0, 3, 1, 2).reshape(len(rgb), 3072)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in CIFAR_FILES:
        idx = rng.choice(len(planes), per_batch, replace=False)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": planes[idx], b"labels": [int(v) for v in y[idx]]}, fh, protocol=2)
    return folder


def stochasticity(size: dict, out: Path) -> dict[str, Any]:
    """A short stochasticity-study run on the CIFAR-format batches (study's own run/summary)."""
    from overparam.studies import stochasticity as study
    from overparam.studies.config import from_mapping

    folder = write_cifar_batches(out / "cifar-10-batches-py", size["per_image"])
    s = size["stoch"]
    cfg = from_mapping(study.Config, {
        "data": "cifar10", "path": str(folder), "preset": "small", "n": s["n"], "resolution": s["resolution"],
        "steps": s["steps"], "eval_every": s["eval_every"], "width": s["width"], "latent_dim": s["latent_dim"],
        "batch_divisors": s["batch_divisors"], "noise_divisor": s["noise_divisor"], "features": "none",
        "seeds": (1000,), "n_boot": 200, "log_every": s["eval_every"], "out_dir": str(out / "stochasticity")})
    t0 = time.perf_counter()
    res = study.run(cfg, progress=False)
    secs = time.perf_counter() - t0
    text = study.summary(res)
    print(text)
    return {"seconds": secs, "summary": text, "config": {k: v for k, v in s.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m overparam.bench gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (gpu_check.json, gpu_check.log, data, study outputs)")
    p.add_argument("--tiny", action="store_true", help="CPU-sized version (seconds; used by the test suite)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: conv_gan, width_scaling, stochasticity")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = SIZES["tiny" if args.tiny else "full"]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results: dict[str, Any] = {"size": "tiny" if args.tiny else "full", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    sections: list[tuple[str, Callable[[], dict]]] = [
        ("device", device_info),
        ("conv_gan", lambda: conv_gan(size)),
        ("width_scaling", lambda: width_scaling(size)),
        ("stochasticity", lambda: stochasticity(size, out)),
    ]
    t_all = time.perf_counter()
    failed = 0
    with open(out / "gpu_check.log", "w") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
        for name, fn in sections:
            if name in skip:
                results[name] = {"skipped": "--skip"}
                write_json(out / "gpu_check.json", results)
                continue
            print(f"== {name}")
            t0 = time.perf_counter()
            try:
                results[name] = fn()
            except Exception as exc:  # recorded; the other sections still run
                failed += 1
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                print(f"  FAILED: {type(exc).__name__}: {exc}")
            results[name]["section_seconds"] = time.perf_counter() - t0
            results["total_seconds"] = time.perf_counter() - t_all
            write_json(out / "gpu_check.json", results)
        print(f"== done in {results['total_seconds']:.1f} s, {failed} section(s) failed; {out / 'gpu_check.json'}")
    return 1 if failed else 0
