"""Stochasticity study (Yazici et al. Table 1) as a pre-registered protocol (issue 8): the table's
shape and ranges, its 1-NN numbers and the real-image baseline against brute-force numpy
recomputations, training to a plateau (resume included), the two budgets, the verdicts on
synthetic rows (values asserted), the figures and configuration errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("sklearn")

from overparam.errors import ConfigError  # noqa: E402
from overparam.studies import conv_common  # noqa: E402
from overparam.studies import stochasticity as st  # noqa: E402
from overparam.studies.config import from_mapping  # noqa: E402

# The study runs behind `done` are the slow tier; test_tiny_run_end_to_end is the fast one.
# Two runs per seed (m = n under both budgets, m = n/4 equal epochs; no noise run) and two seeds keep
# this file near a minute (each run compiles its own train step).
TINY = dict(n=32, width=1 / 32, latent_dim=8, steps=20, eval_every=10, log_every=10, batch_divisors=(1, 4),
            noise_var=0.0, classifier_steps=30, n_show=4, seeds=(5, 6), tuning_seeds=(1,), budget="epochs",
            plateau_window=1, plateau_rel_tol=0.0)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("OVERPARAM_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = st.Config(**TINY, out_dir=str(tmp_path_factory.mktemp("stoch")))
    res = st.run(cfg, progress=False)
    paths = st.save(res)
    yield cfg, res, paths
    mp.undo()


@pytest.mark.slow
def test_table_has_the_shape_of_table_1(done):
    cfg, res, _ = done
    assert [(r["seed"], r["m"], r["noise"], r["budget"]) for r in res.rows] == [
        (5, 32, False, "both"), (5, 8, False, "epochs"), (6, 32, False, "both"), (6, 8, False, "epochs")]
    for r in res.rows:
        # rel_tol 0 never plateaus on a changing curve: every run trains to its maximum (20, 80 updates)
        assert r["stop"] == "max" and r["steps"] == r["max_steps"] == (20 if r["m"] == 32 else 80)
        assert r["epochs"] == pytest.approx(r["steps"] * r["m"] / 32) == pytest.approx(20.0)
        for space, hi in (("pixel", 255.0), ("feature", math.inf)):
            for side in ("overfitting", "mode_drop"):
                avg, w10, w5 = (r[f"{space}_{side}_{k}"] for k in ("avg", "worst10", "worst5"))
                assert 0.0 <= avg <= w10 + 1e-12 <= w5 + 2e-12 and w5 <= hi
    text = st.summary(res)
    for col in ("OF avg", "OF 10%", "OF 5%", "MD avg", "MD 10%", "MD 5%", "real held-out", "/ real", "Verdicts",
                "[INCONCLUSIVE]"):
        assert col in text
    assert [v.name for v in res.verdicts] == ["memorization", "batch_m8_epochs_overfitting",
                                              "batch_m8_epochs_mode_drop"]


def test_tiny_run_end_to_end(tmp_path, monkeypatch):
    """Fast tier: one full-batch run of 16 images, no feature space, trained to a plateau of its
    score (rel_tol 10: the second evaluation stops it); the table's pixel statistics and the
    real-image baseline against brute force from the saved images, the figures, and the resume."""
    cfg = st.Config(n=16, width=1 / 32, latent_dim=8, steps=30, eval_every=10, log_every=10, batch_divisors=(1,),
                    noise_var=0.0, features="none", n_show=2, seeds=(3,), tuning_seeds=(), plateau_window=1,
                    plateau_rel_tol=10.0, out_dir=str(tmp_path))
    res = st.run(cfg, progress=False)
    (row,) = res.rows
    assert (row["m"], row["stop"], row["steps"], row["max_steps"]) == (16, "plateau", 20, 30)
    assert "feature_overfitting_avg" not in row
    assert [c["step"] for c in res.nn_curves] == [10, 20]
    train = np.load(tmp_path / "train.npz")["images"]
    gen = np.load(tmp_path / "samples" / "s3_m16.npz")["generated"]
    of, md = _brute(gen, train, "l1")
    assert row["pixel_overfitting_avg"] == pytest.approx(of.mean(), rel=1e-9)
    assert row["pixel_mode_drop_worst10"] == pytest.approx(_worst(md, 0.10), rel=1e-9)
    assert res.nn_curves[-1]["pixel_overfitting_avg"] == pytest.approx(of.mean(), rel=1e-9)
    # the baseline: the next 16 images of the seeded permutation, never trained on
    from overparam.bridge.data import load_dataset
    from overparam.metrics.pixels import to_uint8

    every = to_uint8(load_dataset("digits", n=None))
    perm = np.random.default_rng(3).permutation(len(every))
    np.testing.assert_array_equal(train, every[perm[:16]])
    bo, bm = _brute(every[perm[16:32]], train, "l1")
    (base,) = res.baselines
    assert base["pixel_overfitting_avg"] == pytest.approx(bo.mean(), rel=1e-9)
    assert base["pixel_mode_drop_worst5"] == pytest.approx(_worst(bm, 0.05), rel=1e-9)
    assert row["pixel_overfitting_avg_ratio"] == pytest.approx(of.mean() / bo.mean(), rel=1e-9)
    assert res.verdicts[0].name == "memorization" and len(res.verdicts) == 1
    assert {"nn_overfitting.png", "curves.png", "table.csv", "baseline.csv"} <= {p.name for p in st.save(res)}
    blob = __import__("json").loads((tmp_path / "results.json").read_text())
    assert blob["verdicts"][0]["name"] == "memorization" and blob["heldout_seeds"] == [3]

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(st, "train_and_evaluate", boom)
    assert st.run(cfg, progress=False).rows == res.rows


def _brute(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    diff = a[:, None, :] - b[None, :, :]
    d = np.abs(diff).mean(-1) if metric == "l1" else np.sqrt((diff ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


def _worst(v: np.ndarray, q: float) -> float:
    k = max(1, math.ceil(q * len(v) - 1e-9))
    return float(np.sort(v)[::-1][:k].mean())


@pytest.mark.slow
def test_table_equals_brute_force_from_saved_samples(done):
    """Pixel: mean |g - x| over pixels of the saved uint8 images; feature: Euclidean distances of
    the classifier's features of the same images; both recomputed with numpy broadcasting."""
    from overparam.bridge.classifier import get_classifier
    from overparam.metrics.pixels import from_uint8

    cfg, res, _ = done
    out = __import__("pathlib").Path(cfg.out_dir)
    train = np.load(out / "train.npz")["images"]
    clf = get_classifier("digits", 8, seed=0, steps=cfg.classifier_steps)
    for r in res.rows:
        if r["seed"] != 5:
            continue
        gen = np.load(out / "samples" / f"s5_{r['run']}.npz")["generated"]
        assert gen.shape == train.shape == (32, 8, 8, 1) and gen.dtype == np.uint8
        of, md = _brute(gen, train, "l1")
        fo, fm = _brute(clf.features(from_uint8(gen)), clf.features(from_uint8(train)), "l2")
        for space, (o, m), tol in (("pixel", (of, md), 1e-9), ("feature", (fo, fm), 1e-4)):
            for side, v in (("overfitting", o), ("mode_drop", m)):
                assert r[f"{space}_{side}_avg"] == pytest.approx(v.mean(), rel=tol)
                assert r[f"{space}_{side}_worst10"] == pytest.approx(_worst(v, 0.10), rel=tol)
                assert r[f"{space}_{side}_worst5"] == pytest.approx(_worst(v, 0.05), rel=tol)


