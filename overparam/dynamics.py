"""Schemes (how the two players take turns) and the scanned runner.

A *game* is anything with

* ``gen_loss(gen, disc, batch) -> scalar``   minimized by the generator,
* ``disc_loss(gen, disc, batch) -> scalar``  minimized by the discriminator
  (minus the value for a zero-sum game),
* ``sample_batch(key) -> batch``             the data one gradient evaluation sees
  (deterministic games ignore the key),
* optionally ``project_disc(disc) -> disc``  a projection applied after every discriminator
  update (e.g. WGAN's weight clipping); games without it are unconstrained.

A game with *auxiliary state* (``has_aux = True``; e.g. a conv GAN, whose networks carry
batch-norm statistics and spectral-norm power-iteration vectors) keeps that state in
``TrainState.aux = AuxState(gen=a_G, disc=a_D)``; its losses read both players' state and return
their own player's new one:

* ``gen_loss(gen, disc, batch, aux) -> (L_G, a_G')``,
* ``disc_loss(gen, disc, batch, aux) -> (L_D, a_D')``,
* optionally ``observe_grads(player, a, grads) -> a`` (player ``"gen"`` or ``"disc"``), called
  with every gradient a player's update uses (e.g. to record its norm).

Each gradient evaluation stores the state its loss returned, and only its own player's: a
player's state changes in its own updates (for extragradient also in the extrapolation, whose
gradients are evaluated first). Games without ``has_aux`` carry ``aux = ()`` and are unchanged.

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

__all__ = ["AuxState", "Game", "Scheme", "TrainState", "init_state", "make_step", "run", "tree_all_finite"]

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
            ``extragradient`` (Korpelevich 1976: both extrapolate one step, then update the
            *original* point with the extrapolated point's gradients), or ``past_extragradient``
            (Popov 1980: extrapolate with the previous step's extrapolated gradient, one new
            gradient per step). Equations: :func:`make_step`.
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
    aux: Any = ()  # games with auxiliary state: AuxState(gen, disc); else ()


class AuxState(NamedTuple):
    """The players' auxiliary (non-trainable) state of a game with ``has_aux`` (module docstring)."""

    gen: Any
    disc: Any


def _grads(game: Game, gen: PyTree, disc: PyTree, batch: Any) -> tuple[PyTree, PyTree]:
    """Both players' gradients at one point; one backward pass for a zero-sum game."""
    if getattr(game, "zero_sum", False):
        gg, gd = jax.grad(game.value, argnums=(0, 1))(gen, disc, batch)
        return gg, jax.tree_util.tree_map(jnp.negative, gd)
    gg = jax.grad(game.gen_loss, argnums=0)(gen, disc, batch)
    gd = jax.grad(game.disc_loss, argnums=1)(gen, disc, batch)
    return gg, gd


def _player_grad(game: Game, player: str, gen: PyTree, disc: PyTree, batch: Any, aux: Any) -> tuple[PyTree, Any]:
    """One player's gradient; for a game with auxiliary state also ``aux`` with that player's
    part replaced by what its loss returned (and seen by ``observe_grads``)."""
    if not getattr(game, "has_aux", False):
        if player == "gen":
            return jax.grad(game.gen_loss, argnums=0)(gen, disc, batch), aux
        return jax.grad(game.disc_loss, argnums=1)(gen, disc, batch), aux
    observe = getattr(game, "observe_grads", None)
    if player == "gen":
        g, a = jax.grad(game.gen_loss, argnums=0, has_aux=True)(gen, disc, batch, aux)
    else:
        g, a = jax.grad(game.disc_loss, argnums=1, has_aux=True)(gen, disc, batch, aux)
    if observe is not None:
        a = observe(player, a, g)
    return g, (aux._replace(gen=a) if player == "gen" else aux._replace(disc=a))


def _both_grads(game: Game, gen: PyTree, disc: PyTree, batch: Any, aux: Any) -> tuple[PyTree, PyTree, Any]:
    """Both players' gradients at one point (and, with auxiliary state, both players' new state,
    each from its own loss evaluated at the same input state)."""
    if not getattr(game, "has_aux", False):
        return (*_grads(game, gen, disc, batch), aux)
    gg, ag = _player_grad(game, "gen", gen, disc, batch, aux)
    gd, ad = _player_grad(game, "disc", gen, disc, batch, aux)
    return gg, gd, AuxState(ag.gen, ad.disc)


