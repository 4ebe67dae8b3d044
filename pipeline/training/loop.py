"""One training epoch over an offline triplet list, as a pure function.

The three branches of the triplet network share weights, so a step is one
forward pass over its images (which also lets batch norm see queries, positives
and negatives together): 3B images for B rows of a plain list, each distinct
image once for a batch of a batch-structured list (:mod:`pipeline.training.steps`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.data.batches import augment, iterate_batches, to_float
from pipeline.device import autocast
from pipeline.errors import TrainingError
from pipeline.seeds import augment_seed
from pipeline.training.losses import all_triplet_losses, listed_triplet_losses, reduce_losses
from pipeline.training.rank_protocol import StepShard
from pipeline.training.settings import LossSettings, TrainSettings
from pipeline.data.settings import AugmentSettings
from pipeline.training.steps import StepBatch, triplet_steps

log = logging.getLogger(__name__)

# ``loss`` is what the step minimised ([loss] reduce); ``loss_all`` the hinge averaged over
# every triplet of the step, the same as ``loss`` under reduce = mean. Under the default
# reduce = active, ``loss`` averages only the triplets still violating the margin and
# stays near the margin all run long; ``loss_all`` falls as training progresses.
STEP_LOG_COLUMNS = ("epoch", "step", "loss", "active_fraction", "lr", "seconds", "mean_distance", "collapsed",
                    "images", "triplets", "loss_all")
STEP_LOG_DTYPES = ("int64", "int64", "float64", "float64", "float64", "float64", "float64", "bool", "int64", "int64",
                   "float64")
# What a training loop reports after each step: (steps done, steps in the epoch, that
# step's row of the step log by column name). A resumed epoch first replays the rows of
# the steps its partial checkpoint holds, so a listener sees every step once.
StepProgress = Callable[[int, int, Mapping[str, Any]], None]

# A step counts as collapsed when its mean distance is below this share of the margin.
COLLAPSE_TOLERANCE = 1e-3


def empty_step_log() -> pd.DataFrame:
    """The step log of an epoch that trained no step (epoch 0), with its columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(STEP_LOG_COLUMNS, STEP_LOG_DTYPES)})


