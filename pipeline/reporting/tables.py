"""The table model both renderers share, and how its cell values are formatted.

A report's numbers go through these helpers exactly once, so the HTML page and
the Markdown summary can never disagree on a number, a "n/a" or a highlight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["Table", "best_positions", "epoch_label", "fmt", "fmt_duration", "is_missing", "mark_best", "signed"]


@dataclass
class Table:
    """A table both renderers share; cells hold plain (unescaped) text.

    ``best`` holds ``(row, column)`` cells to highlight, ``numeric`` the columns
    to right-align, ``footer`` an optional totals row (always emphasised).
    """

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    best: set[tuple[int, int]] = field(default_factory=set)
    numeric: set[int] = field(default_factory=set)
    footer: list[str] | None = None


def is_missing(value: Any) -> bool:
    """True for ``None`` and NaN; any other value, numeric or not, counts as present."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or ``n/a`` when missing."""
    if is_missing(value):
        return "n/a"
    return f"{float(value):.{digits}f}"


def signed(value: float | None) -> str:
    """A difference with its sign and 3 decimals, or ``n/a``."""
    return "n/a" if value is None or is_missing(value) else f"{value:+.3f}"


def fmt_duration(seconds: float) -> str:
    """Seconds as a reader would say them: ``12.3 s``, ``4 min 05 s``, ``1 h 07 min``."""
    if is_missing(seconds):
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def epoch_label(epoch: Any) -> str:
    """An epoch number as shown; epoch 0 is the network before any training."""
    epoch = int(epoch)
    return "0 (before training)" if epoch == 0 else str(epoch)


def best_positions(values: Sequence[Any], higher: bool = True) -> set[int]:
    """Positions of the best values; ties as displayed (3 decimals) all count."""
    shown = {i: round(float(v), 3) for i, v in enumerate(values) if not is_missing(v)}
    if len(shown) < 2:  # a lone value is trivially "best" and the colour would mislead
        return set()
    if len(set(shown.values())) == 1:  # all tied: nothing stands out
        return set()
    target = max(shown.values()) if higher else min(shown.values())
    return {i for i, v in shown.items() if v == target}


def mark_best(table: Table, column: int, values: Sequence[Any], higher: bool = True) -> None:
    """Highlight the best of ``values`` (one per row, in row order) in ``column``."""
    table.best.update((r, column) for r in best_positions(values, higher))
