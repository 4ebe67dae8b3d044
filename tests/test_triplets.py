"""Per-epoch triplet lists: the TripletList task and ``sample_triplets``.

What a user relies on: every row is a valid triplet, every training image is the
query exactly ``triplets_per_query`` times, the list is a pure function of
(seed, epoch) whatever runs it, and the Parquet files read back with pandas.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import luigi
import numpy as np
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

import tasks
from pipeline.errors import ConfigError
from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, available, get_strategy, sample_triplets
from pipeline.sampling.list_files import read_triplet_meta, read_triplets
from pipeline.settings import declared, setting_fields
from tests.datagen import make_image_folder
from tests.support import assert_succeeded, build, fast_config

COLUMNS = ["epoch", "query", "positive", "negative", "query_label", "negative_label", "strategy"]
N_TRAIN = 36  # the tiny_imagenet fixture: 3 classes x 12 training images


# --------------------------------------------------------------------------- helpers


def _configure(configure, tmp_path: Path, root: Path, *, artifacts: str = "artifacts", source: str = "tiny-imagenet",
               **triplet_list) -> Path:
    cfg = fast_config(tmp_path, root, source=source)
    cfg["artifacts"]["root"] = tmp_path / artifacts
    cfg["TripletList"].update(triplet_list)
    configure(cfg)
    return tmp_path / artifacts


def _build_ok(task_list: list[luigi.Task], workers: int = 1) -> None:
    result = build(task_list, workers=workers)
    assert_succeeded(result)


def _epoch_dir(artifacts: Path, epoch: int, experiment: str = "test") -> Path:
    return artifacts / experiment / "triplets" / f"epoch-{epoch:03d}"


def _index(artifacts: Path) -> pd.DataFrame:
    (ds,) = [p for p in (artifacts / "datasets").iterdir() if not p.name.startswith(".tmp-")]
    return pd.read_parquet(ds / "index.parquet")


def _check_rows(trip: pd.DataFrame, labels_by_id: pd.Series, train_ids: np.ndarray, per_query: int,
                epoch: int | None = None) -> None:
    """The invariants every row of every triplet list satisfies."""
    assert list(trip.columns[: len(COLUMNS)]) == COLUMNS
    q, p, n = (trip[c].to_numpy() for c in ("query", "positive", "negative"))
    lq, lp, ln = (labels_by_id.reindex(x).to_numpy() for x in (q, p, n))
    assert not pd.isna(lq).any() and not pd.isna(lp).any() and not pd.isna(ln).any()
    assert set(q) <= set(train_ids) and set(p) <= set(train_ids) and set(n) <= set(train_ids)
    assert (lp == lq).all(), "positive of another class"
    assert (p != q).all(), "positive equal to the query"
    assert (ln != lq).all(), "negative of the query's class"
    assert (trip["query_label"].to_numpy() == lq).all()
    assert (trip["negative_label"].to_numpy() == ln).all()
    counts = pd.Series(q).value_counts()
    assert set(counts.index) == set(train_ids), "some training image is never the query"
    assert set(counts) == {per_query}
    assert len(trip) == per_query * len(train_ids)
    if epoch is not None:
        assert set(trip["epoch"]) == {epoch}


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def _sample(labels, *, seed=3, epoch=1, tpq=1, n_blocks=3, dask_scheduler="synchronous", ids=None,
            strategy="uniform"):
    labels = np.asarray(labels)
    ctx = SamplingContext(ClassMembers.from_labels(labels), epoch=epoch, seed=seed)
    ids = np.arange(labels.size) * 10 + 7 if ids is None else ids
    settings = ListSettings(triplets_per_query=tpq, n_blocks=n_blocks, dask_scheduler=dask_scheduler)
    return sample_triplets(ctx, get_strategy(strategy), ids, settings).to_pandas()


def _uneven_labels(seed: int = 0) -> np.ndarray:
    """5 classes of 2, 7, 3, 11 and 4 images, in shuffled order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(5), [2, 7, 3, 11, 4]))


# --------------------------------------------------------------------------- the task


@pytest.mark.parametrize("per_query", [1, 3])
def test_task_rows_are_valid_triplets(per_query, configure, tmp_path, tiny_imagenet):
    artifacts = _configure(configure, tmp_path, tiny_imagenet, triplets_per_query=per_query)
    _build_ok([tasks.TripletList(epoch=1)])
    index = _index(artifacts)
    trip = pd.read_parquet(_epoch_dir(artifacts, 1))
    train_ids = index.loc[index["split"] == "train", "image_id"].to_numpy()
    _check_rows(trip, index.set_index("image_id")["label"], train_ids, per_query, epoch=1)
    assert set(trip["strategy"].astype(str)) == {"uniform"}
    meta = read_triplet_meta(_epoch_dir(artifacts, 1))
    assert meta["strategy"] == "uniform" and meta["seed"] == 0 and meta["rows"] == per_query * N_TRAIN


