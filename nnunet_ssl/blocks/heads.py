"""Projection heads and pooling on top of an nnU-Net encoder."""
import torch
from torch import nn


def global_average_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C): PCL's AdaptiveAvgPool + Flatten, for 2D and 3D alike."""
    return feature_map.flatten(start_dim=2).mean(dim=2)


class ProjectionHead(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> Linear: PCL's head [code: network/unet2d.py
    UNet2D_classification] without the norm, SimCLR's with it."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        super().__init__(nn.Linear(in_dim, hidden_dim), *norm, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
