"""Curve figures: the training loss, precision@k by epoch, and experiments compared."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.course import COURSE_K
from pipeline.reporting.figure_canvas import finite, new_figure, no_data, require_columns, save
from pipeline.reporting.metric_columns import metric_label

__all__ = ["plot_accuracy_by_epoch", "plot_compare", "plot_loss_by_epoch", "step_positions"]


def step_positions(log: pd.DataFrame) -> np.ndarray:
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
    require_columns(step_log, ["epoch", "step", "loss", "active_fraction"], "step log")
    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    ax.set_title("Triplet loss during training")
    if step_log.empty:
        no_data(ax, "no training steps logged")
        return save(fig, out)

    log = step_log.sort_values(["epoch", "step"], kind="stable").reset_index(drop=True)
    x = step_positions(log)
    loss = finite(log["loss"])
    active = finite(log["active_fraction"])
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
    return save(fig, out)


def plot_accuracy_by_epoch(metrics: pd.DataFrame, out: Path, baseline: float | None = None,
                           *, k: int = COURSE_K) -> Path:
    """Validation and training precision@k by epoch, raw-pixel baseline dotted.

    ``metrics`` has one row per epoch (epoch 0 is the untrained network) with
    ``precision_at_<k>_val`` and/or ``precision_at_<k>_train``; ``baseline`` is
    the raw-pixel validation precision@k. Returns ``out``.
    """
    require_columns(metrics, ["epoch"], "metrics table")
    fig = new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    ax.set_title(f"Precision@{k} by epoch")
    series = [
        (precision_key(k, "val"), "validation", "tab:blue", "-"),
        (precision_key(k, "train"), "training", "tab:green", "--"),
    ]
    present = [s for s in series if s[0] in metrics.columns]
    if metrics.empty or not present:
        no_data(ax, f"no precision@{k} values")
        return save(fig, out)

    table = metrics.sort_values("epoch", kind="stable")
    epochs = table["epoch"].to_numpy(dtype=float)
    for column, label, color, style in present:
        ax.plot(epochs, finite(table[column]), color=color, linestyle=style,
                marker="o", linewidth=2, label=label)
    if baseline is not None and np.isfinite(baseline):
        ax.axhline(baseline, color="0.35", linestyle=":", linewidth=1.8,
                   label=f"raw-pixel kNN ({baseline:.3f})")
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel(f"precision@{k}")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        # A single point would otherwise sit on an axis spanning -0.05..0.05.
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return save(fig, out)


def plot_compare(curves: Mapping[str, pd.DataFrame], out: Path, *, k: int = COURSE_K,
                 metric: str | None = None) -> Path:
    """One line per experiment of ``metric`` by epoch. Returns ``out``.

    ``metric`` defaults to validation precision@k. An experiment whose table
    lacks it keeps its legend entry, marked "(no data)", so a missing run is
    visible rather than silently absent.
    """
    metric = metric or precision_key(k, "val")
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    label = metric_label(metric)
    ax.set_title(f"{label} by epoch")
    if not curves:
        no_data(ax, "no experiments")
        return save(fig, out)
    for name, table in curves.items():
        require_columns(table, ["epoch"], f"metrics table of {name!r}")
        if metric not in table.columns or table[metric].isna().all():
            ax.plot([], [], marker="o", label=f"{name} (no data)")
            continue
        table = table.sort_values("epoch", kind="stable")
        ax.plot(table["epoch"].to_numpy(dtype=float), finite(table[metric]),
                marker="o", linewidth=2, label=str(name))
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return save(fig, out)
