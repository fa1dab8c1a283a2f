"""The flax FID Inception-v3 (``overparam.bridge.inception``) against an independent numpy
transcription of pytorch-fid's network, so that CI (which has no torch) checks the wiring.

The transcription below is written from torchvision's ``Inception3`` (``BasicConv2d``,
``InceptionA`` .. ``InceptionE``) and pytorch-fid's patches of it (``FIDInceptionA``,
``FIDInceptionC``, ``FIDInceptionE_1``: 3×3 stride-1 average pools with
``count_include_pad=False``; ``FIDInceptionE_2``: a 3×3 stride-1 *max* pool in the pool branch),
in torch's NCHW layout, reading the torch-named state dict directly
(``<layer>.conv.weight`` (O, I, kh, kw), ``<layer>.bn.weight/bias/running_mean/running_var``).
Every conv states its output channels, kernel, stride and padding as torchvision does, and the
weight shape is asserted against them. Convolutions are im2col + one matmul, in float64, so the
difference to the float32 flax network is the latter's rounding only.

Random weights (``random_state_dict``) stand in for the real FID weights, which are not shipped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

pytest.importorskip("flax")
from overparam.bridge import inception as inc  # noqa: E402

BN_EPS = 1e-3  # torchvision's BasicConv2d: nn.BatchNorm2d(out_channels, eps=0.001)


# -- the numpy transcription (NCHW, float64) ----------------------------------------------------
class StateDict:
    """The torch state dict, recording which keys the forward pass reads."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.state = state
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        self.used.add(key)
        return np.asarray(self.state[key], dtype=np.float64)


@dataclass(frozen=True)
class Pools:
    """The two places where pytorch-fid's FID network differs from torchvision's Inception3.
    The defaults are pytorch-fid's; the others exist to show that the comparison notices them."""

    count_include_pad: bool = False  # FIDInceptionA / C / E_1 patch (torchvision: True)
    mixed_7c: str = "max"  # FIDInceptionE_2 patch (torchvision: "avg")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def basic_conv2d(x, sd: StateDict, name: str, out_channels: int, kernel_size, stride: int = 1, padding=0):
    """BasicConv2d: Conv2d(bias=False) → BatchNorm2d(eps=0.001) in eval mode → ReLU."""
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    n, c = x.shape[:2]
    w = sd[name + ".conv.weight"]
    assert w.shape == (out_channels, c, kh, kw), (name, w.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N C Ho Wo kh kw
    ho, wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)  # im2col
    y = (cols @ w.reshape(out_channels, c * kh * kw).T).reshape(n, ho, wo, out_channels).transpose(0, 3, 1, 2)
    mean, var = sd[name + ".bn.running_mean"], sd[name + ".bn.running_var"]
    gamma, beta = sd[name + ".bn.weight"], sd[name + ".bn.bias"]
    y = (y - mean[:, None, None]) / np.sqrt(var[:, None, None] + BN_EPS) * gamma[:, None, None] + beta[:, None, None]
    return np.maximum(y, 0.0)


