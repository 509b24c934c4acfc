"""Unit tests for nnunet_ssl.data.positions: pure position / patch arithmetic, hand-computed values."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_ssl.data.positions import (crop_around_patch, patch_centre_position, patch_fraction,
                                       position_from_properties, positional_positive_mask, pretraining_patch_size,
                                       random_patch_start, rescaled_threshold, rotation_safe_crop_size)


# --- patch_centre_position -------------------------------------------------------------------------------------

def test_patch_centre_position_identity_mapping():
    # no crop, no resampling: centre of [10, 30) is 20, of a 100-voxel axis -> 0.2
    assert patch_centre_position(10, 20, 100, 100, 0, 100) == pytest.approx(0.2)
    # the whole axis as one patch -> exactly the middle
    assert patch_centre_position(0, 100, 100, 100, 0, 100) == pytest.approx(0.5)


def test_patch_centre_position_with_crop_offset_and_resampling():
    # centre 10 + 20/2 = 20 preprocessed voxels; resampling ratio cropped/preprocessed = 50/100 -> 10;
    # + crop start 5 -> 15 original voxels; / 80 -> 0.1875
    assert patch_centre_position(10, 20, 100, 50, 5, 80) == pytest.approx(0.1875)
    # upsampled the other way: centre 3 + 2 = 5; * 40/20 = 10; + 12 = 22; / 44 = 0.5
    assert patch_centre_position(3, 4, 20, 40, 12, 44) == pytest.approx(0.5)
    # fractional patch start/extent are allowed (voxel i covers [i, i+1))
    assert patch_centre_position(0.5, 3, 10, 10, 0, 8) == pytest.approx(2.0 / 8)


def test_patch_centre_position_clips_padded_patches():
    # image smaller than the patch: start -10, extent 8 -> centre -6 -> negative -> 0
    assert patch_centre_position(-10, 8, 100, 100, 0, 100) == 0.0
    # centre beyond the end (105 / 100) -> 1
    assert patch_centre_position(95, 20, 100, 100, 0, 100) == 1.0
    # crop offset pushes it past the end: 5 + 50*1 + 60 = 115 > 100
    assert patch_centre_position(45, 10, 50, 50, 60, 100) == 1.0
    result = patch_centre_position(-10, 8, 100, 100, 0, 100)
    assert isinstance(result, float)


@pytest.mark.parametrize("bad", [(0, 10, 10), (10, 0, 10), (10, 10, 0), (-1, 10, 10)])
def test_patch_centre_position_rejects_non_positive_extents(bad):
    pre, cropped, original = bad
    with pytest.raises(ValueError):
        patch_centre_position(0, 4, pre, cropped, 0, original)


# --- position_from_properties ----------------------------------------------------------------------------------

PROPERTIES = {
    "shape_before_cropping": (80, 200, 210),
    "bbox_used_for_cropping": [[5, 55], [0, 200], [3, 203]],
    "shape_after_cropping_and_before_resampling": (50, 200, 200),
    "spacing": [2.0, 1.0, 1.0],
}


def test_position_from_properties_reads_the_right_numbers():
    preprocessed_shape = (100, 120, 130)
    start, size = (10, 0, 20), (20, 64, 64)
    # axis 0: (5 + 20 * 50/100) / 80 = 0.1875
    assert position_from_properties(PROPERTIES, preprocessed_shape, start, size, 0) == pytest.approx(0.1875)
    # axis 1: (0 + 32 * 200/120) / 200
    assert position_from_properties(PROPERTIES, preprocessed_shape, start, size, 1) == pytest.approx(
        32 * 200 / 120 / 200)
    # axis 2: (3 + 52 * 200/130) / 210 = 83 / 210
    assert position_from_properties(PROPERTIES, preprocessed_shape, start, size, 2) == pytest.approx(83 / 210)


def test_position_from_properties_matches_patch_centre_position():
    preprocessed_shape = (100, 120, 130)
    for axis in range(3):
        expected = patch_centre_position(
            [-4, 7, 30][axis], [16, 32, 48][axis], preprocessed_shape[axis],
            PROPERTIES["shape_after_cropping_and_before_resampling"][axis],
            PROPERTIES["bbox_used_for_cropping"][axis][0], PROPERTIES["shape_before_cropping"][axis])
        assert position_from_properties(PROPERTIES, preprocessed_shape, [-4, 7, 30], [16, 32, 48], axis) == expected


# --- patch_fraction / rescaled_threshold -----------------------------------------------------------------------

def test_patch_fraction_uses_the_median_extent():
    assert patch_fraction(16, [40, 30, 50]) == pytest.approx(16 / 40)
    assert patch_fraction(16, [30, 50]) == pytest.approx(16 / 40)  # even count: mean of the middle two
    assert patch_fraction(10, [100, 10, 1000, 20, 30]) == pytest.approx(10 / 30)
    assert patch_fraction(64, [40, 40]) == 1.0  # clipped at 1
    assert isinstance(patch_fraction(16, [40]), float)


def test_rescaled_threshold_values():
    assert rescaled_threshold(0.1, 0.4) == pytest.approx(0.06)
    assert rescaled_threshold(0.1, 0.0) == pytest.approx(0.1)
    assert rescaled_threshold(0.2, 0.75) == pytest.approx(0.05)


@pytest.mark.parametrize("fraction", [1.0, 1.5, -0.1])
def test_rescaled_threshold_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError):
        rescaled_threshold(0.1, fraction)


# --- positional_positive_mask ----------------------------------------------------------------------------------

def test_positional_positive_mask_exact_matrix():
    positions = torch.tensor([0.0, 0.05, 0.2, 0.26, 0.9])
    mask = positional_positive_mask(positions, 0.1)
    expected = torch.tensor([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_positional_positive_mask_is_strict_and_symmetric():
    # differences of exactly the threshold are not positives (|dp| < theta); values exact in float32
    positions = torch.tensor([0.0, 0.25, 0.5, 0.625])
    mask = positional_positive_mask(positions, 0.25)
    expected = torch.tensor([
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 1],
        [0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(mask, expected)
    random_positions = torch.rand(17, generator=torch.Generator().manual_seed(0))
    random_mask = positional_positive_mask(random_positions, 0.2)
    assert torch.equal(random_mask, random_mask.T)
    assert random_mask.diagonal().all()
    brute = torch.tensor([[abs(a - b) < 0.2 for b in random_positions.tolist()] for a in random_positions.tolist()])
    assert torch.equal(random_mask, brute)


def test_positional_positive_mask_rejects_2d_input():
    with pytest.raises(ValueError):
        positional_positive_mask(torch.zeros(4, 1), 0.1)
    with pytest.raises(ValueError):
        positional_positive_mask(torch.tensor(0.5), 0.1)


# --- random_patch_start ----------------------------------------------------------------------------------------

def _draw_starts(image_shape, patch_size, n=400, seed=0):
    randint = np.random.RandomState(seed).randint
    return np.array([random_patch_start(image_shape, patch_size, randint) for _ in range(n)])


def test_random_patch_start_image_larger_than_patch():
    starts = _draw_starts([40, 20, 9], [16, 20, 4])
    assert starts.shape == (400, 3)
    for axis, (lo, hi) in enumerate([(0, 24), (0, 0), (0, 5)]):
        assert starts[:, axis].min() == lo and starts[:, axis].max() == hi  # both extremes reached
        assert set(starts[:, axis].tolist()) == set(range(lo, hi + 1))  # and every value in between
    assert all(isinstance(s, int) for s in random_patch_start([40, 20, 9], [16, 20, 4],
                                                                np.random.RandomState(0).randint))


def test_random_patch_start_image_smaller_than_patch_even_padding():
    # pad 4 on axis 0 (12 vs 16): nnU-Net pads 2 on each side -> start -2 always
    # pad 2 on axis 1 (30 vs 32): start -1
    starts = _draw_starts([12, 30, 50], [16, 32, 32])
    assert set(starts[:, 0].tolist()) == {-2}
    assert set(starts[:, 1].tolist()) == {-1}
    assert starts[:, 2].min() == 0 and starts[:, 2].max() == 18


def test_random_patch_start_small_image_stays_inside_patch_with_balanced_padding():
    for extent, size in [(11, 16), (13, 16), (1, 8), (7, 8)]:
        starts = _draw_starts([extent], [size], n=200)[:, 0]
        for start in set(starts.tolist()):
            assert start <= 0 and start + size >= extent  # the whole image lies inside the patch
            pad_before, pad_after = -start, start + size - extent
            assert abs(pad_before - pad_after) <= 1  # padding split over both sides


class _FakeLoader(SimpleNamespace):
    pass


def _nnunet_bbox_starts(image_shape, patch_size, n=400, seed=0):
    """Starts drawn by nnU-Net's own nnUNetDataLoader.get_bbox (random, non-foreground crop)."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    fake = _FakeLoader(need_to_pad=np.zeros(len(patch_size), dtype=int), patch_size=list(patch_size),
                       has_ignore=False)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return np.array([nnUNetDataLoader.get_bbox(fake, np.array(image_shape), False, None)[0] for _ in range(n)])
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize("image_shape,patch_size", [([40, 20, 9], [16, 20, 4]), ([12, 30, 50], [16, 32, 32])])
def test_random_patch_start_matches_nnunet_get_bbox_draw_for_draw(image_shape, patch_size):
    """Same global seed, same sequence of np.random.randint calls -> identical starts."""
    expected = _nnunet_bbox_starts(image_shape, patch_size, n=200, seed=3)
    state = np.random.get_state()
    np.random.seed(3)
    try:
        ours = np.array([random_patch_start(image_shape, patch_size) for _ in range(200)])
    finally:
        np.random.set_state(state)
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("extent,size", [(13, 16), (11, 16), (7, 8)])
def test_random_patch_start_odd_padding_reaches_both_nnunet_extremes(extent, size):
    pad = size - extent
    starts = _draw_starts([extent], [size], n=400)[:, 0]
    nnunet = _nnunet_bbox_starts([extent], [size], n=400)[:, 0]
    assert set(nnunet.tolist()) == {-math.ceil(pad / 2), -(pad // 2)}  # what nnU-Net does (sanity)
    assert starts.min() == -math.ceil(pad / 2) and starts.max() == -(pad // 2)


def test_random_patch_start_uses_the_given_randint():
    calls = []

    def fake_randint(low, high):
        calls.append((low, high))
        return low

    assert random_patch_start([40, 12, 32], [16, 16, 32], fake_randint) == [0, -2, 0]
    assert calls == [(0, 25), (-2, -1), (0, 1)]  # high is exclusive, like np.random.randint


# --- crop_around_patch -----------------------------------------------------------------------------------------

def test_crop_around_patch_shares_the_patch_centre():
    box = crop_around_patch([10, 0, -2], [16, 32, 32], [20, 32, 40])
    assert box == [[8, 28], [0, 32], [-6, 34]]
    for (lo, hi), start, size in zip(box, [10, 0, -2], [16, 32, 32]):
        assert (lo + hi) / 2 == start + size / 2


@pytest.mark.parametrize("crop", [[17, 32, 32], [14, 32, 32], [16, 31, 32]])
def test_crop_around_patch_rejects_odd_or_smaller_crops(crop):
    with pytest.raises(ValueError):
        crop_around_patch([0, 0, 0], [16, 32, 32], crop)


# --- rotation_safe_crop_size -----------------------------------------------------------------------------------

def test_rotation_safe_crop_size_hand_computed():
    # in-plane diagonal sqrt(32^2 + 32^2) = 45.25; / 0.7 = 64.65 -> 65 -> 66 (keep 66 - 32 even);
    # rotation axis: 16 / 0.7 = 22.86 -> 23 -> 24
    assert rotation_safe_crop_size([16, 32, 32], 0, 0.7) == [24, 66, 66]
    # no zoom: diagonal sqrt(8^2 + 6^2) = 10 exactly; rotation axis untouched
    assert rotation_safe_crop_size([8, 6, 4], 2, 1.0) == [10, 10, 4]


@pytest.mark.parametrize("patch,axis,scale", [
    ([16, 32, 32], 0, 0.7), ([16, 32, 32], 1, 0.7), ([20, 48, 40], 0, 0.85), ([7, 9, 11], 2, 0.5),
    ([32, 32], 0, 0.7), ([64, 64, 64], 0, 1.0), ([24, 40, 56], 2, 1.3),
])
def test_rotation_safe_crop_size_properties(patch, axis, scale):
    crop = rotation_safe_crop_size(patch, axis, scale)
    assert len(crop) == len(patch)
    diagonal = math.sqrt(sum(s * s for a, s in enumerate(patch) if a != axis))
    for a, (c, p) in enumerate(zip(crop, patch)):
        assert isinstance(c, int)
        assert (c - p) % 2 == 0
        needed = p / scale if a == axis else diagonal / scale
        assert c >= needed - 1e-9
        assert c <= math.ceil(needed) + 1  # not more than needed
    # the crop always exceeds the patch by an even amount, so crop_around_patch accepts it when scale <= 1
    if scale <= 1:
        crop_around_patch([0] * len(patch), patch, crop)


# --- pretraining_patch_size ------------------------------------------------------------------------------------

def test_pretraining_patch_size_hand_computed():
    # limit = 0.5 * 100 = 50 -> 48 (multiple of 16)
    assert pretraining_patch_size([64, 128, 128], [16, 32, 32], [100, 200, 200], 0) == [48, 128, 128]
    # already short enough: untouched
    assert pretraining_patch_size([32, 128, 128], [16, 32, 32], [100, 200, 200], 0) == [32, 128, 128]
    # never below the divisor even when 0.5 * median < divisor
    assert pretraining_patch_size([64, 128, 128], [16, 32, 32], [20, 200, 200], 0) == [16, 128, 128]
    # another axis and max_fraction
    assert pretraining_patch_size([64, 128, 128], [16, 32, 32], [100, 150, 200], 1, max_fraction=0.25) == [
        64, 32, 128]
    # float medians (np.median of shapes)
    assert pretraining_patch_size([16, 32, 32], [4, 4, 4], np.median([[40, 40, 40]] * 5, axis=0), 0) == [16, 32, 32]
    assert pretraining_patch_size([40, 32, 32], [4, 4, 4], [39.5, 40, 40], 0) == [16, 32, 32]


def test_pretraining_patch_size_properties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        divisors = [int(d) for d in rng.choice([1, 2, 4, 8, 16, 32], size=3)]
        plans = [int(d * rng.integers(1, 9)) for d in divisors]
        median = [float(rng.uniform(1, 300)) for _ in range(3)]
        axis = int(rng.integers(0, 3))
        max_fraction = float(rng.uniform(0.1, 0.9))
        size = pretraining_patch_size(plans, divisors, median, axis, max_fraction)
        div = divisors[axis]
        assert size[axis] % div == 0
        assert size[axis] <= plans[axis]
        assert size[axis] >= min(div, plans[axis])
        assert size[axis] <= max(div, max_fraction * median[axis])
        if plans[axis] <= max_fraction * median[axis]:
            assert size[axis] == plans[axis]
        assert [s for a, s in enumerate(size) if a != axis] == [p for a, p in enumerate(plans) if a != axis]
        assert all(isinstance(s, int) for s in size)


def test_pretraining_patch_size_does_not_mutate_input():
    plans = [64, 128, 128]
    pretraining_patch_size(plans, [16, 32, 32], [100, 200, 200], 0)
    assert plans == [64, 128, 128]
