"""Width-sweep verdicts: divergence bound, per-seed rate errors, lazy movement slope, validity flags."""
import json
import math

import numpy as np
import pytest

from overparam import claims
from overparam.errors import ConfigError
from overparam.studies import width_sweep as ws
from overparam.studies.config import from_mapping, load_sim


def _results(rows_spec, config=None, steps=(0, 10, 20)):
    """Results from hand-built rows: rows_spec = list of dicts with width, seed and overrides."""
    cfg = config or ws.Config(widths=tuple(sorted({r["width"] for r in rows_spec})), seeds=3, m=4,
                              n_boot=2000)
    rows, curves = [], []
    for spec in rows_spec:
        row = {"width": spec["width"], "seed": spec["seed"], "final_residual": 1e-5, "final_disc_norm": 0.0,
               "measured_rate": 0.9, "predicted_rate": 0.9, "predicted_rate_simple": 0.9, "lambda_min": 0.2,
               "lambda_max": 0.5, "movement": 0.1, "converged": True, "diverged": False, "diverged_step": -1}
        row.update({k: v for k, v in spec.items() if k != "peak"})
        rows.append(row)
        peak = spec.get("peak", 1.0)
        for t, r in zip(steps, (1.0, peak, row["final_residual"])):
            curves.append({"width": row["width"], "seed": row["seed"], "step": t, "residual": r, "disc_norm": 0.0})
    res = ws.Results(cfg, rows, curves, 0.0)
    res.verdicts = ws.verdicts(res)
    return res


def _claim(res, name):
    return next(c for c in res.verdicts["claims"] if c["name"] == name)


def test_divergence_bound_non_finite_and_transient_blow_up():
    res = _results([
        {"width": 64, "seed": 0},
        {"width": 64, "seed": 1, "final_residual": 1e12, "converged": False},       # finite but blown up
        {"width": 64, "seed": 2, "peak": 5e3},                                       # transient blow-up
        {"width": 128, "seed": 0, "final_residual": float("nan"), "diverged": True, "converged": False},
        {"width": 128, "seed": 1, "final_residual": 2e-5, "movement": 0.3},
        {"width": 128, "seed": 2, "peak": 999.0, "final_residual": 4e-5, "movement": 0.5},  # just below the bound
    ])
    div = ws.divergence(res)
    assert div == {(64, 1): "relative residual above 1000", (64, 2): "relative residual above 1000",
                   (128, 0): "non-finite"}
    table = {t["k"]: t for t in ws.per_width(res)}
    assert table[64]["n_used"] == 1 and table[64]["diverged"] == 2 and table[64]["converged"] == 1
    assert table[128]["n_used"] == 2 and table[128]["diverged"] == 1
    assert table[64]["final_res"] == 1e-5                   # the 1e12 run is not in the median
    assert table[128]["movement"] == pytest.approx(0.4)     # median of 0.3 and 0.5, the NaN run left out
    assert res.verdicts["diverged_runs"] == 3 and res.verdicts["diverged_nonfinite"] == 1
    text = ws.summary(res)
    assert "3 runs diverged (1 non-finite" in text and "n_used" in text
    # the bound is an option read again from the stored rows (no recomputation)
    looser = ws.Results(ws.Config(widths=(64, 128), seeds=3, m=4, blowup=1e4), res.rows, res.curves, 0.0)
    assert set(ws.divergence(looser)) == {(64, 1), (128, 0)}


