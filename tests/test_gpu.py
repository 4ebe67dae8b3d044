"""Training and embedding on a CUDA GPU (skipped on machines without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.embedding.embed import embed_images
from pipeline.network import ModelSettings, build_model
from pipeline.training.loop import train_one_epoch
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import TrainSettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_training_and_embedding_on_cuda_with_autocast():
    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    store = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 16)
    q = rng.permutation(64)
    p = np.array([rng.choice(np.flatnonzero((labels == labels[i]) & (np.arange(64) != i))) for i in q])
    n = np.array([rng.choice(np.flatnonzero(labels != labels[i])) for i in q])
    torch.manual_seed(0)
    net = build_model(ModelSettings(width=8, embedding_dim=8, stem="small-s2")).to(device,
                                                                                memory_format=torch.channels_last)
    opt = make_optimizer(net, TrainSettings(lr=0.01))
    log = train_one_epoch(net, opt, np.stack([q, p, n], 1), store, TrainSettings(batch_size=16), epoch=1, seed=0,
                          device=device, show_bar=False)
    assert np.isfinite(log["loss"]).all() and len(log) == 4
    vectors = embed_images(net, store, np.arange(64), batch_size=32, device=device, show_bar=False)
    assert vectors.shape == (64, 8) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
