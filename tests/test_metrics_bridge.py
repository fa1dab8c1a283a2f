"""Fréchet distance, 1-NN distances, Inception plumbing and the digits-classifier features."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, strategies as st

from overparam.errors import ConfigError
from overparam.metrics.frechet import frechet_distance, gaussian_stats
from overparam.metrics.nn import nn_distances, pixel_l1_distances, summarize_nn, worst_mean


# -- the pixel convention -----------------------------------------------------------------------
def test_pixel_convention_round_trips_and_matches_the_formulas():
    from overparam.metrics import pixels

    v = np.arange(256, dtype=np.uint8)
    x = pixels.from_uint8(v)
    assert x.dtype == np.float32 and x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_allclose(x, 2.0 * v.astype(np.float64) / 255.0 - 1.0, atol=1e-7)  # x = 2v/255 - 1
    np.testing.assert_array_equal(pixels.to_uint8(x), v)  # every 8-bit level survives the round trip
    rng = np.random.default_rng(0)
    y = rng.uniform(-1.2, 1.2, size=1000).astype(np.float32)
    u = pixels.to_uint8(y)
    ref = np.array([min(255, max(0, int(np.floor((float(t) + 1.0) * 127.5 + 0.5)))) for t in y.astype(np.float64)])
    tie = np.isclose(((y.astype(np.float64) + 1) * 127.5) % 1, 0.5)  # rint rounds half to even
    np.testing.assert_array_equal(u[~tie], ref[~tie])
    np.testing.assert_allclose(pixels.to_pixel_scale(y), (y.astype(np.float64) + 1) * 127.5, rtol=1e-6)
    q = pixels.quantize(np.clip(y, -1, 1))
    assert np.max(np.abs(q - np.clip(y, -1, 1))) <= 0.5 / 127.5 + 1e-6
    np.testing.assert_array_equal(pixels.quantize(q), q)  # idempotent


def test_paired_nn_and_nn_statistics_against_brute_force():
    from overparam.metrics.nn import nn_statistics, paired_nn

    rng = np.random.default_rng(1)
    g = rng.integers(0, 256, size=(12, 4, 4, 1), dtype=np.uint8)
    x = rng.integers(0, 256, size=(10, 4, 4, 1), dtype=np.uint8)
    d = np.abs(g.reshape(12, 1, -1).astype(np.float64) - x.reshape(1, 10, -1)).mean(-1)  # L1 per pixel, [0, 255]
    q = np.array([1, 4, 7])
    row, idx = nn_statistics(g, x, queries=q)
    of, md = d[q].min(axis=1), d[:, q].min(axis=0)  # queried samples, searched in the whole other set
    assert row["pixel_overfitting_avg"] == pytest.approx(of.mean(), rel=1e-9)
    assert row["pixel_mode_drop_avg"] == pytest.approx(md.mean(), rel=1e-9)
    assert row["pixel_mode_drop_worst5"] == pytest.approx(md.max(), rel=1e-9)
    assert idx["pixel_overfitting"] == d[q].argmin(axis=1).tolist()
    assert idx["pixel_mode_drop"] == d[:, q].argmin(axis=0).tolist()
    full = paired_nn(g.reshape(12, -1).astype(np.float32), x.reshape(10, -1).astype(np.float32))
    np.testing.assert_allclose(full["overfitting"], d.min(axis=1) * 16, rtol=1e-6)
    feats = lambda imgs: imgs.reshape(len(imgs), -1)[:, :3]  # noqa: E731
    row, _ = nn_statistics(g, x, features=feats)
    from overparam.metrics.pixels import from_uint8

    fg, fx = feats(from_uint8(g)).astype(np.float64), feats(from_uint8(x)).astype(np.float64)
    e = np.sqrt(((fg[:, None] - fx[None]) ** 2).sum(-1))
    assert row["feature_overfitting_avg"] == pytest.approx(e.min(axis=1).mean(), rel=1e-5)
    assert row["feature_mode_drop_avg"] == pytest.approx(e.min(axis=0).mean(), rel=1e-5)


# -- Fréchet distance ---------------------------------------------------------------------------
def _spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0.0 if rank else 0.1) * np.eye(d)


def _frechet_scipy(mu1, s1, mu2, s2):
    """The TTUR / pytorch-fid route: scipy.linalg.sqrtm of the (non-symmetric) product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    s = _spd(rng, 20)
    mu = rng.normal(size=20)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9 * np.trace(s))


