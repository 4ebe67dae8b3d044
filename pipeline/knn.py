"""Exact k-nearest (and k-farthest) neighbour search by Euclidean distance.

Two interchangeable backends find the candidates:

* ``"faiss"`` — ``faiss.IndexFlatL2`` (exact brute force; farthest search uses an
  ``IndexFlatIP`` over augmented vectors). faiss is an optional dependency, so it
  is imported only when this backend is used. The index holds a copy of the
  database (200 MB for 100k x 512 float32).
* ``"torch"`` — a tiled ``||q||^2 - 2 q.x + ||x||^2`` expansion with ``topk``,
  which also runs on a GPU.

Both process the queries in blocks, so memory stays bounded by the block size
rather than growing with ``queries x database`` (at Tiny ImageNet scale the full
matrix would be 10k x 100k floats = 4 GB).

Both compute squared distances with the float32 expansion, which each rounds in
its own way, so on their own they disagree about near-ties and about which
members of a large tie group (duplicate vectors, a collapsed embedding) make the
cut. The answer is therefore made canonical afterwards (:func:`_canonical_top_k`):
each backend returns a few candidates beyond k; wherever the expansion's error
bound cannot separate two of them, their distances are recomputed exactly
(:func:`_exact_squared`, identical for every backend); and when the group tied
at the k-th place may extend past the candidates, that query is re-ranked
against the whole database (:func:`_rescan`). Both backends then return the same
rows, in the same order.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "faiss", "torch")

# Bound on the absolute error of a float32 expansion ||q||^2 - 2 q.x + ||x||^2,
# as a fraction of ||q||^2 + max_j ||x_j||^2 (each term is at most that sum).
# The three terms and their two sums are each rounded (a few float32 eps, 6e-8
# each), and the dot product accumulates d roundings: d * eps = 3e-5 at d = 512
# in the worst case, but BLAS kernels keep many partial sums whose rounding errors
# are unbiased, so the error grows like sqrt(d) * eps = 1.4e-6 at d = 512.
# Measured maxima with both backends, for Gaussian, non-negative, offset (50 + x),
# unit-norm and collapsed data at d = 8..2048, stay below 6e-7: 1e-5 leaves a
# 15x margin, and it grows with sqrt(d) beyond d = 1024 to keep it.
_EXPANSION_ERROR = 1e-5
# Candidates fetched beyond the k + 1 that suffice: a near-tie at the k-th place
# then rarely reaches the last candidate, which would force a full rescan.
_EXTRA_CANDIDATES = 3
# Squared distances below this fraction of ||q||^2 are also recomputed exactly:
# there the expansion's error (~1e-6 * ||q||^2) is large relative to the distance
# (a query's distance to its own copy would come out as ~1e-3 instead of 0).
_EXPANSION_TRUSTED = 1e-2
# Neighbour pairs recomputed exactly per step, bounding the gathered rows' memory.
_EXACT_CHUNK_ROWS = 4096
# A full rescan computes float64 distances for at most this many (query, row)
# pairs, and converts at most this many database values to float64, per step (32 MiB).
_SCAN_ELEMENTS = 1 << 22
# A rescan's tie group larger than this is ranked per distinct vector: identical
# rows (a collapsed embedding) have identical distances, computed once.
_DEDUPLICATE_ABOVE = 4096

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
        distances and int64 ``(Q, k)`` database row indices. Row ``i`` holds
        exactly the first k database rows (without ``exclude[i]``) in the
        canonical order: by the squared distance ``sum((x - q)^2)`` to
        ``queries[i]`` computed in float64 (ascending for nearest, descending for
        farthest), equal distances by ascending row index. Hence the indices are
        identical whichever backend runs, whatever the block size, and however
        large a group of tied distances is (duplicate vectors, a collapsed
        embedding): of a tie group only its lowest (nearest) indices are kept.
        Distances are exact for near-tied and small ones, elsewhere within float32
        rounding of the float32 expansion (relative error ~1e-6 of the squared norms).
    """
    queries, database, exclude = _validate(queries, database, k, exclude, block_size)
    backend = _resolve_backend(backend, device)
    search = _faiss_search if backend == "faiss" else _torch_search
    # Candidates beyond k show whether the k-th place is tied with rows left out;
    # with exclude, the excluded row may take one of them.
    want = min(k + 1 + _EXTRA_CANDIDATES + (exclude is not None), len(database))
    rows = _Database(database, farthest)
    distances = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start, squared, idx in search(queries, database, want, farthest, exclude, block_size, device):
        stop = start + len(idx)
        skip = None if exclude is None else exclude[start:stop]
        distances[start:stop], indices[start:stop] = _canonical_top_k(
            queries[start:stop], squared, idx, skip, k, rows
        )
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


