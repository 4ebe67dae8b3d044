"""Embedding networks: torchvision ResNets with an embedding head (no pipeline imports).

The network is :mod:`models.embedding_net`. The names of the architectures and
stems it builds are here, free of torch, so that settings can offer them as
choices without importing it.
"""

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
STEMS = ("imagenet", "small", "small-s2")