def max_pool2d(x, kernel_size: int = 3, stride: int = 1, padding: int = 0):
    """F.max_pool2d: padding is −∞, so it never wins."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    return sliding_window_view(xp, (kernel_size, kernel_size), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))


def avg_pool2d_3x3_s1_p1(x, count_include_pad: bool):
    """F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=...): window sum over a zero-padded
    input, divided by 9 or by the number of real (unpadded) pixels in the window."""
    pad = ((0, 0), (0, 0), (1, 1), (1, 1))
    sums = sliding_window_view(np.pad(x, pad), (3, 3), axis=(2, 3)).sum(axis=(4, 5))
    ones = np.pad(np.ones((1, 1) + x.shape[2:]), pad)
    counts = np.full_like(sums, 9.0) if count_include_pad else sliding_window_view(ones, (3, 3), axis=(2, 3)).sum(axis=(4, 5))
    return sums / counts


def inception_a(x, sd, m: str, pool_features: int, pools: Pools):
    """FIDInceptionA: branch1x1, branch5x5, branch3x3dbl, avg-pool branch."""
    branch1x1 = basic_conv2d(x, sd, m + ".branch1x1", 64, 1)
    branch5x5 = basic_conv2d(x, sd, m + ".branch5x5_1", 48, 1)
    branch5x5 = basic_conv2d(branch5x5, sd, m + ".branch5x5_2", 64, 5, padding=2)
    branch3x3dbl = basic_conv2d(x, sd, m + ".branch3x3dbl_1", 64, 1)
    branch3x3dbl = basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_2", 96, 3, padding=1)
    branch3x3dbl = basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_3", 96, 3, padding=1)
    branch_pool = avg_pool2d_3x3_s1_p1(x, pools.count_include_pad)
    branch_pool = basic_conv2d(branch_pool, sd, m + ".branch_pool", pool_features, 1)
    return np.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=1)


def inception_b(x, sd, m: str):
    """InceptionB (Mixed_6a, unpatched): stride-2 branch3x3, branch3x3dbl, max pool 3 s2."""
    branch3x3 = basic_conv2d(x, sd, m + ".branch3x3", 384, 3, stride=2)
    branch3x3dbl = basic_conv2d(x, sd, m + ".branch3x3dbl_1", 64, 1)
    branch3x3dbl = basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_2", 96, 3, padding=1)
    branch3x3dbl = basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_3", 96, 3, stride=2)
    branch_pool = max_pool2d(x, 3, stride=2)
    return np.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=1)


def inception_c(x, sd, m: str, channels_7x7: int, pools: Pools):
    """FIDInceptionC: branch1x1, factorized 7x7, double factorized 7x7, avg-pool branch."""
    c7 = channels_7x7
    branch1x1 = basic_conv2d(x, sd, m + ".branch1x1", 192, 1)
    branch7x7 = basic_conv2d(x, sd, m + ".branch7x7_1", c7, 1)
    branch7x7 = basic_conv2d(branch7x7, sd, m + ".branch7x7_2", c7, (1, 7), padding=(0, 3))
    branch7x7 = basic_conv2d(branch7x7, sd, m + ".branch7x7_3", 192, (7, 1), padding=(3, 0))
    branch7x7dbl = basic_conv2d(x, sd, m + ".branch7x7dbl_1", c7, 1)
    branch7x7dbl = basic_conv2d(branch7x7dbl, sd, m + ".branch7x7dbl_2", c7, (7, 1), padding=(3, 0))
    branch7x7dbl = basic_conv2d(branch7x7dbl, sd, m + ".branch7x7dbl_3", c7, (1, 7), padding=(0, 3))
    branch7x7dbl = basic_conv2d(branch7x7dbl, sd, m + ".branch7x7dbl_4", c7, (7, 1), padding=(3, 0))
    branch7x7dbl = basic_conv2d(branch7x7dbl, sd, m + ".branch7x7dbl_5", 192, (1, 7), padding=(0, 3))
    branch_pool = avg_pool2d_3x3_s1_p1(x, pools.count_include_pad)
    branch_pool = basic_conv2d(branch_pool, sd, m + ".branch_pool", 192, 1)
    return np.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=1)


def inception_d(x, sd, m: str):
    """InceptionD (Mixed_7a, unpatched): branch3x3 (s2), branch7x7x3 (s2), max pool 3 s2."""
    branch3x3 = basic_conv2d(x, sd, m + ".branch3x3_1", 192, 1)
    branch3x3 = basic_conv2d(branch3x3, sd, m + ".branch3x3_2", 320, 3, stride=2)
    branch7x7x3 = basic_conv2d(x, sd, m + ".branch7x7x3_1", 192, 1)
    branch7x7x3 = basic_conv2d(branch7x7x3, sd, m + ".branch7x7x3_2", 192, (1, 7), padding=(0, 3))
    branch7x7x3 = basic_conv2d(branch7x7x3, sd, m + ".branch7x7x3_3", 192, (7, 1), padding=(3, 0))
    branch7x7x3 = basic_conv2d(branch7x7x3, sd, m + ".branch7x7x3_4", 192, 3, stride=2)
    branch_pool = max_pool2d(x, 3, stride=2)
    return np.concatenate([branch3x3, branch7x7x3, branch_pool], axis=1)


def inception_e(x, sd, m: str, pool: str, pools: Pools):
    """FIDInceptionE_1 (``pool="avg"``, count_include_pad=False) / FIDInceptionE_2 (``pool="max"``)."""
    branch1x1 = basic_conv2d(x, sd, m + ".branch1x1", 320, 1)
    branch3x3 = basic_conv2d(x, sd, m + ".branch3x3_1", 384, 1)
    branch3x3 = np.concatenate([basic_conv2d(branch3x3, sd, m + ".branch3x3_2a", 384, (1, 3), padding=(0, 1)),
                                basic_conv2d(branch3x3, sd, m + ".branch3x3_2b", 384, (3, 1), padding=(1, 0))], axis=1)
    branch3x3dbl = basic_conv2d(x, sd, m + ".branch3x3dbl_1", 448, 1)
    branch3x3dbl = basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_2", 384, 3, padding=1)
    branch3x3dbl = np.concatenate(
        [basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_3a", 384, (1, 3), padding=(0, 1)),
         basic_conv2d(branch3x3dbl, sd, m + ".branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))], axis=1)
    if pool == "max":
        branch_pool = max_pool2d(x, 3, stride=1, padding=1)
    else:
        branch_pool = avg_pool2d_3x3_s1_p1(x, pools.count_include_pad)
    branch_pool = basic_conv2d(branch_pool, sd, m + ".branch_pool", 192, 1)
    return np.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=1)


def fid_inception_pool3(x_nchw: np.ndarray, sd: StateDict, pools: Pools = Pools()) -> np.ndarray:
    """pytorch-fid's InceptionV3 blocks 0–3 (resize/normalize off): (N, 3, H, W) → (N, 2048)."""
    x = np.asarray(x_nchw, dtype=np.float64)
    # block 0
    x = basic_conv2d(x, sd, "Conv2d_1a_3x3", 32, 3, stride=2)
    x = basic_conv2d(x, sd, "Conv2d_2a_3x3", 32, 3)
    x = basic_conv2d(x, sd, "Conv2d_2b_3x3", 64, 3, padding=1)
    x = max_pool2d(x, 3, stride=2)
    # block 1
    x = basic_conv2d(x, sd, "Conv2d_3b_1x1", 80, 1)
    x = basic_conv2d(x, sd, "Conv2d_4a_3x3", 192, 3)
    x = max_pool2d(x, 3, stride=2)
    # block 2
    x = inception_a(x, sd, "Mixed_5b", 32, pools)
    x = inception_a(x, sd, "Mixed_5c", 64, pools)
    x = inception_a(x, sd, "Mixed_5d", 64, pools)
    x = inception_b(x, sd, "Mixed_6a")
    x = inception_c(x, sd, "Mixed_6b", 128, pools)
    x = inception_c(x, sd, "Mixed_6c", 160, pools)
    x = inception_c(x, sd, "Mixed_6d", 160, pools)
    x = inception_c(x, sd, "Mixed_6e", 192, pools)
    # block 3
    x = inception_d(x, sd, "Mixed_7a")
    x = inception_e(x, sd, "Mixed_7b", "avg", pools)
    x = inception_e(x, sd, "Mixed_7c", pools.mixed_7c, pools)
    return x.mean(axis=(2, 3))  # AdaptiveAvgPool2d((1, 1)), flattened


