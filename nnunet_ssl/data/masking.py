"""Blocky masks for masked image modeling (MAE on a dense U-Net): pure functions of shapes.

Convention as in nnssl [code: nnssl BaseMAETrainer.mask_creation]: 1 = visible, 0 = masked. A patch
is cut into a grid of equal blocks; a fixed number of grid cells, ``int(mask_ratio * cells)``, is
masked in every sample, chosen independently per sample (a random permutation per sample).
"""
from typing import Sequence

import torch

NNSSL_BLOCK_SIZE = 16  # voxels per axis [code: nnssl BaseMAETrainer.mask_creation block_size=16]
NNSSL_PATCH_SIZE = 160  # voxels per axis [code: nnssl BaseMAETrainer patch (160, 160, 160)]


def scaled_block_size(patch_size: Sequence[int],
                      block_fraction: float = NNSSL_BLOCK_SIZE / NNSSL_PATCH_SIZE) -> list[int]:
    """Per axis, the divisor of the patch extent closest to ``block_fraction`` of it (ties: the larger).

    [assumption] nnssl masks 16-voxel blocks of a 160-voxel patch: 10 blocks per axis, 1000 per patch.
    A fixed 16 voxels would leave 2 x 3 x 2 = 12 blocks in a 32 x 48 x 32 CPU patch, each half an axis
    long, and the 75% ratio could only be met in steps of 8%. Keeping the fraction per axis keeps the
    granularity (about 10 blocks per axis), and since nnU-Net sizes patches to similar physical extents
    per axis, blocks stay roughly isotropic in millimetres on anisotropic data. A divisor, so that the
    grid tiles the patch exactly (nnssl's ``size // block`` and ``repeat_interleave`` need it too).
    32 x 48 x 32 -> 4 x 4 x 4 (768 blocks); 160^3 -> 16^3 (nnssl's).
    """
    sizes = []
    for extent in patch_size:
        target = extent * block_fraction
        divisors = [d for d in range(1, int(extent) + 1) if extent % d == 0]
        sizes.append(min(divisors, key=lambda d: (abs(d - target), -d)))
    return sizes


def check_block_size(patch_size: Sequence[int], block_size: Sequence[int]) -> None:
    """ValueError unless every block extent is a positive divisor of the patch extent."""
    if len(block_size) != len(patch_size) or any(int(b) < 1 or p % int(b) for p, b in zip(patch_size, block_size)):
        raise ValueError(f"block size {list(block_size)} must divide the patch {list(patch_size)} on every axis")


def blocky_mask(batch_size: int, patch_size: Sequence[int], block_size: Sequence[int], mask_ratio: float,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 1, *patch) float mask, 1 = visible, 0 = masked; ``int(mask_ratio * cells)`` cells masked per sample."""
    check_block_size(patch_size, block_size)
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    grid = [int(p) // int(b) for p, b in zip(patch_size, block_size)]
    cells = 1
    for g in grid:
        cells *= g
    n_masked = int(mask_ratio * cells)  # [code: nnssl create_blocky_mask]
    # a random permutation per sample: argsort of uniform scores, first n_masked cells are masked
    order = torch.rand(batch_size, cells, generator=generator).argsort(dim=1)[:, :n_masked]
    flat = torch.ones(batch_size, cells)
    flat.scatter_(1, order, 0.0)
    mask = flat.reshape(batch_size, 1, *grid)
    for axis, block in enumerate(block_size):
        mask = mask.repeat_interleave(int(block), dim=axis + 2)
    return mask.to(device)
