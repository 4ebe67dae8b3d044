"""Similar-image search with one trained epoch: embed query images the way
validation does and look up their nearest indexed images.

    searcher = Searcher.from_artifacts("artifacts", "demo", 14)
    hits = searcher.search_files(["shoe.jpg"], k=10)[0]   # list of Hit, nearest first

The network runs on the CPU unless ``device`` says otherwise; nothing touches
CUDA at import. One :class:`Searcher` may serve several threads: every method
only reads the network, the faiss index and the memory-mapped pixel store
(faiss calls take turns, see :func:`_faiss_search`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.network import ModelSettings, network_from_checkpoint
from pipeline.checkpoint import load_checkpoint
from pipeline.data.batches import to_float
from pipeline.data.pixel_store import open_store, read_index
from pipeline.device import autocast, resolve_device
from pipeline.errors import ConfigError
from pipeline.inventory import indexed_epochs
from pipeline.search.index import SearchIndexFiles, load_search_index
from pipeline.search.locate import dataset_folder, locate
from pipeline.search.preprocess import ImageInput, decode_inputs, pixels_png
from pipeline.storage import corrupt_artifact

BATCH_SIZE = 512  # images per forward pass when embedding queries (EmbedEpoch's default)
# faiss answers fewer queries than this (its BLAS threshold) with a loop it splits over
# OpenMP threads; for one query that costs more in waiting (on cores torch's threads
# still spin on after the embedding) than it saves, so small searches run on one thread.
SMALL_SEARCH = 20
_FAISS = threading.Lock()  # faiss's thread count is process-wide: set and restore it under a lock


def _faiss_search(index: object, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(vectors, k)``, one OpenMP thread for fewer than :data:`SMALL_SEARCH` queries."""
    import faiss

    with _FAISS:
        if len(vectors) >= SMALL_SEARCH:
            return index.search(vectors, k)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(vectors, k)
        finally:
            faiss.omp_set_num_threads(threads)


@dataclass(frozen=True)
class Hit:
    """One indexed image found near a query. ``path`` is relative to the dataset
    root ("" for datasets without source files); ``distance`` is unsquared Euclidean."""

    image_id: int
    split: str
    label: int
    class_id: str
    class_name: str
    path: str
    distance: float


