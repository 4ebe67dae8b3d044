"""The figure keys a report knows and the caption each one gets.

Callers name their figures with these keys (``write_report(figures={LOSS: ...})``);
a key not listed here is captioned with the key itself, so an unexpected figure
is still shown, under its own name, rather than under a guessed description.
"""

from __future__ import annotations

__all__ = ["ACCURACY", "COMPARISON", "CONFUSION", "FARTHEST_NEIGHBORS", "LOSS", "NEAREST_NEIGHBORS", "WORST_QUERIES",
           "caption"]

LOSS = "loss"
ACCURACY = "accuracy"
NEAREST_NEIGHBORS = "nearest neighbors"
FARTHEST_NEIGHBORS = "farthest neighbors"
COMPARISON = "comparison"
WORST_QUERIES = "worst queries"
CONFUSION = "class confusion"

_NEIGHBORS = ("{which} training images to sample validation queries (one query per class), with their "
              "Euclidean distance; green frame: same class as the query, red: another class.")
# ``{k}`` is the number of neighbours precision is measured at.
_CAPTIONS = {
    LOSS: ("Triplet loss: mean per epoch (bold), per step (faint) and the share of "
           "triplets with non-zero loss (dashed, right axis)."),
    ACCURACY: "Precision@{k} on validation and training images by epoch; dotted: raw-pixel kNN.",
    NEAREST_NEIGHBORS: _NEIGHBORS.replace("{which}", "Nearest"),
    FARTHEST_NEIGHBORS: _NEIGHBORS.replace("{which}", "Farthest"),
    COMPARISON: "Validation precision@{k} by epoch for each experiment.",
    WORST_QUERIES: ("The validation queries with the lowest precision@{k} (ties by image id), each beside its "
                    "nearest training images; green frame: same class as the query, red: another class."),
    CONFUSION: ("Share of each validation class's {k} nearest training images (row) that belong to each class "
                "(column), on a square-root colour scale; the diagonal is the class's precision@{k}, dark cells "
                "off it are classes taken for one another."),
}


def caption(key: str, k: int) -> str:
    """Caption of figure ``key`` in a report measuring precision at ``k`` neighbours."""
    template = _CAPTIONS.get(key)
    if template is None:
        return key.replace("_", " ").capitalize()
    return template.format(k=k)
