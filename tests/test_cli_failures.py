"""A failed run ends at once: `luigi --module tasks ...` exits non-zero within
seconds, with Luigi's summary, instead of waiting for a retry.

Every test runs the real command in a subprocess from the repository root, so
the shipped `luigi.cfg` applies; a small LUIGI_CONFIG_PATH file on top only
points it at test data and a temporary artifacts root. A command that hangs
fails the test through its timeout.
"""

from __future__ import annotations

import configparser
import os
import subprocess

import pytest

from tests.datagen import corrupt_file
from tests.support import (
    BIN,
    REPO,
    TIMEOUT,
    Outcome,
    assert_failed,
    luigi_cli,
    overrides,
    shipped_retcode,
    write_overrides,
)


def test_shipped_config_never_waits_on_a_failed_task():
    parser = configparser.ConfigParser()
    parser.read(REPO / "luigi.cfg")
    assert parser.getboolean("worker", "keep_alive") is False


@pytest.mark.parametrize("workers", [1, 2])
def test_missing_dataset_root_exits_non_zero_at_once(tmp_path, workers):
    missing = tmp_path / "no-such-dataset"
    config = write_overrides(tmp_path, overrides(tmp_path, missing))
    outcome = luigi_cli(["RunAll", "--workers", str(workers)], config)
    assert_failed(outcome, str(missing), "does not exist")


def test_corrupt_image_in_fail_mode_exits_non_zero_naming_the_file(tmp_path, tiny_imagenet):
    victim = sorted((tiny_imagenet / "train").rglob("*.JPEG"))[3]
    corrupt_file(victim, "truncated")
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet))
    outcome = luigi_cli(["RunAll"], config)
    assert_failed(outcome, victim.name)


def test_path_traversal_in_annotations_exits_non_zero(tmp_path, tiny_imagenet):
    ann = tiny_imagenet / "val" / "val_annotations.txt"
    wnid = ann.read_text().splitlines()[0].split("\t")[1]
    ann.write_text(ann.read_text() + f"../../etc/passwd\t{wnid}\t0\t0\t1\t1\n")
    for mode in ("fail", "skip"):
        config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet, dataset={"on_bad_image": mode}))
        assert_failed(luigi_cli(["IndexDataset"], config), "'..'")


def test_invalid_setting_value_exits_non_zero_naming_the_setting(tmp_path, tiny_imagenet):
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet))
    outcome = luigi_cli(["RunAll", "--TrainEpoch-lr", "-1"], config)
    assert_failed(outcome, "[TrainEpoch] lr = -1.0", code="scheduling_error")
    assert not (tmp_path / "artifacts" / "test").exists()  # refused before anything ran


def test_invalid_choice_exits_non_zero_naming_the_setting_and_choices(tmp_path, tiny_imagenet):
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet))
    outcome = luigi_cli(["RunAll", "--TrainEpoch-optimizer", "rmsprop"], config)
    assert_failed(outcome, "[TrainEpoch] optimizer = 'rmsprop'; use one of sgd, adam", code="scheduling_error")


@pytest.mark.parametrize("section, key, hint", [
    ("TrainEpoch", "margin", "moved to [loss] margin"),  # where the margin lived before [loss]
    ("TripletList", "pool_sise", "not a setting of [TripletList]"),
])
def test_a_key_that_is_not_a_setting_is_refused_before_anything_runs(tmp_path, tiny_imagenet, section, key, hint):
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet, **{section: {key: 2}}))
    outcome = luigi_cli(["RunAll"], config)
    assert_failed(outcome, f"[{section}] {key}: {hint}", code="scheduling_error")
    assert not (tmp_path / "artifacts" / "test").exists()


