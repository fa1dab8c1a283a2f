"""Side-by-side benchmarks: ``python -m overparam.bench <name>``.

Each benchmark times our implementation and a plain reference (numpy loop, PyTorch eager)
on the same config *in one run* and prints the ratio; no speed claim lives in a timed test.
Each module defines ``DESCRIPTION`` and ``main(argv) -> int``. The persistent compilation cache
(:mod:`overparam.compile_cache`) is on unless ``--no-compile-cache`` is given.
"""
from __future__ import annotations

BENCHES: dict[str, str] = {
    "width-sweep": "overparam.bench.width_sweep",
    "modes": "overparam.bench.modes",
    "conv-gan": "overparam.bench.conv_gan",
    "gpu-check": "overparam.bench.gpu_check",
}
