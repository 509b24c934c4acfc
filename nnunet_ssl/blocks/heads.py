"""Projection heads on top of a readout (blocks/readouts.py) of an nnU-Net encoder."""
from torch import nn

from nnunet_ssl.blocks.readouts import global_average_pool  # noqa: F401  (defined there; kept importable here)


class ProjectionHead(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> Linear: PCL's head [code: network/unet2d.py
    UNet2D_classification] without the norm, SimCLR's with it."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        super().__init__(nn.Linear(in_dim, hidden_dim), *norm, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
