"""Exact k-nearest (and k-farthest) neighbour search by Euclidean distance.

Three interchangeable backends find the candidates:

* ``"faiss"`` (:mod:`pipeline.knn.faiss_backend`) — ``faiss.knn`` (exact
  brute force; farthest search uses an ``IndexFlatIP`` over augmented vectors).
  faiss is an optional dependency, so it is imported only when this backend is
  used. Nearest search runs on the caller's array (``faiss.knn``); farthest search
  builds an index over augmented copies of the rows (200 MB for 100k x 512 float32).
* ``"torch"`` (:mod:`pipeline.knn.torch_backend`) — a tiled
  ``||q||^2 - 2 q.x + ||x||^2`` expansion with ``topk``, which also runs on a GPU.
* ``"float64"`` (:mod:`pipeline.knn.float64_backend`) — the same expansion in float64
  against every row, then a partition and sort per query. Its keys are exact to about
  1e-13 of the squared norms, so only true ties are left to recompute; ``"auto"`` takes
  it on the CPU where k is at least a 64th of the database (and 256), the retrieval
  metrics' R = 6,000 of 60k, where the float32 backends' near ties cost more than its
  slower matrix product.

All process the queries in blocks, so memory stays bounded by the block size
rather than growing with ``queries x database`` (at Tiny ImageNet scale the full
matrix would be 10k x 100k floats = 4 GB).

The float32 backends compute squared distances with the float32 expansion, which each
rounds in its own way, so on their own they disagree about near-ties and about which
members of a large tie group (duplicate vectors, a collapsed embedding) make the
cut. The answer is therefore made canonical afterwards
(:func:`pipeline.knn.canonical.canonical_top_k`): each backend returns a few
candidates beyond k; wherever the expansion's error bound cannot separate two of
them, their distances are recomputed exactly
(:func:`pipeline.knn.exact.exact_squared`, identical for every backend); and when
the group tied at the k-th place may extend past the candidates, that query first
gets more candidates and, if they do not suffice either, is re-ranked against the
whole database (:func:`pipeline.knn.rescan.rescan`). Every backend then returns the
same rows, in the same order (the float64 one with its own, far smaller error bound).
A caller that reads only the neighbours' labels past the first few places (retrieval
metrics) passes ``labels``: exact distances are then computed only where a near tie
joins two labels, and the labels come out canonical.

The public entry point is :func:`knn_search` (:mod:`pipeline.knn.search`); the
error bounds and memory limits it relies on live in :mod:`pipeline.knn.limits`.
"""

from pipeline.knn.search import BACKENDS, knn_search

__all__ = ["BACKENDS", "knn_search"]
