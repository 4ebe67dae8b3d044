"""Figures from synthetic inputs: what each draws (captured just before saving), and the PNG it writes.

The builders here (``step_log``, ``metrics``, ``stage_times``, ``neighbors``) are
shared with ``tests/test_report_pages.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from PIL import Image

from pipeline.reporting import (
    figures,
    plot_accuracy_by_epoch,
    plot_compare,
    plot_loss_by_epoch,
    plot_neighbor_grid,
)
from pipeline.reporting.figures import OTHER_CLASS_COLOR, QUERY_FRAME_COLOR, SAME_CLASS_COLOR

EVIL = "<script>alert(1)</script>"


def step_log(epochs: int = 3, steps: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        for s in range(steps):
            rows.append(dict(epoch=e, step=s, loss=1.0 / e + rng.normal(0, 0.05),
                             active_fraction=0.8 / e, lr=1e-3, seconds=0.1,
                             mean_distance=1.0, collapsed=(e == 2 and s == 3)))
    return pd.DataFrame(rows)


def metrics(epochs: int = 3, offset: float = 0.0, k: int = 30) -> pd.DataFrame:
    """Epochs 0..``epochs``; precision@k val rises 0.3, 0.4, ...; mAP@R is missing at epoch 1."""
    e = np.arange(epochs + 1)
    v = 0.3 + 0.1 * e + offset
    columns = {"epoch": e, f"precision_at_{k}_val": v, f"precision_at_{k}_train": v + 0.02}
    for key, value in {"precision_at_1_val": v + 0.05, "precision_at_10_val": v + 0.01, "r_precision_val": v - 0.05,
                       "map_at_r_val": v - 0.1, "triplet_precision_val": 0.5 + 0.1 * e}.items():
        columns.setdefault(key, value)  # k may be 1 or 10: precision@k keeps its own values
    df = pd.DataFrame(columns)
    if epochs >= 1:
        df.loc[1, "map_at_r_val"] = np.nan
    return df


def stage_times(scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"stage": ["IndexDataset", "TrainEpoch(1)", "TrainEpoch(2)",
                                   "TrainEpoch(3)", "Evaluate"],
                         "seconds": [5.0 * scale, 100.0 * scale, 110.0 * scale,
                                     120.0 * scale, 20.0 * scale]})


def neighbors(q: int = 3, k: int = 4, size: int = 28, seed: int = 0) -> dict:
    """Query i is of class ``class<i>``; its even-ranked neighbours share it, odd ones are "other"."""
    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(q)]
    return dict(
        query_images=rng.integers(0, 256, (q, size, size, 3), dtype=np.uint8),
        query_names=names,
        neighbor_images=rng.integers(0, 256, (q, k, size, size, 3), dtype=np.uint8),
        neighbor_names=[[names[i] if j % 2 == 0 else "other" for j in range(k)]
                        for i in range(q)],
        distances=np.sort(rng.uniform(0, 2, (q, k)), axis=1),
    )


def assert_png(path: Path, figsize: tuple[float, float]) -> np.ndarray:
    """``path`` is a PNG of ``figsize`` inches at the figures' DPI with visible content; returns its pixels."""
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        size = im.size
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    expected = [side * figures.DPI for side in figsize]
    assert all(abs(got - want) <= 1 for got, want in zip(size, expected)), (size, expected)
    assert pixels.std() > 10, "the PNG is (nearly) one colour"
    return pixels


def no_temp_files(folder: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in folder.iterdir())


# ------------------------------------------------------------------ capturing what a figure drew


@dataclass
class Panel:
    """One axes of a drawn figure, reduced to plain data."""

    title: str
    ylabel: str
    cell: tuple[int, int]  # (row, column) in the figure's grid
    lines: dict[str, tuple[np.ndarray, np.ndarray]]  # label -> (x, y)
    texts: list[str]
    frame: str  # colour of the left spine
    images: list[np.ndarray]
    cmaps: list[str]
    xlabel: str
    xticks: list[str]
    yticks: list[str]


@dataclass
class Drawn:
    suptitle: str
    panels: list[Panel]


