"""Momentum (EMA) target networks: copy, freeze, update, and the BYOL cosine schedule for m.

MLSSCL's target branch is a momentum copy of backbone + projector, ``xi <- m * xi + (1 - m) * theta``
[poster, spec 2.2], updated after the optimiser step [spec 2.4].
"""
import copy
import math

import torch
from torch import nn


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """In place: ``target = m * target + (1 - m) * online``, parameter by parameter.

    Buffer policy: buffers (e.g. BatchNorm running statistics and ``num_batches_tracked``) are
    *copied* from ``online`` at every call, whatever ``m``, not averaged. An integer counter cannot be
    averaged, and the online statistics belong to the weights being tracked. NOTE: lightly and
    solo-learn average parameters only and leave the target's buffers to its own forward passes.
    nnU-Net encoders use InstanceNorm without running statistics, so they have no buffers; only
    BatchNorm variants (e.g. a BN projection head) are affected.

    With finite values m = 1 leaves the target parameters bit-identical, m = 0 copies the online
    ones exactly and m = 0.5 gives the exact mean.

    Args:
        online: the network trained by backprop (theta).
        target: its momentum copy (xi), with the same parameter and buffer names and shapes.
        m: momentum in [0, 1]. MLSSCL: 0.999 [assumption, spec 2.5: MoCo v1/v2].
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    online_params, target_params = _matching(online.named_parameters(), target.named_parameters(), "parameters")
    if target_params:
        torch._foreach_mul_(target_params, m)
        torch._foreach_add_(target_params, online_params, alpha=1.0 - m)
    online_buffers, target_buffers = _matching(online.named_buffers(), target.named_buffers(), "buffers")
    for target_buffer, online_buffer in zip(target_buffers, online_buffers):
        target_buffer.copy_(online_buffer)


def deactivate_requires_grad(module: nn.Module) -> None:
    """Set ``requires_grad = False`` on every parameter of ``module`` (a momentum target)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with gradients off and no ``.grad``: the initial target (xi = theta).

    Call it on the plain module, before ``torch.compile`` or DDP wrapping.
    """
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    for parameter in target.parameters():
        parameter.grad = None
    return target


def cosine_schedule(step: int, max_steps: int, start: float, end: float) -> float:
    """Cosine ramp from ``start`` at step 0 to ``end`` at ``max_steps`` (BYOL's momentum schedule).

    ``w = (1 - cos(pi * step / max_steps)) / 2`` and the value is ``(1 - w) * start + w * end``;
    BYOL [paper: Grill et al. 2020, sec. 3.2] uses start = 0.996, end = 1. Both ends are returned
    exactly; half-way gives the mean of start and end.

    Raises:
        ValueError: if ``max_steps < 1`` or ``step`` is outside ``[0, max_steps]`` (a schedule
            read past its end means the caller's step count is wrong).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if not 0 <= step <= max_steps:
        raise ValueError(f"step must be in [0, max_steps = {max_steps}], got {step}")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start and end must be finite, got {start}, {end}")
    w = (1.0 - math.cos(math.pi * step / max_steps)) / 2.0
    return (1.0 - w) * start + w * end


def _matching(online, target, kind: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Tensors of online and target in the same order, checking that names and shapes agree."""
    online, target = list(online), list(target)
    online_names, target_names = [name for name, _ in online], [name for name, _ in target]
    if online_names != target_names:
        only_online = sorted(set(online_names) - set(target_names))[:5]
        only_target = sorted(set(target_names) - set(online_names))[:5]
        raise ValueError(f"online and target {kind} differ (names or order): only online {only_online}, "
                         f"only target {only_target}; was the target made with make_momentum_copy(online)?")
    for (name, a), (_, b) in zip(online, target):
        if a.shape != b.shape:
            raise ValueError(f"{kind[:-1]} {name!r} has shape {tuple(a.shape)} online "
                             f"but {tuple(b.shape)} in the target")
    return [t for _, t in online], [t for _, t in target]


def mean_teacher_decay(step: int, decay: float, decay_after_rampup: float | None = None,
                       rampup_steps: int = 0) -> float:
    """EMA decay of a mean teacher at optimiser step ``step`` (0-based, the update after that step).

    ``min(1 - 1 / (step + 1), decay)``: the true average of the student's weights until the
    exponential average is the better estimate [code: CuriousAI/mean-teacher and yulequan/UA-MT,
    ``update_ema_variables``], so step 0 copies the student, step 1 is the mean of two. With
    ``decay_after_rampup`` the decay switches to it once ``step >= rampup_steps`` (Tarvainen & Valpola
    2017: 0.99 during the consistency ramp-up, 0.999 after [paper]).
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    for name, value in (("decay", decay), ("decay_after_rampup", decay_after_rampup)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    target = decay_after_rampup if decay_after_rampup is not None and step >= rampup_steps else decay
    return min(1.0 - 1.0 / (step + 1), target)
