"""What every report figure shares: a pyplot-free canvas, atomic PNG saving and
the small guards for empty or non-finite data.

Figures are standalone :class:`matplotlib.figure.Figure` objects wired to the
Agg canvas instead of going through ``pyplot``: that needs no display, never
changes the process-wide backend (a notebook importing this package keeps its
own), and leaves no figure registered in pyplot's global list, so nothing leaks
when a Luigi worker draws hundreds of figures. Files are written through
:func:`pipeline.atomic.atomic_path`, so a failure leaves nothing at ``out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.atomic import atomic_path

__all__ = ["DPI", "finite", "new_figure", "no_data", "require_columns", "save"]

DPI = 110


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Write ``fig`` as a PNG to ``out`` atomically, then free it. Returns ``out``."""
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            # The temporary name has no .png suffix, so the format must be explicit.
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        # Drop artists (and image arrays) now rather than at garbage collection.
        fig.clear()
    return out


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the columns of ``columns`` it lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {list(df.columns)}")


def no_data(ax: Axes, message: str) -> None:
    """Show ``message`` in place of a plot, so an empty figure still says why."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            fontsize=12, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def finite(values: pd.Series) -> np.ndarray:
    """``values`` as floats with non-numbers and infinities turned into NaN."""
    # inf would stretch the autoscaled axis to nothing; NaN just leaves a gap.
    arr = np.array(pd.to_numeric(values, errors="coerce"), dtype=float)  # writable copy
    arr[~np.isfinite(arr)] = np.nan
    return arr
