"""Shared plumbing of the studies: figures, tables, progress bars.

Record I/O (atomic writes, JSON, CSV, manifests, the content-keyed cell cache) lives one
floor down in :mod:`overparam.records`; its names are re-exported here for the studies.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from overparam.records import (  # noqa: F401  (re-exported for the studies)
    CellStore,
    atomic_write_bytes,
    atomic_write_text,
    check_out_dir,
    config_hash,
    content_hash,
    finite_mean,
    from_jsonable,
    manifest,
    read_json,
    to_jsonable,
    write_csv,
    write_json,
)


# -- figures and tables ----------------------------------------------------------------------
def save_figure(fig: Any, path_stem: str | os.PathLike) -> list[Path]:
    """Save a matplotlib figure as ``<stem>.png`` and ``<stem>.pdf`` (atomically), then close it."""
    import matplotlib.pyplot as plt

    stem = Path(path_stem)
    out = []
    try:
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
            out.append(atomic_write_bytes(stem.with_suffix(f".{ext}"), buf.getvalue()))
    finally:
        plt.close(fig)
    return out


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], floatfmt: str = ".3g") -> str:
    """A plain-text table of ``rows`` restricted to ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


def progress(iterable: Iterable, desc: str, total: int | None = None, enabled: bool = True):
    """A tqdm progress bar (on stderr) over ``iterable``; a plain iterator when disabled."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
