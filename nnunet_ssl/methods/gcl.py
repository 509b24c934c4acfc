"""GCL baseline (Chaitanya et al. 2020, global strategy) as in PCL's comparison: the same pipeline,
positives are patches in the same quarter of the position axis [code: loss/contrast_loss.py mode "gcl"].
"""
import torch

from nnunet_ssl.data.positions import partition_positive_mask
from nnunet_ssl.methods.pcl import PCL


class GCL(PCL):
    name = "gcl"

    def positive_mask(self, positions: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        return partition_positive_mask(positions, num_partitions=4)

    def queue_positive_mask(self, positions: torch.Tensor, queued_positions: torch.Tensor) -> torch.Tensor:
        return partition_positive_mask(positions, num_partitions=4, others=queued_positions)
