"""The conv-GAN trainer's configuration (:class:`TrainConfig`) and the part of it the numbers
depend on (:func:`core_config`, which keys checkpoints and compiled programs)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from overparam import dynamics, optim
from overparam.bridge import losses, nets
from overparam.errors import finite_positive, one_of, positive_int, require

__all__ = ["TrainConfig", "core_config"]


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a conv-GAN run depends on; same config + same data = same numbers.

    ``steps`` generator updates are taken ``steps_per_call`` at a time (one ``lax.scan`` per host
    call), recording every ``log_every`` steps and checkpointing every ``ckpt_every`` steps; each
    must divide the next (a value that does not is rejected here, never rounded).
    """

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
    b1: float = _f(0.0, "Adam beta1 (every optimizer with option b1: adam, ada_nsgda, sgda_ada)")
    b2: float = _f(0.9, "Adam beta2 (every optimizer with option b2)")
    scheme: str = _f("alternating", "simultaneous, alternating, extragradient or past_extragradient "
                                    "(overparam.dynamics.Scheme)")
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
        dynamics.Scheme(self.scheme, self.order, self.n_disc)  # checks the scheme, order and n_disc
        positive_int("batch_size", self.batch_size)
        require(0.0 < self.ema_decay < 1.0, f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        require(isinstance(self.ema_start, int) and self.ema_start >= 0, f"ema_start must be >= 0, got {self.ema_start}")
        for name in ("steps", "steps_per_call", "log_every", "ckpt_every"):
            positive_int(name, getattr(self, name))
        require(self.steps_per_call % self.log_every == 0,
                f"steps_per_call ({self.steps_per_call}) must be a multiple of log_every ({self.log_every})")
        require(self.ckpt_every % self.steps_per_call == 0,
                f"ckpt_every ({self.ckpt_every}) must be a multiple of steps_per_call ({self.steps_per_call}): "
                "checkpoints are written between host calls, so it is not rounded; change ckpt_every or "
                "steps_per_call")
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
