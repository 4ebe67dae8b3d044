"""Validation's query blocks on a dask.distributed cluster.

The gallery (training vectors, labels and, for ``index = ivf``, the serialized
faiss index) is scattered to every worker once (``broadcast``), not once per
block; a block's task carries only its queries, and returns its per-query scores
and first neighbour columns, which are put back in query order. Both retrievals
of an epoch (the validation queries and the training sample) use the one scatter.

A worker that dies mid-block has its block retried on another worker (dask's
``allowed-failures``; every worker holds a copy of the gallery); a block that
fails for good raises from :meth:`ClusterGallery.map_blocks` before the caller
writes anything, and the blocks still queued are cancelled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from pipeline.dask_cluster import worker_count
from pipeline.evaluation.gallery import Gallery

if TYPE_CHECKING:
    from distributed import Client

# Blocks per worker when the memory budget allows more queries per block: a few
# each, so a slow or restarted worker does not hold up the whole validation.
BLOCKS_PER_WORKER = 2


class ClusterGallery:
    """A :class:`Gallery` scattered to every worker of ``client``, and the blocks that search it there."""

    def __init__(self, client: Client, gallery: Gallery) -> None:
        self.client = client
        self.gallery = gallery  # the labels are read here too (R, the scored width)
        self.workers = worker_count(client)
        self.future = client.scatter(gallery, broadcast=True, hash=False)

    def block_rows(self, queries: int, limit: int) -> int:
        """Queries per block: ``limit`` (the memory budget's) or fewer, so each worker gets
        :data:`BLOCKS_PER_WORKER` blocks."""
        return max(1, min(limit, math.ceil(queries / (BLOCKS_PER_WORKER * self.workers))))

    def map_blocks(self, function: Callable[..., Any], plan: Any, blocks: Sequence[tuple]) -> Iterator[Any]:
        """``function(gallery, plan, *block)`` for each block on the workers, yielded in block order."""
        futures = [self.client.submit(function, self.future, plan, *block, pure=False) for block in blocks]
        try:
            for future in futures:
                yield future.result()
                future.release()  # its result is the caller's now: the worker may drop it
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        """Release the scattered gallery on the workers."""
        self.future.release()
