"""Embedding networks: torchvision ResNets with an embedding head (no pipeline imports)."""

from models.embedding_net import ARCHS, STEMS, EmbeddingNet, NetworkShape

__all__ = ["ARCHS", "STEMS", "EmbeddingNet", "NetworkShape"]
