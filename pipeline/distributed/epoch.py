"""One training epoch on several ranks: what ``TrainEpoch`` runs when
``processes`` or ``nnodes`` is above 1.

Every rank runs :func:`pipeline.training.epoch.train_epoch` on the same inputs,
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
from typing import Callable, Sequence

import torch

from pipeline.atomic import atomic_path
from pipeline.distributed.launch import launch, make_plan
from pipeline.distributed.rank import RankContext, RendezvousError
from pipeline.distributed.settings import DistributedSettings
from pipeline.training.epoch import EpochSettings, finish_epoch, train_epoch, write_epoch
from pipeline.training.partial import PartialSaveSettings


def train_epoch_on_ranks(previous_checkpoint: str | Path, triplet_dir: str | Path, dataset_dir: str | Path,
                         out_dir: str | Path, settings: EpochSettings, distributed: DistributedSettings, *,
                         epoch: int, seed: int, device: torch.device, threads: int = 0,
                         saves: PartialSaveSettings = PartialSaveSettings(), store_prefix: str = "",
                         progress: Callable[[int, int, float], None] | None = None) -> None:
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
        with atomic_path(out_dir, is_dir=True) as tmp:
            write_epoch(tmp, state, step_log)
        finish_epoch(out_dir)


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
    wait_for_inputs([previous_checkpoint, triplet_dir, dataset_dir], distributed)
    train_epoch_on_ranks(previous_checkpoint, triplet_dir, dataset_dir, out_dir, settings, distributed, epoch=epoch,
                         seed=seed, device=device, threads=threads, saves=saves, store_prefix=store_prefix)
    if not Path(out_dir).is_dir():
        raise RendezvousError(f"node {distributed.node_rank}: epoch {epoch} trained, but node 0's {out_dir} is not "
                              "visible here; [artifacts] root must be the same shared folder on every machine")
