"""Conv-GAN trainer: the foundation's optimizers and schemes on images, with checkpoints.

One training step (``make_train_step``) has the semantics of :func:`overparam.dynamics.make_step`
for the ``simultaneous`` and ``alternating`` schemes, reimplemented because conv GANs carry
non-trainable state (spectral-norm vectors, batch-norm averages) and per-step metrics:

* simultaneous: one batch; grad_G L_G and grad_D L_D both at (G_t, D_t); both players step.
* alternating, ``d_first``: ``n_disc`` discriminator steps, each on a fresh batch, then one
  generator step against the new D; ``g_first``: the generator step, then the D steps.
* the step key is split exactly as in ``dynamics.make_step`` (``kg, kd = split(key)``, the D
  steps use ``split(kd, n_disc)``), so for stateless networks one step here equals one step of
  ``dynamics.make_step`` on the adapter game :func:`as_game` (tested).
* the step key is ``fold_in(PRNGKey(seed) stream, step)``: batches are a function of (seed,
  step) alone, hence a resumed run repeats an uninterrupted one exactly.
* each player's non-trainable state changes only in its own update: the D step stores D's new
  spectral vectors / BN averages (one power iteration per D step, D run once on the
  concatenation [G(z); x] as in BigGAN-PyTorch); the G step stores G's. The other player runs in
  training mode (batch statistics) with its state read-only.
* after every generator update the EMA copy theta_bar follows :func:`losses.ema_update`.

The whole update is one jitted function; ``steps_per_call`` steps run per host call through
:func:`overparam.dynamics.run` (``lax.scan``), which records every ``log_every`` steps the losses,
gradient norms and the top-3 singular values of every G and D kernel (BigGAN's instability
monitor) plus a finiteness flag. A non-finite record stops the run cleanly: the log keeps the
record, ``trainer.json`` says ``"status": "diverged"`` and the step, and no checkpoint of the
non-finite state is written.

Files under ``out_dir``: ``log.jsonl`` and ``log.csv`` (one row per record), ``trainer.json``
(status, timings, best score), ``checkpoints/last/<step>`` and ``checkpoints/best/<step>``
(orbax, finalized by an atomic rename; one of each kept).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam import dynamics, optim
from overparam.bridge import losses, nets, sharding
from overparam.errors import ConfigError, finite_positive, one_of, positive_int, require
from overparam import records as common

__all__ = ["Batch", "TrainConfig", "TrainState", "Trainer", "as_game", "draw_batch", "make_train_step"]

ADAM_LIKE = ("adam", "ada_nsgda", "sgda_ada")
METRICS = ("loss_d", "loss_g", "gan_loss_d", "gan_loss_g", "gp", "r1", "ortho_d", "ortho_g",
           "d_real", "d_fake", "grad_norm_d", "grad_norm_g")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a conv-GAN run depends on; same config + same data = same numbers."""

    out_dir: str = _f("", "folder for logs and checkpoints ('' = keep everything in memory)")
    data: str = _f("digits", "data set name for overparam.bridge.data.load_dataset (ignored when an array is given)")
    data_path: str | None = _f(None, "path of the data set on disk (cifar10, celeba, folder, npz)")
    n: int | None = _f(None, "training subset size (seeded); none = all images")
    resolution: int | None = _f(None, "image side to resize to; none = the data set's own")
    arch: str = _f("stoch_dcgan", "network: stoch_dcgan (Yazici et al.), dcgan (Radford), resnet (SNGAN)")
    width: float = _f(1.0, "width multiplier on every channel count")
    latent_dim: int | None = _f(None, "latent dimension; none = the architecture's (512, 100, 128)")
    sn_d: bool = _f(True, "spectral normalization in D")
    sn_g: bool = _f(False, "spectral normalization in G")
    loss: str = _f("non_saturating", "non_saturating, saturating, hinge or wasserstein")
    gp: float = _f(0.0, "WGAN gradient-penalty weight lambda (0 = off)")
    r1: float = _f(0.0, "R1 penalty gamma, gamma/2 E|grad D(x)|^2 on real images (0 = off)")
    ortho_g: float = _f(0.0, "BigGAN off-diagonal orthogonal regularization beta on G (1e-4 in BigGAN; 0 = off)")
    ortho_d: float = _f(0.0, "the same regularization on D (0 = off)")
    opt_g: str = _f("adam", "generator optimizer, a name of overparam.optim.make")
    opt_d: str = _f("adam", "discriminator optimizer, a name of overparam.optim.make")
    lr_g: float = _f(1e-4, "generator learning rate")
    lr_d: float = _f(1e-4, "discriminator learning rate")
    b1: float = _f(0.0, "Adam beta1 (adam, ada_nsgda, sgda_ada)")
    b2: float = _f(0.9, "Adam beta2 (adam, ada_nsgda, sgda_ada)")
    scheme: str = _f("alternating", "simultaneous or alternating")
    order: str = _f("d_first", "alternating order: d_first or g_first")
    n_disc: int = _f(1, "discriminator steps per generator step (alternating)")
    batch_size: int = _f(64, "mini-batch size m (real images and latent codes per step)")
    fixed_latents: bool = _f(False, "train on a fixed latent set, one code per training image")
    latent_noise_var: float = _f(0.0, "latent noise: z + eps, eps ~ N(0, var I) (0 = off)")
    ema: bool = _f(True, "keep an exponential moving average of G's weights")
    ema_decay: float = _f(0.999, "EMA decay")
    ema_start: int = _f(0, "generator step up to which the EMA copies the weights")
    steps: int = _f(1000, "generator steps in total")
    steps_per_call: int = _f(100, "steps per host call (one lax.scan); multiple of log_every")
    log_every: int = _f(100, "record losses, grad norms and singular values every this many steps")
    ckpt_every: int = _f(1000, "checkpoint every this many steps; multiple of steps_per_call")
    seed: int = _f(0, "seed of initialization, batches and latents")
    devices: int = _f(0, "local devices for data parallelism (0 = all)")
    resume: bool = _f(True, "continue from out_dir's last checkpoint when there is one")

    def __post_init__(self) -> None:
        one_of("arch", self.arch, nets.ARCHS)
        finite_positive("width", self.width)
        if self.latent_dim is not None:
            positive_int("latent_dim", self.latent_dim)
        if self.n is not None:
            positive_int("n", self.n)
        one_of("loss", self.loss, losses.LOSSES)
        for name in ("gp", "r1", "ortho_g", "ortho_d", "latent_noise_var"):
            finite_positive(name, getattr(self, name), allow_zero=True)
        one_of("opt_g", self.opt_g, optim.OPTIMIZERS)
        one_of("opt_d", self.opt_d, optim.OPTIMIZERS)
        finite_positive("lr_g", self.lr_g)
        finite_positive("lr_d", self.lr_d)
        require(0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0, f"b1, b2 must lie in [0, 1), got {self.b1}, {self.b2}")
        if self.scheme not in ("simultaneous", "alternating"):
            raise ConfigError(f"scheme {self.scheme!r} is not supported by the conv-GAN trainer; "
                              "use simultaneous or alternating")
        dynamics.Scheme(self.scheme, self.order, self.n_disc)  # checks order and n_disc
        positive_int("batch_size", self.batch_size)
        require(0.0 < self.ema_decay < 1.0, f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        require(isinstance(self.ema_start, int) and self.ema_start >= 0, f"ema_start must be >= 0, got {self.ema_start}")
        for name in ("steps", "steps_per_call", "log_every", "ckpt_every"):
            positive_int(name, getattr(self, name))
        require(self.steps_per_call % self.log_every == 0,
                f"steps_per_call ({self.steps_per_call}) must be a multiple of log_every ({self.log_every})")
        require(self.ckpt_every % self.steps_per_call == 0,
                f"ckpt_every ({self.ckpt_every}) must be a multiple of steps_per_call ({self.steps_per_call})")
        require(self.steps % self.log_every == 0,
                f"steps ({self.steps}) must be a multiple of log_every ({self.log_every})")
        require(isinstance(self.devices, int) and self.devices >= 0, f"devices must be >= 0, got {self.devices}")
        if self.resolution is not None:
            nets.check_resolution(self.resolution)


def core_config(config: TrainConfig) -> TrainConfig:
    """The fields the numbers depend on (output folder, run length and data source blanked)."""
    d = TrainConfig()
    every = config.log_every  # run-length fields blanked to log_every, which keeps them valid for any log_every
    return dataclasses.replace(config, out_dir="", data=d.data, data_path=None, n=None, resolution=None,
                               steps=every, steps_per_call=every, ckpt_every=every,
                               resume=d.resume, log_every=every)


# -- state and batches -------------------------------------------------------------------------
class TrainState(NamedTuple):
    gen: Any          # G parameters
    disc: Any         # D parameters
    gen_state: dict   # G's non-trainable collections (spectral, batch_stats)
    disc_state: dict  # D's
    opt_gen: Any
    opt_disc: Any
    ema: Any          # EMA of G's parameters (a copy of gen when ema is off)
    last: dict        # the metrics of the last step (METRICS)
    step: jax.Array   # generator steps taken


class Batch(NamedTuple):
    real: jax.Array   # (m, H, W, C) training images
    z: jax.Array      # (m, latent_dim) latent codes (+ noise)
    key: jax.Array    # key of the step's penalty randomness (GP interpolation)


def draw_batch(key: jax.Array, data: jax.Array, latents: jax.Array | None, batch_size: int, latent_dim: int,
               noise_var: float = 0.0) -> Batch:
    """m distinct training images; m distinct codes of the fixed set (or fresh N(0, I) codes);
    plus eps ~ N(0, noise_var I). Images and codes are drawn independently (a GAN pairs none)."""
    kx, kz, kn, kp = jax.random.split(key, 4)
    real = data[jax.random.permutation(kx, data.shape[0])[:batch_size]]
    if latents is None:
        z = jax.random.normal(kz, (batch_size, latent_dim), jnp.float32)
    else:
        z = latents[jax.random.permutation(kz, latents.shape[0])[:batch_size]]
    if noise_var > 0:
        z = z + math.sqrt(noise_var) * jax.random.normal(kn, z.shape, z.dtype)
    return Batch(real, z, kp)


def stream_key(seed: int) -> jax.Array:
    """The key from which step t's key fold_in(stream, t) is derived."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def fixed_latent_set(seed: int, n: int, latent_dim: int) -> jax.Array:
    """The fixed latent codes z_1..z_n ~ N(0, I) (one per training image)."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 2), (n, latent_dim), jnp.float32)


# -- objectives ----------------------------------------------------------------------------------
def _zero() -> jax.Array:
    return jnp.zeros((), jnp.float32)


def disc_objective(gan: nets.GAN, cfg: TrainConfig, d_params, d_state, g_params, g_state, batch: Batch):
    """L_D + penalties; aux = (D's new state, metrics)."""
    m = batch.real.shape[0]
    fake, _ = nets.apply(gan.G, g_params, g_state, batch.z, train=True)
    fake = jax.lax.stop_gradient(fake)
    logits, new_state = nets.apply(gan.D, d_params, d_state, jnp.concatenate([fake, batch.real]), train=True)
    lf, lr = logits[:m], logits[m:]
    gan_loss = losses.d_loss(cfg.loss, lr, lf)

    def d_fn(x):
        return nets.apply(gan.D, d_params, new_state, x, train=True)[0]

    gp = losses.gradient_penalty(d_fn, batch.real, fake, batch.key, cfg.gp) if cfg.gp else _zero()
    r1 = losses.r1_penalty(d_fn, batch.real, cfg.r1) if cfg.r1 else _zero()
    od = losses.orthogonal_penalty(d_params, cfg.ortho_d) if cfg.ortho_d else _zero()
    total = gan_loss + gp + r1 + od
    return total, (new_state, {"loss_d": total, "gan_loss_d": gan_loss, "gp": gp, "r1": r1, "ortho_d": od,
                               "d_real": jnp.mean(lr), "d_fake": jnp.mean(lf)})


def gen_objective(gan: nets.GAN, cfg: TrainConfig, g_params, g_state, d_params, d_state, batch: Batch):
    """L_G + orthogonal penalty; aux = (G's new state, metrics)."""
    fake, new_state = nets.apply(gan.G, g_params, g_state, batch.z, train=True)
    logits, _ = nets.apply(gan.D, d_params, d_state, fake, train=True)
    gan_loss = losses.g_loss(cfg.loss, logits)
    og = losses.orthogonal_penalty(g_params, cfg.ortho_g) if cfg.ortho_g else _zero()
    total = gan_loss + og
    return total, (new_state, {"loss_g": total, "gan_loss_g": gan_loss, "ortho_g": og})


def make_optimizers(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    def build(name: str, lr: float):
        opts = {"b1": cfg.b1, "b2": cfg.b2} if name in ADAM_LIKE else {}
        return optim.make(name, lr, **opts)

    return build(cfg.opt_g, cfg.lr_g), build(cfg.opt_d, cfg.lr_d)


def init_train_state(gan: nets.GAN, cfg: TrainConfig, opt_g, opt_d) -> TrainState:
    gp, gs, dp, ds = nets.init_gan(gan, jax.random.PRNGKey(cfg.seed))
    last = {k: _zero() for k in METRICS}
    ema = jax.tree_util.tree_map(jnp.copy, gp)
    return TrainState(gp, dp, gs, ds, opt_g.init(gp), opt_d.init(dp), ema, last, jnp.zeros((), jnp.int32))


def make_train_step(gan: nets.GAN, cfg: TrainConfig, opt_g, opt_d, data: jax.Array, latents: jax.Array | None,
                    mesh=None, key_fn: Callable[[TrainState, jax.Array], jax.Array] | None = None):
    """One pure step ``step(state, key) -> state`` (module docstring for the semantics).

    ``key_fn(state, key)`` gives the step's key; the default ignores ``key`` and returns
    fold_in(stream_key(seed), state.step), so batches depend on (seed, step) only.
    """
    stream = stream_key(cfg.seed)
    key_fn = key_fn or (lambda s, k: jax.random.fold_in(stream, s.step))

    def draw(k: jax.Array) -> Batch:
        b = draw_batch(k, data, latents, cfg.batch_size, gan.latent_dim, cfg.latent_noise_var)
        if mesh is not None:
            b = b._replace(real=sharding.constrain_batch(b.real, mesh), z=sharding.constrain_batch(b.z, mesh))
        return b

    d_grad = jax.value_and_grad(functools.partial(disc_objective, gan, cfg), has_aux=True)
    g_grad = jax.value_and_grad(functools.partial(gen_objective, gan, cfg), has_aux=True)

    def d_grads(s: TrainState, batch: Batch):
        (_, (state, met)), g = d_grad(s.disc, s.disc_state, s.gen, s.gen_state, batch)
        return g, state, {**met, "grad_norm_d": optim.tree_norm(g)}

    def g_grads(s: TrainState, batch: Batch):
        (_, (state, met)), g = g_grad(s.gen, s.gen_state, s.disc, s.disc_state, batch)
        return g, state, {**met, "grad_norm_g": optim.tree_norm(g)}

    def apply_d(s: TrainState, g, state) -> TrainState:
        upd, od = opt_d.update(g, s.opt_disc, s.disc)
        return s._replace(disc=optax.apply_updates(s.disc, upd), disc_state=state, opt_disc=od)

    def apply_g(s: TrainState, g, state) -> TrainState:
        upd, og = opt_g.update(g, s.opt_gen, s.gen)
        gen = optax.apply_updates(s.gen, upd)
        ema = losses.ema_update(s.ema, gen, s.step + 1, cfg.ema_decay, cfg.ema_start) if cfg.ema else gen
        return s._replace(gen=gen, gen_state=state, opt_gen=og, ema=ema)

    def simultaneous(s: TrainState, key: jax.Array):
        batch = draw(key)
        gd, sd, md = d_grads(s, batch)
        gg, sg, mg = g_grads(s, batch)
        return apply_g(apply_d(s, gd, sd), gg, sg), {**md, **mg}

    def alternating(s: TrainState, key: jax.Array):
        kg, kd = jax.random.split(key)

        def d_body(c, k):
            g, state, met = d_grads(c, draw(k))
            return apply_d(c, g, state), met

        def disc_steps(c):
            c, mets = jax.lax.scan(d_body, c, jax.random.split(kd, cfg.n_disc))
            return c, jax.tree_util.tree_map(lambda a: a[-1], mets)

        def g_step(c):
            g, state, met = g_grads(c, draw(kg))
            return apply_g(c, g, state), met

        if cfg.order == "d_first":
            s, md = disc_steps(s)
            s, mg = g_step(s)
        else:
            s, mg = g_step(s)
            s, md = disc_steps(s)
        return s, {**md, **mg}

    body = simultaneous if cfg.scheme == "simultaneous" else alternating

    def step(state: TrainState, key: jax.Array) -> TrainState:
        new, met = body(state, key_fn(state, key))
        last = {k: met.get(k, state.last[k]).astype(jnp.float32) for k in METRICS}
        new = new._replace(last=last, step=state.step + 1)
        return sharding.constrain_replicated(new, mesh) if mesh is not None else new

    return step


def record_metrics(state: TrainState) -> dict[str, jax.Array]:
    """The last step's metrics and the top-3 singular values of every G and D kernel."""
    out = dict(state.last)
    for player, params in (("G", state.gen), ("D", state.disc)):
        for name, kernel in nets.kernels(params):
            out[f"sv:{player}/{name.removesuffix('/kernel')}"] = losses.top_singular_values(kernel, 3)
    return out


# -- the adapter to the foundation's schemes (used by the tests) ------------------------------------
@dataclass(frozen=True)
class _AdapterGame:
    gan: nets.GAN
    cfg: TrainConfig
    data: jax.Array
    latents: jax.Array | None
    g_state: dict
    d_state: dict

    def gen_loss(self, gen, disc, batch):
        return gen_objective(self.gan, self.cfg, gen, self.g_state, disc, self.d_state, batch)[0]

    def disc_loss(self, gen, disc, batch):
        return disc_objective(self.gan, self.cfg, disc, self.d_state, gen, self.g_state, batch)[0]

    def sample_batch(self, key):
        return draw_batch(key, self.data, self.latents, self.cfg.batch_size, self.gan.latent_dim,
                          self.cfg.latent_noise_var)


def as_game(gan: nets.GAN, cfg: TrainConfig, data, latents=None, g_state=None, d_state=None) -> dynamics.Game:
    """The same objectives and batches as a :class:`overparam.dynamics.Game` (states frozen)."""
    return _AdapterGame(gan, cfg, data, latents, g_state or {}, d_state or {})


# -- compiled programs (shared by every Trainer with the same core config) ----------------------------
class _Program(NamedTuple):
    gan: nets.GAN
    opt_g: Any
    opt_d: Any
    mesh: Any
    init: Callable
    advance: Callable
    generate: Callable


@functools.lru_cache(maxsize=32)
def _program(core: TrainConfig, resolution: int, channels: int) -> _Program:
    gan = nets.make_gan(core.arch, resolution, channels, core.width, core.latent_dim, core.sn_d, core.sn_g)
    opt_g, opt_d = make_optimizers(core)
    mesh = sharding.local_mesh(core.devices)

    def advance(state, data, latents, n_steps):
        step = make_train_step(gan, core, opt_g, opt_d, data, latents, mesh)
        return dynamics.run(step, state, jax.random.PRNGKey(0), n_steps, core.log_every, record_metrics)

    donate = (0,) if jax.default_backend() != "cpu" else ()
    advance_jit = jax.jit(advance, static_argnums=(3,), donate_argnums=donate)

    @jax.jit
    def generate(params, g_state, z):
        return nets.apply(gan.G, params, g_state, z, train=False)[0]

    init = jax.jit(functools.partial(init_train_state, gan, core, opt_g, opt_d),
                   out_shardings=sharding.replicated(mesh))
    return _Program(gan, opt_g, opt_d, mesh, init, advance_jit, generate)


# -- checkpoints ------------------------------------------------------------------------------------
class Checkpoints:
    """orbax checkpoints ``root/<name>/<step>`` (name = last or best), one kept per name.

    orbax writes each into a temporary folder and renames it when complete, so a killed
    save leaves the previous checkpoint intact. A checkpoint is the list of the state's
    leaves plus a JSON record (config hash, data fingerprint, step, score).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._managers: dict[str, Any] = {}

    def _manager(self, name: str):
        import orbax.checkpoint as ocp

        if name not in self._managers:
            opts = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
            self._managers[name] = ocp.CheckpointManager((self.root / name).absolute(), options=opts)
        return self._managers[name]

    def latest_step(self, name: str) -> int | None:
        if not (self.root / name).exists():
            return None
        return self._manager(name).latest_step()

    def save(self, name: str, state: TrainState, meta: dict) -> None:
        import orbax.checkpoint as ocp

        mngr = self._manager(name)
        step = int(meta["step"])
        if mngr.latest_step() == step:
            return
        flat = jax.tree_util.tree_leaves(state)
        meta = {**meta, "digest": tree_digest(flat)}
        leaves = {f"{i:05d}": x for i, x in enumerate(flat)}
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                                meta=ocp.args.JsonSave(common.to_jsonable(meta))))
        mngr.wait_until_finished()

    def _corrupt(self, folder: Path, exc: Exception) -> ConfigError:
        return ConfigError(
            f"checkpoint {folder} is unreadable or corrupt ({type(exc).__name__}: {str(exc)[:200]}); "
            f"delete {folder.parent} to start over, or set resume=false with a new out_dir")

    def read_meta(self, name: str) -> dict:
        """The JSON record of the latest checkpoint ``name`` (read without the arrays)."""
        import orbax.checkpoint as ocp

        step = self.latest_step(name)
        if step is None:
            raise ConfigError(f"no checkpoint in {self.root / name}")
        try:
            out = self._manager(name).restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(out["meta"])
        except Exception as exc:  # orbax/tensorstore raise many types for damaged files
            raise self._corrupt(self.root / name / str(step), exc) from None
        if meta.get("step") != step:
            raise self._corrupt(self.root / name / str(step), ValueError(f"record says step {meta.get('step')}"))
        return meta

    def restore(self, name: str, like: TrainState) -> tuple[TrainState, dict]:
        """The latest checkpoint ``name`` restored into the structure of ``like``."""
        import orbax.checkpoint as ocp

        step = self.latest_step(name)
        folder = self.root / name
        if step is None:
            raise ConfigError(f"no checkpoint in {folder}")
        leaves, treedef = jax.tree_util.tree_flatten(like)
        target = {f"{i:05d}": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                  for i, x in enumerate(leaves)}
        try:
            out = self._manager(name).restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
            restored = [out["state"][f"{i:05d}"] for i in range(len(leaves))]
            meta = dict(out["meta"])
            for a, b in zip(restored, leaves):
                if a.shape != b.shape or a.dtype != b.dtype:
                    raise ValueError(f"array {a.shape} {a.dtype} where {b.shape} {b.dtype} was expected")
            if tree_digest(restored) != meta.get("digest"):
                raise ValueError("the arrays' SHA-256 digest differs from the one recorded at save time")
        except Exception as exc:  # orbax/tensorstore raise many types for damaged files
            raise self._corrupt(folder / str(step), exc) from None
        return jax.tree_util.tree_unflatten(treedef, restored), meta


def tree_digest(leaves: list) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes (detects silently flipped bits)."""
    h = hashlib.sha256()
    for x in leaves:
        a = np.asarray(jax.device_get(x))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def data_fingerprint(data: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str((data.shape, str(data.dtype))).encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()[:16]


# -- the host loop --------------------------------------------------------------------------------
def _check_data(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 4:
        raise ConfigError(f"training images must be an array (N, H, W, C), got shape {arr.shape}")
    if arr.shape[1] != arr.shape[2]:
        raise ConfigError(f"images must be square, got {arr.shape[1]}x{arr.shape[2]}; resize them (resolution=...)")
    nets.check_resolution(arr.shape[1])
    if not np.issubdtype(arr.dtype, np.floating):
        raise ConfigError(f"images must be floats in [-1, 1], got dtype {arr.dtype}; scale x/127.5 - 1")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ConfigError("training images contain NaN or Inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.001 or hi > 1.001:
        raise ConfigError(f"images must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]; scale x/127.5 - 1")
    return arr


def _row(recs: dict, i: int, with_metrics: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"step": int(recs["step"][i]), "finite": bool(recs["finite"][i])}
    for k, v in recs.items():
        if k in ("step", "finite"):
            continue
        if k.startswith("sv:"):
            for j, s in enumerate(np.asarray(v[i]).ravel()):
                row[f"{k[3:]}/sv{j}"] = float(s)
        elif with_metrics:
            row[k] = float(v[i])
    return row


def _row_finite(row: dict[str, Any]) -> bool:
    return bool(row["finite"]) and all(math.isfinite(v) for k, v in row.items() if isinstance(v, float))


class Trainer:
    """Train a conv GAN; ``train()`` runs (or resumes) to ``config.steps``.

    ``data``: float images (N, H, W, C) in [-1, 1]; None loads ``config.data`` with
    :func:`overparam.bridge.data.load_dataset`. ``score_fn(trainer) -> float`` (lower is better)
    is evaluated at every checkpoint and decides the ``best`` checkpoint; without it only
    ``last`` is written.
    """

    def __init__(self, config: TrainConfig, data: Any = None, score_fn: Callable[["Trainer"], float] | None = None):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        if data is None:
            from overparam.bridge.data import load_dataset

            data = load_dataset(config.data, config.data_path, n=config.n, seed=config.seed,
                                resolution=config.resolution)
        self.data = _check_data(data)
        n, res, _, ch = self.data.shape
        if config.batch_size > n:
            raise ConfigError(f"batch_size {config.batch_size} exceeds the {n} training images; use batch_size <= {n}")
        self.core = core_config(config)
        self.program = _program(self.core, res, ch)
        self.gan = self.program.gan
        sharding.check_batch(self.program.mesh, config.batch_size)
        self.fingerprint = data_fingerprint(self.data)
        self.out = Path(config.out_dir) if config.out_dir else None
        self.ckpt = Checkpoints(self.out / "checkpoints") if self.out else None
        meta = self._check_resumable()  # fails fast, before any compilation
        mesh = self.program.mesh
        self._data = sharding.replicate(jnp.asarray(self.data), mesh)
        self._latents = None
        if config.fixed_latents:
            self._latents = sharding.replicate(fixed_latent_set(config.seed, n, self.gan.latent_dim), mesh)
        self.state: TrainState = self.program.init()
        self.score_fn = score_fn
        self.records: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.timings: list[dict[str, float]] = []
        self.status = "running"
        self.diverged_at: int | None = None
        self.best: dict[str, Any] | None = None
        self.resumed_from: int | None = None
        if meta is not None:
            self._resume()

    # -- properties --
    @property
    def step(self) -> int:
        return int(self.state.step)

    @property
    def latents(self) -> np.ndarray | None:
        """The fixed latent set (one code per training image), or None."""
        return None if self._latents is None else np.asarray(self._latents)

    # -- resume --
    def _meta(self, score: float | None = None) -> dict[str, Any]:
        return {"step": self.step, "config_hash": common.config_hash(self.core), "data": self.fingerprint,
                "score": score, "status": self.status}

    def _check_resumable(self) -> dict | None:
        """The last checkpoint's record if this run should resume from it (checked against
        the config and the data), None for a fresh start."""
        if self.ckpt is None:
            return None
        last = self.ckpt.latest_step("last")
        if last is None:
            return None
        if not self.config.resume:
            raise ConfigError(f"{self.out} already holds a checkpoint (step {last}); set resume=true to continue "
                              "it or choose another out_dir")
        meta = self.ckpt.read_meta("last")
        if meta.get("config_hash") != common.config_hash(self.core):
            raise ConfigError(f"the checkpoint in {self.out} was written with a different config; use the same "
                              "config to resume, or another out_dir")
        if meta.get("data") != self.fingerprint:
            raise ConfigError(f"the checkpoint in {self.out} was trained on different data (fingerprint "
                              f"{meta.get('data')} vs {self.fingerprint}); give the same data or another out_dir")
        return meta

    def _resume(self) -> None:
        state, meta = self.ckpt.restore("last", self.state)
        self.state = state
        self.resumed_from = int(meta["step"])
        self.records = [r for r in self._read_log() if r["step"] <= self.resumed_from]
        summary = self._read_summary()
        self.scores = [s for s in summary.get("scores", []) if s["step"] <= self.resumed_from]
        best_step = self.ckpt.latest_step("best")
        if best_step is not None and best_step <= self.resumed_from:
            self.best = next((s for s in self.scores if s["step"] == best_step), None)

    def _read_log(self) -> list[dict[str, Any]]:
        path = self.out / "log.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append({k: (float(v) if v in ("nan", "inf", "-inf") else v) for k, v in row.items()})
        return rows

    def _read_summary(self) -> dict[str, Any]:
        path = self.out / "trainer.json"
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            return {}

    # -- output --
    def summary(self) -> dict[str, Any]:
        """Status ("running", "completed", "stopped", "diverged"), step, timings, scores."""
        run_t = [t for t in self.timings[1:]] or self.timings
        steps = sum(t["steps"] for t in run_t)
        secs = sum(t["seconds"] for t in run_t)
        return {
            "status": self.status, "step": self.step, "diverged_at": self.diverged_at,
            "resumed_from": self.resumed_from, "best": self.best, "scores": self.scores,
            "steps_per_s": steps / secs if secs > 0 else None,
            "images_per_s": self.config.batch_size * steps / secs if secs > 0 else None,
            "first_call_s": self.timings[0]["seconds"] if self.timings else None,
            "devices": [str(d) for d in self.program.mesh.devices.ravel()],
            "config": dataclasses.asdict(self.config),
        }

    def _write_outputs(self) -> None:
        if self.out is None:
            return
        lines = "".join(json.dumps(common.to_jsonable(r)) + "\n" for r in self.records)
        common.atomic_write_text(self.out / "log.jsonl", lines)
        common.write_csv(self.out / "log.csv", self.records)
        common.write_json(self.out / "trainer.json", self.summary())

    def save_checkpoint(self) -> None:
        """Write ``last`` (and ``best`` when score_fn says this state is the best so far)."""
        if self.ckpt is None or self.status == "diverged" or self.ckpt.latest_step("last") == self.step:
            return
        score = None
        if self.score_fn is not None:
            score = float(self.score_fn(self))
            if not any(s["step"] == self.step for s in self.scores):
                self.scores.append({"step": self.step, "score": score})
        self.ckpt.save("last", self.state, self._meta(score))
        if score is not None and math.isfinite(score) and (self.best is None or score < self.best["score"]):
            self.ckpt.save("best", self.state, self._meta(score))
            self.best = {"step": self.step, "score": score}

    # -- training --
    def train(self, stop_at: int | None = None, progress: bool = True) -> dict[str, Any]:
        """Run to ``config.steps`` (or to ``stop_at``, a multiple of log_every); returns :meth:`summary`."""
        cfg = self.config
        target = cfg.steps if stop_at is None else min(positive_int("stop_at", stop_at), cfg.steps)
        require(target % cfg.log_every == 0, f"stop_at ({target}) must be a multiple of log_every ({cfg.log_every})")
        if self.status == "diverged" or self.step >= target:
            self.status = "completed" if self.step >= cfg.steps and self.status != "diverged" else self.status
            self._write_outputs()
            return self.summary()
        self.status = "running"
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=self.step, desc=f"train {cfg.arch}", leave=False, dynamic_ncols=True)
        try:
            while self.step < target and self.status == "running":
                self._one_call(target)
                if bar is not None:
                    bar.update(self.step - bar.n)
                    last = self.records[-1] if self.records else {}
                    bar.set_postfix(loss_d=last.get("loss_d"), loss_g=last.get("loss_g"))
        finally:
            if bar is not None:
                bar.close()
        if self.status == "running":
            self.status = "completed" if self.step >= cfg.steps else "stopped"
            self.save_checkpoint()
        self._write_outputs()
        return self.summary()

    def _one_call(self, target: int) -> None:
        cfg = self.config
        next_ckpt = (self.step // cfg.ckpt_every + 1) * cfg.ckpt_every
        n = min(cfg.steps_per_call, target - self.step, next_ckpt - self.step)
        first_row = self.step == 0 and not self.records
        t0 = time.perf_counter()
        state, recs = self.program.advance(self.state, self._data, self._latents, n)
        recs = jax.device_get(recs)
        self.timings.append({"steps": n, "seconds": time.perf_counter() - t0})
        rows = [_row(recs, i, with_metrics=i > 0) for i in range(0 if first_row else 1, len(recs["step"]))]
        bad = next((i for i, r in enumerate(rows) if not _row_finite(r)), None)
        self.state = state
        if bad is not None:
            self.records += rows[: bad + 1]
            self.status = "diverged"
            self.diverged_at = rows[bad]["step"]
            self._write_outputs()
            return
        self.records += rows
        self._write_outputs()
        if self.step % cfg.ckpt_every == 0:
            self.save_checkpoint()

    # -- sampling --
    def generate(self, z: Any, ema: bool = True, chunk: int = 256) -> np.ndarray:
        """G(z) in eval mode (BN running averages, stored SN vectors) with the EMA weights by default.

        The EMA generator uses the current G's batch-norm averages.
        """
        z = np.asarray(z, np.float32)
        require(z.ndim == 2 and z.shape[1] == self.gan.latent_dim,
                f"latent codes must have shape (n, {self.gan.latent_dim}), got {z.shape}")
        params = self.state.ema if ema else self.state.gen
        chunk = min(chunk, len(z))
        out = []
        for i in range(0, len(z), chunk):
            zz = z[i:i + chunk]
            pad = chunk - len(zz)
            if pad:
                zz = np.concatenate([zz, np.zeros((pad, zz.shape[1]), np.float32)])
            out.append(np.asarray(self.program.generate(params, self.state.gen_state, zz))[: chunk - pad])
        return np.concatenate(out)

    def sample(self, n: int, seed: int = 0, ema: bool = True, truncation: float | None = None) -> np.ndarray:
        """n images from fresh N(0, I) codes (truncated at ``truncation`` if given)."""
        z = losses.sample_latents(jax.random.PRNGKey(seed), positive_int("n", n), self.gan.latent_dim, truncation)
        return self.generate(z, ema=ema)
