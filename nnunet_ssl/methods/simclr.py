"""SimCLR baseline, as in PCL's comparison: the same pipeline, only the other view is positive.

NT-Xent with cosine similarity = SupCon with the same-sample mask [code: loss/contrast_loss.py
mode "simclr"]. Positions are sampled but unused, so the patch-extent guard does not apply.
"""
import torch

from nnunet_ssl.data.positions import same_sample_mask
from nnunet_ssl.methods.pcl import PCL


class SimCLR(PCL):
    name = "simclr"
    uses_positions = False

    def positive_mask(self, positions: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        return same_sample_mask(sample_ids)

    def queue_positive_mask(self, positions: torch.Tensor, queued_positions: torch.Tensor) -> torch.Tensor:
        # queued keys come from earlier batches: never the same sample
        return torch.zeros(len(positions), len(queued_positions), dtype=torch.bool, device=positions.device)
