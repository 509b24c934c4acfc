"""A short CPU run of PCL with the pre-norm readout on synthetic patches whose content depends on their
position ends clearly below the loss of collapsed embeddings (issue 10, item 7)."""
import math

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_ssl.blocks.health import learning_verdict, supcon_collapse_loss
from nnunet_ssl.methods import PCL, DataGeometry, PCLConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")
PATCH = 16


def positional_patches(positions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B,) positions in [0, 1] -> (B, 1, P, P, P) patches: stripes along axis 0 whose frequency grows with
    the position, plus noise. The frequency survives InstanceNorm (a brightness level would not)."""
    z = torch.arange(PATCH, dtype=torch.float32).view(1, PATCH, 1, 1)
    frequency = (1 + 5 * positions).view(-1, 1, 1, 1) / PATCH
    phase = torch.rand(len(positions), 1, 1, 1, generator=generator) * 2 * math.pi
    stripes = torch.sin(2 * math.pi * frequency * z + phase).expand(-1, PATCH, PATCH, PATCH)
    return (stripes + 0.3 * torch.randn(stripes.shape, generator=generator)).unsqueeze(1)


def run_pcl(readout: str, steps: int = 50, batch: int = 8, seed: int = 0,
            lr: float = 0.01) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    encoder = PlainConvUNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, 2], 2, 2, 1, False, nn.InstanceNorm3d,
                            {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True}).encoder
    geometry = DataGeometry([PATCH] * 3, [4, 4, 4], [[4 * PATCH] * 3] * 4)
    method = PCL(encoder, 16, PCLConfig(readout=readout, rescale_theta=False), geometry)
    optimizer = torch.optim.SGD(method.parameters(), lr=lr, momentum=0.9, weight_decay=1e-5)
    g = torch.Generator().manual_seed(seed)
    losses = []
    method.train()
    for _ in range(steps):
        positions = torch.rand(batch, generator=g)
        step_batch = {"view1": positional_patches(positions, g), "view2": positional_patches(positions, g),
                      "positions": positions}
        loss, metrics = method.training_step(step_batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(metrics["loss"])
    return losses, metrics["loss_collapse"]


def test_pcl_with_the_prenorm_readout_ends_clearly_below_the_collapse_value():
    losses, collapse = run_pcl("prenorm")
    assert collapse == pytest.approx(supcon_collapse_loss(16, 0, 0.1 / 0.07))  # log(15) x 0.1 / 0.07 = 3.869
    final = sum(losses[-10:]) / 10
    # measured: 3.00 = 0.78 x collapse (mean of the last 10 of 50 steps); the verdict's line is 0.95
    assert final < 0.85 * collapse, (final, collapse)
    assert learning_verdict(final, collapse, None, None)["verdict"] == "learned"
    # the post-norm readout on the same data and steps stays at the collapse value (measured 3.87 = 1.00 x)
    postnorm_losses, _ = run_pcl("postnorm")
    postnorm_final = sum(postnorm_losses[-10:]) / 10
    assert postnorm_final > 0.95 * collapse and postnorm_final > final + 0.5, (postnorm_final, final)
    assert learning_verdict(postnorm_final, collapse, None, None)["verdict"] == "no_learning"
