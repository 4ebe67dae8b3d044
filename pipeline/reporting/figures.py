"""Every figure of a report, drawn as a PNG, and the caption each one gets.

Curves (the training loss, precision@k by epoch, experiments compared), image
grids (validation queries beside their nearest or farthest training images,
framed by whether each shares the query's class) and the class-confusion
heatmap.

Figures are standalone :class:`matplotlib.figure.Figure` objects wired to the
Agg canvas instead of going through ``pyplot``: that needs no display, never
changes the process-wide backend (a notebook importing this package keeps its
own), and leaves no figure registered in pyplot's global list, so nothing leaks
when a Luigi worker draws hundreds of figures. Files are written through
:func:`pipeline.storage.atomic_path`, so a failure leaves nothing at ``out``.

Callers name their figures with the caption keys below
(``write_report(figures={LOSS: ...})``); a key not listed here is captioned with
the key itself, so an unexpected figure is still shown, under its own name,
rather than under a guessed description.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.ticker import MaxNLocator

from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.tables import COURSE_K, metric_label
from pipeline.storage import atomic_path

__all__ = ["ACCURACY", "COMPARISON", "CONFUSION", "CONFUSION_CMAP", "CROSS_SPLIT_DUPLICATES", "DPI",
           "FARTHEST_NEIGHBORS", "LABEL_EVERY_TICK", "LABEL_QUALITY", "LOSS", "NEAREST_NEIGHBORS", "OTHER_CLASS_COLOR",
           "QUERY_FRAME_COLOR", "SAME_CLASS_COLOR", "SUSPECT_LABELS", "WORST_QUERIES", "caption", "confusion_figsize",
           "finite", "new_figure", "no_data", "plot_accuracy_by_epoch", "plot_compare", "plot_confusion",
           "plot_label_quality", "plot_loss_by_epoch", "plot_neighbor_grid", "require_columns", "save", "short_label",
           "step_positions"]

# ---------------------------------------------------------------------------- captions

LOSS = "loss"
ACCURACY = "accuracy"
NEAREST_NEIGHBORS = "nearest neighbors"
FARTHEST_NEIGHBORS = "farthest neighbors"
COMPARISON = "comparison"
WORST_QUERIES = "worst queries"
CONFUSION = "class confusion"
SUSPECT_LABELS = "suspect labels"
CROSS_SPLIT_DUPLICATES = "cross-split duplicates"
LABEL_QUALITY = "label quality"
EMBEDDING_MAP = "embedding map"

_NEIGHBORS = ("{which} training images to sample validation queries (one query per class), with their "
              "Euclidean distance; green frame: same class as the query, red: another class.")
# ``{k}`` is the number of neighbours precision is measured at.
_CAPTIONS = {
    LOSS: ("Triplet loss: mean per epoch (bold), per step (faint) and the share of "
           "triplets with non-zero loss (dashed, right axis). Where the trained loss averages only "
           "those triplets (reduce = active) it stays near the margin, and a green line adds the "
           "mean over all triplets: the one that falls."),
    ACCURACY: "Precision@{k} on validation and training images by epoch; dotted: raw-pixel kNN.",
    NEAREST_NEIGHBORS: _NEIGHBORS.replace("{which}", "Nearest"),
    FARTHEST_NEIGHBORS: _NEIGHBORS.replace("{which}", "Farthest"),
    COMPARISON: "Validation precision@{k} by epoch for each experiment.",
    WORST_QUERIES: ("The validation queries with the lowest precision@{k} (ties by image id), each beside its "
                    "nearest training images; green frame: same class as the query, red: another class."),
    CONFUSION: ("Share of each validation class's {k} nearest training images (row) that belong to each class "
                "(column), on a square-root colour scale; the diagonal is the class's precision@{k}, dark cells "
                "off it are classes taken for one another."),
    SUSPECT_LABELS: ("The training images whose labels the audit trusts least, each titled with its given label, "
                     "the label its neighbours suggest and its label quality, beside its nearest training images "
                     "with their given labels; green frame: same given label, red: another. A suspect may be "
                     "mislabelled, ambiguous or unusual: look before acting on it."),
    CROSS_SPLIT_DUPLICATES: ("Validation images (left) that duplicate a training image (right), exactly (distance "
                             "0) or nearly (embedding distance); each is a query whose answer the training set "
                             "holds: leakage."),
    EMBEDDING_MAP: ("The validation embeddings of a few epochs on their first two principal components (PCA, "
                    "fitted per epoch), one colour per class; black rings: the validation queries with the "
                    "lowest precision@{k} at that epoch (at most 20, one in 20). Classes apart here are apart in "
                    "the embedding; classes that overlap here may still be apart in the other dimensions."),
    LABEL_QUALITY: ("Label quality of every training image (the share of its audit neighbours' votes for its given "
                    "label, pooled over epochs), split by whether the audit flags it; with flipped labels, also "
                    "by whether it was flipped."),
}


def caption(key: str, k: int) -> str:
    """Caption of figure ``key`` in a report measuring precision at ``k`` neighbours."""
    template = _CAPTIONS.get(key)
    if template is None:
        return key.replace("_", " ").capitalize()
    return template.format(k=k)


# ---------------------------------------------------------------------------- the canvas

DPI = 110


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (``layout=None``: the
    caller places the axes)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Write ``fig`` as a PNG to ``out`` atomically. Returns ``out``."""
    out = Path(out)
    # No fig.clear() after: it rebuilt every axis's ticks only to discard them (a third of
    # an image grid's time); the figure's reference cycles go at the next garbage collection.
    with atomic_path(out) as tmp:
        # The temporary name has no .png suffix, so the format must be explicit.
        fig.savefig(tmp, format="png", dpi=DPI)
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


