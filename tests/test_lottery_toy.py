"""The lottery-toy study end to end: IMP counts, arms, masked-Jacobian prediction, resume, CLI."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from overparam import prune, simulate
from overparam.errors import ConfigError
from overparam.studies import lottery_toy as lt
from overparam.studies.config import load_sim

SMALL = dict(k=32, m=4, d=4, n=16, seeds=3, steps=400, record_every=20, rounds=3)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("lt")
    cfg = lt.Config(**SMALL, out_dir=str(out))
    res = lt.run(cfg, progress=False)
    lt.save(res)
    return cfg, res


def _rows(res, r, arm):
    return sorted((x for x in res.rows if x["round"] == r and x["arm"] == arm), key=lambda x: x["seed"])


def test_counts_and_arms_follow_the_imp_schedule(small):
    cfg, res = small
    N = cfg.k * cfg.d
    assert len(res.rows) == (1 + 3 * cfg.rounds) * cfg.seeds
    assert {x["arm"] for x in _rows(res, 0, "ticket")} == {"ticket"} and not _rows(res, 0, "random")
    for r in range(cfg.rounds + 1):
        kept = round(0.8 ** r * N)
        for arm in (("ticket",) if r == 0 else lt.ARMS):
            for x in _rows(res, r, arm):
                assert x["kept"] == kept and x["sparsity"] == pytest.approx(1 - kept / N, abs=1e-12)
                assert abs(x["sparsity"] - (1 - 0.8 ** r)) <= 0.5 / N + 1e-12
        if r:   # the reinit arm uses the ticket's mask: same live units
            assert [x["live_units"] for x in _rows(res, r, "reinit")] == [x["live_units"] for x in _rows(res, r, "ticket")]


def test_dense_round_converges_and_matches_the_masked_jacobian_prediction(small):
    cfg, res = small
    for x in _rows(res, 0, "ticket"):
        assert x["converged"] and x["final_residual"] < 1e-3 and x["live_units"] == cfg.k
    # where J_M J_M^T stays near its value at the rewound point (lazy runs), the measured rate
    # follows the frozen-block prediction; most ticket runs are lazy here
    ticket = [x for x in res.rows if x["arm"] == "ticket"]
    lazy = [x for x in ticket if abs(x["lambda_min_end"] - x["lambda_min"]) < 0.25 * x["lambda_min"]]
    assert len(lazy) >= 2 * len(ticket) // 3
    for x in lazy:
        assert abs(x["measured_rate"] - x["predicted_rate"]) < 0.25 * (1 - x["predicted_rate"])


def test_fewer_live_units_than_m_cannot_converge(tmp_path):
    # d = 1: every row of W is one weight, so after round 4 only round(0.8^4 * 8) = 3 < m = 4 units live
    cfg = lt.Config(k=8, m=4, d=1, n=16, seeds=3, steps=200, record_every=20, rounds=4, out_dir=str(tmp_path))
    res = lt.run(cfg, progress=False)
    last = [x for x in res.rows if x["round"] == 4]
    assert last and all(x["live_units"] == 3 for x in last)
    for x in last:
        assert not x["converged"] and x["lambda_min"] < 1e-6 * x["lambda_max"]
        assert x["predicted_rate"] >= 1 - 1e-6
    assert res.verdicts["runs_below_m_live_units"] == len(last)
    assert res.verdicts["converged_below_m_live_units"] == 0


def test_verdict_is_computed_from_the_rows(small):
    cfg, res = small
    comps = res.verdicts["comparisons"]
    assert len(comps) == 2 * cfg.rounds
    by = {(x["round"], x["arm"], x["seed"]): x for x in res.rows}
    for c in comps:
        d = [(by[(c["round"], c["control"], s)]["measured_rate"] - by[(c["round"], "ticket", s)]["measured_rate"])
             / (1 - by[(0, "ticket", s)]["measured_rate"]) for s in range(cfg.seeds)]
        assert c["mean_delta"] == pytest.approx(np.mean(d), rel=1e-12)
        assert c["lo"] <= c["mean_delta"] <= c["hi"]
        expected = ("faster" if c["lo"] > cfg.margin else "slower" if c["hi"] < -cfg.margin
                    else "same" if -cfg.margin <= c["lo"] and c["hi"] <= cfg.margin else "inconclusive")
        assert c["outcome"] == expected
    text = lt.summary(res)
    assert "VERDICT ticket vs the random mask" in text and "VERDICT ticket vs the ticket's mask on a fresh init" in text


def test_comparison_interval_is_the_claims_bootstrap(small):
    from overparam import claims

    cfg, res = small
    c = res.verdicts["comparisons"][0]
    by = {(x["round"], x["arm"], x["seed"]): x for x in res.rows}
    d = [(by[(1, "random", s)]["measured_rate"] - by[(1, "ticket", s)]["measured_rate"])
         / (1 - by[(0, "ticket", s)]["measured_rate"]) for s in range(cfg.seeds)]
    assert (c["lo"], c["hi"]) == claims.bootstrap_mean(d, n_boot=cfg.n_boot, seed=cfg.boot_seed + 1000, level=cfg.ci)
    assert c["claim"]["outcome"] == ("supported" if c["outcome"] == "faster" else c["claim"]["outcome"])
    assert c["claim"]["threshold"] == cfg.margin and c["claim"]["direction"] == "above"


def test_one_compile_serves_every_round_and_arm(small):
    cfg, res = small
    progs = lt._programs(cfg.spec, cfg.optimizer, cfg.mu, cfg.eta, cfg.scheme_obj, cfg.steps, cfg.record_every,
                         cfg.rewind_step)
    assert progs[2]._cache_size() == 1          # the training program: 1 + 3*rounds runs, one trace


def test_rerun_reuses_cells_and_a_lost_round_recomputes_identically(small, monkeypatch):
    cfg, res = small
    real_step = prune.IMP.step

    def boom(self, state):
        raise AssertionError("a finished round was recomputed")

    monkeypatch.setattr(prune.IMP, "step", boom)
    again = lt.run(cfg, progress=False)
    assert again.rows == res.rows and "reused 4 of 4" in again.cells_report
    # lose the last round's cell (a run killed mid-round): only that round reruns, from round 2's state
    (Path(cfg.out_dir) / "cells" / f"round{cfg.rounds}.json").unlink()
    calls = []

    def counted(self, state):
        calls.append(state.round)
        return real_step(self, state)

    monkeypatch.setattr(prune.IMP, "step", counted)
    resumed = lt.run(cfg, progress=False)
    assert calls == [cfg.rounds]
    assert resumed.rows == res.rows


def test_outputs_are_tidy_and_complete(small):
    cfg, res = small
    out = Path(cfg.out_dir)
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res.rows)
    assert {"round", "arm", "seed", "sparsity", "live_units", "final_residual", "measured_rate", "predicted_rate",
            "converged"} <= set(rows[0])
    with open(out / "curves.csv") as fh:
        assert sum(1 for _ in fh) - 1 == len(res.rows) * (cfg.steps // cfg.record_every + 1)
    blob = json.load(open(out / "results.json"))
    assert len(blob["verdicts"]["comparisons"]) == 2 * cfg.rounds
    man = json.load(open(out / "manifest.json"))
    assert man["study"] == "lottery-toy" and man["config"]["k"] == cfg.k
    for ext in ("png", "pdf"):
        assert (out / f"lottery_toy.{ext}").stat().st_size > 1000


def test_late_rewinding_starts_the_pruned_arms_from_step_k(small, tmp_path):
    cfg, res = small
    late = lt.run(lt.Config(**{**SMALL, "rewind_step": 100}, out_dir=str(tmp_path)), progress=False)
    # the dense round is the same run (scanned in two pieces)
    assert [x["measured_rate"] for x in _rows(late, 0, "ticket")] == pytest.approx(
        [x["measured_rate"] for x in _rows(res, 0, "ticket")], rel=1e-4)
    # rewound to step 100 the ticket starts near the solution: its initial residual is the
    # dense run's residual at step 100, so it reaches the tolerance relative to a smaller start
    for a, b in zip(_rows(late, 1, "ticket"), _rows(res, 1, "ticket")):
        assert a["lambda_min"] != b["lambda_min"]
        assert a["kept"] == b["kept"]


def test_bad_configs_are_one_config_error(tmp_path):
    for bad in (dict(seeds=2), dict(prune_fraction=20), dict(rewind_step=30), dict(rewind_step=400),
                dict(scheme="extragradient"), dict(ci=1.5), dict(steps=410)):
        with pytest.raises(ConfigError):
            lt.Config(**{**SMALL, **bad})
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        lt.run(lt.Config(**SMALL, out_dir=str(f / "sub")), progress=False)


def test_cli_quick_config_writes_its_files(tmp_path, capsys):
    quick = load_sim(ROOT / "sims" / "lottery_toy.toml", quick=True)
    args = ["lottery-toy", "--config", str(ROOT / "sims" / "lottery_toy.toml"), "--no-progress",
            "--out-dir", str(tmp_path)]
    for key in ("seeds", "steps", "record_every", "rounds"):
        args += [f"--{key.replace('_', '-')}", str(quick[key])]
    assert simulate.main(args) == 0
    out = capsys.readouterr().out
    assert "VERDICT ticket vs the random mask" in out and "masked-Jacobian prediction" in out
    with open(tmp_path / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == (1 + 3 * quick["rounds"]) * quick["seeds"]
    dense = [r for r in rows if r["round"] == "0"]
    assert all(r["converged"] == "True" and float(r["final_residual"]) < 1e-3 for r in dense)
    assert all(int(r["live_units"]) <= 64 for r in rows)
    for name in ("per_round.csv", "curves.csv", "results.json", "manifest.json", "lottery_toy.png", "lottery_toy.pdf"):
        assert (tmp_path / name).stat().st_size > 100
    assert simulate.main(["lottery-toy", "--seeds", "1", "--out-dir", str(tmp_path / "x")]) == 2
    assert "at least 3 seeds" in capsys.readouterr().err
