"""Start the ranks of this machine and wait for them, failing fast.

``launch`` spawns ``processes`` ranks (``torch.multiprocessing``, start method
spawn: no CUDA state or Luigi threads are inherited) and waits for them while
forwarding rank 0's progress. When a rank raises or dies (even by SIGKILL),
spawn's join terminates the others at once and ``launch`` raises; a peer that
never joins, or a hung collective, ends after ``timeout_s``. The ranks are set
to die with the launching process, so killing the task never leaves an orphan
training on.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue as queue_module
import signal
import socket
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from pipeline.distributed.rank import LaunchPlan, run_rank
from pipeline.distributed.settings import DistributedSettings, parse_rendezvous
from pipeline.errors import ConfigError, PipelineError
from pipeline.training.loop import StepProgress


class RankFailedError(PipelineError):
    """A rank died or raised an unexpected error; the epoch wrote nothing."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (for a single machine's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_plan(settings: DistributedSettings, device: torch.device, threads: int, prefix: str) -> LaunchPlan:
    """Where the ranks meet and what each one runs on; ConfigError for an impossible layout."""
    settings.check()
    if settings.rendezvous:
        host, port = parse_rendezvous(settings.rendezvous)
    else:
        host, port = "127.0.0.1", free_port()
    base = device.index or 0
    if device.type == "cuda" and base + settings.processes > torch.cuda.device_count():
        raise ConfigError(f"[TrainEpoch] processes = {settings.processes} ranks from {device} need "
                          f"{base + settings.processes} GPUs; this machine has {torch.cuda.device_count()}")
    if not threads:
        threads = max(1, (os.cpu_count() or 1) // settings.processes)
    return LaunchPlan(settings=settings, host=host, port=port, device_type=device.type, device_index=base,
                      threads=threads, prefix=prefix, log_level=logging.getLogger().getEffectiveLevel(),
                      parent_pid=os.getpid())


def launch(target: Callable[..., Any], args: tuple, plan: LaunchPlan,
           progress: StepProgress | None = None) -> Any:
    """Run ``target(ctx, *args)`` on this machine's ranks; return global rank 0's result
    (None on nodes > 0). Raises the rank's own :class:`PipelineError`, or
    :class:`RankFailedError` naming the rank that failed first and how."""
    messages = mp.get_context("spawn").Queue()
    procs = mp.start_processes(run_rank, args=(target, args, plan, messages), nprocs=plan.settings.processes,
                               join=False, start_method="spawn")
    outcome: dict[str, Any] = {"errors": {}}

    def drain(wait: float = 0.0) -> None:
        while True:
            try:
                item = messages.get(timeout=wait) if wait else messages.get_nowait()
            except queue_module.Empty:
                return
            if item[0] == "progress" and progress is not None:
                progress(*item[1:])
            elif item[0] == "result":
                outcome["result"] = pickle.loads(item[1])
            elif item[0] == "error":
                outcome["errors"].setdefault(item[1], pickle.loads(item[2]))

    try:
        while not procs.join(timeout=0.2, grace_period=2.0):
            drain()
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        drain(wait=0.5)
        raise _failure(exc, outcome["errors"], [p.exitcode for p in procs.processes], plan) from exc
    finally:
        for p in procs.processes:  # a KeyboardInterrupt or a failure above: no rank outlives the launch
            if p.is_alive():
                p.kill()
    drain(wait=0.1)
    return outcome.get("result")


def _failure(exc: mp.ProcessRaisedException | mp.ProcessExitedException, errors: dict[int, BaseException],
             exit_codes: list[int | None], plan: LaunchPlan) -> BaseException:
    """The root cause among the ranks: a pipeline error a rank raised (every rank raises the same
    one for a diverging loss), else a rank killed from outside (its peers then fail in a
    collective, sometimes before the launcher notices), else the first rank that failed."""
    for local in sorted(errors):
        if isinstance(errors[local], PipelineError):
            return errors[local]

    def where(local: int) -> str:
        return (f"rank {plan.settings.global_rank(local)} of {plan.settings.world_size} "
                f"(node {plan.settings.node_rank}, process {local})")

    # Ranks the launcher stopped (after the first failure) exit by SIGTERM; any other signal, or
    # the first failure's own, came from outside.
    killed = [(i, -code) for i, code in enumerate(exit_codes) if code is not None and code < 0
              and (-code != signal.SIGTERM or i == exc.error_index)]
    if killed:
        local, number = killed[0]
        name = signal.Signals(number).name
        hint = " (out of memory?)" if number == signal.SIGKILL else ""
        return RankFailedError(f"{where(local)} was killed by {name}{hint}; the other ranks were stopped and the "
                               "epoch wrote nothing; rerun it to continue from its last partial checkpoint")
    own = errors.get(exc.error_index)
    detail = f"{type(own).__name__}: {own}" if own is not None else ""
    return RankFailedError(f"{where(exc.error_index)} failed: {detail}{str(exc).rstrip()}")
