"""BYOL's regression loss: plain torch."""
import torch
import torch.nn.functional as F


def normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z) [paper: BYOL, Grill et al. 2020, eq. 2],
    in float32. 0 when aligned, 4 when opposite; gradients flow into whatever requires grad (the caller
    detaches the target)."""
    p, z = F.normalize(prediction.float(), dim=1), F.normalize(target.float(), dim=1)
    return (2.0 - 2.0 * (p * z).sum(dim=1)).mean()
