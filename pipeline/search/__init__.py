"""Similar-image search with a trained epoch.

- :mod:`~pipeline.search.index`: the ``search/epoch-NNN/`` folder (faiss index,
  row -> image table, meta), built by the ``SearchIndex`` task.
- :mod:`~pipeline.search.searcher`: :class:`Searcher` (embed query images as
  validation does, find their nearest indexed images) and :class:`Hit`;
  :mod:`~pipeline.search.preprocess` decodes queries and
  :mod:`~pipeline.search.locate` says what is missing and how to make it.
- :mod:`~pipeline.search.cli`: ``python -m pipeline.search``; its ``--html`` page
  comes from :mod:`~pipeline.search.results_page`.

The names below are imported on first use: ``python -m pipeline.search`` runs
this file first, and the command checks its input (experiment, epoch, index,
image files) before it pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"SearchIndexSettings": "pipeline.search.index", "build_search_index": "pipeline.search.index",
            "Hit": "pipeline.search.searcher", "Searcher": "pipeline.search.searcher"}
__all__ = ["Hit", "SearchIndexSettings", "Searcher", "build_search_index"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")