def test_rate_error_per_seed_median_max_and_verdict():
    m = 4  # rate range k >= 8 m = 32
    specs = []
    errs = {32: [0.01, 0.02, 0.06], 64: [0.0, 0.03, 0.01], 8: [0.9, 0.8, 0.7]}
    for k, es in errs.items():
        for s, e in enumerate(es):
            pred = 0.95
            specs.append({"width": k, "seed": s, "predicted_rate": pred, "measured_rate": pred + e * (1 - pred)})
    res = _results(specs)
    table = {t["k"]: t for t in ws.per_width(res)}
    for k, es in errs.items():
        assert table[k]["rate_err_med"] == pytest.approx(np.median(es), abs=1e-9)
        assert table[k]["rate_err_max"] == pytest.approx(max(es), abs=1e-9)
    assert math.isnan(ws.rate_error({"measured_rate": 0.99, "predicted_rate": 1.0}))     # no predicted contraction
    assert math.isnan(ws.rate_error({"measured_rate": 0.99, "predicted_rate": 1.05}))
    assert ws.rate_error({"measured_rate": 0.92, "predicted_rate": 0.9}) == pytest.approx(0.2)
    v = _claim(res, "rate_matches_prediction")
    inside = errs[32] + errs[64]                            # width 8 is outside the labelled range
    assert v["value"] == pytest.approx(np.mean(inside), abs=1e-9)
    lo, hi = claims.bootstrap_mean([ws.rate_error(r) for r in res.rows if r["width"] >= 8 * m], 2000, 0)
    assert (v["ci_low"], v["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert v["runs"]["widths"] == [32, 64] and v["runs"]["n"] == 6
    assert v["outcome"] == "supported" and v["threshold"] == 0.1
    # per-seed errors of 20-40 %: not supported, whatever the medians of rates say
    bad = _results([{"width": 64, "seed": s, "predicted_rate": 0.9, "measured_rate": 0.9 + e * 0.1}
                    for s, e in enumerate([0.2, 0.3, 0.4])])
    assert _claim(bad, "rate_matches_prediction")["outcome"] == "not supported"
    # an interval straddling 0.1 is inconclusive
    mid = _results([{"width": 64, "seed": s, "predicted_rate": 0.9, "measured_rate": 0.9 + e * 0.1}
                    for s, e in enumerate([0.0, 0.1, 0.2])])
    assert _claim(mid, "rate_matches_prediction")["outcome"] == "inconclusive"


def test_movement_slope_is_pooled_over_the_lazy_range_only():
    rng = np.random.default_rng(0)
    specs = []
    for s in range(3):
        c = 1 + 0.05 * s
        for k in (4, 8, 16):                                # not lazy: a different law, must be ignored
            specs.append({"width": k, "seed": s, "movement": c * 0.5})
        for k in (32, 64, 128, 256):
            specs.append({"width": k, "seed": s, "movement": c * k ** -0.5 * math.exp(rng.normal(0, 0.01))})
    res = _results(specs)
    v = _claim(res, "lazy_movement_slope")
    lazy = [r for r in res.rows if r["width"] >= 32]
    assert v["value"] == pytest.approx(np.polyfit(np.log([r["width"] for r in lazy]),
                                                  np.log([r["movement"] for r in lazy]), 1)[0], abs=1e-10)
    assert v["runs"]["widths"] == [32, 64, 128, 256] and v["runs"]["n"] == 12
    assert v["ci_low"] < v["value"] < v["ci_high"] and v["outcome"] == "supported"
    assert "k in [32, 256]" in v["statistic"]
    steep = _results([{"width": k, "seed": s, "movement": (1 + 0.1 * s) / k} for s in range(3) for k in (32, 64, 128)])
    assert _claim(steep, "lazy_movement_slope")["outcome"] == "not supported"
    one = _results([{"width": 64, "seed": s} for s in range(3)])
    assert _claim(one, "lazy_movement_slope")["outcome"] == "inconclusive"


def test_validity_flag_and_convergence_shares():
    cfg = ws.Config(widths=(2, 64), seeds=3, m=4, mu=0.5, eta=1.0, n_boot=500)
    specs = [{"width": 2, "seed": s, "converged": False, "final_residual": 0.3} for s in range(3)]
    specs += [{"width": 64, "seed": s, "lambda_max": lam} for s, lam in enumerate([0.4, 0.5, 0.6])]
    res = _results(specs, cfg)
    table = {t["k"]: t for t in ws.per_width(res)}
    assert table[64]["outside_valid"] == 1                   # only 4·0.5·0.6 = 1.2 > η = 1
    assert res.verdicts["rows_outside_validity"] == 1
    assert _claim(res, "rate_matches_prediction")["runs"]["outside_validity"] == 1
    below = _claim(res, "no_convergence_below_feature_dim")
    assert below["value"] == 0 and (below["ci_low"], below["ci_high"]) == pytest.approx(claims.wilson(0, 3))
    assert below["outcome"] == "inconclusive"                # 3 runs cannot push the upper end below 0.25
    wide = _claim(res, "wide_models_converge")
    assert wide["value"] == 1 and wide["outcome"] == "inconclusive"   # Wilson low of 3/3 = 0.56 < 0.9


def test_thresholds_are_pinned_in_sims_and_checked():
    pinned = from_mapping(ws.Config, load_sim("sims/width_sweep.toml"))
    default = ws.Config()
    for name in ws.Config.NOT_CONTENT:
        assert getattr(pinned, name) == getattr(default, name), name
    for bad in ({"blowup": 0.5}, {"slope_band": (-0.4, -0.6)}, {"slope_band": (-0.5,)}, {"rate_error_max": -1.0},
                {"below_share_max": 1.5}, {"n_boot": 0}, {"lazy_k_factor": float("nan")}):
        with pytest.raises(ConfigError):
            ws.Config(**bad)


def test_figure_marks_divergence_and_names_the_setting():
    res = _results([{"width": k, "seed": s, "movement": k ** -0.5} for k in (32, 64) for s in range(2)]
                   + [{"width": 64, "seed": 2, "final_residual": 1e9, "converged": False}])
    fig = ws.plot(res)
    title = fig._suptitle.get_text()
    assert "m = 4" in title and "μ = 0.5" in title and "η = 1" in title and "3 seeds" in title
    for ax in fig.axes:
        leg = ax.get_legend()
        assert leg is not None and min(t.get_fontsize() for t in leg.get_texts()) >= 9
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "diverged (1)" in labels and "runs (4)" in labels


def test_small_real_sweep_writes_verdicts(tmp_path):
    cfg = ws.Config(widths=(2, 32, 64), seeds=2, steps=400, record_every=20, m=4, d=4, n=16, n_boot=500,
                    out_dir=str(tmp_path))
    res = ws.run(cfg, progress=False)
    ws.save(res)
    blob = json.loads((tmp_path / "results.json").read_text())
    names = [c["name"] for c in blob["verdicts"]["claims"]]
    assert names == ["no_convergence_below_feature_dim", "wide_models_converge", "rate_matches_prediction",
                     "lazy_movement_slope"]
    for c in blob["verdicts"]["claims"]:
        assert c["outcome"] in claims.OUTCOMES and c["threshold_source"] == "sims/width_sweep.toml"
    assert "[" in ws.summary(res) and "verdicts (thresholds pinned" in ws.summary(res)
    slope = blob["verdicts"]["claims"][3]
    assert slope["runs"]["widths"] == [32, 64] and slope["runs"]["n"] == 4