def step_generator(seed: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    """The augmentation RNG of one step: a pure function of (seed, epoch, step).

    One stream per step (rather than one per epoch) lets an interrupted epoch
    restart at any step with the very augmentations it would have drawn.
    """
    g = torch.Generator(device=device)
    g.manual_seed(augment_seed(seed, epoch, step))
    return g


@dataclass(frozen=True)
class EpochProgress:
    """How far an epoch got: the steps done and their step-log rows (plain values),
    which together with the model and optimizer state restart it exactly."""

    step: int
    rows: tuple[tuple, ...] = ()


@dataclass(frozen=True)
class PartialSaves:
    """When to hand the epoch's progress to ``save`` (which writes model, optimizer
    and progress); a save is due after ``every_steps`` steps or ``every_seconds``
    seconds since the last one, whichever comes first (0 turns a rule off)."""

    save: Callable[[EpochProgress], None]
    every_steps: int = 0
    every_seconds: float = 0.0

    def due(self, steps: int, seconds: float) -> bool:
        return (self.every_steps > 0 and steps >= self.every_steps) or (
            self.every_seconds > 0 and seconds >= self.every_seconds)


def check_finite(model: nn.Module, epoch: int, step: int) -> None:
    """Raise :class:`TrainingError` if a weight or buffer holds NaN or infinity."""
    model = getattr(model, "module", model)  # DistributedDataParallel: name the network's own tensors
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(
                f"epoch {epoch} step {step}: {name} holds non-finite values; training diverged. "
                "Lower [TrainEpoch] lr, or check the input data; no checkpoint was written for this epoch"
            )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    triplets: np.ndarray | list[StepBatch],
    store: np.ndarray,
    settings: TrainSettings,
    *,
    loss: LossSettings = LossSettings(),
    epoch: int,
    seed: int,
    device: torch.device,
    augment_settings: AugmentSettings = AugmentSettings(),
    progress: StepProgress | None = None,
    show_bar: bool = True,
    resume: EpochProgress | None = None,
    saves: PartialSaves | None = None,
    shard: StepShard | None = None,
) -> pd.DataFrame:
    """Train over ``triplets`` and return the per-step log.

    ``triplets`` is either a ``(T, 3)`` array of query/positive/negative image ids,
    trained in ``settings.batch_size`` rows per step in the order given, or the
    steps of a batch-structured list (:func:`pipeline.training.steps.batch_steps`).
    With ``loss.in_batch = "all"`` a batch's loss covers every in-batch triplet
    under the current embeddings instead of the listed ones; steps of a plain list
    (no labels) always use their listed triplets.

    ``resume`` continues an interrupted epoch after its ``step`` first steps
    (``model`` and ``optimizer`` must hold the state saved with it); on the CPU the
    result is then bit-identical to an uninterrupted epoch. ``progress`` hears of
    every step (:data:`StepProgress`), the resumed ones first. ``saves`` says when
    to save progress for such a restart.

    ``shard`` (distributed training, :mod:`pipeline.distributed.split`): this rank
    augments each whole step, forwards its slice of the images and gathers every
    rank's embeddings, so the loss is the whole step's, as in one process.

    Raises :class:`TrainingError` naming epoch and step on a non-finite loss, or
    on non-finite weights at the end of the epoch.
    """
    settings.check()
    loss.check()
    steps = triplet_steps(triplets, settings.batch_size) if isinstance(triplets, np.ndarray) else list(triplets)
    n_steps = len(steps)
    start = resume.step if resume is not None else 0
    if not 0 <= start <= n_steps:
        raise TrainingError(f"epoch {epoch}: cannot resume at step {start} of {n_steps}")
    model.train()
    rows = [tuple(r) for r in resume.rows] if resume is not None else []
    if progress is not None:
        for done, row in enumerate(rows, start=1):
            progress(done, n_steps, dict(zip(STEP_LOG_COLUMNS, row)))
    bar = tqdm(total=n_steps, initial=start, desc=f"train epoch {epoch}", unit="batch", disable=not show_bar,
               leave=False, mininterval=2.0)
    lr = optimizer.param_groups[0]["lr"]
    tick = last_save = time.perf_counter()
    saved_step = start
    # On the CPU, augmentation runs in the prefetch thread, overlapping the model;
    # on a GPU it runs on the device after the uint8 copy. The prefetch thread
    # transforms batches one at a time in order, so it can walk the step generators.
    on_cpu = device.type == "cpu"
    generators = (step_generator(seed, epoch, step, device) for step in range(start, n_steps))
    local = shard.local if shard is not None else (lambda batch: batch)
    cpu_aug = (lambda t: local(augment(t, augment_settings, next(generators)))) if on_cpu else None
    loader = iterate_batches(store, [s.images for s in steps[start:]], pin=not on_cpu, transform=cpu_aug)
    for step, pixels in enumerate(loader, start=start):
        pixels = pixels.to(device, non_blocking=True)
        x = to_float(pixels if on_cpu else local(augment(pixels, augment_settings, next(generators))))
        with autocast(device):
            z = model(x).float()
        if shard is not None:
            z = shard.gather(z, int(steps[step].images.size))
        losses, d_qp, d_qn = _step_losses(z, steps[step], loss, device)
        mean_loss = reduce_losses(losses, loss.reduce)
        if not torch.isfinite(mean_loss):
            raise TrainingError(
                f"epoch {epoch} step {step}: the loss is {mean_loss.item()} (not finite); training diverged. "
                "Lower [TrainEpoch] lr, or check the input data; no checkpoint was written for this epoch"
            )
        optimizer.zero_grad(set_to_none=True)
        mean_loss.backward()
        optimizer.step()
        now = time.perf_counter()
        loss_v = float(mean_loss.detach())
        mean_d = float(torch.cat([d_qp, d_qn]).mean().detach())
        rows.append(
            (epoch, step, loss_v, float((losses > 0).float().mean()), lr, now - tick, mean_d,
             mean_d < COLLAPSE_TOLERANCE * max(loss.margin, 1e-12), int(steps[step].images.size),
             int(losses.numel()), float(losses.detach().mean()))
        )
        tick = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}", refresh=False)
        if progress is not None:
            progress(step + 1, n_steps, dict(zip(STEP_LOG_COLUMNS, rows[-1])))
        if saves is not None and step + 1 < n_steps and saves.due(step + 1 - saved_step, now - last_save):
            check_finite(model, epoch, step)
            saves.save(EpochProgress(step=step + 1, rows=tuple(rows)))
            saved_step, last_save = step + 1, time.perf_counter()
    bar.close()
    check_finite(model, epoch, n_steps - 1)
    log_df = pd.DataFrame(rows, columns=list(STEP_LOG_COLUMNS))
    warn_if_collapsed(log_df, epoch)
    return log_df


def _step_losses(z: torch.Tensor, step: StepBatch, loss: LossSettings,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-triplet losses of one step and the distances behind them."""
    if loss.in_batch == "all" and bool((step.labels >= 0).all()):
        return all_triplet_losses(z, torch.from_numpy(step.labels).to(device), margin=loss.margin,
                                  squared=loss.squared)
    index = [torch.from_numpy(a).to(device) for a in (step.anchors, step.positives, step.negatives)]
    return listed_triplet_losses(z, *index, margin=loss.margin, squared=loss.squared)


def collapsed_tail(step_log: pd.DataFrame) -> pd.DataFrame | None:
    """The last tenth of one epoch's steps if every one of them was flagged collapsed, else None.

    The one rule both the training warning and the report's note apply.
    """
    if step_log.empty:
        return None
    tail = step_log.tail(max(1, len(step_log) // 10))
    return tail if bool(tail["collapsed"].all()) else None


def warn_if_collapsed(step_log: pd.DataFrame, epoch: int) -> bool:
    """Warn when the embedding collapsed (distances ~0, loss stuck at the margin)
    over the last tenth of the epoch; returns whether it did."""
    tail = collapsed_tail(step_log)
    collapsed = tail is not None
    if collapsed:
        log.warning(
            "epoch %d: embedding collapse: mean distance %.2e with loss %.4f at the margin; "
            "try a lower lr, a mined strategy with uniform share, or normalize = false",
            epoch, tail["mean_distance"].mean(), tail["loss"].mean(),
        )
    return collapsed
