"""TensorBoard event files of a run: curves as they form, and the embedding projector.

    tensorboard --logdir artifacts          # every experiment side by side
    tensorboard --logdir artifacts --reload_multifile true   # to watch a run live

Each experiment is one TensorBoard run, ``<experiment>/tensorboard/``. The task that
owns a figure writes it, into an event file of its own
(``events.out.tfevents.<epoch>.<kind>``, say ``...000003.train``):

- TrainEpoch, at every step as it happens: ``train/loss`` (what the step minimised),
  ``train/loss_all`` (the hinge over every triplet of the step), ``train/active_fraction``,
  ``train/lr``, ``train/images``, ``train/triplets`` and ``train/images_per_second``,
  against the step counted over the whole run;
- TripletList, per epoch: the list's hardness summary (``lists/...``);
- ValidateEpoch, per epoch: every retrieval metric of ``metrics/epoch-NNN.json`` (``metrics/...``);
- Report: the raw-pixel baseline's metrics at every epoch (``baseline/...``), a
  reference line beside the learned ones;
- EmbedEpoch: the validation embeddings with their labels and a sprite of thumbnails,
  for the projector (``projector/epoch-NNN/``, listed in ``projector_config.pbtxt``).

The events are derived, never a source: no stage reads them, so a run with
``[tracking] tensorboard = false``, or with the folder deleted, is the same in
everything else. A task that runs again first deletes its own event file, so a
rerun, or a training epoch resumed after a kill (which replays the steps its
partial checkpoint holds), shows each step once.
"""

from __future__ import annotations

import math
import re
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pipeline.settings import setting

TRACKING_DIR = "tensorboard"
PROJECTOR_CONFIG = "projector_config.pbtxt"
PROJECTOR_DIR = "projector"
# TensorBoard's projector shows sprites up to this many pixels a side.
SPRITE_MAX = 8192
# The step-log columns logged per training step (as ``train/<name>``).
STEP_SCALARS = ("loss", "loss_all", "active_fraction", "lr", "images", "triplets")


@dataclass(frozen=True)
class TrackingSettings:
    """``[tracking]``: event files for TensorBoard (run-only: no other output depends on them)."""

    tensorboard: bool = setting(True, "write TensorBoard event files under <experiment>/tensorboard/ "
                                      "(tensorboard --logdir artifacts)", run_only=True)


class EventLog:
    """The event file one task writes in ``folder``; a no-op when tracking is off.

    The file is ``events.out.tfevents.<epoch>.<kind>`` (say ``...000003.train``):
    TensorBoard reads a run's files in name order, so every curve loads in epoch
    order, whichever order parallel tasks finished in. Opening the log deletes that
    file (a rerun's, or a killed attempt's), so its scalars appear once. Written with
    TensorBoard's own record writer and protos; flushed every ``flush_seconds`` and on
    exit. Use it as a context manager.
    """

    def __init__(self, folder: str | Path, kind: str, epoch: int = 0, *, enabled: bool = True,
                 flush_seconds: float = 10.0) -> None:
        self.folder, self.enabled, self.flush_seconds = Path(folder), enabled, flush_seconds
        self.path = event_file(folder, kind, epoch)
        self._writer: Any = None
        self._flushed = 0.0

    def __enter__(self) -> EventLog:
        if self.enabled:
            self.path.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open(self) -> Any:
        # Opened at the first scalar, so a task with nothing to log (epoch 0's training) leaves no file.
        if self._writer is None:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = RecordWriter(open(self.path, "wb"))
            self._writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        return self._writer

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        """Log each finite number of ``values`` as ``<prefix><name>`` at ``step`` (others are skipped)."""
        if not self.enabled:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2

        kept = [summary_pb2.Summary.Value(tag=f"{prefix}{name}", simple_value=float(value))
                for name, value in values.items()
                if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
                and math.isfinite(float(value))]
        if not kept:
            return
        writer = self._open()
        now = time.time()
        writer.write(event_pb2.Event(wall_time=now, step=int(step), summary=summary_pb2.Summary(value=kept))
                     .SerializeToString())
        if now - self._flushed >= self.flush_seconds:
            writer.flush()
            self._flushed = now


def event_file(folder: str | Path, kind: str, epoch: int = 0) -> Path:
    """``folder/events.out.tfevents.<epoch, 6 digits>.<kind>``: the one event file of a task."""
    return Path(folder) / f"events.out.tfevents.{epoch:06d}.{kind}"


