"""InfoNCE (MoCo form) with explicit negatives or in-batch negatives, and its retrieval health metric.

MLSSCL's loss [poster, spec 2.4] for query q, key k+ and a queue Q::

    l(q, k+, Q) = -log[ exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k- in Q} exp(q.k- / tau)) ]

The symmetrised pair loss, the multiview and long-short sums and the stop-grad on keys are the
method's business; this module only evaluates l over a batch.
"""
import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    """Mean over the batch of the MoCo InfoNCE loss, with cosine similarity.

    Queries, keys and negatives are L2-normalised here, in float32 with autocast off (at tau = 0.07
    the logits reach 14, which bf16 resolves only in steps of 0.0625).

    - With ``negatives`` (K, D), e.g. a ``MemoryQueue``'s contents: logits_i =
      [q_i.k+_i, q_i.n_1, ..., q_i.n_K] / tau and the target class is 0 (MoCo).
    - With ``negatives=None``: in-batch negatives, logits_ij = q_i.k+_j / tau for all j and the target
      class is i, so the other samples' positive keys are the negatives (one direction only, not
      symmetrised; the caller symmetrises if it wants to).

    Gradients flow into whatever requires grad: the caller detaches the keys (stop-grad target
    branch); queue contents never require grad.

    Args:
        temperature: tau. 0.07 [assumption: MoCo default; the MLSSCL poster gives none]. NOTE: the
            spec's MLSSCL preset uses 0.2 (MoCo v2) with 0.07 as an ablation [spec 2.5]; pass it.
    """

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, query: torch.Tensor, positive_key: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        """query: (N, D); positive_key: (N, D); negatives: (K, D), K >= 1, or None. Returns a scalar."""
        logits, target = _logits(query, positive_key, negatives)
        return F.cross_entropy(logits / self.temperature, target)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@torch.no_grad()
def retrieval_top1(query: torch.Tensor, positive_key: torch.Tensor,
                   negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of queries whose positive key is *strictly* the most similar candidate.

    The candidates are those of ``InfoNCELoss`` for the same arguments: the positive key plus the K
    negatives, or with ``negatives=None`` all N positive keys of the batch. Ties count as misses, so
    collapsed embeddings (all equal) score 0 rather than 1. Chance level is 1 / (K + 1), or 1 / N
    in-batch; a healthy run climbs well above it [spec 3.5 sanity checks].

    Returns:
        A detached 0-dim float32 tensor in [0, 1] (``.item()`` it for logging; it can be all-reduced).
    """
    logits, target = _logits(query, positive_key, negatives)
    positive = logits.gather(1, target[:, None])
    others = logits.scatter(1, target[:, None], float("-inf"))
    return (positive[:, 0] > others.max(dim=1).values).float().mean()


def symmetric_retrieval_top1(query1: torch.Tensor, query2: torch.Tensor,
                             key1: torch.Tensor, key2: torch.Tensor) -> float:
    """In-batch ``retrieval_top1`` of view 1's queries among view 2's keys and of the reverse, averaged
    (chance 1 / N): the retrieval of a method whose two views play the same role (BYOL)."""
    return (retrieval_top1(query1, key2).item() + retrieval_top1(query2, key1).item()) / 2


def _logits(query: torch.Tensor, positive_key: torch.Tensor,
            negatives: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-similarity logits (N, 1 + K) or (N, N), before the temperature, and target classes (N,)."""
    if query.ndim != 2 or query.shape[0] == 0:
        raise ValueError(f"query must be (N, D) with N >= 1, got {tuple(query.shape)}")
    if positive_key.shape != query.shape:
        raise ValueError(f"positive_key must have the query's shape {tuple(query.shape)}, "
                         f"got {tuple(positive_key.shape)}")
    n, d = query.shape
    if negatives is None:
        if n < 2:
            raise ValueError("in-batch negatives (negatives=None) need a batch of at least 2 queries")
    elif negatives.ndim != 2 or negatives.shape[1] != d or negatives.shape[0] == 0:
        raise ValueError(f"negatives must be (K, {d}) with K >= 1 (or None for in-batch negatives), "
                         f"got {tuple(negatives.shape)}; an empty queue has no negatives yet")
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=1)
        k = F.normalize(positive_key.float(), dim=1)
        if negatives is None:
            return q @ k.T, torch.arange(n, device=q.device)
        negative_logits = q @ F.normalize(negatives.float().to(q.device), dim=1).T
        positive_logits = (q * k).sum(dim=1, keepdim=True)
        return torch.cat([positive_logits, negative_logits], dim=1), torch.zeros(n, dtype=torch.long, device=q.device)
