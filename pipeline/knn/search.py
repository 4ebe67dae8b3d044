"""The public :func:`knn_search`: argument checks, backend choice, and the block loop
that turns each backend's candidates into the canonical answer."""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

from pipeline.errors import ConfigError
from pipeline.knn import limits
from pipeline.knn.canonical import Widen, canonical_top_k
from pipeline.knn.database import Database
from pipeline.knn.faiss_backend import faiss_search
from pipeline.knn.float64_backend import float64_search
from pipeline.knn.torch_backend import torch_search

BACKENDS = ("auto", "faiss", "torch", "float64")
SEARCHES = {"faiss": faiss_search, "torch": torch_search, "float64": float64_search}


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
    labels: np.ndarray | None = None,
    exact_columns: int = 0,
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
        backend: ``"faiss"``, ``"torch"``, ``"float64"`` or ``"auto"``: float64 when k
            is at least a 64th of the database and 256 (its keys leave only true ties
            to recompute, which there outweighs its slower matrix product), else
            faiss when importable, else torch; torch when an explicit non-CPU
            ``device`` is requested, because faiss here is the CPU build.
        block_size: queries processed per step; bounds the working memory.
        device: torch device for the torch backend (default ``"cuda"`` when
            available, else ``"cpu"``) and the float64 one (default ``"cpu"``).
            The faiss backend refuses any but the CPU.
        labels: optional ``(N,)`` database labels, for a caller that reads only the
            labels of the neighbours past the first ``exact_columns`` (retrieval
            metrics). The first ``exact_columns`` rows are then as described below,
            and beyond them the *labels* of the rows are those of the canonical rows,
            place by place; rows of one label whose distances lie within float32
            rounding of each other may come in either order there, and their
            distances are the expansion's. Exactness costs only where it can move a
            label, which at R = 6,000 neighbours is most of the work saved.
        exact_columns: with ``labels``, the leading places that stay exactly canonical.

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
    queries, database, exclude = validate_inputs(queries, database, k, exclude, block_size)
    backend = resolve_backend(backend, device, k, len(database))
    # Candidates beyond k show whether the k-th place is tied with rows left out;
    # with exclude, the excluded row may take one of them.
    spare = limits.EXTRA_CANDIDATES + int(k * limits.EXTRA_FRACTION)
    want = min(k + 1 + spare + (exclude is not None), len(database))
    if labels is None and exact_columns:
        raise ConfigError(f"knn_search: exact_columns={exact_columns} has no effect without labels; "
                          "pass the database labels or leave exact_columns at 0.")
    if isinstance(exact_columns, bool) or not isinstance(exact_columns, (int, np.integer)) or exact_columns < 0:
        raise ConfigError(f"knn_search: exact_columns must be a non-negative integer, got {exact_columns!r}.")
    codes = None if labels is None else label_codes(labels, len(database))
    rows = Database(database, farthest)
    search = SEARCHES[backend]
    if backend == "float64":
        search = functools.partial(search, norms=rows.squared_norms())  # computed once per call, not per search
    # The relative error bound of the backend's keys, which decides what counts as a near tie.
    error = rows.float64_error if backend == "float64" else rows.expansion_error
    distances = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)

    def widen(have: int) -> Widen:
        """Candidates for queries that ``have`` did not cover: ``SPARE_GROWTH`` times as many beyond k."""
        more = min(len(database), k + (have - k) * limits.SPARE_GROWTH)

        def fetch(some: np.ndarray, skip: np.ndarray | None):
            if more <= have:  # already the whole database
                return None
            blocks = list(search(some, database, more, farthest, skip, block_size, device))
            return np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks]), widen(more)

        return fetch

    for start, squared, idx in search(queries, database, want, farthest, exclude, block_size, device):
        stop = start + len(idx)
        skip = None if exclude is None else exclude[start:stop]
        distances[start:stop], indices[start:stop] = canonical_top_k(
            queries[start:stop], squared, idx, skip, k, rows, error, codes, exact_columns, widen(want)
        )
    return distances, indices


def label_codes(labels: np.ndarray, n: int) -> np.ndarray:
    """int64 codes of the database ``labels`` (any sortable dtype), checked against the ``n`` rows."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ConfigError(
            f"knn_search: labels must hold one label per database row, shape ({n},), got {labels.shape}."
        )
    return np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64, copy=False)


def validate_inputs(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude: np.ndarray | None,
    block_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check shapes and values; return C-contiguous float32 inputs (faiss needs them).

    Raises :class:`ConfigError` naming the argument and how to fix it.
    """
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


def resolve_backend(backend: str, device: str | None, k: int, n: int) -> str:
    """The backend ``"auto"`` stands for at this ``k`` of ``n`` rows (see :func:`knn_search`); raise on an
    unknown name, or on a device the faiss backend cannot use."""
    if backend not in BACKENDS:
        raise ConfigError(f"knn_search: backend must be one of {BACKENDS}, got {backend!r}.")
    on_cpu = device is None or str(device).startswith("cpu")
    if backend == "faiss" and not on_cpu:
        raise ConfigError(f"knn_search: backend 'faiss' runs on the CPU only, but device={device!r} was given; "
                          "use backend 'torch' (or 'auto') for that device, or leave the device unset.")
    if backend != "auto":
        return backend
    if not on_cpu:
        return "torch"
    if k >= max(limits.FLOAT64_FROM_K, n / limits.FLOAT64_FROM_SHARE):
        return "float64"
    return "faiss" if importlib.util.find_spec("faiss") is not None else "torch"
