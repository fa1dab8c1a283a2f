"""Inception-v3 pool3 features (2048-d) in flax and the FID computed from them.

The FID protocol used here (the one of TTUR's TensorFlow code, pytorch-fid, StudioGAN and
BigGAN-PyTorch's "TF-compatible" mode):

* **Network and weights.** The 2015-12-05 TensorFlow Inception-v3 graph that FID was defined
  with, as ported by pytorch-fid: file ``pt_inception-2015-12-05-6726825d.pth`` (published as the
  ``fid_weights`` release of the pytorch-fid project on GitHub,
  https://github.com/mseitzer/pytorch-fid/releases; pytorch-fid stores it under
  ``~/.cache/torch/hub/checkpoints/`` after its first run). Give that file, or the ``.npz`` that
  :func:`convert_pytorch_fid_weights` makes from it (torch needed once, for the conversion). This
  is *not* torchvision's ImageNet Inception: the FID graph has 1008 classes, average pools that
  ignore the zero padding in the A, C and first E blocks, and a max pool in the last E block —
  :class:`InceptionV3` reproduces these. No weights ship with this package and none are
  downloaded; without the file FID raises :class:`~overparam.errors.ConfigError` (never a made-up
  number).
* **Input.** Images in [-1, 1] (the package's convention; the network's expected range), by
  default first quantized to 8-bit levels as if saved to PNG (pytorch-fid reads image files),
  grey images repeated to 3 channels, then resized to 299×299 *bilinearly without antialiasing*
  (half-pixel centres, = ``F.interpolate(..., "bilinear", align_corners=False)`` of pytorch-fid).
  Features are the 2048 channels of the final average pool ("pool3").
* **Statistics.** μ and the unbiased covariance Σ (``np.cov``) of the features in float64;
  FID = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2} (:mod:`overparam.metrics.frechet`).
* **Sample counts and reference split.** FID is biased upward at small N, so compare values only
  at equal N and always report N. The usual setting: 50,000 generated samples against the
  training split (CIFAR-10: all 50,000 train images; CelebA: the training partition or a fixed
  seeded subset of it, e.g. 50,000 images at the resolution trained on). Some papers use the
  10,000-image CIFAR-10 test split instead; say which.
* **Caching.** Reference statistics are cached as ``.npz`` (keys ``mu``, ``sigma`` — the format
  pytorch-fid's ``--save-stats`` writes, so its precomputed files can be passed directly) under
  ``<cache dir>/fid_stats/<data set>-<split>-n<N>-seed<s>-res<R>-<sha256 of weights[:12]>.npz``;
  the cache dir is ``$OVERPARAM_CACHE`` or ``~/.cache/overparam``.

Numbers from these weights agree with TensorFlow FID to within the small differences
pytorch-fid documents, not bit for bit.
"""
from __future__ import annotations

import hashlib
import io
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError, positive_int

try:  # flax is optional (pip install overparam[bridge]); the module stays importable without it
    import flax.linen as nn
except ImportError:  # pragma: no cover - exercised only without flax
    nn = None

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_HELP = (
    "FID needs the Inception weights file of pytorch-fid, " + FID_WEIGHTS_NAME + " (the 'fid_weights' "
    "release of the pytorch-fid project on GitHub: https://github.com/mseitzer/pytorch-fid/releases; "
    "pytorch-fid keeps it in ~/.cache/torch/hub/checkpoints/ after its first run), or the .npz "
    "made from it by overparam.bridge.inception.convert_pytorch_fid_weights(pth, npz). Pass its path "
    "as weights_path. No weights ship with overparam."
)
POOL3_DIM = 2048
FID_SIZE = 299  # the protocol's input side; tests lower it to MIN_SIZE to stay fast
MIN_SIZE = 75  # smallest input side the network accepts without resizing


def _need_flax() -> None:
    if nn is None:
        raise ConfigError("the Inception network needs flax; install it with `pip install overparam[bridge]`")


