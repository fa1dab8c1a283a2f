"""Regenerate every paper figure from the pinned configs in ``sims/``.

``python -m paper_figs --out figs`` (full mode) or ``python -m paper_figs --quick --out figs``
(small sizes, a couple of minutes; the test suite runs it). Each figure is one study run on
one ``sims/*.toml`` file; the table :data:`FIGURES` is the single list of them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    study: str        # a study name of overparam.simulate
    sim: str          # its pinned config in sims/
    shows: str        # one line: what the figure shows


FIGURES: dict[str, Figure] = {
    "width_sweep": Figure("width-sweep", "width_sweep.toml",
                          "GDA on the mean-matching game: no convergence below k = m, every seed converging from "
                          "about 3m, measured vs predicted rate, movement ~ k^-1/2 over the lazy range"),
    "width_sweep_paper": Figure("width-sweep", "width_sweep_paper.toml",
                                "the same with m = 16, widths to 4096, 10 seeds, 5,000 steps"),
    "width_sweep_random_features": Figure("width-sweep", "width_sweep_random_features.toml",
                                          "random-feature discriminator: the threshold moves from k = m to k = p"),
    "dirac": Figure("dirac", "dirac.toml",
                    "Dirac-GAN vector fields and trajectories: simultaneous GD spirals out, alternating GD circles, "
                    "instance noise, consensus and R1 converge"),
    "modes": Figure("modes", "modes.toml",
                    "ring of 8 Gaussians, pre-registered protocol: tuning-seed heatmaps per optimizer, held-out "
                    "share of runs covering all modes with Wilson intervals (SGDA, nSGDA, Adam, grafted)"),
    "modes_neurons": Figure("modes", "modes_neurons.toml",
                            "neurons family (K = m = m_D = 3 in d = 50): the same protocol; the modes default"),
    "stochasticity": Figure("stochasticity", "stochasticity.toml",
                            "conv GAN on a fixed latent set trained to a pinned 1-NN plateau: overfitting / mode-drop "
                            "distances for full batch, a smaller batch (equal updates and equal epochs) and latent "
                            "noise against a real-image baseline (Yazici et al. Table 1), samples beside their "
                            "nearest neighbours"),
    "conv_width_sweep": Figure("conv-width-sweep", "conv_width_sweep.toml",
                               "conv GAN width multipliers trained to a pinned FD plateau: digits-classifier Frechet "
                               "distance (not FID) over training against the real-image floor, 1-NN and top singular "
                               "values vs width, rank-correlation verdicts over held-out seeds"),
    "optimizers": Figure("optimizers", "optimizers.toml",
                         "DCGAN on MNIST-5k 16x16: (eta_G, eta_D) heatmaps of the classifier FD (not FID) per optimizer "
                         "(Adam, SGDA, nSGDA global / per tensor, Ada-nSGDA, SGDA-Ada) and held-out FD with intervals"),
    "lottery_toy": Figure("lottery-toy", "lottery_toy.toml",
                          "IMP on the mean-matching generator: final residual, measured vs masked-Jacobian predicted "
                          "rate and live hidden units vs sparsity for the ticket, a random mask and a re-init"),
    "lottery": Figure("lottery", "lottery.toml",
                      "IMP with late rewinding on a conv GAN, a VAE and an AE (decoder = generator), MNIST-5k 16x16: "
                      "classifier FD (not FID) / dense vs sparsity per arm (ticket, random, reinit, early-bird, "
                      "transferred GAN<->VAE tickets) and the early-bird fire epochs"),
}