# ---------------------------------------------------------------------------- curves


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
    ``loss`` and ``active_fraction`` (``collapsed`` is marked when present). When
    ``loss_all`` (the mean over every triplet) is present and differs from ``loss``
    (reduce = active), it is drawn too: it is the loss line that falls with training.
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

    # Under reduce = active the trained loss averages only the triplets still inside the
    # margin, so it stays near the margin all run long; the mean over every triplet
    # (loss_all, logged since it exists) is the line that falls as the network learns.
    everything = finite(log["loss_all"]) if "loss_all" in log.columns else None
    if everything is not None and np.isfinite(everything).any() and not np.allclose(
            everything, loss, rtol=1e-6, equal_nan=True):
        per_epoch = pd.Series(everything).groupby(log["epoch"].to_numpy(), sort=True).mean()
        ax.plot(x, everything, color="tab:green", alpha=0.25, linewidth=0.8)
        ax.plot(per_epoch.index, per_epoch.to_numpy(), color="tab:green", linewidth=2.5, marker="s",
                label="mean over all triplets")
        trained = "mean over active triplets (trained)"
    else:
        trained = "mean loss per epoch"
    ax.plot(x, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss per step")
    ax.plot(means.index, means["loss"], color="tab:blue", linewidth=2.5, marker="o", label=trained)
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
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=9,
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


# ---------------------------------------------------------------------------- image grids

SAME_CLASS_COLOR = "#1a9850"
OTHER_CLASS_COLOR = "#d73027"
QUERY_FRAME_COLOR = "#111111"
# Longer class names (Tiny ImageNet words such as "Egyptian cat, ...") would
# spill into the neighbouring cell at the grid's cell width.
MAX_LABEL_CHARS = 18


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis, to fit a figure's cell or tick."""
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


def _check_shapes(query_images: np.ndarray, query_names: list[str], neighbor_images: np.ndarray,
                  neighbor_names: list[list[str]], distances: np.ndarray | None,
                  query_notes: Sequence[str] | None) -> int:
    """Raise ``ValueError`` unless the inputs describe the same Q queries x K neighbours; return K."""
    q = len(query_names)
    notes = q if query_notes is None else len(query_notes)
    if query_images.shape[0] != q or neighbor_images.shape[0] != q or len(neighbor_names) != q or notes != q:
        raise ValueError(
            f"query count mismatch: {query_images.shape[0]} query images, {q} query names, "
            f"{neighbor_images.shape[0]} neighbour rows, {len(neighbor_names)} name rows, {notes} notes")
    k = neighbor_images.shape[1] if neighbor_images.ndim >= 2 else 0
    bad_distances = distances is not None and distances.shape != (q, k)
    if bad_distances or any(len(row) != k for row in neighbor_names):
        raise ValueError(
            f"expected {q}x{k} neighbour names and distances, got distances "
            f"{None if distances is None else distances.shape} and name rows of lengths "
            f"{[len(r) for r in neighbor_names]}")
    return k


def plot_neighbor_grid(query_images: np.ndarray, query_names: list[str],
                       neighbor_images: np.ndarray, neighbor_names: list[list[str]],
                       distances: np.ndarray | None, out: Path, title: str,
                       query_notes: Sequence[str] | None = None, query_role: str = "query") -> Path:
    """One row per query: the query, then its K nearest neighbours.

    Neighbours of the query's class are framed green, others red; each is
    labelled with its class and distance (class only when ``distances`` is
    None). Each query is titled with its class and ``query_notes[i]``, by
    default how many of the K share its class, after ``query_role``. Images are uint8 ``(Q, H, W, 3)``
    (queries) and ``(Q, K, H, W, 3)`` (neighbours); a single grey channel
    (``(..., H, W)`` or ``(..., H, W, 1)``) is accepted too. Returns ``out``.
    """
    query_images = np.asarray(query_images)
    neighbor_images = np.asarray(neighbor_images)
    distances = None if distances is None else np.asarray(distances, dtype=float)
    k = _check_shapes(query_images, query_names, neighbor_images, neighbor_names, distances, query_notes)
    q = len(query_names)

    cell, title_room, heading = 1.45, 0.45, 0.7  # inches: an image, the two lines above it, the suptitle
    # A thin empty column sets the query apart from its neighbours.
    width_ratios = [1.0, 0.12] + [1.0] * k
    width, height = cell * (sum(width_ratios)) + 0.3, (cell + title_room) * max(q, 1) + heading
    # Every cell has the same size, so the grid is placed here: a layout engine measured
    # every title of every cell and took a third of the figure's time.
    suptitle = f"{title}\ngreen frame: same class as query · red frame: other class"
    if q == 0:
        fig = new_figure(width, height)
        fig.suptitle(suptitle, fontsize=11)
        no_data(fig.add_subplot(), "no queries")
        return save(fig, out)
    fig = new_figure(width, height, layout=None)
    # The title is one line (callers' titles have no line break) over the colour key: 0.55 in,
    # the rest of ``heading`` is slack between it and the first row's titles.
    fig.suptitle(suptitle, fontsize=11, y=1 - 0.08 / height, va="top")
    margin_in, top_in = 0.08, heading - 0.15 + title_room
    image_in = (height - top_in - margin_in - (q - 1) * title_room) / q  # each row's image height
    grid = GridSpec(q, k + 2, figure=fig, width_ratios=width_ratios, left=margin_in / width,
                    right=1 - margin_in / width, bottom=margin_in / height, top=1 - top_in / height,
                    hspace=title_room / image_in, wspace=0.1)
    for i in range(q):
        query_class = str(query_names[i])
        matches = sum(str(n) == query_class for n in neighbor_names[i])
        note = f"{matches}/{k} same class" if query_notes is None else str(query_notes[i])
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, query_images[i], QUERY_FRAME_COLOR, 4.0)
        # "query: " eats into the ~22 bold characters that fit across a cell.
        ax.set_title(f"{query_role}: {short_label(query_class, 20 - len(query_role))}\n{note}", fontsize=8,
                     fontweight="bold")
        for j in range(k):
            name = str(neighbor_names[i][j])
            color = SAME_CLASS_COLOR if name == query_class else OTHER_CLASS_COLOR
            ax = fig.add_subplot(grid[i, j + 2])
            _show(ax, neighbor_images[i, j], color, 3.0)
            label = short_label(name)
            if distances is not None:
                label += f"\n{_fmt_distance(distances[i, j])}"
            ax.set_title(label, fontsize=8, color=color)
    return save(fig, out)


