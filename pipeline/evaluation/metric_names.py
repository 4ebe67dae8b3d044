"""Names of the metric keys in ``metrics/epoch-NNN.json`` and the baseline JSON.

Precision is measured at ``[ValidateEpoch] k`` neighbours, so its key carries
``k``; every reader derives the key from ``k`` here instead of spelling it.
"""

from __future__ import annotations

from typing import Literal

Split = Literal["val", "train"]


def precision_key(k: int, split: Split = "val") -> str:
    """Key of precision@k over ``split``'s queries, e.g. ``precision_at_30_val``."""
    return f"precision_at_{k}_{split}"


