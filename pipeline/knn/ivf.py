"""Approximate nearest neighbours for large galleries: a faiss ``IndexIVFFlat``.

The database is split into ``nlist`` lists by k-means (seeded); a query scans only
the lists of its ``nprobe`` nearest centroids. Two choices make the answer a
function of the query alone, as :func:`pipeline.knn.knn_search`'s is, so blocks of
queries may be searched in any grouping, in any process, with the same result:

* the lists to probe come from the exact, canonical :func:`knn_search` over the
  centroids (faiss's own coarse search uses a matrix product whose rounding
  depends on how many queries share the call), and are scanned with
  ``search_preassigned``, which handles each query on its own;
* the candidates found are ranked like the exact search ranks its own: by exact
  float64 squared distance (:func:`pipeline.knn.exact.exact_pairs`), then row.

A query whose probed lists hold fewer than the ``k`` rows asked for probes twice as
many lists, and so on up to all of them (then the search is exhaustive), so the
answer always has ``k`` rows and a metric is never scored over missing neighbours.

faiss is optional: only :func:`build_ivf` imports it, with a clear error if absent.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.knn import limits
from pipeline.knn.exact import exact_pairs
from pipeline.knn.search import knn_search


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise ConfigError("[ValidateEpoch] index = ivf needs the faiss package (pip install faiss-cpu); install it "
                          "or use index = flat (exact search)") from error
    return faiss


class IvfIndex:
    """A trained ``IndexIVFFlat`` over a database, picklable (as faiss's serialized bytes) so a
    dask cluster receives it once; each process deserializes it on first use."""

    def __init__(self, data: np.ndarray, nlist: int, rows: int) -> None:
        self.data, self.nlist, self.rows = data, nlist, rows
        self._lock = threading.Lock()
        self._index: Any = None
        self._centroids: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {"data": self.data, "nlist": self.nlist, "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["data"], state["nlist"], state["rows"])

    def _loaded(self) -> tuple[Any, np.ndarray]:
        with self._lock:  # one deserialization per process, however many threads search
            if self._index is None:
                index = _faiss().deserialize_index(self.data)
                self._centroids = index.quantizer.reconstruct_n(0, self.nlist)
                self._index = index
        return self._index, self._centroids

    def search(self, database: np.ndarray, queries: np.ndarray, k: int, nprobe: int,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """float32 distances and int64 rows ``(Q, k)`` of each query's k nearest among the rows of
        its probed lists, ranked canonically; ``database`` is the indexed array (for exact distances),
        ``exclude`` an optional ``(Q,)`` row per query to leave out (-1: none)."""
        index, centroids = self._loaded()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        available = self.rows - (exclude is not None)
        if not 1 <= k <= available:
            raise ConfigError(f"ivf search: k={k} must lie in [1, {available}] (the database rows"
                              f"{' minus the excluded one' if exclude is not None else ''})")
        spare = limits.EXTRA_CANDIDATES + int(k * limits.EXTRA_FRACTION)
        want = min(k + spare + (exclude is not None), self.rows)
        out_d = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        todo, probe = np.arange(len(queries)), min(max(1, nprobe), self.nlist)
        while len(todo):
            block = queries[todo]
            skip = None if exclude is None else np.asarray(exclude, dtype=np.int64)[todo]
            dq, iq = knn_search(block, centroids, probe)
            found_i = _search_preassigned(index, block, want, iq, np.square(dq))
            valid = found_i >= 0
            if skip is not None:
                valid &= found_i != skip[:, None]
            done = (valid.sum(axis=1) >= k) | (probe == self.nlist)  # all lists: every row was a candidate
            rows = np.flatnonzero(done)
            out_d[todo[rows]], out_i[todo[rows]] = _rank(block[rows], database, found_i[rows], valid[rows], k)
            todo, probe = todo[~done], min(2 * probe, self.nlist)
        return out_d, out_i


def _search_preassigned(index: Any, queries: np.ndarray, k: int, lists: np.ndarray,
                        list_distances: np.ndarray) -> np.ndarray:
    """faiss's ``search_preassigned`` with ``nprobe`` given per call (``SearchParametersIVF``): the
    Python wrapper reads the index's own ``nprobe``, which threads sharing the index must not set."""
    faiss = _faiss()
    n, probe = lists.shape
    params = faiss.SearchParametersIVF()
    params.nprobe = probe
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    list_distances = np.ascontiguousarray(list_distances, dtype=np.float32)
    distances, found = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    index.search_preassigned_c(n, faiss.swig_ptr(queries), k, faiss.swig_ptr(lists), faiss.swig_ptr(list_distances),
                               faiss.swig_ptr(distances), faiss.swig_ptr(found), False, params)
    return found


def _rank(queries: np.ndarray, database: np.ndarray, found: np.ndarray, valid: np.ndarray,
          k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k valid candidates of each query by (exact squared distance, row)."""
    key = np.full(found.shape, np.inf)
    pair_rows, pair_cols = np.nonzero(valid)
    key[pair_rows, pair_cols] = exact_pairs(queries, database, pair_rows, found[pair_rows, pair_cols])
    rows = np.where(valid, found, np.iinfo(np.int64).max)
    order = np.lexsort((rows, key), axis=-1)[:, :k]
    return (np.sqrt(np.take_along_axis(key, order, 1)).astype(np.float32),
            np.take_along_axis(rows, order, 1).astype(np.int64))


def build_ivf(vectors: np.ndarray, nlist: int, seed: int) -> IvfIndex:
    """Train an ``IndexIVFFlat`` of ``nlist`` lists (faiss k-means seeded with ``seed``) and add ``vectors``.

    Raises :class:`ConfigError` naming ``[ValidateEpoch] nlist`` when it is not
    between 1 and the number of database rows, and when faiss is missing.
    """
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows, dim = vectors.shape
    if not 1 <= nlist <= rows:
        raise ConfigError(f"[ValidateEpoch] nlist = {nlist}, but the database (the training embeddings) has "
                          f"{rows} rows; k-means needs at least one row per list: use nlist <= {rows} (about "
                          f"4 * sqrt(rows) = {max(1, int(4 * rows ** 0.5))} is usual), or index = flat")
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist, faiss.METRIC_L2)
    index.cp.seed = int(seed)
    # faiss warns (on stderr) below 39 training rows per list; the lists still work, only less balanced.
    index.cp.min_points_per_centroid = 1
    index.train(vectors)
    index.add(vectors)
    return IvfIndex(faiss.serialize_index(index), nlist, rows)