def _panel(ax) -> Panel:
    spec = ax.get_subplotspec()
    return Panel(
        title=ax.get_title(), ylabel=ax.get_ylabel(),
        cell=(spec.rowspan.start, spec.colspan.start) if spec else (0, 0),
        lines={line.get_label(): (np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float))
               for line in ax.get_lines()},
        texts=[t.get_text() for t in ax.texts],
        frame=to_hex(ax.spines["left"].get_edgecolor()),
        images=[np.asarray(im.get_array()) for im in ax.get_images()],
        cmaps=[im.get_cmap().name for im in ax.get_images()],
        xlabel=ax.get_xlabel(),
        xticks=[t.get_text() for t in ax.get_xticklabels()],
        yticks=[t.get_text() for t in ax.get_yticklabels()],
    )


def spy_on_saves(monkeypatch, modules) -> list[Drawn]:
    """Every figure the ``modules`` save from now on, as it stood just before saving (saving clears it)."""
    captured: list[Drawn] = []
    for module in modules:
        real = module.save

        def spy(fig: Figure, out: Path, real=real) -> Path:
            captured.append(Drawn(fig.get_suptitle(), [_panel(ax) for ax in fig.axes]))
            return real(fig, out)

        monkeypatch.setattr(module, "save", spy)
    return captured


@pytest.fixture
def drawn(monkeypatch) -> list[Drawn]:
    """Every curve and image grid drawn during the test."""
    return spy_on_saves(monkeypatch, (figures,))


# ------------------------------------------------------------------------------------- curves


def test_loss_figure_draws_every_step_and_each_epoch_mean(tmp_path, drawn):
    log = step_log()
    path = plot_loss_by_epoch(log, tmp_path / "loss.png")
    assert_png(path, (8.0, 4.5))
    assert no_temp_files(tmp_path)
    (fig,) = drawn
    lines = {label: xy for p in fig.panels for label, xy in p.lines.items()}
    assert len(lines["loss per step"][0]) == len(log) == 60
    x, y = lines["mean loss per epoch"]
    assert x.tolist() == [1, 2, 3]
    np.testing.assert_allclose(y, log.groupby("epoch")["loss"].mean())
    # The collapsed step (epoch 2, step 3 of 0..19) sits 4/20 into epoch 2.
    cx, cy = lines["embedding collapsed"]
    assert cx.tolist() == pytest.approx([1.2]) and cy[0] == pytest.approx(log.loss[23])
    ax2, = [p for p in fig.panels if "active triplet fraction (right axis)" in p.lines]
    assert np.allclose(ax2.lines["active triplet fraction (right axis)"][1], np.repeat([0.8, 0.4, 0.8 / 3], 20))


def test_under_reduce_active_the_loss_figure_also_draws_the_loss_over_all_triplets(tmp_path, drawn):
    """The trained loss (active triplets only) stays flat; the mean over all triplets is what falls."""
    log = step_log()
    log["loss"] = 1.0
    log["loss_all"] = log["loss"] * log["active_fraction"]
    plot_loss_by_epoch(log, tmp_path / "loss.png")
    (fig,) = drawn
    lines = {label: xy for p in fig.panels for label, xy in p.lines.items()}
    x, y = lines["mean over all triplets"]
    assert x.tolist() == [1, 2, 3]
    np.testing.assert_allclose(y, [0.8, 0.4, 0.8 / 3])
    assert lines["mean over active triplets (trained)"][1].tolist() == [1.0, 1.0, 1.0]
    # Under reduce = mean the two are the same quantity: one line, as before.
    log["loss_all"] = log["loss"]
    plot_loss_by_epoch(log, tmp_path / "same.png")
    assert "mean over all triplets" not in {label for p in drawn[1].panels for label in p.lines}


def test_step_positions_end_each_epoch_at_its_number():
    log = step_log(epochs=2, steps=4)
    x = figures.step_positions(log)
    assert x.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])


