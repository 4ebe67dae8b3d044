"""The settings of a triplet list that every strategy shares: which strategy, how
many rows, and how the work is spread (``[TripletList]``).

Strategy-specific settings live beside their rules:
:class:`~pipeline.sampling.mined_options.MinedOptions` and
:class:`~pipeline.sampling.batch_options.BatchOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import setting

# The registered strategy names (tests check this against the registry, which
# fills only as the strategy modules are imported).
STRATEGIES = ("uniform", "semihard", "hard", "mixed", "batched")


@dataclass(frozen=True)
class ListSettings:
    """What one epoch's list is made of, and the run-only knobs of the dask stage."""

    strategy: str = setting("uniform", "uniform, semihard, hard, mixed or batched", choices=STRATEGIES)
    triplets_per_query: int = setting(1, "plain lists: rows per training image as query")
    mine_first_epoch: bool = setting(True, "epoch 1 mines from epoch 0's embeddings (else uniform)")
    n_blocks: int = setting(8, "class blocks sampled in parallel", run_only=True)
    # Named for dask: "scheduler" alone means the learning-rate schedule elsewhere.
    dask_scheduler: str = setting("threads", "dask scheduler of the class blocks", run_only=True)

    def mines(self, epoch: int) -> bool:
        """Whether ``epoch``'s list may read the previous epoch's embeddings.

        Only epoch 1 with ``mine_first_epoch`` off goes without (the embeddings it
        would mine are epoch 0's, from random weights).
        """
        return epoch != 1 or self.mine_first_epoch

    def strategy_for(self, epoch: int) -> str:
        """The strategy that samples ``epoch``'s list.

        Where the epoch does not mine (:meth:`mines`), a plain list falls back to
        ``uniform``; a batched list stays batched, as plain P x K batches.
        """
        if not self.mines(epoch) and self.strategy != "batched":
            return "uniform"
        return self.strategy
