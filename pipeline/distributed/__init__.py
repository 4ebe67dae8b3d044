"""Data-parallel training of one epoch on several processes, GPUs or machines
(torch.distributed): settings, the split of a step across ranks, synchronised
batch norm, the rank launcher and the epoch each rank trains."""
