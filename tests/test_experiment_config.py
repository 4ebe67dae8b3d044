"""One experiment folder, one set of settings: ``<experiment>/config.json``.

A rerun of an experiment with a changed setting must fail loudly (naming the
setting, both values and the folder) instead of mixing outputs; identical
settings rerun fine, and a new experiment name starts afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

import tasks
from pipeline.errors import ConfigError
from pipeline.experiment_config import record_or_check
from tests.support import assert_succeeded, build, fast_config

# --------------------------------------------------------------------------- helpers


def _configure(configure, tmp_path: Path, root: Path, **sections: dict) -> Path:
    cfg = fast_config(tmp_path, root)
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    configure(cfg)
    return tmp_path / "artifacts"


def _run_keys() -> tuple[str, str]:
    """Section holding the experiment name and seed, and the name's key ([experiment] name, now [run] experiment)."""
    cfg = fast_config(Path("."), Path("."))
    return ("run", "experiment") if "run" in cfg else ("experiment", "name")


def build_status(task_list: list[luigi.Task]) -> LuigiStatusCode:
    return build(task_list).status


def _refused(task: luigi.Task, task_errors) -> str:
    """Build ``task`` and check it was refused while scheduling (nothing ran); return the reason."""
    assert build_status([task]) == LuigiStatusCode.SCHEDULING_FAILED
    assert task_errors == []
    with pytest.raises(ConfigError) as info:
        task.complete()
    return str(info.value)


# --------------------------------------------------------------------------- TripletList settings


def test_changed_triplet_setting_is_rejected(configure, tmp_path, tiny_imagenet, task_errors):
    artifacts = _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    config_file = artifacts / "test" / "config.json"
    recorded = config_file.read_text()
    assert json.loads(recorded)["TripletList"]["triplets_per_query"] == 1

    _configure(configure, tmp_path, tiny_imagenet, TripletList={"triplets_per_query": 2})
    msg = _refused(tasks.TripletList(epoch=2), task_errors)
    assert "[TripletList] triplets_per_query: was 1, now 2" in msg
    assert "'test'" in msg and str(artifacts / "test") in msg
    assert not (artifacts / "test" / "triplets" / "epoch-002").exists()
    assert config_file.read_text() == recorded  # a rejected run changes nothing


def test_changed_strategy_is_rejected(configure, tmp_path, tiny_imagenet, task_errors):
    artifacts = _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    # Delete the list and ask for it again with another strategy (epoch 1 may stay
    # uniform, so nothing needs embeddings): the experiment still says uniform.
    shutil.rmtree(artifacts / "test" / "triplets" / "epoch-001")
    _configure(configure, tmp_path, tiny_imagenet, TripletList={"strategy": "semihard", "mine_first_epoch": "false"})
    msg = _refused(tasks.TripletList(epoch=1), task_errors)
    assert "[TripletList] strategy: was 'uniform', now 'semihard'" in msg
    assert "[TripletList] mine_first_epoch: was True, now False" in msg
    assert str(artifacts / "test") in msg
    assert not (artifacts / "test" / "triplets" / "epoch-001").exists()


def test_changed_seed_is_rejected(configure, tmp_path, tiny_imagenet, task_errors):
    _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    section, _ = _run_keys()
    _configure(configure, tmp_path, tiny_imagenet, **{section: {"seed": 5}})
    assert f"[{section}] seed: was 0, now 5" in _refused(tasks.TripletList(epoch=2), task_errors)


def test_identical_settings_rerun_fine(configure, tmp_path, tiny_imagenet):
    artifacts = _configure(configure, tmp_path, tiny_imagenet, TripletList={"triplets_per_query": 2})
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    recorded = (artifacts / "test" / "config.json").read_text()
    # A new process would build fresh task instances from the same luigi.cfg.
    _configure(configure, tmp_path, tiny_imagenet, TripletList={"triplets_per_query": 2})
    assert_succeeded(build([tasks.TripletList(epoch=2), tasks.TripletList(epoch=3)]))
    assert (artifacts / "test" / "config.json").read_text() == recorded
    # Run-only knobs (dask scheduler, Luigi workers) are not settings of the experiment.
    _configure(configure, tmp_path, tiny_imagenet, TripletList={"triplets_per_query": 2, "dask_scheduler": "threads"})
    assert_succeeded(build([tasks.TripletList(epoch=4)]))
