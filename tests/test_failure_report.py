"""The report's failure sections from validation sidecars: the worst queries
(lowest precision@k, ties by image id) as a thumbnail grid and a table, precision
per class worst first, and the class-confusion heatmap at 3 and at 200 classes."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.reporting import (
    ACCURACY,
    CONFUSION,
    LOSS,
    WORST_QUERIES,
    figures,
    plot_accuracy_by_epoch,
    plot_confusion,
    plot_loss_by_epoch,
    plot_neighbor_grid,
    render_report,
)
from pipeline.reporting.experiment_report import failure_report
from pipeline.reporting.figures import (
    CONFUSION_CMAP,
    OTHER_CLASS_COLOR,
    QUERY_FRAME_COLOR,
    SAME_CLASS_COLOR,
    caption,
    confusion_figsize,
    short_label,
)
from pipeline.reporting.inputs import confusion_shares, worst_grid_inputs, worst_queries
from pipeline.storage import write_epoch_tables
from tests.test_figures_report import EVIL, Drawn, assert_png, metrics, spy_on_saves, stage_times, step_log
from tests.test_report_pages import html_rows

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def drawn(monkeypatch) -> list[Drawn]:
    """Every image grid and heatmap drawn during the test."""
    return spy_on_saves(monkeypatch, (figures,))


@pytest.fixture(scope="module")
def figure_set(tmp_path_factory) -> dict[str, Path]:
    """The report's general figures, which stay under "Figures"."""
    out = tmp_path_factory.mktemp("figs")
    return {LOSS: plot_loss_by_epoch(step_log(), out / "loss.png"),
            ACCURACY: plot_accuracy_by_epoch(metrics(), out / "accuracy.png")}


def failure_sidecars(seed: int = 0) -> dict:
    """Validation sidecars of 3 classes (``cat``, ``dog``, EVIL), 4 training images each
    (ids 0-11) and 3 validation queries each (ids 12-20), figure_k = 4, k = 5.

    Each query's neighbours are, nearest first: its class, the next class, its
    class, the class after. Query 18's precision is NaN (as for a lone query).
    """
    rng = np.random.default_rng(seed)
    names = ["cat", "dog", EVIL]
    labels = np.concatenate([np.repeat([0, 1, 2], 4), np.repeat([0, 1, 2], 3)])
    index = pd.DataFrame({"image_id": np.arange(21), "label": labels, "class_name": [names[c] for c in labels]})
    val = labels[12:]
    queries = pd.DataFrame({
        "image_id": np.arange(12, 21), "label": val,
        "precision": [1.0, 0.2, 0.6, 0.2, 0.8, 0.0, np.nan, 0.4, 0.2],
        "neighbors": [np.array([4 * c, 4 * ((c + 1) % 3) + 1, 4 * c + 2, 4 * ((c + 2) % 3) + 3]) for c in val],
    })
    confusion = pd.DataFrame({"query_label": [0, 0, 1, 1, 2, 2], "neighbor_label": [0, 1, 1, 2, 0, 2],
                              "count": [10, 5, 12, 3, 6, 9]})
    per_class = pd.DataFrame({"label": [0, 1, 2], "n_queries": [3, 3, 3], "precision_at_5": [0.6, 0.8, 0.6]})
    store = rng.integers(0, 256, (21, 8, 8, 3), dtype=np.uint8)
    return {"index": index, "queries": queries, "confusion": confusion, "per_class": per_class, "store": store}


def test_worst_queries_are_the_lowest_precision_ties_by_image_id():
    queries = failure_sidecars()["queries"].sample(frac=1.0, random_state=1)  # order must not matter
    assert worst_queries(queries, 4)["image_id"].tolist() == [17, 13, 15, 20]
    # The NaN query (nothing to find) is never among them, even when every other one is.
    assert worst_queries(queries, 20)["image_id"].tolist() == [17, 13, 15, 20, 19, 14, 16, 12]