def step_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one step-log row (:data:`STEP_SCALARS` and images per second)."""
    out = {name: row[name] for name in STEP_SCALARS if name in row}
    if row.get("seconds"):
        out["images_per_second"] = row["images"] / row["seconds"]
    return out


# The retrieval metrics of a metrics (or baseline) JSON, with their split (and ``_true``,
# against the true labels when labels were flipped); not query counts, settings or seconds.
_METRIC_KEY = re.compile(r"^(precision_at_\d+|r_precision|map_at_r|triplet_precision|ivf_recall_at_\d+)_(val|train)"
                         r"(_true)?$")


def metric_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The retrieval metrics of a metrics (or baseline) JSON (precision@k, R-precision,
    MAP@R, triplet precision, IVF recall, on each split)."""
    return {k: v for k, v in metrics.items() if _METRIC_KEY.match(k) and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def list_scalars(triplet_dir: str | Path, margin: float) -> dict[str, float]:
    """A triplet list's hardness at mining time: rows, the shares already satisfied and still
    active, and the median distances (:func:`~pipeline.sampling.mining_summary.hardness`).
    Only the two distance columns are read: the whole summary of a 3.8M-row list took 5 s."""
    from pipeline.sampling.list_files import read_triplets
    from pipeline.sampling.mining_summary import hardness

    distances = read_triplets(triplet_dir, columns=["d_qp", "d_qn"])
    summary = hardness(distances["d_qp"].to_numpy(), distances["d_qn"].to_numpy(), margin)
    out = {"rows": len(distances)}
    if summary["rows_with_distances"]:
        out.update(satisfied_share=summary["satisfied_share"], active_share=summary["active_share"],
                   **{f"{name}_median": q["p50"] for name, q in summary["quantiles"].items()})
    return out


# ---------------------------------------------------------------------------- the projector


def write_epoch_projector(folder: str | Path, embeddings_dir: str | Path, dataset_dir: str | Path,
                          epoch: int) -> Path:
    """:func:`write_projector` for the validation split of the saved ``embeddings_dir``,
    with thumbnails from the dataset's pixel store and its class names."""
    from pipeline.data.pixel_store import open_store, read_index
    from pipeline.embedding.embed import load_embeddings

    val = load_embeddings(embeddings_dir, "val")
    index = read_index(dataset_dir, ["image_id", "label", "class_name"])
    names = index.drop_duplicates("label").set_index("label")["class_name"]
    return write_projector(folder, epoch, val.vectors, val.labels, names.reindex(val.labels).astype(str).tolist(),
                           np.asarray(open_store(dataset_dir)[val.image_ids]))



def write_projector(folder: str | Path, epoch: int, vectors: np.ndarray, labels: np.ndarray,
                    class_names: list[str], thumbnails: np.ndarray) -> Path:
    """Write epoch ``epoch``'s validation embeddings for TensorBoard's projector into
    ``folder/projector/epoch-NNN/`` (tensors, metadata with label and class, a sprite of
    ``thumbnails``: uint8 images, NHWC) and list every epoch written so far in
    ``projector_config.pbtxt``. Returns the epoch's folder."""
    from PIL import Image

    from pipeline import paths
    from pipeline.storage import atomic_path, exclusive_lock, write_text_atomic

    folder = Path(folder)
    target = folder / PROJECTOR_DIR / paths.epoch_dir(epoch)
    n = len(vectors)
    grid = max(1, math.ceil(math.sqrt(n)))
    size = max(1, min(thumbnails.shape[1], SPRITE_MAX // grid))
    with atomic_path(target, is_dir=True) as tmp:
        np.savetxt(tmp / "tensors.tsv", np.asarray(vectors, np.float32), delimiter="\t", fmt="%.6g")
        with open(tmp / "metadata.tsv", "w", encoding="utf-8") as f:
            f.write("label\tclass\n")
            for label, name in zip(labels, class_names):
                f.write(f"{int(label)}\t{name}\n")
        sprite = Image.new("RGB", (grid * size, grid * size))
        for i, pixels in enumerate(thumbnails):
            image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            sprite.paste(image.convert("RGB").resize((size, size)), ((i % grid) * size, (i // grid) * size))
        sprite.save(tmp / "sprite.png")
    # EmbedEpochs of several epochs may finish at once: one rewrites the list at a time.
    with exclusive_lock(folder / f".{PROJECTOR_CONFIG}.lock"):
        write_text_atomic(folder / PROJECTOR_CONFIG, projector_config(folder))
    return target


def projector_epochs(folder: str | Path) -> Iterator[tuple[int, Path]]:
    """(epoch, folder) of every epoch's projector files in ``folder``, in epoch order."""
    base = Path(folder) / PROJECTOR_DIR
    if base.is_dir():
        for d in sorted(base.iterdir()):
            if d.name.startswith("epoch-") and (d / "tensors.tsv").is_file():
                yield int(d.name.split("-")[1]), d


def projector_config(folder: str | Path) -> str:
    """The projector's config listing every epoch's validation embeddings in ``folder``.

    The sprite's thumbnail size is read back from each sprite (its side over the grid)."""
    from PIL import Image

    lines = []
    for epoch, d in projector_epochs(folder):
        rows = sum(1 for _ in open(d / "metadata.tsv", encoding="utf-8")) - 1
        grid = max(1, math.ceil(math.sqrt(rows)))
        with Image.open(d / "sprite.png") as sprite:
            size = sprite.size[0] // grid
        rel = os.path.relpath(d, folder)
        lines += ["embeddings {", f'  tensor_name: "validation, epoch {epoch}"',
                  f'  tensor_path: "{rel}/tensors.tsv"', f'  metadata_path: "{rel}/metadata.tsv"',
                  f'  sprite {{ image_path: "{rel}/sprite.png" single_image_dim: {size} single_image_dim: {size} }}',
                  "}"]
    return "\n".join(lines) + "\n"