@pytest.mark.parametrize("task", ["RunAll", "IndexDataset"])
def test_a_root_the_embedded_source_would_ignore_is_refused_while_scheduling(tmp_path, task):
    """The shipped [dataset] source is embedded, which never reads root: a root given for it would
    silently train on the embedded dataset instead of the folder, so the command ends at once."""
    folder = tmp_path / "my-fashion-mnist-copy"
    folder.mkdir()
    config = write_overrides(tmp_path, {"artifacts": {"root": tmp_path / "artifacts"}})
    outcome = luigi_cli([task, "--IndexDataset-root", str(folder)], config)
    assert_failed(outcome, f"[dataset] root = '{folder}' with [dataset] source = 'embedded'",
                  "set source = fashion-mnist", "clear root", code="scheduling_error")
    assert not (tmp_path / "artifacts").exists()


def test_unparsable_setting_value_exits_non_zero(tmp_path, tiny_imagenet):
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet))
    outcome = luigi_cli(["RunAll", "--TrainEpoch-lr", "fast"], config)
    assert outcome.code != 0, outcome.output[-3000:]
    assert "fast" in outcome.output


def test_nan_loss_exits_non_zero(tmp_path, tiny_imagenet):
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet))
    outcome = luigi_cli(["RunAll", "--TrainEpoch-lr", "1e20"], config)
    assert_failed(outcome, "not finite", "training diverged")
    assert not (tmp_path / "artifacts" / "test" / "train" / "epoch-001").exists()


def test_changed_setting_on_a_finished_experiment_is_refused(tmp_path, tiny_imagenet):
    config = write_overrides(tmp_path, overrides(tmp_path, tiny_imagenet))
    done = luigi_cli(["RunAll"], config)
    assert done.code == 0, done.output[-4000:]
    report = tmp_path / "artifacts" / "test" / "report" / "epochs-001"
    before = (report / "summary.md").stat().st_mtime_ns

    outcome = luigi_cli(["RunAll", "--TrainEpoch-lr", "0.5"], config)
    assert_failed(outcome, "[TrainEpoch] lr: was 0.01, now 0.5", "Use a new experiment name", code="scheduling_error")
    assert (report / "summary.md").stat().st_mtime_ns == before
    # The recorded settings still run (nothing to do).
    again = luigi_cli(["RunAll"], config)
    assert again.code == 0, again.output[-4000:]


def test_failure_with_a_central_scheduler_and_the_cluster_config_ends(tmp_path):
    """configs/cluster.cfg keeps workers alive for others' tasks, yet a failure still ends every worker."""
    from tests.support import stop_process as stop
    from tests.test_central_scheduler import free_port, scheduler_api, wait_for

    port = free_port()
    missing = tmp_path / "no-such-dataset"
    sections = overrides(tmp_path, missing)
    sections["core"] = {"default_scheduler_host": "127.0.0.1", "default_scheduler_port": port}
    sections["worker"] = {"wait_interval": "0.5"}
    # LUIGI_CONFIG_PATH names one file: the cluster config with the test's data settings on top.
    merged = configparser.ConfigParser()
    merged.read([REPO / "configs" / "cluster.cfg", write_overrides(tmp_path, sections)])
    config = tmp_path / "cluster-test.cfg"
    with open(config, "w") as out:
        merged.write(out)
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO))
    (tmp_path / "log").mkdir()
    server = subprocess.Popen([str(BIN / "luigid"), "--port", str(port), "--address", "127.0.0.1",
                               "--state-path", str(tmp_path / "state.pickle"), "--logdir", str(tmp_path / "log")],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: scheduler_api(port, "is_paused") is not None, "luigid to answer", [server], 60)
        outcomes = []
        procs = [subprocess.Popen([str(BIN / "luigi"), "--module", "tasks", "RunAll", "--no-lock"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
                 for _ in range(2)]
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT)
            outcomes.append(Outcome(proc.returncode, out, 0.0))
    finally:
        stop(server)
    # Both ended (communicate's timeout would have failed the test otherwise): the worker that ran
    # the failing task with task_failed; the other, which was never granted a task, ends too.
    codes = sorted(o.code for o in outcomes)
    assert shipped_retcode("task_failed") in codes, [o.output[-2000:] for o in outcomes]
    assert any("does not exist" in o.output for o in outcomes)
