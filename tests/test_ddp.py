"""Distributed training on 2 gloo ranks (CPU) against one process, at the pipeline level.

One launch of two ranks (module fixture) checks the gradient scaling of the
split (rank r's gradient is N x its slice's share before DistributedDataParallel
averages, the one-process gradient after) and synchronised batch norm (same
gradient, same running statistics), and runs a few real training steps of a
batched list with in-batch "all" triplets through ``train_one_epoch``.

In float64 everything agrees with one process to rounding. In float32 the first
step's loss does (a forward pass), later ones only to float32's own noise: one
process's float32 gradient of this narrow network is itself about 1% off the
float64 one (batch norm's backward cancels heavily), so no N agrees more closely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.batches import to_float
from pipeline.data.pixel_store import gather
from pipeline.distributed.launch import launch, make_plan
from pipeline.distributed.settings import DistributedSettings
from pipeline.distributed.split import slice_bounds
from pipeline.errors import ConfigError
from pipeline.network import ModelSettings, build_model
from pipeline.training import loop
from pipeline.training.loop import train_one_epoch
from pipeline.training.losses import all_triplet_losses
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import LossSettings, TrainSettings
from pipeline.data.settings import AugmentSettings
from pipeline.training.steps import batch_steps

# The ranks import this module: it stays light (tests.test_training would bring Luigi and every task).
CPU = torch.device("cpu")
SMALL = ModelSettings(width=8, embedding_dim=16, stem="small-s2")
WORLD = 2
IMAGES = 9  # an odd count: the slices are 5 and 4 images, so the padding path runs
TRAIN = TrainSettings(lr=0.05, weight_decay=1e-4)
LOSS = LossSettings(reduce="active", in_batch="all")
AUGMENT = AugmentSettings(crop_padding=2, flip=True)


def batched(train) -> list:
    """4 batch-structured steps of 30 listed triplets (each about 60-90 distinct images, all labelled)."""
    from tests.test_training import uniform_triplets

    t = uniform_triplets(train, epoch=1, per_class=12)[:120]
    labels = dict(zip(train["image_id"], train["label"]))
    return batch_steps(np.arange(len(t)) // 30, t, np.array([labels[q] for q in t[:, 0]]),
                       np.array([labels[n] for n in t[:, 2]]))


def loss_of(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return all_triplet_losses(z, labels)[0].mean()


def grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    return out


def network64() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SMALL).double()


def images64(pixels: np.ndarray) -> torch.Tensor:
    return to_float(torch.from_numpy(pixels)).double().contiguous()


def float64_images(batch: torch.Tensor) -> torch.Tensor:
    """``to_float`` in float64 (patched into the loop for the exact comparison)."""
    return batch.permute(0, 3, 1, 2).double().div_(255.0)


def train_steps(steps: list, store: np.ndarray, dtype: torch.dtype, device: torch.device, ctx=None):
    """Train a fresh network over ``steps`` in ``dtype`` (one process, or rank ``ctx``); (losses, weights)."""
    loop.to_float = float64_images if dtype == torch.float64 else to_float
    try:
        torch.manual_seed(0)
        net = build_model(SMALL).to(dtype).to(memory_format=torch.channels_last)
        model = ctx.wrap(net) if ctx is not None else net
        log = train_one_epoch(model, make_optimizer(net, TRAIN), steps, store, TRAIN, loss=LOSS, epoch=1, seed=3,
                              device=device, augment_settings=AUGMENT, show_bar=False,
                              shard=ctx.shard if ctx is not None else None)
    finally:
        loop.to_float = to_float
    return log, net.state_dict()


def _on_rank(ctx, pixels: np.ndarray, labels: np.ndarray, store_file: str, steps: list, out: str) -> None:
    """The checks' rank side; every rank saves what it saw to ``out/rank<r>.pt``."""
    net = network64()
    model = ctx.wrap(net)
    x, y, n = images64(pixels), torch.from_numpy(labels), len(pixels)
    # Eval mode (running statistics, so the slices are independent), gradients not yet averaged.
    model.eval()
    with model.no_sync():
        loss_of(ctx.shard.gather(model(ctx.shard.local(x)), n), y).backward()
    local = grads(net)
    # Train mode: synchronised batch norm, DistributedDataParallel's average.
    model.train()
    loss_of(ctx.shard.gather(model(ctx.shard.local(x)), n), y).backward()
    averaged = grads(net)
    running = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    store = np.load(store_file, mmap_mode="r")
    trained = {}
    for dtype in (torch.float64, torch.float32):
        log, weights = train_steps(steps, store, dtype, ctx.device, ctx)
        trained[str(dtype)] = {"losses": log["loss"].tolist(), "images": log["images"].tolist(), "weights": weights}
    torch.save({"local": local, "averaged": averaged, "running": running, "trained": trained},
               Path(out) / f"rank{ctx.rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(fashion, tmp_path_factory):
    """Run the rank side once on 2 gloo ranks; return the inputs and each rank's results."""
    store, train = fashion
    ids = train["image_id"].to_numpy()[:IMAGES * 40:40]
    pixels, labels = gather(store, ids), train["label"].to_numpy()[:IMAGES * 40:40].astype(np.int64)
    steps = batched(train)
    out = tmp_path_factory.mktemp("ranks")
    plan = make_plan(DistributedSettings(processes=WORLD, timeout_s=120), CPU, 1, "test")
    launch(_on_rank, (pixels, labels, str(store.filename), steps, str(out)), plan)
    return pixels, labels, steps, [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def close(a: dict, b: dict, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


def test_slices_are_contiguous_and_cover_the_step():
    for n in (0, 1, 2, 5, 9, 192):
        for world in (1, 2, 3, 4):
            bounds = [slice_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_each_rank_holds_n_times_its_share_and_the_average_is_the_one_process_gradient(two_ranks):
    pixels, labels, _, ranks = two_ranks
    x, y = images64(pixels), torch.from_numpy(labels)
    net = network64().eval()
    shares = []
    for r in range(WORLD):  # slice r's share: the gradient through slice r's forward alone
        lo, hi = slice_bounds(len(x), r, WORLD)
        z = torch.cat([net(x[a:b]) if (a, b) == (lo, hi) else net(x[a:b]).detach()
                       for a, b in (slice_bounds(len(x), s, WORLD) for s in range(WORLD))])
        loss_of(z, y).backward()
        shares.append(grads(net))
        close(ranks[r]["local"], {k: WORLD * v for k, v in shares[r].items()})
    loss_of(net(x), y).backward()
    whole = grads(net)
    close({k: sum(s[k] for s in shares) for k in whole}, whole)
    assert not torch.allclose(shares[0]["head.weight"], whole["head.weight"], rtol=0.05)  # the shares differ


def test_synchronised_batchnorm_gives_the_one_process_gradient_and_running_stats(two_ranks):
    pixels, labels, _, ranks = two_ranks
    net = network64().train()
    loss_of(net(images64(pixels)), torch.from_numpy(labels)).backward()
    one = grads(net)
    running = {k: v for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    for r in range(WORLD):
        close(ranks[r]["averaged"], one)
        close(ranks[r]["running"], running)


def test_two_ranks_train_the_same_steps_as_one_process(two_ranks, fashion):
    store, _ = fashion
    _, _, steps, ranks = two_ranks
    for dtype in (torch.float64, torch.float32):
        log, weights = train_steps(steps, store, dtype, CPU)
        losses = log["loss"].tolist()
        assert len(losses) == 4
        for r in range(WORLD):
            got = ranks[r]["trained"][str(dtype)]
            assert got["images"] == log["images"].tolist()
            if dtype == torch.float64:
                assert got["losses"] == pytest.approx(losses, rel=1e-9)
                close(got["weights"], weights, rtol=1e-7, atol=1e-9)
            else:
                assert got["losses"][0] == pytest.approx(losses[0], rel=1e-5)
                assert got["losses"] == pytest.approx(losses, rel=0.02)
    # The checkpoint layout is the one-process one: same keys, shapes and dtypes; it loads strictly.
    assert {k: (v.shape, v.dtype) for k, v in ranks[0]["trained"][str(dtype)]["weights"].items()} == \
        {k: (v.shape, v.dtype) for k, v in weights.items()}
    build_model(SMALL).load_state_dict(ranks[0]["trained"][str(dtype)]["weights"], strict=True)


def test_the_launcher_reports_the_root_cause_among_the_ranks():
    """A pipeline error a rank raised; else a rank killed from outside (its peer then fails in a
    collective, possibly first); else the first failure."""
    import signal

    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    from pipeline.distributed.launch import RankFailedError, _failure
    from pipeline.errors import TrainingError

    plan = make_plan(DistributedSettings(processes=2, nnodes=2, node_rank=1, rendezvous="n0:1"), CPU, 1, "t")
    peer_failed = ProcessRaisedException("\n-- Process 0 terminated with the following error:\nTraceback ...", 0, 1)
    gloo = RuntimeError("Connection closed by peer")
    diverged = TrainingError("epoch 1 step 3: the loss is nan (not finite)")
    assert _failure(peer_failed, {0: diverged, 1: diverged}, [1, 1], plan) is diverged
    killed = _failure(peer_failed, {0: gloo}, [1, -signal.SIGKILL], plan)
    assert isinstance(killed, RankFailedError)
    assert str(killed).startswith("rank 3 of 4 (node 1, process 1) was killed by SIGKILL")
    terminated = ProcessExitedException("process 1 terminated with signal SIGTERM", 1, 9, -15, "SIGTERM")
    assert str(_failure(terminated, {0: gloo}, [-signal.SIGTERM, -signal.SIGTERM], plan)).startswith(
        "rank 3 of 4 (node 1, process 1) was killed by SIGTERM")  # the first failure: from outside
    raised = _failure(peer_failed, {0: gloo}, [1, -signal.SIGTERM], plan)  # rank 1: stopped by the launcher
    assert str(raised).startswith("rank 2 of 4 (node 1, process 0) failed: RuntimeError: Connection closed by peer")
    assert "Traceback" in str(raised)


@pytest.mark.parametrize("settings, match", [
    (DistributedSettings(node_rank=1), "node_rank = 1 with nnodes = 1"),
    (DistributedSettings(nnodes=2), "needs rendezvous = HOST:PORT"),
    (DistributedSettings(nnodes=2, rendezvous="node0"), "rendezvous = 'node0'; use HOST:PORT"),
    (DistributedSettings(processes=0), r"\[TrainEpoch\] processes = 0"),
])
def test_bad_layouts_are_refused_naming_the_setting(settings, match):
    with pytest.raises(ConfigError, match=match):
        settings.check()
