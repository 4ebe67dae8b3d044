"""Stage 3, train: the triplet loss and its settings, the optimiser, one epoch over an
offline triplet list, checkpoints, and resuming an interrupted epoch."""
