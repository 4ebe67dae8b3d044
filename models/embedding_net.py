"""A torchvision ResNet whose classifier is replaced by an embedding head.

The network takes float images in [0, 1] as ``(B, C, H, W)`` at the stored size
and does the rest on its device: optional upsampling (the course feeds 64x64
Tiny ImageNet images at 224), ImageNet normalisation, the backbone and the head.
So the data path only moves uint8 pixels and nothing else resizes images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pipeline.errors import ConfigError
from pipeline.settings import check, setting

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
STEMS = ("imagenet", "small", "small-s2")
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSettings:
    """Everything that defines the network's shape.

    ``stem``: ``imagenet`` keeps the 7x7 stride-2 convolution and max-pool (right
    for 224-pixel inputs); ``small`` uses a 3x3 stride-1 convolution and no
    max-pool, which keeps spatial detail on 28-64 pixel inputs; ``small-s2`` the
    same with stride 2, a quarter of the compute for 28-32 pixel inputs.
    ``input_size``: 0 feeds images at the stored size; N upsamples to N x N.
    ``width``: channels of the first stage (64 in the standard ResNets); a
    narrower network trains in minutes on a laptop CPU.
    """

    arch: str = setting("resnet18", "torchvision ResNet depth", choices=ARCHS)
    embedding_dim: int = setting(128, "length of the embedding vectors", minimum=1)
    normalize: bool = setting(False, "L2-normalise the embeddings")
    stem: str = setting("small", "first layer: imagenet (7x7/2 + max-pool), small (3x3/1) or small-s2 (3x3/2)",
                        choices=STEMS)
    input_size: int = setting(0, "0 = stored size; N upsamples to N x N on the device (the course: 224)",
                              minimum=0)
    width: int = setting(64, "first-stage channels (64 = the standard ResNet)", minimum=8)
    # Not a setting: the dataset's store decides it.
    in_channels: int = 3

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, "model")
        if self.width % 8:
            raise ConfigError(f"[model] width = {self.width}; use a multiple of 8 (64 = the standard ResNet)")
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels = {self.in_channels}; stores hold 1 or 3 channels")


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

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__()
        settings.check()
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


def build_model(settings: ModelSettings) -> EmbeddingNet:
    """A freshly initialised network (no pretrained weights; see :mod:`models.weights`)."""
    return EmbeddingNet(settings)


def settings_dict(settings: ModelSettings) -> dict:
    """Plain dict for checkpoints and reports."""
    return asdict(settings)


def network_from_checkpoint(state: Mapping[str, Any], expected: ModelSettings, device: torch.device,
                            what: str) -> EmbeddingNet:
    """The network saved in ``state``, on ``device`` in channels-last layout.

    Raises :class:`ConfigError` when the current ``[model]`` settings (``expected``)
    differ from those ``what`` (e.g. "epoch 3 of experiment 'demo'") was trained
    with: the same folder would otherwise mix two networks.
    """
    settings = ModelSettings(**state["model_settings"])
    if settings != expected:
        raise ConfigError(f"[model] settings differ from those {what} was trained with ({state['model_settings']}); "
                          "restore them or use a new --experiment name")
    net = build_model(settings)
    net.load_state_dict(state["model"])
    return net.to(device, memory_format=torch.channels_last)