def test_task_is_deterministic_across_runs_and_luigi_workers(configure, tmp_path, tiny_imagenet):
    epochs = (1, 2, 3)
    a = _configure(configure, tmp_path, tiny_imagenet, artifacts="a")
    _build_ok([tasks.TripletList(epoch=e) for e in epochs], workers=1)
    b = _configure(configure, tmp_path, tiny_imagenet, artifacts="b")
    _build_ok([tasks.TripletList(epoch=e) for e in epochs], workers=3)
    # The same again from scratch, and with the threaded dask scheduler.
    c = _configure(configure, tmp_path, tiny_imagenet, artifacts="c", dask_scheduler="threads")
    _build_ok([tasks.TripletList(epoch=e) for e in epochs], workers=1)
    for e in epochs:
        ref = read_triplets(_epoch_dir(a, e))
        _same_rows(ref, read_triplets(_epoch_dir(b, e)))
        _same_rows(ref, read_triplets(_epoch_dir(c, e)))
    # The datasets were indexed independently, and identically.
    pd.testing.assert_frame_equal(_index(a), _index(b))


def test_epochs_and_seeds_give_different_lists(configure, tmp_path, tiny_imagenet):
    a = _configure(configure, tmp_path, tiny_imagenet, artifacts="a")
    _build_ok([tasks.TripletList(epoch=1), tasks.TripletList(epoch=2)])
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["artifacts"]["root"] = tmp_path / "seed1"
    run_section = "run" if "run" in cfg else "experiment"  # [experiment] was renamed [run]
    cfg[run_section]["seed"] = 1
    configure(cfg)
    _build_ok([tasks.TripletList(epoch=1)])
    ids = lambda d: read_triplets(d)[["query", "positive", "negative"]].to_numpy()  # noqa: E731
    e1, e2 = ids(_epoch_dir(a, 1)), ids(_epoch_dir(a, 2))
    s1 = ids(_epoch_dir(tmp_path / "seed1", 1))
    assert not np.array_equal(e1, e2)
    assert not np.array_equal(e1, s1)
    # Not just reordered: the sets of triplets differ too.
    as_set = lambda x: set(map(tuple, x))  # noqa: E731
    assert as_set(e1) != as_set(e2) and as_set(e1) != as_set(s1)


def test_lists_read_back_per_epoch_and_all_together(configure, tmp_path, tiny_imagenet):
    artifacts = _configure(configure, tmp_path, tiny_imagenet)
    _build_ok([tasks.TripletList(epoch=e) for e in (1, 2, 3)])
    root = artifacts / "test" / "triplets"
    one = pd.read_parquet(root / "epoch-002")
    assert list(one.columns[: len(COLUMNS)]) == COLUMNS and len(one) == N_TRAIN and set(one["epoch"]) == {2}
    assert str(one["strategy"].iloc[0]) == "uniform"
    every = pd.read_parquet(root, partitioning=None)
    assert len(every) == 3 * N_TRAIN
    assert every["epoch"].value_counts().to_dict() == {1: N_TRAIN, 2: N_TRAIN, 3: N_TRAIN}
    for e in (1, 2, 3):
        part = every[every["epoch"] == e].drop(columns=["strategy"])
        _same_rows(part, read_triplets(root / f"epoch-{e:03d}").drop(columns=["strategy"]))


def test_unknown_strategy_is_a_config_error_naming_the_setting(configure, tmp_path, tiny_imagenet, task_errors):
    artifacts = _configure(configure, tmp_path, tiny_imagenet, strategy="semi-hard")
    result = build([tasks.TripletList(epoch=1)])
    assert result.status != LuigiStatusCode.SUCCESS
    errors = [exc for t, exc in task_errors if isinstance(t, tasks.TripletList)]
    assert len(errors) == 1 and isinstance(errors[0], ConfigError)
    msg = str(errors[0])
    assert "'semi-hard'" in msg and "[TripletList] strategy" in msg
    assert "semihard" in msg and "uniform" in msg  # the valid choices
    assert not _epoch_dir(artifacts, 1).exists()

    with pytest.raises(ConfigError, match=r"\[TripletList\] strategy"):
        get_strategy("nope")


def test_epoch_zero_is_rejected(configure, tmp_path, tiny_imagenet, task_errors):
    _configure(configure, tmp_path, tiny_imagenet)
    assert build([tasks.TripletList(epoch=0)]).status != LuigiStatusCode.SUCCESS
    assert any(isinstance(e, ConfigError) and "epoch 0" in str(e) for _, e in task_errors)


