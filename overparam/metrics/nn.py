"""1-nearest-neighbour distances between generated and training samples (Yazici et al. 2020,
"Empirical analysis of overfitting and mode drop in GAN training", Table 1).

For generated samples g_1..g_M and training samples x_1..x_N with a distance d:

* overfitting (precision side): o_j = min_i d(g_j, x_i) for every generated g_j: small everywhere
  means the generator reproduces training images;
* mode drop (recall side): r_i = min_j d(g_j, x_i) for every training x_i: large somewhere means
  that training image has no generated sample near it.

Each side is reported (:func:`summarize_nn`) as the average, the mean of the worst 10 % and the
mean of the worst 5 %, where *worst* means the largest distances (the ⌈q·count⌉ largest, at least
one). The paper's pixel convention (:func:`pixel_l1_distances`): images mapped from [-1, 1] to
[0, 255] and d = mean absolute difference per pixel and channel (‖g − x‖₁ / (H·W·C)), the scale of
its Table 1; in a feature space (classifier or Inception features) d is the Euclidean distance.

The M × N distance matrix is never stored: one jitted function scans blocks of ``chunk``
generated × ``chunk`` training rows on the default device (GPU when present), keeping running
row and column minima; each block's |g − x| reduction is fused by XLA, so memory stays
O((M + N)·D + chunk²). Distances are computed from differences (not ‖g‖² + ‖x‖² − 2 g·x), so near
duplicates get exact small distances.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from overparam.errors import ConfigError, one_of, positive_int
from overparam.metrics.pixels import to_pixel_scale

SIDES = ("overfitting", "mode_drop")


def _flat(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ConfigError(f"{name} must be an array of samples (N, ...) with N >= 1, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} contains NaN or Inf (a diverged generator?); 1-NN distances need finite samples")
    return a


@partial(jax.jit, static_argnames=("metric", "ca", "cb"))
def _nn_core(a, b, n_a, n_b, metric: str, ca: int, cb: int):
    """Row minima (over b) and column minima (over a) of d(a_i, b_j), blockwise (module docstring)."""

    ga, gb = a.shape[0] // ca, b.shape[0] // cb
    a_blocks, b_blocks = a.reshape(ga, ca, -1), b.reshape(gb, cb, -1)
    inf = jnp.asarray(jnp.inf, a.dtype)

    def dist(x, y):
        diff = x[:, None, :] - y[None, :, :]
        if metric == "l1":
            return jnp.sum(jnp.abs(diff), axis=-1)
        return jnp.sqrt(jnp.sum(diff * diff, axis=-1))

    def outer(carry, ia):
        col_min, col_arg = carry
        xa = a_blocks[ia]
        rows_ok = ia * ca + jnp.arange(ca) < n_a

        def inner(rcarry, ib):
            row_min, row_arg = rcarry
            cols_ok = ib * cb + jnp.arange(cb) < n_b
            d = dist(xa, b_blocks[ib])
            d = jnp.where(rows_ok[:, None] & cols_ok[None, :], d, inf)
            bm, ba = jnp.min(d, axis=1), jnp.argmin(d, axis=1) + ib * cb
            better = bm < row_min
            rcarry = (jnp.where(better, bm, row_min), jnp.where(better, ba, row_arg))
            return rcarry, (jnp.min(d, axis=0), jnp.argmin(d, axis=0) + ia * ca)

        init = (jnp.full((ca,), inf), jnp.zeros((ca,), jnp.int32))
        (row_min, row_arg), (cm, carg) = jax.lax.scan(inner, init, jnp.arange(gb))
        better = cm < col_min
        return (jnp.where(better, cm, col_min), jnp.where(better, carg, col_arg)), (row_min, row_arg)

    init = (jnp.full((gb, cb), inf), jnp.zeros((gb, cb), jnp.int32))
    (col_min, col_arg), (row_min, row_arg) = jax.lax.scan(outer, init, jnp.arange(ga))
    return row_min.reshape(-1), row_arg.reshape(-1), col_min.reshape(-1), col_arg.reshape(-1)


def _pad(x: np.ndarray, block: int) -> np.ndarray:
    extra = (-x.shape[0]) % block
    return np.pad(x, ((0, extra), (0, 0))) if extra else x


def nn_distances(generated, train, metric: str = "l1", chunk: int = 1024) -> dict[str, np.ndarray]:
    """1-NN distances both ways between flattened samples (module docstring).

    ``metric``: "l1" (Σ_k |g_k − x_k|) or "l2" (Euclidean). Returns float64/int arrays:
    ``overfitting`` (M,) = min_i d(g_j, x_i), ``overfitting_index`` (M,) its argmin i (into train),
    ``mode_drop`` (N,) = min_j d(g_j, x_i), ``mode_drop_index`` (N,) its argmin j (into generated).
    Ties go to the lowest index.
    """
    metric = one_of("metric", metric, ("l1", "l2"))
    chunk = positive_int("chunk", chunk)
    a, b = _flat("generated", generated), _flat("train", train)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"generated samples have {a.shape[1]} values each but training samples "
                          f"{b.shape[1]}; bring them to the same resolution and channels first")
    ca, cb = min(chunk, a.shape[0]), min(chunk, b.shape[0])
    out = _nn_core(jnp.asarray(_pad(a, ca)), jnp.asarray(_pad(b, cb)), a.shape[0], b.shape[0],
                   metric=metric, ca=ca, cb=cb)
    row_min, row_arg, col_min, col_arg = (np.asarray(o) for o in out)
    return {"overfitting": row_min[: a.shape[0]].astype(np.float64),
            "overfitting_index": row_arg[: a.shape[0]].astype(np.int64),
            "mode_drop": col_min[: b.shape[0]].astype(np.float64),
            "mode_drop_index": col_arg[: b.shape[0]].astype(np.int64)}


def pixel_l1_distances(generated, train, chunk: int = 1024, quantize: bool = False) -> dict[str, np.ndarray]:
    """The paper's pixel distance: images in [-1, 1] → [0, 255], d = ‖g − x‖₁ / (H·W·C), i.e. the
    mean absolute difference per pixel and channel (range 0..255). Same keys as :func:`nn_distances`."""
    g, x = to_pixel_scale(generated, quantize), to_pixel_scale(train, quantize)
    size = int(np.prod(np.shape(g)[1:])) if np.ndim(g) >= 2 else 1
    out = nn_distances(g, x, metric="l1", chunk=chunk)
    out["overfitting"] = out["overfitting"] / size
    out["mode_drop"] = out["mode_drop"] / size
    return out


def feature_l2_distances(generated_features, train_features, chunk: int = 1024) -> dict[str, np.ndarray]:
    """1-NN Euclidean distances in a feature space (rows are feature vectors)."""
    return nn_distances(generated_features, train_features, metric="l2", chunk=chunk)


def worst_mean(values, fraction: float) -> float:
    """Mean of the ⌈fraction·n⌉ largest values (at least one)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        raise ConfigError("no distances to summarize")
    k = max(1, math.ceil(fraction * v.size - 1e-9))
    return float(v[-k:].mean())


