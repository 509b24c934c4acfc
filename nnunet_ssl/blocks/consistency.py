"""Consistency training of a mean teacher: the ramped weight and the student-teacher distance.

Pure torch; the trainer (integration/trainers/mean_teacher.py) wires them into nnU-Net's step.
"""
import math

import torch


def sigmoid_rampup(step: float, rampup_steps: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(step / rampup_steps, 0, 1)``: the ramp-up of Laine & Aila
    (2017) used by the mean teacher [paper: Tarvainen & Valpola 2017; code: yulequan/UA-MT
    ``ramps.sigmoid_rampup``]. 0.0067 at the start, 0.29 half-way, exactly 1 from ``rampup_steps`` on;
    a ramp of length 0 is 1 at once."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step, 0.0), rampup_steps) / rampup_steps
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def consistency_weight(step: float, max_weight: float, rampup_steps: float) -> float:
    """The consistency loss's weight at ``step``: ``max_weight * sigmoid_rampup(step, rampup_steps)``."""
    return max_weight * sigmoid_rampup(step, rampup_steps)


def probability_mse(student_probabilities: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of class probabilities over every voxel and class (UA-MT's
    ``softmax_mse_loss``, then ``torch.mean`` [code: yulequan/UA-MT]). The teacher's side is a
    target: detached here, so no gradient can reach the teacher through the loss."""
    if student_probabilities.shape != teacher_probabilities.shape:
        raise ValueError(f"student and teacher outputs differ in shape: {tuple(student_probabilities.shape)} "
                         f"vs {tuple(teacher_probabilities.shape)}")
    return torch.mean((student_probabilities.float() - teacher_probabilities.detach().float()) ** 2)


def teacher_input_noise(images: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """``images + clamp(N(0, std^2), -clip, clip)``: the teacher's perturbed view [code: yulequan/UA-MT,
    std 0.1 clipped at 0.2, on z-scored intensities as nnU-Net's]."""
    return images + torch.clamp(torch.randn_like(images) * std, -clip, clip)


def consistency_share(supervised_loss: float, weighted_consistency: float) -> float:
    """``w c / (|L_sup| + w c)``: the weighted consistency's share of the loss the student minimises.
    nnU-Net's supervised loss is CE + (-soft Dice), negative once Dice passes CE, so its magnitude is
    used; 0 when both are 0."""
    total = abs(supervised_loss) + weighted_consistency
    return weighted_consistency / total if total > 0 else 0.0
