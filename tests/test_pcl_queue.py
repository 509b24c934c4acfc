"""PCL's optional memory queue of (embedding, position): keys join the contrast set, never as anchors."""
import math

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_ssl.blocks.supcon import SupConLoss
from nnunet_ssl.methods import DataGeometry, get_method


def _reference(anchors, keys, mask, temperature, scale):
    z = F.normalize(anchors.double(), dim=1)
    contrast = torch.cat([z, F.normalize(keys.double(), dim=1)])
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(contrast)) if a != i]
        denominator = math.log(sum(math.exp((z[i] @ contrast[a]).item() / temperature) for a in others))
        positives = [j for j in others if mask[i, j]]
        if positives:
            losses.append(-scale * sum((z[i] @ contrast[j]).item() / temperature - denominator
                                       for j in positives) / len(positives))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("n,k", [(4, 3), (6, 10)])
def test_supcon_with_keys_matches_brute_force(n, k):
    g = torch.Generator().manual_seed(n * 100 + k)
    anchors, keys = torch.randn(n, 8, generator=g), torch.randn(k, 8, generator=g)
    mask = torch.rand(n, n + k, generator=g) < 0.4
    mask[torch.arange(n), (torch.arange(n) + 1) % n] = True  # every anchor has a positive
    loss = SupConLoss(0.1, 0.07)(anchors, mask, keys)
    assert loss.item() == pytest.approx(_reference(anchors, keys, mask, 0.1, 0.1 / 0.07), rel=1e-4)


def test_supcon_rejects_a_mask_that_ignores_the_keys():
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        SupConLoss()(torch.randn(3, 4), torch.ones(3, 3, dtype=torch.bool), torch.randn(2, 4))


@pytest.mark.parametrize("name", ["pcl", "simclr", "gcl"])
def test_queue_fills_with_positions_and_joins_the_loss(name):
    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 1, 2, 1, conv_bias=False,
                         norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                         nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    cls = get_method(name)
    method = cls(unet.encoder, 16, cls.config_class(queue_size=10), DataGeometry([8, 16, 16], [4, 4, 4], [[40] * 3] * 3))
    batch = {"view1": torch.randn(3, 1, 8, 16, 16), "view2": torch.randn(3, 1, 8, 16, 16),
             "positions": torch.tensor([0.2, 0.5, 0.8])}
    first, _ = method(batch)
    keys, fields = method.queue.contents()
    assert len(keys) == 6 and torch.equal(fields["position"], torch.tensor([0.2, 0.5, 0.8] * 2))
    second, _ = method(batch)  # same batch, now contrasted against 6 queued keys as well
    assert int(method.queue.num_filled) == 10 and torch.isfinite(second)
    assert second.item() != pytest.approx(first.item())
    second.backward()
    assert all(p.grad is not None for p in method.projector.parameters())
    assert "queue.keys" in method.state_dict()  # resumed with --c
