"""The width-sweep study end to end: the theory's effects on a small sweep, outputs, resume, CLI."""
import csv
import json

import numpy as np
import pytest

from overparam import simulate
from overparam.errors import ConfigError
from overparam.studies import width_sweep as ws

SMALL = dict(widths=(2, 128), seeds=2, steps=600, record_every=20, m=4, d=4, n=16)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("ws")
    cfg = ws.Config(**SMALL, out_dir=str(out))
    res = ws.run(cfg, progress=False)
    ws.save(res)
    return cfg, res


def test_wide_model_converges_and_narrow_does_not(small):
    cfg, res = small
    narrow = [r for r in res.rows if r["width"] == 2]
    wide = [r for r in res.rows if r["width"] == 128]
    assert all(not r["converged"] and r["final_residual"] > 0.05 for r in narrow)
    assert all(r["converged"] and r["final_residual"] < 1e-4 for r in wide)
    assert not any(r["diverged"] for r in res.rows)
    # the wide model's measured rate is close to the linear prediction
    for r in wide:
        assert abs(r["measured_rate"] - r["predicted_rate"]) < 0.25 * (1 - r["predicted_rate"])
    assert res.verdicts["converged_below_feature_dim"] == 0
    assert res.verdicts["threshold_width_all_converge"] == 128


def test_same_config_gives_identical_numbers(small, tmp_path):
    cfg, res = small
    again = ws.run(ws.Config(**SMALL, out_dir=str(tmp_path)), progress=False)
    assert [r["final_residual"] for r in again.rows] == [r["final_residual"] for r in res.rows]


def test_outputs_are_tidy_and_complete(small):
    cfg, res = small
    out = cfg.out_dir
    with open(f"{out}/summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {"width", "seed", "final_residual", "measured_rate", "predicted_rate",
                               "movement", "converged", "diverged"} <= set(rows[0])
    with open(f"{out}/curves.csv") as fh:
        curves = list(csv.DictReader(fh))
    assert len(curves) == 4 * (600 // 20 + 1)
    man = json.load(open(f"{out}/manifest.json"))
    assert man["config"]["widths"] == [2, 128] and "jax" in man["versions"] and man["study"] == "width-sweep"
    for ext in ("png", "pdf"):
        assert (ws.Path(out) / f"width_sweep.{ext}").stat().st_size > 1000


def test_resume_skips_finished_cells(small, monkeypatch):
    cfg, res = small

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(ws, "run_width", boom)
    again = ws.run(cfg, progress=False)
    assert [r["final_residual"] for r in again.rows] == [r["final_residual"] for r in res.rows]


def test_divergence_is_reported_not_averaged(tmp_path):
    cfg = ws.Config(widths=(64,), seeds=2, steps=200, record_every=20, m=4, d=4, n=16, mu=200.0, eta=1.0,
                    out_dir=str(tmp_path))
    res = ws.run(cfg, progress=False)
    assert all(r["diverged"] and not r["converged"] for r in res.rows)
    assert all(np.isnan(r["final_residual"]) for r in res.rows)
    assert "diverged" in ws.summary(res)


def test_user_data_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 4)) * 0.3
    np.save(tmp_path / "x.npy", x)
    cfg = ws.Config(widths=(64,), seeds=1, steps=200, record_every=20, m=4, d=4, n=16,
                    data=str(tmp_path / "x.npy"), out_dir=str(tmp_path / "o"))
    assert ws.load_data(cfg).shape == (50, 4)
    with pytest.raises(ConfigError, match="expected \\(N, m\\)"):
        ws.load_data(ws.Config(m=5, data=str(tmp_path / "x.npy")))
    with pytest.raises(ConfigError, match="not found"):
        ws.load_data(ws.Config(data=str(tmp_path / "missing.npy")))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="could not read"):
        ws.load_data(ws.Config(data=str(tmp_path / "bad.npy")))


@pytest.mark.parametrize("args, match", [
    (["--widths", "0,8"], "width"), (["--widths", "-4"], "width"), (["--phi", "swish"], "phi"),
    (["--optimizer", "lion"], "optimizer"), (["--mu", "nan"], "finite"), (["--eta", "inf"], "finite"),
    (["--steps", "100", "--record-every", "7"], "multiple"), (["--bogus", "1"], None),
])
def test_cli_bad_input_gives_one_clear_error(args, match, capsys, tmp_path):
    if match is None:
        with pytest.raises(SystemExit):
            simulate.main(["width-sweep", *args])
        return
    code = simulate.main(["width-sweep", *args, "--out-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_small_run_and_toml(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('widths = [64]\nseeds = 1\nsteps = 100\nrecord_every = 10\nm = 4\nd = 4\nn = 8\n')
    code = simulate.main(["width-sweep", "--config", str(toml), "--steps", "200", "--out-dir", str(tmp_path / "o"),
                          "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "width sweep" in out and "steps=200" in out
    assert (tmp_path / "o" / "summary.csv").exists()
