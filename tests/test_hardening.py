"""Reliability: content-keyed resume, damaged caches, errors before work, a real SIGKILL resume.

Each test here is one item of the hardening issue that failed on the code before it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from overparam import records, simulate
from overparam.errors import ConfigError
from overparam.studies import dirac
from overparam.studies.config import check_types, load_toml

REPO = Path(__file__).resolve().parent.parent
DIRAC_SMALL = dict(variants=("gan", "wgan", "r1"), steps=60, simultaneous=False, n_disc=(1,), r1_gammas=(0.5,),
                   noise_samples=10)


# -- records: content keys and checksums -------------------------------------------------------
def test_content_hash_ignores_the_output_path_but_not_the_numbers():
    a = dirac.Config(out_dir="results/x")
    assert records.content_hash(a) == records.content_hash(dirac.Config(out_dir="results/x/"))
    assert records.content_hash(a) == records.content_hash(dirac.Config(out_dir="./results/x"))
    assert records.content_hash(a) == records.content_hash(dirac.Config(out_dir="/elsewhere"))
    assert records.content_hash(a) != records.content_hash(dirac.Config(out_dir="results/x", steps=501))
    assert records.content_hash(a, "cell1") != records.content_hash(a, "cell2")


def test_from_jsonable_inverts_to_jsonable_for_non_finite_values():
    data = {"a": [1.0, float("nan"), float("inf"), -float("inf")], "b": {"c": "inf"}, "d": "text"}
    back = records.from_jsonable(json.loads(json.dumps(records.to_jsonable(data))))
    assert back["a"][0] == 1.0 and back["a"][1] != back["a"][1]
    assert back["a"][2] == float("inf") and back["a"][3] == -float("inf")
    assert back["b"]["c"] == float("inf") and back["d"] == "text"


@pytest.mark.parametrize("spelling", ["{p}/", "./{rel}", "{p}//"])
def test_cells_are_reused_whatever_the_out_dir_spelling(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    first = dirac.run(dirac.Config(**DIRAC_SMALL, out_dir="res/d"), progress=False)
    assert first.cells_report == "cells: reused 0 of 3, computed 3"
    out = spelling.format(p=str(tmp_path / "res/d"), rel="res/d")
    again = dirac.run(dirac.Config(**DIRAC_SMALL, out_dir=out), progress=False)
    assert again.cells_report == "cells: reused 3 of 3, computed 0"
    assert again.rows == first.rows


def _drop_row(path: Path) -> None:
    blob = json.loads(path.read_text())
    blob["data"]["rows"].pop()
    path.write_text(json.dumps(blob))


def _one_cell(tmp_path: Path) -> tuple[records.CellStore, Path]:
    store = records.CellStore(tmp_path, {"x": 1})
    store.put("c", {"rows": [{"v": 1.5}, {"v": float("nan")}]})
    return records.CellStore(tmp_path, {"x": 1}), tmp_path / "cells" / "c.json"


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "damaged"),
    (lambda p: p.write_text('{"rows": [1, 2]}'), "wrong structure"),
    (lambda p: p.write_text("[1, 2, 3]"), "wrong structure"),
    (lambda p: p.write_text(p.read_text().replace("1.5", "2.5")), "checksum"),
    (lambda p: _drop_row(p), "checksum"),
])
def test_a_damaged_cell_is_recomputed_with_one_warning(tmp_path, capsys, damage, message):
    store, path = _one_cell(tmp_path)
    assert store.get("c")["rows"][0]["v"] == 1.5
    damage(path)
    capsys.readouterr()
    assert store.get("c") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and message in err[0]


def test_a_cell_of_another_config_is_silently_recomputed(tmp_path, capsys):
    store, _ = _one_cell(tmp_path)
    assert records.CellStore(tmp_path, {"x": 2}).get("c") is None
    assert capsys.readouterr().err == ""


# -- errors before any work --------------------------------------------------------------------
def test_out_dir_that_is_a_file_is_one_error_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        assert simulate.main(["dirac", "--out-dir", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not a folder" in err[0]
    with pytest.raises(ConfigError, match="not writable"):
        records.check_out_dir("/proc/overparam-cannot-write-here")


def test_negative_list_values_reach_the_config_check(capsys):
    assert simulate.main(["width-sweep", "--widths", "-4,8", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: every width k must be a positive integer, got -4; use a value >= 1"]


def test_config_pointing_at_a_folder_or_binary_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_toml(tmp_path)
    binary = tmp_path / "x.toml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a text TOML"):
        load_toml(binary)


def test_api_configs_check_their_types_at_construction():
    with pytest.raises(ConfigError, match=r"Config.lr_gen must be a number, got '0.5' \(str\)"):
        dirac.Config(lr_gen="0.5")
    with pytest.raises(ConfigError, match="steps must be an integer"):
        dirac.Config(steps=10.0)
    with pytest.raises(ConfigError, match="x64 must be true/false"):
        dirac.Config(x64=1)
    check_types(dirac.Config(lr_gen=1))  # an int is a fine float


def test_paper_figs_names_the_missing_extra(monkeypatch, capsys):
    import paper_figs.__main__ as pf

    def missing(name):
        raise ModuleNotFoundError("No module named 'flax'", name="flax")

    monkeypatch.setattr(pf, "load_study", missing)
    assert pf.main(["--only", "conv_width_sweep", "--out", "/tmp/overparam-nowhere"]) == 2
    err = capsys.readouterr().err
    assert "needs an optional extra" in err and "flax" in err and ".[bridge]" in err


# -- a real kill -------------------------------------------------------------------------------
_DRIVER = textwrap.dedent("""
    import sys, time
    from overparam import records
    mode = sys.argv[1]
    real = records.atomic_write_bytes
    def atomic_write_bytes(path, data):
        if mode == "slow-write" and "cells" in str(path) and not path.name.startswith("gan-"):
            import os, tempfile
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.write(fd, data[: len(data) // 2])   # half the cell is on disk when the kill lands
            print("WRITING", flush=True)
            time.sleep(60)
        out = real(path, data)
        if mode == "pause-after-cell" and "cells" in str(path):
            print("CELL_DONE", flush=True)         # the first cell is complete on disk
            time.sleep(60)
        return out
    records.atomic_write_bytes = atomic_write_bytes
    from overparam import simulate
    sys.exit(simulate.main(sys.argv[2:]))
""")

_ARGS = ["dirac", "--variants", "gan,wgan,r1", "--steps", "60", "--simultaneous", "false", "--n-disc", "1",
         "--r1-gammas", "0.5", "--noise-samples", "10", "--no-progress"]
_COMPARED = ("summary.csv", "trajectories.csv", "theory.csv")


def _run(mode: str, out: Path, kill_when) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, mode, *_ARGS, "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_when is None:
        out_, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return
    deadline = time.time() + 300
    while not kill_when(out, proc) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _first_cell_done(out: Path, proc) -> bool:
    return proc.stdout.readline().strip() == "CELL_DONE"


def _mid_write(out: Path, proc) -> bool:
    return proc.stdout.readline().strip() == "WRITING"


@pytest.mark.slow
@pytest.mark.parametrize("mode, kill_when", [("pause-after-cell", _first_cell_done), ("slow-write", _mid_write)])
def test_sigkill_then_resume_gives_the_same_bytes(tmp_path, mode, kill_when):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run("normal", ref, None)
    _run(mode, killed, kill_when)
    done = sorted(p.name for p in (killed / "cells").glob("*.json"))
    assert 1 <= len(done) < 3, done            # killed after some, not all, cells
    _run("normal", killed, None)                # the resume
    for name in _COMPARED:
        assert (killed / name).read_bytes() == (ref / name).read_bytes(), name
    ref_cells = {p.name: p.read_bytes() for p in (ref / "cells").glob("*.json")}
    assert {p.name: p.read_bytes() for p in (killed / "cells").glob("*.json")} == ref_cells


def test_duplicate_widths_are_one_error(capsys):
    assert simulate.main(["width-sweep", "--widths", "4,8,4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: widths lists [4] more than once; give each width once (seeds sets the runs per width)"]


def test_bench_bad_input_is_one_line(capsys):
    from overparam.bench.__main__ import main as bench

    assert bench(["width-sweep", "--no-compile-cache", "--widths", "abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: widths must be an integer, got 'abc'"]


@pytest.mark.parametrize("study, bad", [
    ("width_sweep", {"mu": "0.5"}), ("width_sweep", {"widths": (4.0, 8)}), ("modes", {"steps": "10"}),
    ("lottery_toy", {"mu": "0.5"}), ("dirac", {"lr_gen": "0.2"}),
])
def test_every_toy_study_config_checks_types(study, bad):
    import importlib

    module = importlib.import_module(f"overparam.studies.{study}")
    with pytest.raises(ConfigError, match=f"Config.{next(iter(bad))} must be"):
        module.Config(**bad)


def test_save_figure_writes_png_and_pdf_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from overparam.studies import common

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    before = set(plt.get_fignums())
    paths = common.save_figure(fig, tmp_path / "f")
    assert [p.name for p in paths] == ["f.png", "f.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert fig.number in before and fig.number not in plt.get_fignums()