@pytest.mark.slow
def test_figures_and_tables_written(done):
    cfg, _, paths = done
    names = {p.name for p in paths}
    for stem in ("nn_overfitting", "nn_mode_drop", "curves"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert {"table.csv", "curves.csv", "nn_curves.csv", "baseline.csv", "results.json", "manifest.json"} <= names
    assert all(p.stat().st_size > 500 for p in paths)
    import csv

    rows = list(csv.DictReader(open(__import__("pathlib").Path(cfg.out_dir) / "curves.csv")))
    assert {r["run"] for r in rows} == {"m32", "m8_epochs"}
    assert all(float(r["G_top_sv"]) > 0 and float(r["D_top_sv"]) > 0 for r in rows)


@pytest.mark.slow
def test_resume_skips_finished_runs(done, monkeypatch):
    cfg, res, _ = done

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(st, "train_and_evaluate", boom)
    again = st.run(cfg, progress=False)
    assert again.rows == res.rows
    # the cells do not depend on the seed list or the thresholds, but on everything a run depends on
    from overparam.studies.common import CellStore

    assert CellStore(cfg.out_dir, cfg.cell_config()).get("s5_m32") is not None
    other = st.Config(**{**TINY, "seeds": (6,), "effect_ratio": 3.0}, out_dir=cfg.out_dir)
    assert CellStore(cfg.out_dir, other.cell_config()).get("s6_m32") is not None
    assert CellStore(cfg.out_dir, st.Config(**{**TINY, "lr": 2e-4}, out_dir=cfg.out_dir).cell_config()).get(
        "s5_m32") is None


def _row(seed, run, m, noise, budget, of, md, stop="plateau"):
    return {"seed": seed, "run": run, "m": m, "noise": noise, "noise_var": 0.5 if noise else 0.0, "budget": budget,
            "stop": stop, "pixel_overfitting_avg": of, "pixel_mode_drop_avg": md}


def _synthetic(full_of=(2.0, 2.0, 2.0), small=(3.0, 4.0, 5.0), noisy=(2.0, 2.1, 2.2), stops=None):
    rows, bases = [], []
    for i, s in enumerate((10, 11, 12)):
        rows += [_row(s, "m64", 64, False, "both", full_of[i], full_of[i], (stops or {}).get((s, "m64"), "plateau")),
                 _row(s, "m16_updates", 16, False, "updates", small[i], small[i], "max"),
                 _row(s, "m16_epochs", 16, False, "epochs", small[i] / 2, small[i] / 2,
                      (stops or {}).get((s, "m16_epochs"), "plateau")),
                 _row(s, "m64_noise", 64, True, "both", noisy[i], 2 * noisy[i], "max")]
        bases.append({"seed": s, "pixel_overfitting_avg": 20.0, "pixel_mode_drop_avg": 20.0})
    return rows, bases


def test_verdicts_on_synthetic_rows():
    cfg = st.Config(**TINY, memorization_ratio=0.5, effect_ratio=1.1, n_boot=2000)
    rows, bases = _synthetic()
    v = {x.name: x for x in st.decide_verdicts(cfg, rows, bases)}
    assert list(v) == ["memorization", "batch_m16_updates_overfitting", "batch_m16_updates_mode_drop",
                       "batch_m16_epochs_overfitting", "batch_m16_epochs_mode_drop", "noise_m64_noise_overfitting",
                       "noise_m64_noise_mode_drop"]
    mem = v["memorization"]
    assert mem.value == pytest.approx(0.1) and mem.outcome == "supported" and mem.direction == "below"
    assert mem.runs["per_seed"] == pytest.approx([0.1, 0.1, 0.1]) and mem.runs["seeds"] == [10, 11, 12]
    up = v["batch_m16_updates_overfitting"]  # ratios 1.5, 2, 2.5
    assert up.value == pytest.approx(2.0) and up.outcome == "supported"
    assert 1.5 <= up.interval[0] <= up.interval[1] <= 2.5
    ep = v["batch_m16_epochs_mode_drop"]  # ratios 0.75, 1, 1.25: straddles 1.1
    assert ep.value == pytest.approx(1.0) and ep.outcome == "inconclusive" and "straddles" in ep.reason
    no = v["noise_m64_noise_overfitting"]  # ratios 1, 1.05, 1.1: all <= 1.1
    assert no.value == pytest.approx(1.05) and no.outcome == "not supported"
    assert v["noise_m64_noise_mode_drop"].value == pytest.approx(2.1) and \
        v["noise_m64_noise_mode_drop"].outcome == "supported"


def test_memorization_gates_the_arm_verdicts():
    cfg = st.Config(**TINY)
    rows, bases = _synthetic(full_of=(15.0, 16.0, 17.0), small=(30.0, 32.0, 34.0))
    v = st.decide_verdicts(cfg, rows, bases)
    assert v[0].name == "memorization" and v[0].outcome == "not supported"
    assert v[0].value == pytest.approx(0.8)
    for x in v[1:]:
        assert x.outcome == "inconclusive" and "does not memorize" in x.reason
    assert v[1].value == pytest.approx(2.0)  # the statistic is still computed and shown


def test_unconverged_runs_make_the_verdicts_inconclusive():
    cfg = st.Config(**TINY)
    rows, bases = _synthetic(stops={(11, "m64"): "max"})
    v = {x.name: x for x in st.decide_verdicts(cfg, rows, bases)}
    assert v["memorization"].outcome == "supported"  # memorization needs no plateau
    assert all(x.outcome == "inconclusive" and "not converged" in x.reason and "[11]" in x.reason
               for k, x in v.items() if k != "memorization")
    rows, bases = _synthetic(stops={(12, "m16_epochs"): "max"})
    v = {x.name: x for x in st.decide_verdicts(cfg, rows, bases)}
    assert v["batch_m16_epochs_overfitting"].outcome == "inconclusive"
    assert "m16_epochs did not plateau" in v["batch_m16_epochs_overfitting"].reason
    assert v["batch_m16_updates_overfitting"].outcome == "supported"  # equal updates: a budget, not convergence


def test_a_diverged_seed_is_reported_not_averaged_away():
    cfg = st.Config(**TINY)
    rows, bases = _synthetic()
    rows[1]["pixel_overfitting_avg"] = float("nan")  # seed 10, m16_updates diverged
    v = {x.name: x for x in st.decide_verdicts(cfg, rows, bases)}
    assert v["batch_m16_updates_overfitting"].outcome == "inconclusive"
    assert "1 of 3 seeds" in v["batch_m16_updates_overfitting"].reason


def test_baseline_against_brute_force_on_tiny_data():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
    held = rng.integers(0, 256, (7, 4, 4, 1), dtype=np.uint8)
    b = st.baseline(held, train, None, None)
    of, md = _brute(held, train, "l1")
    assert of.shape == (7,) and md.shape == (12,)
    assert b["pixel_overfitting_avg"] == pytest.approx(of.mean(), rel=1e-9)
    assert b["pixel_overfitting_worst10"] == pytest.approx(_worst(of, 0.10), rel=1e-9)
    assert b["pixel_mode_drop_avg"] == pytest.approx(md.mean(), rel=1e-9)
    assert b["pixel_mode_drop_worst5"] == pytest.approx(_worst(md, 0.05), rel=1e-9)
    assert st.baseline(held[:0], train, None, None) == {}
    r = st.with_ratios({"pixel_overfitting_avg": 2.0}, {"pixel_overfitting_avg": 8.0})
    assert r["pixel_overfitting_avg_ratio"] == pytest.approx(0.25)


def test_heldout_split_is_the_training_subset_and_the_next_images():
    from overparam.bridge.data import load_dataset

    train, held = conv_common.heldout_split("digits", None, 40, 7, None)
    np.testing.assert_array_equal(train, load_dataset("digits", n=40, seed=7))
    every = load_dataset("digits", n=None)
    perm = np.random.default_rng(7).permutation(len(every))
    np.testing.assert_array_equal(held, every[perm[40:80]])
    t = {a.tobytes() for a in train}
    assert not any(a.tobytes() in t for a in held) or len(t) < 40  # disjoint images (digits has no duplicates)
    _, short = conv_common.heldout_split("digits", None, len(every) - 3, 7, None)
    assert len(short) == 3


class _FakeTrainer:
    """A trainer stand-in whose score at step t is scores[t // every - 1] (checkpoint every `every`)."""

    def __init__(self, scores, every, steps, step=0):
        self.values, self.every, self.step, self.status = list(scores), every, step, "running"
        self.config = type("C", (), {"ckpt_every": every, "steps": steps})()
        self.scores = [{"step": (i + 1) * every, "score": v} for i, v in enumerate(self.values[: step // every])]
        self.calls = []

    def train(self, stop_at, progress=False):
        self.calls.append(stop_at)
        while self.step < stop_at:
            self.step = min((self.step // self.every + 1) * self.every, stop_at)
            if self.step % self.every == 0 or self.step == stop_at:
                self.scores.append({"step": self.step, "score": self.values[(self.step - 1) // self.every]})


def test_train_until_plateau_rule():
    # window 2, rel_tol 0.1: the first i >= 2 with ptp(s[i-2..i]) <= 0.1 * mean: [10, 5, 3, 2.9, 2.95, 2.8]
    # i = 4 (3, 2.9, 2.95: ptp 0.1 <= 0.2950): stop after the 5th evaluation, at step 50
    t = _FakeTrainer([10, 5, 3, 2.9, 2.95, 2.8], every=10, steps=60)
    out = conv_common.train_until_plateau(t, 60, 10, window=2, rel_tol=0.1)
    assert out == {"stop": "plateau", "stop_step": 50, "plateau_step": 50} and t.calls == [10, 20, 30, 40, 50]
    # never flat: stops at the maximum; a longer budget continues the same trainer and finds the plateau
    t = _FakeTrainer([10, 5, 3, 2.9, 2.95, 2.8], every=10, steps=60)
    assert conv_common.train_until_plateau(t, 40, 10, window=2, rel_tol=0.1)["stop"] == "max" and t.step == 40
    assert conv_common.train_until_plateau(t, 60, 10, window=2, rel_tol=0.1)["stop_step"] == 50
    # a resumed trainer that had already plateaued stops at once
    t = _FakeTrainer([10, 5, 3, 2.9, 2.95, 2.8], every=10, steps=60, step=50)
    assert conv_common.train_until_plateau(t, 60, 10, window=2, rel_tol=0.1)["stop_step"] == 50 and t.calls == []
    # a maximum off the evaluation grid is evaluated there
    t = _FakeTrainer([10, 9, 8, 7], every=10, steps=60)
    assert conv_common.train_until_plateau(t, 25, 10, window=2, rel_tol=0.01) == {
        "stop": "max", "stop_step": 25, "plateau_step": None}
    assert t.calls == [10, 20, 25]
    with pytest.raises(ConfigError):
        conv_common.train_until_plateau(_FakeTrainer([1], every=5, steps=60), 60, 10, 2, 0.1)


def test_presets_and_budget():
    small = st.Config()
    assert (small.resolved["n"], small.resolved["batch_divisors"], small.resolved["lr"]) == (64, (1, 4), 4e-4)
    assert [(r["name"], r["trainer"], r["steps"], r["eval_every"]) for r in st.runs(small)] == [
        ("m64", "m64", 10000, 500), ("m16_updates", "m16", 10000, 2000), ("m16_epochs", "m16", 40000, 2000),
        ("m64_noise", "m64_noise", 10000, 500)]
    paper = st.Config(data="cifar10", path="/nowhere")
    assert paper.resolved["preset"] == "paper" and paper.resolved["lr"] == 1e-4
    assert [r["m"] for r in st.runs(paper) if r["budget"] != "epochs"] == [3200, 800, 200, 50, 3200]
    ep = st.Config(**{**TINY, "budget": "epochs", "noise_var": 0.5})
    assert [(r["m"], r["steps"], r["noise_var"]) for r in st.runs(ep)] == [(32, 20, 0.0), (8, 80, 0.0), (32, 20, 0.5)]
    up = st.Config(**{**TINY, "budget": "updates"})
    assert [(r["name"], r["steps"]) for r in st.runs(up)] == [("m32", 20), ("m8_updates", 20)]
    tc = st.train_config(ep, st.runs(ep)[2], 5, "")
    assert (tc.latent_noise_var, tc.batch_size, tc.fixed_latents, tc.n_disc, tc.scheme, tc.order, tc.seed) == \
        (0.5, 32, True, 1, "alternating", "d_first", 5)
    assert (tc.loss, tc.opt_g, tc.lr_g, tc.lr_d, tc.b1, tc.b2, tc.sn_d, tc.ema) == \
        ("non_saturating", "adam", 4e-4, 4e-4, 0.0, 0.9, True, True)
    # both budgets of one batch share one trainer, run to the longer budget
    both = st.Config(**{**TINY, "budget": "both"})
    a, b = (st.train_config(both, r, 5, "") for r in st.runs(both) if r["m"] == 8)
    assert a == b and a.steps == 80 and a.ckpt_every == 40


@pytest.mark.parametrize("bad", [
    {"n": 30},                                   # not divisible by 4
    {"batch_divisors": ()},
    {"batch_divisors": (1, 1)},
    {"steps": 25},                               # not a multiple of log_every
    {"eval_every": 15},                          # not a multiple of log_every
    {"seeds": (1, 5)},                           # overlaps the tuning seeds
    {"seeds": ()},
    {"noise_var": 0.5, "noise_divisor": 2},      # noise batch not among the batch sizes
    {"plateau_window": 0},
    {"memorization_ratio": 0},
    {"noise_var": -0.5},
    {"data": "cifar10"},                         # no path
    {"data": "cifar10", "path": "x", "features": "classifier"},
    {"features": "inception"},                   # no weights
    {"preset": "huge"},
    {"budget": "time"},
    {"preset": "paper2"},
    {"width": 0},
    {"resolution": 12},
])
def test_bad_options_raise_config_error(bad):
    with pytest.raises(ConfigError):
        from_mapping(st.Config, {**TINY, **bad})


def test_cli_reports_config_errors(capsys):
    from overparam.simulate import main

    assert main(["stochasticity", "--n", "30", "--no-progress"]) == 2
    assert "not divisible" in capsys.readouterr().err


# -- reliability (issue 10) ----------------------------------------------------------------------------
def test_evaluations_and_checkpoints_are_honoured_exactly_not_rounded():
    """(was: ckpt_every honoured exactly; the checkpoint is now the 1-NN evaluation, eval_every * m_max / m)"""
    for ev in (50, 150, 250, 1000):
        c = st.Config(**{**TINY, "steps": 2000, "log_every": 50, "eval_every": ev})
        for rn in st.runs(c):
            tc = st.train_config(c, rn, 5, "")
            assert tc.ckpt_every == rn["eval_every"] == ev * 32 // rn["m"]
            assert tc.ckpt_every % tc.steps_per_call == 0 and tc.steps % tc.steps_per_call == 0


@pytest.mark.parametrize("n, divisors, hints", [(3, (1, 4), ["--n 4"]), (30, (1, 4), ["--n 28", "--n 32"]),
                                                (100, (1, 4, 16, 64), ["--n 64", "--n 128"])])
def test_divisibility_hints_suggest_valid_values(n, divisors, hints):
    kw = {**TINY, "batch_divisors": divisors, "steps": 640}
    with pytest.raises(ConfigError) as err:
        from_mapping(st.Config, {**kw, "n": n})
    msg = str(err.value)
    assert "--n 0" not in msg
    for h in hints:
        assert h in msg
        from_mapping(st.Config, {**kw, "n": int(h.split()[1])})  # the suggestion is accepted


def test_noise_divisor_is_checked_only_with_a_noise_run():
    c = st.Config(**{**TINY, "noise_var": 0.0, "noise_divisor": 3})  # 32 % 3 != 0 but there is no noise run
    assert [r["name"] for r in st.runs(c)] == ["m32", "m8_epochs"]
    with pytest.raises(ConfigError, match="not divisible by 3"):
        st.Config(**{**TINY, "noise_var": 0.5, "noise_divisor": 3})


def test_a_folder_of_ones_own_needs_n(tmp_path):
    with pytest.raises(ConfigError, match="--n"):
        st.Config(data="folder", path=str(tmp_path))
    with pytest.raises(ConfigError, match="--n"):
        st.Config(data="npz", path=str(tmp_path / "x.npz"))
    c = st.Config(data="folder", path=str(tmp_path), n=512)
    assert c.resolved["n"] == 512 and c.resolved["preset"] == "paper"
    assert st.Config(data="cifar10", path="/nowhere").resolved["n"] == 12800  # the paper's n stays for CIFAR-10


def test_out_dir_is_checked_before_any_work(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(st, "load_data", boom)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        st.run(st.Config(**TINY, out_dir=str(blocker)), progress=False)
    with pytest.raises(ConfigError, match="not a folder"):
        st.run(st.Config(**TINY, out_dir=str(blocker / "sub")), progress=False)


def test_nn_figure_tiles_are_separated_by_space_not_pixels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    fig, ax = plt.subplots()
    st._image_grid(ax, tiles, "label")
    images = ax.get_images()
    assert len(images) == 5  # one image per tile: nothing drawn between them
    for im, tile in zip(images, tiles):
        np.testing.assert_array_equal(np.asarray(im.get_array()), tile[..., 0])
    extents = [im.get_extent() for im in images]
    gaps = [b[0] - a[1] for a, b in zip(extents, extents[1:])]
    assert all(g == pytest.approx(st.GAP * 8) for g in gaps)
    plt.close(fig)
