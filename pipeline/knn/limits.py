"""Error bounds and memory limits of the exact kNN search.

The other modules of :mod:`pipeline.knn` read these as ``limits.NAME`` when they
run (never ``from ... import NAME``), so a test can shrink one with monkeypatch
to reach rarely taken paths (rescans, deduplication, tiling) on small data.
"""

from __future__ import annotations

# Bound on the absolute error of a float32 expansion ||q||^2 - 2 q.x + ||x||^2,
# as a fraction of ||q||^2 + max_j ||x_j||^2 (each term is at most that sum).
# The three terms and their two sums are each rounded (a few float32 eps, 6e-8
# each), and the dot product accumulates d roundings: d * eps = 3e-5 at d = 512
# in the worst case, but BLAS kernels keep many partial sums whose rounding errors
# are unbiased, so the error grows like sqrt(d) * eps = 1.4e-6 at d = 512.
# Measured maxima with both backends, for Gaussian, non-negative, offset (50 + x),
# unit-norm and collapsed data at d = 8..2048, stay below 6e-7: 1e-5 leaves a
# 15x margin, and it grows with sqrt(d) beyond d = 1024 to keep it.
EXPANSION_ERROR = 1e-5
# Candidates fetched beyond the k + 1 that suffice: a near-tie at the k-th place
# then rarely reaches the last candidate, which would force a full rescan.
EXTRA_CANDIDATES = 3
# ... plus this fraction of k: at large k the distances near the k-th place crowd
# together (1M x 64 Gaussian rows, k = 100k: ~20 rows within the expansion's error
# of the k-th), so 3 spares never reach past the near-tie and nearly every query
# was rescanned over the whole database. 0.1% of k (100 rows there) clears it; at
# k <= 999 it adds nothing.
EXTRA_FRACTION = 1e-3
# When the tie group at the k-th place runs past a query's candidates, it first gets this
# many times the spare candidates (again and again while that helps) before a full
# rescan: a random network's embedding crowds ~100 rows within the expansion's error of
# the 6,000th neighbour, and rescanning every such query cost a minute a validation.
SPARE_GROWTH = 16
# Squared distances below this fraction of ||q||^2 are also recomputed exactly:
# there the expansion's error (~1e-6 * ||q||^2) is large relative to the distance
# (a query's distance to its own copy would come out as ~1e-3 instead of 0).
EXPANSION_TRUSTED = 1e-2
# Neighbour pairs recomputed exactly per step, bounding the gathered rows' memory:
# at most this many rows, and at most EXACT_CHUNK_ELEMENTS values (16 MiB in float64),
# so wide vectors (3,072 raw pixels) take fewer rows at a time (exact_chunk_rows).
EXACT_CHUNK_ROWS = 4096
EXACT_CHUNK_ELEMENTS = 1 << 21


def exact_chunk_rows(dim: int) -> int:
    """Rows of ``dim`` values recomputed exactly per step (see :data:`EXACT_CHUNK_ROWS`)."""
    return max(1, min(EXACT_CHUNK_ROWS, EXACT_CHUNK_ELEMENTS // max(dim, 1)))
# A full rescan computes float64 distances for at most this many (query, row)
# pairs, and converts at most this many database values to float64, per step (32 MiB).
SCAN_ELEMENTS = 1 << 22
# A rescan's tie group larger than this is ranked per distinct vector when its keys
# repeat: identical rows (a collapsed embedding) have identical distances, computed once.
DEDUPLICATE_ABOVE = 4096

# The float64 backend's keys of one step of queries against the whole database: at most
# this many values (64 MiB), so a 60k-row gallery is searched 139 queries at a time.
FLOAT64_KEY_ELEMENTS = 1 << 23
# Backend "auto" searches in float64 on the CPU from k = N / FLOAT64_FROM_SHARE on, and at
# least FLOAT64_FROM_K (see pipeline.knn.search). Its cost hardly grows with k, the float32
# search's near ties do. On Gaussian class blobs (d = 64, 2,000 queries, torch imported)
# faiss against float64 took: 60k rows, k = 300: 0.55 against 0.98 s; k = 1,000: 1.61
# against 1.21; 100k rows, k = 500: 0.96 against 2.34; 12k rows, k = 300: 0.26 against
# 0.25 and k = 1,200: 1.28 against 0.44; 60k x 196 at k = 6,000: 10.0 against 1.5.
FLOAT64_FROM_SHARE = 64
FLOAT64_FROM_K = 256

# The torch backend also tiles the database so one (query block x database tile)
# distance matrix holds at most this many float32 values (128 MiB): large enough
# for efficient matrix products, small enough to keep peak memory well under 1 GB.
TORCH_TILE_ELEMENTS = 1 << 25