class _Database:
    """The database and what ranking it exactly needs; costly parts are computed on first use."""

    def __init__(self, vectors: np.ndarray, farthest: bool) -> None:
        self.vectors = vectors
        # Ranking key = sign * squared distance: ascending key is the canonical order.
        self.sign = -1.0 if farthest else 1.0
        self.max_sq = float(_squared_norms(vectors).max())
        dim = vectors.shape[1]
        self.expansion_error = _EXPANSION_ERROR * max(1.0, math.sqrt(dim / 1024))
        # A float64 expansion and _exact_squared each stay within (2d + 4) roundings
        # (eps = 1.1e-16) of a term at most ||q||^2 + ||x||^2: a worst-case bound, not a
        # statistical one, and still so tight that only genuine ties exceed it.
        self.float64_error = 8 * (dim + 4) * float(np.finfo(np.float64).eps)
        self._squared_norms: np.ndarray | None = None
        self._distinct: tuple[np.ndarray, np.ndarray] | None = None

    def squared_norms(self) -> np.ndarray:
        """float64 ``||x||^2`` of every row."""
        if self._squared_norms is None:
            step = max(1, _SCAN_ELEMENTS // max(self.vectors.shape[1], 1))
            self._squared_norms = np.concatenate(
                [_squared_norms(self.vectors[lo : lo + step]) for lo in range(0, len(self.vectors), step)]
            )
        return self._squared_norms

    def distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, first)``: each row's distinct-vector id, and each id's first row."""
        if self._distinct is None:
            n, dim = self.vectors.shape
            if dim == 0:
                self._distinct = np.zeros(n, dtype=np.int64), np.zeros(1, dtype=np.int64)
            else:
                raw = self.vectors.view(np.dtype((np.void, dim * self.vectors.itemsize))).ravel()
                _, first, ids = np.unique(raw, return_index=True, return_inverse=True)
                self._distinct = ids.ravel().astype(np.int64, copy=False), first.astype(np.int64, copy=False)
        return self._distinct


def _squared_norms(rows: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", rows, rows, dtype=np.float64)


def _canonical_top_k(
    queries: np.ndarray,
    squared: np.ndarray,
    idx: np.ndarray,
    skip: np.ndarray | None,
    k: int,
    db: _Database,
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical k rows per query (see :func:`knn_search`) from a backend's candidates.

    ``squared`` and ``idx`` are ``(B, m)`` expansion squared distances and database
    rows, the ``m`` best by the expansion in any order (``m >= k + 1`` unless they
    are the whole database; the excluded row may be among them). With ``tol`` the
    expansion's error bound, candidates whose sorted values lie within ``2 * tol``
    of each other form near-tie chains: those that reach the first k places get
    exact distances and are re-sorted, which fixes every place before the chain
    end. A row not returned has an expansion value at least the largest returned,
    so it can still beat the k-th exact value only if that value lies within tol of
    the last candidate; such queries are re-ranked over the whole database.
    Returns float32 distances and int64 indices, ``(B, k)``.
    """
    sign = db.sign
    n_queries = len(idx)
    valid = idx >= 0
    if skip is not None:
        valid &= idx != skip[:, None]
    key = np.where(valid, sign * squared.astype(np.float64), np.inf)
    order = np.argsort(key, axis=1)
    key = np.take_along_axis(key, order, 1)
    idx = np.take_along_axis(idx, order, 1).astype(np.int64, copy=False)
    query_sq = _squared_norms(queries)
    tol = db.expansion_error * (query_sq + db.max_sq)

    # near[:, j]: places j and j + 1 may be in either order (inf - inf is NaN: never near).
    with np.errstate(invalid="ignore"):
        near = np.diff(key, axis=1) <= 2 * tol[:, None]
    chain = np.zeros(key.shape, dtype=np.int64)
    np.cumsum(~near, axis=1, out=chain[:, 1:])
    exact = np.zeros(key.shape, dtype=bool)
    exact[:, 1:] |= near
    exact[:, :-1] |= near
    exact &= chain <= chain[:, k - 1 : k]
    # Small distances too, for accuracy; the first k places are always valid.
    exact[:, :k] |= sign * key[:, :k] < _EXPANSION_TRUSTED * query_sq[:, None]

    value = key.copy()
    pair_rows, pair_cols = np.nonzero(exact)
    if len(pair_rows):
        value[pair_rows, pair_cols] = sign * _exact_pairs(queries, db.vectors, pair_rows, idx[pair_rows, pair_cols])
        touched = np.unique(pair_rows)
        resort = np.lexsort((idx[touched], value[touched]), axis=-1)
        value[touched] = np.take_along_axis(value[touched], resort, 1)
        idx[touched] = np.take_along_axis(idx[touched], resort, 1)
        exact[touched] = np.take_along_axis(exact[touched], resort, 1)

    # An upper bound on the k-th exact key, and the largest candidate expansion key.
    kth = value[:, k - 1] + np.where(exact[:, k - 1], 0.0, tol)
    count = valid.sum(axis=1)
    last = key[np.arange(n_queries), count - 1]
    available = len(db.vectors) - (0 if skip is None else (skip >= 0))
    rescan = np.flatnonzero((count < available) & ~(kth + tol < last))

    top_sq = sign * value[:, :k]
    top_idx = np.ascontiguousarray(idx[:, :k])
    if len(rescan):
        top_sq[rescan], top_idx[rescan] = _rescan(queries[rescan], None if skip is None else skip[rescan], k, db)
    return np.sqrt(np.maximum(top_sq, 0.0)).astype(np.float32), top_idx


