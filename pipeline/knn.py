"""Exact k-nearest (and k-farthest) neighbour search by Euclidean distance.

Two interchangeable backends give the same answers up to float32 rounding:

* ``"faiss"`` — ``faiss.IndexFlatL2`` (exact brute force; farthest search uses an
  ``IndexFlatIP`` over augmented vectors). faiss is an optional dependency, so it
  is imported only when this backend is used. The index holds a copy of the
  database (200 MB for 100k x 512 float32).
* ``"torch"`` — a tiled ``||q||^2 - 2 q.x + ||x||^2`` expansion with ``topk``,
  which also runs on a GPU.

Both process the queries in blocks, so memory stays bounded by the block size
rather than growing with ``queries x database`` (at Tiny ImageNet scale the full
matrix would be 10k x 100k floats = 4 GB). Afterwards the few distances too
small for the float32 expansion to be accurate are recomputed directly, and each
row is put in a canonical (distance, index) order so results are reproducible.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "faiss", "torch")

# Squared distances below this fraction of ||q||^2 are recomputed directly (see _refine_small).
_EXPANSION_TRUSTED = 1e-2
# Neighbour pairs recomputed per step, bounding the gathered rows' memory.
_EXACT_CHUNK_ROWS = 4096

# The torch backend also tiles the database so one (query block x database tile)
# distance matrix holds at most this many float32 values (128 MiB): large enough
# for efficient matrix products, small enough to keep peak memory well under 1 GB.
_TORCH_TILE_ELEMENTS = 1 << 25


def knn_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    farthest: bool = False,
    exclude: np.ndarray | None = None,
    backend: str = "auto",
    block_size: int = 4096,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest (or farthest) database rows for each query by Euclidean distance.

    Args:
        queries: ``(Q, d)`` float array.
        database: ``(N, d)`` float array.
        k: neighbours per query, ``1 <= k <= N`` (``N - 1`` when ``exclude`` is given).
        farthest: return the k *farthest* rows instead (hard-negative mining).
        exclude: optional int ``(Q,)`` database index to leave out for each query
            (``-1`` = none), used when queries are database members, e.g.
            training accuracy that must not count the query itself.
        backend: ``"faiss"``, ``"torch"`` or ``"auto"`` (faiss when importable,
            else torch; torch when an explicit non-CPU ``device`` is requested,
            because faiss here is the CPU build).
        block_size: queries processed per step; bounds the working memory.
        device: torch device for the torch backend; default ``"cuda"`` when
            available, else ``"cpu"``. Ignored by the faiss backend.

    Returns:
        ``(distances, indices)``: float32 ``(Q, k)`` *unsquared* Euclidean
        distances, ascending for nearest / descending for farthest, and int64
        ``(Q, k)`` database row indices. Equal distances are ordered by
        ascending index, so repeated calls give identical results.
    """
    queries, database, exclude = _validate(queries, database, k, exclude, block_size)
    backend = _resolve_backend(backend, device)
    search = _faiss_search if backend == "faiss" else _torch_search
    distances = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start, squared, idx in search(queries, database, k, farthest, exclude, block_size, device):
        stop = start + len(idx)
        squared = _refine_small(squared, queries[start:stop], database, idx)
        distances[start:stop], indices[start:stop] = _canonical_order(np.sqrt(squared), idx, farthest)
    return distances, indices


