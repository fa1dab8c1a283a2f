"""The conv-GAN training step: :func:`overparam.dynamics.make_step` on :class:`ConvGame`.

* the step's key is ``fold_in(stream_key(seed), t)`` at generator step t (the scan's own keys are
  ignored), so batches are a function of (seed, t) alone and a resumed run repeats an
  uninterrupted one exactly;
* the generator's optimizer is wrapped by :func:`with_ema`, which keeps the exponential moving
  average θ̄ of G's weights in the optimizer state: after every generator update,
  θ̄_t = θ_t for t <= ema_start, θ̄_t = decay θ̄_{t−1} + (1 − decay) θ_t afterwards
  (:func:`overparam.bridge.losses.ema_update`; Yazici et al. 2019). An extrapolation step
  (extragradient) discards the optimizer state and hence moves no average;
* the state is :class:`ConvState`: ``dynamics.TrainState`` (gen, disc, opt_gen, opt_disc, past,
  step, aux) with read-only views ``gen_state``, ``disc_state`` (the networks' collections),
  ``ema`` (θ̄, or G's weights when the EMA is off) and ``last`` (the last step's metrics).

:func:`record_metrics` gives what :func:`overparam.dynamics.run` records every ``log_every`` steps:
the last step's losses and gradient norms and the top-3 singular values of every G and D kernel
(BigGAN's instability monitor).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from overparam import dynamics, optim
from overparam.bridge import losses, nets, sharding
from overparam.bridge.config import TrainConfig
from overparam.bridge.game import METRICS, ConvGame, stream_key
from overparam.errors import ConfigError

__all__ = ["ConvState", "EmaState", "initial_state", "init_train_state", "make_optimizers", "make_train_step",
           "record_metrics", "scheme_of", "with_ema"]


class EmaState(NamedTuple):
    inner: Any        # the wrapped optimizer's state
    ema: Any          # θ̄, the moving average of the parameters
    count: jax.Array  # updates taken


def with_ema(opt: optax.GradientTransformation, decay: float, start: int = 0) -> optax.GradientTransformation:
    """``opt`` plus an EMA of the parameters it produces: θ_t = θ_{t−1} + Δ_t (Δ_t from ``opt``),
    θ̄_t = θ_t for t <= start, else decay θ̄_{t−1} + (1 − decay) θ_t; the updates are ``opt``'s."""

    def init_fn(params):
        return EmaState(opt.init(params), jax.tree_util.tree_map(jnp.copy, params), jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ConfigError("with_ema needs the parameters in update(grads, state, params)")
        upd, inner = opt.update(updates, state.inner, params)
        count = state.count + 1
        ema = losses.ema_update(state.ema, optax.apply_updates(params, upd), count, decay, start)
        return upd, EmaState(inner, ema, count)

    return optax.GradientTransformation(init_fn, update_fn)


class ConvState(dynamics.TrainState):
    """``dynamics.TrainState`` of a conv GAN, with read-only views (module docstring)."""

    __slots__ = ()

    @property
    def gen_state(self) -> dict:
        return self.aux.gen.state

    @property
    def disc_state(self) -> dict:
        return self.aux.disc.state

    @property
    def ema(self) -> Any:
        return self.opt_gen.ema if isinstance(self.opt_gen, EmaState) else self.gen

    @property
    def last(self) -> dict:
        met = {**self.aux.disc.metrics, **self.aux.gen.metrics}
        return {k: met[k] for k in METRICS}


def scheme_of(cfg: TrainConfig) -> dynamics.Scheme:
    return dynamics.Scheme(cfg.scheme, cfg.order, cfg.n_disc)


def make_optimizers(cfg: TrainConfig, opt_gen: optax.GradientTransformation | None = None,
                    opt_disc: optax.GradientTransformation | None = None
                    ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """The players' optimizers: ``opt_gen`` / ``opt_disc`` when given (any optax transformation,
    e.g. a mask-wrapped one), else ``optim.make(cfg.opt_*, cfg.lr_*)`` with Adam's betas for every
    optimizer that takes them (:func:`overparam.optim.takes_option`). G's is wrapped by
    :func:`with_ema` when ``cfg.ema``."""

    def build(name: str, lr: float):
        opts = {k: getattr(cfg, k) for k in ("b1", "b2") if optim.takes_option(name, k)}
        return optim.make(name, lr, **opts)

    og = opt_gen if opt_gen is not None else build(cfg.opt_g, cfg.lr_g)
    od = opt_disc if opt_disc is not None else build(cfg.opt_d, cfg.lr_d)
    for name, tx in (("opt_gen", og), ("opt_disc", od)):
        if not isinstance(tx, optax.GradientTransformation):
            raise ConfigError(f"{name} must be an optax.GradientTransformation, got {type(tx).__name__}")
    if cfg.ema:
        og = with_ema(og, cfg.ema_decay, cfg.ema_start)
    return og, od


def initial_state(game: ConvGame, cfg: TrainConfig, opt_g, opt_d, gen, disc, gen_state: dict,
                  disc_state: dict) -> ConvState:
    """The state at step 0 from given weights and collections (past-extragradient's warm-start
    gradients on the batch of key fold_in(PRNGKey(seed), 3))."""
    aux = ConvGame.initial_aux(gen_state, disc_state)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 3)
    return ConvState(*dynamics.init_state(game, opt_g, opt_d, gen, disc, scheme_of(cfg), key, aux))


def init_train_state(gan: nets.GAN, cfg: TrainConfig, opt_g, opt_d, data: jax.Array, latents: jax.Array | None,
                     params: tuple[Any, Any] | None = None, mesh=None) -> ConvState:
    """The seeded initialization (G, D and their collections from PRNGKey(seed)); ``params`` =
    (gen, disc) replaces the trainable weights (the collections stay the seeded ones)."""
    gp, gs, dp, ds = nets.init_gan(gan, jax.random.PRNGKey(cfg.seed))
    if params is not None:
        gp, dp = params
    game = ConvGame.from_config(gan, cfg, data, latents, mesh)
    return initial_state(game, cfg, opt_g, opt_d, gp, dp, gs, ds)


def make_train_step(gan: nets.GAN, cfg: TrainConfig, opt_g, opt_d, data: jax.Array, latents: jax.Array | None,
                    mesh=None, key_fn: Callable[[ConvState, jax.Array], jax.Array] | None = None
                    ) -> Callable[[ConvState, jax.Array], ConvState]:
    """``step(state, key) -> state``: ``dynamics.make_step(ConvGame, opt_g, opt_d, scheme)`` with
    the step key ``key_fn(state, key)`` (default fold_in(stream_key(seed), state.step), ignoring
    ``key``) and, with a mesh, the new state constrained to be replicated."""
    stream = stream_key(cfg.seed)
    key_fn = key_fn or (lambda s, k: jax.random.fold_in(stream, s.step))
    game = ConvGame.from_config(gan, cfg, data, latents, mesh)
    inner = dynamics.make_step(game, opt_g, opt_d, scheme_of(cfg))

    def step(state: ConvState, key: jax.Array) -> ConvState:
        new = inner(state, key_fn(state, key))
        return sharding.constrain_replicated(new, mesh) if mesh is not None else new

    return step


def record_metrics(state: ConvState) -> dict[str, jax.Array]:
    """The last step's metrics and the top-3 singular values of every G and D kernel."""
    out = dict(state.last)
    for player, params in (("G", state.gen), ("D", state.disc)):
        for name, kernel in nets.kernels(params):
            out[f"sv:{player}/{name.removesuffix('/kernel')}"] = losses.top_singular_values(kernel, 3)
    return out
