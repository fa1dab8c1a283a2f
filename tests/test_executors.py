"""Executors: the same cells, the same bytes, whichever executor ran them and in what order.

The synthetic study (tests/executor_study.py, numpy only) checks the protocol cheaply;
a small width sweep checks a real JAX study through the CLI. Dask tests start a
LocalCluster of 2 single-threaded worker processes on 127.0.0.1 and stop it; they skip
when the optional extra ``distributed`` is not installed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from overparam import executors
from overparam.errors import ConfigError
from overparam.records import CellStore, canonical_json

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers inherit sys.path
import executor_study as study  # noqa: E402


def _run(tmp: Path, tag: str, **options):
    cfg = study.Config(out_dir=str(tmp / tag), log=str(tmp / f"{tag}.log"), **options.pop("cfg", {}))
    rows, info = study.run(cfg, **options)
    return cfg, rows, info, (tmp / tag / "summary.csv").read_bytes()


def _log_lines(path: str) -> list[tuple[str, str]]:
    return [tuple(line.split()[:2]) for line in Path(path).read_text().splitlines()]


def _ends(path: str) -> list[str]:
    return sorted(name for what, name in _log_lines(path) if what == "end")


def _expected_rows(cfg: study.Config) -> list[dict]:
    """Independent route: the generator seeded by (seed, cell index), written out directly."""
    out = []
    for i in range(cfg.cells):
        x = np.random.default_rng([cfg.seed, i]).standard_normal(cfg.rows_per_cell)
        out += [{"cell": f"c{i:02d}", "j": j, "x": x[j]} for j in range(cfg.rows_per_cell)]
    return out


# -- options: one ConfigError before any work -------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"executor": "threads"}, "unknown executor"),
    ({"executor": "inline", "workers": 2}, "--workers needs"),
    ({"executor": "processes", "workers": 0}, "positive integer"),
    ({"executor": "processes", "workers": True}, "positive integer"),
    ({"executor": "processes", "scheduler": "tcp://127.0.0.1:8786"}, "--scheduler needs --executor dask"),
    ({"executor": "processes", "resources": "GPU=1"}, "--resources needs --executor dask"),
    ({"executor": "inline", "retries": -1}, "retries"),
])
def test_bad_options_are_one_config_error(tmp_path, kwargs, match):
    cfg = study.Config(out_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match=match):
        executors.run_cells(study.__name__, cfg, CellStore(cfg.out_dir, cfg), progress=False, **kwargs)
    assert not (tmp_path / "x" / "cells").exists()  # nothing computed


def test_dask_options_checked(monkeypatch):
    pytest.importorskip("distributed")
    with pytest.raises(ConfigError, match="not a scheduler address"):
        executors.check_options("dask", scheduler="my laptop")
    with pytest.raises(ConfigError, match="drop --workers"):
        executors.check_options("dask", workers=2, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="--resources needs --scheduler"):
        executors.check_options("dask", resources="GPU=1")
    assert executors.check_options("dask", scheduler="tcp://127.0.0.1:8786", resources="GPU=1")[3] == {"GPU": 1.0}


def test_dask_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "_dask_available", lambda: False)
    cfg = study.Config(out_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match=r"distributed.*pip install -e \"\.\[distributed\]\""):
        executors.run_cells(study.__name__, cfg, CellStore(cfg.out_dir, cfg), executor="dask", progress=False)
    assert not (tmp_path / "x" / "cells").exists()


def test_parse_resources():
    assert executors.parse_resources("GPU=1, MEM=4e9") == {"GPU": 1.0, "MEM": 4e9}
    assert executors.parse_resources({"GPU": 2}) == {"GPU": 2.0}
    assert executors.parse_resources(None) is None
    for bad in ("GPU", "=1", "GPU=x", "GPU=0", "GPU=inf", ","):
        with pytest.raises(ConfigError):
            executors.parse_resources(bad)


def test_worker_environ_forwards_the_compile_cache(monkeypatch):
    import types

    cfg = types.SimpleNamespace(jax_compilation_cache_dir="/tmp/cc", jax_enable_compilation_cache=True,
                                jax_persistent_cache_min_compile_time_secs=0.0,
                                jax_persistent_cache_min_entry_size_bytes=0)
    monkeypatch.setitem(sys.modules, "jax", types.SimpleNamespace(config=cfg))
    env = executors.worker_environ()
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/tmp/cc" and env["JAX_ENABLE_COMPILATION_CACHE"] == "true"
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0.0"
    cfg.jax_compilation_cache_dir = None
    assert executors.worker_environ() == {}
    monkeypatch.delitem(sys.modules, "jax")
    assert executors.worker_environ() == {}


# -- inline: values, order, resume -------------------------------------------------------------
def test_inline_values_and_resume_says_so(tmp_path):
    cfg, rows, info, first = _run(tmp_path, "a")
    expected = _expected_rows(cfg)
    assert [(r["cell"], r["j"]) for r in rows] == [(e["cell"], e["j"]) for e in expected]
    np.testing.assert_allclose([r["x"] for r in rows], [e["x"] for e in expected], rtol=0, atol=0)
    assert all(np.isnan(r["log_abs"]) for r in rows if r["j"] == 0)  # NaN survives the JSON cell
    assert info["computed"] == cfg.cells and info["reused"] == 0
    assert info["report"] == "cells: reused 0 of 6, computed 6"
    batches = [line for line in Path(cfg.log).read_text().splitlines() if line.startswith("batch")]
    assert len(batches) == 1 and batches[0].split()[1] == ",".join(study.cells(cfg))  # one batch call

    _, rows2, info2, second = _run(tmp_path, "a")
    assert info2["reused"] == cfg.cells and info2["computed"] == 0
    assert info2["report"] == "cells: reused 6 of 6, computed 0"
    assert second == first
    assert _ends(cfg.log) == sorted(study.cells(cfg))  # the second run computed nothing


@settings(max_examples=15, deadline=None)
@given(st.sets(st.integers(0, 5)))
def test_partial_resume_computes_exactly_the_missing_cells(tmp_path_factory, stored):
    tmp = tmp_path_factory.mktemp("partial")
    cfg = study.Config(out_dir=str(tmp / "p"), log=str(tmp / "p.log"))
    full = {n: study.compute_cell(cfg, n) for n in study.cells(cfg)}
    store = CellStore(cfg.out_dir, cfg)
    for i in sorted(stored, reverse=True):  # stored in a scrambled order
        store.put(f"c{i:02d}", full[f"c{i:02d}"])
    Path(cfg.log).unlink(missing_ok=True)
    done = executors.run_cells(study.__name__, cfg, CellStore(cfg.out_dir, cfg), progress=False)
    assert list(done) == study.cells(cfg)
    assert all(canonical_json(done[n]) == canonical_json(full[n]) for n in full)
    assert (done.info["reused"], done.info["computed"]) == (len(stored), 6 - len(stored))
    missing = sorted(set(study.cells(cfg)) - {f"c{i:02d}" for i in stored})
    assert (_ends(cfg.log) if Path(cfg.log).exists() else []) == missing


def test_changed_content_recomputes_but_test_hooks_do_not(tmp_path):
    cfg, _, _, _ = _run(tmp_path, "h")
    # sleep / log / kill hooks are NOT_CONTENT: same keys, every cell reused
    _, _, info, _ = _run(tmp_path, "h", cfg={"sleep": 0.0, "kill_cell": "c03"})
    assert info["reused"] == cfg.cells
    _, _, info, _ = _run(tmp_path, "h", cfg={"seed": 1})
    assert info["computed"] == cfg.cells


def test_compute_many_without_a_batch_route(monkeypatch):
    import types

    plain = types.ModuleType("plain_study")
    plain.cells = study.cells
    plain.compute_cell = study.compute_cell
    monkeypatch.setitem(sys.modules, "plain_study", plain)
    cfg = study.Config()
    got = executors.compute_many("plain_study", cfg, ["c02", "c00"])
    assert list(got) == ["c02", "c00"]
    assert all(canonical_json(got[n]) == canonical_json(study.compute_cell(cfg, n)) for n in got)
    plain.compute_cells = lambda config, names: {n: study.compute_cell(config, n) for n in names[:1]}
    with pytest.raises(ValueError, match="compute_cells returned"):
        executors.compute_many("plain_study", cfg, ["c02", "c00"])


# -- processes --------------------------------------------------------------------------------
def test_processes_byte_identical_to_inline(tmp_path):
    _, _, _, inline = _run(tmp_path, "inline")
    # cell i sleeps 0.15·(6 − i) s: the last cells finish first
    cfg, _, info, procs = _run(tmp_path, "procs", executor="processes", workers=2, cfg={"sleep": 0.15})
    assert procs == inline
    assert info["executor"] == "processes" and info["workers"] == 2 and info["computed"] == 6
    assert _ends(cfg.log) == study.cells(cfg)


def test_processes_worker_killed_mid_cell(tmp_path, capsys):
    _, _, _, inline = _run(tmp_path, "inline")
    marker = tmp_path / "killed"
    cfg, rows, info, procs = _run(tmp_path, "kill", executor="processes", workers=2,
                                  cfg={"kill_marker": str(marker), "sleep": 0.05})
    assert marker.exists()  # the first attempt of c01 really was killed
    assert "a worker process died" in capsys.readouterr().err
    assert procs == inline
    assert len(rows) == len({(r["cell"], r["j"]) for r in rows}) == 6 * 3
    assert _ends(cfg.log) == study.cells(cfg)  # every cell finished exactly once
    starts = [n for what, n in _log_lines(cfg.log) if what == "start"]
    assert starts.count("c01") == 2
    assert sorted(p.name for p in (tmp_path / "kill" / "cells").iterdir()) == [f"{n}.json" for n in study.cells(cfg)]


def test_processes_gives_up_after_retries(tmp_path):
    cfg = study.Config(out_dir=str(tmp_path / "g"), kill_marker=str(tmp_path / "never"), kill_cell="c02")

    # c02's first attempt kills its worker; with retries=0 that single break is final
    with pytest.raises(RuntimeError, match="died 1 times"):
        executors.run_cells(study.__name__, cfg, CellStore(cfg.out_dir, cfg), executor="processes",
                            workers=2, retries=0, progress=False)
    # what finished is stored: the rerun resumes and completes
    done = executors.run_cells(study.__name__, cfg, CellStore(cfg.out_dir, cfg), executor="inline",
                               progress=False)
    assert list(done) == study.cells(cfg) and done.info["reused"] + done.info["computed"] == 6


# -- dask ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0")  # None binds :8787
    try:
        yield cluster
    finally:
        cluster.close()


def test_dask_byte_identical_and_resume(tmp_path, dask_cluster):
    _, _, _, inline = _run(tmp_path, "inline")
    addr = dask_cluster.scheduler_address
    assert addr.startswith("tcp://127.0.0.1:")
    cfg, _, info, dsk = _run(tmp_path, "dask", executor="dask", scheduler=addr, cfg={"sleep": 0.15})
    assert dsk == inline
    assert info["scheduler"] == addr and info["computed"] == 6
    assert _ends(cfg.log) == study.cells(cfg)
    _, _, info2, again = _run(tmp_path, "dask", executor="dask", scheduler=addr)
    assert again == inline and info2["reused"] == 6 and info2["computed"] == 0
    assert info2["report"] == "cells: reused 6 of 6, computed 0 (executor dask)"
    assert _ends(cfg.log) == study.cells(cfg)  # nothing ran on the cluster the second time


def test_dask_worker_killed_mid_cell(tmp_path, dask_cluster):
    _, _, _, inline = _run(tmp_path, "inline")
    marker = tmp_path / "killed"
    cfg, rows, info, dsk = _run(tmp_path, "kill", executor="dask", scheduler=dask_cluster.scheduler_address,
                                cfg={"kill_marker": str(marker), "sleep": 0.05})
    assert marker.exists()
    assert dsk == inline
    assert len(rows) == len({(r["cell"], r["j"]) for r in rows}) == 18
    assert _ends(cfg.log) == study.cells(cfg)
    assert [n for what, n in _log_lines(cfg.log) if what == "start"].count("c01") == 2
    assert info["computed"] == 6


def test_dask_local_cluster_without_scheduler(tmp_path):
    pytest.importorskip("distributed")
    _, _, _, inline = _run(tmp_path, "inline")
    _, _, info, dsk = _run(tmp_path, "local", executor="dask", workers=2)
    assert dsk == inline and info["workers"] == 2 and info["scheduler"] is None


def test_dask_unreachable_scheduler_is_config_error(tmp_path):
    pytest.importorskip("distributed")
    import dask

    cfg = study.Config(out_dir=str(tmp_path / "u"))
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(ConfigError, match="could not reach the Dask scheduler"):
            executors.run_cells(study.__name__, cfg, CellStore(cfg.out_dir, cfg), executor="dask",
                                scheduler="tcp://127.0.0.1:9", progress=False)


def _overlaps(log: str) -> bool:
    """Whether any worker process ran two cells at the same time (start, start on one pid)."""
    running: dict[str, int] = {}
    for line in Path(log).read_text().splitlines():
        what, _, pid = line.split()
        if what in ("start", "end"):
            running[pid] = running.get(pid, 0) + (1 if what == "start" else -1)
            if running[pid] > 1:
                return True
    return False


def test_dask_resources_limit_cells_per_worker(tmp_path):
    """Workers with 2 threads each but one "GPU": asking GPU=1 per cell runs one cell per worker at a time."""
    distributed = pytest.importorskip("distributed")
    _, _, _, inline = _run(tmp_path, "inline")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", resources={"GPU": 1}) as cluster:
        addr = cluster.scheduler_address
        cfg, _, info, with_res = _run(tmp_path, "gpu", executor="dask", scheduler=addr, resources="GPU=1",
                                      cfg={"sleep": 0.1})
        assert with_res == inline and info["resources"] == {"GPU": 1.0}
        assert not _overlaps(cfg.log)
        # control: the same cluster without the resource request does run two cells per worker at once
        cfg2, _, _, without = _run(tmp_path, "free", executor="dask", scheduler=addr, cfg={"sleep": 0.1})
        assert without == inline and _overlaps(cfg2.log)


# -- a real JAX study through the CLI: the width sweep --------------------------------------------
WS = ["--widths", "4,8,48", "--seeds", "2", "--steps", "200", "--record-every", "20", "--m", "4", "--d", "4",
      "--n", "16", "--no-progress", "--no-compile-cache"]  # cells b32 (k = 4, 8) and b64 (k = 48)


def _cli(tmp: Path, tag: str, *extra: str) -> tuple[Path, str]:
    from overparam import simulate

    out = tmp / tag
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert simulate.main(["width-sweep", *WS, "--out-dir", str(out), *extra]) == 0
    return out, buf.getvalue()


def _same_outputs(a: Path, b: Path) -> None:
    for name in ("summary.csv", "curves.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma["config_hash"] == mb["config_hash"]
    assert {k: v for k, v in ma["config"].items() if k != "out_dir"} == {
        k: v for k, v in mb["config"].items() if k != "out_dir"}
    assert not {"executor", "workers", "scheduler"} & set(ma["config"])


@pytest.fixture(scope="module")
def ws_inline(tmp_path_factory):
    out, text = _cli(tmp_path_factory.mktemp("ws"), "inline")
    assert "cells: reused 0 of 2, computed 2" in text
    return out


@pytest.mark.slow
def test_width_sweep_processes_byte_identical_and_resume(tmp_path, ws_inline):
    out, text = _cli(tmp_path, "procs", "--executor", "processes", "--workers", "2")
    _same_outputs(ws_inline, out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["execution"]["executor"] == "processes" and man["execution"]["workers"] == 2
    assert "cells: reused 0 of 2, computed 2 (executor processes)" in text
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["b32.json", "b64.json"]
    out2, text2 = _cli(tmp_path, "procs", "--executor", "processes", "--workers", "2")
    assert "cells: reused 2 of 2, computed 0 (executor processes)" in text2
    _same_outputs(ws_inline, out2)


@pytest.mark.slow
def test_width_sweep_dask_byte_identical(tmp_path, ws_inline, dask_cluster):
    addr = dask_cluster.scheduler_address
    out, text = _cli(tmp_path, "dask", "--executor", "dask", "--scheduler", addr)
    _same_outputs(ws_inline, out)
    assert json.loads((out / "manifest.json").read_text())["execution"]["scheduler"] == addr
    assert "cells: reused 0 of 2, computed 2 (executor dask)" in text


def test_width_sweep_cells_are_buckets():
    from overparam.studies import width_sweep as ws

    cfg = ws.Config(widths=(48, 4, 200, 8, 64), bucket_min=32)
    assert ws.cells(cfg) == ["b32", "b64", "b256"]
    with pytest.raises(ConfigError, match="unknown width-sweep cell"):
        ws.compute_cells(cfg, ["b128"])


def test_width_sweep_cli_executor_errors(tmp_path, monkeypatch, capsys):
    from overparam import simulate

    monkeypatch.setattr(executors, "_dask_available", lambda: False)
    base = ["width-sweep", *WS, "--out-dir", str(tmp_path / "e")]
    assert simulate.main([*base, "--executor", "dask"]) == 2
    assert 'pip install -e ".[distributed]"' in capsys.readouterr().err
    assert simulate.main([*base, "--workers", "2"]) == 2
    assert "--workers needs --executor processes or dask" in capsys.readouterr().err
    assert not (tmp_path / "e" / "cells").exists()


# -- the Dirac study (numbers in float64) ---------------------------------------------------------
SMALL_DIRAC = dict(steps=200, variants=("gan", "r1"), r1_gammas=(1.0,), n_disc=(1,))


@pytest.mark.slow
def test_dirac_processes_and_dask_byte_identical(tmp_path, dask_cluster):
    from overparam.studies import dirac

    def go(tag: str, **where) -> tuple[Path, dict]:
        cfg = dirac.Config(**SMALL_DIRAC, out_dir=str(tmp_path / tag))
        res = dirac.run(cfg, progress=False, **where)
        dirac.save(res)
        return tmp_path / tag, res.execution

    a, info = go("inline")
    assert info["computed"] == len(dirac.cells(dirac.Config(**SMALL_DIRAC))) > 1
    b, _ = go("procs", executor="processes", workers=2)
    c, info_c = go("dask", executor="dask", scheduler=dask_cluster.scheduler_address)
    for out in (b, c):
        for name in ("summary.csv", "trajectories.csv"):
            assert (out / name).read_bytes() == (a / name).read_bytes(), (out, name)
    assert json.loads((c / "manifest.json").read_text())["execution"]["executor"] == "dask"
    _, again = go("dask", executor="dask", scheduler=dask_cluster.scheduler_address)
    assert again["reused"] == again["cells"] and again["computed"] == 0


# -- the modes study: one cell per optimizer arm (tuning grid + held-out evaluation) -------------
SMALL_MODES = dict(optimizers=("sgd", "nsgd_global"), n_lr=2, tuning_seeds=2, heldout_seeds=3, steps=500)


def test_modes_cells_are_arms():
    from overparam.studies import modes

    cfg = modes.Config(**SMALL_MODES)
    assert modes.cells(cfg) == ["arm_sgd", "arm_nsgd_global"]
    with pytest.raises(ConfigError, match="unknown modes cell"):
        modes.compute_cell(cfg, "arm_adam")


@pytest.mark.slow
def test_modes_processes_and_dask_byte_identical(tmp_path, dask_cluster):
    from overparam.studies import modes

    def go(tag: str, **where):
        res = modes.run(modes.Config(**SMALL_MODES, out_dir=str(tmp_path / tag)), progress=False, **where)
        modes.save(res)
        return tmp_path / tag, res

    a, ra = go("inline")
    assert ra.execution["computed"] == 2
    b, _ = go("procs", executor="processes", workers=2)
    c, rc = go("dask", executor="dask", scheduler=dask_cluster.scheduler_address)
    for out in (b, c):
        for name in ("cells.csv", "recovery_over_training.csv"):
            assert (out / name).read_bytes() == (a / name).read_bytes(), (out, name)
    assert [v.to_json()["outcome"] for v in rc.verdicts] == [v.to_json()["outcome"] for v in ra.verdicts]
    _, again = go("dask", executor="dask", scheduler=dask_cluster.scheduler_address)
    assert again.execution["reused"] == 2 and again.execution["computed"] == 0
