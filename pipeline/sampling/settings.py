"""The ``[TripletList]`` settings: the options of each kind of strategy, and the section as a whole.

* :class:`MinedOptions`: what the mined strategies (``semihard``, ``hard``,
  ``mixed``) read; :class:`~pipeline.sampling.mined.MinedStrategy` extends it.
* :class:`BatchOptions`: what batch-structured lists (``batched``) read;
  :class:`~pipeline.sampling.batched.BatchedStrategy` extends it.
* :class:`ListSettings`: the whole section, i.e. both option sets plus the
  list's own settings (which strategy, rows per query, the first epoch, and the
  run-only knobs of the dask stage). ``TripletList`` takes its parameters from
  it, and :meth:`ListSettings.sampler` checks it and builds the epoch's strategy.

Options are converted and checked when built (config files and library calls
may give strings): a bad value raises ``ConfigError`` naming ``[TripletList]
<name>`` (:func:`pipeline.settings.check_fields`). Refused as silently ignored
(:meth:`ListSettings.problems`, checked by :meth:`ListSettings.sampler` while
Luigi schedules): a setting that differs from its default (the value luigi.cfg
ships) while nothing reads it, namely

* a setting the chosen strategy does not read (each strategy's ``reads()``:
  batch options with a plain strategy, mined options with ``batched`` or
  ``uniform``, ``mined_share``/``mined_strategy`` without ``mixed``,
  ``triplets_per_query`` with ``batched``, ``mine_first_epoch`` with ``uniform``);
* ``knn_k`` with ``candidates = pool``, ``pool_size`` with ``candidates = knn``,
  and ``relevance_cap`` without ``positive = relevance``.

Run-only knobs (``n_blocks``, ``dask_scheduler``) are never refused. Library
calls (:func:`~pipeline.sampling.base.get_strategy`, ``ListSettings(...)``
handed to the driver) are not held to these rules: options a strategy does not
take are simply not passed to it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pipeline.sampling.base import STRATEGIES, TripletStrategy, get_strategy
from pipeline.settings import (
    Problem,
    check,
    check_fields,
    is_run_only,
    option,
    setting,
    setting_fields,
    unread,
)

SECTION = "TripletList"

POSITIVE_RULES = ("uniform", "farthest", "relevance")
CANDIDATE_RULES = ("pool", "knn")
BAND_PICKS = ("random", "nearest")
MINED_INNER = ("semihard", "hard")
TRIPLET_RULES = ("active", "semihard", "hard", "uniform")


SUSPECTS = ("keep", "exclude", "relabel")
# Settings of the list itself, read whatever the strategy.
LIST_LEVEL = ("strategy", "suspects", "audit_from")

@dataclass(frozen=True)
class _Options:
    """Converts and checks every declared field when built."""

    def __post_init__(self) -> None:
        check_fields(self, SECTION)


@dataclass(frozen=True)
class MinedOptions(_Options):
    """What the mined strategies read.

    The settings choose the rules (:mod:`pipeline.sampling.positives`,
    :mod:`pipeline.sampling.mined`); the options tune how the work is done:
    ``band_pick`` (how ``semihard`` picks in its band), ``chunk_size`` (queries
    per candidate step), ``knn_backend`` and ``knn_device`` (passed to
    :func:`pipeline.knn.knn_search`).
    """

    positive: str = setting("uniform", "uniform, farthest or relevance (mined strategies)", choices=POSITIVE_RULES)
    candidates: str = setting("pool", "pool or knn (mined strategies)", choices=CANDIDATE_RULES)
    pool_size: int = setting(64, "candidates = pool: random negatives per query", minimum=1)
    knn_k: int = setting(100, "candidates = knn: nearest neighbours searched per query", minimum=1)
    mined_share: float = setting(0.5, "share of mined rows for strategy = mixed, in [0, 1]", minimum=0.0,
                                 maximum=1.0)
    mined_strategy: str = setting("hard", "inner strategy of mixed", choices=MINED_INNER)
    relevance_cap: float = setting(0.9, "positive = relevance: weight cap quantile, in (0, 1]", above=0.0,
                                   maximum=1.0, why="a cap quantile of 0 would weigh every positive 0")
    band_pick: str = option("random", choices=BAND_PICKS)
    chunk_size: int = option(4096, minimum=1)
    knn_backend: str = option("auto")
    knn_device: str | None = option(None)


@dataclass(frozen=True)
class BatchOptions(_Options):
    """What a batch-structured list reads. Each is explained where it acts, in
    :mod:`pipeline.sampling.batched` (classes, seeds, length, hard negatives, listed triplets)."""

    batch_classes: int = setting(10, "batched: classes per batch (P)", minimum=2,
                                 why="an anchor needs a negative from another class of its batch")
    batch_seeds: int = setting(10, "batched: seed images per class and batch (K)", minimum=2,
                               why="an anchor needs a positive among its class's seeds")
    image_passes: int = setting(7, "batched: images forwarded per epoch, in training sets", minimum=1)
    hard_share: float = setting(1.0, "batched: share of seeds that bring a hard negative, in [0, 1]", minimum=0.0,
                                maximum=1.0)
    hard_top: int = setting(10, "batched: hard negative drawn among this many nearest", minimum=1)
    triplets_per_anchor: int = setting(16, "batched: listed triplets per anchor", minimum=1)
    triplet_rule: str = setting("active", "batched: active, semihard, hard or uniform", choices=TRIPLET_RULES)


MINED_SETTINGS = frozenset(f.name for f in setting_fields(MinedOptions))
BATCH_SETTINGS = frozenset(f.name for f in setting_fields(BatchOptions))


@dataclass(frozen=True)
class ListSettings(MinedOptions, BatchOptions):
    """The whole ``[TripletList]`` section: every strategy's options plus the list's own settings.

    The driver reads ``triplets_per_query``, ``n_blocks`` and ``dask_scheduler``
    only (the caller builds the strategy, e.g. with :meth:`sampler`).
    """

    strategy: str = setting("batched", "uniform, semihard, hard, mixed or batched", choices=STRATEGIES)
    triplets_per_query: int = setting(4, "plain lists: rows per training image as query", minimum=1)
    mine_first_epoch: bool = setting(True, "epoch 1 mines from epoch 0's embeddings (else uniform)")
    suspects: str = setting("keep", "labels the audit of the epoch before suspects: keep, exclude (out of "
                            "anchors, positives and negatives) or relabel (to the suggested class)",
                            choices=SUSPECTS)
    audit_from: int = setting(3, "suspects other than keep: the first epoch whose list uses the audit of the "
                                 "epoch before it (earlier embeddings are not yet trusted)", minimum=1)
    n_blocks: int = setting(8, "class blocks sampled in parallel", run_only=True, minimum=1)
    # Named for dask: "scheduler" alone means the learning-rate schedule elsewhere.
    dask_scheduler: str = setting("threads", "dask scheduler of the class blocks", run_only=True)

    def uses_audit(self, epoch: int) -> bool:
        """Whether ``epoch``'s list reads the audit of epoch ``epoch - 1`` (``suspects``, ``audit_from``)."""
        return self.suspects != "keep" and epoch >= self.audit_from

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

    def build(self, name: str) -> TripletStrategy:
        """The strategy registered as ``name``, with these options."""
        return get_strategy(name, **{f.name: getattr(self, f.name) for f in fields(self)})

    def sampler(self, epoch: int) -> TripletStrategy:
        """Check the section (:func:`pipeline.settings.check`) and build ``epoch``'s strategy."""
        check(self, SECTION)
        return self.build(self.strategy_for(epoch))

    def problems(self) -> list[Problem]:
        """The settings that would be silently ignored (see the module docstring)."""
        reads = self.build(self.strategy).reads()
        ignored = [f.name for f in setting_fields(self)
                   if f.name not in reads and f.name not in LIST_LEVEL and not is_run_only(f)]
        problems = unread(self, ignored, "strategy")
        if self.suspects == "keep":
            problems += unread(self, ["audit_from"], "suspects")
        flagged = {p.names[0] for p in problems}
        if "knn_k" not in flagged and self.candidates == "pool":
            problems += unread(self, ["knn_k"], "candidates")
        if "pool_size" not in flagged and self.candidates == "knn":
            problems += unread(self, ["pool_size"], "candidates")
        if "relevance_cap" not in flagged and self.positive != "relevance":
            problems += unread(self, ["relevance_cap"], "positive")
        return problems
