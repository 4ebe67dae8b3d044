"""Summary statistics of one epoch's triplet list, for ``python -m pipeline.show triplets``.

:func:`summarize_triplets` takes the triplet table as a DataFrame (columns of
:data:`pipeline.sampling.driver.TRIPLET_SCHEMA`; only ``strategy``, ``d_qp`` and
``d_qn`` are read) and the triplet margin g, and returns plain Python values
(JSON-serialisable, NaN where a figure is undefined)::

    {
      "rows": 100000,
      "strategy_share": {"semihard": 0.61, "semihard-beyond": 0.3, ...},
      "rows_with_distances": 100000,     # rows where d_qp and d_qn are both finite
      "satisfied_share": 0.12,           # d_qn > d_qp + margin  (loss already 0)
      "active_share": 0.88,              # margin + d_qp - d_qn > 0 (loss > 0)
      "quantiles": {"d_qp": {"p5": ..., "p25": ..., "p50": ..., "p75": ..., "p95": ...},
                    "d_qn": {...}, "d_qn_minus_d_qp": {...}},
      "by_strategy": {"semihard": {"rows": ..., "share": ...,
                                   "satisfied_share": ..., "active_share": ...}, ...},
    }

The satisfied and active shares are fractions of the rows *with* distances (a
uniform list has none, so they are NaN there); a row with loss exactly 0 at the
boundary ``d_qn == d_qp + margin`` counts as neither. Quantiles use the rows with
distances only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

QUANTILES = (5, 25, 50, 75, 95)


def _share(count: int, total: int) -> float:
    return count / total if total else math.nan


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {f"p{q}": math.nan for q in QUANTILES}
    got = np.quantile(values.astype(np.float64), [q / 100 for q in QUANTILES])
    return {f"p{q}": float(v) for q, v in zip(QUANTILES, got)}


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _hinge_rows(d_qp: np.ndarray, d_qn: np.ndarray,
                margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(has, gap, satisfied, active)``: rows with both distances, ``d_qn - d_qp``, rows
    whose loss is already 0 (``gap > margin``) and rows still in the loss."""
    has = np.isfinite(d_qp) & np.isfinite(d_qn)
    gap = d_qn - d_qp
    return has, gap, has & (gap > margin), has & (margin - gap > 0)


def hardness(d_qp: np.ndarray, d_qn: np.ndarray, margin: float) -> dict[str, Any]:
    """How hard a list was at mining time, from its ``d_qp`` and ``d_qn`` columns alone:
    ``rows_with_distances``, ``satisfied_share``, ``active_share`` and ``quantiles``
    (as in :func:`summarize_triplets`)."""
    d_qp, d_qn = np.asarray(d_qp, dtype=np.float64), np.asarray(d_qn, dtype=np.float64)
    has, gap, satisfied, active = _hinge_rows(d_qp, d_qn, float(margin))
    n_has = int(has.sum())
    return {
        "rows_with_distances": n_has,
        "satisfied_share": _share(int(satisfied.sum()), n_has),
        "active_share": _share(int(active.sum()), n_has),
        "quantiles": {
            "d_qp": _quantiles(d_qp[has]),
            "d_qn": _quantiles(d_qn[has]),
            "d_qn_minus_d_qp": _quantiles(gap[has]),
        },
    }


def summarize_triplets(df: pd.DataFrame, margin: float) -> dict[str, Any]:
    """Rows, strategy mix, satisfied/active shares and distance quantiles of a triplet list."""
    margin = float(margin)
    n = len(df)
    d_qp = _column(df, "d_qp")
    d_qn = _column(df, "d_qn")
    has, _, satisfied, active = _hinge_rows(d_qp, d_qn, margin)

    if "strategy" in df.columns:
        strategy = df["strategy"].astype("string").fillna("<missing>").to_numpy(dtype=object)
    else:
        strategy = np.full(n, "<missing>", dtype=object)
    names, codes = np.unique(strategy.astype(str), return_inverse=True) if n else (np.array([]), np.array([], int))
    counts = np.bincount(codes, minlength=names.size)
    by_strategy = {}
    for i, name in enumerate(names):
        mask = codes == i
        with_d = int((has & mask).sum())
        by_strategy[str(name)] = {
            "rows": int(counts[i]),
            "share": _share(int(counts[i]), n),
            "rows_with_distances": with_d,
            "satisfied_share": _share(int((satisfied & mask).sum()), with_d),
            "active_share": _share(int((active & mask).sum()), with_d),
        }

    out = {
        "rows": n,
        "margin": margin,
        "strategy_share": {str(name): _share(int(c), n) for name, c in zip(names, counts)},
        **hardness(d_qp, d_qn, margin),
        "by_strategy": by_strategy,
    }
    if "batch" in df.columns and n:
        out["batches"] = batch_structure(df)
    return out


def batch_structure(df: pd.DataFrame) -> dict[str, Any]:
    """Batches, triplets and distinct images per batch, and triplets per image forwarded."""
    ids = df[["query", "positive", "negative"]].to_numpy()
    per_batch = df.groupby("batch", sort=True)
    triplets = per_batch.size().to_numpy()
    images = np.array([np.unique(ids[rows]).size for rows in per_batch.indices.values()])
    stats = lambda a: {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}  # noqa: E731
    return {"batches": int(triplets.size), "triplets_per_batch": stats(triplets),
            "images_per_batch": stats(images), "triplets_per_image": float(triplets.sum() / images.sum())}
