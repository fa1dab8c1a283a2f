"""The conv-GAN trainer's public names in one place (the code lives in four modules).

* :mod:`overparam.bridge.config`       :class:`TrainConfig` (every field a run depends on), :func:`core_config`
* :mod:`overparam.bridge.game`         :class:`ConvGame`, the conv GAN as an ``overparam.dynamics`` game with
                                       auxiliary state (BN statistics, spectral-norm vectors); batches
* :mod:`overparam.bridge.step`         the step = ``dynamics.make_step(ConvGame, ...)`` for every scheme
                                       (simultaneous, alternating, extragradient, past-extragradient), the EMA
                                       of G as an optimizer wrapper, :class:`ConvState`
* :mod:`overparam.bridge.checkpoints`  orbax checkpoints with digests
* :mod:`overparam.bridge.loop`         :class:`Trainer`: the host loop, logs, resume, sampling

``docs/bridge.md`` documents the API (custom optimizers per player, initial weights).
"""
from __future__ import annotations

from overparam.bridge.checkpoints import Checkpoints, data_fingerprint, tree_digest
from overparam.bridge.config import TrainConfig, core_config
from overparam.bridge.game import METRICS, Batch, ConvGame, PlayerAux, draw_batch, fixed_latent_set, stream_key
from overparam.bridge.loop import FORMAT, Trainer
from overparam.bridge.step import (ConvState, EmaState, init_train_state, initial_state, make_optimizers,
                                   make_train_step, record_metrics, scheme_of, with_ema)

TrainState = ConvState  # the name before the split

__all__ = ["FORMAT", "METRICS", "Batch", "Checkpoints", "ConvGame", "ConvState", "EmaState", "PlayerAux",
           "TrainConfig", "TrainState", "Trainer", "core_config", "data_fingerprint", "draw_batch",
           "fixed_latent_set", "init_train_state", "initial_state", "make_optimizers", "make_train_step",
           "record_metrics", "scheme_of", "stream_key", "tree_digest", "with_ema"]
