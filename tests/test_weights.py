"""Pretrained weights offline: a local state-dict file, the torch cache, and a
clear error (naming where to put the file) when neither is there."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.error import URLError

import luigi
import pytest
import torch
import torchvision
from luigi.execution_summary import LuigiStatusCode

import tasks
from pipeline.checkpoint import load_checkpoint
from pipeline.errors import ConfigError, WeightsUnavailableError
from pipeline.network import ModelSettings, apply_weights, build_model, cached_weights_file
from tests.support import assert_succeeded, build, fast_config

MARKED = "layer1.0.conv1.weight"
IMAGENET_STEM = ModelSettings(width=64, embedding_dim=8, stem="imagenet")


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache under tmp_path, and no network: downloads raise URLError."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def no_network(url, *args, **kwargs):
        raise URLError(f"offline test: refusing to download {url}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return home


def failing_task_errors(task_cls, tasks_to_build):
    """Build ``tasks_to_build`` and return (result, exceptions raised by ``task_cls`` runs)."""
    seen = []

    def record(task, exc):
        seen.append(exc)

    task_cls.event_handler(luigi.Event.FAILURE)(record)
    try:
        return build(tasks_to_build), seen
    finally:
        luigi.Task._event_callbacks[task_cls][luigi.Event.FAILURE].discard(record)


def marked_resnet18_state(value: float = 0.5) -> dict[str, torch.Tensor]:
    """A torchvision resnet18 state dict whose first block's first convolution is all ``value``."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state[MARKED] = torch.full_like(state[MARKED], value)
    return state


def test_local_state_dict_file_is_loaded(tmp_path):
    path = tmp_path / "resnet18-local.pth"
    state = marked_resnet18_state(0.5)
    torch.save(state, path)
    torch.manual_seed(0)
    net = build_model(IMAGENET_STEM)
    head_before = net.head.weight.detach().clone()
    skipped = apply_weights(net, "none", str(path))
    assert torch.equal(net.backbone.layer1[0].conv1.weight, torch.full((64, 64, 3, 3), 0.5))
    own = net.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[f"backbone.{key}"], value), key
    # torchvision's classifier is dropped; the embedding head keeps its initialisation.
    assert skipped == ["head.bias", "head.weight"]
    assert torch.equal(net.head.weight, head_before)


def test_a_checkpoint_file_works_as_weights_path(tmp_path):
    """weights_path may also be one of our checkpoints (a dict with a "model" key)."""
    torch.manual_seed(1)
    source = build_model(IMAGENET_STEM)
    path = tmp_path / "_checkpoint.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    torch.manual_seed(2)
    net = build_model(IMAGENET_STEM)
    assert apply_weights(net, "none", str(path)) == []
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_missing_weights_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailableError, match="weights_path") as info:
        apply_weights(build_model(IMAGENET_STEM), "none", str(missing))
    assert str(missing) in str(info.value)


def test_train_epoch_0_uses_model_weights_path(configure, tmp_path, tiny_imagenet):
    path = tmp_path / "resnet18-local.pth"
    torch.save(marked_resnet18_state(0.5), path)
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["model"] = {"arch": "resnet18", "width": 64, "embedding_dim": 8, "stem": "imagenet",
                    "weights_path": path}
    configure(cfg)
    result = build([tasks.TrainEpoch(epoch=0)])
    assert_succeeded(result)
    state = load_checkpoint(tmp_path / "artifacts" / "test" / "train" / "epoch-000" / "_checkpoint.pt")
    assert torch.equal(state["model"][f"backbone.{MARKED}"], torch.full((64, 64, 3, 3), 0.5))
    assert state["initialised_keys"] == ["head.bias", "head.weight"]
    recorded = json.loads((tmp_path / "artifacts" / "test" / "config.json").read_text())
    assert recorded["model"]["weights_path"] == str(path)
    assert recorded["model"]["width"] == 64 and recorded["model"]["stem"] == "imagenet"


def test_imagenet_weights_offline_with_empty_cache_name_the_cache_file(offline):
    url, cache = cached_weights_file("resnet18")
    assert cache.is_relative_to(offline)  # the torch cache follows TORCH_HOME
    assert cache.name == Path(url).name
    assert not cache.exists()
    with pytest.raises(WeightsUnavailableError) as info:
        apply_weights(build_model(IMAGENET_STEM), "imagenet", "")
    message = str(info.value)
    assert str(cache) in message
    assert "weights_path" in message