def summarize_nn(dists: dict[str, np.ndarray]) -> dict[str, float]:
    """``{side}_avg``, ``{side}_worst10``, ``{side}_worst5`` for side in overfitting, mode_drop
    (worst = largest distances; module docstring)."""
    out: dict[str, float] = {}
    for side in SIDES:
        if side not in dists:
            raise ConfigError(f"missing {side!r}; pass the dict returned by nn_distances / pixel_l1_distances")
        v = np.asarray(dists[side], dtype=np.float64)
        out[f"{side}_avg"] = float(v.mean())
        out[f"{side}_worst10"] = worst_mean(v, 0.10)
        out[f"{side}_worst5"] = worst_mean(v, 0.05)
    return out


def paired_nn(generated, train, queries=None, dist=None) -> dict[str, np.ndarray]:
    """1-NN both ways with ``dist`` (default :func:`nn_distances`, L1). With ``queries`` (indices)
    each side queries only those samples but searches the whole other set (Yazici et al.'s
    200-sample approximation): o_j for j in queries over all x, r_i for i in queries over all g."""
    dist = dist or nn_distances
    if queries is None:
        return dist(generated, train)
    q = np.asarray(queries)
    a, b = dist(np.asarray(generated)[q], train), dist(generated, np.asarray(train)[q])
    return {"overfitting": a["overfitting"], "overfitting_index": a["overfitting_index"],
            "mode_drop": b["mode_drop"], "mode_drop_index": b["mode_drop_index"]}


def nn_statistics(generated_u8, train_u8, queries=None, features=None
                  ) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Table-1 statistics (:func:`summarize_nn`) of the pixel 1-NN distances of uint8 images
    (``pixel_<side>_<stat>``, L1 on [0, 255] per pixel and channel) and, with ``features``
    (images in [-1, 1] -> feature rows), of the Euclidean feature distances (``feature_...``);
    plus the 1-NN indices of each side (``pixel_overfitting``, ...), for figures."""
    from overparam.metrics.pixels import from_uint8

    g, x = from_uint8(generated_u8), from_uint8(train_u8)
    pix = paired_nn(g, x, queries, lambda a, b: pixel_l1_distances(a, b, quantize=True))
    row = {f"pixel_{k}": v for k, v in summarize_nn(pix).items()}
    idx = {"pixel_overfitting": pix["overfitting_index"].tolist(), "pixel_mode_drop": pix["mode_drop_index"].tolist()}
    if features is not None:
        fe = paired_nn(features(g), features(x), queries, feature_l2_distances)
        row.update({f"feature_{k}": v for k, v in summarize_nn(fe).items()})
        idx.update(feature_overfitting=fe["overfitting_index"].tolist(),
                   feature_mode_drop=fe["mode_drop_index"].tolist())
    return row, idx