def _folder_with_lonely_class(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "folder", train_per_class=4, val_per_class=1, size=16)
    for f in sorted((root / "train" / "dog").iterdir())[1:]:
        f.unlink()
    return root


def test_class_with_one_training_image_fails_with_config_error(configure, tmp_path, task_errors):
    root = _folder_with_lonely_class(tmp_path)
    artifacts = _configure(configure, tmp_path, root, source="image-folder")
    result = build([tasks.TripletList(epoch=1)])
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    errors = [exc for t, exc in task_errors if isinstance(t, tasks.TripletList)]
    assert len(errors) == 1 and isinstance(errors[0], ConfigError), errors
    msg = str(errors[0])
    assert "single training image" in msg and "at least 2" in msg
    assert "'dog'" in msg and "train/dog/" in msg
    assert not _epoch_dir(artifacts, 1).exists()


def test_class_with_one_training_image_error_names_the_class(configure, tmp_path, task_errors):
    root = _folder_with_lonely_class(tmp_path)
    _configure(configure, tmp_path, root, source="image-folder")
    build([tasks.TripletList(epoch=1)])
    errors = [exc for t, exc in task_errors if isinstance(t, tasks.TripletList)]
    assert len(errors) == 1
    assert "dog" in str(errors[0])


# --------------------------------------------------------------------------- sample_triplets directly


@pytest.mark.parametrize("per_query", [1, 3])
@pytest.mark.parametrize("n_blocks", [1, 2, 8])
def test_sample_triplets_rows_are_valid(per_query, n_blocks):
    labels = _uneven_labels()
    ids = np.arange(labels.size) * 10 + 7  # positions -> dataset ids
    df = _sample(labels, tpq=per_query, n_blocks=n_blocks, ids=ids, epoch=4)
    _check_rows(df, pd.Series(labels, index=ids), ids, per_query, epoch=4)
    assert df["epoch"].dtype == np.int32 or df["epoch"].dtype == np.int64


def test_sample_triplets_is_a_function_of_seed_and_epoch():
    labels = _uneven_labels()
    ref = _sample(labels, seed=3, epoch=2)
    _same_rows(ref, _sample(labels, seed=3, epoch=2))
    _same_rows(ref, _sample(labels, seed=3, epoch=2, dask_scheduler="threads"))
    _same_rows(ref, _sample(labels, seed=3, epoch=2, dask_scheduler="sync"))
    cols = ["query", "positive", "negative"]
    assert not ref[cols].equals(_sample(labels, seed=3, epoch=3)[cols])
    assert not ref[cols].equals(_sample(labels, seed=4, epoch=2)[cols])


def test_sample_triplets_rows_come_shuffled():
    """Rows are not grouped by class (a trainer reads them in file order)."""
    labels = _uneven_labels()
    df = _sample(labels, tpq=2)
    assert not df["query_label"].is_monotonic_increasing
    runs = (df["query_label"].diff() != 0).sum()
    assert runs > 10


def test_n_blocks_does_not_change_the_list():
    labels = _uneven_labels()
    ref = _sample(labels, n_blocks=1)
    for n in (2, 5):
        _same_rows(ref, _sample(labels, n_blocks=n))


def test_single_image_class_raises_config_error():
    labels = np.array([0, 0, 0, 1, 2, 2, 2])
    with pytest.raises(ConfigError, match="single training image"):
        _sample(labels)


def test_single_class_raises_config_error():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        _sample(np.zeros(5, dtype=int))


def test_uniform_is_registered():
    assert "uniform" in available()
    s = get_strategy("uniform", pool_size=3, knn_k=5)  # unrelated options are ignored
    assert s.name == "uniform" and not s.needs_embeddings


def test_rerun_after_deleting_an_epoch_reproduces_it(configure, tmp_path, tiny_imagenet):
    artifacts = _configure(configure, tmp_path, tiny_imagenet)
    _build_ok([tasks.TripletList(epoch=2)])
    first = read_triplets(_epoch_dir(artifacts, 2))
    shutil.rmtree(_epoch_dir(artifacts, 2))
    luigi.task_register.Register.clear_instance_cache()
    _build_ok([tasks.TripletList(epoch=2)])
    _same_rows(first, read_triplets(_epoch_dir(artifacts, 2)))


# --------------------------------------------------------------------------- the settings


def test_strategy_choices_are_the_registered_strategies():
    assert available() == sorted(["uniform", "semihard", "hard", "mixed", "batched"])
    (strategy,) = [f for f in setting_fields(ListSettings) if f.name == "strategy"]
    assert declared(strategy).choices == tuple(available())


