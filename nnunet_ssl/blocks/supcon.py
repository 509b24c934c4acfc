"""Supervised contrastive loss over an explicit positive mask (SupCon, L_out form).

PCL, SimCLR and GCL differ only in the mask they pass in; the loss knows nothing about positions.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SupConLoss(nn.Module):
    """SupCon L_out (Khosla et al. 2020) with cosine similarity, as in PCL's ``loss/contrast_loss.py``.

    For anchors i with positives P(i) (the mask without the diagonal)::

        s_ij = cos(z_i, z_j) / temperature
        l_i  = -(temperature / base_temperature) * mean_{j in P(i)} [s_ij - log sum_{a != i} exp(s_ia)]

    The loss is the mean of l_i over anchors that have at least one positive (the reference would
    return NaN for an anchor without positives; with two views per sample that never happens).

    Args:
        temperature: tau. PCL uses 0.1 [code: train_contrast.py --temp].
        base_temperature: the reference scales the loss by tau / 0.07 (``base_temperature`` keeps
            its SupCon default); pass ``None`` to drop that factor.
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = 0.07):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.scale = temperature / base_temperature if base_temperature else 1.0

    def forward(self, embeddings: torch.Tensor, positive_mask: torch.Tensor,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        """embeddings: (N, D) anchors; keys: optional (K, D) extra contrast entries (e.g. a memory
        queue), never anchors; positive_mask: (N, N + K) bool over [embeddings, keys]; the
        anchor-to-itself entries are ignored."""
        n = embeddings.shape[0]
        z = F.normalize(embeddings.float(), dim=1)
        contrast = z if keys is None else torch.cat([z, F.normalize(keys.float(), dim=1)])
        if positive_mask.shape != (n, contrast.shape[0]):
            raise ValueError(f"positive_mask must be ({n}, {contrast.shape[0]}), got {tuple(positive_mask.shape)}")
        logits = z @ contrast.T / self.temperature
        not_self = torch.ones_like(logits, dtype=torch.bool)
        not_self[:, :n] = ~torch.eye(n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(~not_self, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positives = positive_mask.to(z.device) & not_self
        n_pos = positives.sum(dim=1)
        has_pos = n_pos > 0
        if not has_pos.any():
            raise ValueError("no anchor has a positive: check the positive mask")
        mean_log_prob_pos = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has_pos] / n_pos[has_pos]
        return -self.scale * mean_log_prob_pos.mean()

