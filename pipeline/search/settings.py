"""``[SearchIndex]`` settings, apart from the index code so that declaring task
parameters imports neither pandas nor faiss."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import setting

SPLIT_CHOICES = ("train", "train+val")


@dataclass(frozen=True)
class SearchIndexSettings:
    """``[SearchIndex]``: which of the epoch's embeddings are searchable."""

    splits: str = setting("train", "embeddings indexed: train, or train+val", choices=SPLIT_CHOICES)

    def split_list(self) -> list[str]:
        """``"train+val"`` -> ``["train", "val"]``."""
        return self.splits.split("+")