def _exact_squared(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 ``sum((x - q)^2)`` for paired ``(m, d)`` rows (or one ``(1, d)`` query), in a fixed order.

    The squares are summed by repeatedly folding the second half of the columns onto
    the first (a pairwise sum whose tree depends on d alone), never by a reduction
    whose order numpy or BLAS may pick by shape or memory alignment: each value
    depends on its two vectors alone, not on the batch, block size or backend, so
    ties are decided the same way everywhere.
    """
    terms = rows.astype(np.float64)
    terms -= queries
    terms *= terms
    while terms.shape[1] > 1:
        width = terms.shape[1]
        half = (width + 1) // 2
        folded = terms[:, :half].copy()
        folded[:, : width - half] += terms[:, half:]
        terms = folded
    return terms[:, 0] if terms.shape[1] else np.zeros(len(terms))


def _exact_pairs(queries: np.ndarray, database: np.ndarray, query_rows: np.ndarray, db_rows: np.ndarray) -> np.ndarray:
    """Exact squared distances between ``queries[query_rows]`` and ``database[db_rows]``, in bounded chunks."""
    out = np.empty(len(query_rows))
    for lo in range(0, len(query_rows), _EXACT_CHUNK_ROWS):
        hi = lo + _EXACT_CHUNK_ROWS
        out[lo:hi] = _exact_squared(queries[query_rows[lo:hi]], database[db_rows[lo:hi]])
    return out


def _rescan(
    queries: np.ndarray, skip: np.ndarray | None, k: int, db: _Database
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top k over the whole database, for queries whose tie group may pass the candidates.

    A float64 expansion (matrix products over bounded blocks) ranks every row to
    within ``float64_error``; only rows within twice that of its k-th value can be in
    the top k (the k best plus rows tied with them to float64 precision), and just
    those get exact distances. Returns squared distances and indices, ``(len(queries), k)``.
    """
    n, dim = db.vectors.shape
    norms = db.squared_norms()
    # The float64 keys of a whole query group against the database: at most
    # max(_SCAN_ELEMENTS, n) values; database rows are converted step rows at a time.
    group = max(1, min(len(queries), _SCAN_ELEMENTS // n))
    step = max(1, _SCAN_ELEMENTS // max(group, dim, 1))
    out_sq = np.empty((len(queries), k))
    out_idx = np.empty((len(queries), k), dtype=np.int64)
    for first in range(0, len(queries), group):
        block = queries[first : first + group]
        block64 = block.astype(np.float64)
        block_sq = _squared_norms(block)
        keys = np.empty((len(block), n))
        for lo in range(0, n, step):
            product = block64 @ db.vectors[lo : lo + step].astype(np.float64).T
            product *= -2.0
            product += block_sq[:, None]
            product += norms[lo : lo + step]
            keys[:, lo : lo + step] = db.sign * product
        if skip is not None:
            inside = np.flatnonzero(skip[first : first + group] >= 0)
            keys[inside, skip[first + inside]] = np.inf
        # k rows have a key <= kth, so an exact key <= kth + slack: a row whose key
        # exceeds kth + 2 * slack cannot be among the k best.
        kth = np.partition(keys, k - 1, axis=1)[:, k - 1]
        limit = kth + 2 * db.float64_error * (block_sq + db.max_sq)
        for i, query in enumerate(block):
            candidates = np.flatnonzero(keys[i] <= limit[i])  # ascending; never the excluded row
            out_sq[first + i], out_idx[first + i] = _exact_top_k(query, candidates, k, db)
    return out_sq, out_idx


def _exact_top_k(query: np.ndarray, rows: np.ndarray, k: int, db: _Database) -> tuple[np.ndarray, np.ndarray]:
    """The first k of ``rows`` (ascending, at least k) by (exact key, index): squared distances, indices."""
    if len(rows) > _DEDUPLICATE_ABOVE:
        ids, first = db.distinct()
        present = np.zeros(len(first), dtype=bool)
        present[ids[rows]] = True
        distinct = np.flatnonzero(present)
        slot = np.cumsum(present) - 1  # distinct id -> its place in `distinct`
        squared = _exact_rows(query, db.vectors, first[distinct])[slot[ids[rows]]]
    else:
        squared = _exact_rows(query, db.vectors, rows)
    key = db.sign * squared
    pick = np.arange(len(rows))
    if len(rows) > k:
        kth = np.partition(key, k - 1)[k - 1]
        below = np.flatnonzero(key < kth)
        pick = np.concatenate([below, np.flatnonzero(key == kth)[: k - len(below)]])
    pick = pick[np.lexsort((rows[pick], key[pick]))]
    return squared[pick], rows[pick]


def _exact_rows(query: np.ndarray, database: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows))
    for lo in range(0, len(rows), _EXACT_CHUNK_ROWS):
        out[lo : lo + _EXACT_CHUNK_ROWS] = _exact_squared(query[None], database[rows[lo : lo + _EXACT_CHUNK_ROWS]])
    return out


def _faiss_search(
    queries: np.ndarray,
    database: np.ndarray,
    want: int,
    farthest: bool,
    exclude: np.ndarray | None,
    block_size: int,
    device: str | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, squared_distances, indices)`` of the ``want`` best candidates per query block.

    The excluded row, if among them, is left for the caller to drop.
    """
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
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        if farthest:
            scores, idx = index.search(_augment_queries(block), want)
            squared = scores + np.einsum("ij,ij->i", block, block)[:, None]
        else:
            squared, idx = index.search(block, want)
        yield start, squared, idx.astype(np.int64, copy=False)


def _augment_database(rows: np.ndarray) -> np.ndarray:
    return np.hstack([rows, np.einsum("ij,ij->i", rows, rows)[:, None]]).astype(np.float32)


def _augment_queries(rows: np.ndarray) -> np.ndarray:
    return np.hstack([-2.0 * rows, np.ones((len(rows), 1), dtype=np.float32)]).astype(np.float32)


def _torch_search(
    queries: np.ndarray,
    database: np.ndarray,
    want: int,
    farthest: bool,
    exclude: np.ndarray | None,
    block_size: int,
    device: str | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, squared_distances, indices)`` of the ``want`` best candidates per query block.

    Each query block is compared with database tiles; every tile's best are
    merged into a running best ``want``, so no full block x database matrix is
    built. Excluded rows get the worst value (the caller drops them if returned).
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
    # A tile never narrower than want, so each tile can supply a full set of candidates.
    tile = max(want, _TORCH_TILE_ELEMENTS // min(block_size, max(len(queries), 1)))
    # Excluded entries get a value topk never prefers over a real distance.
    worst = float("-inf") if farthest else float("inf")
    with torch.inference_mode(), _full_float32(dev):
        db_sq = (db * db).sum(dim=1)
        for start in range(0, len(queries), block_size):
            q = _as_tensor(queries[start : start + block_size], dev)
            rows = torch.arange(len(q), device=dev)
            skip = None if exclude is None else torch.from_numpy(exclude[start : start + len(q)]).to(dev)
            best_val = best_idx = None
            for lo in range(0, len(db), tile):
                hi = min(lo + tile, len(db))
                # ||x||^2 - 2 q.x: the per-query ||q||^2 does not change the ranking,
                # so it is added only to the candidates.
                part = torch.addmm(db_sq[lo:hi].unsqueeze(0), q, db[lo:hi].T, alpha=-2.0)
                if skip is not None:
                    inside = (skip >= lo) & (skip < hi)
                    part[rows[inside], skip[inside] - lo] = worst
                val, idx = torch.topk(part, min(want, hi - lo), dim=1, largest=farthest, sorted=False)
                idx += lo
                if best_val is not None:
                    val = torch.cat([best_val, val], dim=1)
                    idx = torch.cat([best_idx, idx], dim=1)
                    val, pick = torch.topk(val, want, dim=1, largest=farthest, sorted=False)
                    idx = torch.gather(idx, 1, pick)
                best_val, best_idx = val, idx
                del part
            squared = best_val + (q * q).sum(dim=1, keepdim=True)
            yield start, squared.cpu().numpy(), best_idx.cpu().numpy().astype(np.int64, copy=False)


@contextlib.contextmanager
def _full_float32(dev: "torch.device") -> Iterator[None]:
    """On CUDA, matrix products in true float32: no TF32 (10-bit mantissa) and no autocast.

    The error bound used to detect near-ties (``_EXPANSION_ERROR``) assumes float32
    arithmetic; a caller's global TF32 setting or autocast region would break it.
    """
    import torch

    if dev.type != "cuda":
        yield
        return
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _as_tensor(array: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """Share memory with ``array`` on CPU; we only read it, so a read-only array is fine."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)
