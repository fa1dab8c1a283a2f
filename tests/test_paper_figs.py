"""The paper-figure entry regenerates every figure in quick mode (PNG and PDF)."""
import pytest

import paper_figs
from paper_figs.__main__ import main
from overparam.studies import STUDIES
from overparam.studies.config import load_sim
from paper_figs.__main__ import SIMS


def test_every_figure_has_a_pinned_config_of_a_known_study():
    for name, fig in paper_figs.FIGURES.items():
        assert fig.study in STUDIES, name
        assert (SIMS / fig.sim).exists(), fig.sim
        assert load_sim(SIMS / fig.sim, quick=True)  # parses


def _available() -> list[str]:
    """Figures whose study imports here (the conv-GAN ones need the bridge extra)."""
    from overparam.simulate import _load

    return [n for n, f in paper_figs.FIGURES.items() if _load(f.study)[0] is not None]


@pytest.mark.slow
def test_quick_mode_makes_every_figure(tmp_path, capsys):
    names = _available()
    assert main(["--quick", "--out", str(tmp_path), "--no-progress", "--only", *names]) == 0
    for name in names:
        pngs = list((tmp_path / name).glob("*.png"))
        pdfs = list((tmp_path / name).glob("*.pdf"))
        assert pngs and pdfs, name
        assert all(p.stat().st_size > 1000 for p in pngs + pdfs)
    assert "made" in capsys.readouterr().out


def test_unknown_figure_is_a_clear_error(capsys):
    assert main(["--only", "nope"]) == 2
    assert "unknown figure" in capsys.readouterr().err
