"""Benchmarks' machinery (never their speed): compile cache, fair numpy reference, GPU check on CPU."""
import json
import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import compile_cache
from overparam.bench import __main__ as bench_main
from overparam.bench import gpu_check
from overparam.bench import width_sweep as bws
from overparam.studies import width_sweep as ws


@pytest.fixture(autouse=True)
def _cache_off_after():
    yield
    compile_cache.disable()


# -- compile cache --------------------------------------------------------------------------------
def test_compile_cache_folder_rules(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "overparam" / "jax-compile-cache"
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "mine"))
    assert compile_cache.default_dir() == tmp_path / "mine"
    for off in ("", "0", "off", "OFF", "false"):
        monkeypatch.setenv(compile_cache.ENV_VAR, off)
        assert compile_cache.default_dir() is None
        assert compile_cache.enable() is None


def test_compile_cache_stores_a_compiled_program(tmp_path):
    folder = compile_cache.enable(tmp_path / "cc")
    assert folder == tmp_path / "cc" and compile_cache.active_dir() == folder
    x = jnp.arange(7.0)
    y = jax.jit(lambda v: jnp.cumsum(jnp.sin(v) * 3.25) + 0.125)(x)  # a program no other test compiles
    np.testing.assert_allclose(y, np.cumsum(np.sin(np.arange(7.0)) * 3.25) + 0.125, rtol=1e-6)
    assert any(folder.iterdir())  # an entry was written
    compile_cache.disable()
    assert compile_cache.active_dir() is None


def test_bench_cli_strips_the_cache_flag(monkeypatch, capsys):
    seen = {}

    class Fake:
        DESCRIPTION = "fake"

        @staticmethod
        def main(argv):
            seen["argv"] = argv
            return 0

    monkeypatch.setitem(bench_main.BENCHES, "fake", "fake_mod")
    monkeypatch.setattr(bench_main.importlib, "import_module", lambda name: Fake)
    assert bench_main.main(["fake", "--no-compile-cache", "--x", "1"]) == 0
    assert seen["argv"] == ["--x", "1"] and compile_cache.active_dir() is None
    assert bench_main.main(["nonexistent"]) == 2


# -- the width-sweep benchmark's reference ---------------------------------------------------------
def test_numpy_reference_matches_the_study_on_its_instances():
    cfg = ws.Config(widths=(64,), seeds=2, steps=300, record_every=10, m=4, d=4, n=16)
    data = ws.load_data(cfg)
    inst = ws.draws(cfg, cfg.widths, data)
    ours = ws.run_widths(cfg, cfg.widths, data)
    t, finals = bws.time_numpy(cfg, inst, 2, 1 if bws.blas_info() else None)
    assert t > 0
    for s in range(2):
        ref = ours[64][0][s]["final_residual"]
        assert abs(finals[(64, s)] - ref) <= 1e-3 * ref + 1e-6  # float32 on both sides
    # the full curve too
    curve = np.array([c["residual"] for c in ours[64][1] if c["seed"] == 0])
    V, Z, W = (inst[64][a][0] for a in ("V", "Z", "W"))
    res = bws.numpy_gda(V, Z, inst[64]["xbar"][0], W, "relu", np.float32(0.5), np.float32(1.0), 300, 10)
    np.testing.assert_allclose(res / res[0], curve, rtol=2e-3, atol=1e-6)


def test_flop_count_and_matmul_ceiling():
    cfg = ws.Config(seeds=2, n=16, d=4)
    assert bws.flops_per_step(cfg, 128) == 4 * 16 * 4 * 128  # two n·d·k matmuls, 2 flops per multiply-add
    gf = bws.matmul_ceiling(cfg, 128, 50)
    assert math.isfinite(gf) and gf > 0


def test_blas_info_reports_numpy_blas():
    info = bws.blas_info()
    pytest.importorskip("threadpoolctl")
    assert info and all({"internal_api", "num_threads"} <= set(i) for i in info)


@pytest.mark.slow
def test_width_sweep_bench_prints_fair_ratios_and_fraction(capsys):
    code = bws.main(["--widths", "16,64", "--steps", "200", "--seeds", "2", "--no-e2e"])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ("by BLAS setting", "ours (warm)", "GFLOP/s achieved", "same-shape matmul", "targets (issue 11",
                   "end-to-end targets refer to the default config"):
        assert needle in out
    line = next(l for l in out.splitlines() if l.startswith("agreement"))
    assert float(line.rsplit("=", 1)[1]) < 0.05


@pytest.mark.slow
def test_end_to_end_cli_timings():
    t = bws.end_to_end(["--widths=8,32", "--steps=100", "--seeds=1"])
    assert set(t) == {"no compile cache", "compile cache, empty", "compile cache, warm"}
    assert all(v > 0 for v in t.values())


# -- the prepared GPU check, tiny on CPU -------------------------------------------------------------
def test_cifar_batches_from_digits_load_as_cifar10(tmp_path):
    from overparam.bridge.data import load_dataset_with_labels

    folder = gpu_check.write_cifar_batches(tmp_path / "cifar-10-batches-py", per_batch=5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(gpu_check.CIFAR_FILES)
    with open(folder / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh)
    x, y = load_dataset_with_labels("cifar10", str(tmp_path))
    assert x.shape == (25, 32, 32, 3) and y.shape == (25,)
    # the first image decodes to the channel planes written (nearest-upscaled, gray in all channels)
    img = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(img[..., 0], img[..., 2]) and np.array_equal(img[::4, ::4, 0], img[1::4, 1::4, 0])
    assert set(np.unique(y)) <= set(range(10))


def test_gpu_check_device_section_json_and_log(tmp_path):
    code = gpu_check.main(["--out", str(tmp_path), "--tiny", "--skip", "conv_gan,width_scaling,stochasticity"])
    assert code == 0
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["device"]["backend"] == jax.default_backend() and res["device"]["n_devices"] == len(jax.devices())
    assert res["device"]["versions"]["jax"] == jax.__version__
    assert res["conv_gan"] == {"skipped": "--skip"}
    assert "== device" in (tmp_path / "gpu_check.log").read_text()


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_section(tmp_path):
    code = gpu_check.main(["--out", str(tmp_path), "--tiny"])
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0, {k: v.get("error") for k, v in res.items() if isinstance(v, dict)}
    try:
        import torch  # noqa: F401
        assert res["conv_gan"]["images_per_s_ratio"] > 0
    except ImportError:
        assert res["conv_gan"]["skipped"] == "torch is not installed"
    rows = res["width_scaling"]["rows"]
    assert [r["width"] for r in rows] == list(gpu_check.SIZES["tiny"]["widths"])
    assert all(r["steps_per_s"] > 0 and r["status"] != "diverged" for r in rows)
    assert rows[0]["params_g"] < rows[1]["params_g"]  # wider nets have more parameters
    assert "Pixel L1" in res["stochasticity"]["summary"] and res["stochasticity"]["seconds"] > 0
