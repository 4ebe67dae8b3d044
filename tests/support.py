"""What the tests share besides fixtures: the fast configuration, Luigi in-process
(:func:`build`, :func:`assert_succeeded`) and the real command in a subprocess
(:func:`luigi_cli`, :func:`assert_failed`).

In-process builds test behaviour cheaply; the command-line helpers run
``luigi --module tasks ...`` from the repository root, so the shipped
``luigi.cfg`` applies with a small LUIGI_CONFIG_PATH file on top, and a command
that hangs fails its test through the timeout.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import luigi
from luigi.execution_summary import LuigiRunResult, LuigiStatusCode

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = 120  # seconds; every command the tests run ends in a few


@dataclass
class Outcome:
    code: int
    output: str
    seconds: float


def write_overrides(tmp_path: Path, sections: dict[str, dict[str, object]], name: str = "override.cfg") -> Path:
    """Write ``sections`` as a Luigi config file under ``tmp_path``; returns its path.

    It also keeps Luigi's pid lock (one running command per command line and user)
    under ``tmp_path``, so tests running side by side (``pytest -n 2``) never turn
    each other's commands away; a test of the lock still sees its own commands meet.
    """
    path = tmp_path / name
    sections = {**sections, "core": {"lock_pid_dir": tmp_path / "luigi-locks", **sections.get("core", {})}}
    lines = []
    for section, values in sections.items():
        lines += [f"[{section}]", *(f"{k} = {v}" for k, v in values.items()), ""]
    path.write_text("\n".join(lines))
    return path


def overrides(tmp_path: Path, dataset_root: Path, **changes: dict[str, object]) -> dict[str, dict[str, object]]:
    """The test data settings on top of the shipped luigi.cfg ([core], [worker], [retcode] and the
    batched lists stay shipped)."""
    cfg = fast_config(tmp_path, dataset_root, shipped_lists=True)
    cfg["run"]["epochs"] = 1
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def luigi_cli(args: list[str], config: Path, cwd: Path = REPO, timeout: float = TIMEOUT,
              pythonpath: list[Path] = ()) -> Outcome:
    env = dict(os.environ)
    env.update(LUIGI_CONFIG_PATH=str(config), PYTHONPATH=os.pathsep.join(map(str, [*pythonpath, REPO])),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "luigi"), "--module", "tasks", *args], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    return Outcome(proc.returncode, proc.stdout, time.monotonic() - started)


def shipped_retcode(name: str) -> int:
    parser = configparser.ConfigParser()
    parser.read(REPO / "luigi.cfg")
    return parser.getint("retcode", name)


def assert_failed(outcome: Outcome, *expected: str, code: str = "task_failed") -> None:
    assert outcome.code == shipped_retcode(code), outcome.output[-4000:]
    assert "===== Luigi Execution Summary =====" in outcome.output
    for text in expected:
        assert text in outcome.output, (text, outcome.output[-4000:])


def fast_config(tmp_path: Path, dataset_root: Path, source: str = "tiny-imagenet", *,
                shipped_lists: bool = False) -> dict[str, dict[str, object]]:
    """A configuration that runs the whole graph in seconds on tiny data.

    Its triplet lists are plain uniform ones, one row per training image; with
    ``shipped_lists`` it leaves ``[TripletList] strategy`` and ``triplets_per_query``
    unset, so layered over the shipped luigi.cfg it keeps that file's batched lists.
    """
    lists = {} if shipped_lists else {"strategy": "uniform", "triplets_per_query": 1}
    return {
        "artifacts": {"root": tmp_path / "artifacts"},
        "run": {"experiment": "test", "seed": 0, "epochs": 2},
        "dataset": {"source": source, "root": dataset_root, "stored_size": 16, "dask_scheduler": "synchronous"},
        "model": {"arch": "resnet18", "width": 8, "embedding_dim": 8, "stem": "small-s2"},
        "TripletList": {**lists, "dask_scheduler": "synchronous", "n_blocks": 2},
        "TrainEpoch": {"batch_size": 8, "lr": 0.01},
        "EmbedEpoch": {"batch_size": 32},
        "compute": {"device": "cpu", "threads": 1},
        "ValidateEpoch": {"train_queries": 12, "figure_queries": 2, "figure_k": 3, "triplets": 30},
    }


def build(tasks: list[luigi.Task], workers: int = 1) -> LuigiRunResult:
    """Run tasks in-process as the tests' single entry point into Luigi."""
    return luigi.build(tasks, local_scheduler=True, detailed_summary=True, workers=workers)


def assert_succeeded(result: LuigiRunResult) -> LuigiRunResult:
    """Fail with Luigi's summary unless the build succeeded; returns ``result``."""
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    return result


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server the tests started, killing it if it does not exit within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
