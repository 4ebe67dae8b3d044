"""Embedding networks: torchvision ResNets with an embedding head."""

from models.embedding_net import ARCHS, EmbeddingNet, ModelSettings, build_model

__all__ = ["ARCHS", "EmbeddingNet", "ModelSettings", "build_model"]
