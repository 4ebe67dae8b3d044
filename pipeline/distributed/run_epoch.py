"""Produce one epoch's folder: the library entry ``TrainEpoch`` calls, whatever the layout.

:func:`run_epoch` picks the path: epoch 0 (the initial network), one process, or
several ranks when ``processes`` or ``nnodes`` is above 1; a machine with
``node_rank`` above 0 calls :func:`join_epoch` instead (the ``JoinEpoch`` task).
Every path writes the epoch through :func:`~pipeline.training.epoch.write_epoch`.

On several ranks, every rank runs :func:`pipeline.training.epoch.train_epoch` on the same inputs,
with its slice of each step (:mod:`pipeline.distributed.split`); the steps, the
triplet list, the augmentations and the partial checkpoints' fingerprint do not
depend on the number of ranks, so a partial checkpoint written with N ranks
resumes with any other N, one process included. Global rank 0 alone writes: the
partial checkpoints, then the epoch folder (atomically, as the one-process path
does) before a final barrier, so when any node's task returns the epoch is on
the shared storage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch

from pipeline.distributed.launch import launch, make_plan
from pipeline.distributed.rank import RankContext, RendezvousError
from pipeline.distributed.settings import DistributedSettings
from pipeline.errors import ConfigError
from pipeline.network import WeightSettings
from pipeline.training.epoch import epoch_summary, train_epoch, write_epoch
from pipeline.training.loop import empty_step_log
from pipeline.training.settings import EpochSettings, PartialSaveSettings
from pipeline.training.state import initial_state
from pipeline.training.loop import StepProgress


def run_epoch(out_dir: str | Path, settings: EpochSettings, *, epoch: int, seed: int, device: torch.device,
              weights: WeightSettings = WeightSettings(), previous_checkpoint: str | Path | None = None,
              triplet_dir: str | Path | None = None, dataset_dir: str | Path | None = None,
              distributed: DistributedSettings = DistributedSettings(), threads: int = 0,
              saves: PartialSaveSettings = PartialSaveSettings(), store_prefix: str = "",
              progress: StepProgress | None = None) -> dict[str, Any]:
    """Write epoch ``epoch``'s folder ``out_dir`` (checkpoint, step log, summary) and return its summary.

    Epoch 0 is the initial network (``weights``); a later epoch trains from
    ``previous_checkpoint`` over ``triplet_dir``, in this process or, when
    ``distributed`` says so, on several ranks (global rank 0 writes). ``node_rank``
    must be 0 here: the other machines call :func:`join_epoch`.
    """
    settings.check()
    distributed.check()
    if distributed.node_rank > 0:
        raise ConfigError(f"[TrainEpoch] node_rank = {distributed.node_rank}: machines other than node 0 join "
                          "node 0's epochs with `luigi --module tasks JoinEpoch`")
    if epoch == 0:
        state = initial_state(settings.model, weights, settings.train, seed=seed, config=settings.config)
        write_epoch(out_dir, state, empty_step_log())
    elif distributed.distributed:
        train_epoch_on_ranks(previous_checkpoint, triplet_dir, dataset_dir, out_dir, settings, distributed,
                             epoch=epoch, seed=seed, device=device, threads=threads, saves=saves,
                             store_prefix=store_prefix, progress=progress)
    else:
        state, step_log = train_epoch(previous_checkpoint, triplet_dir, dataset_dir, out_dir, settings, epoch=epoch,
                                      seed=seed, device=device, saves=saves, progress=progress)
        write_epoch(out_dir, state, step_log)
    return epoch_summary(out_dir)


def train_epoch_on_ranks(previous_checkpoint: str | Path, triplet_dir: str | Path, dataset_dir: str | Path,
                         out_dir: str | Path, settings: EpochSettings, distributed: DistributedSettings, *,
                         epoch: int, seed: int, device: torch.device, threads: int = 0,
                         saves: PartialSaveSettings = PartialSaveSettings(), store_prefix: str = "",
                         progress: StepProgress | None = None) -> None:
    """Train ``epoch`` with this machine's ranks (and the other nodes'); on return the epoch
    folder ``out_dir`` is written (by global rank 0) and its partial checkpoint removed.

    ``device``: cpu (gloo) or cuda[:base] (NCCL, one GPU per rank from ``base``);
    ``threads``: torch threads per rank (0 = this machine's cores shared out).
    ``store_prefix`` keeps one epoch's rendezvous keys apart from another's.
    """
    plan = make_plan(distributed, device, threads, store_prefix or f"epoch={epoch}")
    launch(_train_rank, (str(previous_checkpoint), str(triplet_dir), str(dataset_dir), str(out_dir), settings,
                         epoch, seed, saves), plan, progress)


def _train_rank(ctx: RankContext, previous_checkpoint: str, triplet_dir: str, dataset_dir: str, out_dir: str,
                settings: EpochSettings, epoch: int, seed: int, saves: PartialSaveSettings) -> None:
    state, step_log = train_epoch(previous_checkpoint, triplet_dir, dataset_dir, out_dir, settings, epoch=epoch,
                                  seed=seed, device=ctx.device, saves=saves, progress=ctx.on_step, rank=ctx)
    if ctx.writes:
        write_epoch(out_dir, state, step_log)


def wait_for_inputs(paths: Sequence[str | Path], distributed: DistributedSettings, poll_s: float = 1.0) -> None:
    """On a node > 0: wait (up to ``timeout_s``) until node 0 has written the epoch's inputs to
    the shared artifacts folder; that node runs the graph, this one only joins the training."""
    deadline = time.monotonic() + distributed.timeout_s
    missing = [Path(p) for p in paths]
    while missing := [p for p in missing if not p.exists()]:
        if time.monotonic() > deadline:
            raise RendezvousError(
                f"node {distributed.node_rank}: {', '.join(map(str, missing))} did not appear within "
                f"{distributed.timeout_s:g} s ([TrainEpoch] timeout_s). Node 0 writes them while it runs the graph "
                "(e.g. RunAll); start it, and make [artifacts] root the same shared folder on every machine")
        time.sleep(poll_s)


def join_epoch(previous_checkpoint: str | Path, triplet_dir: str | Path, dataset_dir: str | Path,
               out_dir: str | Path, settings: EpochSettings, distributed: DistributedSettings, *, epoch: int,
               seed: int, device: torch.device, threads: int = 0,
               saves: PartialSaveSettings = PartialSaveSettings(), store_prefix: str = "") -> None:
    """What a node > 0 runs for ``epoch``: wait for node 0's inputs on the shared artifacts
    folder, train with its ranks, and check that node 0's epoch folder is visible here."""
    settings.check()
    distributed.check()
    if distributed.node_rank == 0 or epoch == 0:
        raise ConfigError(f"JoinEpoch --epoch {epoch} --node-rank {distributed.node_rank}: a joining machine is "
                          "node 1 .. nnodes-1 and trains epochs from 1 (node 0 runs the graph, with RunAll or "
                          "TrainEpoch, and writes the initial network alone)")
    wait_for_inputs([previous_checkpoint, triplet_dir, dataset_dir], distributed)
    train_epoch_on_ranks(previous_checkpoint, triplet_dir, dataset_dir, out_dir, settings, distributed, epoch=epoch,
                         seed=seed, device=device, threads=threads, saves=saves, store_prefix=store_prefix)
    if not Path(out_dir).is_dir():
        raise RendezvousError(f"node {distributed.node_rank}: epoch {epoch} trained, but node 0's {out_dir} is not "
                              "visible here; [artifacts] root must be the same shared folder on every machine")
