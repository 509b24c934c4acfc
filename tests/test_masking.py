"""MAE's blocky masks and masked-voxel loss: geometry and hand-computed values."""
import pytest
import torch

from nnunet_ssl.blocks.reconstruction import masked_mse
from nnunet_ssl.data.masking import blocky_mask, check_block_size, scaled_block_size


def test_scaled_block_size_keeps_nnssls_fraction_and_divides_the_patch():
    assert scaled_block_size([160, 160, 160]) == [16, 16, 16]  # nnssl's own setting
    assert scaled_block_size([32, 48, 32]) == [4, 4, 4]  # our CPU plans: 3.2 / 4.8 -> nearest divisors
    assert scaled_block_size([20, 320, 256]) == [2, 32, 32]  # anisotropic: about 10 blocks per axis each
    for patch in ([32, 48, 32], [20, 320, 256], [56, 40, 40]):
        check_block_size(patch, scaled_block_size(patch))
    with pytest.raises(ValueError):
        check_block_size([32, 48, 32], [3, 4, 4])


def test_mask_ratio_is_exact_per_sample_in_blocks():
    mask = blocky_mask(6, [16, 32, 32], [2, 4, 4], 0.75, torch.Generator().manual_seed(0))
    assert mask.shape == (6, 1, 16, 32, 32)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    cells = 8 * 8 * 8
    for sample in mask:  # int(0.75 * 512) = 384 masked blocks of 2*4*4 = 32 voxels in every sample
        assert (sample == 0).sum().item() == int(0.75 * cells) * 32


def test_mask_is_constant_on_grid_aligned_blocks():
    block = [2, 4, 4]
    mask = blocky_mask(3, [16, 32, 32], block, 0.6, torch.Generator().manual_seed(1))
    blocks = mask.reshape(3, 1, 8, 2, 8, 4, 8, 4)  # (grid, within-block) per axis
    assert torch.equal(blocks.amin(dim=(3, 5, 7)), blocks.amax(dim=(3, 5, 7)))
    # and a shifted grid is not constant: the blocks really start at multiples of the block size
    shifted = mask[:, :, 1:15].reshape(3, 1, 7, 2, 8, 4, 8, 4)
    assert not torch.equal(shifted.amin(dim=(3, 5, 7)), shifted.amax(dim=(3, 5, 7)))


def test_masks_differ_across_the_batch():
    mask = blocky_mask(8, [16, 32, 32], [2, 4, 4], 0.75, torch.Generator().manual_seed(2))
    flat = mask.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 8
    # independence: the overlap of two samples' masked sets is about ratio^2 of the blocks, not 1 or 0
    overlap = ((flat[0] == 0) & (flat[1] == 0)).float().mean().item()
    assert 0.45 < overlap < 0.7  # 0.75^2 = 0.5625 in expectation


def test_masked_mse_counts_masked_voxels_only():
    target = torch.zeros(1, 2, 1, 2, 2)
    prediction = torch.tensor([[[[[1.0, 2.0], [3.0, 100.0]]], [[[0.0, 4.0], [1.0, -100.0]]]]])
    mask = torch.tensor([[[[[0.0, 0.0], [0.0, 1.0]]]]])  # three masked voxels, one visible (the 100s)
    # channel 0: 1 + 4 + 9 = 14; channel 1: 0 + 16 + 1 = 17; over 3 voxels x 2 channels
    assert masked_mse(prediction, target, mask).item() == pytest.approx(31 / 6)
    # the visible voxel's error does not matter at all
    prediction[..., 1, 1] = 0.0
    assert masked_mse(prediction, target, mask).item() == pytest.approx(31 / 6)