def test_worst_query_grid(tmp_path, drawn):
    data = failure_sidecars()
    worst = worst_queries(data["queries"], 4)
    inputs = worst_grid_inputs(worst, data["store"], data["index"], k=5)
    assert_png(plot_neighbor_grid(**inputs, out=tmp_path / "w.png", title="worst"),
               (1.45 * 5.12 + 0.3, 1.9 * 4 + 0.7))
    (fig,) = drawn
    assert sorted(p.cell for p in fig.panels) == [(r, c) for r in range(4) for c in [0, 2, 3, 4, 5]]
    names = ["cat", "dog", EVIL]
    for p in fig.panels:
        row, col = p.cell
        query = worst.iloc[row]
        if col == 0:
            assert p.frame == QUERY_FRAME_COLOR
            name = short_label(names[query.label], 15)
            assert p.title == f"query: {name}\np@5 {query.precision:.2f} · #{query.image_id}"
            assert np.array_equal(p.images[0], data["store"][query.image_id])
        else:
            j = col - 2
            neighbor = query.neighbors[j]
            label = data["index"].label[neighbor]
            assert p.frame == (SAME_CLASS_COLOR if j % 2 == 0 else OTHER_CLASS_COLOR)
            assert (label == query.label) == (j % 2 == 0)
            assert p.title == short_label(names[label])  # no distance line: the sidecar has none
            assert np.array_equal(p.images[0], data["store"][neighbor])


def test_confusion_shares_are_row_shares():
    confusion = pd.DataFrame({"query_label": [0, 0, 2, 2], "neighbor_label": [0, 5, 2, 0], "count": [3, 1, 2, 2]})
    labels, shares = confusion_shares(confusion)
    assert labels.tolist() == [0, 2, 5]
    np.testing.assert_allclose(shares[0], [0.75, 0.0, 0.25])
    np.testing.assert_allclose(shares[1], [0.5, 0.5, 0.0])
    assert np.isnan(shares[2]).all()  # class 5 only appears among neighbours: no row to share


def test_confusion_heatmap_draws_the_shares_with_every_class_named(tmp_path, drawn):
    data = failure_sidecars()
    _, shares = confusion_shares(data["confusion"])
    names = ["cat", "dog", EVIL]
    assert_png(plot_confusion(shares, names, tmp_path / "c.png", title="confusion"), confusion_figsize(3))
    heat = drawn[0].panels[0]
    np.testing.assert_allclose(heat.images[0], [[2 / 3, 1 / 3, 0], [0, 0.8, 0.2], [0.4, 0, 0.6]])
    assert heat.cmaps == [CONFUSION_CMAP]
    assert heat.xticks == heat.yticks == ["cat", "dog", EVIL[:17] + "…"]
    assert heat.xlabel == "neighbour class (training)" and heat.ylabel == "query class (validation)"
    assert sorted(heat.texts) == sorted(["0.67", "0.33", "0.80", "0.20", "0.40", "0.60"])  # zeros left blank


def test_confusion_heatmap_of_200_classes_names_a_sample(tmp_path, drawn):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, (200, 200)) + np.diag(np.full(200, 40))
    shares = counts / counts.sum(axis=1, keepdims=True)
    names = [f"n{i:08d} some long class name" for i in range(200)]
    assert_png(plot_confusion(shares, names, tmp_path / "c.png", title="many"), confusion_figsize(200))
    heat = drawn[0].panels[0]
    np.testing.assert_allclose(heat.images[0], shares)
    assert heat.xticks == heat.yticks == [names[i][:17] + "…" for i in range(0, 200, 10)]
    assert heat.xlabel == "neighbour class (training) (every 10th named)" and not heat.texts


def test_confusion_heatmap_rejects_a_matrix_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="3x3"):
        plot_confusion(np.ones((2, 2)), ["a", "b", "c"], tmp_path / "c.png", title="t")
    assert list(tmp_path.iterdir()) == []


def write_sidecars(folder: Path, data: dict) -> Path:
    """The validation sidecars of ``data`` (see ``failure_sidecars``) as epoch 2's files; returns its JSON path."""
    metrics_file = folder / "metrics" / "epoch-002.json"
    write_epoch_tables(metrics_file, {name: data[name] for name in ("queries", "confusion", "per_class")}, 2)
    return metrics_file


@pytest.fixture(scope="module")
def failures(tmp_path_factory) -> tuple[dict[str, Path], object]:
    """The failure figures and tables of ``failure_sidecars`` (k = 5, epoch 2), built from sidecar files."""
    folder = tmp_path_factory.mktemp("failures")
    data = failure_sidecars()
    return failure_report(write_sidecars(folder, data), data["store"], data["index"], folder, k=5, epoch=2)


