"""Masks, magnitude / random pruning, masked optimizers, early-bird detection and an IMP driver.

This module knows pytrees and optax, never a game or a study (docs/lottery.md).

* A **mask** is a pytree shaped like the parameters whose leaves are boolean arrays (True =
  the entry survives) or ``None`` (the leaf is never pruned: biases, normalization scales,
  running statistics, spectral-norm state, anything the ``prunable`` predicate rejects).
* :func:`magnitude_mask` keeps the ``round((1 − s)·N)`` largest-|w| *surviving* entries
  (N = prunable entries, globally or per leaf), so the surviving fraction is exact to one
  entry; ties are broken by flat index (lower index kept), so masks are deterministic.
* :func:`random_mask` draws a mask with the same number of survivors in every leaf (the
  control arm).
* :func:`masked` wraps an optax transformation: Δ = M ⊙ inner(M ⊙ g). The first product makes
  normalized / adaptive steps see only surviving weights and keeps Adam's moments of pruned
  entries at exactly 0; the second stops any leak (momentum, weight decay) into pruned
  entries. The mask lives in the optimizer *state*, so it is data: one compiled step serves
  every round.
* :func:`mask_distance` (normalized Hamming distance) and :class:`EarlyBird` (You et al.,
  ICLR 2020) for weight masks and channel masks (:func:`channel_mask`).
* :class:`IMP`: iterative magnitude pruning with rewinding, arms ticket / random / reinit,
  driving any injected ``train(params, mask, opt_state) -> TrainOutcome``; its
  :class:`IMPState` is saved and loaded bit for bit (:func:`save_state`, :func:`load_state`,
  :func:`state_to_jsonable`, :func:`state_from_jsonable`).
"""
from __future__ import annotations

import fnmatch
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam.errors import ConfigError, one_of, positive_int
from overparam.records import atomic_write_bytes

__all__ = [
    "ARMS", "SCOPES", "EarlyBird", "EarlyBirdState", "IMP", "IMPConfig", "IMPState", "MaskedState",
    "TrainOutcome", "apply_mask", "channel_mask", "channel_scores", "default_prunable", "dense_mask",
    "leaf_counts", "load_state", "magnitude_mask", "mask_distance", "masked", "matching", "path_str",
    "random_mask", "save_state", "sparsity", "state_from_jsonable", "state_to_jsonable",
]

PyTree = Any
Mask = Any
Predicate = Callable[[tuple, Any], bool]
SCOPES = ("global", "layer")
ARMS = ("ticket", "random", "reinit")

#: Leaf names that are never pruned by :func:`default_prunable`.
NEVER_PRUNED = frozenset({"bias", "b", "scale", "gamma", "beta", "mean", "var", "running_mean",
                          "running_var", "u", "sigma", "num_batches_tracked"})
#: Collections (path components) whose leaves are never pruned.
NEVER_COLLECTIONS = frozenset({"batch_stats", "spectral", "spectral_norm", "intermediates"})


# -- paths and predicates --------------------------------------------------------------------
def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_str(path: Sequence[Any]) -> str:
    """A key path as ``"gen/W"`` (dict keys, attribute names, sequence indices joined by '/')."""
    return "/".join(_key_name(k) for k in path)


def default_prunable(path: tuple, leaf: Any) -> bool:
    """Conv and dense kernels: floating leaves with ndim ≥ 2 whose name is not a bias, a
    normalization scale, a running statistic or spectral-norm state."""
    names = [_key_name(k) for k in path]
    if any(n in NEVER_COLLECTIONS for n in names):
        return False
    if names and names[-1] in NEVER_PRUNED:
        return False
    return np.ndim(leaf) >= 2 and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def matching(*patterns: str) -> Predicate:
    """Predicate: leaves whose :func:`path_str` matches any glob pattern, e.g.
    ``matching("gen/*")`` (prune G only) or ``matching("gen/*kernel", "disc/*kernel")``."""
    if not patterns:
        raise ConfigError("matching() needs at least one path pattern such as 'gen/*'")

    def pred(path: tuple, leaf: Any) -> bool:
        return any(fnmatch.fnmatchcase(path_str(path), p) for p in patterns)

    return pred


# -- structure checks ------------------------------------------------------------------------
def _is_none(x: Any) -> bool:
    return x is None


