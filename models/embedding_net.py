"""A torchvision ResNet whose classifier is replaced by an embedding head.

The network takes float images in [0, 1] as ``(B, C, H, W)`` at the stored size
and does the rest on its device: optional upsampling (the course feeds 64x64
Tiny ImageNet images at 224), ImageNet normalisation, the backbone and the head.
So the data path only moves uint8 pixels and nothing else resizes images.

This package is the networks alone: it imports nothing of :mod:`pipeline`. Their
settings, checks, pretrained weights and checkpoints are :mod:`pipeline.network`.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class NetworkShape(Protocol):
    """What defines an :class:`EmbeddingNet` (``pipeline.network.ModelSettings`` is one)."""

    arch: str
    embedding_dim: int
    normalize: bool
    stem: str
    input_size: int
    width: int


def _torchvision_resnet(arch: str, width: int) -> torchvision.models.ResNet:
    net = getattr(torchvision.models, arch)(weights=None)
    if width == 64:
        return net
    # Same block structure as the named ResNet, with every stage's channels scaled.
    block = type(net.layer1[0])
    layers = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
    narrow = torchvision.models.ResNet(block, layers)
    scale = width / 64

    def rescale(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                cin = child.in_channels if child.in_channels == 3 else int(child.in_channels * scale)
                conv = nn.Conv2d(cin, int(child.out_channels * scale), child.kernel_size, child.stride,
                                 child.padding, bias=child.bias is not None)
                setattr(module, name, conv)
            elif isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.BatchNorm2d(int(child.num_features * scale)))
            elif isinstance(child, nn.Linear):
                setattr(module, name, nn.Linear(int(child.in_features * scale), child.out_features))
            else:
                rescale(child)

    rescale(narrow)
    return narrow


class EmbeddingNet(nn.Module):
    """ResNet backbone plus a linear embedding head (optionally L2-normalised)."""

    def __init__(self, settings: NetworkShape) -> None:
        super().__init__()
        self.settings = settings
        net = _torchvision_resnet(settings.arch, settings.width)
        if settings.stem != "imagenet":
            stride = 2 if settings.stem == "small-s2" else 1
            net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
            net.maxpool = nn.Identity()
        features = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        self.head = nn.Linear(features, settings.embedding_dim)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x``: float ``(B, C, H, W)`` in [0, 1] -> ``(B, embedding_dim)``."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.settings.input_size
        if size and (x.shape[-1] != size or x.shape[-2] != size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = (x - self.mean) / self.std
        z = self.head(self.backbone(x))
        return F.normalize(z, dim=1) if self.settings.normalize else z