def numpy_features(images_nhwc: np.ndarray, state: dict, pools: Pools = Pools()) -> tuple[np.ndarray, StateDict]:
    x = np.asarray(images_nhwc, np.float64)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    sd = StateDict(state)
    return fid_inception_pool3(x.transpose(0, 3, 1, 2), sd, pools), sd


# -- preprocessing, independently ---------------------------------------------------------------
def quantize_8bit(x: np.ndarray) -> np.ndarray:
    """What a PNG round trip does to [-1, 1] images: levels round((x + 1)·127.5) in 0..255, back."""
    return np.clip(np.round((np.asarray(x, np.float64) + 1.0) * 127.5), 0, 255) / 127.5 - 1.0


def bilinear_torch(x_nhwc: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch's upsample_bilinear2d with align_corners=False as ATen computes it: per output index d,
    source s = (d + 0.5)·in/out − 0.5 with negative s set to 0; i0 = ⌊s⌋, i1 = i0 + 1 unless i0 is
    the last index, λ = s − i0; out = (1−λh)[(1−λw) x[i0,j0] + λw x[i0,j1]] + λh[(1−λw) x[i1,j0] + λw x[i1,j1]]."""
    x = np.asarray(x_nhwc, np.float64)

    def source_indices(n_in: int, n_out: int):
        i0, i1, lam = [], [], []
        for d in range(n_out):
            s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
            i0.append(int(s))
            i1.append(int(s) + 1 if int(s) < n_in - 1 else int(s))
            lam.append(s - int(s))
        return np.array(i0), np.array(i1), np.array(lam)

    h0, h1, lh = source_indices(x.shape[1], out_h)
    w0, w1, lw = source_indices(x.shape[2], out_w)
    lh, lw = lh[None, :, None, None], lw[None, None, :, None]
    rows0, rows1 = x[:, h0], x[:, h1]  # (N, out_h, in_w, C)
    return ((1 - lh) * ((1 - lw) * rows0[:, :, w0] + lw * rows0[:, :, w1])
            + lh * ((1 - lw) * rows1[:, :, w0] + lw * rows1[:, :, w1]))


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def state():
    return inc.random_state_dict(11)


@pytest.fixture(scope="module")
def images():
    """Two non-square images: 139×107 leaves 3×2 pixels at Mixed_7b/7c, so the E blocks' pools and
    1×3 / 3×1 convs see borders, and an H/W mix-up changes the result."""
    return np.random.default_rng(12).uniform(-1, 1, (2, 139, 107, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def params(state):
    return inc.state_dict_to_params(state)


@pytest.fixture(scope="module")
def flax_feats(params, images):
    return inc.inception_features(images, params, batch_size=2, resize=False, quantize=False)


@pytest.fixture(scope="module")
def numpy_run(state, images):
    return numpy_features(images, state)


def _assert_close(ours, ref):
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale)


# -- tests --------------------------------------------------------------------------------------
def test_transcription_reads_every_tensor_of_the_state_dict(state, numpy_run):
    """The state dict that random_state_dict (hence state_dict_to_params) expects is exactly
    torchvision's Inception3 to pool3: every tensor the transcription reads (with torchvision's
    shapes, asserted in basic_conv2d) and nothing else."""
    _, sd = numpy_run
    assert sd.used == set(state)
    assert len(sd.used) == 94 * 5  # 94 BasicConv2d layers, 1 conv + 4 BN tensors each


def test_flax_pool3_matches_numpy_transcription(flax_feats, numpy_run):
    ref, _ = numpy_run
    assert ref.shape == flax_feats.shape == (2, inc.POOL3_DIM)
    assert np.abs(ref).max() > 1e-2 and np.abs(ref[0] - ref[1]).max() > 1e-3  # not a degenerate signal
    _assert_close(flax_feats, ref)


@pytest.mark.parametrize("pools", [Pools(count_include_pad=True), Pools(mixed_7c="avg")],
                         ids=["count_include_pad", "mixed_7c_avg"])
def test_comparison_tells_the_fid_network_from_torchvision_pools(state, images, flax_feats, pools):
    """The FID-specific pools matter at this input size: with torchvision's pools the transcription
    is far outside the tolerance the flax network meets, so the test above can fail."""
    other, _ = numpy_features(images, state, pools)
    scale = np.abs(other).max()
    assert np.abs(flax_feats - other).max() > 100 * 1e-5 * scale


@pytest.mark.parametrize("shape_in,size", [((8, 8), 29), ((8, 13), 5), ((7, 5), 16), ((28, 28), 299)])
def test_resize_bilinear_matches_torch_formula(shape_in, size):
    """Up- and downsampling, integer and non-integer ratios, non-square inputs (square outputs:
    resize_bilinear makes size × size)."""
    x = np.random.default_rng(14).uniform(-1, 1, (2,) + shape_in + (3,))
    got = np.asarray(inc.resize_bilinear(x.astype(np.float32), size))
    # float32 rounding of the source coordinate s ≤ max side, times a neighbour difference ≤ 2;
    # a half-pixel or align_corners mistake is O(0.1)
    atol = 1e-6 + 4 * max(*shape_in, size) * 2.0 ** -24
    np.testing.assert_allclose(got, bilinear_torch(x.astype(np.float32), size, size), atol=atol)


@pytest.fixture
def small_fid_size(monkeypatch):
    """The full route resizes to FID_SIZE = 299 (the slow test below); the fast tier lowers it to
    MIN_SIZE = 75, the smallest input the valid convolutions allow (1×1 pixel at Mixed_7b/7c)."""
    monkeypatch.setattr(inc, "FID_SIZE", inc.MIN_SIZE)
    return inc.MIN_SIZE


@pytest.fixture(scope="module")
def route_sets():
    """Small grey images (as from a digits GAN) and the same set shifted in brightness."""
    a = np.random.default_rng(15).uniform(-1, 1, (4, 20, 20, 1)).astype(np.float32)
    return a, np.clip(a + 0.3, -1, 1)


def test_full_route_quantize_and_resize(state, params, small_fid_size, route_sets):
    """inception_features' default route = 8-bit quantization, grey → RGB, torch-style bilinear
    resize to FID_SIZE, network (here at its smallest input, 1×1 pixel at Mixed_7b/7c)."""
    a = route_sets[0][:2]
    ours = inc.inception_features(a, params, batch_size=2)
    rgb = np.repeat(a, 3, axis=-1)
    ref = numpy_features(bilinear_torch(quantize_8bit(rgb), small_fid_size, small_fid_size), state)[0]
    _assert_close(ours, ref)
    unquantized = numpy_features(bilinear_torch(rgb, small_fid_size, small_fid_size), state)[0]
    assert np.abs(unquantized - ours).max() > 10 * np.abs(ref - ours).max()  # the quantization is seen


def _frechet_nuclear(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID of sample features by the n₁×n₂ route: with Σᵢ = AᵢᵀAᵢ, A = (F − μ)/√(n − 1),
    tr (Σ₁Σ₂)^{1/2} = ‖A₁A₂ᵀ‖_* (sum of singular values)."""
    a = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    b = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    return float(np.sum((f1.mean(0) - f2.mean(0)) ** 2) + np.sum(a * a) + np.sum(b * b)
                 - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum())


