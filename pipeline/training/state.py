"""The training state an epoch starts from and the checkpoint it ends with.

One checkpoint dict for every epoch, in the manner of torchvision's reference
``train.py``: ``model``, ``optimizer``, ``lr_scheduler``, ``epoch``, ``config``
(the experiment's settings), ``model_settings`` (to rebuild the network without
the configuration), ``seconds`` and stage-specific extras.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Mapping

import torch

from models.embedding_net import EmbeddingNet
from pipeline.network import ModelSettings, WeightSettings, apply_weights, build_model
from pipeline.seeds import initial_network_seed
from pipeline.training.optimization import make_lr_scheduler, make_optimizer
from pipeline.training.settings import TrainSettings


def checkpoint_state(net: EmbeddingNet, optimizer: torch.optim.Optimizer,
                     lr_scheduler: torch.optim.lr_scheduler.LRScheduler, *, epoch: int, config: Mapping[str, Any],
                     **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of ``epoch`` (``extra`` adds keys such as ``seconds``)."""
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
            "epoch": epoch, "config": dict(config), "model_settings": asdict(net.settings), **extra}


def initial_state(model_settings: ModelSettings, weights: WeightSettings, train: TrainSettings, *, seed: int,
                  config: Mapping[str, Any]) -> dict[str, Any]:
    """Epoch 0: the random (seeded) or pretrained network, with a fresh optimizer and schedule.

    ``initialised_keys`` lists the weights that pretrained files did not provide.
    """
    started = time.perf_counter()
    torch.manual_seed(initial_network_seed(seed))
    net = build_model(model_settings)
    skipped = apply_weights(net, weights.weights, weights.weights_path)
    optimizer = make_optimizer(net, train)
    return checkpoint_state(net, optimizer, make_lr_scheduler(optimizer, train), epoch=0, config=config,
                            initialised_keys=skipped, seconds=round(time.perf_counter() - started, 3))


def lr_scheduler_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The learning-rate schedule of a checkpoint (``scheduler`` in checkpoints before it was renamed)."""
    return state["lr_scheduler"] if "lr_scheduler" in state else state["scheduler"]
