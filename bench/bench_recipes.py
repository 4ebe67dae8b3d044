"""Training recipes side by side on the embedded dataset, on one budget.

    .venv/bin/python bench/bench_recipes.py [--epochs 14] [--recipes batched,pml-all] [--quick]

Every recipe trains the same network (width-16 ResNet-18, 64-d head) from the
same initial weights with the same optimiser and schedule (SGD lr 0.01,
momentum 0.9, weight decay 1e-4, lr x0.2 after epoch 9), the same augmentation
and seed. The plain and PML recipes forward 72k images per epoch (6,000 training
images x 12); the batched ones what the shipped luigi.cfg says (``image_passes``:
42k; ``--batched image_passes=12`` gives them 72k too). Prints validation
precision@30 by epoch and seconds per epoch, all recipes in one run:

* ``uniform``: the course protocol (uniform triplets, 3 forwards each; 4 per query).
* ``mixed``: the previous default (half hard-mined from the last epoch, half uniform).
* ``pml-all`` / ``pml-semihard``: the pytorch-metric-learning recipe: MPerClassSampler
  (19 per class, batches of 190), TripletMarginLoss(margin=1) on unsquared L2, all
  in-batch triplets or a semihard TripletMarginMiner.
* ``batched``: this project's default: batch-structured lists mined offline from
  the previous epoch (P x K batches plus global hard negatives), trained on all
  in-batch triplets averaged over the active ones.
* ``batched-listed``: the same batches, trained on the listed triplets only.

``--quick`` runs 2 epochs on a fifth of the images (a smoke test, not a result).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import torch

from pipeline.data.batches import augment, to_float
from pipeline.data.indexing import build_index
from pipeline.data.pixel_store import gather, open_store, read_index
from pipeline.data.settings import AugmentSettings, IndexSettings
from pipeline.embedding.embed import embed_images
from pipeline.knn import knn_search
from pipeline.network import ModelSettings, build_model
from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.training.loop import step_generator, train_one_epoch
from pipeline.training.optimization import make_lr_scheduler, make_optimizer
from pipeline.training.settings import LossSettings, TrainSettings
from pipeline.training.steps import batch_steps

MODEL = ModelSettings(arch="resnet18", embedding_dim=64, normalize=False, stem="small-s2", width=16)
BASE = TrainSettings(batch_size=64, lr=0.01, momentum=0.9, weight_decay=1e-4, lr_step=9, lr_gamma=0.2)
RECIPES = ("uniform", "mixed", "pml-all", "pml-semihard", "batched", "batched-listed")
PASSES = 12  # images forwarded per epoch = PASSES x training images
# The batched recipe's list settings (the shipped luigi.cfg's; --batched KEY=VALUE overrides).
BATCHED: dict[str, object] = {}


class Data:
    def __init__(self, root: Path, fraction: float) -> None:
        build_index(IndexSettings(source="embedded", dask_scheduler="synchronous"), root)
        self.store = open_store(root)
        index = read_index(root, ["image_id", "split", "label"])
        train = index[index["split"] == "train"].sort_values("image_id")
        val = index[index["split"] == "val"].sort_values("image_id")
        if fraction < 1:
            train = train.groupby("label").head(int(600 * fraction))
            val = val.groupby("label").head(int(100 * fraction))
        self.ids, self.labels = train["image_id"].to_numpy(), train["label"].to_numpy()
        self.val_ids, self.val_labels = val["image_id"].to_numpy(), val["label"].to_numpy()

    def evaluate(self, net: torch.nn.Module) -> tuple[float, np.ndarray]:
        train = embed_images(net, self.store, self.ids, show_bar=False)
        val = embed_images(net, self.store, self.val_ids, show_bar=False)
        _, idx = knn_search(val, train, 30)
        return float((self.labels[idx] == self.val_labels[:, None]).mean()), train


def ours(recipe: str, data: Data, net, optimizer, epoch: int, embeddings: np.ndarray) -> None:
    ctx = SamplingContext(classes=ClassMembers.from_labels(data.labels), epoch=epoch, seed=0, margin=1.0,
                          embeddings=embeddings)
    loss = LossSettings()
    if recipe == "uniform":
        strategy, tpq = get_strategy("uniform"), PASSES // 3
    elif recipe == "mixed":
        strategy, tpq = get_strategy("mixed", mined_share=0.5, mined_strategy="hard"), PASSES // 3
    else:
        strategy, tpq = get_strategy("batched", **BATCHED), 1
        loss = LossSettings(reduce="active", in_batch="all" if recipe == "batched" else "listed")
    table = sample_triplets(ctx, strategy, data.ids,
                            ListSettings(triplets_per_query=tpq, n_blocks=4, dask_scheduler="synchronous"))
    ids = np.stack([table[c].to_numpy() for c in ("query", "positive", "negative")], axis=1)
    if "batch" in table.column_names:
        steps = batch_steps(table["batch"].to_numpy(), ids, table["query_label"].to_numpy(),
                            table["negative_label"].to_numpy())
    else:
        steps = ids
    train_one_epoch(net, optimizer, steps, data.store, BASE, loss=loss, epoch=epoch, seed=0,
                    device=torch.device("cpu"), show_bar=False)


def pml(recipe: str, data: Data, net, optimizer, epoch: int, labels: np.ndarray | None = None,
        per_class: int = 19, batch: int = 190, images: int | None = None, seed: int = 0) -> None:
    """The pytorch-metric-learning recipe, on our data path and augmentation: one epoch of
    ``images`` forwarded images (default ``PASSES`` x the training set) in batches of
    ``batch`` with ``per_class`` images of each class, trained on ``labels`` (default the
    dataset's own); ``seed`` seeds the sampler and the augmentation."""
    from pytorch_metric_learning import distances, losses, miners
    from pytorch_metric_learning.samplers import MPerClassSampler

    distance = distances.LpDistance(normalize_embeddings=False, p=2, power=1)
    loss_fn = losses.TripletMarginLoss(margin=1.0, distance=distance)
    miner = (miners.TripletMarginMiner(margin=1.0, type_of_triplets="semihard", distance=distance)
             if recipe == "pml-semihard" else None)
    given = data.labels if labels is None else labels
    torch.manual_seed(epoch + 1_000_003 * seed)  # MPerClassSampler draws from torch's global RNG
    sampler = MPerClassSampler(given, m=per_class, batch_size=batch,
                               length_before_new_iter=images or PASSES * len(data.ids))
    order = np.fromiter(iter(sampler), dtype=np.int64)
    targets = torch.from_numpy(np.asarray(given, dtype=np.int64).copy())
    net.train()
    for step, lo in enumerate(range(0, len(order) - batch + 1, batch)):
        rows = order[lo : lo + batch]
        x = torch.from_numpy(gather(data.store, data.ids[rows]))
        x = to_float(augment(x, AugmentSettings(), step_generator(seed, epoch, step, torch.device("cpu"))))
        z = net(x).float()
        y = targets[rows]
        loss = loss_fn(z, y, miner(z, y) if miner is not None else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run(recipe: str, data: Data, epochs: int) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    net = build_model(MODEL).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, BASE)
    scheduler = make_lr_scheduler(optimizer, BASE)
    p, embeddings = data.evaluate(net)
    curve, seconds = [p], []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        if recipe.startswith("pml"):
            pml(recipe, data, net, optimizer, epoch)
        else:
            ours(recipe, data, net, optimizer, epoch, embeddings)
        scheduler.step()
        seconds.append(time.perf_counter() - start)
        p, embeddings = data.evaluate(net)
        curve.append(p)
        print(f"  {recipe:15s} epoch {epoch:2d}: precision@30 {p:.3f} ({seconds[-1]:.1f} s)", flush=True)
    return curve, seconds


def shipped_batched_settings() -> dict[str, str]:
    """The batch-list settings of the repository's luigi.cfg, so the bench measures the shipped default."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "luigi.cfg")
    keys = ("batch_classes", "batch_seeds", "image_passes", "hard_share", "hard_top", "triplets_per_anchor",
            "triplet_rule")
    section = parser["TripletList"] if parser.has_section("TripletList") else {}
    return {k: section[k] for k in keys if k in section}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {RECIPES}")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--quick", action="store_true", help="2 epochs on a fifth of the images")
    ap.add_argument("--batched", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override a [TripletList] setting of the batched recipes, e.g. hard_top=5")
    a = ap.parse_args()
    BATCHED.update(shipped_batched_settings())
    BATCHED.update(kv.split("=", 1) for kv in a.batched)
    if a.threads:
        torch.set_num_threads(a.threads)
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        ap.error(f"unknown recipes {unknown}; choose from {RECIPES}")
    epochs = 2 if a.quick else a.epochs
    with tempfile.TemporaryDirectory() as tmp:
        data = Data(Path(tmp) / "ds", 0.2 if a.quick else 1.0)
        print(f"embedded Fashion-MNIST: {len(data.ids)} train / {len(data.val_ids)} val images, "
              f"{PASSES * len(data.ids):,} images forwarded per epoch, {epochs} epochs")
        results = {r: run(r, data, epochs) for r in recipes}
    print("\nvalidation precision@30 by epoch (epoch 0 = initial network)")
    print(f"{'epoch':>5s} " + " ".join(f"{r:>14s}" for r in recipes))
    for e in range(epochs + 1):
        print(f"{e:5d} " + " ".join(f"{results[r][0][e]:14.3f}" for r in recipes))
    print(f"{'s/ep':>5s} " + " ".join(f"{np.mean(results[r][1]):14.1f}" for r in recipes))
    best_pml = max((results[r][0][-1] for r in recipes if r.startswith("pml")), default=None)
    if best_pml is not None and "batched" in results:
        print(f"\nbatched - best PML recipe, final epoch: {results['batched'][0][-1] - best_pml:+.3f}")


if __name__ == "__main__":
    main()
