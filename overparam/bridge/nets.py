"""Convolutional GAN networks in flax.linen, each with a width multiplier.

Three families, images NHWC in [-1, 1], resolution a power of two >= 8, any channel count:

* ``stoch_dcgan`` -- the DCGAN of Yazici et al., "Empirical analysis of overfitting and mode
  drop in GAN training" (appendix tables 2-3). G: z in R^512 -> conv 4x4 (pad 3, on the
  1x1 latent) to 1024 x 4 x 4 -> [nearest upsample x2, conv 3x3] to 512, 256, ... -> conv 3x3 to
  the data channels, tanh; LeakyReLU(0.2) after every hidden conv. D: conv 5x5 stride 2 with
  ..., 128, 256, 512 channels, conv 5x5 stride 1 with 1024, conv 4x4 (valid) to a scalar;
  LeakyReLU(0.2). No batch norm.
* ``dcgan`` -- Radford et al. (2016): transposed convs 4x4 stride 2 with batch norm and ReLU
  in G (512 -> 256 -> 128 ...), strided convs 4x4 with batch norm (not on the first layer) and
  LeakyReLU(0.2) in D, weights N(0, 0.02).
* ``resnet`` -- the SNGAN ResNet of Miyato et al. (2018, table 4, CIFAR-10): G linear to
  256 x 4 x 4, up-sampling residual blocks (BN-ReLU-up-conv3-BN-ReLU-conv3, 1x1 shortcut),
  BN-ReLU-conv3-tanh; D optimised first block, down blocks, two plain blocks at the lowest
  resolution, ReLU, global sum pool, linear.

The number of up/down-sampling stages follows the resolution (log2(res/4)); ``width``
multiplies every hidden channel count (rounded, at least 1); the latent dimension is separate.

Spectral normalization (Miyato et al. 2018, algorithm 1) keeps one vector ``u`` per layer in
the ``"spectral"`` collection. With W_m the kernel reshaped to (fan_in, out):

    v = W_m u / ||W_m u||,   u' = W_m^T v / ||W_m^T v||,   sigma = v^T W_m u',   W_sn = W / sigma

(u', v held constant under differentiation). Every forward pass does one iteration; ``u'`` is
stored only when the ``"spectral"`` collection is mutable (the trainer makes it mutable in the
player's own update). Batch-norm running averages live in ``"batch_stats"``; ``train=True``
normalizes with batch statistics.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError, finite_positive, one_of, positive_int

__all__ = [
    "ARCHS",
    "DEFAULT_LATENT",
    "GAN",
    "apply",
    "channels",
    "conv2d",
    "conv2d_transpose",
    "init_gan",
    "kernel_matrix",
    "make_gan",
    "power_iteration",
]

ARCHS = ("stoch_dcgan", "dcgan", "resnet")
DEFAULT_LATENT = {"stoch_dcgan": 512, "dcgan": 100, "resnet": 128}
SPECTRAL = "spectral"
BATCH_STATS = "batch_stats"

Init = Callable[..., jax.Array]
TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # PyTorch's conv default
DCGAN_INIT = nn.initializers.normal(0.02)
XAVIER = nn.initializers.xavier_uniform()


# -- spectral normalization -------------------------------------------------------------------
def _l2n(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x / (jnp.linalg.norm(x) + eps)


def kernel_matrix(kernel: jax.Array) -> jax.Array:
    """A dense or conv kernel (..., fan_in, out) as the matrix W_m of shape (prod(...)*fan_in, out)."""
    return kernel.reshape(-1, kernel.shape[-1])


def power_iteration(w_mat: jax.Array, u: jax.Array, n_iter: int = 1, eps: float = 1e-12):
    """``n_iter`` steps of v = W u/|W u|, u = W^T v/|W^T v|; returns (sigma = v^T W u, u).

    ``w_mat`` is (fan_in, out), ``u`` is (out,). u and v are stop-gradients, so
    d sigma / d W = v u^T (Miyato et al. 2018, eq. 12-13).
    """
    v = None
    for _ in range(n_iter):
        v = _l2n(w_mat @ u, eps)
        u = _l2n(w_mat.T @ v, eps)
    u = jax.lax.stop_gradient(u)
    v = jax.lax.stop_gradient(v)
    return v @ (w_mat @ u), u


def _spectral_normalize(mdl: nn.Module, kernel: jax.Array, eps: float) -> jax.Array:
    w = kernel_matrix(kernel)
    u_var = mdl.variable(
        SPECTRAL, "u", lambda: _l2n(jax.random.normal(mdl.make_rng("params"), (w.shape[1],), w.dtype))
    )
    sigma, u_new = power_iteration(w, u_var.value, 1, eps)
    if mdl.is_mutable_collection(SPECTRAL) and not mdl.is_initializing():
        u_var.value = u_new
    return kernel / sigma


# -- convolution ---------------------------------------------------------------------------------
# One 2-D convolution routine, NHWC x HWIO, for strided convs and (through lhs dilation)
# transposed convs:  y[p] = sum_i xpd[p*s + i] K[i],  xpd = x dilated by ``lhs_dilation`` and
# padded by ``pads`` (lax.conv_general_dilated's semantics, tested against it).
#
# Two XLA:CPU performance problems are worked around, both without changing the mathematics:
# * a conv whose output is a few pixels (a 5x5 kernel on 4x4 maps, the stochasticity DCGAN's D)
#   runs tens of times slower than its FLOPs as a matrix product: when the linear map
#   R^{H W C} -> R^{Ho Wo D} is small it is applied as one dense matrix
#   M = sum_t S_t (x) K_t (S_t the 0/1 pixel-selection matrix of kernel tap t);
# * inside a while loop (lax.scan) the convolutions autodiff emits for the backward pass run
#   10-90x slower than outside (jax-ml/jax#12868), so the backward pass is written by hand with
#   NHWC/HWIO convs and matrix products only: dx is a stride-1 conv of the s-dilated dy with the
#   flipped kernel, dK one GEMM per kernel tap.
# On other backends (GPU, TPU) conv2d is plain lax.conv_general_dilated.
CPU_WORKAROUNDS = True
DENSE_MAX_PIXEL_PAIRS = 1024     # H * W * Ho * Wo
DENSE_MAX_ENTRIES = 1 << 24      # entries of M (64 MiB in float32)
_DN = ("NHWC", "HWIO", "NHWC")
Pads = tuple[tuple[int, int], tuple[int, int]]


def conv_padding(padding: int | str, size: tuple[int, int], kernel: tuple[int, int], stride: int) -> Pads:
    """((lo, hi), (lo, hi)) padding of H and W for an int, "SAME" (XLA's split) or "VALID"."""
    if isinstance(padding, str):
        if padding == "VALID":
            return ((0, 0), (0, 0))
        out = []
        for n, k in zip(size, kernel):
            total = max((-(-n // stride) - 1) * stride + k - n, 0)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    return ((padding, padding), (padding, padding))


def conv_transpose_padding(padding: int | str, kernel: tuple[int, int], stride: int) -> Pads:
    """The padding lax.conv_transpose gives the dilated input ("SAME", "VALID"; an int p is (p, p))."""
    if not isinstance(padding, str):
        return ((padding, padding), (padding, padding))
    out = []
    for k in kernel:
        if padding == "SAME":
            total = k + stride - 2
            lo = k - 1 if stride > k - 1 else int(math.ceil(total / 2))
        else:
            total = k + stride - 2 + max(k - stride, 0)
            lo = k - 1
        out.append((lo, total - lo))
    return tuple(out)


def _dilated_size(n: int, pads: tuple[int, int], dil: int) -> int:
    return (n - 1) * dil + 1 + pads[0] + pads[1]


@functools.lru_cache(maxsize=64)
def _selection(size, kernel, stride, pads, dil):
    """S[a, p, t] = 1 when input pixel a sits under tap t of output pixel p."""
    (h, w), (kh, kw) = size, kernel
    ho = (_dilated_size(h, pads[0], dil) - kh) // stride + 1
    wo = (_dilated_size(w, pads[1], dil) - kw) // stride + 1
    sel = np.zeros((h * w, ho * wo, kh * kw), np.float32)
    for a in range(h):
        for b in range(w):
            ra, rb = pads[0][0] + a * dil, pads[1][0] + b * dil  # row/col in the padded, dilated grid
            for i in range(kh):
                for j in range(kw):
                    if (ra - i) % stride == 0 and (rb - j) % stride == 0:
                        p, q = (ra - i) // stride, (rb - j) // stride
                        if 0 <= p < ho and 0 <= q < wo:
                            sel[a * w + b, p * wo + q, i * kw + j] = 1.0
    return sel, ho, wo


def conv2d_dense(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads, lhs_dilation: int = 1) -> jax.Array:
    """The conv as one matrix product: y = x_flat M, M[(a, c), (p, d)] = sum_t S[a, p, t] K[t, c, d]."""
    b, h, w, c = x.shape
    kh, kw, _, d = kernel.shape
    sel, ho, wo = _selection((h, w), (kh, kw), stride, tuple(map(tuple, pads)), lhs_dilation)
    m = jnp.einsum("apt,tcd->acpd", jnp.asarray(sel, kernel.dtype), kernel.reshape(kh * kw, c, d))
    return (x.reshape(b, h * w * c) @ m.reshape(h * w * c, ho * wo * d)).reshape(b, ho, wo, d)


def _lax_conv(x, kernel, stride, pads, lhs_dilation):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads, lhs_dilation=(lhs_dilation,) * 2,
                                        dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_loopsafe(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads, lhs_dilation: int = 1) -> jax.Array:
    """lax.conv_general_dilated (NHWC, HWIO) with a hand-written backward pass (module comment)."""
    return _lax_conv(x, kernel, stride, pads, lhs_dilation)


def _conv_fwd(x, kernel, stride, pads, lhs_dilation):
    return _lax_conv(x, kernel, stride, pads, lhs_dilation), (x, kernel)


def _conv_bwd(stride, pads, lhs_dilation, res, dy):
    x, kernel = res
    _, h, w, c = x.shape
    kh, kw, _, d = kernel.shape
    ho, wo = dy.shape[1:3]
    zero = jnp.zeros((), x.dtype)
    # xpd: x dilated and padded (negative pads crop), the grid the kernel slides over
    xpd = jax.lax.pad(x, zero, [(0, 0, 0), (*pads[0], lhs_dilation - 1), (*pads[1], lhs_dilation - 1), (0, 0, 0)])
    hd, wd = xpd.shape[1:3]
    # dK[i, j] = sum_{b, p, q} xpd[b, p*s + i, q*s + j, :]^T dy[b, p, q, :]: one GEMM per tap
    dy2 = dy.reshape(-1, d)
    taps = [xpd[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride, :].reshape(-1, c).T @ dy2
            for i in range(kh) for j in range(kw)]
    dk = jnp.stack(taps).reshape(kh, kw, c, d)
    # d xpd = full correlation of the s-dilated dy with the flipped kernel, then keep x's pixels
    kt = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    after = (hd - (ho - 1) * stride - 1, wd - (wo - 1) * stride - 1)
    dxpd = jax.lax.conv_general_dilated(dy, kt, (1, 1), [(kh - 1, after[0]), (kw - 1, after[1])],
                                        lhs_dilation=(stride, stride), dimension_numbers=_DN)
    # undo the padding/dilation: x's pixel a sits at pads_lo + a * lhs_dilation (may be cropped)
    dx = jax.lax.pad(dxpd, zero, [(0, 0, 0), (-pads[0][0], -pads[0][1], 0), (-pads[1][0], -pads[1][1], 0),
                                  (0, 0, 0)])
    dx = dx[:, ::lhs_dilation, ::lhs_dilation, :]
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2d_loopsafe.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int | str | Pads = "SAME",
           lhs_dilation: int = 1) -> jax.Array:
    """2-D cross-correlation NHWC x HWIO with lax.conv_general_dilated's semantics; ``padding``
    an int, "SAME", "VALID" or explicit ((lo, hi), (lo, hi))."""
    (h, w), (kh, kw) = x.shape[1:3], kernel.shape[:2]
    if isinstance(padding, (int, str)):
        pads = conv_padding(padding, (h, w), (kh, kw), stride)
    else:
        pads = tuple(tuple(int(v) for v in p) for p in padding)
    if not (CPU_WORKAROUNDS and jax.default_backend() == "cpu"):
        return _lax_conv(x, kernel, stride, pads, lhs_dilation)  # GPU/TPU: XLA's own conv kernels
    ho = (_dilated_size(h, pads[0], lhs_dilation) - kh) // stride + 1
    wo = (_dilated_size(w, pads[1], lhs_dilation) - kw) // stride + 1
    pairs = h * w * ho * wo
    if pairs <= DENSE_MAX_PIXEL_PAIRS and pairs * kernel.shape[2] * kernel.shape[3] <= DENSE_MAX_ENTRIES:
        return conv2d_dense(x, kernel, stride, pads, lhs_dilation)
    return conv2d_loopsafe(x, kernel, stride, pads, lhs_dilation)


def conv2d_transpose(x: jax.Array, kernel: jax.Array, stride: int, padding: int | str) -> jax.Array:
    """lax.conv_transpose(x, kernel, (s, s), padding) (transpose_kernel=False): a stride-1 conv of
    the s-dilated input."""
    pads = conv_transpose_padding(padding, kernel.shape[:2], stride)
    return conv2d(x, kernel, 1, pads, lhs_dilation=stride)


# -- layers ------------------------------------------------------------------------------------
class Conv(nn.Module):
    """Conv (or transposed conv) with an optional spectral norm; kernel (kh, kw, in, out)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: int = 1
    padding: int | str = "SAME"
    transpose: bool = False
    sn: bool = False
    use_bias: bool = True
    kernel_init: Init = TORCH_DEFAULT
    sn_eps: float = 1e-12

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        if self.sn:
            kernel = _spectral_normalize(self, kernel, self.sn_eps)
        if self.transpose:
            y = conv2d_transpose(x, kernel, self.strides, self.padding)
        else:
            y = conv2d(x, kernel, self.strides, self.padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return y


class Dense(nn.Module):
    """y = x W (+ b) with an optional spectral norm; kernel (in, out)."""

    features: int
    sn: bool = False
    use_bias: bool = True
    kernel_init: Init = XAVIER
    sn_eps: float = 1e-12

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        if self.sn:
            kernel = _spectral_normalize(self, kernel, self.sn_eps)
        y = x @ kernel
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return y


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour upsampling by 2 in H and W."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avgpool2(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (2, 2), (2, 2))


def lrelu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, 0.2)


def channels(c: int, width: float) -> int:
    """Channel count c scaled by the width multiplier: max(1, round(c * width))."""
    return max(1, int(round(c * width)))


def n_stages(resolution: int) -> int:
    """Number of x2 up/down-sampling stages between 4x4 and ``resolution``."""
    return int(round(math.log2(resolution))) - 2


def _as_latent_image(z: jax.Array) -> jax.Array:
    return z.reshape(z.shape[0], 1, 1, z.shape[-1])


# -- the stochasticity paper's DCGAN ----------------------------------------------------------
class StochGenerator(nn.Module):
    resolution: int = 32
    out_channels: int = 3
    width: float = 1.0
    sn: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        del train  # no batch norm
        w, sn = self.width, self.sn
        x = lrelu(Conv(channels(1024, w), (4, 4), padding=3, sn=sn, name="conv0")(_as_latent_image(z)))
        for i in range(n_stages(self.resolution) - 1):
            x = Conv(channels(512 // 2**i, w), (3, 3), padding=1, sn=sn, name=f"conv{i + 1}")(upsample2(x))
            x = lrelu(x)
        x = Conv(self.out_channels, (3, 3), padding=1, sn=sn, name="out")(upsample2(x))
        return jnp.tanh(x)


class StochDiscriminator(nn.Module):
    resolution: int = 32
    width: float = 1.0
    sn: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        del train
        w, sn, k = self.width, self.sn, n_stages(self.resolution)
        for i in range(k):
            c = 512 // 2 ** (k - 1 - i)
            x = lrelu(Conv(channels(c, w), (5, 5), strides=2, padding=2, sn=sn, name=f"conv{i}")(x))
        x = lrelu(Conv(channels(1024, w), (5, 5), padding=2, sn=sn, name=f"conv{k}")(x))
        x = Conv(1, (4, 4), padding="VALID", sn=sn, name="out")(x)
        return x.reshape(x.shape[0])


# -- Radford DCGAN ------------------------------------------------------------------------------
def _dcgan_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Radford et al.'s batch-norm scale init, N(1, 0.02^2)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _bn(train: bool, name: str, scale_init: Init = nn.initializers.ones) -> nn.BatchNorm:
    """Batch norm (momentum 0.9 on the running averages, eps 1e-5, PyTorch's defaults)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=scale_init,
                        name=name)


class DCGANGenerator(nn.Module):
    resolution: int = 32
    out_channels: int = 3
    width: float = 1.0
    sn: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        w, sn, k = self.width, self.sn, n_stages(self.resolution)
        conv = dict(transpose=True, sn=sn, kernel_init=DCGAN_INIT)
        x = Conv(channels(512, w), (4, 4), padding="VALID", use_bias=False, name="conv0", **conv)(
            _as_latent_image(z))
        x = nn.relu(_bn(train, "bn0", _dcgan_scale_init)(x))
        for i in range(1, k):
            x = Conv(channels(512 // 2**i, w), (4, 4), strides=2, padding="SAME", use_bias=False,
                     name=f"conv{i}", **conv)(x)
            x = nn.relu(_bn(train, f"bn{i}", _dcgan_scale_init)(x))
        x = Conv(self.out_channels, (4, 4), strides=2, padding="SAME", name="out", **conv)(x)
        return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
    resolution: int = 32
    width: float = 1.0
    sn: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        w, sn, k = self.width, self.sn, n_stages(self.resolution)
        for i in range(k):
            c = 512 // 2 ** (k - 1 - i)
            x = Conv(channels(c, w), (4, 4), strides=2, padding=1, sn=sn, use_bias=(i == 0),
                     kernel_init=DCGAN_INIT, name=f"conv{i}")(x)
            if i > 0:
                x = _bn(train, f"bn{i}", _dcgan_scale_init)(x)
            x = lrelu(x)
        x = Conv(1, (4, 4), padding="VALID", sn=sn, kernel_init=DCGAN_INIT, name="out")(x)
        return x.reshape(x.shape[0])


# -- SNGAN ResNet -------------------------------------------------------------------------------
class GBlock(nn.Module):
    features: int
    sn: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = nn.relu(_bn(train, "bn0")(x))
        h = Conv(self.features, (3, 3), padding=1, sn=self.sn, kernel_init=XAVIER, name="conv0")(upsample2(h))
        h = nn.relu(_bn(train, "bn1")(h))
        h = Conv(self.features, (3, 3), padding=1, sn=self.sn, kernel_init=XAVIER, name="conv1")(h)
        sc = Conv(self.features, (1, 1), padding=0, sn=self.sn, kernel_init=XAVIER, name="shortcut")(upsample2(x))
        return h + sc


class DBlock(nn.Module):
    features: int
    down: bool = True
    first: bool = False  # the "optimized" first block: no pre-activation, pool before shortcut conv
    sn: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = dict(padding=1, sn=self.sn, kernel_init=XAVIER)
        h = x if self.first else nn.relu(x)
        h = Conv(self.features, (3, 3), name="conv0", **conv)(h)
        h = Conv(self.features, (3, 3), name="conv1", **conv)(nn.relu(h))
        if self.down:
            h = avgpool2(h)
        sc = x
        learnable = self.down or x.shape[-1] != self.features
        if learnable:
            if self.first:
                sc = Conv(self.features, (1, 1), padding=0, sn=self.sn, kernel_init=XAVIER, name="shortcut")(
                    avgpool2(sc))
            else:
                sc = Conv(self.features, (1, 1), padding=0, sn=self.sn, kernel_init=XAVIER, name="shortcut")(sc)
                sc = avgpool2(sc) if self.down else sc
        return h + sc


class ResNetGenerator(nn.Module):
    resolution: int = 32
    out_channels: int = 3
    width: float = 1.0
    sn: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        c = channels(256, self.width)
        x = Dense(4 * 4 * c, sn=self.sn, name="fc")(z).reshape(z.shape[0], 4, 4, c)
        for i in range(n_stages(self.resolution)):
            x = GBlock(c, sn=self.sn, name=f"block{i}")(x, train)
        x = nn.relu(_bn(train, "bn_out")(x))
        x = Conv(self.out_channels, (3, 3), padding=1, sn=self.sn, kernel_init=XAVIER, name="out")(x)
        return jnp.tanh(x)


class ResNetDiscriminator(nn.Module):
    resolution: int = 32
    width: float = 1.0
    sn: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        del train
        c = channels(128, self.width)
        n_down = max(1, n_stages(self.resolution) - 1)
        x = DBlock(c, down=True, first=True, sn=self.sn, name="block0")(x)
        for i in range(1, n_down):
            x = DBlock(c, down=True, sn=self.sn, name=f"block{i}")(x)
        for i in range(n_down, n_down + 2):
            x = DBlock(c, down=False, sn=self.sn, name=f"block{i}")(x)
        x = jnp.sum(nn.relu(x), axis=(1, 2))
        return Dense(1, sn=self.sn, name="out")(x).reshape(x.shape[0])


# -- factory --------------------------------------------------------------------------------------
_G = {"stoch_dcgan": StochGenerator, "dcgan": DCGANGenerator, "resnet": ResNetGenerator}
_D = {"stoch_dcgan": StochDiscriminator, "dcgan": DCGANDiscriminator, "resnet": ResNetDiscriminator}


@dataclass(frozen=True)
class GAN:
    """A generator/discriminator pair and the shapes they work on."""

    arch: str
    resolution: int
    channels: int
    width: float
    latent_dim: int
    G: nn.Module
    D: nn.Module


def check_resolution(resolution: int) -> int:
    r = positive_int("resolution", resolution)
    if r < 8 or r & (r - 1):
        raise ConfigError(f"image resolution must be a power of two >= 8 (8, 16, 32, 64, ...), got {r}; "
                          "resize the data (e.g. resolution=32)")
    return r


def make_gan(arch: str, resolution: int, channels: int, width: float = 1.0, latent_dim: int | None = None,
             sn_d: bool = True, sn_g: bool = False) -> GAN:
    """Build the (G, D) pair of ``arch`` for images ``resolution`` x ``resolution`` x ``channels``."""
    one_of("architecture", arch, ARCHS)
    resolution = check_resolution(resolution)
    channels_ = positive_int("image channels", channels)
    width = finite_positive("width multiplier", width)
    latent = DEFAULT_LATENT[arch] if latent_dim is None else positive_int("latent_dim", latent_dim)
    G = _G[arch](resolution=resolution, out_channels=channels_, width=width, sn=bool(sn_g))
    D = _D[arch](resolution=resolution, width=width, sn=bool(sn_d))
    return GAN(arch, resolution, channels_, width, latent, G, D)


def _split(variables: Any) -> tuple[Any, dict]:
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def init_gan(gan: GAN, key: jax.Array) -> tuple[Any, dict, Any, dict]:
    """Initial (g_params, g_state, d_params, d_state); states hold "spectral"/"batch_stats"."""
    kg, kd = jax.random.split(key)
    z = jnp.zeros((2, gan.latent_dim), jnp.float32)
    x = jnp.zeros((2, gan.resolution, gan.resolution, gan.channels), jnp.float32)
    g_params, g_state = _split(gan.G.init({"params": kg}, z, train=False))
    d_params, d_state = _split(gan.D.init({"params": kd}, x, train=False))
    return g_params, g_state, d_params, d_state


def apply(net: nn.Module, params: Any, state: dict, x: jax.Array, train: bool) -> tuple[jax.Array, dict]:
    """Run ``net``; returns (output, new state). The state is updated (SN vectors stored, BN
    running averages moved) as if mutable; callers that must not change it drop the new state."""
    variables = {"params": params, **state}
    if not state:
        return net.apply(variables, x, train=train), state
    out, upd = net.apply(variables, x, train=train, mutable=list(state))
    return out, {**state, **upd}


def param_count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def kernels(params: Any) -> list[tuple[str, jax.Array]]:
    """(name, kernel) for every weight matrix/conv kernel (ndim >= 2) of a params tree."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if leaf.ndim >= 2:
            out.append(("/".join(str(getattr(p, "key", p)) for p in path), leaf))
    return out


def layer_names(params: Any) -> Sequence[str]:
    return [n for n, _ in kernels(params)]
