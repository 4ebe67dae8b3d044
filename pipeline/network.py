"""The embedding network as the pipeline configures, initialises and restores it.

``[model]`` settings (:class:`ModelSettings`, :class:`WeightSettings`) and their
checks, a fresh network (:func:`build_model`), epoch 0's pretrained weights
(torchvision's ImageNet weights from the torch cache, or a local state-dict
file) and the network of a saved checkpoint (:func:`network_from_checkpoint`).
The network itself is :mod:`models.embedding_net`, which knows nothing of this.

torch and torchvision are imported by the functions that use them, so that the
settings cost nothing to import (``luigi --module tasks`` declares its
parameters from them and starts in about a second).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.error import URLError

from models import ARCHS, STEMS
from pipeline.errors import ConfigError, PipelineError, WeightsUnavailableError
from pipeline.settings import check, setting

if TYPE_CHECKING:
    import torch

    from models.embedding_net import EmbeddingNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """``[model]``: everything that defines the network's shape.

    ``stem``: ``imagenet`` keeps the 7x7 stride-2 convolution and max-pool (right
    for 224-pixel inputs); ``small`` uses a 3x3 stride-1 convolution and no
    max-pool, which keeps spatial detail on 28-64 pixel inputs; ``small-s2`` the
    same with stride 2, a quarter of the compute for 28-32 pixel inputs.
    ``input_size``: 0 feeds images at the stored size; N upsamples to N x N.
    ``width``: channels of the first stage (64 in the standard ResNets); a
    narrower network trains in minutes on a laptop CPU.
    """

    arch: str = setting("resnet18", "torchvision ResNet depth", choices=ARCHS)
    embedding_dim: int = setting(64, "length of the embedding vectors", minimum=1)
    normalize: bool = setting(False, "L2-normalise the embeddings")
    stem: str = setting("small-s2", "first layer: imagenet (7x7/2 + max-pool), small (3x3/1) or small-s2 (3x3/2)",
                        choices=STEMS)
    input_size: int = setting(0, "0 = stored size; N upsamples to N x N on the device (the course: 224)",
                              minimum=0)
    width: int = setting(16, "first-stage channels (64 = the standard ResNet; 16 trains the embedded dataset "
                             "in minutes on 2 CPU cores)", minimum=8)
    # Not a setting: the dataset's store decides it.
    in_channels: int = 3

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, "model")
        if self.width % 8:
            raise ConfigError(f"[model] width = {self.width}; use a multiple of 8 (64 = the standard ResNet)")
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels = {self.in_channels}; stores hold 1 or 3 channels")


@dataclass(frozen=True)
class WeightSettings:
    """``[model] weights`` / ``weights_path``: where epoch 0's initial weights come from."""

    weights: str = setting("none", "none (random) or imagenet (torchvision's weights, from the torch cache)")
    weights_path: str = setting("", "a local state-dict file (overrides weights)")


def build_model(settings: ModelSettings) -> EmbeddingNet:
    """A freshly initialised network (no pretrained weights; see :func:`apply_weights`)."""
    from models.embedding_net import EmbeddingNet

    settings.check()
    return EmbeddingNet(settings)


def network_from_checkpoint(state: Mapping[str, Any], expected: ModelSettings, device: torch.device,
                            what: str) -> EmbeddingNet:
    """The network saved in ``state``, on ``device`` in channels-last layout.

    Raises :class:`ConfigError` when the current ``[model]`` settings (``expected``)
    differ from those ``what`` (e.g. "epoch 3 of experiment 'demo'") was trained
    with: the same folder would otherwise mix two networks.
    """
    import torch

    settings = ModelSettings(**state["model_settings"])
    if settings != expected:
        raise ConfigError(f"[model] settings differ from those {what} was trained with ({state['model_settings']}); "
                          "restore them or use a new --experiment name")
    net = build_model(settings)
    net.load_state_dict(state["model"])
    return net.to(device, memory_format=torch.channels_last)


def cached_weights_file(arch: str) -> tuple[str, Path]:
    """The download URL of ``arch``'s default ImageNet weights and its torch-cache path."""
    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    return weights.url, cache


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``arch`` from the torch cache, downloading when possible."""
    import torch

    url, cache = cached_weights_file(arch)
    if cache.is_file():
        try:
            return torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a damaged file
            raise WeightsUnavailableError(
                f"the cached ImageNet weights {cache} cannot be read ({exc}); delete or replace that file"
            ) from exc
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=False)
    except (URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not in the torch cache and cannot be downloaded ({exc}). "
            f"Copy {os.path.basename(url)} (from {url}) to {cache}, or set [model] weights_path to a "
            "local state-dict file, or set [model] weights = none"
        ) from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a plain state dict, or a checkpoint with a ``model`` key."""
    from pipeline.checkpoint import safe_load

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"[model] weights_path = {path} does not exist; point it at a state-dict file")
    try:
        obj = safe_load(path, "[model] weights_path =", "point it at a readable state-dict file")
    except PipelineError as exc:
        raise WeightsUnavailableError(str(exc)) from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise WeightsUnavailableError(f"[model] weights_path = {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_pretrained(model: EmbeddingNet, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy matching tensors of ``state`` into ``model``; returns the keys left at init.

    Accepts a torchvision ResNet state dict (its ``fc`` classifier is dropped) or
    an :class:`EmbeddingNet` one. Tensors whose shape differs (the first
    convolution under a small-image stem) keep their initialisation.
    """
    if not any(k.startswith(("backbone.", "head.")) for k in state):
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    # Residual stages must match exactly; only the stem and head may differ.
    mismatched = [k for k, v in state.items() if k.startswith("backbone.layer") and k in own and own[k].shape != v.shape]
    missing = [k for k in own if k.startswith("backbone.layer") and own[k].dim() > 0 and k not in usable]
    if mismatched or missing or not any(v.dim() > 0 for k, v in usable.items() if k.startswith("backbone.layer")):
        example = (mismatched or missing or ["no residual-stage tensor"])[0]
        raise WeightsUnavailableError(
            f"{source} does not fit [model] arch = {model.settings.arch} with width {model.settings.width} "
            f"(e.g. {example}); use weights made for that architecture"
        )
    model.load_state_dict(usable, strict=False)
    skipped = sorted(k for k in own if k not in usable)
    if skipped:
        log.info("pretrained weights from %s: %d tensors kept their initialisation (%s...)", source,
                 len(skipped), ", ".join(skipped[:4]))
    return skipped


def apply_weights(model: EmbeddingNet, weights: str, weights_path: str) -> list[str]:
    """Apply the ``[model] weights`` / ``weights_path`` settings to a fresh model."""
    if weights_path:
        return load_pretrained(model, read_state_dict(weights_path), weights_path)
    if weights == "imagenet":
        if model.settings.width != 64:
            raise ConfigError("[model] weights = imagenet needs width = 64 (the standard ResNet)")
        return load_pretrained(model, imagenet_state_dict(model.settings.arch), f"ImageNet {model.settings.arch}")
    if weights not in ("none", ""):
        raise ConfigError(f"[model] weights = {weights!r}; use none or imagenet (or set weights_path)")
    return []
