"""Models Genesis corruptions on known arrays (data/genesis.py) and the losses its training step logs."""
import numpy as np
import pytest
import torch
from test_methods_contract import geometry, tiny_network

from nnunet_ssl.data.genesis import (GenesisRates, bezier_intensity, genesis_corrupt, genesis_flip, inpaint,
                                     local_pixel_shuffle, outpaint, shuffle_blocks_for, to_unit_range)
from nnunet_ssl.methods import ModelsGenesis
from nnunet_ssl.methods.models_genesis import ModelsGenesisConfig

IDENTITY = np.array([[0, 0], [1 / 3, 1 / 3], [2 / 3, 2 / 3], [1, 1]])


def ramp(shape=(1, 20, 24, 20)) -> np.ndarray:
    return np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def test_bezier_with_collinear_points_is_the_identity_or_its_inversion():
    image = ramp()
    assert np.allclose(bezier_intensity(image, IDENTITY, invert=False), image, atol=1e-4)
    assert np.allclose(bezier_intensity(image, IDENTITY, invert=True), 1 - image, atol=1e-4)


def test_bezier_is_monotonic_and_keeps_the_end_points():
    points = np.array([[0, 0], [0.9, 0.1], [0.95, 0.2], [1, 1]])  # a strong gamma-like curve
    x = np.linspace(0, 1, 101, dtype=np.float32)[None]
    y = bezier_intensity(x, points, invert=False)
    assert np.all(np.diff(y) >= 0) and y[0, 0] == pytest.approx(0) and y[0, -1] == pytest.approx(1)
    assert y[0, 50] < 0.1  # the curve bends the mid-grey far down


def test_local_shuffle_only_permutes_within_small_windows():
    image = np.arange(20 * 30 * 40, dtype=np.float32).reshape(1, 20, 30, 40)
    result = local_pixel_shuffle(image, np.random.default_rng(0), num_blocks=300)
    # windows overlap and read from the original, so values may repeat: check where each value came from
    moved = np.argwhere(result != image)
    assert len(moved) > 0
    for index in moved[:500]:
        source = np.unravel_index(int(result[tuple(index)]), image.shape)  # where the value came from
        # a window is at most extent // 10 voxels long: 2, 3, 4 along the axes
        assert all(abs(int(a) - int(b)) < limit for a, b, limit in zip(source[1:], index[1:], (2, 3, 4)))
    assert np.array_equal(local_pixel_shuffle(image, np.random.default_rng(0), num_blocks=0), image)


def test_shuffle_block_count_scales_with_the_patch():
    assert shuffle_blocks_for([64, 64, 32]) == 10000
    assert shuffle_blocks_for([32, 48, 32]) == 3750


def test_inpaint_keeps_a_three_voxel_border_and_fills_noise_inside():
    image = np.full((1, 24, 30, 36), 2.0, dtype=np.float32)  # outside noise's [0, 1)
    result = inpaint(image, np.random.default_rng(3))
    changed = result != image
    assert changed.any() and changed.mean() < 0.5
    assert not changed[:, :3].any() and not changed[:, -3:].any()
    assert not changed[:, :, :3].any() and not changed[:, :, :, -3:].any()
    assert result[changed].min() >= 0 and result[changed].max() < 1
    assert np.all(image == 2.0)  # the input is untouched


def test_outpaint_keeps_an_inner_box_and_replaces_the_border():
    image = np.full((1, 28, 28, 28), 2.0, dtype=np.float32)
    result = outpaint(image, np.random.default_rng(4))
    kept = result == 2.0
    assert kept.any() and not kept[:, :3].any() and not kept[:, -3:].any()  # the border shell is all noise
    assert result[~kept].max() < 1
    # the kept part is at least one box of extent - 4/7 extent = 12 voxels per axis
    z, y, x = np.nonzero(kept[0])
    assert z.max() - z.min() >= 11 and y.max() - y.min() >= 11 and x.max() - x.min() >= 11


def test_flip_and_corrupt_compose():
    image = ramp()
    rng = np.random.default_rng(5)
    flipped = genesis_flip(image, rng, probability=1.0)  # three flips
    assert np.array_equal(np.sort(flipped.ravel()), np.sort(image.ravel())) and not np.array_equal(flipped, image)
    assert np.array_equal(genesis_flip(image, rng, probability=0.0), image)
    nothing = GenesisRates(flip=0, local_shuffle=0, nonlinear=0, paint=0)
    assert np.array_equal(genesis_corrupt(image, rng, nothing), image)
    always = GenesisRates(local_shuffle=1, nonlinear=1, paint=1, inpaint=1, shuffle_blocks=50)
    assert not np.array_equal(genesis_corrupt(image, rng, always), image)


def test_unit_range_round_trip():
    image = np.array([[-2.0, 0.0, 6.0]], dtype=np.float32)
    unit, low, scale = to_unit_range(image)
    assert np.allclose(unit, [[0, 0.25, 1]]) and np.allclose(unit * scale + low, image)


def test_the_training_step_logs_both_trivial_losses():
    """Hand-computed: returning the corrupted input scores MSE(corrupted, image), predicting 0 scores mean(image^2);
    the health curve's margin is taken to the smaller (blocks/health.py)."""
    torch.manual_seed(0)
    method = ModelsGenesis(tiny_network(0, conv_bias=True, outputs=1, deep_supervision=False), 16,
                           ModelsGenesisConfig(), geometry(plans_patch_size=[16, 16, 16]))
    image = torch.full((2, 1, 16, 16, 16), 0.5)
    corrupted = image.clone()
    corrupted[:, :, :8] = 3.5  # half of every patch off by 3
    _, metrics = method.training_step({"image": image, "corrupted": corrupted})
    assert metrics["loss_return_input"] == pytest.approx(4.5)
    assert metrics["loss_predict_zero"] == pytest.approx(0.25)
