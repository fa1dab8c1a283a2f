"""Studies: a typed config, ``run(config) -> results``, ``save``/``plot``/``summary``.

Registered studies (the CLI ``python -m overparam.simulate <name>`` is a thin layer over
these); modules are imported lazily so heavy optional dependencies load only when used.
"""
from __future__ import annotations

import importlib
from types import ModuleType

STUDIES: dict[str, str] = {
    "width-sweep": "overparam.studies.width_sweep",
    "modes": "overparam.studies.modes",
    "dirac": "overparam.studies.dirac",
    "stochasticity": "overparam.studies.stochasticity",
    "conv-width-sweep": "overparam.studies.conv_width_sweep",
    "lottery-toy": "overparam.studies.lottery_toy",
    "lottery": "overparam.studies.lottery",
    "optimizers": "overparam.studies.optimizers",
}


def load_study(name: str) -> ModuleType:
    """Import the module of study ``name`` (a key of :data:`STUDIES`)."""
    from overparam.errors import ConfigError

    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name])
