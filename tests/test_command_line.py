"""What a user types reaches the tasks: ``[run]`` flags set every task's experiment and epochs,
a distributed layout the scheduler could never run is refused while scheduling, a
machine joining another's epoch runs its own small task (``JoinEpoch``), and declaring
and scheduling the whole graph imports neither torch nor pandas, so a command starts,
and a refused setting is reported, in about a second."""

from __future__ import annotations

import subprocess
import sys

import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.execution_summary import LuigiStatusCode

import tasks
from pipeline.errors import ConfigError
from tests.support import REPO, TIMEOUT, build, fast_config, write_overrides


def parsed(*argv: str):
    """The root task of ``luigi --module tasks ARGV``, with the rest of the command line in force."""
    with CmdlineParser.global_instance(list(argv)) as parser:
        task = parser.get_task_obj()
        return task, task.requires()


def test_run_experiment_and_epochs_flags_reach_every_task(configure, tmp_path, tiny_imagenet):
    configure(fast_config(tmp_path, tiny_imagenet))
    run_all, report = parsed("RunAll", "--run-experiment", "flagged", "--run-epochs", "3")
    assert (run_all.experiment, run_all.epochs) == ("flagged", 3)
    assert (report.experiment, report.epochs) == ("flagged", 3)
    validate, embed = parsed("ValidateEpoch", "--epoch", "2", "--run-experiment", "flagged")
    assert validate.experiment == embed.experiment == "flagged"
    # The task's own flag still wins over the [run] default.
    run_all, _ = parsed("RunAll", "--experiment", "own", "--run-experiment", "flagged")
    assert run_all.experiment == "own"


def test_more_ranks_than_gpu_slots_are_refused_while_scheduling(configure, tmp_path, tiny_imagenet):
    configure(fast_config(tmp_path, tiny_imagenet))  # no [resources]: Luigi's default of one slot
    task = tasks.TrainEpoch(epoch=1, processes=2)
    assert task.resources == {"gpu": 2}
    with pytest.raises(ConfigError, match=r"\[TrainEpoch\] processes = 2 needs \[resources\] gpu = 2"):
        task.requires()
    assert build([task]).status == LuigiStatusCode.SCHEDULING_FAILED


def test_the_slots_follow_the_ranks(configure, tmp_path, tiny_imagenet):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["resources"] = {"gpu": 4}
    configure(cfg)
    task = tasks.TrainEpoch(epoch=1, processes=4)
    assert task.resources == {"gpu": 4}
    assert set(task.requires()) == {"index", "previous", "triplets"}


def test_train_epoch_has_no_node_rank_and_join_epoch_needs_one(configure, tmp_path, tiny_imagenet):
    configure(fast_config(tmp_path, tiny_imagenet))
    assert "node_rank" not in dict(tasks.TrainEpoch.get_params())
    join = tasks.JoinEpoch(epoch=1, node_rank=1, nnodes=2, rendezvous="127.0.0.1:29500")
    assert join.requires() == {} and join.output().path == tasks.TrainEpoch(epoch=1).output().path
    with pytest.raises(ConfigError, match="node_rank = 1 with nnodes = 1"):
        tasks.JoinEpoch(epoch=1, node_rank=1).requires()


def test_scheduling_the_whole_graph_imports_no_torch_and_no_pandas(tmp_path, tiny_imagenet):
    """What ``luigi --module tasks RunAll`` does before the first task runs: import the
    tasks and walk every requires() and complete() (torch and pandas cost seconds)."""
    config = write_overrides(tmp_path, fast_config(tmp_path, tiny_imagenet))
    script = (
        "import sys, luigi, tasks\n"
        "seen = set()\n"
        "def walk(task):\n"
        "    if task.task_id not in seen:\n"
        "        seen.add(task.task_id)\n"
        "        task.complete()\n"
        "        for dep in luigi.task.flatten(task.requires()):\n"
        "            walk(dep)\n"
        "walk(tasks.RunAll())\n"
        "print(len(seen), sorted(m for m in ('torch', 'torchvision', 'pandas', 'faiss') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                          env={"LUIGI_CONFIG_PATH": str(config), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    tasks_seen, heavy = proc.stdout.split(maxsplit=1)
    assert int(tasks_seen) > 10 and heavy.strip() == "[]", proc.stdout