class Searcher:
    """One epoch's network and search index, plus the dataset's pixels for thumbnails."""

    def __init__(self, net: torch.nn.Module, files: SearchIndexFiles, dataset_dir: Path, *, experiment: str,
                 epoch: int, device: torch.device) -> None:
        self.net = net.eval()
        self.experiment, self.epoch, self.device = experiment, epoch, device
        self.index, self.items, self.meta = files.index, files.items, files.meta
        self.dataset_dir = dataset_dir
        root = files.meta.get("dataset_root")
        self.dataset_root: Path | None = Path(root) if root else None
        self.store = open_store(dataset_dir)
        self.image_size: int = int(self.store.shape[1])
        self.dim: int = int(files.meta["dim"])
        self._rows = pd.Index(self.items["image_id"].to_numpy(np.int64))
        # Plain arrays of the item columns: building hits from them is ~100x faster than pandas rows.
        self._columns = {c: self.items[c].to_numpy(object if self.items[c].dtype.kind not in "iu" else np.int64)
                         for c in ("image_id", "split", "label", "class_id", "class_name", "path")}
        self._dataset = read_index(dataset_dir, columns=["image_id", "split", "label", "class_id", "class_name",
                                                         "path"]).set_index("image_id")

    @classmethod
    def from_artifacts(cls, root: str | Path, experiment: str, epoch: int, *, device: str = "cpu") -> Searcher:
        """Open epoch ``epoch`` of ``experiment`` under the artifacts ``root``.

        Raises :class:`~pipeline.search.locate.SearchUnavailableError` naming the
        missing experiment, untrained epoch or missing index and the command that
        makes it; :class:`~pipeline.errors.CorruptArtifactError` for damaged files.
        """
        found = locate(root, experiment, epoch)
        files = load_search_index(found.search_dir)
        state = load_checkpoint(found.checkpoint)
        what = f"epoch {epoch} of experiment {experiment!r}"
        try:
            dev = resolve_device(device)
        except ConfigError:
            raise ConfigError(f"device {device!r} is not available here; use cpu (the default), or auto or cuda[:N] "
                              "on a machine with a GPU") from None
        net = network_from_checkpoint(state, ModelSettings(**state["model_settings"]), dev, what)
        if net.settings.embedding_dim != files.meta["dim"]:
            raise corrupt_artifact(found.search_dir, f"its vectors have {files.meta['dim']} floats, but {what}'s "
                                                     f"network makes {net.settings.embedding_dim}")
        dataset_dir = dataset_folder(root, experiment, files.meta)
        return cls(net, files, dataset_dir, experiment=experiment, epoch=epoch, device=dev)

    @staticmethod
    def available_epochs(root: str | Path, experiment: str) -> list[int]:
        """Epochs of ``experiment`` that have a search index, ascending."""
        return indexed_epochs(root, experiment)

    @property
    def count(self) -> int:
        """Number of indexed images."""
        return int(self.index.ntotal)

    def decode(self, images: Sequence[ImageInput]) -> np.ndarray:
        """uint8 ``(n, S, S, 3)`` pixels of image files or raw bytes at the stored size ``S``."""
        return decode_inputs(images, self.image_size)

    @torch.no_grad()
    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """float32 ``(n, dim)`` vectors of uint8 ``(n, S, S, 3)`` stored-size pixels.

        The steps of :func:`~pipeline.embedding.embed.embed_images`, which validation
        embeds with: uint8 to the device, ``to_float``, the network in eval mode
        under the device's ``autocast``, no augmentation. Written out rather than
        called because its prefetch thread costs ~10 ms a call, ten times the
        forward pass of one small image.
        """
        out = np.empty((len(pixels), self.dim), np.float32)
        for lo in range(0, len(pixels), BATCH_SIZE):
            # A copy: rows of the memory-mapped store are read-only, which torch warns about.
            batch = torch.from_numpy(np.array(pixels[lo : lo + BATCH_SIZE], dtype=np.uint8))
            with autocast(self.device):
                out[lo : lo + len(batch)] = self.net(to_float(batch.to(self.device))).float().cpu().numpy()
        return out

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """float32 ``(n, dim)`` vectors of image files or raw bytes (uploads).

        Raises :class:`~pipeline.errors.BadImageError` naming the file (or "upload")
        that is not a readable image; nothing is embedded then.
        """
        return self.embed_pixels(self.decode(images))

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """The ``k`` nearest indexed images (fewer if fewer are indexed) of each row of ``vectors``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ConfigError(f"query vectors of shape {vectors.shape}; this index holds {self.dim}-float vectors")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k = {k!r}; ask for at least 1 neighbour")
        if not np.isfinite(vectors).all():
            raise ConfigError("query vectors hold NaN or infinite values; the network's output is not finite")
        if len(vectors) == 0:
            return []
        squared, rows = _faiss_search(self.index, vectors, int(min(k, self.count)))
        return [self._hits(r, s) for r, s in zip(rows, squared)]

    def search_files(self, images: Sequence[ImageInput], k: int) -> list[list[Hit]]:
        """:meth:`search_vectors` of :meth:`embed_images`."""
        return self.search_vectors(self.embed_images(images), k)

    def search_id(self, image_id: int, k: int) -> list[Hit]:
        """The ``k`` nearest indexed images of dataset image ``image_id``.

        An indexed image is looked up by its stored vector, and its own row comes
        first at distance 0 (even among exact duplicates); another image of the
        dataset (say a validation image of a train-only index) is embedded from
        the pixel store, as validation embeds it.
        """
        image_id = self._check_id(image_id)
        row = int(self._rows.get_indexer([image_id])[0])
        if row < 0:
            return self.search_vectors(self.embed_pixels(self.store[[image_id]]), k)[0]
        vector = self.index.reconstruct(row).reshape(1, -1)
        hits = [h for h in self.search_vectors(vector, k)[0] if h.image_id != image_id]
        return [self._hits(np.array([row]), np.zeros(1, np.float32))[0], *hits][: min(k, self.count)]

    def describe(self, image_id: int) -> dict[str, object]:
        """Split, label, class and path of any dataset image (``path`` "" where there is none)."""
        image_id = self._check_id(image_id)
        row = self._dataset.loc[image_id]
        path = row["path"]
        return {"image_id": image_id, "split": str(row["split"]), "label": int(row["label"]),
                "class_id": str(row["class_id"]), "class_name": str(row["class_name"]),
                "path": "" if pd.isna(path) else str(path)}

    def source_path(self, hit: Hit) -> Path | None:
        """The image's source file (dataset root / path), or None for datasets without files."""
        return self.dataset_root / hit.path if self.dataset_root and hit.path else None

    def thumbnail_png(self, image_id: int, size: int = 96) -> bytes:
        """PNG of dataset image ``image_id`` as the network sees it (from the pixel store), ``size`` pixels wide."""
        return pixels_png(self.store[self._check_id(image_id)], size)

    def _check_id(self, image_id: int) -> int:
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) \
                or not 0 <= image_id < len(self.store):
            raise ConfigError(f"image id {image_id!r} is not in the dataset {self.dataset_dir} "
                              f"(ids 0-{len(self.store) - 1})")
        return int(image_id)

    def _hits(self, rows: np.ndarray, squared: np.ndarray) -> list[Hit]:
        """Hits of index ``rows``; equal distances ordered by row, so ties read the same every time."""
        keep = rows >= 0  # faiss pads with -1 when fewer than k rows exist
        rows, squared = rows[keep], squared[keep]
        order = np.lexsort((rows, squared))
        rows, squared = rows[order], squared[order]
        c = {name: column[rows] for name, column in self._columns.items()}
        distances = np.sqrt(np.maximum(squared.astype(np.float64), 0.0))
        return [Hit(int(i), str(s), int(lb), str(ci), str(cn), str(p), float(d)) for i, s, lb, ci, cn, p, d in zip(
            c["image_id"], c["split"], c["label"], c["class_id"], c["class_name"], c["path"], distances)]