@given(st.integers(1, 12), st.integers(0, 10_000))
def test_frechet_diagonal_closed_form(d, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # commuting covariances (shared eigenvectors): the same closed form in the eigenbasis
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


@given(st.integers(2, 16), st.integers(0, 10_000))
def test_frechet_matches_scipy_sqrtm_route(d, seed):
    rng = np.random.default_rng(seed)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_frechet_scipy(mu1, s1, mu2, s2), rel=1e-7, abs=1e-9)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9, abs=1e-12)  # symmetric


def test_frechet_singular_covariances_from_few_samples():
    """Fewer samples than dimensions (rank-deficient Σ): finite, and equal to the scipy route."""
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(6, 10)), rng.normal(size=(6, 10)) + 0.5
    mu1, s1 = gaussian_stats(f1)
    mu2, s2 = gaussian_stats(f2)
    assert np.linalg.matrix_rank(s1) == 5
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_frechet_scipy(mu1, s1, mu2, s2), rel=1e-5)


def test_gaussian_stats_and_errors():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(50, 3))
    mu, sigma = gaussian_stats(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, (f - f.mean(0)).T @ (f - f.mean(0)) / 49)
    with pytest.raises(ConfigError, match="at least 2"):
        gaussian_stats(f[:1])
    with pytest.raises(ConfigError, match="NaN"):
        gaussian_stats(np.full((3, 2), np.nan))
    with pytest.raises(ConfigError, match="shapes"):
        frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])
    with pytest.raises(ConfigError, match="symmetric"):
        frechet_distance(mu, np.triu(sigma + 1), mu, sigma)


# -- 1-NN distances -----------------------------------------------------------------------------
def _brute(a, b, metric):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    diff = a[:, None, :] - b[None, :, :]
    return np.abs(diff).sum(-1) if metric == "l1" else np.sqrt((diff ** 2).sum(-1))


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 9), st.integers(1, 17),
       st.sampled_from(["l1", "l2"]), st.integers(0, 1000))
