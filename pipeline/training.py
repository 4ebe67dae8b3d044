"""One training epoch over an offline triplet list, as a pure function.

The three branches of the triplet network share weights, so a batch of B
triplets is one forward pass over 3B images (which also lets batch norm see
queries, positives and negatives together).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.batches import AugmentSettings, augment, iterate_batches, to_float
from pipeline.device import autocast
from pipeline.errors import ConfigError, TrainingError
from pipeline.losses import triplet_loss

log = logging.getLogger(__name__)

STEP_LOG_COLUMNS = ("epoch", "step", "loss", "active_fraction", "lr", "seconds", "mean_distance", "collapsed")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (the defaults are the course protocol)."""

    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0
    lr_gamma: float = 0.1
    margin: float = 1.0
    squared: bool = False
    collapse_tolerance: float = 1e-3

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"[TrainEpoch] optimizer = {self.optimizer!r}; use sgd or adam")
        if self.batch_size < 1:
            raise ConfigError(f"[TrainEpoch] batch_size = {self.batch_size}; it must be at least 1")
        if not self.lr > 0:
            raise ConfigError(f"[TrainEpoch] lr = {self.lr}; it must be positive")
        if self.margin < 0:
            raise ConfigError(f"[TrainEpoch] margin = {self.margin}; it must be non-negative")


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """SGD with momentum (course default) or Adam."""
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay every ``lr_step`` epochs (stepped once per epoch); 0 keeps lr constant."""
    step = s.lr_step if s.lr_step > 0 else 10**9
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=s.lr_gamma)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The augmentation RNG of one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0]))
    return g


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    triplets: np.ndarray,
    store: np.ndarray,
    settings: TrainSettings,
    *,
    epoch: int,
    seed: int,
    device: torch.device,
    augment_settings: AugmentSettings = AugmentSettings(),
    progress: Callable[[int, int, float], None] | None = None,
    show_bar: bool = True,
) -> pd.DataFrame:
    """Train over ``triplets`` (an ``(T, 3)`` array of query/positive/negative image
    ids, in the order given) and return the per-step log.

    Raises :class:`TrainingError` naming epoch and step on a non-finite loss.
    """
    settings.validate()
    triplets = np.asarray(triplets, dtype=np.int64)
    n_steps = math.ceil(len(triplets) / settings.batch_size)
    batches = [triplets[i * settings.batch_size : (i + 1) * settings.batch_size] for i in range(n_steps)]
    gen = epoch_generator(seed, epoch, device)
    model.train()
    rows = []
    bar = tqdm(total=n_steps, desc=f"train epoch {epoch}", unit="batch", disable=not show_bar, leave=False,
               mininterval=2.0)
    lr = optimizer.param_groups[0]["lr"]
    tick = time.perf_counter()
    # On the CPU, augmentation runs in the prefetch thread, overlapping the model;
    # on a GPU it runs on the device after the uint8 copy.
    on_cpu = device.type == "cpu"
    cpu_aug = (lambda t: augment(t, augment_settings, gen)) if on_cpu else None
    id_batches = [b.reshape(-1) for b in batches]
    for step, pixels in enumerate(iterate_batches(store, id_batches, pin=not on_cpu, transform=cpu_aug)):
        pixels = pixels.to(device, non_blocking=True)
        x = to_float(pixels if on_cpu else augment(pixels, augment_settings, gen))
        with autocast(device):
            z = model(x).float()
        b = z.shape[0] // 3
        # Rows were flattened triplet by triplet: (q0, p0, n0, q1, p1, n1, ...).
        z = z.view(b, 3, -1)
        losses, d_qp, d_qn = triplet_loss(z[:, 0], z[:, 1], z[:, 2], margin=settings.margin, squared=settings.squared)
        loss = losses.mean()
        if not torch.isfinite(loss):
            raise TrainingError(
                f"epoch {epoch} step {step}: the loss is {loss.item()} (not finite); training diverged. "
                "Lower [TrainEpoch] lr, or check the input data; no checkpoint was written for this epoch"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        loss_v = float(loss.detach())
        mean_d = float(torch.cat([d_qp, d_qn]).mean().detach())
        rows.append(
            (epoch, step, loss_v, float((losses > 0).float().mean()), lr, now - tick, mean_d,
             mean_d < settings.collapse_tolerance * max(settings.margin, 1e-12))
        )
        tick = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}", refresh=False)
        if progress is not None:
            progress(step + 1, n_steps, loss_v)
    bar.close()
    log_df = pd.DataFrame(rows, columns=list(STEP_LOG_COLUMNS))
    warn_if_collapsed(log_df, epoch)
    return log_df


def warn_if_collapsed(step_log: pd.DataFrame, epoch: int) -> bool:
    """Warn when the embedding collapsed (distances ~0, loss stuck at the margin)
    over the last tenth of the epoch; returns whether it did."""
    if step_log.empty:
        return False
    tail = step_log.tail(max(1, len(step_log) // 10))
    collapsed = bool(tail["collapsed"].all())
    if collapsed:
        log.warning(
            "epoch %d: embedding collapse: mean distance %.2e with loss %.4f at the margin; "
            "try a lower lr, a mined strategy with uniform share, or normalize = false",
            epoch, tail["mean_distance"].mean(), tail["loss"].mean(),
        )
    return collapsed
