"""The paper's comparison methods differ from PCL only in their positive mask."""
import torch

from nnunet_ssl.data.positions import partition_labels, partition_positive_mask, same_sample_mask
from nnunet_ssl.methods import GCL, PCL, SimCLR, list_methods


def test_same_sample_mask_pairs_the_two_views():
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(same_sample_mask(torch.tensor([0, 1, 0, 1])), expected)


def test_partition_labels_split_the_axis_in_quarters():
    positions = torch.tensor([0.0, 0.24, 0.25, 0.5, 0.99, 1.0])
    assert partition_labels(positions).tolist() == [0, 0, 1, 2, 3, 3]
    mask = partition_positive_mask(positions)
    assert mask[0, 1] and not mask[1, 2] and mask[4, 5] and mask.diagonal().all()


def test_baselines_are_registered_and_share_pcl_pipeline():
    assert {"pcl", "simclr", "gcl"} <= set(list_methods())
    assert issubclass(SimCLR, PCL) and issubclass(GCL, PCL)
    assert SimCLR.positive_mask is not PCL.positive_mask and GCL.positive_mask is not PCL.positive_mask
