"""Inside one rank: join the process group, pick the device, wrap the network.

Global rank ``node_rank * processes + local_rank``; on CUDA local rank ``r``
uses GPU ``base + r`` and NCCL, on the CPU gloo. The rendezvous is a TCPStore
hosted by global rank 0 at ``[TrainEpoch] rendezvous``; joining, and every
collective after it, gives up after ``timeout_s`` instead of waiting forever.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from pipeline.distributed.batchnorm import synchronise_batchnorm
from pipeline.distributed.settings import DistributedSettings
from pipeline.distributed.split import BatchShard
from pipeline.errors import ConfigError, PipelineError

class RendezvousError(PipelineError):
    """The ranks of an epoch did not all meet (a peer never started, or an address is wrong)."""


@dataclass(frozen=True)
class LaunchPlan:
    """What every rank of one launch needs to find the others (plain values: it is pickled to them)."""

    settings: DistributedSettings
    host: str
    port: int
    device_type: str
    device_index: int
    threads: int
    prefix: str
    log_level: int = logging.INFO
    parent_pid: int = 0


@dataclass
class RankContext:
    """One rank's place in the world, handed to the launched function."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    shard: BatchShard
    report: Callable[[tuple], None]

    @property
    def writes(self) -> bool:
        """Global rank 0 alone writes checkpoints, step logs and partial checkpoints."""
        return self.rank == 0

    def wrap(self, net: nn.Module) -> nn.Module:
        """``net`` with synchronised batch norm, inside DistributedDataParallel (``net`` stays the
        module to save: its state dict keeps the one-process layout)."""
        synced = synchronise_batchnorm(net, self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer broadcast before each forward: synchronised batch norm updates them identically on every rank.
        return nn.parallel.DistributedDataParallel(synced, device_ids=ids, forward_sync_buffers=False)

    def check_same(self, value: object, what: str) -> None:
        """Raise :class:`ConfigError` unless every rank holds the same ``value``.

        Each rank reads the shared artifacts folder on its own; a node whose view of
        it differs (a partial checkpoint another node cannot see yet, or another
        triplet list) would otherwise feed different steps' images into one loss.
        """
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        if any(v != values[0] for v in values):
            raise ConfigError(f"the ranks disagree on {what}: {values}; every node must see the same files "
                              "under the shared artifacts root (check that [artifacts] root is the same shared "
                              "folder on every machine), then rerun the epoch")

    def on_step(self, step: int, total: int, row: Mapping[str, Any]) -> None:
        """Per-step callback of every rank (a :data:`~pipeline.training.loop.StepProgress`):
        rank 0 reports progress, with the step's log row, to the launcher."""
        if self.writes:
            self.report(("progress", step, total, dict(row)))


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this rank when the launching process dies (even by SIGKILL), so an
    orphan never keeps training, or writes the epoch, behind a rerun's back.

    A launcher that died while this rank was still importing (before the request) is
    caught by its pid: the rank was handed to init by then, and exits at once.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def join_group(plan: LaunchPlan, local_rank: int, report: Callable[[tuple], None]) -> RankContext:
    """Meet the other ranks at the rendezvous and start the process group; raises
    :class:`RendezvousError` naming the settings when they do not all come within ``timeout_s``."""
    s = plan.settings
    rank = s.global_rank(local_rank)
    if plan.device_type == "cuda":
        device = torch.device("cuda", plan.device_index + local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    torch.set_num_threads(plan.threads)
    timeout = timedelta(seconds=s.timeout_s)
    where = f"{plan.host}:{plan.port}"
    try:
        store = dist.TCPStore(plan.host, plan.port, s.world_size, is_master=rank == 0, timeout=timeout,
                              wait_for_workers=True)
        dist.init_process_group(backend, store=dist.PrefixStore(plan.prefix, store), rank=rank,
                                world_size=s.world_size, timeout=timeout)
    except Exception as exc:  # (torch raises DistStoreError, RuntimeError, DistNetworkError...)
        raise RendezvousError(
            f"rank {rank} of {s.world_size}: the ranks did not all meet at {where} within {s.timeout_s:g} s "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Start the same TrainEpoch "
            f"with --node-rank 0 .. {s.nnodes - 1} on every machine, check [TrainEpoch] rendezvous (node 0's "
            "address, reachable from every node, and a free port) and raise [TrainEpoch] timeout_s if a node "
            "starts late") from exc
    return RankContext(rank=rank, local_rank=local_rank, world_size=s.world_size, device=device,
                       shard=BatchShard(rank=rank, world=s.world_size), report=report)


def leave_group(ctx: RankContext) -> None:
    """Wait until every rank is done (rank 0 has written its files by then), then close the group."""
    dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    dist.destroy_process_group()


def run_rank(local_rank: int, target: Callable[..., Any], args: tuple, plan: LaunchPlan, queue: Any) -> None:
    """Entry point of a spawned rank: run ``target(ctx, *args)``; rank 0 sends its result back.

    An exception goes back too (the launcher re-raises a :class:`PipelineError` as itself,
    e.g. a diverging loss) before the rank exits non-zero.
    """
    die_with_parent(plan.parent_pid)
    rank = plan.settings.global_rank(local_rank)
    # A spawned rank starts with no logging set up: rank 0 logs like the task (resuming, saves),
    # the others only warnings, so each message shows once.
    logging.basicConfig(level=plan.log_level if rank == 0 else max(plan.log_level, logging.WARNING),
                        format=f"%(levelname)s: [rank {rank}] %(message)s")
    try:
        ctx = join_group(plan, local_rank, queue.put)
        result = target(ctx, *args)
        leave_group(ctx)
        if ctx.writes:
            queue.put(("result", pickle.dumps(result)))
    except BaseException as exc:
        queue.put(("error", local_rank, portable(exc, rank)))
        raise


def portable(exc: BaseException, rank: int) -> bytes:
    """``exc`` pickled to cross to the launcher, or a RuntimeError with its text when it does not pickle.

    Values cross as bytes of the standard pickler: the queue's own pickler would
    share tensors through file descriptors that vanish when the rank exits.
    """
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001
        return pickle.dumps(RuntimeError(f"rank {rank}: {type(exc).__name__}: {exc}"))
