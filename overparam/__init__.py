"""overparam: theory and simulation of GAN training dynamics.

Layers (see ``docs/`` and the design notes):

* :mod:`overparam.games`     toy games (value functions and their closed forms)
* :mod:`overparam.optim`     optax transformations for the two players
* :mod:`overparam.dynamics`  schemes (who moves when) and the scanned runner
* :mod:`overparam.theory`    sympy derivations and spectral predictions
* :mod:`overparam.metrics`   convergence, mode coverage, 1-NN, Frechet distance
* :mod:`overparam.studies`   config + run + plot per study; CLI in :mod:`overparam.simulate`
"""
from overparam.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "__version__"]
