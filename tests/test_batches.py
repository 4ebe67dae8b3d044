"""The data path: batches from the pixel store and tensor augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.batches import _augment_grouped, _augment_numpy, augment, iterate_batches, to_float
from pipeline.errors import ConfigError
from pipeline.data.settings import AugmentSettings


def _batch(b: int = 6, h: int = 7, w: int = 5) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (b, h, w, 3), dtype=np.uint8))


def test_crops_are_shifted_windows_of_the_reflect_padded_image():
    x = _batch()
    out = augment(x.clone(), AugmentSettings(crop_padding=2, flip=False), torch.Generator().manual_seed(3))
    padded = np.pad(x.numpy(), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    assert out.shape == x.shape
    for i in range(len(x)):
        windows = [padded[i, oy : oy + 7, ox : ox + 5] for oy in range(5) for ox in range(5)]
        assert any(np.array_equal(out[i].numpy(), win) for win in windows)
    # The unshifted window is one of the 25: some image must have moved, or nothing was cropped.
    assert any(not torch.equal(out[i], x[i]) for i in range(len(x)))


def test_flip_only_mirrors_about_half_the_batch():
    x = _batch(b=200)
    out = augment(x.clone(), AugmentSettings(crop_padding=0, flip=True), torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(out[i], x[i].flip(1))) for i in range(len(x))]
    kept = [bool(torch.equal(out[i], x[i])) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 60 < sum(flipped) < 140


def test_gpu_grouped_path_equals_cpu_path_for_the_same_draws():
    x = _batch(b=40)
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 25, (40,), generator=g)
    flips = torch.rand(40, generator=g) < 0.5
    grouped = _augment_grouped(x.clone(), 2, offsets, flips)
    per_sample = _augment_numpy(x.numpy(), 2, offsets.tolist(), flips.tolist())
    assert np.array_equal(grouped.numpy(), per_sample)


def test_augmentation_is_reproducible_from_the_generator_seed():
    x = _batch(b=20)
    a = augment(x.clone(), AugmentSettings(), torch.Generator().manual_seed(1))
    b = augment(x.clone(), AugmentSettings(), torch.Generator().manual_seed(1))
    c = augment(x.clone(), AugmentSettings(), torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the seed matters, so the equality above is not vacuous


def test_crop_padding_as_large_as_the_image_is_refused():
    with pytest.raises(ConfigError, match="crop_padding"):
        augment(_batch(h=4, w=4), AugmentSettings(crop_padding=4), torch.Generator())


def test_crop_and_flip_settings_without_augment_are_refused_as_ignored():
    AugmentSettings(augment=False).check()  # the defaults stay, whatever augment says
    with pytest.raises(ConfigError, match=r"^\[TrainEpoch\] flip = False with \[TrainEpoch\] augment = False; "):
        AugmentSettings(augment=False, flip=False).check()
    with pytest.raises(ConfigError, match=r"\[TrainEpoch\] crop_padding = -1; it must be at least 0"):
        AugmentSettings(crop_padding=-1).check()


def test_to_float_gives_channels_last_floats_in_unit_range():
    x = to_float(_batch())
    assert x.shape == (6, 3, 7, 5) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_come_in_order_with_repeats(prefetch):
    store = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    ids = [np.array([3, 1, 3]), np.array([9, 0]), np.array([5])]
    got = list(iterate_batches(store, ids, prefetch=prefetch))
    assert len(got) == len(ids)  # one batch per id array, none dropped or added
    assert [tuple(batch.shape) for batch in got] == [(3, 2, 2, 3), (2, 2, 2, 3), (1, 2, 2, 3)]
    for batch, want in zip(got, ids):
        assert np.array_equal(batch.numpy(), store[want])


def test_prefetch_errors_reach_the_consumer():
    store = np.zeros((3, 2, 2, 3), np.uint8)
    with pytest.raises(IndexError):
        list(iterate_batches(store, [np.array([0]), np.array([7])], prefetch=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augmentation_runs_on_the_gpu():
    x = _batch().cuda()
    out = augment(x, AugmentSettings(), torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.shape == x.shape
