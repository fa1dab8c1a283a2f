"""The optimizers-on-images study: verdict logic on synthetic rows (hand-computed values), the
class metrics against a hand count, the lr-as-data program against the standard bridge path
(vmapped and alone), a tiny end-to-end CLI run (files, values recomputed independently, resume)
and bad input as one ConfigError."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("sklearn")

from overparam import claims  # noqa: E402
from overparam.errors import ConfigError  # noqa: E402
from overparam.studies import optimizers as op  # noqa: E402


# -- verdicts on synthetic rows ------------------------------------------------------------------
def _rows(arm, fds, seeds=(1000, 1001, 1002)):
    return [{"arm": arm, "seed": s, "fd_train": f} for s, f in zip(seeds, fds)]


CFG = op.Config(arms=("adam", "sgd", "ada_nsgda"), n_boot=2000)
UNTRAINED = {0: 1000.0, 1000: 1000.0, 1001: 1100.0, 1002: 900.0}


def _by_name(vs):
    return {v.name: v for v in vs}


def test_verdicts_on_synthetic_rows_have_the_hand_computed_values():
    held = _rows("adam", [100, 110, 120]) + _rows("ada_nsgda", [105, 108, 126]) + _rows("sgd", [300, 330, 360])
    v = _by_name(op.decide_verdicts(held, UNTRAINED, CFG))
    d = np.array([5 / 100, -2 / 110, 6 / 120])
    assert v["ada_nsgda_matches_adam"].value == pytest.approx(d.mean(), abs=1e-12)
    assert v["ada_nsgda_matches_adam"].interval == pytest.approx(claims.bootstrap_mean(d, n_boot=2000))
    lo, hi = v["ada_nsgda_matches_adam"].interval
    assert d.min() - 1e-12 <= lo <= hi <= d.max() + 1e-12  # a mean of resampled d lies in [min d, max d]
    assert v["ada_nsgda_matches_adam"].outcome == "supported"
    assert v["ada_nsgda_matches_adam"].threshold == (-0.25, 0.25)
    # SGDA: d = 2 on every seed -> every resample's mean is 2: interval [2, 2]
    assert v["sgd_matches_adam"].value == pytest.approx(2.0)
    assert v["sgd_matches_adam"].interval == pytest.approx((2.0, 2.0))
    assert v["sgd_matches_adam"].outcome == "not supported"
    assert v["sgd_falls_short"].outcome == "supported"
    assert v["sgd_falls_short"].runs["seeds"] == [1000, 1001, 1002]
    assert set(v) == {"ada_nsgda_matches_adam", "sgd_matches_adam", "sgd_falls_short"}


def test_a_straddling_interval_is_inconclusive_and_pairing_is_by_seed():
    # rows in a shuffled order: d is paired by seed, not by position
    held = _rows("adam", [100, 200, 100]) + list(reversed(_rows("ada_nsgda", [120, 160, 130])))
    cfg = op.Config(arms=("adam", "ada_nsgda"), n_boot=2000)
    seeds, d = op.relative_differences(held, "ada_nsgda")
    assert seeds == [1000, 1001, 1002] and d == pytest.approx([0.2, -0.2, 0.3])
    (v,) = op.decide_verdicts(held, UNTRAINED, cfg)
    lo, hi = v.interval
    assert lo < 0.25 < hi and v.outcome == "inconclusive" and "straddles" in v.reason


def test_adam_that_did_not_learn_makes_every_verdict_inconclusive():
    # Adam's mean FD 300 > 0.25 x the untrained mean 1000: "Adam did not learn"
    held = _rows("adam", [300, 300, 300]) + _rows("ada_nsgda", [300, 300, 300]) + _rows("sgd", [900, 900, 900])
    vs = op.decide_verdicts(held, UNTRAINED, CFG)
    assert len(vs) == 3
    assert all(v.outcome == "inconclusive" and v.reason.startswith("Adam did not learn") for v in vs)
    # the same rows with a learning Adam decide
    held2 = _rows("adam", [200, 200, 200]) + _rows("ada_nsgda", [200, 200, 200]) + _rows("sgd", [600] * 3)
    assert [v.outcome for v in op.decide_verdicts(held2, UNTRAINED, CFG)] == ["not supported", "supported",
                                                                               "supported"]


def test_diverged_runs_and_too_few_seeds_are_inconclusive():
    held = _rows("adam", [100, 110, 120]) + _rows("sgd", [300, float("nan"), 360]) + \
        _rows("ada_nsgda", [100, 110], seeds=(1000, 1001))
    v = _by_name(op.decide_verdicts(held, UNTRAINED, CFG))
    assert v["sgd_matches_adam"].outcome == "inconclusive" and "1 of 3" in v["sgd_matches_adam"].reason
    assert v["ada_nsgda_matches_adam"].outcome == "inconclusive" and "(< 3)" in v["ada_nsgda_matches_adam"].reason
    held[1]["fd_train"] = float("inf")  # a diverged Adam run: nothing can be decided
    assert all(v.outcome == "inconclusive" and "Adam did not learn" in v.reason
               for v in op.decide_verdicts(held, UNTRAINED, CFG))


def test_class_metrics_against_a_hand_count():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 19 + [3] * 1)  # n = 100, uniform share 10
    m = op.class_metrics(labels, 10, 0.1)  # covered: count >= 1
    assert m["classes_covered"] == 4
    p = np.array([0.5, 0.3, 0.19, 0.01])
    assert m["kl_to_uniform"] == pytest.approx(float(np.sum(p * np.log(10 * p))), abs=1e-12)
    assert op.class_metrics(labels, 10, 0.2)["classes_covered"] == 3  # count >= 2
    assert op.class_metrics(np.arange(100) % 10)["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert op.class_metrics(np.zeros(10, int))["kl_to_uniform"] == pytest.approx(math.log(10))


def test_choose_cell_takes_the_lowest_finite_fd():
    rows = [{"lr_g": 1, "lr_d": 1, "finite": True, "fd_train": 5.0},
            {"lr_g": 1, "lr_d": 2, "finite": False, "fd_train": 1.0},
            {"lr_g": 2, "lr_d": 1, "finite": True, "fd_train": float("nan")},
            {"lr_g": 2, "lr_d": 2, "finite": True, "fd_train": 3.0}]
    assert op.choose_cell(rows) == rows[3]
    assert op.choose_cell(rows[1:3]) is None


# -- the program: lr as data, vmapped grid == one cell alone ---------------------------------------
TINY = dict(data="digits", n_train=64, n_heldout=32, width=1 / 64, latent_dim=8, batch_size=8, steps=6,
            record_every=3, classifier_steps=30, n_boot=500)


@pytest.mark.parametrize("arm", op.ARMS)
def test_lr_as_data_is_the_rule_of_optim_make(arm):
    """η · (the arm's step at η = 1) equals optim.make(arm, η)'s step over a few updates of a
    two-tensor pytree (float32 tolerance), for η in the state, with the GAN betas."""
    import jax
    import jax.numpy as jnp

    from overparam import optim

    cfg = op.Config()
    rng = np.random.default_rng(3)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=5),
                                                                                        jnp.float32)}
    for lr in (3e-4, 0.05):
        ours, ref = op.unit_optimizer(cfg, arm, lr), optim.make(arm, lr, **op.arm_options(cfg, arm))
        so, sr = ours.init(params), ref.init(params)
        for t in range(4):
            g = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32) * (t + 1), params)
            uo, so = ours.update(g, so, params)
            ur, sr = ref.update(g, sr, params)
            for x, y in zip(jax.tree_util.tree_leaves(uo), jax.tree_util.tree_leaves(ur)):
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-9)
        assert float(optim.tree_norm(uo)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["ada_nsgda", "nsgd_tensor"])
def test_vmapped_grid_equals_each_cell_run_alone_on_the_standard_path(arm):
    """The grid program (lr in the state, vmapped over cells, and the same program per cell) gives
    the numbers of the bridge's own path: make_optimizers(TrainConfig(lr_g, lr_d)) with
    optim.make(arm, lr), make_train_step's default key, dynamics.run, to float32 tolerance."""
    import jax

    from overparam import dynamics
    from overparam.bridge import nets
    from overparam.bridge import step as bstep

    cfg = op.Config(**TINY, arms=("adam", arm))
    train, _ = op.load_split(cfg)
    gan = nets.make_gan(cfg.arch, 8, 1, cfg.width, cfg.latent_dim, sn_d=cfg.sn_d)
    prog = op.ArmProgram(cfg, arm, gan, train)
    lrs = [(3e-3, 1e-2), (2e-2, 5e-3)] if arm == "nsgd_tensor" else [(1e-3, 3e-3), (4e-3, 5e-4)]
    cells = [(7, a, b) for a, b in lrs]
    vm = op.run_cells(prog, cells, vmap=True)
    seq = op.run_cells(prog, cells, vmap=False)
    for (seed, a, b), (sv, rv), (ss, rs) in zip(cells, vm, seq):
        tc = op.train_config(cfg, arm, seed, a, b)
        og, od = bstep.make_optimizers(tc)
        s0 = bstep.init_train_state(gan, tc, og, od, jax.numpy.asarray(train), None)
        step = bstep.make_train_step(gan, tc, og, od, jax.numpy.asarray(train), None)
        ref, rr = dynamics.run(step, s0, jax.random.PRNGKey(0), cfg.steps, cfg.record_every, op._record)
        moved = float(optim_norm_diff(ref.gen, s0.gen))
        assert moved > 1e-3  # the cells really trained
        for got in (sv, ss):
            for x, y in zip(jax.tree_util.tree_leaves((got.gen, got.disc, got.ema)),
                            jax.tree_util.tree_leaves((ref.gen, ref.disc, ref.ema))):
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(rv["loss_d"], np.asarray(rr["loss_d"]), rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(rs["loss_g"], np.asarray(rr["loss_g"]), rtol=2e-4, atol=2e-6)
    # different step sizes gave different trajectories (the lr is really data)
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(vm[0][0].gen)[0]),
                           np.asarray(jax.tree_util.tree_leaves(vm[1][0].gen)[0]))