def test_settings_share_one_section_without_clashes():
    """ListSettings fills the [TripletList] section: no name twice, each with help, and only the
    knobs that spread work are run-only (left out of output identities)."""
    fields = setting_fields(ListSettings)
    names = [f.name for f in fields]
    assert len(names) == len(set(names)) == 21
    assert all(declared(f).help for f in fields)
    assert {f.name for f in fields if declared(f).run_only} == {"n_blocks", "dask_scheduler"}
    # Tuning fields stay out of the configuration.
    assert not {"name", "needs_embeddings", "chunk_size", "knn_backend", "knn_device", "band_pick"} & set(names)
    ListSettings().sampler(1)  # every default is valid, and reads as a whole


@pytest.mark.parametrize(
    "strategy,mine_first_epoch,epoch,expected",
    [("semihard", True, 1, "semihard"), ("semihard", False, 1, "uniform"), ("semihard", False, 2, "semihard"),
     ("batched", False, 1, "batched"), ("mixed", False, 3, "mixed")],
)
def test_only_an_unmined_first_epoch_falls_back_to_uniform(strategy, mine_first_epoch, epoch, expected):
    settings = ListSettings(strategy=strategy, mine_first_epoch=mine_first_epoch)
    assert settings.strategy_for(epoch) == expected
    assert settings.mines(epoch) == (epoch != 1 or mine_first_epoch)


# --------------------------------------------------------------------------- silently ignored settings


@pytest.mark.parametrize("changes, named", [
    (dict(strategy="batched", pool_size=32), "[TripletList] pool_size = 32 with [TripletList] strategy = 'batched'"),
    (dict(strategy="batched", mined_strategy="semihard"), "[TripletList] mined_strategy = 'semihard' with"),
    (dict(strategy="batched", triplets_per_query=1), "[TripletList] triplets_per_query = 1 with"),
    (dict(strategy="uniform", image_passes=3),
     "[TripletList] image_passes = 3 with [TripletList] strategy = 'uniform'"),
    (dict(strategy="uniform", positive="farthest"), "[TripletList] positive = 'farthest' with"),
    (dict(strategy="uniform", mine_first_epoch=False), "[TripletList] mine_first_epoch = False with"),
    (dict(strategy="hard", mined_share=0.2), "[TripletList] mined_share = 0.2 with [TripletList] strategy = 'hard'"),
    (dict(strategy="semihard", hard_top=3), "[TripletList] hard_top = 3 with [TripletList] strategy = 'semihard'"),
    (dict(strategy="mixed", candidates="pool", knn_k=20), "[TripletList] knn_k = 20 with [TripletList] candidates"),
    (dict(strategy="hard", candidates="knn", pool_size=8), "[TripletList] pool_size = 8 with [TripletList] candidates"),
    (dict(strategy="hard", relevance_cap=0.5), "[TripletList] relevance_cap = 0.5 with [TripletList] positive"),
])
def test_a_setting_the_list_would_ignore_is_refused(changes, named):
    with pytest.raises(ConfigError) as info:
        ListSettings(**changes).sampler(2)
    assert str(info.value).startswith(named) and "silently ignored" in str(info.value)


@pytest.mark.parametrize("changes", [
    dict(strategy="batched", image_passes=3, mine_first_epoch=False, n_blocks=2, dask_scheduler="synchronous"),
    dict(strategy="uniform", triplets_per_query=2, n_blocks=1),
    dict(strategy="mixed", mined_share=0.2, mined_strategy="semihard", candidates="knn", knn_k=20),
    dict(strategy="hard", positive="relevance", relevance_cap=0.5, triplets_per_query=1),
    # Values equal to their defaults are never refused: configs keep every shipped key.
    dict(strategy="uniform", pool_size=64, batch_classes=10, mined_strategy="hard"),
])
def test_settings_the_list_reads_and_run_only_knobs_pass(changes):
    ListSettings(**changes).sampler(2)


def test_every_ignored_setting_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        ListSettings(strategy="uniform", batch_classes=4, batch_seeds=3).sampler(1)
    lines = str(info.value).splitlines()
    assert [line.split(" = ")[0] for line in lines] == ["[TripletList] batch_classes", "[TripletList] batch_seeds"]


def test_an_ignored_setting_fails_the_list_while_scheduling(configure, tmp_path, tiny_imagenet, task_errors):
    _configure(configure, tmp_path, tiny_imagenet, strategy="uniform", image_passes=3)
    result = build([tasks.TripletList(epoch=1)])
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED, result.summary_text
    with pytest.raises(ConfigError, match=r"\[TripletList\] image_passes = 3 with \[TripletList\] strategy"):
        tasks.TripletList(epoch=1).requires()
    assert not (tmp_path / "artifacts" / "test").exists()
