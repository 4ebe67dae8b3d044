"""Parts of ``bench/gpu_check.py`` that drive real commands: the machine (``env``), the
GPU tests (``tests``), CPU/GPU agreement of two epochs of ``RunAll`` (``agree``) and
two-GPU data-parallel training (``ddp``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gpu_check_rows import REPO, SHIPPED_CFG, Row, cfg_value, last_error

from pipeline import paths
from pipeline.evaluation.metric_names import precision_key

AGREE_TOLERANCE = 0.01
EXPERIMENT = "gpu-check"


def child_env(config: Path = SHIPPED_CFG) -> dict[str, str]:
    """The environment of the commands: this checkout importable, the shipped luigi.cfg (read from
    the working directory, the checkout) with ``config`` on top."""
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def luigi_command(*args: str) -> list[str]:
    """``luigi --module tasks ...`` with this interpreter's luigi (``python -m luigi`` without the script)."""
    script = Path(sys.executable).with_name("luigi")
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "luigi"]
    return [*base, "--module", "tasks", *args, "--no-lock"]


_STARTED: list[subprocess.Popen] = []


def _stop_started(signum: int, _frame: object) -> None:
    """SIGTERM from the orchestrator (time limit): end the commands this part started, then exit."""
    for proc in _STARTED:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(128 + signum)


def stopped_while(log: Path) -> str:
    """Which task a command stopped at the time limit was running, from its luigi log."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    running = re.findall(r"running\s+(\w+)\(([^,)]*(?:, [^,)]*)?)", text)
    return f"while running {running[-1][0]}({running[-1][1]}, ...)" if running else "before any task ran"


def outcome(code: int | None, seconds: float, log: Path) -> str:
    """A failed command for the table: stopped at the limit, or its exit code and error."""
    if code is None:
        return f"stopped at the time limit after {seconds:.0f} s, {stopped_while(log)}"
    return f"exit {code} after {seconds:.0f} s: {last_error(log)}"


def run_all(commands: dict[str, list[str]], logs: Path, seconds: float,
            config: Path = SHIPPED_CFG) -> dict[str, tuple[int | None, float]]:
    """Run ``commands`` side by side, each in its own process group; ``(exit code or None if it
    was stopped at the time limit, wall seconds)`` by name."""
    procs, started = {}, time.perf_counter()
    signal.signal(signal.SIGTERM, _stop_started)
    for name, cmd in commands.items():
        with open(logs / f"{name}.log", "w") as out:
            procs[name] = subprocess.Popen(cmd, cwd=REPO, env=child_env(config), stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            _STARTED.append(procs[name])
    done: dict[str, tuple[int | None, float]] = {}
    while len(done) < len(procs):
        for name, proc in procs.items():
            if name not in done and proc.poll() is not None:
                done[name] = (proc.returncode, time.perf_counter() - started)
        if time.perf_counter() - started > seconds:
            for name, proc in procs.items():
                if name not in done:
                    os.killpg(proc.pid, signal.SIGKILL)  # its luigi workers too
                    proc.wait()
                    done[name] = (None, time.perf_counter() - started)
        time.sleep(0.2)
    return done


def run_env(args, rec: Callable[[Row], None]) -> None:
    """The ``env`` part: what the check runs on, and the GPU count the later parts need."""
    import torch

    cores = os.cpu_count()
    base = f"torch {torch.__version__}, {cores} CPU cores"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "cpu":
        rec(Row("env", "device", f"cpu dry run ({base}; CUDA GPUs here: {gpus})", "", "info", {"gpus": gpus}))
        return
    if gpus == 0:
        rec(Row("env", "device", f"no CUDA GPU ({base}, CUDA build {torch.version.cuda})", "a CUDA GPU", "FAIL",
                {"gpus": 0}))
        return
    names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(gpus)}))
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    rec(Row("env", "device", f"{gpus} x {names} ({memory:.0f} GiB), {base}, CUDA {torch.version.cuda}, "
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}", "", "info", {"gpus": gpus}))


def gpu_test_files() -> list[Path]:
    """Test modules with GPU cases (those that ask for CUDA), this check's own test left out."""
    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        if path.name != "test_gpu_check.py" and re.search(r"cuda\.is_available|cuda\.device_count|mark\.gpu",
                                                          path.read_text(errors="replace")):
            found.append(path)
    return found


