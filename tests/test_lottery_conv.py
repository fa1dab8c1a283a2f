"""The conv lottery study (python -m overparam.simulate lottery): configs, cell encoding, the
verdict logic on hand-built rows, and (slow) a tiny end-to-end run: exact sparsity per round, same
layer counts in every arm, pruned weights zero, transfer masks, and a run killed mid-round
resuming to the same numbers."""
from __future__ import annotations

import math
import shutil

import jax
import numpy as np
import pytest

from overparam import prune
from overparam.errors import ConfigError
from overparam.studies import lottery as L

pytest.importorskip("flax")

TINY = dict(resolution=8, n_train=48, n_heldout=40, width=1 / 64, latent_dim=8, batch_size=16, epochs=3, rounds=2,
            n_eval=24, classifier_steps=40, eb_queue=2, models=("gan", "vae"), seeds=3, n_boot=200)


@pytest.mark.parametrize("bad, match", [
    (dict(seeds=2), "at least 3 seeds"),
    (dict(prune_fraction=20), "fraction"),
    (dict(rewind_epoch=16), "rewind_epoch"),
    (dict(models=("gan", "ae")), "transfer needs both"),
    (dict(models=("vae",), transfer=False), "early-bird chain runs on the GAN"),
    (dict(models=("gan", "gen")), "model"),
    (dict(scope="local"), "scope"),
    (dict(n_eval=2000), "n_heldout"),
    (dict(data="cifar10"), "--path"),
    (dict(margin=-0.1), "margin"),
])
def test_bad_config_is_one_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        L.Config(**bad)


def test_presets_resolve_and_quality_key():
    c = L.Config()
    assert c.resolved["preset"] == "small" and c.resolved["rounds"] == 6 and c.resolved["resolution"] == 16
    assert c.quality_key == "fd_mnist5k_classifier_heldout"
    assert c.imp.target_sparsity(6) == pytest.approx(1 - 0.8**6)
    p = L.Config(preset="paper")
    assert p.resolved["rounds"] == 10 and p.imp.target_sparsity(10) > 0.89


def test_cell_arrays_round_trip_bit_for_bit():
    rng = np.random.default_rng(0)
    tree = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": {"c": rng.integers(0, 5, size=(2,))},
            "e": np.array([True, False])}
    blob = L._enc(tree)
    like = {"a": 0, "b": {"c": 0}, "e": 0}
    back = L._dec(blob, like)
    for x, y in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(back)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    fill = {"a": np.zeros((3, 4), np.float32), "b": {"c": np.ones(2, int)}, "e": np.zeros(2, bool)}
    part = L._enc({"a": tree["a"], "b": {"c": None}, "e": None})
    got = L._dec(part, fill, fill=fill)
    np.testing.assert_array_equal(got["a"], tree["a"])
    np.testing.assert_array_equal(got["b"]["c"], np.ones(2, int))


def _results(values: dict, init: float = 1000.0) -> L.Results:
    """Hand-built rows: values[(model, round, arm)] = per-seed quality list."""
    cfg = L.Config(**{**TINY, "models": ("gan", "vae")})
    q = cfg.quality_key
    rows = []
    for (model, r, arm), vs in values.items():
        for s, v in enumerate(vs):
            row = {"model": model, "round": r, "arm": arm, "seed": s, "sparsity": 1 - 0.8**r, q: v,
                   "eb_epoch": None, "diverged": False}
            if r == 0:
                row[f"init_{q}"] = init
            rows.append(row)
    return L.Results(cfg, cfg.resolved, rows, 0.0)


def test_ratio_verdicts_and_highest_sparsity_on_hand_built_rows():
    res = _results({("gan", 0, "ticket"): [100, 200, 300],
                    ("gan", 1, "ticket"): [101, 198, 306],        # ratios ~1: within 20 %
                    ("gan", 2, "ticket"): [190, 420, 600],        # ratios ~2: not within
                    ("gan", 1, "random"): [115, 250, 330],        # 1.15, 1.25, 1.1: straddles 1.2
                    ("gan", 2, "random"): [300, 600, 900]})
    np.testing.assert_allclose(L.ratios(res, "gan", 1, "ticket"), [1.01, 0.99, 1.02])
    assert L.within_margin(res, "gan", 1, "ticket")["outcome"] == "supported"
    assert L.within_margin(res, "gan", 2, "ticket")["outcome"] == "not supported"
    assert L.within_margin(res, "gan", 1, "random")["outcome"] == "inconclusive"
    v = L.verdicts(res)
    h = {x["arm"]: x for x in v["highest_sparsity"]}
    assert h["ticket"]["supported"] == pytest.approx(0.2) and h["ticket"]["point"] == pytest.approx(0.2)
    assert h["random"]["supported"] == 0.0 and h["random"]["point"] == pytest.approx(0.2)  # mean 1.1667 <= 1.2
    b = L.beats_random(res, "gan", 1, "ticket")  # diffs 0.14, 0.26, 0.08: every resample above 0
    assert b["mean_diff"] == pytest.approx(np.mean([0.14, 0.26, 0.08])) and b["outcome"] == "supported"
    assert L.beats_random(res, "gan", 2, "ticket")["outcome"] == "supported"  # 3.0 vs 2.0 ratios
    assert {(x["round"], x["arm"]) for x in v["beats_random"]} == {(1, "ticket"), (2, "ticket")}


