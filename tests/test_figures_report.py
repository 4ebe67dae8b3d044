"""Figures and reports from synthetic inputs: valid PNGs, escaped, self-contained HTML."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from pipeline.reporting import figures, report
from pipeline.reporting.figures import (
    metric_label,
    plot_accuracy_by_epoch,
    plot_compare,
    plot_loss_by_epoch,
    plot_neighbor_grid,
)
from pipeline.reporting.report import render_compare, render_report, write_compare, write_report

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


def metrics(epochs: int = 3, offset: float = 0.0) -> pd.DataFrame:
    e = np.arange(epochs + 1)
    v = 0.3 + 0.1 * e + offset
    df = pd.DataFrame(dict(epoch=e, precision_at_30_val=v, precision_at_30_train=v + 0.02,
                           precision_at_1_val=v + 0.05, precision_at_10_val=v + 0.01,
                           r_precision_val=v - 0.05, map_at_r_val=v - 0.1,
                           triplet_precision_val=0.5 + 0.1 * e))
    df.loc[1, "map_at_r_val"] = np.nan
    return df


def stage_times(scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"stage": ["IndexDataset", "TrainEpoch(1)", "TrainEpoch(2)",
                                   "TrainEpoch(3)", "Evaluate"],
                         "seconds": [5.0 * scale, 100.0 * scale, 110.0 * scale,
                                     120.0 * scale, 20.0 * scale]})


def neighbors(q: int = 3, k: int = 4, size: int = 28, seed: int = 0):
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


def assert_png(path: Path, min_side: int = 300) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert min(w, h) >= min_side and max(w, h) <= 6000, (w, h)


def no_temp_files(folder: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in folder.iterdir())


@pytest.fixture(scope="module")
def figure_set(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("figs")
    return {
        "loss": plot_loss_by_epoch(step_log(), out / "loss.png"),
        "accuracy": plot_accuracy_by_epoch(metrics(), out / "accuracy.png", baseline=0.35),
        "neighbors": plot_neighbor_grid(**neighbors(), out=out / "neighbors.png",
                                        title="val " + EVIL),
    }


# ---------------------------------------------------------------------------- figures


def test_figures_are_valid_pngs(figure_set):
    for path in figure_set.values():
        assert_png(path)
    assert no_temp_files(figure_set["loss"].parent)


def test_neighbor_grid_scales_with_queries_and_neighbours(tmp_path):
    small = plot_neighbor_grid(**neighbors(q=1, k=2, size=64), out=tmp_path / "s.png", title="t")
    big = plot_neighbor_grid(**neighbors(q=4, k=8, size=64), out=tmp_path / "b.png", title="t")
    with Image.open(small) as a, Image.open(big) as b:
        assert b.size[0] > 2 * a.size[0] and b.size[1] > 2 * a.size[1]
    assert_png(small, min_side=150)


def test_neighbor_grid_accepts_grey_images(tmp_path):
    n = neighbors(q=2, k=3)
    n["query_images"] = n["query_images"][..., :1]
    n["neighbor_images"] = n["neighbor_images"][..., 0]
    assert_png(plot_neighbor_grid(**n, out=tmp_path / "g.png", title="grey"), min_side=150)


def test_neighbor_grid_rejects_mismatched_shapes(tmp_path):
    n = neighbors(q=3, k=4)
    n["distances"] = n["distances"][:, :3]
    with pytest.raises(ValueError, match="distances"):
        plot_neighbor_grid(**n, out=tmp_path / "bad.png", title="t")
    assert not (tmp_path / "bad.png").exists()


def test_failure_while_saving_leaves_no_file(tmp_path, monkeypatch):
    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")  # a partial write, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    out = tmp_path / "loss.png"
    with pytest.raises(RuntimeError, match="disk full"):
        plot_loss_by_epoch(step_log(), out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_while_plotting_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(figures, "_step_positions", broken)
    out = tmp_path / "loss.png"
    with pytest.raises(RuntimeError):
        plot_loss_by_epoch(step_log(), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_empty_inputs_still_draw(tmp_path):
    empty_log = pd.DataFrame(columns=["epoch", "step", "loss", "active_fraction"])
    assert_png(plot_loss_by_epoch(empty_log, tmp_path / "l.png"))
    assert_png(plot_accuracy_by_epoch(pd.DataFrame({"epoch": []}), tmp_path / "a.png"))
    assert_png(plot_compare({}, tmp_path / "c.png"))


def test_loss_plot_rejects_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="active_fraction"):
        plot_loss_by_epoch(step_log().drop(columns="active_fraction"), tmp_path / "l.png")


def test_step_positions_end_each_epoch_at_its_number():
    log = step_log(epochs=2, steps=4)
    x = figures._step_positions(log)
    assert x.max() == 2 and x.min() > 0
    assert np.all((x[log.epoch == 1] > 0) & (x[log.epoch == 1] <= 1))


def test_compare_plot(tmp_path):
    curves = {"a": metrics(), "b": metrics(offset=0.05), "no metric": pd.DataFrame({"epoch": [0]})}
    assert_png(plot_compare(curves, tmp_path / "c.png"))


def test_metric_labels():
    assert metric_label("precision_at_30_val") == "precision@30 (val)"
    assert metric_label("map_at_r_val") == "mAP@R (val)"
    assert metric_label("something") == "something"


# ----------------------------------------------------------------------------- report


def test_report_html_is_self_contained(figure_set):
    page, md = render_report(
        "exp " + EVIL, metrics(), figure_set, {"precision_at_30_val": 0.35},
        {"train": {"margin": 1.0, "name": EVIL}, "seed": 0}, stage_times(),
        notes=["collapse " + EVIL])
    assert page.count("data:image/png;base64,") == len(figure_set)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    assert page.count("&lt;script&gt;") >= 4  # title, heading, config, note
    for uri in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(uri).startswith(b"\x89PNG")
    # Table values, 3 decimals; the best per column is highlighted.
    for value in ("0.300", "0.600", "0.620", "0.650", "n/a"):
        assert value in page
    assert '<td class="num best">0.600</td>' in page
    assert "0.60: met" in page and "0.350" in page
    assert "355.0" in page  # total seconds


def test_report_markdown(figure_set):
    _, md = render_report("exp " + EVIL, metrics(), figure_set, {"precision_at_30_val": 0.35},
                          {"train": {"margin": 1.0}}, stage_times(), notes=[EVIL])
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "| epoch | precision@30 (val) |" in md
    assert "| 0 (before training) | 0.300 |" in md
    assert "**0.600**" in md
    assert "](loss.png)" in md and "](neighbors.png)" in md
    assert "| **total** | **355.0** |" in md


def test_headline_reports_missed_target():
    low = metrics().assign(precision_at_30_val=[0.2, 0.3, 0.4, 0.5])
    page, md = render_report("low", low, {}, {"precision_at_30_val": 0.45}, {}, stage_times())
    assert "missed by 0.100" in page and "missed by 0.100" in md
    assert "(+0.050)" in md


def test_report_survives_missing_values():
    m = pd.DataFrame({"epoch": [0, 1], "precision_at_30_val": [np.nan, np.nan]})
    page, md = render_report("x", m, {}, {}, {}, pd.DataFrame(columns=["stage", "seconds"]))
    assert "No validation precision@30" in page and "n/a" in md


def test_write_report_copies_outside_figures(tmp_path, figure_set):
    out = tmp_path / "report"
    paths = write_report(out, "exp", metrics(), figure_set, {"precision_at_30_val": 0.35},
                         {"a": {"b": 1}}, stage_times())
    assert paths == {"html": out / "index.html", "markdown": out / "summary.md"}
    assert paths["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    for name in ("loss.png", "accuracy.png", "neighbors.png"):
        assert_png(out / name)
    assert no_temp_files(out)


def test_write_report_missing_figure_writes_nothing(tmp_path):
    out = tmp_path / "report"
    with pytest.raises(FileNotFoundError):
        write_report(out, "exp", metrics(), {"loss": tmp_path / "nope.png"}, {}, {},
                     stage_times())
    assert not (out / "index.html").exists() and not (out / "summary.md").exists()


def test_compare(tmp_path):
    experiments = {"semihard": metrics(), "uniform " + EVIL: metrics(epochs=2, offset=-0.1)}
    times = {"semihard": stage_times(), "uniform " + EVIL: stage_times(0.5)}
    fig = plot_compare(experiments, tmp_path / "figs" / "compare.png")
    page, md = render_compare(experiments, times, fig)
    assert "data:image/png;base64," in page and "<script" not in page
    assert "<script>" not in md and "](compare.png)" in md
    assert "| epoch | semihard | uniform &lt;script&gt;alert(1)&lt;/script&gt; |" in md
    assert "| 3 | 0.600 | n/a |" in md  # the shorter run lacks epoch 3: nothing to beat
    assert "| 2 | **0.500** | 0.400 |" in md
    assert "110.0" in page and "55.0" in page  # mean seconds per TrainEpoch
    paths = write_compare(tmp_path / "cmp", experiments, times, fig)
    assert paths["html"].is_file() and paths["markdown"].is_file()
    assert_png(tmp_path / "cmp" / "compare.png")


def test_report_module_uses_atomic_writes(monkeypatch, tmp_path, figure_set):
    written = []
    real = report.write_text_atomic

    def spy(path, text):
        written.append(Path(path).name)
        real(path, text)

    monkeypatch.setattr(report, "write_text_atomic", spy)
    write_report(tmp_path, "exp", metrics(), figure_set, {}, {}, stage_times())
    assert written == ["index.html", "summary.md"]