def test_failure_report_draws_both_figures_from_the_sidecars(failures):
    figures, tables = failures
    assert list(figures) == [WORST_QUERIES, CONFUSION]
    assert [p.name for p in figures.values()] == ["worst_queries.png", "confusion.png"]
    assert all(p.is_file() for p in figures.values())
    assert tables.epoch == 2


def test_report_failure_sections(failures, figure_set):
    figures, tables = failures
    page, md = render_report("exp", metrics(), {**figure_set, **figures}, {}, {}, stage_times(), k=5,
                             failures=tables)
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    start = headings.index("Figures")
    assert headings[start:start + 5] == ["Figures", "Worst queries", "Precision by class", "Class confusion",
                                         "Raw-pixel baseline"]
    # The failure figures sit in their sections, not under "Figures".
    general = page.split("<h2>Figures</h2>", 1)[1].split("<h2>Worst queries</h2>", 1)[0]
    assert re.findall(r'alt="([^"]*)"', general) == [LOSS, ACCURACY]
    worst = page.split("<h2>Worst queries</h2>", 1)[1].split("<h2>Precision by class</h2>", 1)[0]
    assert f'alt="{WORST_QUERIES}"><figcaption>{html.escape(caption(WORST_QUERIES, 5))}</figcaption>' in worst
    confusion = page.split("<h2>Class confusion</h2>", 1)[1].split("<h2>Raw-pixel baseline</h2>", 1)[0]
    assert f'alt="{CONFUSION}"' in confusion and "the diagonal is the class&#x27;s precision@5" in confusion

    # Worst first, ties by image id, the NaN query left out; query 17 (dog) lists dog, EVIL, dog, cat.
    rows = html_rows(page, "Worst queries")
    assert [r[1] for r in rows] == ["17", "13", "15", "20", "19", "14", "16", "12"]
    assert rows[0] == ["1", "17", "dog", "0.000", "2/4", f"{ESCAPED} (1/4)"]
    assert rows[3] == ["4", "20", ESCAPED, "0.200", "2/4", "cat (1/4)"]  # cat and dog once each: the nearer
    # Worst class first (ties by label), each with the class most of its other neighbours come from.
    assert html_rows(page, "Precision by class") == [["cat", "3", "0.600", "dog (33.3 %)"],
                                                     [ESCAPED, "3", "0.600", "cat (40.0 %)"],
                                                     ["dog", "3", "0.800", f"{ESCAPED} (20.0 %)"]]

    assert "<script>" not in md
    assert "## Worst queries" in md and "![worst queries](worst_queries.png)" in md
    assert "| 1 | 17 | dog | 0.000 | 2/4 | &lt;script&gt;alert(1)&lt;/script&gt; (1/4) |" in md
    assert "| cat | 3 | 0.600 | dog (33.3 %) |" in md
    assert md.index("## Precision by class") < md.index("## Class confusion") < md.index("![class confusion]")


def test_classes_without_a_training_image_come_last_as_na(tmp_path):
    data = failure_sidecars()
    data["per_class"]["precision_at_5"] = [np.nan, 0.9, 0.1]
    data["queries"]["precision"] = np.nan  # every query lone: no panel, an empty worst-queries table
    figures, tables = failure_report(write_sidecars(tmp_path, data), data["store"], data["index"], tmp_path, k=5,
                                     epoch=2)
    assert list(figures) == [CONFUSION]
    page, _ = render_report("exp", metrics(), figures, {}, {}, stage_times(), k=5, failures=tables)
    assert [r[:3] for r in html_rows(page, "Precision by class")] == [[ESCAPED, "3", "0.100"], ["dog", "3", "0.900"],
                                                                      ["cat", "3", "n/a"]]
    assert html_rows(page, "Precision by class")[2][3] == "n/a"
    worst = page.split("<h2>Worst queries</h2>", 1)[1].split("<h2>", 1)[0]
    assert "(no rows)" in worst and "<figure>" not in worst


def test_report_without_failures_has_no_failure_sections(failures, figure_set):
    figures, _ = failures
    page, _ = render_report("exp", metrics(), {**figure_set, **figures}, {}, {}, stage_times())
    assert "Worst queries</h2>" not in page
    assert f'alt="{WORST_QUERIES}"' in page.split("<h2>Figures</h2>", 1)[1]  # shown with the other figures


