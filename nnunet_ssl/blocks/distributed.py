"""Cross-rank gathering for contrastive losses under torchrun / DDP (no-ops in a single process)."""
import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated in rank order along dim 0; gradients flow into this
    rank's own part only. Every rank then computes the same global loss; its gradient w.r.t. the
    local part is exact, so scaling the loss by ``world_size()`` before backward makes DDP's
    gradient averaging return the gradient of the global loss (tested against one process)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[rank()] = tensor
    return torch.cat(parts)