def _mask_leaves(mask: Mask, params: PyTree, what: str = "mask") -> list[Any]:
    """The mask's leaves (bool arrays or None) in the order of ``params``' leaves; checked."""
    p_leaves, p_def = jax.tree_util.tree_flatten(params)
    m_leaves, m_def = jax.tree_util.tree_flatten(mask, is_leaf=_is_none)
    if m_def != p_def:
        raise ConfigError(f"the {what}'s structure {m_def} does not match the parameters' {p_def}; "
                          "build the mask from the same parameter pytree (e.g. with dense_mask)")
    for i, (m, p) in enumerate(zip(m_leaves, p_leaves)):
        if m is None:
            continue
        if tuple(np.shape(m)) != tuple(np.shape(p)):
            raise ConfigError(f"{what} leaf {i} has shape {tuple(np.shape(m))} but the parameter has shape "
                              f"{tuple(np.shape(p))}; masks must be shaped like the parameters")
        if jnp.result_type(m) != jnp.bool_:
            raise ConfigError(f"{what} leaf {i} has dtype {jnp.result_type(m)}; mask leaves must be boolean")
    return m_leaves


def _check_sparsity(sparsity: Any) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0) or not math.isfinite(s):
        raise ConfigError(f"sparsity must be in [0, 1) (a fraction, not a percentage), got {sparsity!r}")
    return s


def _keep_count(sparsity: float, n: int) -> int:
    """round((1 − s)·n), halves rounded up: the exact number of survivors."""
    return int(math.floor((1.0 - sparsity) * n + 0.5))


# -- building masks --------------------------------------------------------------------------
def dense_mask(params: PyTree, prunable: Predicate = default_prunable) -> Mask:
    """All-True boolean leaves where ``prunable(path, leaf)``, ``None`` elsewhere."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [np.ones(np.shape(x), bool) if prunable(path, x) else None for path, x in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def magnitude_mask(
    params: PyTree,
    sparsity: float,
    scope: str = "global",
    prunable: Predicate = default_prunable,
    current: Mask | None = None,
) -> Mask:
    """Prune the smallest-|w| surviving entries until a fraction ``sparsity`` of the prunable
    entries is pruned.

    Survivors: the ``round((1 − s)·N)`` entries ranked first by (already surviving, |w|
    descending, flat index ascending), with N the prunable entries of all leaves together
    (``scope="global"``) or of each leaf (``"layer"``). Entries pruned in ``current`` stay
    pruned; ``current`` (when given) also decides which leaves are prunable. Runs on the host
    in float64, so it is exact and deterministic.
    """
    s = _check_sparsity(sparsity)
    one_of("pruning scope", scope, SCOPES)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    if current is None:
        alive = [np.ones(np.shape(x), bool) if prunable(path, x) else None for path, x in flat]
    else:
        alive = [None if m is None else np.asarray(m, bool) for m in _mask_leaves(current, params, "current mask")]
    idx = [i for i, a in enumerate(alive) if a is not None]
    if not idx:
        raise ConfigError("no prunable leaves: the prunable predicate rejects every parameter; "
                          "pass prunable=matching('path/pattern') to choose the leaves to prune")
    scores = {}
    for i in idx:
        w = np.abs(np.asarray(flat[i][1], np.float64)).ravel()
        if not np.all(np.isfinite(w)):
            raise ConfigError(f"parameter {path_str(flat[i][0])} contains NaN or Inf; cannot rank it by magnitude")
        scores[i] = w
    groups = [idx] if scope == "global" else [[i] for i in idx]
    out: list[Any] = [None] * len(flat)
    for group in groups:
        w = np.concatenate([scores[i] for i in group])
        a = np.concatenate([alive[i].ravel() for i in group])
        keep = _keep_count(s, w.size)
        if keep > a.sum():
            names = ", ".join(path_str(flat[i][0]) for i in group)
            raise ConfigError(f"the current mask already prunes {1 - a.sum() / w.size:.4f} of {names}, more than "
                              f"the requested sparsity {s}; ask for a sparsity at least the current one")
        order = np.lexsort((np.arange(w.size), -w, ~a))
        kept = np.zeros(w.size, bool)
        kept[order[:keep]] = True
        start = 0
        for i in group:
            n = scores[i].size
            out[i] = kept[start:start + n].reshape(np.shape(flat[i][1]))
            start += n
    return jax.tree_util.tree_unflatten(treedef, out)


def random_mask(key: jax.Array, like: Mask) -> Mask:
    """A uniformly random mask with exactly as many survivors as ``like`` in every leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(like, is_leaf=_is_none)
    out = []
    for i, m in enumerate(leaves):
        if m is None:
            out.append(None)
            continue
        m = np.asarray(m, bool)
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
        r = np.zeros(m.size, bool)
        r[perm[: int(m.sum())]] = True
        out.append(r.reshape(m.shape))
    return jax.tree_util.tree_unflatten(treedef, out)


