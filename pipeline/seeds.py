"""Every random stream of the pipeline, named, in one place.

A run is a pure function of ``[run] seed`` and its settings: each consumer
draws from its own stream, keyed by what it works on, never from global state.
That is what lets Luigi run tasks in forked workers, lets a killed epoch resume
mid-way, and lets the dask stages split work across blocks in any order.

=========================  ===============================  =====================================
stream                     SeedSequence entropy             consumer
=========================  ===============================  =====================================
initial network            ``seed`` (torch.manual_seed)     epoch 0's random weights
training epoch             ``[seed, epoch]``                torch's global RNG while epoch trains
augmentation, per step     ``[seed, epoch, 7, step]``       crops and flips of one training step
class sampling             ``[seed, epoch, label]``         a plain list's triplets of one class
list shuffle               ``[seed, epoch, 2**30]``         order of a plain list's rows
batch composition          ``[seed, epoch, 2**29]``         which images form each batched step
batch triplets             ``[seed, epoch, 2**29 + 1]``     listed triplets of a batched list
evaluation                 ``[seed, 1 | 2 | 3]``            training queries, validation
                                                            triplets, figure queries
ivf index                  ``[seed, 2**28 (+1)]``           k-means of ``[ValidateEpoch] index =
                                                            ivf``, its recall query sample
=========================  ===============================  =====================================

Streams of different length never coincide (SeedSequence mixes the length in),
and the large tags keep the list-level streams apart from any class label.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

AUGMENT_TAG = 7
SHUFFLE_TAG = 1 << 30
BATCH_COMPOSE_TAG = 1 << 29
BATCH_TRIPLET_TAG = (1 << 29) + 1
# One stream per experiment, clear of the epoch streams ([seed, epoch] with small epochs).
LABEL_NOISE_TAG = (1 << 27) + 1
# The ivf tags stay clear of the small numbers that epoch streams ([seed, epoch]) use.
EVALUATION_TAGS = {"train_queries": 1, "triplets": 2, "figures": 3, "ivf_training": 1 << 28,
                   "ivf_recall": (1 << 28) + 1}


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


def _torch_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def initial_network_seed(seed: int) -> int:
    """``torch.manual_seed`` value for epoch 0's random initial weights."""
    return seed


def training_epoch_seed(seed: int, epoch: int) -> int:
    """``torch.manual_seed`` value set before an epoch trains."""
    return _torch_seed(seed, epoch)


def augment_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of one training step's augmentation generator.

    One stream per step (not per epoch) lets a resumed epoch draw exactly what
    the uninterrupted run would have drawn from that step on.
    """
    return _torch_seed(seed, epoch, AUGMENT_TAG, step)


def class_rng(seed: int, epoch: int, label: int) -> np.random.Generator:
    """The RNG that samples one class's triplets of a plain list (any block, any worker)."""
    return _rng(seed, epoch, label)


def shuffle_rng(seed: int, epoch: int) -> np.random.Generator:
    """The RNG that shuffles a plain list's rows."""
    return _rng(seed, epoch, SHUFFLE_TAG)


def batch_compose_rng(seed: int, epoch: int) -> np.random.Generator:
    """The RNG that composes a batched list's steps (classes, seed images, hard negatives)."""
    return _rng(seed, epoch, BATCH_COMPOSE_TAG)


def batch_triplet_rng(seed: int, epoch: int) -> np.random.Generator:
    """The RNG that picks a batched list's listed triplets."""
    return _rng(seed, epoch, BATCH_TRIPLET_TAG)


def label_noise_rng(seed: int) -> np.random.Generator:
    """The RNG that flips an experiment's training labels (``[run] label_noise``); the same every epoch."""
    return _rng(seed, LABEL_NOISE_TAG)


def evaluation_rng(seed: int, purpose: Literal["train_queries", "triplets", "figures", "ivf_recall"]
                   ) -> np.random.Generator:
    """The RNG of one evaluation sample (the same for every epoch, so epochs compare)."""
    return _rng(seed, EVALUATION_TAGS[purpose])


def ivf_training_seed(seed: int) -> int:
    """faiss's k-means seed (``cp.seed``, a 31-bit int) for the validation IVF index's lists."""
    return _torch_seed(seed, EVALUATION_TAGS["ivf_training"]) & 0x7FFFFFFF