def test_nn_distances_match_brute_force(m, n, d, chunk, metric, seed):
    rng = np.random.default_rng(seed)
    gen, train = rng.normal(size=(m, d)), rng.normal(size=(n, d))
    out = nn_distances(gen, train, metric, chunk=chunk)
    full = _brute(gen, train, metric)
    np.testing.assert_allclose(out["overfitting"], full.min(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["mode_drop"], full.min(0), rtol=1e-5, atol=1e-5)
    # the returned neighbours attain the minima
    np.testing.assert_allclose(full[np.arange(m), out["overfitting_index"]], full.min(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(full[out["mode_drop_index"], np.arange(n)], full.min(0), rtol=1e-5, atol=1e-5)


def test_pixel_l1_is_mean_abs_difference_on_0_255():
    rng = np.random.default_rng(3)
    train = rng.uniform(-1, 1, (7, 4, 4, 3)).astype(np.float32)
    gen = np.concatenate([train[:2], rng.uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)])
    out = pixel_l1_distances(gen, train, chunk=3)
    g255, t255 = (gen.astype(np.float64) + 1) * 127.5, (train.astype(np.float64) + 1) * 127.5
    per_pixel = np.abs(g255[:, None] - t255[None]).mean(axis=(2, 3, 4))  # mean over pixels and channels
    np.testing.assert_allclose(out["overfitting"], per_pixel.min(1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["mode_drop"], per_pixel.min(0), rtol=1e-5, atol=1e-4)
    assert out["overfitting"][0] == 0.0 and out["overfitting_index"][1] == 1  # copies are found
    shifted = pixel_l1_distances(np.clip(train[:1] * 0 + 0.2, -1, 1), np.zeros((1, 4, 4, 3)))
    assert shifted["overfitting"][0] == pytest.approx(0.2 * 127.5, rel=1e-6)
    q = pixel_l1_distances(gen, train, quantize=True)["overfitting"]
    assert np.all(np.abs(q - out["overfitting"]) <= 0.5 + 1e-6)  # rounding moves each value ≤ 0.5


def test_summarize_worst_fractions():
    rng = np.random.default_rng(4)
    over, drop = rng.uniform(size=40), rng.uniform(size=7)
    s = summarize_nn({"overfitting": over, "mode_drop": drop})
    assert s["overfitting_avg"] == pytest.approx(over.mean())
    assert s["overfitting_worst10"] == pytest.approx(np.sort(over)[-4:].mean())  # 10 % of 40 = 4 largest
    assert s["overfitting_worst5"] == pytest.approx(np.sort(over)[-2:].mean())
    assert s["mode_drop_worst10"] == pytest.approx(drop.max())  # ceil(0.7) = 1
    assert s["mode_drop_worst5"] == pytest.approx(drop.max())
    assert worst_mean(np.arange(20.0), 0.10) == pytest.approx(18.5)


def test_nn_errors():
    with pytest.raises(ConfigError, match="same resolution"):
        nn_distances(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="NaN"):
        nn_distances(np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="choose one of"):
        nn_distances(np.zeros((2, 3)), np.zeros((2, 3)), metric="cosine")
    with pytest.raises(ConfigError, match="overfitting"):
        summarize_nn({"mode_drop": np.ones(3)})


# -- Inception-v3 plumbing (random weights; no real weights exist here) ------------------------
@pytest.fixture(scope="module")
def inc():
    pytest.importorskip("flax")
    from overparam.bridge import inception

    return inception


@pytest.fixture(scope="module")
def random_npz(inc, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random_fid_inception.npz"
    np.savez(path, **inc.random_state_dict(0))
    return path


def test_inception_features_shape_determinism_and_batching(inc, random_npz):
    params = inc.load_inception_params(str(random_npz))
    x = np.random.default_rng(0).uniform(-1, 1, (3, 75, 75, 3)).astype(np.float32)
    f = inc.inception_features(x, params, batch_size=2, resize=False)
    assert f.shape == (3, 2048) and np.all(np.isfinite(f))
    assert np.all(f >= 0)  # an average of ReLU outputs
    np.testing.assert_array_equal(f, inc.inception_features(x, params, batch_size=2, resize=False))
    np.testing.assert_allclose(inc.inception_features(x[:2], params, batch_size=2, resize=False), f[:2],
                               rtol=1e-5, atol=1e-6)  # the zero-padded last batch does not leak
    assert np.abs(f[0] - f[1]).max() > 1e-3  # different images, different features
    grey = x[..., :1]
    np.testing.assert_allclose(inc.inception_features(grey, params, batch_size=2, resize=False),
                               inc.inception_features(np.repeat(grey, 3, -1), params, batch_size=2, resize=False),
                               rtol=1e-6, atol=1e-6)


def test_inception_weights_layout_against_numpy_conv(inc):
    """conv weight (O, I, kh, kw) → kernel transpose and BN ε = 1e-3, checked on the first layer."""
    state = inc.random_state_dict(1)
    params = inc.state_dict_to_params(state)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 7, 7, 3)).astype(np.float32)
    got = np.asarray(inc.BasicConv2d(32, (3, 3), stride=2).apply({"params": params["Conv2d_1a_3x3"]}, x))
    w = state["Conv2d_1a_3x3.conv.weight"].astype(np.float64)  # (32, 3, 3, 3)
    conv = np.zeros((3, 3, 32))
    for r in range(3):
        for c in range(3):
            patch = x[0, 2 * r:2 * r + 3, 2 * c:2 * c + 3, :].astype(np.float64)  # (kh, kw, I)
            conv[r, c] = np.einsum("hwi,oihw->o", patch, w)
    g, b = state["Conv2d_1a_3x3.bn.weight"], state["Conv2d_1a_3x3.bn.bias"]
    m, v = state["Conv2d_1a_3x3.bn.running_mean"], state["Conv2d_1a_3x3.bn.running_var"]
    want = np.maximum((conv - m) / np.sqrt(v + 1e-3) * g + b, 0)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)


def test_inception_pools_ignore_padding(inc):
    x = -np.random.default_rng(2).uniform(1, 2, (1, 4, 5, 2)).astype(np.float32)  # all negative
    pad = np.pad(x[0], ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    avg = np.array([[np.nanmean(pad[r:r + 3, c:c + 3], axis=(0, 1)) for c in range(5)] for r in range(4)])
    mx = np.array([[np.nanmax(pad[r:r + 3, c:c + 3], axis=(0, 1)) for c in range(5)] for r in range(4)])
    np.testing.assert_allclose(np.asarray(inc.avg_pool_3x3_same(x))[0], avg, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(inc.max_pool_3x3_same(x))[0], mx, rtol=1e-6)


def _torch_fid_inception(state, x_nhwc):
    """pytorch-fid's FID Inception-v3 to pool3 written out with torch.nn.functional (NCHW), from
    torchvision's Inception3 blocks and pytorch-fid's FIDInceptionA/C/E_1/E_2 patches."""
    import torch
    import torch.nn.functional as F

    w = {k: torch.from_numpy(v) for k, v in state.items()}

    def conv(x, name, stride=1, padding=0):
        x = F.conv2d(x, w[name + ".conv.weight"], stride=stride, padding=padding)
        x = F.batch_norm(x, w[name + ".bn.running_mean"], w[name + ".bn.running_var"],
                         w[name + ".bn.weight"], w[name + ".bn.bias"], training=False, eps=0.001)
        return F.relu(x)

    def avg(x):
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    def block_a(x, m):
        b5 = conv(conv(x, m + ".branch5x5_1"), m + ".branch5x5_2", padding=2)
        b3 = conv(conv(conv(x, m + ".branch3x3dbl_1"), m + ".branch3x3dbl_2", padding=1), m + ".branch3x3dbl_3", padding=1)
        return torch.cat([conv(x, m + ".branch1x1"), b5, b3, conv(avg(x), m + ".branch_pool")], 1)

    def block_b(x, m):
        b3 = conv(x, m + ".branch3x3", stride=2)
        bd = conv(conv(conv(x, m + ".branch3x3dbl_1"), m + ".branch3x3dbl_2", padding=1), m + ".branch3x3dbl_3", stride=2)
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)

    def block_c(x, m):
        b7 = conv(x, m + ".branch7x7_1")
        b7 = conv(b7, m + ".branch7x7_2", padding=(0, 3))
        b7 = conv(b7, m + ".branch7x7_3", padding=(3, 0))
        bd = conv(x, m + ".branch7x7dbl_1")
        for i, pad in zip(range(2, 6), [(3, 0), (0, 3), (3, 0), (0, 3)]):
            bd = conv(bd, m + f".branch7x7dbl_{i}", padding=pad)
        return torch.cat([conv(x, m + ".branch1x1"), b7, bd, conv(avg(x), m + ".branch_pool")], 1)

    def block_d(x, m):
        b3 = conv(conv(x, m + ".branch3x3_1"), m + ".branch3x3_2", stride=2)
        b7 = conv(x, m + ".branch7x7x3_1")
        b7 = conv(b7, m + ".branch7x7x3_2", padding=(0, 3))
        b7 = conv(b7, m + ".branch7x7x3_3", padding=(3, 0))
        b7 = conv(b7, m + ".branch7x7x3_4", stride=2)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)

    def block_e(x, m, last):
        b3 = conv(x, m + ".branch3x3_1")
        b3 = torch.cat([conv(b3, m + ".branch3x3_2a", padding=(0, 1)), conv(b3, m + ".branch3x3_2b", padding=(1, 0))], 1)
        bd = conv(conv(x, m + ".branch3x3dbl_1"), m + ".branch3x3dbl_2", padding=1)
        bd = torch.cat([conv(bd, m + ".branch3x3dbl_3a", padding=(0, 1)), conv(bd, m + ".branch3x3dbl_3b", padding=(1, 0))], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if last else avg(x)
        return torch.cat([conv(x, m + ".branch1x1"), b3, bd, conv(pooled, m + ".branch_pool")], 1)

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        x = conv(x, "Conv2d_1a_3x3", stride=2)
        x = conv(x, "Conv2d_2a_3x3")
        x = conv(x, "Conv2d_2b_3x3", padding=1)
        x = F.max_pool2d(x, 3, stride=2)
        x = conv(x, "Conv2d_3b_1x1")
        x = conv(x, "Conv2d_4a_3x3")
        x = F.max_pool2d(x, 3, stride=2)
        for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = block_a(x, m)
        x = block_b(x, "Mixed_6a")
        for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = block_c(x, m)
        x = block_d(x, "Mixed_7a")
        x = block_e(x, "Mixed_7b", last=False)
        x = block_e(x, "Mixed_7c", last=True)
        return x.mean(dim=(2, 3)).numpy()


def test_inception_matches_a_torch_transcription_of_pytorch_fid(inc):
    """Same random state dict through our flax network and a torch transcription of pytorch-fid's
    network: equal pool3 features (checks every block's wiring, padding and pooling)."""
    pytest.importorskip("torch")
    state = inc.random_state_dict(4)
    x = np.random.default_rng(8).uniform(-1, 1, (2, 139, 139, 3)).astype(np.float32)  # 3x3 at Mixed_7*
    ours = inc.inception_features(x, inc.state_dict_to_params(state), batch_size=2, resize=False, quantize=False)
    theirs = _torch_fid_inception(state, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def _torch_style_bilinear(x, size):
    """F.interpolate(bilinear, align_corners=False) written out: s = (d + 0.5)·in/out − 0.5,
    negative s clamped to 0, neighbours floor(s) and min(floor(s) + 1, in − 1)."""
    def axis_weights(n_in):
        s = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
        i0 = np.floor(s).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = np.zeros((size, n_in))
        np.add.at(w, (np.arange(size), i0), 1 - (s - i0))
        np.add.at(w, (np.arange(size), i1), s - i0)
        return w
    wh, ww = axis_weights(x.shape[1]), axis_weights(x.shape[2])
    return np.einsum("ph,qw,nhwc->npqc", wh, ww, x)


@pytest.mark.parametrize("size", [29, 5])
def test_inception_resize_matches_torch_bilinear(inc, size):
    x = np.random.default_rng(7).uniform(-1, 1, (2, 8, 8, 3))
    got = np.asarray(inc.resize_bilinear(x.astype(np.float32), size))
    np.testing.assert_allclose(got, _torch_style_bilinear(x, size), atol=1e-5)


@pytest.mark.slow
def test_inception_resizes_small_images_to_299(inc, random_npz):
    params = inc.load_inception_params(str(random_npz))
    x = np.random.default_rng(6).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    f = inc.inception_features(x, params, batch_size=2)
    assert inc.FID_SIZE == 299 and f.shape == (2, 2048) and np.all(np.isfinite(f))


def _frechet_from_factors(f1, f2):
    """Independent route for sample covariances Σ = AᵀA, A = (F − μ)/√(n − 1):
    tr (Σ₁Σ₂)^{1/2} = ‖A₁A₂ᵀ‖_* (nuclear norm), an n₁ × n₂ problem instead of D × D."""
    a = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    b = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(np.sum((f1.mean(0) - f2.mean(0)) ** 2) + np.sum(a * a) + np.sum(b * b) - 2 * nuclear)


@pytest.mark.slow
def test_fid_plumbing_with_random_weights_and_cache(inc, random_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(inc, "FID_SIZE", inc.MIN_SIZE)  # the 299 path is the slow test above
    rng = np.random.default_rng(5)
    a = rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)  # tiny grey images, resized
    b = np.clip(a[:3] + 0.5, -1, 1)
    key = inc.stats_cache_key("tiny", "train", 4, 0, 8)
    mu, sigma = inc.reference_statistics(a, str(random_npz), key, cache_dir=str(tmp_path), batch_size=4)
    files = list((tmp_path / "fid_stats").glob("tiny-train-n4-seed0-res8-*.npz"))
    assert len(files) == 1 and inc.file_sha256(random_npz)[:12] in files[0].name
    mu2, sigma2 = inc.load_stats(files[0])
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    params = inc.load_inception_params(str(random_npz))
    fa = inc.inception_features(a, params, batch_size=4)
    fb = inc.inception_features(b, params, batch_size=4)
    np.testing.assert_allclose(mu, fa.mean(0), rtol=1e-6, atol=1e-9)
    value = inc.fid(b, files[0], str(random_npz), batch_size=4)
    assert value > 1e-3
    assert value == pytest.approx(_frechet_from_factors(fb, fa), rel=1e-6)


def test_fid_without_weights_says_what_to_get(inc, tmp_path, random_npz):
    x = np.zeros((2, 8, 8, 3), np.float32)
    stats = (np.zeros(2048), np.eye(2048))
    with pytest.raises(ConfigError, match="pt_inception-2015-12-05-6726825d.pth"):
        inc.fid(x, stats, None)
    with pytest.raises(ConfigError, match="does not exist"):
        inc.fid(x, stats, str(tmp_path / "nope.npz"))
    state = inc.random_state_dict(0)
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    np.savez(tmp_path / "partial.npz", **state)
    with pytest.raises(ConfigError, match="missing"):
        inc.load_inception_params(str(tmp_path / "partial.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="cannot read"):
        inc.load_inception_params(str(tmp_path / "junk.npz"))


def test_convert_pytorch_fid_weights(inc, tmp_path):
    try:
        import torch
    except ImportError:
        (tmp_path / "w.pth").write_bytes(b"x")
        with pytest.raises(ConfigError, match="needs torch"):
            inc.convert_pytorch_fid_weights(str(tmp_path / "w.pth"), str(tmp_path / "w.npz"))
        return
    state = inc.random_state_dict(3)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "w.pth")
    inc.convert_pytorch_fid_weights(str(tmp_path / "w.pth"), str(tmp_path / "w.npz"))
    with np.load(tmp_path / "w.npz") as z:
        np.testing.assert_array_equal(z["Mixed_7c.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
        assert str(z["__source_sha256__"]) == inc.file_sha256(tmp_path / "w.pth")


# -- Fréchet distance in digits-classifier features ----------------------------------------------
def test_digits_classifier_features(tmp_path):
    pytest.importorskip("flax")
    pytest.importorskip("sklearn")
    from overparam.bridge.data import load_dataset
    from overparam.bridge import classifier as cf

    clf = cf.get_classifier("digits", seed=0, cache_dir=str(tmp_path), steps=300)
    assert clf.test_accuracy > 0.9 and clf.n_test == 359
    again = cf.get_classifier("digits", seed=0, cache_dir=str(tmp_path), steps=300)  # from the cache
    x = load_dataset("digits")
    np.testing.assert_array_equal(again.features(x[:50]), clf.features(x[:50]))
    assert again.test_accuracy == clf.test_accuracy

    out = cf.fd_classifier(x[:800], x[800:], "digits", cache_dir=str(tmp_path), steps=300)
    assert set(out) == {"fd_digits_classifier", "digits_classifier_test_accuracy", "n_generated", "n_reference"}
    assert not any("fid" in k for k in out)
    noise = np.random.default_rng(0).uniform(-1, 1, (800, 8, 8, 1))
    assert cf.fd_classifier(noise, x[800:], "digits", cache_dir=str(tmp_path), steps=300)["fd_digits_classifier"] \
        > 10 * out["fd_digits_classifier"]
    with pytest.raises(ConfigError, match="resolution"):
        clf.features(np.zeros((2, 16, 16, 1)))
    # a corrupt cache entry is retrained, not trusted
    weights = next((tmp_path / "classifiers").glob("*.msgpack"))
    weights.write_bytes(b"corrupt")
    fresh = cf.get_classifier("digits", seed=0, cache_dir=str(tmp_path), steps=300)
    np.testing.assert_allclose(fresh.features(x[:5]), clf.features(x[:5]), rtol=1e-5, atol=1e-5)


@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False, width=32), min_size=1, max_size=64))
def test_pixel_round_trip_error_is_at_most_half_a_level(values):
    from overparam.metrics import pixels

    x = np.asarray(values, np.float32)
    u = pixels.to_uint8(x)
    assert u.dtype == np.uint8
    assert np.max(np.abs(pixels.from_uint8(u).astype(np.float64) - x)) <= 0.5 / 127.5 + 1e-6
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(u[order].astype(int)) >= 0)  # monotone