# -- network ------------------------------------------------------------------------------------
if nn is not None:

    class FrozenBatchNorm(nn.Module):
        """Inference batch norm y = (x − mean)/√(var + ε)·scale + bias, ε = 1e−3 (TF Inception)."""

        eps: float = 1e-3

        @nn.compact
        def __call__(self, x):
            c = x.shape[-1]
            scale = self.param("scale", nn.initializers.ones, (c,))
            bias = self.param("bias", nn.initializers.zeros, (c,))
            mean = self.param("mean", nn.initializers.zeros, (c,))
            var = self.param("var", nn.initializers.ones, (c,))
            return (x - mean) * (scale / jnp.sqrt(var + self.eps)) + bias

    class BasicConv2d(nn.Module):
        """conv (no bias, explicit symmetric zero padding) → frozen BN → ReLU (torchvision's BasicConv2d)."""

        features: int
        kernel: tuple[int, int]
        stride: int = 1
        padding: tuple[int, int] = (0, 0)

        @nn.compact
        def __call__(self, x):
            (ph, pw) = self.padding
            x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=((ph, ph), (pw, pw)),
                        use_bias=False, name="conv")(x)
            return nn.relu(FrozenBatchNorm(name="bn")(x))

    def avg_pool_3x3_same(x):
        """3×3 stride-1 average pool with padding 1 that ignores the padded zeros (TF 'SAME' pool)."""
        return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)

    def max_pool_3x3_same(x):
        """3×3 stride-1 max pool with padding 1 (padding never wins: it is −∞)."""
        return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))

    def max_pool_3x3_s2(x):
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")

    class InceptionA(nn.Module):
        pool_features: int

        @nn.compact
        def __call__(self, x):
            b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
            b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
            b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
            b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
            b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
            b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
            bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(avg_pool_3x3_same(x))
            return jnp.concatenate([b1, b5, b3, bp], axis=-1)

    class InceptionB(nn.Module):
        @nn.compact
        def __call__(self, x):
            b3 = BasicConv2d(384, (3, 3), stride=2, name="branch3x3")(x)
            bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
            bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
            bd = BasicConv2d(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
            return jnp.concatenate([b3, bd, max_pool_3x3_s2(x)], axis=-1)

    class InceptionC(nn.Module):
        channels_7x7: int

        @nn.compact
        def __call__(self, x):
            c7 = self.channels_7x7
            b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
            b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
            b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
            b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
            bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
            bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
            bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
            bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
            bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
            bp = BasicConv2d(192, (1, 1), name="branch_pool")(avg_pool_3x3_same(x))
            return jnp.concatenate([b1, b7, bd, bp], axis=-1)

    class InceptionD(nn.Module):
        @nn.compact
        def __call__(self, x):
            b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
            b3 = BasicConv2d(320, (3, 3), stride=2, name="branch3x3_2")(b3)
            b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
            b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
            b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
            b7 = BasicConv2d(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
            return jnp.concatenate([b3, b7, max_pool_3x3_s2(x)], axis=-1)

    class InceptionE(nn.Module):
        """E block; ``max_pool=True`` for the FID graph's last block (Mixed_7c), else average pool."""

        max_pool: bool = False

        @nn.compact
        def __call__(self, x):
            b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
            b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
            b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                                  BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
            bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
            bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
            bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                                  BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
            pooled = max_pool_3x3_same(x) if self.max_pool else avg_pool_3x3_same(x)
            bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
            return jnp.concatenate([b1, b3, bd, bp], axis=-1)

    class InceptionV3(nn.Module):
        """The FID Inception-v3 up to pool3: (N, H, W, 3) in [-1, 1], H, W ≥ 75 → (N, 2048).

        Module names equal pytorch-fid's state-dict prefixes (``Mixed_5b.branch1x1.conv.weight`` ↔
        ``params['Mixed_5b']['branch1x1']['conv']['kernel']``)."""

        @nn.compact
        def __call__(self, x):
            x = BasicConv2d(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
            x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
            x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
            x = max_pool_3x3_s2(x)
            x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
            x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
            x = max_pool_3x3_s2(x)
            x = InceptionA(32, name="Mixed_5b")(x)
            x = InceptionA(64, name="Mixed_5c")(x)
            x = InceptionA(64, name="Mixed_5d")(x)
            x = InceptionB(name="Mixed_6a")(x)
            x = InceptionC(128, name="Mixed_6b")(x)
            x = InceptionC(160, name="Mixed_6c")(x)
            x = InceptionC(160, name="Mixed_6d")(x)
            x = InceptionC(192, name="Mixed_6e")(x)
            x = InceptionD(name="Mixed_7a")(x)
            x = InceptionE(name="Mixed_7b")(x)
            x = InceptionE(max_pool=True, name="Mixed_7c")(x)
            return jnp.mean(x, axis=(1, 2))


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """A random stand-in for the FID state dict (torch names and layouts): He-normal conv weights,
    BN scale 1 ± 0.1, bias/mean ± 0.1, var 1 ± 0.1. For plumbing tests only — its features mean nothing."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in param_shapes().items():
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        else:
            base = 1.0 if key.endswith(("bn.weight", "running_var")) else 0.0
            out[key] = (base + rng.uniform(-0.1, 0.1, shape)).astype(np.float32)
    return out


def init_random_params(seed: int = 0) -> dict:
    """Flax parameters from :func:`random_state_dict` (plumbing tests only)."""
    return state_dict_to_params(random_state_dict(seed), "random weights")


# -- weights: torch state dict <-> flax params --------------------------------------------------
_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def param_shapes() -> dict[str, tuple[int, ...]]:
    """Expected pytorch-fid state-dict keys (pool3 part) → torch-layout shapes, from the flax tree."""
    _need_flax()
    return dict(_param_shapes())


@lru_cache(maxsize=1)
def _param_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    tree = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32))["params"]
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [p.key for p in path]
        if names[-1] == "kernel":
            kh, kw, cin, cout = leaf.shape
            out[".".join(names[:-1]) + ".weight"] = (cout, cin, kh, kw)
        else:
            torch_name = {v: k for k, v in _BN_NAMES.items()}[names[-1]]
            out[".".join(names[:-1]) + "." + torch_name] = tuple(leaf.shape)
    return tuple(out.items())


def state_dict_to_params(state: dict[str, np.ndarray], source: str = "weights") -> dict:
    """Map a pytorch-fid state dict (torch layouts, numpy arrays) to the flax parameter tree.

    conv weight (O, I, kh, kw) → kernel (kh, kw, I, O); BN weight/bias/running_mean/running_var →
    scale/bias/mean/var. Keys outside pool3 (``fc.*``, ``num_batches_tracked``) are ignored."""
    expected = param_shapes()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ConfigError(f"{source} is not the pytorch-fid FID Inception weights: {len(missing)} tensors "
                          f"missing (e.g. {missing[0]}). {FID_WEIGHTS_HELP}")
    params: dict[str, Any] = {}
    for key, shape in expected.items():
        arr = np.asarray(state[key], dtype=np.float32)
        if arr.shape != shape:
            raise ConfigError(f"{source}: {key} has shape {arr.shape}, expected {shape}; "
                              f"not the FID Inception weights. {FID_WEIGHTS_HELP}")
        *mods, leaf = key.split(".")
        node = params
        for m in mods:
            node = node.setdefault(m, {})
        if leaf == "weight" and mods[-1] == "conv":
            node["kernel"] = arr.transpose(2, 3, 1, 0)
        else:
            node[_BN_NAMES[leaf]] = arr
    return jax.tree_util.tree_map(jnp.asarray, params)


def _torch_state_dict(pth_path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConfigError(f"reading {pth_path.name} needs torch (CPU is enough: pip install torch); or "
                          "convert it once elsewhere with convert_pytorch_fid_weights and pass the .npz") from None
    try:
        state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot read {pth_path} as a torch state dict ({type(exc).__name__}: {exc}). "
                          f"{FID_WEIGHTS_HELP}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{pth_path} holds a {type(state).__name__}, not a state dict. {FID_WEIGHTS_HELP}")
    return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (keys the reference-statistics cache to the exact weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_pytorch_fid_weights(pth_path: str, npz_path: str) -> Path:
    """Convert pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` to an ``.npz`` (needs torch).

    The .npz keeps the state-dict names and torch layouts (float32), plus ``__source_sha256__``
    (the .pth's SHA-256; pytorch-fid's file name carries its first 8 hex digits, 6726825d).
    The tensors are checked against the network before writing."""
    from overparam.records import atomic_write_bytes

    pth = Path(pth_path).expanduser()
    if not pth.is_file():
        raise ConfigError(f"{pth} does not exist. {FID_WEIGHTS_HELP}")
    state = _torch_state_dict(pth)
    state_dict_to_params(state, str(pth))  # validate before writing
    arrays = {k: np.asarray(v, np.float32) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    arrays["__source_sha256__"] = np.array(file_sha256(pth))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(Path(npz_path).expanduser(), buf.getvalue())


_PARAMS_CACHE: dict[tuple, dict] = {}


def load_inception_params(weights_path: str | None) -> dict:
    """Flax parameters from the FID weights: a ``.npz`` from :func:`convert_pytorch_fid_weights`
    (or any .npz with the state-dict names) or the ``.pth`` itself (needs torch). The last file
    read is kept in memory (keyed by path, size and modification time)."""
    _need_flax()
    if weights_path is None or str(weights_path) == "":
        raise ConfigError(FID_WEIGHTS_HELP)
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"Inception weights file {path} does not exist. {FID_WEIGHTS_HELP}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _PARAMS_CACHE:
        _PARAMS_CACHE.clear()
        _PARAMS_CACHE[key] = _read_params(path)
    return _PARAMS_CACHE[key]


def _read_params(path: Path) -> dict:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.keys() if not k.startswith("__")}
        except Exception as exc:
            raise ConfigError(f"cannot read {path} as .npz ({type(exc).__name__}: {exc}). {FID_WEIGHTS_HELP}") from None
    else:
        state = _torch_state_dict(path)
    return state_dict_to_params(state, str(path))


# -- features -----------------------------------------------------------------------------------
def _prepare(images: np.ndarray, resize: bool, quantize: bool) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ConfigError(f"images must be (N, H, W, 1 or 3) in [-1, 1], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("images contain NaN or Inf (a diverged generator?); FID needs finite images")
    if not resize and min(x.shape[1:3]) < MIN_SIZE:
        raise ConfigError(f"without resizing, images must be at least {MIN_SIZE}x{MIN_SIZE}; got {x.shape[1:3]}")
    if quantize:
        from overparam.metrics.pixels import quantize as _quantize

        x = _quantize(x)
    return np.clip(x, -1.0, 1.0)


def resize_bilinear(x, size: int):
    """(N, H, W, C) → (N, size, size, C) bilinearly, half-pixel centres, no antialiasing: source
    coordinate s = (d + ½)·H/size − ½ clamped to [0, H − 1] — torch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` that pytorch-fid applies."""
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=False)


@partial(jax.jit, static_argnames=("size",))
def _features_batch(params, x, size: int | None):
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if size is not None:
        x = resize_bilinear(x, size)
    return InceptionV3().apply({"params": params}, x)


def inception_features(images: np.ndarray, params: dict, batch_size: int = 50, resize: bool = True,
                       quantize: bool = True) -> np.ndarray:
    """pool3 features (N, 2048) float64 of images (N, H, W, C) in [-1, 1] (module docstring's input
    protocol). Batches are padded to ``batch_size`` so one compilation serves every batch."""
    _need_flax()
    batch_size = positive_int("batch_size", batch_size)
    x = _prepare(images, resize, quantize)
    out = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start:start + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        size = FID_SIZE if resize else None
        feats = np.asarray(_features_batch(params, jnp.asarray(chunk), size=size), dtype=np.float64)
        out.append(feats[: batch_size - pad])
    return np.concatenate(out)


# -- FID ----------------------------------------------------------------------------------------
def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) from an .npz with keys ``mu`` and ``sigma`` (pytorch-fid's ``--save-stats`` format)."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
    except FileNotFoundError:
        raise ConfigError(f"reference statistics file {path} does not exist") from None
    except Exception as exc:
        raise ConfigError(f"{path} is not an .npz with 'mu' and 'sigma' ({type(exc).__name__}: {exc}); "
                          "delete it to recompute") from None


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> Path:
    from overparam.records import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    return atomic_write_bytes(Path(path).expanduser(), buf.getvalue())


def stats_cache_key(name: str, split: str = "train", n: int | None = None, seed: int = 0,
                    resolution: int | None = None) -> str:
    """``<name>-<split>-n<N|all>-seed<s>-res<R|native>``: what the reference set is."""
    return f"{name}-{split}-n{n if n is not None else 'all'}-seed{seed}-res{resolution or 'native'}"


def reference_statistics(images: np.ndarray, weights_path: str, cache_key: str | None = None,
                         cache_dir: str | None = None, batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of the reference images' pool3 features; cached when ``cache_key`` is given at
    ``<cache dir>/fid_stats/<cache_key>-<sha256(weights)[:12]>.npz``."""
    from overparam.bridge.data import cache_dir as _cache_dir
    from overparam.metrics.frechet import gaussian_stats

    params = load_inception_params(weights_path)
    file = None
    if cache_key is not None:
        file = _cache_dir(cache_dir) / "fid_stats" / f"{cache_key}-{file_sha256(weights_path)[:12]}.npz"
        if file.is_file():
            return load_stats(file)
    mu, sigma = gaussian_stats(inception_features(images, params, batch_size))
    if file is not None:
        save_stats(file, mu, sigma)
    return mu, sigma


def dataset_reference_statistics(weights_path: str, name: str = "cifar10", path: str | None = None,
                                 n: int | None = None, seed: int = 0, resolution: int | None = None,
                                 split: str = "train", cache_dir: str | None = None,
                                 batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Reference (μ, Σ) of a data set as :func:`overparam.bridge.data.load_dataset` reads it, cached
    under :func:`stats_cache_key` (data set + split + n + seed + resolution) and the weights hash."""
    from overparam.bridge.data import cache_dir as _cache_dir, load_dataset

    load_inception_params(weights_path)  # fail early, before reading the data
    key = stats_cache_key(name, split, n, seed, resolution)
    file = _cache_dir(cache_dir) / "fid_stats" / f"{key}-{file_sha256(weights_path)[:12]}.npz"
    if file.is_file():
        return load_stats(file)
    images = load_dataset(name, path, n, seed, resolution, split)
    return reference_statistics(images, weights_path, key, cache_dir, batch_size)


def fid(generated: np.ndarray, reference_stats: tuple[np.ndarray, np.ndarray] | str | Path,
        weights_path: str | None, batch_size: int = 50, quantize: bool = True) -> float:
    """FID of generated images (N, H, W, C) in [-1, 1] against reference statistics — a (μ, Σ)
    pair or an .npz path with ``mu``/``sigma`` — using the FID Inception weights at ``weights_path``.
    Raises ConfigError (what to get and where) when the weights file is not given."""
    from overparam.metrics.frechet import frechet_distance, gaussian_stats

    params = load_inception_params(weights_path)
    mu_r, sigma_r = load_stats(reference_stats) if isinstance(reference_stats, (str, Path)) else reference_stats
    if np.shape(mu_r) != (POOL3_DIM,):
        raise ConfigError(f"reference statistics have dimension {np.shape(mu_r)}, expected ({POOL3_DIM},) pool3")
    mu_g, sigma_g = gaussian_stats(inception_features(generated, params, batch_size, quantize=quantize))
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