def test_accuracy_figure_plots_each_epoch_and_the_baseline(tmp_path, drawn):
    m = metrics()
    assert_png(plot_accuracy_by_epoch(m, tmp_path / "accuracy.png", baseline=0.35), (7.0, 4.5))
    (panel,) = drawn[0].panels
    assert panel.title == "Precision@30 by epoch" and panel.ylabel == "precision@30"
    x, y = panel.lines["validation"]
    assert x.tolist() == [0, 1, 2, 3] and y.tolist() == pytest.approx(m["precision_at_30_val"].tolist())
    assert panel.lines["training"][1].tolist() == pytest.approx(m["precision_at_30_train"].tolist())
    assert panel.lines["raw-pixel kNN (0.350)"][1].tolist() == [0.35, 0.35]


def test_accuracy_figure_follows_k(tmp_path, drawn):
    m = metrics(k=10).assign(precision_at_30_val=0.99)  # present, but not the metric asked for
    plot_accuracy_by_epoch(m, tmp_path / "a.png", k=10)
    (panel,) = drawn[0].panels
    assert panel.title == "Precision@10 by epoch" and panel.ylabel == "precision@10"
    assert panel.lines["validation"][1].tolist() == pytest.approx(m["precision_at_10_val"].tolist())


def test_compare_figure_has_one_line_per_experiment(tmp_path, drawn):
    curves_in = {"a": metrics(), "b": metrics(epochs=2, offset=0.05), "no metric": pd.DataFrame({"epoch": [0]})}
    assert_png(plot_compare(curves_in, tmp_path / "c.png"), (7.5, 4.5))
    (panel,) = drawn[0].panels
    assert panel.title == "precision@30 (val) by epoch"
    assert list(panel.lines) == ["a", "b", "no metric (no data)"]
    assert panel.lines["a"][0].tolist() == [0, 1, 2, 3]
    assert panel.lines["b"][1].tolist() == pytest.approx([0.35, 0.45, 0.55])
    assert len(panel.lines["no metric (no data)"][0]) == 0


def test_compare_figure_follows_k(tmp_path, drawn):
    plot_compare({"a": metrics(k=10)}, tmp_path / "c.png", k=10)
    (panel,) = drawn[0].panels
    assert panel.title == "precision@10 (val) by epoch" and len(panel.lines["a"][0]) == 4


@pytest.mark.parametrize("draw, message", [
    (lambda out: plot_loss_by_epoch(pd.DataFrame(columns=["epoch", "step", "loss", "active_fraction"]), out),
     "no training steps logged"),
    (lambda out: plot_accuracy_by_epoch(pd.DataFrame({"epoch": []}), out), "no precision@30 values"),
    (lambda out: plot_compare({}, out), "no experiments"),
], ids=["loss", "accuracy", "compare"])
def test_empty_inputs_draw_a_message(tmp_path, drawn, draw, message):
    draw(tmp_path / "empty.png")
    with Image.open(tmp_path / "empty.png") as im:
        assert np.asarray(im.convert("L")).std() > 1  # the message is drawn, not a blank canvas
    (panel,) = drawn[0].panels
    assert panel.texts == [message] and not panel.lines


def test_loss_plot_rejects_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="active_fraction"):
        plot_loss_by_epoch(step_log().drop(columns="active_fraction"), tmp_path / "l.png")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- image grids


def test_neighbor_grid_panels(tmp_path, drawn):
    n = neighbors(q=3, k=4)
    assert_png(plot_neighbor_grid(**n, out=tmp_path / "n.png", title="val " + EVIL),
               (1.45 * 5.12 + 0.3, 1.9 * 3 + 0.7))
    (fig,) = drawn
    assert fig.suptitle.startswith("val " + EVIL)  # matplotlib text, not markup: drawn as is
    # One row per query: the query in column 0, a spacer column 1, neighbours from column 2.
    assert sorted(p.cell for p in fig.panels) == [(r, c) for r in range(3) for c in [0, 2, 3, 4, 5]]
    for p in fig.panels:
        row, col = p.cell
        assert p.images[0].shape == (28, 28, 3)
        if col == 0:
            assert p.frame == QUERY_FRAME_COLOR
            assert p.title == f"query: class{row}\n2/4 same class"
            assert np.array_equal(p.images[0], n["query_images"][row])
        else:
            j = col - 2
            same = j % 2 == 0
            assert p.frame == (SAME_CLASS_COLOR if same else OTHER_CLASS_COLOR)
            assert p.title == f"{f'class{row}' if same else 'other'}\nd={n['distances'][row, j]:.2f}"
            assert np.array_equal(p.images[0], n["neighbor_images"][row, j])