def run_tests(args, rec: Callable[[Row], None]) -> None:
    """The ``tests`` part: pytest over the modules with GPU cases (their CPU cases run too)."""
    files = gpu_test_files()
    log = args.workdir / "logs" / "pytest.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *map(str, files)]
    check = f"GPU tests ({', '.join(f.name for f in files)})"
    try:
        proc = subprocess.run(cmd, check=False, cwd=REPO, env=child_env(), capture_output=True, text=True,
                              timeout=max(5.0, args.part_seconds - 5))
    except subprocess.TimeoutExpired as exc:
        log.write_text(str(exc.stdout or ""))
        rec(Row("tests", check, f"timed out after {args.part_seconds - 5:.0f} s", "all pass", "FAIL"))
        return
    log.write_text(proc.stdout + proc.stderr)
    last = proc.stdout.splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no summary"
    skipped = sorted({m.strip() for m in re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", proc.stdout)})
    value = summary + (f" (skipped: {'; '.join(skipped)})" if skipped else "")
    if proc.returncode != 0:
        rec(Row("tests", check, f"exit {proc.returncode}: {value}; {last_error(log)}", "all pass", "FAIL"))
    elif args.device == "cpu":
        rec(Row("tests", check, value, "all pass on a GPU", "skip"))
    else:
        rec(Row("tests", check, value, "all pass", "pass"))


def read_precision(root: Path, epoch: int, k: int) -> float:
    metrics = paths.metrics_file(root, EXPERIMENT, epoch)
    return float(json.loads(metrics.read_text())[precision_key(k)])


def run_agree(args, rec: Callable[[Row], None]) -> None:
    """The ``agree`` part: ``RunAll --epochs 2`` on CPU and on CUDA side by side, same seed;
    their validation precision@k must agree within ``AGREE_TOLERANCE``.

    The CPU dry run compares two CPU runs of shorter epochs instead: it proves the
    commands and the comparison, and CPU runs must then agree exactly.
    """
    epochs, k = 2, int(cfg_value(SHIPPED_CFG, "ValidateEpoch", "k"))
    other = "cpu2" if args.device == "cpu" else "cuda"
    cores = os.cpu_count() or 2
    extra = {"cpu": ["--compute-device", "cpu", "--compute-threads", str(max(1, cores - 2) if other == "cuda" else 1)],
             "cuda": ["--compute-device", "cuda"], "cpu2": ["--compute-device", "cpu", "--compute-threads", "1"]}
    quick = ["--TripletList-image-passes", "1"] if args.quick else []
    commands = {name: luigi_command("RunAll", "--experiment", EXPERIMENT, "--epochs", str(epochs), "--artifacts-root",
                                    str(args.workdir / f"agree-{name}"), *extra[name], *quick)
                for name in ("cpu", other)}
    results = run_all(commands, args.workdir / "logs", max(5.0, args.part_seconds - 5))
    values = {}
    for name in commands:
        code, seconds = results[name]
        what = f"precision@{k} after {epochs} epochs, RunAll on {name}"
        if code != 0:
            rec(Row("agree", what, outcome(code, seconds, args.workdir / "logs" / f"{name}.log"), "", "FAIL"))
            continue
        try:
            values[name] = read_precision(args.workdir / f"agree-{name}", epochs, k)
        except (OSError, KeyError, ValueError) as exc:
            rec(Row("agree", what, f"no metric: {exc}"[:240], "", "FAIL"))
            continue
        rec(Row("agree", what, f"{values[name]:.4f} (command took {seconds:.0f} s)"))
    if len(values) == 2:
        diff = abs(values["cpu"] - values[other])
        rec(Row("agree", f"precision@{k} agreement, cpu vs {other} (same seed)", f"|difference| = {diff:.4f}",
                f"<= {AGREE_TOLERANCE}", "pass" if diff <= AGREE_TOLERANCE else "FAIL"))


def run_ddp(args, rec: Callable[[Row], None]) -> None:
    """The ``ddp`` part: ``TrainEpoch --processes 2`` on two GPUs, when the flag and the GPUs are there."""
    from tasks.epoch import TrainEpoch

    check = "2-GPU DDP: TrainEpoch --epoch 1 --processes 2"
    if "processes" not in dict(TrainEpoch.get_params()):
        rec(Row("ddp", check, "needs --processes (not available)", "exits 0", "skip"))
        return
    if args.device == "cpu":
        rec(Row("ddp", check, "GPU only (not run in the CPU dry run)", "exits 0", "skip"))
        return
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        rec(Row("ddp", check, f"needs 2 GPUs (found {gpus})", "exits 0", "skip"))
        return
    root = args.workdir / "agree-cuda"  # reuses the agree part's dataset index when it ran
    cmd = luigi_command("TrainEpoch", "--experiment", "gpu-check-ddp", "--epoch", "1", "--processes", "2",
                        "--artifacts-root", str(root), "--compute-device", "cuda")
    two_gpus = args.workdir / "two-gpus.cfg"  # each rank holds one unit of the scheduler's gpu resource
    two_gpus.write_text("[resources]\ngpu = 2\n")
    code, seconds = run_all({"ddp": cmd}, args.workdir / "logs", max(5.0, args.part_seconds - 5), two_gpus)["ddp"]
    if code != 0:
        rec(Row("ddp", check, outcome(code, seconds, args.workdir / "logs" / "ddp.log"), "exits 0", "FAIL"))
        return
    value = f"exit 0, command {seconds:.0f} s"
    summaries = [paths.train_dir(root, e, 1) / paths.TRAIN_SUMMARY_FILE for e in ("gpu-check-ddp", EXPERIMENT)]
    if all(s.is_file() for s in summaries):
        two, one = (json.loads(s.read_text()).get("seconds") or 0.0 for s in summaries)
        value += f"; epoch 1 trained in {two:.1f} s on 2 GPUs vs {one:.1f} s on 1 ({one / max(two, 1e-9):.2f}x)"
    rec(Row("ddp", check, value, "exits 0", "pass"))