def init_state(
    game: Game,
    opt_gen: optax.GradientTransformation,
    opt_disc: optax.GradientTransformation,
    gen: PyTree,
    disc: PyTree,
    scheme: Scheme = Scheme(),
    key: jax.Array | None = None,
    aux: Any = (),
) -> TrainState:
    """Initial optimizer states (and, for past-extragradient, the gradients at the start).

    ``aux``: the initial :class:`AuxState` of a game with auxiliary state (left unchanged by the
    past-extragradient warm start, whose gradients are evaluated at it)."""
    past: Any = ()
    if scheme.kind == "past_extragradient":
        key = jax.random.PRNGKey(0) if key is None else key
        gg, gd, _ = _both_grads(game, gen, disc, game.sample_batch(key), aux)
        past = (gg, gd)
    return TrainState(gen, disc, opt_gen.init(gen), opt_disc.init(disc), past, jnp.zeros((), jnp.int32), aux)


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

    With g_G = ∇_G L_G, g_D = ∇_D L_D and U the optimizers' update maps (γ, δ their step sizes):

    * simultaneous:   (G, D)_{t+1} = (G_t + U_G(g_G(G_t, D_t)), D_t + U_D(g_D(G_t, D_t))), one batch;
    * alternating d_first: ``n_disc`` steps D ← D + U_D(g_D(G_t, D)), each on its own batch, then
      G_{t+1} = G_t + U_G(g_G(G_t, D_{t+1})); ``g_first`` the generator first. Keys:
      ``kg, kd = split(key)``, the D steps use ``split(kd, n_disc)``;
    * extragradient (Korpelevich 1976): X̂ = X_t + U(g(X_t)) with the optimizer states discarded,
      then X_{t+1} = X_t + U(g(X̂)); ``k1, k2 = split(key)`` for the two batches;
    * past_extragradient (Popov 1980): X̂ = X_t + U(ĝ_{t−1}), X_{t+1} = X_t + U(g(X̂)) and
      ĝ_t = g(X̂): one new gradient per step.

    If the game has ``project_disc``, it is applied after every discriminator update
    (including extragradient's extrapolation). Games with auxiliary state: module docstring.
    """
    project = getattr(game, "project_disc", None)

    def apply_d(gd, opt_d, disc):
        disc, opt_d = _apply(opt_disc, gd, opt_d, disc)
        return (disc if project is None else project(disc)), opt_d

    def d_update(gen, disc, opt_d, aux, key):
        gd, aux = _player_grad(game, "disc", gen, disc, game.sample_batch(key), aux)
        return (*apply_d(gd, opt_d, disc), aux)

    def g_update(gen, disc, opt_g, aux, key):
        gg, aux = _player_grad(game, "gen", gen, disc, game.sample_batch(key), aux)
        return (*_apply(opt_gen, gg, opt_g, gen), aux)

    def simultaneous(s: TrainState, key):
        gg, gd, aux = _both_grads(game, s.gen, s.disc, game.sample_batch(key), s.aux)
        gen, og = _apply(opt_gen, gg, s.opt_gen, s.gen)
        disc, od = apply_d(gd, s.opt_disc, s.disc)
        return s._replace(gen=gen, disc=disc, opt_gen=og, opt_disc=od, aux=aux)

    def alternating(s: TrainState, key):
        kg, kd = jax.random.split(key)

        def disc_steps(gen, disc, opt_d, aux):
            def body(carry, k):
                disc, opt_d, aux = carry
                return d_update(gen, disc, opt_d, aux, k), None

            (disc, opt_d, aux), _ = jax.lax.scan(body, (disc, opt_d, aux), jax.random.split(kd, scheme.n_disc))
            return disc, opt_d, aux

        if scheme.order == "d_first":
            disc, od, aux = disc_steps(s.gen, s.disc, s.opt_disc, s.aux)
            gen, og, aux = g_update(s.gen, disc, s.opt_gen, aux, kg)
        else:
            gen, og, aux = g_update(s.gen, s.disc, s.opt_gen, s.aux, kg)
            disc, od, aux = disc_steps(gen, s.disc, s.opt_disc, aux)
        return s._replace(gen=gen, disc=disc, opt_gen=og, opt_disc=od, aux=aux)

    def extragradient(s: TrainState, key):
        k1, k2 = jax.random.split(key)
        if scheme.kind == "extragradient":
            gg0, gd0, aux_h = _both_grads(game, s.gen, s.disc, game.sample_batch(k1), s.aux)
        else:
            (gg0, gd0), aux_h = s.past, s.aux
        # Extrapolation: the optimizers' step from the current point, their states discarded.
        gen_h, _ = _apply(opt_gen, gg0, s.opt_gen, s.gen)
        disc_h, _ = apply_d(gd0, s.opt_disc, s.disc)
        gg, gd, aux = _both_grads(game, gen_h, disc_h, game.sample_batch(k2), aux_h)
        gen, og = _apply(opt_gen, gg, s.opt_gen, s.gen)
        disc, od = apply_d(gd, s.opt_disc, s.disc)
        past = (gg, gd) if scheme.kind == "past_extragradient" else ()
        return s._replace(gen=gen, disc=disc, opt_gen=og, opt_disc=od, past=past, aux=aux)

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