def test_neighbor_grid_scales_with_queries_and_neighbours(tmp_path):
    small = plot_neighbor_grid(**neighbors(q=1, k=2, size=64), out=tmp_path / "s.png", title="t")
    big = plot_neighbor_grid(**neighbors(q=4, k=8, size=64), out=tmp_path / "b.png", title="t")
    assert_png(small, (1.45 * 3.12 + 0.3, 1.9 + 0.7))
    assert_png(big, (1.45 * 9.12 + 0.3, 1.9 * 4 + 0.7))


def test_neighbor_grid_shows_grey_images_in_grey(tmp_path, drawn):
    n = neighbors(q=2, k=3)
    n["query_images"] = n["query_images"][..., :1]
    n["neighbor_images"] = n["neighbor_images"][..., 0]
    pixels = assert_png(plot_neighbor_grid(**n, out=tmp_path / "g.png", title="grey"),
                        (1.45 * 4.12 + 0.3, 1.9 * 2 + 0.7))
    assert len(drawn[0].panels) == 2 * 4
    for p in drawn[0].panels:
        assert p.images[0].shape == (28, 28) and p.cmaps == ["gray"]
    assert np.array_equal(drawn[0].panels[0].images[0], n["query_images"][0, ..., 0])
    # Apart from the coloured frames and titles, the page is grey: R == G == B almost everywhere.
    assert np.mean(np.all(pixels == pixels[..., :1], axis=-1)) > 0.9


def test_neighbor_grid_rejects_mismatched_shapes(tmp_path):
    n = neighbors(q=3, k=4)
    n["distances"] = n["distances"][:, :3]
    with pytest.raises(ValueError, match="distances"):
        plot_neighbor_grid(**n, out=tmp_path / "bad.png", title="t")
    n = neighbors(q=3, k=4)
    n["query_names"] = n["query_names"][:2]
    with pytest.raises(ValueError, match="query count mismatch"):
        plot_neighbor_grid(**n, out=tmp_path / "bad.png", title="t")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- failures


def test_failure_while_saving_leaves_no_file(tmp_path, monkeypatch):
    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")  # a partial write, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    out = tmp_path / "loss.png"
    with pytest.raises(RuntimeError, match="disk full"):
        plot_loss_by_epoch(step_log(), out)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_plotting_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(figures, "step_positions", broken)
    with pytest.raises(RuntimeError, match="boom"):
        plot_loss_by_epoch(step_log(), tmp_path / "loss.png")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the embedding map


def test_the_projection_is_pca_with_fixed_signs():
    from pipeline.reporting.embedding_map import map_epochs, project_2d

    rng = np.random.default_rng(0)
    # Two planted directions of large spread in 16 dimensions, plus small noise.
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0][:, :2]
    coords = rng.normal(size=(500, 2)) * [10.0, 3.0]
    x = coords @ basis.T + rng.normal(scale=0.01, size=(500, 16)) + 5.0
    xy = project_2d(x)
    # The map is the planted coordinates up to each axis's sign...
    for axis in range(2):
        assert abs(np.corrcoef(xy[:, axis], coords[:, axis])[0, 1]) > 0.999
    # ...and that sign comes from the loadings, not from the SVD's whim: the mirrored data
    # keeps the axes, so its map is the mirrored map.
    np.testing.assert_allclose(project_2d(-x), -xy, atol=1e-9)
    np.testing.assert_array_equal(project_2d(x), xy)  # deterministic
    assert project_2d(x[:1]).tolist() == [[0.0, 0.0]]
    assert map_epochs(14) == [0, 1, 7, 14] and map_epochs(1) == [0, 1] and map_epochs(0) == [0]


def test_embedding_maps_draw_one_panel_per_epoch(tmp_path):
    rng = np.random.default_rng(1)
    maps = [(e, rng.normal(size=(60, 2)), np.arange(60) % 3, np.arange(60) < 5) for e in (0, 1, 2)]
    path = figures.plot_embedding_maps(maps, {0: "a", 1: "b", 2: "c"}, tmp_path / "map.png")
    assert_png(path, (3.6 * 3, 4.1))