def _validate(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude: np.ndarray | None,
    block_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check shapes and values; return C-contiguous float32 inputs (faiss needs them)."""
    queries = np.asarray(queries)
    database = np.asarray(database)
    for name, array in (("queries", queries), ("database", database)):
        if array.ndim != 2:
            raise ConfigError(
                f"knn_search: {name} must be a 2-D array (rows = embeddings), got shape "
                f"{array.shape}; reshape it to (n, dim)."
            )
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise ConfigError(f"knn_search: {name} must hold real numbers, got dtype {array.dtype}.")
    if queries.shape[1] != database.shape[1]:
        raise ConfigError(
            f"knn_search: queries have dimension {queries.shape[1]} but the database has "
            f"{database.shape[1]}; embed both with the same model."
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"knn_search: k must be a positive integer, got {k!r}.")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ConfigError(f"knn_search: block_size must be a positive integer, got {block_size!r}.")
    n = len(database)
    limit = n - 1 if exclude is not None else n
    if k > limit:
        detail = f" minus the excluded row = {limit}" if exclude is not None else ""
        raise ConfigError(
            f"knn_search: k={k} exceeds the database size ({n} rows{detail}); "
            f"lower k to at most {limit} or search a larger database."
        )
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.shape != (len(queries),) or not np.issubdtype(exclude.dtype, np.integer):
            raise ConfigError(
                f"knn_search: exclude must be an integer array of shape ({len(queries)},) "
                f"(one database index per query, -1 for none), got {exclude.dtype} {exclude.shape}."
            )
        if len(exclude) and (exclude.min() < -1 or exclude.max() >= n):
            raise ConfigError(
                f"knn_search: exclude values must lie in [-1, {n - 1}] (a database row or -1 for "
                f"none), got range [{exclude.min()}, {exclude.max()}]."
            )
        exclude = exclude.astype(np.int64, copy=False)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    # NaN rows would silently sort anywhere; they usually mean a diverged model.
    for name, array in (("queries", queries), ("database", database)):
        # A float64 row sum of float32 values is finite iff the row is; it needs no (n, dim) temporary.
        if np.isfinite(array.sum(axis=1, dtype=np.float64)).all():
            continue
        finite = np.isfinite(array).all(axis=1)
        if not finite.all():
            raise ConfigError(
                f"knn_search: {name} row {int(np.argmin(finite))} contains NaN or infinite values "
                f"({int((~finite).sum())} rows in all); re-embed with a model that produces finite outputs."
            )
    return queries, database, exclude


def _resolve_backend(backend: str, device: str | None) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"knn_search: backend must be one of {BACKENDS}, got {backend!r}.")
    if backend != "auto":
        return backend
    if device is not None and not str(device).startswith("cpu"):
        return "torch"
    return "faiss" if importlib.util.find_spec("faiss") is not None else "torch"


def _refine_small(squared: np.ndarray, queries: np.ndarray, database: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Recompute as ``sum((q - x)^2)`` the squared distances too small for the expansion to be trusted.

    Both backends compute ``||q||^2 - 2 q.x + ||x||^2`` in float32, whose absolute
    error is roughly 1e-6 * ||q||^2 (a close neighbour has ||x|| ~ ||q||): a query's
    distance to its own copy comes out as ~1e-3 instead of 0, possibly negative.
    Only entries below ``_EXPANSION_TRUSTED * ||q||^2`` are recomputed, which keeps
    the relative error of the rest under ~1e-4 while gathering few database rows
    (recomputing all k winners would cost seconds at k = 500).
    """
    squared = np.maximum(squared, 0.0)
    query_sq = np.einsum("ij,ij->i", queries, queries)
    rows, cols = np.nonzero(squared < _EXPANSION_TRUSTED * query_sq[:, None])
    for start in range(0, len(rows), _EXACT_CHUNK_ROWS):
        r, c = rows[start : start + _EXACT_CHUNK_ROWS], cols[start : start + _EXACT_CHUNK_ROWS]
        diff = database[idx[r, c]] - queries[r]
        squared[r, c] = np.einsum("ij,ij->i", diff, diff)
    return squared


def _canonical_order(
    distances: np.ndarray, indices: np.ndarray, farthest: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by distance, breaking ties by index, so output never depends on backend internals."""
    keys = -distances if farthest else distances
    order = np.lexsort((indices, keys), axis=-1)
    return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)


def _drop_excluded(
    squared: np.ndarray, idx: np.ndarray, excluded: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` candidates per row keep ``k``: without the excluded index, else the worst one.

    If the excluded row was not among the candidates (ties, or none to exclude),
    the first ``k`` are already the answer.
    """
    hit = idx == excluded[:, None]
    drop = np.where(hit.any(axis=1), hit.argmax(axis=1), k)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(len(idx)), drop] = False
    return squared[keep].reshape(-1, k), idx[keep].reshape(-1, k)


def _faiss_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    farthest: bool,
    exclude: np.ndarray | None,
    block_size: int,
    device: str | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, squared_distances, indices)`` per query block."""
    try:
        import faiss
    except ImportError as error:
        raise ConfigError(
            "knn_search: backend='faiss' needs the faiss package (pip install faiss-cpu); "
            "install it or use backend='torch'."
        ) from error
    dim = database.shape[1]
    if farthest:
        # Farthest by L2 is the largest ||x||^2 - 2 q.x (+ ||q||^2, constant per query),
        # i.e. a max inner product between [-2q, 1] and [x, ||x||^2].
        index = faiss.IndexFlatIP(dim + 1)
        for start in range(0, len(database), block_size):
            index.add(_augment_database(database[start : start + block_size]))
    else:
        index = faiss.IndexFlatL2(dim)
        index.add(database)
    want = k + 1 if exclude is not None else k
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        if farthest:
            scores, idx = index.search(_augment_queries(block), want)
            squared = scores + np.einsum("ij,ij->i", block, block)[:, None]
        else:
            squared, idx = index.search(block, want)
        if exclude is not None:
            squared, idx = _drop_excluded(squared, idx, exclude[start : start + len(block)], k)
        yield start, squared, idx.astype(np.int64, copy=False)


def _augment_database(rows: np.ndarray) -> np.ndarray:
    return np.hstack([rows, np.einsum("ij,ij->i", rows, rows)[:, None]]).astype(np.float32)


def _augment_queries(rows: np.ndarray) -> np.ndarray:
    return np.hstack([-2.0 * rows, np.ones((len(rows), 1), dtype=np.float32)]).astype(np.float32)


def _torch_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    farthest: bool,
    exclude: np.ndarray | None,
    block_size: int,
    device: str | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, squared_distances, indices)`` per query block.

    Each query block is compared with database tiles; every tile's top k is
    merged into a running top k, so no full block x database matrix is built.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
        db = _as_tensor(database, dev)
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(
            f"knn_search: cannot use torch device {device!r} ({error}); pass device='cpu' "
            "or a device this machine has."
        ) from error
    db_sq = (db * db).sum(dim=1)
    # A tile never narrower than k + 1, so each tile can supply a full top k.
    tile = max(k + 1, _TORCH_TILE_ELEMENTS // min(block_size, max(len(queries), 1)))
    # Excluded entries get a value topk never prefers over a real distance.
    worst = float("-inf") if farthest else float("inf")
    with torch.inference_mode():
        for start in range(0, len(queries), block_size):
            q = _as_tensor(queries[start : start + block_size], dev)
            rows = torch.arange(len(q), device=dev)
            skip = None if exclude is None else torch.from_numpy(exclude[start : start + len(q)]).to(dev)
            best_val = best_idx = None
            for lo in range(0, len(db), tile):
                hi = min(lo + tile, len(db))
                # ||x||^2 - 2 q.x: the per-query ||q||^2 does not change the ranking,
                # so it is added only to the k winners.
                part = torch.addmm(db_sq[lo:hi].unsqueeze(0), q, db[lo:hi].T, alpha=-2.0)
                if skip is not None:
                    inside = (skip >= lo) & (skip < hi)
                    part[rows[inside], skip[inside] - lo] = worst
                val, idx = torch.topk(part, min(k, hi - lo), dim=1, largest=farthest, sorted=False)
                idx += lo
                if best_val is not None:
                    val = torch.cat([best_val, val], dim=1)
                    idx = torch.cat([best_idx, idx], dim=1)
                    val, pick = torch.topk(val, k, dim=1, largest=farthest, sorted=False)
                    idx = torch.gather(idx, 1, pick)
                best_val, best_idx = val, idx
                del part
            squared = best_val + (q * q).sum(dim=1, keepdim=True)
            yield start, squared.cpu().numpy(), best_idx.cpu().numpy().astype(np.int64, copy=False)


def _as_tensor(array: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """Share memory with ``array`` on CPU; we only read it, so a read-only array is fine."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)
