"""Throughput parts of ``bench/gpu_check.py``: TrainEpoch's and EmbedEpoch's code paths
(``train_one_epoch``, ``embed_images``) on a Tiny ImageNet-shaped store (200 classes,
64 px), with the settings of the shipped configuration files.

Workloads: ResNet-18 on 64 px images over a plain uniform list (the course's
triplets, three forwards each; the goal row), the same network over the default
batched list, and the course configuration (ResNet-50, imagenet stem, upsampled to
224 on the device, random weights of the pretrained architecture). Each trains a
few warm-up steps, then a number of steps fixed from the warm-up's pace so that it
fits its share of the part's time; bf16 autocast comes with the code path on CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from gpu_check_rows import COURSE_CFG, SHIPPED_CFG, Row, cfg_settings, cfg_value, judge, synthetic_store

from pipeline.embedding.embed import embed_images
from pipeline.network import ModelSettings, build_model
from pipeline.sampling import BatchOptions, ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.training.loop import train_one_epoch
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import LossSettings, TrainSettings
from pipeline.data.settings import AugmentSettings
from pipeline.training.steps import StepBatch, batch_steps, triplet_steps

TINY_TRAIN, TINY_ALL = 100_000, 110_000  # Tiny ImageNet: training images (one course epoch of triplets); + val
GOAL_SECONDS = 60.0  # an epoch of 100k triplets, ResNet-18 at 64 px, one H200
GiB = 2.0**30
SIZE, QUICK_SIZE = 64, 32  # stored image size: Tiny ImageNet's, and the dry run's


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    model: ModelSettings
    train: TrainSettings
    loss: LossSettings
    augment: AugmentSettings
    batched: BatchOptions | None = None  # None: a plain uniform list


def workloads(quick: bool, r18_stem: str) -> list[Workload]:
    """The three training workloads, read from luigi.cfg and configs/tiny-imagenet.cfg."""
    course_model = cfg_settings(COURSE_CFG, "model", ModelSettings)  # [model] weights is not read: random init
    course, shipped = ({"train": cfg_settings(cfg, "TrainEpoch", TrainSettings),
                        "loss": cfg_settings(cfg, "loss", LossSettings),
                        "augment": cfg_settings(cfg, "TrainEpoch", AugmentSettings)} for cfg in (COURSE_CFG, SHIPPED_CFG))
    batched = cfg_settings(SHIPPED_CFG, "TripletList", BatchOptions)
    r18 = replace(course_model, arch="resnet18", stem=r18_stem, input_size=0)
    r50 = course_model
    size = QUICK_SIZE if quick else SIZE
    if quick:  # the same code paths at a size two CPU cores get through in seconds
        r18, r50 = replace(r18, width=16), replace(r50, width=8, input_size=48)
        course["train"] = shipped["train"] = replace(course["train"], batch_size=2)
        batched = replace(batched, batch_classes=4, batch_seeds=2)
    return [
        Workload("r18", f"ResNet-18 {size} px ({r18_stem} stem), uniform list", r18, **course),
        Workload("r18-batched", f"ResNet-18 {size} px ({r18_stem} stem), default batched list", r18, **shipped,
                 batched=batched),
        Workload("r50", f"course ResNet-50, imagenet stem, {size} -> {r50.input_size} px, uniform list", r50, **course),
    ]


def plan_steps(w: Workload, labels: np.ndarray, n_steps: int, seed: int = 0) -> list[StepBatch]:
    """The first ``n_steps`` steps of epoch 1's list, sampled by the pipeline's own samplers."""
    classes = ClassMembers.from_labels(labels)
    positions = np.arange(labels.size)
    if w.batched is None:
        ctx = SamplingContext(classes=classes, epoch=1, seed=seed, margin=w.loss.margin)
        table = sample_triplets(ctx, get_strategy("uniform"), positions,
                                ListSettings(triplets_per_query=1, dask_scheduler="synchronous", n_blocks=1))
        ids = np.column_stack([table[c].to_numpy() for c in ("query", "positive", "negative")])
        return triplet_steps(ids[: n_steps * w.train.batch_size], w.train.batch_size)
    # A batched list mines the previous epoch's embeddings (random ones here: the batch
    # shapes are what matter) with an exact kNN over the training set, so it is drawn
    # from 100 images per class: the same batches, far less kNN work.
    keep = np.concatenate([classes.members(c)[:100] for c in range(classes.n_classes)])
    sub = SamplingContext(classes=ClassMembers.from_labels(labels[keep]), epoch=1, seed=seed, margin=w.loss.margin,
                          embeddings=np.random.default_rng(seed).normal(size=(keep.size, 64)).astype(np.float32))
    table = get_strategy("batched", **asdict(w.batched)).sample_table(sub, keep)
    ids = np.column_stack([table[c].to_numpy() for c in ("query", "positive", "negative")])
    steps = batch_steps(table["batch"].to_numpy(), ids, table["query_label"].to_numpy(),
                        table["negative_label"].to_numpy())
    return steps[:n_steps]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> str:
    return f"peak {torch.cuda.max_memory_allocated(device) / GiB:.2f} GiB" if device.type == "cuda" else "peak n/a on cpu"


def _network(settings: ModelSettings, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(settings).to(device, memory_format=torch.channels_last)  # as network_from_checkpoint


def _steps_for(per_step: float, seconds: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, seconds / max(per_step, 1e-6))))


def measure_training(w: Workload, store: np.ndarray, labels: np.ndarray, device: torch.device, *, warm: int,
                     max_steps: int, seconds: float) -> dict:
    """Steps per second of ``train_one_epoch`` after ``warm`` steps; figures over the timed steps."""
    steps = plan_steps(w, labels, warm + max_steps)
    net = _network(w.model, device)
    opt = make_optimizer(net, w.train)
    _reset_memory(device)

    def train(part: list[StepBatch]):
        return train_one_epoch(net, opt, part, store, w.train, loss=w.loss, epoch=1, seed=0, device=device,
                               augment_settings=w.augment, show_bar=False)

    warm_log = train(steps[:warm])
    per_step = float(np.median(warm_log["seconds"].to_numpy()[1:])) if warm > 1 else float(warm_log["seconds"].sum())
    n = _steps_for(per_step, seconds, 3, min(max_steps, len(steps) - warm))
    log = train(steps[warm : warm + n])
    _sync(device)
    # Each step's seconds run from the end of the previous one; the first step of a call
    # also waits for the loader to start, which an epoch pays once: left out.
    timed = log.iloc[1:]
    elapsed = float(timed["seconds"].sum())
    return {"steps": len(timed), "seconds": elapsed, "images": int(timed["images"].sum()),
            "loss_triplets": int(timed["triplets"].sum()),
            "rows": int(sum(s.n_triplets for s in steps[warm + 1 : warm + n])), "peak": _peak(device)}


def train_rows(w: Workload, m: dict, on_gpu: bool, batched_images: int) -> list[Row]:
    images_s, rows_s = m["images"] / m["seconds"], m["rows"] / m["seconds"]
    where = f"{m['steps']} steps in {m['seconds']:.2f} s"
    if w.batched is None:
        head = Row("train", f"TrainEpoch {w.label}: throughput",
                   f"{rows_s:,.0f} triplets/s, {images_s:,.0f} images/s, {m['peak']} ({where}, "
                   f"batch {w.train.batch_size})")
        projected = TINY_TRAIN / rows_s
        if w.key == "r18":
            return [head, Row("train", f"TrainEpoch {w.label}: epoch of 100k triplets", f"{projected:,.1f} s",
                              f"<= {GOAL_SECONDS:.0f} s on one H200", judge(projected <= GOAL_SECONDS, on_gpu))]
        return [head, Row("train", f"TrainEpoch {w.label}: epoch of 100k triplets", f"{projected:,.1f} s")]
    loss_s = m["loss_triplets"] / m["seconds"]
    return [
        Row("train", f"TrainEpoch {w.label}: throughput",
            f"{images_s:,.0f} images/s, {rows_s:,.0f} listed / {loss_s:,.0f} in-loss triplets/s, {m['peak']} "
            f"({where}, about {m['images'] / max(m['steps'], 1):.0f} images a batch)"),
        Row("train", f"TrainEpoch {w.label}: epoch at 100k images "
                     f"(image_passes {w.batched.image_passes})", f"{batched_images / images_s:,.1f} s"),
    ]


def tiny_store(args) -> tuple[np.ndarray, np.ndarray]:
    per_class = 10 if args.quick else TINY_TRAIN // 200
    return synthetic_store(args.workdir, 200, per_class, QUICK_SIZE if args.quick else SIZE)


def run_train(args, rec: Callable[[Row], None]) -> None:
    """The ``train`` part: one measurement per workload; a failing one is recorded and the next runs."""
    device = torch.device(args.device)
    store, labels = tiny_store(args)
    todo = workloads(args.quick, args.r18_stem)
    started = time.perf_counter()
    for i, w in enumerate(todo):
        # Spread what is left of the part's time over the workloads still to run (sampling,
        # model setup and warm-up take about as long again as the timed steps).
        share = (args.part_seconds - (time.perf_counter() - started)) / (len(todo) - i) / 3
        try:
            m = measure_training(w, store, labels, device, warm=4 if args.quick else 10,
                                 max_steps=3 if args.quick else 400, seconds=max(1.0, min(share, 25.0)))
            for row in train_rows(w, m, device.type == "cuda", (w.batched.image_passes if w.batched else 1)
                                  * TINY_TRAIN):
                rec(row)
        except Exception as exc:  # noqa: BLE001  (one workload's failure must not hide the others)
            rec(Row("train", f"TrainEpoch {w.label}", f"error: {type(exc).__name__}: {exc}"[:300], "", "FAIL"))
        finally:
            _reset_memory(device)


def run_embed(args, rec: Callable[[Row], None]) -> None:
    """The ``embed`` part: ``embed_images`` at ``[EmbedEpoch] batch_size`` for both networks."""
    device = torch.device(args.device)
    store, _ = tiny_store(args)
    batch = int(cfg_value(SHIPPED_CFG, "EmbedEpoch", "batch_size"))
    if args.quick:
        batch = 32
    for w in [w for w in workloads(args.quick, args.r18_stem) if w.key in ("r18", "r50")]:
        try:
            net = _network(w.model, device)
            _reset_memory(device)
            ids = np.random.default_rng(1).permutation(len(store))
            t = time.perf_counter()
            embed_images(net, store, ids[: 2 * batch], batch_size=batch, device=device, show_bar=False)  # warm-up
            per_image = (time.perf_counter() - t) / (2 * batch)
            n = int(min(len(store), 2 * batch if args.quick else max(2 * batch, (args.part_seconds / 6) / per_image)))
            _sync(device)
            t = time.perf_counter()
            out = embed_images(net, store, ids[:n], batch_size=batch, device=device, show_bar=False)
            rate = n / (time.perf_counter() - t)
            assert out.shape == (n, w.model.embedding_dim) and np.isfinite(out).all(), "non-finite embeddings"
            rec(Row("embed", f"EmbedEpoch {w.label.split(',')[0]}: throughput",
                    f"{rate:,.0f} images/s, {_peak(device)} ({n:,} images, batch {batch}); "
                    f"110k images (Tiny ImageNet train + val) in {TINY_ALL / rate:,.1f} s"))
        except Exception as exc:  # noqa: BLE001
            rec(Row("embed", f"EmbedEpoch {w.label}", f"error: {type(exc).__name__}: {exc}"[:300], "", "FAIL"))
        finally:
            _reset_memory(device)