def optim_norm_diff(a, b):
    from overparam import optim

    import jax

    return optim.tree_norm(jax.tree_util.tree_map(lambda x, y: x - y, a, b))


# -- end to end through the CLI ------------------------------------------------------------------
def _cli_args(out):
    return ["optimizers", "--data", "digits", "--n-train", "64", "--n-heldout", "32", "--width", "0.015625",
            "--latent-dim", "8", "--batch-size", "8", "--steps", "6", "--record-every", "3", "--arms", "adam,sgd",
            "--grid-adam", "2e-4,8e-4", "--grid-sgd", "0.03", "--heldout-seeds", "11,12,13", "--classifier-steps",
            "30", "--n-boot", "500", "--no-progress", "--out-dir", str(out)]


@pytest.mark.slow
def test_tiny_cli_run_writes_every_output_with_recomputable_values(tmp_path, monkeypatch, capsys):
    from overparam.bridge.classifier import get_classifier
    from overparam.metrics.frechet import frechet_distance_from_features
    from overparam.records import read_json
    from overparam.simulate import main

    monkeypatch.setenv("OVERPARAM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(_cli_args(out)) == 0
    text = capsys.readouterr().out
    assert "NOT FID" in text and "Verdicts:" in text and "Real-vs-real floor" in text
    for f in ("grid.csv", "heldout.csv", "curves.csv", "results.json", "manifest.json", "optimizers_grid.png",
              "optimizers_grid.pdf", "optimizers_heldout.png", "optimizers_heldout.pdf"):
        assert (out / f).stat().st_size > 100, f
    res = read_json(out / "results.json")
    assert res["tuning_seeds"] == [0] and res["heldout_seeds"] == [11, 12, 13]
    assert [v["name"] for v in res["verdicts"]] == ["sgd_matches_adam", "sgd_falls_short"]
    cells = {c.name for c in (out / "cells").iterdir()}
    assert cells == {"grid-digits-adam.json", "grid-digits-sgd.json",
                     *(f"heldout-digits-{a}-s{s}.json" for a in ("adam", "sgd") for s in (11, 12, 13))}
    import csv

    grid = list(csv.DictReader((out / "grid.csv").open()))
    held = list(csv.DictReader((out / "heldout.csv").open()))
    assert len(grid) == 4 + 1 and len(held) == 6
    adam = [r for r in grid if r["arm"] == "adam"]
    best = min(adam, key=lambda r: float(r["fd_train"]))
    assert (res["chosen"]["adam"]["lr_g"], res["chosen"]["adam"]["lr_d"]) == (float(best["lr_g"]),
                                                                              float(best["lr_d"]))
    assert all(float(r["lr_g"]) == res["chosen"]["adam"]["lr_g"] for r in held if r["arm"] == "adam")
    for r in grid + held:
        assert float(r["fd_train"]) > 0 and 0 <= float(r["classes_covered"]) <= 10
        assert float(r["kl_to_uniform"]) >= -1e-12 and float(r["kl_to_uniform"]) <= math.log(10) + 1e-9
    # the verdict's value is the mean paired relative difference of heldout.csv
    fa = {r["seed"]: float(r["fd_train"]) for r in held if r["arm"] == "adam"}
    fs = {r["seed"]: float(r["fd_train"]) for r in held if r["arm"] == "sgd"}
    d = np.mean([(fs[s] - fa[s]) / fa[s] for s in fa])
    assert res["verdicts"][0]["value"] == pytest.approx(d, rel=1e-9)
    # the real-vs-real floor recomputed independently from the classifier's features
    cfg = op.Config(data="digits", n_train=64, n_heldout=32)
    train, heldout = op.load_split(cfg)
    assert not (set(map(bytes, train.reshape(64, -1))) & set(map(bytes, heldout.reshape(32, -1))))
    clf = get_classifier("digits", 8, seed=0, steps=30)
    assert res["floor"]["fd_train"] == pytest.approx(
        frechet_distance_from_features(clf.features(heldout), clf.features(train)), rel=1e-6)
    # a second run reuses every cell and gives the same numbers
    assert main(_cli_args(out)) == 0
    assert "cells: reused 8 of 8" in capsys.readouterr().out
    again = read_json(out / "results.json")
    assert again["verdicts"] == res["verdicts"] and again["floor"] == res["floor"]
    assert json.loads((out / "manifest.json").read_text())["study"] == "optimizers"


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, words", [
    (dict(arms=("sgd",)), "must include adam"),
    (dict(arms=("adam", "rmsprop")), "arm"),
    (dict(arms=("adam", "adam")), "duplicates"),
    (dict(grid_adam=(1e-4, -1e-3)), "grid_adam"),
    (dict(grid_sgd=()), "grid_sgd is empty"),
    (dict(heldout_seeds=(0, 1, 2)), "overlap"),
    (dict(steps=250, record_every=100), "multiple of record_every"),
    (dict(margin=0.0), "margin"),
    (dict(learned_ratio=1.5), "learned_ratio"),
    (dict(data="digits", n_train=1500, n_heldout=500), "exceeds"),
    (dict(data="cifar10"), "--path"),
    (dict(resolution=12), "power of two"),
    (dict(width="0.5"), "width must be"),
])
def test_bad_input_is_one_config_error(bad, words):
    with pytest.raises(ConfigError, match=words):
        op.Config(**bad)


def test_bad_cli_option_is_one_error_line_before_any_work(tmp_path, capsys):
    from overparam.simulate import main

    assert main(["optimizers", "--heldout-seeds", "0,5,6", "--out-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlap" in err[0]
    assert not (tmp_path / "x" / "cells").exists()