@pytest.mark.slow  # two 2048×2048 eigendecompositions per fid() call: ~10 s on 2 loaded cores
def test_fid_route_with_random_weights(state, small_fid_size, route_sets, tmp_path):
    """fid() with reference statistics from the numpy transcription: ≈ 0 for the same set, and the
    numpy value for a brightness-shifted set."""
    a, b = route_sets
    path = tmp_path / "random_fid.npz"
    np.savez(path, **state)

    def feats(imgs):
        x = np.repeat(quantize_8bit(imgs), 3, axis=-1)
        return numpy_features(bilinear_torch(x, small_fid_size, small_fid_size), state)[0]

    fa, fb = feats(a), feats(b)
    stats_a = (fa.mean(0), np.cov(fa, rowvar=False))
    want = _frechet_nuclear(fb, fa)
    assert want > 1e-2 * np.trace(stats_a[1])  # the shift is visible to the network
    same = inc.fid(a, stats_a, str(path), batch_size=4)
    shifted = inc.fid(b, stats_a, str(path), batch_size=4)
    assert shifted == pytest.approx(want, rel=1e-4)
    assert 0.0 <= same < 1e-4 * shifted


@pytest.mark.slow
def test_full_route_at_299(state, params):
    """The protocol's real size: 32×32 RGB images → quantize → bilinear 299×299 → pool3."""
    x = np.random.default_rng(16).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    ours = inc.inception_features(x, params, batch_size=2)
    ref = numpy_features(bilinear_torch(quantize_8bit(x), inc.FID_SIZE, inc.FID_SIZE), state)[0]
    assert inc.FID_SIZE == 299
    _assert_close(ours, ref)
