"""Watching and inspecting a run as users do.

TensorBoard's own reader finds event files equal to the artifacts they derive from, and
TensorBoard itself shows the run's curves in headless Chromium; a
rerun rewrites only its own events and shows each step once; with tracking off,
everything else is the same. Every Parquet collection is one table across epochs in
pandas, pyarrow, DuckDB and Polars with no extra arguments; an experiment of the older
layout is refused with the command that migrates it, and that command brings it back
to the current layout with nothing recomputed and no value changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.embedding.embed import load_embeddings
from pipeline.distributed.launch import free_port
from pipeline.paths import AUDIT_TABLES, VALIDATION_SIDECARS
from pipeline.tracking import EventLog, event_file
from tests.browser import WAIT, headless_chromium, needs_chromium
from tests.datagen import make_tiny_imagenet
from tests.support import BIN, REPO, TIMEOUT, assert_failed, fast_config, luigi_cli, write_overrides
from tests.test_central_scheduler import wait_for

EPOCHS = 2
# Collections with a folder per epoch (several files each), then those with a file per epoch.
FOLDER_COLLECTIONS = ("triplets", "train", "embeddings")
FILE_COLLECTIONS = tuple(f"metrics/{n}" for n in VALIDATION_SIDECARS) + tuple(f"audit/{n}" for n in AUDIT_TABLES)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished two-epoch RunAll (label noise on, so each audited epoch has suspects) plus
    epoch 1's audit, so every collection has two or more epochs; returns (config, experiment folder)."""
    tmp = tmp_path_factory.mktemp("layout")
    cfg = fast_config(tmp, make_tiny_imagenet(tmp / "tiny-imagenet-200", n_classes=3, train_per_class=12,
                                              val_per_class=4))
    cfg["run"].update(epochs=EPOCHS, label_noise=0.2)
    config = write_overrides(tmp, cfg)
    for args in (["RunAll"], ["AuditEpoch", "--epoch", "1"]):
        done = luigi_cli(args, config)
        assert done.code == 0, done.output[-4000:]
    return config, tmp / "artifacts" / "test"


# --------------------------------------------------------------------------- TensorBoard


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_curves_equal_the_artifacts(run):
    exp = run[1]
    curves = scalars(exp / "tensorboard")
    steps = pd.read_parquet(exp / "train").sort_values(["epoch", "step"], kind="stable").reset_index(drop=True)
    assert [s for s, _ in curves["train/loss"]] == list(range(len(steps)))  # every step once, run-wide
    for column in ("loss", "loss_all", "active_fraction", "lr", "images", "triplets"):
        np.testing.assert_allclose([v for _, v in curves[f"train/{column}"]], steps[column], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in curves["train/images_per_second"]], steps["images"] / steps["seconds"],
                               rtol=1e-5)
    for epoch in range(EPOCHS + 1):
        metrics = json.loads((exp / "metrics" / f"epoch-{epoch:03d}.json").read_text())
        for key in ("precision_at_30_val", "precision_at_1_train", "r_precision_val", "map_at_r_val",
                    "triplet_precision_val"):
            assert dict(curves[f"metrics/{key}"])[epoch] == pytest.approx(metrics[key], rel=1e-6), key
    assert not any(tag.startswith(("metrics/queries", "metrics/seconds", "baseline/max_size")) for tag in curves)
    (baseline,) = (exp.parent / "baselines").glob("*.json")
    expected = json.loads(baseline.read_text())["precision_at_30_val"]
    assert curves["baseline/precision_at_30_val"] == [(e, pytest.approx(expected, rel=1e-6)) for e in range(EPOCHS + 1)]
    rows = [len(pd.read_parquet(exp / "triplets" / f"epoch-{e:03d}")) for e in range(1, EPOCHS + 1)]
    assert curves["lists/rows"] == [(e, r) for e, r in zip(range(1, EPOCHS + 1), rows)]


