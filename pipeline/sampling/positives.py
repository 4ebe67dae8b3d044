"""The positive of a mined row: the ``positive`` setting.

``positive="uniform"``
    :func:`~pipeline.sampling.uniform.uniform_positives` (one draw per row).
``positive="farthest"``
    The same-class image farthest from the query (no draw).
``positive="relevance"``
    A weighted draw as in Deep Ranking (Wang et al. 2014, "P(p) proportional to
    min(T_p, r)"), with the previous epoch's distance as relevance: for query q
    with other same-class members j, ``cap_q`` is the ``relevance_cap`` quantile
    (linear interpolation, as ``np.quantile``) of ``{D(q, j)}``, the weight is
    ``w_j = min(D(q, j), cap_q)`` and ``P(j) = w_j / sum(w)``. The query has weight
    0, so it is never its own positive (if all weights are 0 — every member sits
    on the query — the draw is uniform over the other members).
    ``relevance_cap=1`` means weights proportional to distance. Draws: one
    uniform per row, class by class (ascending label), tile by tile.

The positive rule is a setting, not part of the per-row ``strategy`` column.
The farthest/relevance search works per class, in tiles of at most
``GRAM_ELEMENTS`` (queries x class members) distances.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError
from pipeline.sampling.base import ClassMembers
from pipeline.sampling.uniform import uniform_positives

# Entries per (queries x class members) distance tile for the positive search (16 MiB).
GRAM_ELEMENTS = 1 << 22


def _lerp_quantile(sorted_rows: np.ndarray, n_valid: int, q: float) -> np.ndarray:
    """``np.quantile(..., method="linear")`` of the first ``n_valid`` sorted entries per row."""
    pos = q * (n_valid - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n_valid - 1)
    frac = np.float32(pos - lo)
    return sorted_rows[:, lo] + (sorted_rows[:, hi] - sorted_rows[:, lo]) * frac


def class_positives(
    emb: np.ndarray,
    classes: ClassMembers,
    queries: np.ndarray,
    rule: str,
    cap_quantile: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Farthest or relevance-weighted same-class positives, one class at a time."""
    y = classes.labels[queries]
    if np.any(classes.count[y] < 2):
        bad = int(y[np.argmax(classes.count[y] < 2)])
        raise ConfigError(
            f"class with label {bad} has a single training image, so no positive exists; "
            "every class needs at least 2 training images"
        )
    positives = np.empty(queries.size, np.int64)
    by_class = np.argsort(y, kind="stable")
    labels, first = np.unique(y[by_class], return_index=True)
    bounds = np.append(first, queries.size)
    for c, lo, hi in zip(labels, bounds[:-1], bounds[1:]):
        rows = by_class[lo:hi]  # places in `queries` of this class's occurrences
        members = classes.members(int(c))
        m = members.size
        xm = np.take(emb, members, axis=0)
        sq_m = np.einsum("ij,ij->i", xm, xm)
        uniq, inv = np.unique(queries[rows], return_inverse=True)
        step = max(1, GRAM_ELEMENTS // m)
        # Tile over this class's distinct queries; occurrences follow their query.
        occ_order = np.argsort(inv, kind="stable")
        occ_bounds = np.searchsorted(inv[occ_order], np.arange(0, uniq.size + step, step))
        for t, u_lo in enumerate(range(0, uniq.size, step)):
            u = uniq[u_lo : u_lo + step]
            xu = np.take(emb, u, axis=0)
            d2 = xu @ xm.T
            d2 *= -2.0
            d2 += np.einsum("ij,ij->i", xu, xu)[:, None]
            d2 += sq_m[None, :]
            np.maximum(d2, 0.0, out=d2)
            d = np.sqrt(d2, out=d2)
            self_col = classes.rank[u]
            r = np.arange(u.size)
            occ = occ_order[occ_bounds[t] : occ_bounds[t + 1]]  # occurrences in this tile
            occ_u = inv[occ] - u_lo
            if rule == "farthest":
                d[r, self_col] = -np.inf
                positives[rows[occ]] = members[np.argmax(d, axis=1)[occ_u]]
                continue
            # relevance: w = min(d, per-query quantile cap), self weight 0.
            d[r, self_col] = np.inf
            srt = np.sort(d, axis=1)  # the self column (inf) sorts last
            cap = _lerp_quantile(srt, m - 1, cap_quantile)
            w = np.minimum(d, cap[:, None])
            w[r, self_col] = 0.0
            total = w.sum(axis=1)
            degenerate = ~(total > 0)
            if degenerate.any():
                w[degenerate] = 1.0
                w[r[degenerate], self_col[degenerate]] = 0.0
            cum = np.cumsum(w, axis=1, dtype=np.float64)
            draw = rng.random(occ.size) * cum[occ_u, -1]
            j = (cum[occ_u] <= draw[:, None]).sum(axis=1)
            j = np.minimum(j, m - 1)
            # Rounding at the top end could land on a trailing self column.
            bad = j == self_col[occ_u]
            if bad.any():
                j[bad] = np.argmax(w[occ_u[bad]], axis=1)
            positives[rows[occ]] = members[j]
    return positives


def choose_positives(
    rule: str, cap_quantile: float, emb: np.ndarray, classes: ClassMembers, queries: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The positive of each query under ``rule`` (one of ``POSITIVE_RULES``); see the module doc."""
    if rule == "uniform":
        return uniform_positives(classes, queries, rng)
    return class_positives(emb, classes, queries, rule, cap_quantile, rng)