def test_new_experiment_name_starts_afresh(configure, tmp_path, tiny_imagenet):
    artifacts = _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    section, name_key = _run_keys()
    _configure(configure, tmp_path, tiny_imagenet, TripletList={"triplets_per_query": 2},
               **{section: {name_key: "more-triplets"}})
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    assert json.loads((artifacts / "more-triplets" / "config.json").read_text())["TripletList"][
        "triplets_per_query"] == 2
    assert json.loads((artifacts / "test" / "config.json").read_text())["TripletList"]["triplets_per_query"] == 1
    # ... and --experiment on the task works the same way.
    assert_succeeded(build([tasks.TripletList(experiment="third", epoch=1)]))
    assert (artifacts / "third" / "triplets" / "epoch-001").is_dir()


# --------------------------------------------------------------------------- TrainEpoch settings


def test_changed_learning_rate_is_rejected(configure, tmp_path, tiny_imagenet, task_errors):
    artifacts = _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TrainEpoch(epoch=0)]))
    assert json.loads((artifacts / "test" / "config.json").read_text())["TrainEpoch"]["lr"] == 0.01

    _configure(configure, tmp_path, tiny_imagenet, TrainEpoch={"lr": 0.05})
    msg = _refused(tasks.TrainEpoch(epoch=1), task_errors)
    assert "[TrainEpoch] lr: was 0.01, now 0.05" in msg
    assert "'test'" in msg and str(artifacts / "test") in msg
    assert "new experiment name" in msg
    assert not (artifacts / "test" / "train" / "epoch-001").exists()

    # Back to the recorded value, the same epoch trains.
    _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TrainEpoch(epoch=1)]))
    assert (artifacts / "test" / "train" / "epoch-001" / "_checkpoint.pt").is_file()


def test_changed_model_setting_is_rejected(configure, tmp_path, tiny_imagenet, task_errors):
    _configure(configure, tmp_path, tiny_imagenet)
    assert_succeeded(build([tasks.TrainEpoch(epoch=0)]))
    _configure(configure, tmp_path, tiny_imagenet, model={"embedding_dim": 16})
    assert "[model] embedding_dim: was 8, now 16" in _refused(tasks.TrainEpoch(epoch=1), task_errors)


def test_fixing_an_invalid_setting_is_not_a_change(configure, tmp_path, tiny_imagenet, task_errors):
    _configure(configure, tmp_path, tiny_imagenet, TrainEpoch={"lr": 0})
    assert build_status([tasks.TrainEpoch(epoch=0)]) == LuigiStatusCode.SCHEDULING_FAILED  # nothing ran
    with pytest.raises(ConfigError, match="lr = 0.0; it must be positive"):
        tasks.TrainEpoch(epoch=0).requires()
    task_errors.clear()
    _configure(configure, tmp_path, tiny_imagenet)  # lr back to 0.01; nothing was ever trained
    assert_succeeded(build([tasks.TrainEpoch(epoch=0)]))


# --------------------------------------------------------------------------- record_or_check itself


def test_record_or_check_records_merges_and_compares(tmp_path):
    path = tmp_path / "exp" / "config.json"
    record_or_check(path, {"A": {"x": 1, "nested": {"y": 2.5}}}, "exp")
    assert json.loads(path.read_text()) == {"A": {"x": 1, "nested": {"y": 2.5}}}
    # Same values: fine. New keys and sections are added.
    record_or_check(path, {"A": {"x": 1, "z": "new"}, "B": {"w": True}}, "exp")
    assert json.loads(path.read_text()) == {"A": {"x": 1, "nested": {"y": 2.5}, "z": "new"}, "B": {"w": True}}
    before = path.read_text()
    with pytest.raises(ConfigError) as info:
        record_or_check(path, {"A": {"x": 2, "nested": {"y": 3.0}}, "B": {"w": True}}, "exp")
    msg = str(info.value)
    assert "[A] x: was 1, now 2" in msg and "[A] nested.y: was 2.5, now 3.0" in msg
    assert "'exp'" in msg and str(path) in msg and str(path.parent) in msg
    assert path.read_text() == before


def test_record_or_check_accepts_values_that_round_trip_through_json(tmp_path):
    path = tmp_path / "config.json"
    settings = {"S": {"root": tmp_path / "data", "t": (1, 2), "f": 0.1 + 0.2}}
    record_or_check(path, settings, "e")
    recorded = path.read_text()
    # Stored as JSON sees them: the Path as its string, the tuple as a list, the float exactly.
    assert json.loads(recorded) == {"S": {"root": str(tmp_path / "data"), "t": [1, 2], "f": 0.1 + 0.2}}
    # The same Path and tuple values compare equal to what was stored: no error, nothing rewritten.
    record_or_check(path, settings, "e")
    assert path.read_text() == recorded
    # ... while a different Path is still a change.
    with pytest.raises(ConfigError, match=r"\[S\] root: was"):
        record_or_check(path, {"S": {"root": tmp_path / "other"}}, "e")
    assert path.read_text() == recorded
