"""Schemes (how the two players take turns) and the scanned runner.

A *game* is anything with

* ``gen_loss(gen, disc, batch) -> scalar``   minimized by the generator,
* ``disc_loss(gen, disc, batch) -> scalar``  minimized by the discriminator
  (minus the value for a zero-sum game),
* ``sample_batch(key) -> batch``             the data one gradient evaluation sees
  (deterministic games ignore the key),
* optionally ``project_disc(disc) -> disc``  a projection applied after every discriminator
  update (e.g. WGAN's weight clipping); games without it are unconstrained.

A *scheme* turns (game, generator optimizer, discriminator optimizer) into one pure
``step(state, key) -> state``. :func:`run` scans that step with ``jax.lax.scan`` and records
``metrics(state)`` every ``record_every`` steps, plus a finiteness flag so divergence is
recorded, never hidden. Nothing here knows a particular game or optimizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from overparam.errors import ConfigError, one_of, positive_int

__all__ = ["Game", "Scheme", "TrainState", "init_state", "make_step", "run", "tree_all_finite"]

PyTree = Any
SCHEMES = ("simultaneous", "alternating", "extragradient", "past_extragradient")


class Game(Protocol):
    def gen_loss(self, gen: PyTree, disc: PyTree, batch: Any) -> jax.Array: ...
    def disc_loss(self, gen: PyTree, disc: PyTree, batch: Any) -> jax.Array: ...
    def sample_batch(self, key: jax.Array) -> Any: ...


@dataclass(frozen=True)
class Scheme:
    """Turn-taking rule.

    kind:   ``simultaneous`` (both players step from the same point),
            ``alternating`` (one player moves, the other answers the new point),
            ``extragradient`` (both extrapolate one step, then update the *original* point
            with the extrapolated point's gradients), or ``past_extragradient`` (Popov's
            variant: extrapolate with the previous step's extrapolated gradient, one new
            gradient per step).
    order:  for alternating, ``d_first`` or ``g_first``.
    n_disc: discriminator steps per generator step (alternating only).
    """

    kind: str = "simultaneous"
    order: str = "d_first"
    n_disc: int = 1

    def __post_init__(self) -> None:
        one_of("scheme", self.kind, SCHEMES)
        one_of("alternating order", self.order, ("d_first", "g_first"))
        positive_int("n_disc", self.n_disc)
        if self.kind != "alternating" and self.n_disc != 1:
            raise ConfigError(
                f"n_disc={self.n_disc} needs the alternating scheme; use scheme 'alternating' or n_disc=1"
            )


class TrainState(NamedTuple):
    gen: PyTree
    disc: PyTree
    opt_gen: Any
    opt_disc: Any
    past: Any  # past_extragradient: last extrapolated gradients (g, d); else ()
    step: jax.Array


def _grads(game: Game, gen: PyTree, disc: PyTree, batch: Any) -> tuple[PyTree, PyTree]:
    """Both players' gradients at one point; one backward pass for a zero-sum game."""
    if getattr(game, "zero_sum", False):
        gg, gd = jax.grad(game.value, argnums=(0, 1))(gen, disc, batch)
        return gg, jax.tree_util.tree_map(jnp.negative, gd)
    gg = jax.grad(game.gen_loss, argnums=0)(gen, disc, batch)
    gd = jax.grad(game.disc_loss, argnums=1)(gen, disc, batch)
    return gg, gd


def init_state(
    game: Game,
    opt_gen: optax.GradientTransformation,
    opt_disc: optax.GradientTransformation,
    gen: PyTree,
    disc: PyTree,
    scheme: Scheme = Scheme(),
    key: jax.Array | None = None,
) -> TrainState:
    """Initial optimizer states (and, for past-extragradient, the gradients at the start)."""
    past: Any = ()
    if scheme.kind == "past_extragradient":
        key = jax.random.PRNGKey(0) if key is None else key
        past = _grads(game, gen, disc, game.sample_batch(key))
    return TrainState(gen, disc, opt_gen.init(gen), opt_disc.init(disc), past, jnp.zeros((), jnp.int32))