# ---------------------------------------------------------------------------- the confusion heatmap

CONFUSION_CMAP = "Blues"
# Up to this many classes every row and column is named; beyond, about this many ticks are.
LABEL_EVERY_TICK = 40
# Up to this many classes each cell also prints its share.
_ANNOTATE = 12


def confusion_figsize(n: int) -> tuple[float, float]:
    """Width and height in inches for ``n`` classes: room for the names (or the
    sampled ticks) left and below, and the colour bar right."""
    side = min(max(0.35 * n, 4.5), 10.0)
    return side + 2.6, side + 2.2


def _ticks(n: int) -> np.ndarray:
    """Positions to label: all of them for a few classes, an evenly spaced sample for many."""
    if n <= LABEL_EVERY_TICK:
        return np.arange(n)
    return np.arange(0, n, math.ceil(n / 20))


def plot_confusion(shares: np.ndarray, class_names: Sequence[str], out: Path, title: str) -> Path:
    """Draw ``shares`` (``(C, C)``, rows = query class, columns = neighbour class,
    rows summing to 1; NaN for a class without queries) with ``class_names`` on
    both axes. Returns ``out``.

    Each row is the share of a validation class's queries' k nearest training
    images that belong to each class: the diagonal is the class's precision@k, a
    dark cell off it marks two classes the embedding takes for one another.
    Shares are drawn on a square-root colour scale, so a 5 % confusion is
    visible next to a 90 % diagonal.
    """
    shares = np.asarray(shares, dtype=float)
    n = len(class_names)
    if shares.shape != (n, n):
        raise ValueError(f"expected a {n}x{n} matrix of shares for {n} class names, got {shares.shape}")
    fig = new_figure(*confusion_figsize(n))
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    if n == 0:
        no_data(ax, "no validation queries")
        return save(fig, out)
    image = ax.imshow(shares, cmap=CONFUSION_CMAP, norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                      interpolation="nearest", aspect="equal")
    ticks = _ticks(n)
    size = 8 if n <= 20 else 6
    names = [short_label(class_names[i]) for i in ticks]
    ax.set_xticks(ticks, names, rotation=90, fontsize=size)
    ax.set_yticks(ticks, names, fontsize=size)
    every = "" if len(ticks) == n else f" (every {ticks[1] - ticks[0]}th named)"
    ax.set_xlabel(f"neighbour class (training){every}")
    ax.set_ylabel(f"query class (validation){every}")
    if n <= _ANNOTATE:
        for (row, col), value in np.ndenumerate(shares):
            if np.isfinite(value) and value >= 0.005:  # printing "0.00" everywhere would hide the errors
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.4 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row's neighbours")
    return save(fig, out)


