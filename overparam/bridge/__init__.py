"""The conv-GAN bridge: the toy games' optimizers and schemes driving convolutional GANs.

Modules (each imported on use; this package imports nothing heavy at import time, so
``import overparam.bridge`` works on the base install):

* :mod:`overparam.bridge.data`         image data sets on disk or shipped in packages, in [-1, 1]
* :mod:`overparam.bridge.nets`         flax GAN networks with width multipliers (DCGAN, ResNet, the
                                       stochasticity paper's DCGAN), spectral norm, batch norm
* :mod:`overparam.bridge.losses`       GAN losses, penalties, EMA, truncation, singular values
* :mod:`overparam.bridge.game`         the conv GAN as an ``overparam.dynamics`` game with auxiliary state
* :mod:`overparam.bridge.config`       :class:`TrainConfig`
* :mod:`overparam.bridge.step`         the training step = ``dynamics.make_step`` on the conv game
* :mod:`overparam.bridge.checkpoints`  orbax checkpoints with digests
* :mod:`overparam.bridge.loop`         :class:`Trainer`, the host loop (``bridge.trainer`` re-exports all)
* :mod:`overparam.bridge.sharding`     data parallelism over the local devices, or a global mesh
                                       over every process's devices
* :mod:`overparam.bridge.distributed`  ``jax.distributed`` placement options for multi-host runs
* :mod:`overparam.bridge.train`        ``python -m overparam.bridge.train``: one conv training run
                                       (single or multi-process)
* :mod:`overparam.bridge.vae`          conv VAE and autoencoder whose decoder is the generator
* :mod:`overparam.bridge.inception`    Inception-v3 pool3 features and FID (weights from a local file)
* :mod:`overparam.bridge.classifier`   the digits classifier whose features give ``fd_<data>_classifier``

``docs/bridge.md`` is the guide. Heavy dependencies (flax, orbax, pillow, scikit-learn) come
with ``pip install overparam[bridge]``.
"""