def test_imagenet_weights_come_from_the_torch_cache_offline(offline):
    _, cache = cached_weights_file("resnet18")
    cache.parent.mkdir(parents=True)
    torch.save(marked_resnet18_state(0.25), cache)
    net = build_model(IMAGENET_STEM)
    skipped = apply_weights(net, "imagenet", "")  # downloading would raise: see the offline fixture
    assert torch.equal(net.backbone.layer1[0].conv1.weight, torch.full((64, 64, 3, 3), 0.25))
    assert skipped == ["head.bias", "head.weight"]


def test_imagenet_weights_under_a_small_stem_keep_the_first_conv_initialised(offline):
    _, cache = cached_weights_file("resnet18")
    cache.parent.mkdir(parents=True)
    torch.save(marked_resnet18_state(0.25), cache)
    net = build_model(ModelSettings(width=64, embedding_dim=8, stem="small"))
    skipped = apply_weights(net, "imagenet", "")
    assert "backbone.conv1.weight" in skipped  # 3x3 stem vs 7x7 weights: shapes differ
    assert torch.equal(net.backbone.layer1[0].conv1.weight, torch.full((64, 64, 3, 3), 0.25))


def test_imagenet_weights_need_the_standard_width(offline):
    with pytest.raises(ConfigError, match="width = 64"):
        apply_weights(build_model(ModelSettings(width=32, stem="imagenet")), "imagenet", "")


def test_train_epoch_0_with_imagenet_weights_offline_fails_without_output(configure, tmp_path, tiny_imagenet,
                                                                          offline):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["model"] = {"arch": "resnet18", "width": 64, "embedding_dim": 8, "stem": "imagenet", "weights": "imagenet"}
    configure(cfg)
    result, errors = failing_task_errors(tasks.TrainEpoch, [tasks.TrainEpoch(epoch=0)])
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    assert len(errors) == 1 and isinstance(errors[0], WeightsUnavailableError)
    assert str(cached_weights_file("resnet18")[1]) in str(errors[0])
    assert not (tmp_path / "artifacts" / "test" / "train" / "epoch-000").exists()
    # With the file put where the error said, the same task succeeds offline.
    _, cache = cached_weights_file("resnet18")
    cache.parent.mkdir(parents=True)
    torch.save(marked_resnet18_state(0.5), cache)
    configure(cfg)
    result = build([tasks.TrainEpoch(epoch=0)])
    assert_succeeded(result)
    state = load_checkpoint(tmp_path / "artifacts" / "test" / "train" / "epoch-000" / "_checkpoint.pt")
    assert torch.equal(state["model"][f"backbone.{MARKED}"], torch.full((64, 64, 3, 3), 0.5))


def test_weights_for_another_width_are_refused(tmp_path):
    path = tmp_path / "resnet18-width64.pth"
    torch.save(marked_resnet18_state(0.5), path)
    net = build_model(ModelSettings(width=8, embedding_dim=8, stem="small-s2"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        skipped = apply_weights(net, "none", str(path))
    except WeightsUnavailableError as exc:
        assert "width" in str(exc) and str(path) in str(exc)
        return
    copied = sorted(k for k in before if k not in skipped)
    raise AssertionError(f"no error; tensors copied from a width-64 network: {copied[:3]}... ({len(copied)})")


def test_weights_for_another_arch_are_refused(tmp_path):
    path = tmp_path / "resnet50.pth"
    with torch.device("meta"):  # shapes only: building a real resnet50 is slow on a small CPU
        shapes = torchvision.models.resnet50(weights=None).state_dict()
    torch.save({k: torch.full(v.shape, 0.5, dtype=v.dtype) for k, v in shapes.items()}, path)
    net = build_model(IMAGENET_STEM)  # resnet18
    try:
        skipped = apply_weights(net, "none", str(path))
    except WeightsUnavailableError as exc:
        assert "resnet18" in str(exc)
        return
    raise AssertionError(f"resnet50 weights accepted for resnet18; {len(net.state_dict()) - len(skipped)} "
                         f"tensors copied, {len(skipped)} left at init")


def test_corrupt_file_in_the_torch_cache_is_a_clear_error(offline):
    _, cache = cached_weights_file("resnet18")
    cache.parent.mkdir(parents=True)
    torch.save(marked_resnet18_state(0.5), cache)
    cache.write_bytes(cache.read_bytes()[:4096])  # an interrupted copy
    with pytest.raises(WeightsUnavailableError) as info:
        apply_weights(build_model(IMAGENET_STEM), "imagenet", "")
    assert str(cache) in str(info.value)