def test_the_projector_has_every_validation_image_with_its_label(run):
    exp = run[1]
    config = (exp / "tensorboard" / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == EPOCHS + 1
    for epoch in range(EPOCHS + 1):
        folder = exp / "tensorboard" / "projector" / f"epoch-{epoch:03d}"
        assert f'tensor_path: "projector/epoch-{epoch:03d}/tensors.tsv"' in config
        val = load_embeddings(exp / "embeddings" / f"epoch-{epoch:03d}", "val")
        tensors = np.loadtxt(folder / "tensors.tsv", delimiter="\t", ndmin=2)
        np.testing.assert_allclose(tensors, val.vectors, rtol=1e-5, atol=1e-6)
        metadata = pd.read_csv(folder / "metadata.tsv", sep="\t")
        assert metadata["label"].tolist() == val.labels.tolist() and metadata["class"].notna().all()
        assert (folder / "sprite.png").is_file()


@needs_chromium
def test_tensorboard_shows_the_run_in_a_browser(run, tmp_path):
    """``tensorboard --logdir artifacts`` as the docs give it, on 127.0.0.1 only: the time-series
    page in headless Chromium lists the experiment's run with its step and epoch curves."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    exp = run[1]
    port = free_port()  # not 6006: another test or a user's TensorBoard may hold it
    log = tmp_path / "tensorboard.log"
    with open(log, "wb") as out:
        board = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(exp.parent), "--host", "127.0.0.1",
                                  "--port", str(port), "--reload_multifile", "true"], stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"

        def serves_the_run() -> bool:  # it reads the event files before it answers
            with urllib.request.urlopen(url + "data/runs", timeout=5) as answer:
                return "test/tensorboard" in answer.read().decode()

        try:
            wait_for(serves_the_run, "TensorBoard to serve the run", [board], timeout=TIMEOUT)
        except RuntimeError as exc:
            pytest.fail(f"{exc}: {log.read_text(errors='replace')[-3000:]}")
        curves = ("train/loss_all", "metrics/precision_at_30_val")
        with headless_chromium(1400, 1100) as browser:
            browser.get(url + "#timeseries")
            # Cards render as they scroll into view: filter to the curves looked for, as a user would.
            tags = WebDriverWait(browser, WAIT).until(
                lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder^='Filter tags']"))
            tags.send_keys("|".join(c.split("/")[1] for c in curves), Keys.ESCAPE)  # Escape: the suggestions close

            def shown(driver) -> bool:
                """The run in the run list, and a visible card of each curve with the run in its legend."""
                cards = [e.text.replace("\n", "") for e in driver.find_elements(By.CSS_SELECTOR, "card-view")]
                return ("test/tensorboard" in driver.find_element(By.CSS_SELECTOR, "runs-selector").text
                        and all(any(c.startswith(curve) and "test/tensorboard" in c for c in cards) for curve in curves))

            try:
                WebDriverWait(browser, WAIT).until(shown)
            finally:
                browser.save_screenshot(str(tmp_path / "tensorboard.png"))
        assert (tmp_path / "tensorboard.png").stat().st_size > 0
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_a_rerun_rewrites_its_own_events_and_shows_each_step_once(run):
    config, exp = run
    board = exp / "tensorboard"
    mine = event_file(board, "train", 2)
    others = {p.name: p.read_bytes() for p in board.glob("events.out.tfevents.*") if p != mine}
    # What a killed attempt at epoch 2 would have left: a step logged with another value.
    with EventLog(board, "train", 2) as killed:
        killed.scalars(0, {"loss": 99.0}, "train/")
    assert 99.0 in [v for _, v in scalars(board)["train/loss"]]
    shutil.rmtree(exp / "train" / "epoch-002")
    done = luigi_cli(["TrainEpoch", "--epoch", "2"], config)
    assert done.code == 0, done.output[-4000:]
    assert {p.name: p.read_bytes() for p in board.glob("events.out.tfevents.*") if p != mine} == others
    after = scalars(board)["train/loss"]
    assert [s for s, _ in after] == list(range(len(pd.read_parquet(exp / "train"))))
    assert 99.0 not in [v for _, v in after]


def test_tracking_off_changes_nothing_else(run, tmp_path):
    config, exp = run
    quiet_config = tmp_path / "quiet.cfg"
    quiet_config.write_text(config.read_text().replace(str(exp.parent), str(tmp_path / "artifacts"))
                            + "\n[tracking]\ntensorboard = false\n")
    done = luigi_cli(["ValidateEpoch", "--epoch", "1"], quiet_config)
    assert done.code == 0, done.output[-4000:]
    quiet = tmp_path / "artifacts" / "test"
    assert not (quiet / "tensorboard").exists()
    a, b = (json.loads((e / "metrics" / "epoch-001.json").read_text()) for e in (exp, quiet))
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    for epoch in range(2):
        weights = [torch.load(e / "train" / f"epoch-{epoch:03d}" / "_checkpoint.pt", weights_only=True)["model"]
                   for e in (exp, quiet)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# --------------------------------------------------------------------------- one table per collection


def _rows(files: list[Path]) -> int:
    return sum(pq.read_metadata(f).num_rows for f in files)


@pytest.mark.parametrize("collection", FOLDER_COLLECTIONS + FILE_COLLECTIONS)
def test_every_collection_reads_as_one_table_in_every_client(run, collection):
    folder = run[1] / collection
    glob = "epoch-*/*.parquet" if collection in FOLDER_COLLECTIONS else "epoch-*.parquet"
    files = sorted(folder.glob(glob))
    # (epoch 0's step log is empty: it only saves the initial network)
    epochs = {int(f.parent.name[-3:]) if collection in FOLDER_COLLECTIONS else int(f.stem[-3:]) for f in files
              if pq.read_metadata(f).num_rows}
    assert len(files) >= 2 and epochs, files
    rows = _rows(files)
    # What a killed write leaves (until the next run sweeps it) is read by no client.
    leftover = folder / (".tmp-epoch-009-0a1b2" if collection in FOLDER_COLLECTIONS
                         else ".tmp-epoch-009.parquet-0a1b2")
    if collection in FOLDER_COLLECTIONS:
        shutil.copytree(files[-1].parent, leftover)
    else:
        shutil.copy(files[-1], leftover)
    try:
        _read_in_every_client(folder, glob, rows, epochs)
    finally:
        (shutil.rmtree if leftover.is_dir() else Path.unlink)(leftover)


def _read_in_every_client(folder: Path, glob: str, rows: int, epochs: set[int]) -> None:
    """pandas and pyarrow given the folder, DuckDB and Polars the glob: the same rows, an integer epoch."""
    frame = pd.read_parquet(folder)
    assert len(frame) == rows and pd.api.types.is_integer_dtype(frame["epoch"]), frame.dtypes
    assert set(frame["epoch"]) == epochs
    table = ds.dataset(folder).to_table()
    assert table.num_rows == rows and pa.types.is_integer(table.schema.field("epoch").type)
    found = duckdb.sql(f"SELECT count(*), min(epoch), max(epoch), typeof(any_value(epoch)) "
                       f"FROM read_parquet('{folder}/{glob}')").fetchall()[0]
    assert found[:3] == (rows, min(epochs), max(epochs)) and found[3] in ("INTEGER", "BIGINT"), found
    lazy = pl.scan_parquet(f"{folder}/{glob}").select(
        pl.len(), pl.col("epoch").min().alias("lo"), pl.col("epoch").max().alias("hi")).collect()
    assert lazy.row(0) == (rows, min(epochs), max(epochs))
    assert pl.scan_parquet(f"{folder}/{glob}").collect_schema()["epoch"].is_integer()


def test_one_epoch_of_a_collection_is_its_folder_or_file(run):
    exp = run[1]
    one = pd.read_parquet(exp / "triplets" / "epoch-001")
    assert set(one["epoch"]) == {1}
    queries = pd.read_parquet(exp / "metrics" / "queries" / "epoch-002.parquet")
    assert set(queries["epoch"]) == {2} and queries["epoch"].dtype == np.int32


# --------------------------------------------------------------------------- the older layout


def _drop_epoch(source: Path, target: Path) -> None:
    table = pq.read_table(source)
    pq.write_table(table.drop_columns(["epoch"]), target)
    if source != target:
        source.unlink()


def write_as_older_layout(exp: Path) -> None:
    """Turn a current experiment folder into what the older layout wrote."""
    old_names = {"_checkpoint.pt": "checkpoint.pt", "_summary.json": "summary.json",
                 "_manifest.json": "manifest.json"}
    for collection in ("triplets", "train", "embeddings", "search"):
        for d in sorted((exp / collection).glob("epoch-*")):
            for new, old in old_names.items():
                if (d / new).exists():
                    (d / new).rename(d / old)
            for shard in d.glob("part-*.parquet") if collection == "embeddings" else ():
                _drop_epoch(shard, shard)
            d.rename(d.with_name(d.name.replace("-", "=")))
        for partial in (exp / collection).glob(".partial-epoch-*.pt"):
            partial.rename(partial.with_name(partial.name.replace("epoch-", "epoch=")))
    for name in VALIDATION_SIDECARS:
        for f in sorted((exp / "metrics" / name).glob("*.parquet")):
            _drop_epoch(f, exp / "metrics" / f"{f.stem.replace('-', '=')}.{name}.parquet")
        (exp / "metrics" / name).rmdir()
    for f in (exp / "metrics").glob("epoch-*.json"):
        f.rename(f.with_name(f.name.replace("-", "=")))
    for summary in sorted((exp / "audit").glob("epoch-*.json")):
        folder = exp / "audit" / summary.stem.replace("-", "=")
        folder.mkdir()
        for name in AUDIT_TABLES:
            _drop_epoch(exp / "audit" / name / f"{summary.stem}.parquet", folder / f"{name}.parquet")
        summary.rename(folder / "summary.json")
    for name in AUDIT_TABLES:
        (exp / "audit" / name).rmdir()
    for d in (exp / "report").glob("epochs-*"):
        d.rename(d.with_name(d.name.replace("-", "=")))


def _snapshot(exp: Path) -> dict[str, object]:
    """Every artifact's content by its path relative to the experiment (tables as frames, without epoch)."""
    out: dict[str, object] = {}
    for f in sorted(p for p in exp.rglob("*") if p.is_file() and ".locks" not in p.parts):
        rel = f.relative_to(exp).as_posix()
        if f.suffix == ".parquet":
            frame = pd.read_parquet(f)
            out[rel] = frame.drop(columns=["epoch"]) if "epoch" in frame and not rel.startswith(("triplets", "train"))\
                else frame
        elif f.suffix != ".png":  # figures are redrawn bytes-for-bytes only by the same matplotlib run
            out[rel] = f.read_bytes()
    return out


def _layout(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.layout", str(root), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_the_older_layout_is_refused_then_migrated_without_recomputing(run, tmp_path):
    config, exp = run
    root = tmp_path / "artifacts"
    shutil.copytree(exp.parent, root, ignore=shutil.ignore_patterns(".locks"))
    before = _snapshot(root / "test")
    write_as_older_layout(root / "test")
    old_config = tmp_path / "old.cfg"
    old_config.write_text(config.read_text().replace(str(exp.parent), str(root)))

    refused = luigi_cli(["RunAll"], old_config)
    assert_failed(refused, "older artifacts layout", f"python -m pipeline.layout {root}", code="scheduling_error")
    assert not (root / "test" / "train" / "epoch-000").exists()  # nothing was retrained beside the old files

    listed = _layout(root, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert "would rename" in listed.stdout and "not yet in the current layout" in listed.stdout
    assert (root / "test" / "train" / "epoch=000").is_dir()  # a dry run changes nothing

    migrated = _layout(root)
    assert migrated.returncode == 0, migrated.stderr
    after = _snapshot(root / "test")
    assert after.keys() == before.keys()
    for rel, content in before.items():
        if isinstance(content, pd.DataFrame):
            pd.testing.assert_frame_equal(after[rel], content, obj=rel)
        else:
            assert after[rel] == content, rel
    assert _layout(root).stdout.startswith("0 steps done")

    again = luigi_cli(["RunAll"], old_config)
    assert again.code == 0, again.output[-4000:]
    assert "ran successfully" not in again.output  # every output was found complete


def test_migrating_something_that_is_no_artifacts_root_says_so(tmp_path):
    refused = _layout(tmp_path / "nowhere")
    assert refused.returncode == 2 and "give the artifacts root" in refused.stderr
