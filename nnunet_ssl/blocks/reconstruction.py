"""Reconstruction losses: plain torch, no nnU-Net."""
import torch


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked voxels only (``mask`` == 0; 1 = visible), every channel.

    ``mask`` is (B, 1, *spatial) or (B, C, *spatial). Visible voxels contribute nothing, not even to
    the denominator [code: nnssl MAEMSELoss, "only computes loss on masked regions"]. Computed in
    float32 (under bf16 autocast the squared errors of well-reconstructed voxels would round to 0).
    """
    hidden = (1.0 - mask.float()).expand_as(target)
    squared = (prediction.float() - target.float()) ** 2
    return (squared * hidden).sum() / hidden.sum().clamp_min(1.0)