# ---------------------------------------------------------------------------- the label audit


def plot_label_quality(images: pd.DataFrame, out: Path, title: str) -> Path:
    """Histograms of the audit's label ``quality`` (0..1): suspects against the rest and,
    when ``images`` has a ``flipped`` column (labels flipped for an experiment), flipped
    labels against kept ones. Returns ``out``."""
    require_columns(images, ["quality", "suspect"], "audit images")
    splits = [("suspect", "flagged as suspect", "not flagged")]
    if "flipped" in images.columns:
        splits.append(("flipped", "flipped label", "label kept"))
    fig = new_figure(5.0 * len(splits), 3.6)
    fig.suptitle(title, fontsize=11)
    bins = np.linspace(0.0, 1.0, 41)
    quality = finite(images["quality"])
    for i, (column, yes, no) in enumerate(splits):
        ax = fig.add_subplot(1, len(splits), i + 1)
        flag = images[column].to_numpy(dtype=bool)
        ax.hist([quality[~flag], quality[flag]], bins=bins, stacked=True, color=["tab:blue", "tab:red"],
                label=[f"{no} ({int((~flag).sum())})", f"{yes} ({int(flag.sum())})"])
        ax.set_xlabel("label quality (share of neighbour votes for the given label)")
        ax.set_ylabel("training images")
        ax.set_yscale("log")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, alpha=0.3)
    return save(fig, out)


def plot_embedding_maps(maps: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]], class_names: Mapping[int, str],
                        out: Path) -> Path:
    """Scatter plots side by side, one per ``(epoch, xy, labels, marked)`` of ``maps``: the
    2-D points coloured by label, the rows ``marked`` (a boolean mask) ringed in black; a class
    legend when there are at most 20 classes. Returns ``out``."""
    fig = new_figure(3.6 * max(len(maps), 1), 4.1 if len(class_names) <= 20 else 3.6)
    labels = sorted(class_names)
    cmap = plt_colormap("tab10" if len(labels) <= 10 else "tab20" if len(labels) <= 20 else "hsv")
    colour = {label: cmap(i / max(len(labels) - 1, 1) if len(labels) > 20 else i) for i, label in enumerate(labels)}
    for i, (epoch, xy, point_labels, marked) in enumerate(maps):
        ax = fig.add_subplot(1, len(maps), i + 1)
        size = float(np.clip(3000.0 / max(len(xy), 1), 3.0, 30.0))  # dots shrink as they crowd
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=[colour[int(v)] for v in point_labels], alpha=0.6, linewidths=0,
                   rasterized=True)
        if marked.any():  # a black ring around the point keeps its class colour visible
            ax.scatter(xy[marked, 0], xy[marked, 1], s=size * 4 + 20, facecolors="none", edgecolors="black",
                       linewidths=1.0)
        ax.set_title(f"epoch {epoch}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if maps and len(labels) <= 20:
        handles = [fig.axes[0].scatter([], [], s=20, color=colour[label], label=short_label(class_names[label]))
                   for label in labels]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(labels), 10), fontsize=7,
                   frameon=False)
    return save(fig, out)


def plt_colormap(name: str):
    """A matplotlib colormap by name (without pyplot's global state)."""
    from matplotlib import colormaps

    return colormaps[name]