def test_untrained_dense_network_makes_every_verdict_inconclusive():
    res = _results({("gan", 0, "ticket"): [100, 200, 300], ("gan", 1, "ticket"): [100, 200, 300]}, init=250.0)
    assert L.dense_untrained(res, "gan") == [1, 2]  # trained means quality <= 0.5 x 250 = 125
    w = L.within_margin(res, "gan", 1, "ticket")
    assert w["outcome"] == "inconclusive" and "far from trained" in w["claim"]["reason"]


def test_early_bird_cost_saved_by_hand():
    cfg = L.Config(**TINY)
    rows = [{"model": "gan", "round": 0, "arm": "ticket", "seed": 0, "eb_epoch": 2, "sparsity": 0.0},
            {"model": "gan", "round": 1, "arm": "early_bird", "seed": 0, "eb_epoch": None, "sparsity": 0.2}]
    res = L.Results(cfg, cfg.resolved, rows, 0.0)
    (t,) = L.early_bird_table(res)
    E, k = cfg.resolved["epochs"], cfg.rewind_epoch  # 3 epochs dense, 2 after rewinding (never fired: full)
    assert t["epochs_used"] == 2 + (E - k) and t["epochs_full"] == E + (E - k)
    assert t["cost_saved"] == pytest.approx(1 - (2 + E - k) / (E + E - k))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lottery") / "a"
    cfg = L.Config(**TINY, out_dir=str(out))
    return cfg, L.run(cfg, progress=False)


@pytest.mark.slow
def test_tiny_run_sparsity_counts_masks_and_outputs(tiny_run):
    cfg, res = tiny_run
    by = {(x["model"], x["round"], x["arm"], x["seed"]): x for x in res.rows}
    prog = L._program(cfg, "gan", L.load_data(cfg)[0])
    p0, _ = prog.init(0, 0)
    n = sum(c[1] for c in prune.leaf_counts(prune.dense_mask(p0, prog.prunable)).values())
    for r in range(cfg.resolved["rounds"] + 1):
        want = math.floor(0.8**r * n + 0.5)
        for s in range(3):
            arms = ("ticket",) if r == 0 else ("ticket", "random", "reinit", "early_bird", "from_vae")
            for arm in arms:  # exact to one entry, the same count in every arm (and the transferred VAE ticket)
                assert by[("gan", r, arm, s)]["kept"] == want
            if r:
                assert by[("vae", r, "from_gan", s)]["kept"] == want
    st = prune.load_state(f"{cfg.out_dir}/imp_state/gan-seed0.npz", p0)
    assert st.round == cfg.resolved["rounds"] + 1
    masks = jax.tree_util.tree_leaves(st.mask["gen"], is_leaf=lambda x: x is None)
    for w, m in zip(jax.tree_util.tree_leaves(st.trained["gen"]), masks):
        if m is not None:  # pruned entries of the trained ticket are exactly 0
            assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0) and np.any(np.asarray(w)[np.asarray(m)] != 0.0)
    assert all(x.get("diverged") is False for x in res.rows)
    paths = L.save(res)
    names = {p.name for p in paths}
    assert {"runs.csv", "per_round.csv", "results.json", "manifest.json", "transfer.csv", "early_bird.csv",
            "lottery.png", "lottery.pdf"} <= names
    assert "verdicts" in L.common.read_json(f"{cfg.out_dir}/results.json")


@pytest.mark.slow
def test_killed_mid_round_resumes_to_the_same_numbers(tiny_run, tmp_path, monkeypatch):
    cfg0, res0 = tiny_run
    cfg = L.Config(**TINY, out_dir=str(tmp_path / "b"))
    calls = {"n": 0}
    real = L._Run.train_run

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 9:  # round 1, seed 0: after the GAN's ticket and random, during its reinit
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(L._Run, "train_run", dying)
    with pytest.raises(KeyboardInterrupt):
        L.run(cfg, progress=False)
    monkeypatch.setattr(L._Run, "train_run", real)
    res = L.run(cfg, progress=False)
    assert "reused 8 of" in res.cells_report
    key = lambda x: (x["model"], x["round"], x["arm"], x["seed"])  # noqa: E731
    a = {key(x): x for x in res0.rows}
    b = {key(x): x for x in res.rows}
    assert a.keys() == b.keys()
    for k in a:
        for f, v in a[k].items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(b[k][f])
            else:
                assert b[k][f] == v, (k, f)
    shutil.rmtree(tmp_path / "b")
