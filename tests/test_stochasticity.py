"""Stochasticity study (Yazici et al. Table 1) on a tiny digits subset: the table's shape and
ranges, its 1-NN numbers against a brute-force numpy recomputation from the saved samples, the
figures, resume, the trend computation and configuration errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("sklearn")

from overparam.errors import ConfigError  # noqa: E402
from overparam.studies import stochasticity as st  # noqa: E402
from overparam.studies.config import from_mapping  # noqa: E402

# The study runs behind `done` are the slow tier; test_tiny_run_end_to_end is the fast one.
# Two runs (m = n, n/4) keep this file under a minute (each run compiles its own train step); the
# latent-noise run's trainer config is checked in test_presets_and_budget, its batches in
# tests/test_bridge_trainer.py.
TINY = dict(n=32, width=1 / 32, latent_dim=8, steps=20, log_every=10, batch_divisors=(1, 4), noise_var=0.0,
            classifier_steps=30, n_show=4)


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
    assert [(r["m"], r["noise"]) for r in res.rows] == [(32, False), (8, False)]
    for r in res.rows:
        assert r["status"] == "completed" and r["steps"] == 20
        assert r["epochs"] == pytest.approx(20 * r["m"] / 32)
        for space, hi in (("pixel", 255.0), ("feature", math.inf)):
            for side in ("overfitting", "mode_drop"):
                avg, w10, w5 = (r[f"{space}_{side}_{k}"] for k in ("avg", "worst10", "worst5"))
                assert 0.0 <= avg <= w10 + 1e-12 <= w5 + 2e-12 and w5 <= hi
    text = st.summary(res)
    for col in ("OF avg", "OF 10%", "OF 5%", "MD avg", "MD 10%", "MD 5%", "Spearman", "caveat"):
        assert col in text


def test_tiny_run_end_to_end(tmp_path, monkeypatch):
    """Fast tier: one full-batch run of 16 images, no feature space; the table's pixel statistics
    against brute force from the saved samples, the figures, and the resume."""
    cfg = st.Config(n=16, width=1 / 32, latent_dim=8, steps=10, log_every=10, batch_divisors=(1,), noise_var=0.0,
                    features="none", n_show=2, out_dir=str(tmp_path))
    res = st.run(cfg, progress=False)
    (row,) = res.rows
    assert (row["m"], row["status"], row["steps"]) == (16, "completed", 10) and "feature_overfitting_avg" not in row
    train = np.load(tmp_path / "train.npz")["images"]
    gen = np.load(tmp_path / "samples" / "m16.npz")["generated"]
    of, md = _brute(gen, train, "l1")
    assert row["pixel_overfitting_avg"] == pytest.approx(of.mean(), rel=1e-9)
    assert row["pixel_mode_drop_worst10"] == pytest.approx(_worst(md, 0.10), rel=1e-9)
    assert {"nn_overfitting.png", "curves.png", "table.csv"} <= {p.name for p in st.save(res)}

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(st, "train_run", boom)
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
        gen = np.load(out / "samples" / f"{r['run']}.npz")["generated"]
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
    assert {"table.csv", "curves.csv", "results.json", "manifest.json"} <= names
    assert all(p.stat().st_size > 500 for p in paths)
    import csv

    rows = list(csv.DictReader(open(__import__("pathlib").Path(cfg.out_dir) / "curves.csv")))
    assert {r["run"] for r in rows} == {"m32", "m8"}
    assert all(float(r["G_top_sv"]) > 0 and float(r["D_top_sv"]) > 0 for r in rows)


@pytest.mark.slow
def test_resume_skips_finished_runs(done, monkeypatch):
    cfg, res, _ = done

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(st, "train_run", boom)
    again = st.run(cfg, progress=False)
    assert again.rows == res.rows
    # a different config does not reuse the cells
    from overparam.studies.common import CellStore

    assert CellStore(cfg.out_dir, cfg).get("m32") is not None
    assert CellStore(cfg.out_dir, st.Config(**{**TINY, "seed": 1}, out_dir=cfg.out_dir)).get("m32") is None


def test_trend_from_the_table_uses_rank_correlation():
    def row(m, noise, v):
        return {"m": m, "noise": noise, **{f"pixel_{s}": v for s in st.STATS}}

    rows = [row(64, False, 1.0), row(16, False, 2.0), row(4, False, 3.0), row(1, False, 4.0), row(64, True, 2.0)]
    t = st.trend(rows)
    assert t["verdicts"]["pixel_overfitting"]["rho"] == pytest.approx(-1.0)
    assert t["verdicts"]["pixel_overfitting"]["batch_trend"] == "monotone"
    assert t["verdicts"]["pixel_mode_drop"]["noise_ratio"] == pytest.approx(2.0)
    assert t["verdicts"]["pixel_mode_drop"]["noise_trend"] == "appears"
    rows = [row(64, False, 4.0), row(16, False, 2.0), row(4, False, 3.0), row(1, False, 1.0), row(64, True, 4.1)]
    t = st.trend(rows)["verdicts"]["pixel_overfitting"]
    assert t["rho"] == pytest.approx(0.8) and t["batch_trend"] == "does not appear"
    assert t["noise_trend"].startswith("no clear difference")


def test_presets_and_budget():
    assert st.Config().resolved["n"] == 256 and st.Config().resolved["batch_divisors"] == (1, 4, 16, 64)
    paper = st.Config(data="cifar10", path="/nowhere")
    assert paper.resolved["preset"] == "paper"
    assert [r["m"] for r in st.runs(paper)] == [3200, 800, 200, 50, 3200]
    ep = st.Config(**{**TINY, "budget": "epochs", "noise_var": 0.5})
    assert [(r["m"], r["steps"], r["noise_var"]) for r in st.runs(ep)] == [(32, 20, 0.0), (8, 80, 0.0), (32, 20, 0.5)]
    tc = st.train_config(ep, st.runs(ep)[2], "")
    assert (tc.latent_noise_var, tc.batch_size, tc.fixed_latents, tc.n_disc, tc.scheme, tc.order) == \
        (0.5, 32, True, 1, "alternating", "d_first")
    assert (tc.loss, tc.opt_g, tc.lr_g, tc.lr_d, tc.b1, tc.b2, tc.sn_d, tc.ema) == \
        ("non_saturating", "adam", 1e-4, 1e-4, 0.0, 0.9, True, True)


@pytest.mark.parametrize("bad", [
    {"n": 30},                                   # not divisible by 4
    {"batch_divisors": ()},
    {"batch_divisors": (1, 1)},
    {"steps": 25},                               # not a multiple of log_every
    {"noise_var": -0.5},
    {"data": "cifar10"},                         # no path
    {"data": "cifar10", "path": "x", "features": "classifier"},
    {"features": "inception"},                   # no weights
    {"preset": "huge"},
    {"budget": "time"},
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
def test_ckpt_every_is_honoured_exactly_not_rounded():
    for ckpt in (50, 150, 250, 1000):
        c = st.Config(**{**TINY, "steps": 2000, "log_every": 50, "ckpt_every": ckpt})
        tc = st.train_config(c, st.runs(c)[0], "")
        assert tc.ckpt_every == ckpt and ckpt % tc.steps_per_call == 0 and 2000 % tc.steps_per_call == 0
    tc = st.train_config(st.Config(**TINY), st.runs(st.Config(**TINY))[0], "")
    assert tc.ckpt_every == 20  # ckpt_every = 0: only at the end


@pytest.mark.parametrize("n, divisors, hints", [(3, (1, 4), ["--n 4"]), (30, (1, 4), ["--n 28", "--n 32"]),
                                                (100, (1, 4, 16, 64), ["--n 64", "--n 128"])])
def test_divisibility_hints_suggest_valid_values(n, divisors, hints):
    kw = {**TINY, "batch_divisors": divisors}
    with pytest.raises(ConfigError) as err:
        from_mapping(st.Config, {**kw, "n": n})
    msg = str(err.value)
    assert "--n 0" not in msg
    for h in hints:
        assert h in msg
        from_mapping(st.Config, {**kw, "n": int(h.split()[1])})  # the suggestion is accepted


def test_noise_divisor_is_checked_only_with_a_noise_run():
    c = st.Config(**{**TINY, "noise_var": 0.0, "noise_divisor": 3})  # 32 % 3 != 0 but there is no noise run
    assert [r["name"] for r in st.runs(c)] == ["m32", "m8"]
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
