"""Label noise for experiments: flip a seeded share of the training labels.

Real labels are not clean (Northcutt et al. 2021 count errors in about 6% of
ImageNet's validation set), and hard-negative mining amplifies such errors. To
measure that, an experiment may train on flipped labels (``[run] label_noise``):

* ``symmetric``: each flipped image gets another class drawn uniformly;
* ``pairs``: each flipped image of class ``c`` gets class ``(c + 1) mod C``, one
  fixed confusable class per class (the "pair flipping" of Han et al., Co-teaching,
  NeurIPS 2018), the literature's asymmetric noise.

Exactly ``round(share * n)`` training images are flipped, chosen by the
experiment's own seed stream (:func:`pipeline.seeds.label_noise_rng`), so the
flips are a pure function of (labels, share, kind, seed): sampling and validation
compute the same ones independently, and the pixel store and the dataset index
keep the true labels. The validation split is never flipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.seeds import label_noise_rng

NOISE_KINDS = ("symmetric", "pairs")


@dataclass(frozen=True)
class LabelNoise:
    """The share of training labels an experiment flips, and how."""

    share: float = 0.0
    kind: str = "symmetric"

    @property
    def active(self) -> bool:
        return self.share > 0


def flip_labels(labels: np.ndarray, noise: LabelNoise, seed: int) -> np.ndarray:
    """The training labels the experiment uses: ``labels`` (dense class ids, one per
    training image in image-id order) with ``noise.share`` of them flipped; a copy.

    The class count is ``labels.max() + 1``, so the same labels always give the same flips.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not noise.active or len(labels) == 0:
        return labels.copy()
    if noise.kind not in NOISE_KINDS:
        raise ValueError(f"label noise kind {noise.kind!r}; use one of {', '.join(NOISE_KINDS)}")
    n_classes = int(labels.max()) + 1
    if n_classes < 2:
        raise ValueError("label noise needs at least two classes to flip between")
    rng = label_noise_rng(seed)
    chosen = np.sort(rng.choice(len(labels), size=int(round(noise.share * len(labels))), replace=False))
    offset = rng.integers(1, n_classes, size=len(chosen)) if noise.kind == "symmetric" else 1
    flipped = labels.copy()
    flipped[chosen] = (labels[chosen] + offset) % n_classes
    return flipped
