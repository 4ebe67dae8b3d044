"""A whole training epoch from its saved inputs: the previous checkpoint, the
epoch's triplet list and the dataset's pixel store.

:mod:`pipeline.distributed.run_epoch` picks the path (epoch 0, one process, several
ranks) and every path writes through :func:`write_epoch`; both are free of Luigi,
so scripts, benchmarks and other schedulers produce an epoch the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from pipeline import paths
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.data.pixel_store import open_store
from pipeline.network import network_from_checkpoint
from pipeline.seeds import training_epoch_seed
from pipeline.storage import atomic_path
from pipeline.training.loop import PartialSaves, StepProgress, train_one_epoch
from pipeline.training.optimization import make_lr_scheduler, make_optimizer
from pipeline.training.partial import fingerprint, load_partial, partial_path, remove_partial, save_partial
from pipeline.training.rank_protocol import EpochRank
from pipeline.training.settings import EpochSettings, PartialSaveSettings
from pipeline.training.state import checkpoint_state, lr_scheduler_state
from pipeline.training.steps import training_steps


def train_epoch(previous_checkpoint: str | Path, triplet_dir: str | Path, dataset_dir: str | Path,
                out_dir: str | Path, settings: EpochSettings, *, epoch: int, seed: int, device: torch.device,
                saves: PartialSaveSettings = PartialSaveSettings(),
                progress: StepProgress | None = None,
                rank: EpochRank | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train ``epoch`` from epoch ``epoch - 1``'s checkpoint; return the new checkpoint dict and the step log.

    Progress is saved now and then beside ``out_dir`` (the epoch's final folder,
    which the caller writes), and a rerun after a kill resumes from it: see
    :mod:`pipeline.training.partial`.

    ``rank``: this process is one rank of a distributed epoch
    (:mod:`pipeline.distributed.epoch`): the network is wrapped for data-parallel
    training with the step's images split across the ranks; only the writing
    rank saves partial checkpoints and shows a progress bar.
    """
    started = time.perf_counter()
    prev = load_checkpoint(previous_checkpoint)
    torch.manual_seed(training_epoch_seed(seed, epoch))
    steps, identity = training_steps(triplet_dir, settings.train.batch_size)
    partial = partial_path(out_dir)
    digest = fingerprint(identity, {"config": settings.config, "epoch": epoch, "augment": asdict(settings.augment)})
    resumed = load_partial(partial, digest)
    if rank is not None:
        rank.check_same((digest, resumed[1].step if resumed else 0), "the triplet list, settings or resume step")
    net = network_from_checkpoint(prev, settings.model, device, f"epoch {epoch - 1}")
    if resumed:
        net.load_state_dict(resumed[0]["model"])
    model = rank.wrap(net) if rank is not None else net
    optimizer = make_optimizer(net, settings.train)
    optimizer.load_state_dict(resumed[0]["optimizer"] if resumed else prev["optimizer"])
    lr_scheduler = make_lr_scheduler(optimizer, settings.train)
    lr_scheduler.load_state_dict(lr_scheduler_state(prev))
    writes = rank is None or rank.writes
    plan = PartialSaves(save=lambda done: save_partial(partial, net, optimizer, done, digest),
                        every_steps=saves.checkpoint_every, every_seconds=60.0 * saves.checkpoint_minutes)
    step_log = train_one_epoch(model, optimizer, steps, open_store(dataset_dir), settings.train, loss=settings.loss,
                               epoch=epoch, seed=seed, device=device, augment_settings=settings.augment,
                               progress=progress, resume=resumed[1] if resumed else None,
                               saves=plan if writes else None, show_bar=writes,
                               shard=rank.shard if rank is not None else None)
    lr_scheduler.step()
    state = checkpoint_state(net, optimizer, lr_scheduler, epoch=epoch, config=settings.config, device=str(device),
                             seconds=round(time.perf_counter() - started, 3))
    return state, step_log


def write_epoch(out_dir: str | Path, state: Mapping[str, Any], step_log: pd.DataFrame) -> None:
    """Write an epoch's folder ``out_dir`` atomically: the checkpoint, the step log and a small
    summary that readers use instead of the checkpoint; then drop the epoch's partial checkpoint.

    The one writer of every path (epoch 0, one process, global rank 0 of several).
    """
    with atomic_path(out_dir, is_dir=True) as folder:
        save_checkpoint(folder / paths.CHECKPOINT_FILE, dict(state))
        step_log.to_parquet(folder / paths.STEP_LOG_FILE, index=False)
        summary = {"epoch": state["epoch"], "seconds": state.get("seconds"), "steps": len(step_log),
                   "loss": float(step_log["loss"].mean()) if len(step_log) else None,
                   "active_fraction": float(step_log["active_fraction"].mean()) if len(step_log) else None}
        (folder / paths.TRAIN_SUMMARY_FILE).write_text(json.dumps(summary))
    remove_partial(partial_path(out_dir))


def epoch_summary(train_dir: str | Path) -> dict[str, Any]:
    """An epoch folder's summary: ``epoch``, ``seconds``, ``steps`` and the step log's mean ``loss`` and
    ``active_fraction`` (None for epoch 0), without loading the checkpoint."""
    return json.loads((Path(train_dir) / paths.TRAIN_SUMMARY_FILE).read_text())


def steps_before(train_root: str | Path, epoch: int) -> int:
    """How many steps the epochs before ``epoch`` trained, from the summaries in
    ``train_root`` (``<experiment>/train``): where ``epoch``'s steps start on a run-wide axis."""
    return sum(epoch_summary(Path(train_root) / paths.epoch_dir(e))["steps"] for e in range(1, epoch))


def epoch_seconds(train_dir: str | Path) -> float | None:
    """Seconds an epoch took, from its summary; None for a folder without one."""
    return epoch_summary(train_dir).get("seconds") if (Path(train_dir) / paths.TRAIN_SUMMARY_FILE).is_file() else None