def _apply(opt: optax.GradientTransformation, grads: PyTree, opt_state: Any, params: PyTree):
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def make_step(
    game: Game,
    opt_gen: optax.GradientTransformation,
    opt_disc: optax.GradientTransformation,
    scheme: Scheme = Scheme(),
) -> Callable[[TrainState, jax.Array], TrainState]:
    """One pure training step ``step(state, key) -> state`` for ``scheme``.

    If the game has ``project_disc``, it is applied after every discriminator update
    (including extragradient's extrapolation).
    """
    project = getattr(game, "project_disc", None)

    def apply_d(gd, opt_d, disc):
        disc, opt_d = _apply(opt_disc, gd, opt_d, disc)
        return (disc if project is None else project(disc)), opt_d

    def d_update(gen, disc, opt_d, key):
        gd = jax.grad(game.disc_loss, argnums=1)(gen, disc, game.sample_batch(key))
        return apply_d(gd, opt_d, disc)

    def g_update(gen, disc, opt_g, key):
        gg = jax.grad(game.gen_loss, argnums=0)(gen, disc, game.sample_batch(key))
        return _apply(opt_gen, gg, opt_g, gen)

    def simultaneous(s: TrainState, key):
        gg, gd = _grads(game, s.gen, s.disc, game.sample_batch(key))
        gen, og = _apply(opt_gen, gg, s.opt_gen, s.gen)
        disc, od = apply_d(gd, s.opt_disc, s.disc)
        return s._replace(gen=gen, disc=disc, opt_gen=og, opt_disc=od)

    def alternating(s: TrainState, key):
        kg, kd = jax.random.split(key)

        def disc_steps(gen, disc, opt_d):
            def body(carry, k):
                disc, opt_d = carry
                return d_update(gen, disc, opt_d, k), None

            (disc, opt_d), _ = jax.lax.scan(body, (disc, opt_d), jax.random.split(kd, scheme.n_disc))
            return disc, opt_d

        if scheme.order == "d_first":
            disc, od = disc_steps(s.gen, s.disc, s.opt_disc)
            gen, og = g_update(s.gen, disc, s.opt_gen, kg)
        else:
            gen, og = g_update(s.gen, s.disc, s.opt_gen, kg)
            disc, od = disc_steps(gen, s.disc, s.opt_disc)
        return s._replace(gen=gen, disc=disc, opt_gen=og, opt_disc=od)

    def extragradient(s: TrainState, key):
        k1, k2 = jax.random.split(key)
        if scheme.kind == "extragradient":
            gg0, gd0 = _grads(game, s.gen, s.disc, game.sample_batch(k1))
        else:
            gg0, gd0 = s.past
        # Extrapolation: the optimizers' step from the current point, their states discarded.
        gen_h, _ = _apply(opt_gen, gg0, s.opt_gen, s.gen)
        disc_h, _ = apply_d(gd0, s.opt_disc, s.disc)
        gg, gd = _grads(game, gen_h, disc_h, game.sample_batch(k2))
        gen, og = _apply(opt_gen, gg, s.opt_gen, s.gen)
        disc, od = apply_d(gd, s.opt_disc, s.disc)
        past = (gg, gd) if scheme.kind == "past_extragradient" else ()
        return s._replace(gen=gen, disc=disc, opt_gen=og, opt_disc=od, past=past)

    body = {
        "simultaneous": simultaneous,
        "alternating": alternating,
        "extragradient": extragradient,
        "past_extragradient": extragradient,
    }[scheme.kind]

    def step(state: TrainState, key: jax.Array) -> TrainState:
        new = body(state, key)
        return new._replace(step=state.step + 1)

    return step


def tree_all_finite(*trees: PyTree) -> jax.Array:
    """True when every leaf of every tree is finite."""
    leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t)]
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def run(
    step: Callable[[TrainState, jax.Array], TrainState],
    state: TrainState,
    key: jax.Array,
    n_steps: int,
    record_every: int,
    metrics: Callable[[TrainState], dict[str, jax.Array]],
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Scan ``step`` for ``n_steps`` steps, recording ``metrics`` every ``record_every`` steps.

    Returns the final state and a dict of arrays with a leading axis of
    ``n_steps // record_every + 1`` records (the first is the initial state), plus
    ``"step"`` and ``"finite"`` (all parameters finite at that record). Pure and
    jit/vmap-able; no Python loop per step.
    """
    n_steps = positive_int("steps", n_steps)
    record_every = positive_int("record_every", record_every)
    if n_steps % record_every:
        raise ConfigError(f"steps ({n_steps}) must be a multiple of record_every ({record_every})")
    n_records = n_steps // record_every

    def record(s: TrainState) -> dict[str, jax.Array]:
        out = dict(metrics(s))
        out["step"] = s.step
        out["finite"] = tree_all_finite(s.gen, s.disc)
        return out

    def chunk(s: TrainState, k: jax.Array):
        s, _ = jax.lax.scan(lambda c, kk: (step(c, kk), None), s, jax.random.split(k, record_every))
        return s, record(s)

    first = record(state)
    state, recs = jax.lax.scan(chunk, state, jax.random.split(key, n_records))
    recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    return state, recs
