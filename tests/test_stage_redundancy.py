"""Channel redundancy of encoder stages: the label-free sign of a first stage whose channels carry one signal."""
import math

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from nnunetv2.utilities.network_initialization import InitWeights_He
from torch import nn

from nnunet_ssl.blocks.health import channel_redundancy, stage_redundancy


def test_identical_channels_are_fully_redundant_whatever_their_scale_and_sign():
    signal = torch.randn(2, 1, 5, 6)
    features = torch.cat([signal, 3 * signal + 1, -0.5 * signal], dim=1)
    assert channel_redundancy(features) == pytest.approx(1.0, abs=1e-6)


def test_hand_computed_correlations():
    # channels over 4 positions: a = (1, -1, 1, -1), b = (1, 1, -1, -1), c = a + b (normalised: r = 1/sqrt 2 to each)
    a = torch.tensor([1.0, -1, 1, -1])
    b = torch.tensor([1.0, 1, -1, -1])
    features = torch.stack([a, b, a + b]).reshape(1, 3, 2, 2)
    # off-diagonal |r|: r(a, b) = 0, r(a, c) = r(b, c) = 1/sqrt(2); mean over the 6 ordered pairs
    assert channel_redundancy(features) == pytest.approx(4 / math.sqrt(2) / 6, abs=1e-6)
    assert channel_redundancy(torch.stack([a, b]).reshape(1, 2, 4)) == pytest.approx(0.0, abs=1e-7)


def test_samples_are_pooled_and_a_constant_channel_correlates_with_nothing():
    first = torch.tensor([[1.0, -1], [1, -1]])  # (channels 2, positions 2) of sample 1: r = 1 alone
    second = torch.tensor([[1.0, -1], [-1, 1]])  # sample 2: r = -1 alone; pooled: r = 0
    assert channel_redundancy(torch.stack([first, second])) == pytest.approx(0.0, abs=1e-7)
    with_constant = torch.stack([torch.tensor([[1.0, -1], [1, -1], [2, 2]])])
    assert channel_redundancy(with_constant) == pytest.approx(2 / 6, abs=1e-6)  # only the first two agree
    assert math.isnan(channel_redundancy(torch.randn(3, 1, 4)))


def _plain(dim):
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dim == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return PlainConvUNet(1, 3, (8, 16, 32), conv, 3, (1, 2, 2), 2, 2, 2, True, norm, {"eps": 1e-5, "affine": True},
                         nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def _residual(dim):
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dim == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return ResidualEncoderUNet(1, 3, (8, 16, 32), conv, 3, (1, 2, 2), (1, 1, 1), 2, (1, 1), True, norm,
                               {"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


@pytest.mark.parametrize("build", [_plain, _residual], ids=["plain", "resenc"])
@pytest.mark.parametrize("dim", [2, 3])
def test_he_init_stages_are_far_from_redundant_and_a_collapsed_first_stage_is_seen(build, dim):
    torch.manual_seed(0)
    network = build(dim)
    network.apply(InitWeights_He(1e-2))
    images = torch.randn(4, 1, *([16] * dim))
    at_init = stage_redundancy(network.encoder, images)
    assert len(at_init) == 3 and all(0 < r < 0.4 for r in at_init)
    # every filter of the first stage (and of ResEnc's stem) made the same: its channels carry one signal
    first = [network.encoder.stages[0]] + ([network.encoder.stem] if hasattr(network.encoder, "stem") else [])
    with torch.no_grad():
        for conv in (m for part in first for m in part.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))):
            conv.weight.copy_(conv.weight[:1].expand_as(conv.weight))
            if conv.bias is not None:
                conv.bias.zero_()
    collapsed = stage_redundancy(network.encoder, images)
    assert collapsed[0] > 0.9 > at_init[0]
    assert network.encoder.training  # measured in eval mode, then put back
