"""A real central scheduler: two `luigi --module tasks RunAll` worker processes
against one `luigid` share the graph, every task runs exactly once and the
report is complete."""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import fast_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNNING = re.compile(r"\) running   (\w+\(.*\))$", re.MULTILINE)
EXPECTED_RUNS = {  # task family -> runs for epochs = 2
    "IndexDataset": 1, "PixelBaseline": 1, "TripletList": 2, "TrainEpoch": 3, "EmbedEpoch": 3,
    "ValidateEpoch": 3, "Report": 1, "RunAll": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def scheduler_api(port: int, method: str, **data) -> dict:
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?{query}", timeout=5) as r:
        return json.loads(r.read())["response"]


def wait_until_up(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"luigid exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            scheduler_api(port, "task_list", status="", upstream_status="")
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"luigid did not answer on port {port} within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_workers_share_one_central_scheduler(configure, tmp_path, tiny_imagenet):
    port = free_port()
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["core"] = {"local_scheduler": "false", "default_scheduler_host": "127.0.0.1",
                   "default_scheduler_port": port, "log_level": "INFO"}
    # As in the repository's luigi.cfg: wait for tasks another worker runs; one GPU job at a time.
    cfg["worker"] = {"keep_alive": "true", "check_complete_on_run": "true", "wait_interval": "0.2"}
    cfg["resources"] = {"gpu": 1}
    config = configure(cfg)
    env = env_for(config)

    server_log = tmp_path / "luigid.out"
    (tmp_path / "log").mkdir()
    with open(server_log, "wb") as out:
        server = subprocess.Popen(
            [str(BIN / "luigid"), "--port", str(port), "--address", "127.0.0.1",
             "--state-path", str(tmp_path / "state.pickle"), "--logdir", str(tmp_path / "log")],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen] = []
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    try:
        wait_until_up(server, port, server_log)
        for log in logs:
            with open(log, "wb") as out:
                workers.append(subprocess.Popen(
                    # --no-lock: the same command twice on one machine (luigi's pid lock would
                    # otherwise turn the second one away as "already running").
                    [str(BIN / "luigi"), "--module", "tasks", "RunAll", "--no-lock",
                     "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)],
                    cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT))
        codes = []
        for proc in workers:
            try:
                codes.append(proc.wait(timeout=300))
            except subprocess.TimeoutExpired:
                codes.append(None)
        texts = [log.read_text(errors="replace") for log in logs]
        assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)

        # Each task ran in exactly one of the two workers, exactly once.
        runs = collections.Counter(m for t in texts for m in RUNNING.findall(t))
        assert runs and set(runs.values()) == {1}, runs
        families = collections.Counter(name.split("(")[0] for name in runs)
        assert families == EXPECTED_RUNS, families
        for text in texts:  # both took part: scheduled the graph with luigid and waited for it to finish
            assert "already running" not in text
            assert "Done scheduling tasks" in text and "This progress looks :)" in text

        # The scheduler saw the whole graph done, and nothing failed or pending.
        done = scheduler_api(port, "task_list", status="DONE", upstream_status="")
        assert collections.Counter(v["name"] for v in done.values()) == EXPECTED_RUNS
        for status in ("FAILED", "PENDING", "RUNNING"):
            assert scheduler_api(port, "task_list", status=status, upstream_status="") == {}, status
        workers_seen = scheduler_api(port, "worker_list")
        assert len({w["name"] for w in workers_seen}) == 2
    finally:
        for proc in workers:
            stop(proc)
        stop(server)

    report = tmp_path / "artifacts" / "test" / "report" / "epochs=002"
    for name in ("index.html", "summary.md", "loss.png", "accuracy.png", "nearest.png", "farthest.png"):
        assert (report / name).is_file(), name
    assert "data:image/png;base64" in (report / "index.html").read_text()
    for epoch in range(3):
        assert (tmp_path / "artifacts" / "test" / "metrics" / f"epoch={epoch:03d}.json").is_file()
    # The scheduler saved its state on shutdown where it was told to.
    assert (tmp_path / "state.pickle").is_file()
