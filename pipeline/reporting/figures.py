"""Figures for one training run and for comparing runs, saved as PNG files.

Every function draws on a standalone :class:`matplotlib.figure.Figure` wired
to the Agg canvas instead of going through ``pyplot``: that needs no display,
never changes the process-wide backend (a notebook importing this module keeps
its own), and leaves no figure registered in pyplot's global list, so nothing
leaks when a Luigi worker draws hundreds of figures. Files are written through
:func:`pipeline.atomic.atomic_path`, so a failure leaves nothing under ``out``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.ticker import MaxNLocator

from pipeline.atomic import atomic_path

__all__ = [
    "metric_label",
    "plot_loss_by_epoch",
    "plot_accuracy_by_epoch",
    "plot_neighbor_grid",
    "plot_compare",
]

DPI = 110
SAME_CLASS_COLOR = "#1a9850"
OTHER_CLASS_COLOR = "#d73027"
QUERY_FRAME_COLOR = "#111111"
# Longer class names (Tiny ImageNet words such as "Egyptian cat, ...") would
# spill into the neighbouring cell at the grid's cell width.
MAX_LABEL_CHARS = 18

_SPLITS = frozenset({"val", "train", "test"})
_BASE_NAMES = {"map_at_r": "mAP@R", "r_precision": "R-precision",
               "triplet_precision": "triplet precision"}


def metric_label(column: str) -> str:
    """Human-readable name of a metric column, e.g. ``precision@30 (val)``."""
    base, _, split = str(column).rpartition("_")
    if not base or split not in _SPLITS:
        base, split = str(column), ""
    name = _BASE_NAMES.get(base) or re.sub(r"_at_(\w+)", r"@\1", base).replace("_", " ")
    return f"{name} ({split})" if split else name


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            # The temporary name has no .png suffix, so the format must be explicit.
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        # Drop artists (and image arrays) now rather than at garbage collection.
        fig.clear()
    return out


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {list(df.columns)}")


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            fontsize=12, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(values: pd.Series) -> np.ndarray:
    # inf would stretch the autoscaled axis to nothing; NaN just leaves a gap.
    arr = np.array(pd.to_numeric(values, errors="coerce"), dtype=float)  # writable copy
    arr[~np.isfinite(arr)] = np.nan
    return arr


def _step_positions(log: pd.DataFrame) -> np.ndarray:
    """Fractional epoch of every step: steps of epoch e fall in (e-1, e].

    Scaled from the step numbers actually logged, so 0- or 1-based counters
    and logs that keep only every n-th step all end the epoch at x = e, where
    that epoch's mean is drawn.
    """
    epoch = log["epoch"].to_numpy(dtype=float)
    step = log["step"].to_numpy(dtype=float)
    grouped = log.groupby("epoch")["step"]
    lo = grouped.transform("min").to_numpy(dtype=float)
    hi = grouped.transform("max").to_numpy(dtype=float)
    return epoch - 1 + (step - lo + 1) / (hi - lo + 1)


def plot_loss_by_epoch(step_log: pd.DataFrame, out: Path) -> Path:
    """Triplet loss by epoch: epoch means bold, per-step loss faint, active share dashed.

    ``step_log`` has one row per logged step with columns ``epoch``, ``step``,
    ``loss`` and ``active_fraction`` (``collapsed`` is marked when present).
    Returns ``out``.
    """
    _require(step_log, ["epoch", "step", "loss", "active_fraction"], "step log")
    fig = _new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    ax.set_title("Triplet loss during training")
    if step_log.empty:
        _no_data(ax, "no training steps logged")
        return _save(fig, out)

    log = step_log.sort_values(["epoch", "step"], kind="stable").reset_index(drop=True)
    x = _step_positions(log)
    loss = _finite(log["loss"])
    active = _finite(log["active_fraction"])
    means = (
        pd.DataFrame({"epoch": log["epoch"], "loss": loss, "active": active})
        .groupby("epoch", sort=True).mean()
    )

    ax.plot(x, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss per step")
    ax.plot(means.index, means["loss"], color="tab:blue", linewidth=2.5, marker="o",
            label="mean loss per epoch")
    if "collapsed" in log.columns:
        hit = log["collapsed"].eq(True).to_numpy()  # NaN/None count as "not collapsed"
        if hit.any():
            ax.plot(x[hit], loss[hit], linestyle="none", marker="X", color="tab:red",
                    markersize=9, markeredgecolor="white", label="embedding collapsed")
    ax.set_xlabel("epoch")
    ax.set_ylabel("triplet loss")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)

    ax2 = ax.twinx()
    # Raw per-step fractions are as noisy as the loss; drawn dashed they turn into
    # a solid orange band over it, so smooth over ~1/10 of an epoch first.
    window = max(1, int(log.groupby("epoch").size().median()) // 10)
    smooth = (pd.Series(active).groupby(log["epoch"])
              .transform(lambda s: s.rolling(window, min_periods=1, center=True).mean()))
    ax2.plot(x, smooth.to_numpy(), color="tab:orange", linestyle="--", linewidth=1.6,
             label="active triplet fraction (right axis)")
    ax2.set_ylabel("fraction of triplets with non-zero loss", color="tab:orange")
    ax2.tick_params(axis="y", colors="tab:orange")
    ax2.set_ylim(0, 1.05)

    # One legend for both axes, below the plot: inside it would hide a curve
    # whichever corner it took, since the two axes' curves span the whole box.
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9,
               columnspacing=1.2, handlelength=1.8,
               frameon=False)
    return _save(fig, out)


def plot_accuracy_by_epoch(metrics: pd.DataFrame, out: Path,
                           baseline: float | None = None) -> Path:
    """Validation and training precision@30 by epoch, raw-pixel baseline dotted.

    ``metrics`` has one row per epoch (epoch 0 is the untrained network) with
    ``precision_at_30_val`` and/or ``precision_at_30_train``. Returns ``out``.
    """
    _require(metrics, ["epoch"], "metrics table")
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    ax.set_title("Precision@30 by epoch")
    series = [
        ("precision_at_30_val", "validation", "tab:blue", "-"),
        ("precision_at_30_train", "training", "tab:green", "--"),
    ]
    present = [s for s in series if s[0] in metrics.columns]
    if metrics.empty or not present:
        _no_data(ax, "no precision@30 values")
        return _save(fig, out)

    table = metrics.sort_values("epoch", kind="stable")
    epochs = table["epoch"].to_numpy(dtype=float)
    for column, label, color, style in present:
        ax.plot(epochs, _finite(table[column]), color=color, linestyle=style,
                marker="o", linewidth=2, label=label)
    if baseline is not None and np.isfinite(baseline):
        ax.axhline(baseline, color="0.35", linestyle=":", linewidth=1.8,
                   label=f"raw-pixel kNN ({baseline:.3f})")
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("precision@30")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        # A single point would otherwise sit on an axis spanning -0.05..0.05.
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, out)


def _short(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _fmt_distance(d: float) -> str:
    if not np.isfinite(d):
        return "d=n/a"
    return f"d={d:.2f}" if abs(d) < 100 else f"d={d:.3g}"


def _show(ax: Axes, image: np.ndarray, color: str, width: float) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    # Upscaling a 28x28 or 64x64 image with smoothing blurs exactly the fine
    # detail a reader is meant to compare; nearest keeps the pixels honest.
    interpolation = "nearest" if max(image.shape[:2]) <= 128 else "antialiased"
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
              interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def plot_neighbor_grid(query_images: np.ndarray, query_names: list[str],
                       neighbor_images: np.ndarray, neighbor_names: list[list[str]],
                       distances: np.ndarray, out: Path, title: str) -> Path:
    """One row per query: the query, then its K nearest neighbours.

    Neighbours of the query's class are framed green, others red; each is
    labelled with its class and distance. Images are uint8 ``(Q, H, W, 3)``
    (queries) and ``(Q, K, H, W, 3)`` (neighbours); a single grey channel
    (``(..., H, W)`` or ``(..., H, W, 1)``) is accepted too. Returns ``out``.
    """
    query_images = np.asarray(query_images)
    neighbor_images = np.asarray(neighbor_images)
    distances = np.asarray(distances, dtype=float)
    q = len(query_names)
    if query_images.shape[0] != q or neighbor_images.shape[0] != q or len(neighbor_names) != q:
        raise ValueError(
            f"query count mismatch: {query_images.shape[0]} query images, {q} query names, "
            f"{neighbor_images.shape[0]} neighbour rows, {len(neighbor_names)} name rows")
    k = neighbor_images.shape[1] if neighbor_images.ndim >= 2 else 0
    if distances.shape != (q, k) or any(len(row) != k for row in neighbor_names):
        raise ValueError(
            f"expected {q}x{k} neighbour names and distances, got distances "
            f"{distances.shape} and name rows of lengths {[len(r) for r in neighbor_names]}")

    cell = 1.45
    # A thin empty column sets the query apart from its neighbours.
    width_ratios = [1.0, 0.12] + [1.0] * k
    fig = _new_figure(cell * (sum(width_ratios)) + 0.3, (cell + 0.45) * max(q, 1) + 0.7)
    fig.suptitle(f"{title}\ngreen frame: same class as query · red frame: other class",
                 fontsize=11)
    if q == 0:
        _no_data(fig.add_subplot(), "no queries")
        return _save(fig, out)
    grid = GridSpec(q, k + 2, figure=fig, width_ratios=width_ratios)
    for i in range(q):
        query_class = str(query_names[i])
        matches = sum(str(n) == query_class for n in neighbor_names[i])
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, query_images[i], QUERY_FRAME_COLOR, 4.0)
        # "query: " eats into the ~22 bold characters that fit across a cell.
        ax.set_title(f"query: {_short(query_class, 15)}\n"
                     f"{matches}/{k} same class",
                     fontsize=8, fontweight="bold")
        for j in range(k):
            name = str(neighbor_names[i][j])
            color = SAME_CLASS_COLOR if name == query_class else OTHER_CLASS_COLOR
            ax = fig.add_subplot(grid[i, j + 2])
            _show(ax, neighbor_images[i, j], color, 3.0)
            ax.set_title(f"{_short(name)}\n{_fmt_distance(distances[i, j])}",
                         fontsize=8, color=color)
    return _save(fig, out)


def plot_compare(curves: Mapping[str, pd.DataFrame], out: Path,
                 metric: str = "precision_at_30_val") -> Path:
    """One line per experiment of ``metric`` by epoch. Returns ``out``.

    An experiment whose table lacks ``metric`` keeps its legend entry, marked
    "(no data)", so a missing run is visible rather than silently absent.
    """
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    label = metric_label(metric)
    ax.set_title(f"{label} by epoch")
    if not curves:
        _no_data(ax, "no experiments")
        return _save(fig, out)
    for name, table in curves.items():
        _require(table, ["epoch"], f"metrics table of {name!r}")
        if metric not in table.columns or table[metric].isna().all():
            ax.plot([], [], marker="o", label=f"{name} (no data)")
            continue
        table = table.sort_values("epoch", kind="stable")
        ax.plot(table["epoch"].to_numpy(dtype=float), _finite(table[metric]),
                marker="o", linewidth=2, label=str(name))
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, out)
