"""The conv-GAN bridge: the toy games' optimizers and schemes driving convolutional GANs.

Modules (each imported on use; this package imports nothing heavy at import time, so
``import overparam.bridge`` works on the base install):

* :mod:`overparam.bridge.data`       image data sets on disk or shipped in packages, in [-1, 1]
* :mod:`overparam.bridge.inception`  Inception-v3 pool3 features and FID (weights from a local file)

The networks, losses, trainer and checkpoints live beside them. Heavy dependencies (flax,
orbax, pillow, scikit-learn) come with ``pip install overparam[bridge]``.
"""