def apply_mask(params: PyTree, mask: Mask) -> PyTree:
    """θ ⊙ M: pruned entries set to exactly 0, ``None`` leaves untouched (jit-able)."""
    m_leaves = _mask_leaves(mask, params)
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    out = [p if m is None else jnp.where(m, p, jnp.zeros_like(p)) for p, m in zip(p_leaves, m_leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def leaf_counts(mask: Mask) -> dict[str, tuple[int, int]]:
    """{leaf path: (survivors, entries)} over the mask's boolean leaves."""
    flat, _ = jax.tree_util.tree_flatten_with_path(mask, is_leaf=_is_none)
    return {path_str(p): (int(np.sum(np.asarray(m))), int(np.size(m))) for p, m in flat if m is not None}


def sparsity(mask: Mask) -> float:
    """Fraction of pruned entries over all boolean leaves (``None`` leaves do not count)."""
    c = leaf_counts(mask).values()
    total = sum(n for _, n in c)
    if total == 0:
        raise ConfigError("the mask has no boolean leaves; nothing is prunable")
    return 1.0 - sum(k for k, _ in c) / total


def mask_distance(a: Mask, b: Mask) -> float:
    """Normalized Hamming distance #(a ≠ b) / |M| over the boolean leaves (You et al., eq. 2)."""
    la, da = jax.tree_util.tree_flatten(a, is_leaf=_is_none)
    lb, db = jax.tree_util.tree_flatten(b, is_leaf=_is_none)
    if da != db or any((x is None) != (y is None) for x, y in zip(la, lb)):
        raise ConfigError("mask_distance needs two masks of the same structure (same leaves pruned)")
    diff = total = 0
    for x, y in zip(la, lb):
        if x is None:
            continue
        if np.shape(x) != np.shape(y):
            raise ConfigError(f"mask_distance: leaf shapes differ, {np.shape(x)} vs {np.shape(y)}")
        diff += int(np.sum(np.asarray(x, bool) != np.asarray(y, bool)))
        total += int(np.size(x))
    if total == 0:
        raise ConfigError("mask_distance: the masks have no boolean leaves")
    return diff / total


# -- channel masks ---------------------------------------------------------------------------
def normalization_scales(path: tuple, leaf: Any) -> bool:
    """Predicate: 1-D normalization scales (BatchNorm / LayerNorm γ, named 'scale' or 'gamma')."""
    return bool(path) and _key_name(path[-1]) in ("scale", "gamma") and np.ndim(leaf) == 1


def channel_scores(params: PyTree, select: Predicate = normalization_scales, axis: int = -1,
                   norm: str = "l1") -> PyTree:
    """Per-channel scores: |γ_c| for 1-D leaves, ‖W[..., c, ...]‖ (L1 or L2 over every axis but
    ``axis``, the output-channel axis; flax kernels keep it last) for kernels; None elsewhere."""
    one_of("channel norm", norm, ("l1", "l2"))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for path, x in flat:
        if not select(path, x):
            out.append(None)
            continue
        a = np.abs(np.asarray(x, np.float64))
        if a.ndim == 1:
            out.append(a)
            continue
        a = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
        out.append(a.sum(1) if norm == "l1" else np.sqrt((a * a).sum(1)))
    return jax.tree_util.tree_unflatten(treedef, out)


def channel_mask(params: PyTree, sparsity: float, scope: str = "global",
                 select: Predicate = normalization_scales, axis: int = -1, norm: str = "l1") -> Mask:
    """A channel mask (one boolean per channel) keeping the largest :func:`channel_scores`;
    default: BatchNorm γ, one global threshold (You et al., ICLR 2020)."""
    scores = channel_scores(params, select, axis, norm)
    return magnitude_mask(scores, sparsity, scope, prunable=lambda path, leaf: True)


# -- masked optimizer ------------------------------------------------------------------------
class MaskedState(NamedTuple):
    mask: Mask        # bool leaves or None; data, so one compiled step serves every mask
    inner: Any        # the wrapped optimizer's state


def masked(inner: optax.GradientTransformation, mask: Mask) -> optax.GradientTransformation:
    """Δ = M ⊙ inner(M ⊙ g): pruned entries get exactly zero updates and the inner optimizer's
    statistics (Adam's m and v, momentum) of pruned entries stay exactly 0.

    ``init(params)`` checks ``mask`` against ``params`` and stores it in the state;
    ``update`` reads the mask from the state (so the mask is data, and a state made by
    ``masked(inner, other_mask).init(params)`` switches masks without recompiling).
    Parameters must already be masked (:func:`apply_mask`) for pruned weights to be 0.
    """

    def init_fn(params):
        _mask_leaves(mask, params)
        m = jax.tree_util.tree_map(lambda x: None if x is None else jnp.asarray(x, bool), mask, is_leaf=_is_none)
        return MaskedState(m, inner.init(params))

    def update_fn(updates, state, params=None):
        u = apply_mask(updates, state.mask)
        u, inner_state = inner.update(u, state.inner, params)
        return apply_mask(u, state.mask), MaskedState(state.mask, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


# -- early-bird tickets ----------------------------------------------------------------------
class EarlyBirdState(NamedTuple):
    masks: tuple           # the last ≤ queue masks, oldest first (host numpy)
    distances: tuple       # distance of the newest mask to each older one in the queue
    fired: bool            # queue full and every distance ≤ eps
    epoch: int             # masks seen so far


@dataclass(frozen=True)
class EarlyBird:
    """Early-bird detector (You et al., ICLR 2020): fed one mask per epoch (weight or channel
    mask), it fires when the queue holds ``queue`` masks and the newest is within ``eps``
    (:func:`mask_distance`) of each of the ``queue − 1`` older ones."""

    queue: int = 5
    eps: float = 0.1

    def __post_init__(self) -> None:
        positive_int("early-bird queue length", self.queue)
        if self.queue < 2:
            raise ConfigError("the early-bird queue must hold at least 2 masks")
        if not (0.0 <= float(self.eps) <= 1.0):
            raise ConfigError(f"early-bird eps is a normalized Hamming distance in [0, 1], got {self.eps}")

    def init(self) -> EarlyBirdState:
        return EarlyBirdState((), (), False, 0)

    def update(self, state: EarlyBirdState, mask: Mask) -> EarlyBirdState:
        new = jax.tree_util.tree_map(lambda x: None if x is None else np.array(x, bool), mask, is_leaf=_is_none)
        masks = (state.masks + (new,))[-self.queue:]
        dist = tuple(mask_distance(new, old) for old in masks[:-1])
        fired = len(masks) == self.queue and all(d <= self.eps for d in dist)
        return EarlyBirdState(masks, dist, bool(fired), state.epoch + 1)


# -- iterative magnitude pruning -------------------------------------------------------------
class TrainOutcome(NamedTuple):
    """What an injected trainer returns for one training run."""

    params: PyTree            # trained parameters (pruned entries exactly 0)
    rewind_point: PyTree      # parameters at the trainer's rewind step (step 0: the input)
    metrics: Any              # anything the caller wants back (not stored in the IMP state)


class ArmRun(NamedTuple):
    mask: Mask
    start: PyTree             # the (masked, rewound) point the arm trained from
    outcome: TrainOutcome


@dataclass(frozen=True)
class IMPConfig:
    """IMP options: ``rounds`` pruning rounds after the dense round 0, each pruning a fraction
    ``prune_fraction`` of the surviving weights, so round r has sparsity 1 − (1 − p)^r."""

    rounds: int = 10
    prune_fraction: float = 0.2
    scope: str = "global"
    seed: int = 0                      # random-arm mask of round r: key fold_in(PRNGKey(seed), r)
    arms: tuple[str, ...] = ARMS

    def __post_init__(self) -> None:
        positive_int("IMP rounds", self.rounds)
        p = float(self.prune_fraction)
        if not (0.0 < p < 1.0):
            raise ConfigError(f"prune_fraction is the fraction of surviving weights pruned per round, in (0, 1); "
                              f"got {self.prune_fraction!r}")
        one_of("pruning scope", self.scope, SCOPES)
        for a in self.arms:
            one_of("IMP arm", a, ARMS)
        if "ticket" not in self.arms:
            raise ConfigError("the IMP arms must include 'ticket' (it is the run that is pruned)")

    def target_sparsity(self, r: int) -> float:
        """1 − (1 − p)^r, the sparsity of round r."""
        return 1.0 - (1.0 - float(self.prune_fraction)) ** r


@dataclass
class IMPState:
    """Everything needed to continue IMP: saved after each round, bit for bit."""

    round: int = 0                        # rounds finished (the next round to run)
    mask: Mask | None = None              # ticket mask of the last finished round
    rewind: PyTree | None = None          # rewind point θ_rw (θ_0, or θ_k from the dense run)
    trained: PyTree | None = None         # the ticket's trained parameters of the last round
    history: list = field(default_factory=list)  # per round: round, target and achieved sparsity


def _stack(trees: list[PyTree]) -> PyTree:
    return jax.tree_util.tree_map(lambda *xs: None if xs[0] is None else np.stack([np.asarray(x) for x in xs]),
                                  *trees, is_leaf=_is_none)


def _member(tree: PyTree, i: int) -> PyTree:
    return jax.tree_util.tree_map(lambda x: None if x is None else np.asarray(x)[i], tree, is_leaf=_is_none)


class IMP:
    """Iterative magnitude pruning with rewinding, driving an injected trainer.

    ``train(params, mask, opt_state) -> TrainOutcome`` trains from ``params`` with the mask
    (typically with ``masked(inner, mask)``) and returns the trained parameters and the
    parameters at its rewind step; ``init_opt(params, mask)`` builds a fresh optimizer state
    (called for every run: the optimizer is reset every round). Round 0 trains the dense
    network from θ_0 and records the rewind point. Round r ≥ 1 prunes the previous ticket's
    trained weights to sparsity 1 − (1 − p)^r (surviving entries only), rewinds the survivors
    to the rewind point and trains the arms:

    * ``ticket``  the magnitude mask, rewound;
    * ``random``  :func:`random_mask` with the ticket's per-leaf counts, rewound the same way;
    * ``reinit``  the ticket's mask on ``fresh`` (a fresh initialization; skipped if None).

    With ``members=S`` every leaf has a leading axis of S independent networks (vmapped
    seeds): masks are built member by member, the trainer sees the stacked arrays.
    """

    def __init__(self, config: IMPConfig, train: Callable[..., TrainOutcome],
                 init_opt: Callable[[PyTree, Mask], Any], prunable: Predicate = default_prunable,
                 members: int | None = None, fresh: PyTree | None = None):
        self.config = config
        self.train = train
        self.init_opt = init_opt
        self.prunable = prunable
        self.members = None if members is None else positive_int("IMP members", members)
        self.fresh = fresh

    # per-member helpers
    def _each(self, fn: Callable[..., Mask], *trees: PyTree) -> Mask:
        if self.members is None:
            return fn(*trees)
        return _stack([fn(*[_member(t, i) for t in trees]) for i in range(self.members)])

    def sparsities(self, mask: Mask) -> list[float] | float:
        """Achieved sparsity (per member with ``members``)."""
        if self.members is None:
            return sparsity(mask)
        return [sparsity(_member(mask, i)) for i in range(self.members)]

    def init(self, params0: PyTree) -> IMPState:
        """State before round 0: the rewind point is θ_0 until the dense run reports θ_k."""
        return IMPState(round=0, rewind=params0)

    def _run(self, start: PyTree, mask: Mask) -> TrainOutcome:
        return self.train(start, mask, self.init_opt(start, mask))

    def step(self, state: IMPState) -> tuple[IMPState, dict[str, ArmRun]]:
        """Run round ``state.round``; returns the new state and the arms' runs."""
        cfg, r = self.config, state.round
        if state.rewind is None:
            raise ConfigError("IMP state has no rewind point; start from IMP.init(params0)")
        if r > cfg.rounds:
            raise ConfigError(f"IMP already finished its {cfg.rounds} pruning rounds")
        target = cfg.target_sparsity(r)
        runs: dict[str, ArmRun] = {}
        if r == 0:
            mask = self._each(lambda p: dense_mask(p, self.prunable), state.rewind)
            start = apply_mask(state.rewind, mask)
            runs["ticket"] = ArmRun(mask, start, self._run(start, mask))
            rewind = runs["ticket"].outcome.rewind_point
        else:
            mask = self._each(lambda p, m: magnitude_mask(p, target, cfg.scope, self.prunable, current=m),
                              state.trained, state.mask)
            rewind = state.rewind
            start = apply_mask(rewind, mask)
            runs["ticket"] = ArmRun(mask, start, self._run(start, mask))
            if "random" in cfg.arms:
                key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), r)
                if self.members is None:
                    rmask = random_mask(key, mask)
                else:
                    rmask = _stack([random_mask(jax.random.fold_in(key, i), _member(mask, i))
                                    for i in range(self.members)])
                rstart = apply_mask(rewind, rmask)
                runs["random"] = ArmRun(rmask, rstart, self._run(rstart, rmask))
            if "reinit" in cfg.arms and self.fresh is not None:
                fstart = apply_mask(self.fresh, mask)
                runs["reinit"] = ArmRun(mask, fstart, self._run(fstart, mask))
        record = {"round": r, "target_sparsity": target, "sparsity": self.sparsities(mask)}
        new = IMPState(round=r + 1, mask=mask, rewind=jax.device_get(rewind),
                       trained=jax.device_get(runs["ticket"].outcome.params),
                       history=[*state.history, record])
        return new, runs

    def run(self, params0: PyTree, state: IMPState | None = None,
            on_round: Callable[[IMPState, dict[str, ArmRun]], None] | None = None) -> IMPState:
        """All rounds 0..rounds (resuming from ``state``); ``on_round`` sees each finished round."""
        state = self.init(params0) if state is None else state
        while state.round <= self.config.rounds:
            state, runs = self.step(state)
            if on_round is not None:
                on_round(state, runs)
        return state


# -- IMP state (de)serialization -------------------------------------------------------------
_TREES = ("mask", "rewind", "trained")


def _flat_state(state: IMPState, like: PyTree) -> dict[str, Any]:
    _, treedef = jax.tree_util.tree_flatten(like)
    out: dict[str, Any] = {"round": int(state.round), "history": json.dumps(state.history)}
    for name in _TREES:
        tree = getattr(state, name)
        if tree is None:
            continue
        leaves, tdef = jax.tree_util.tree_flatten(tree, is_leaf=_is_none)
        if tdef != treedef:
            raise ConfigError(f"IMP state's {name} does not have the structure of the parameters")
        for i, x in enumerate(leaves):
            if x is not None:
                out[f"{name}/{i}"] = np.asarray(x)
    return out


def _unflat_state(flat: dict[str, Any], like: PyTree) -> IMPState:
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    trees = {}
    for name in _TREES:
        keys = [k for k in flat if k.startswith(name + "/")]
        if not keys:
            trees[name] = None
            continue
        leaves = [flat.get(f"{name}/{i}") for i in range(len(like_leaves))]
        if name != "mask" and any(x is None for x in leaves):
            raise ConfigError(f"saved IMP state's {name} misses leaves of the parameters; it is from another model")
        for i, (x, ref) in enumerate(zip(leaves, like_leaves)):
            if x is not None and tuple(np.shape(x)) != tuple(np.shape(ref)):
                raise ConfigError(f"saved IMP state's {name} leaf {i} has shape {np.shape(x)}, the parameters "
                                  f"{np.shape(ref)}; it is from another model")
        trees[name] = jax.tree_util.tree_unflatten(treedef, leaves)
    return IMPState(round=int(flat["round"]), history=json.loads(str(flat["history"])), **trees)


def save_state(path: Any, state: IMPState, like: PyTree) -> Any:
    """Save ``state`` as an .npz (atomically); ``like`` is any pytree shaped like the params."""
    buf = io.BytesIO()
    flat = _flat_state(state, like)
    np.savez(buf, **{k: np.asarray(v) for k, v in flat.items()})
    return atomic_write_bytes(path, buf.getvalue())


def load_state(path: Any, like: PyTree) -> IMPState:
    """Load an IMP state saved by :func:`save_state` (bit for bit)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read IMP state {path}: {exc}") from None
    flat["round"] = int(flat["round"])
    flat["history"] = str(flat["history"])
    return _unflat_state(flat, like)


def state_to_jsonable(state: IMPState, like: PyTree) -> dict[str, Any]:
    """The state as JSON-able data (arrays as dtype, shape and exact values)."""
    out: dict[str, Any] = {}
    for k, v in _flat_state(state, like).items():
        if isinstance(v, np.ndarray):
            out[k] = {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.ravel().tolist()}
        else:
            out[k] = v
    return out


def state_from_jsonable(blob: dict[str, Any], like: PyTree) -> IMPState:
    """Inverse of :func:`state_to_jsonable`."""
    flat: dict[str, Any] = {}
    for k, v in blob.items():
        if isinstance(v, dict) and {"dtype", "shape", "values"} <= set(v):
            flat[k] = np.asarray(v["values"], dtype=jnp.dtype(v["dtype"])).reshape(v["shape"])
        else:
            flat[k] = v
    return _unflat_state(flat, like)
