"""Momentum update, freezing, copying and the cosine schedule, checked by value."""
import math

import pytest
import torch
from torch import nn

from nnunet_ssl.blocks.momentum import cosine_schedule, deactivate_requires_grad, make_momentum_copy, update_momentum


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def online_and_target():
    """A target copy, then an online network whose parameters and BN statistics have moved away."""
    online = tiny_net()
    target = make_momentum_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    online.train()
    online(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))  # updates running stats
    return online, target


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def test_m_one_leaves_target_parameters_unchanged():
    online, target = online_and_target()
    before = snapshot(target.parameters())
    update_momentum(online, target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), before))


def test_m_zero_copies_online_parameters():
    online, target = online_and_target()
    update_momentum(online, target, 0.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))


def test_m_half_gives_the_exact_mean():
    online, target = online_and_target()
    expected = [(t + o) / 2 for t, o in zip(snapshot(target.parameters()), snapshot(online.parameters()))]
    update_momentum(online, target, 0.5)
    assert all(torch.equal(t, e) for t, e in zip(target.parameters(), expected))


@pytest.mark.parametrize("m", [0.9, 0.99, 0.999])
def test_general_m_follows_the_formula_and_leaves_online_alone(m):
    online, target = online_and_target()
    t0, o0 = snapshot(target.parameters()), snapshot(online.parameters())
    update_momentum(online, target, m)
    for t, a, b in zip(target.parameters(), t0, o0):
        assert torch.allclose(t, m * a + (1 - m) * b, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(o, b) for o, b in zip(online.parameters(), o0))


def test_buffers_are_copied_from_online_whatever_m():
    online, target = online_and_target()
    bn_online, bn_target = online[1], target[1]
    assert not torch.equal(bn_online.running_mean, bn_target.running_mean)
    update_momentum(online, target, 1.0)
    for name, buffer in online.named_buffers():
        assert torch.equal(dict(target.named_buffers())[name], buffer), name
    assert int(bn_target.num_batches_tracked) == 1
    # copies, not aliases
    with torch.no_grad():
        bn_online.running_mean.add_(1.0)
    assert not torch.equal(bn_online.running_mean, bn_target.running_mean)


def test_target_has_no_grad_and_update_builds_no_graph():
    online, target = online_and_target()
    assert all(p.requires_grad for p in online.parameters())
    assert not any(p.requires_grad for p in target.parameters())
    update_momentum(online, target, 0.9)
    assert all(p.grad_fn is None and p.grad is None and not p.requires_grad for p in target.parameters())
    loss = online(torch.randn(4, 4)).sum() + target(torch.randn(4, 4)).sum()
    loss.backward()
    assert all(p.grad is not None for p in online.parameters())
    assert all(p.grad is None for p in target.parameters())


def test_make_momentum_copy_is_an_independent_equal_copy_without_grads():
    online = tiny_net()
    online(torch.randn(4, 4)).sum().backward()  # online has .grad
    target = make_momentum_copy(online)
    for (name, o), (_, t) in zip(online.named_parameters(), target.named_parameters()):
        assert torch.equal(o, t) and o.data_ptr() != t.data_ptr(), name
        assert t.grad is None and not t.requires_grad and o.requires_grad
    with torch.no_grad():
        next(target.parameters()).add_(1.0)
    assert not torch.equal(next(target.parameters()), next(online.parameters()))


def test_deactivate_requires_grad():
    net = tiny_net()
    deactivate_requires_grad(net)
    assert not any(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("m", [-0.1, 1.01, float("nan")])
def test_invalid_momentum_raises(m):
    online, target = online_and_target()
    with pytest.raises(ValueError):
        update_momentum(online, target, m)


def test_mismatched_networks_raise():
    online = tiny_net()
    with pytest.raises(ValueError):
        update_momentum(online, nn.Sequential(nn.Linear(4, 6)), 0.9)
    with pytest.raises(ValueError):  # same names, different shapes
        update_momentum(nn.Linear(4, 6), nn.Linear(4, 5), 0.9)


def test_cosine_schedule_values():
    assert cosine_schedule(0, 100, 0.996, 1.0) == 0.996
    assert cosine_schedule(100, 100, 0.996, 1.0) == 1.0
    assert cosine_schedule(50, 100, 0.996, 1.0) == pytest.approx(0.998, abs=1e-12)
    assert cosine_schedule(25, 100, 0.0, 1.0) == pytest.approx((1 - math.cos(math.pi / 4)) / 2, abs=1e-12)
    # odd max_steps: half-way is a fractional step, the formula still holds
    assert cosine_schedule(7, 14, 0.99, 0.999) == pytest.approx(0.9945, abs=1e-12)
    assert cosine_schedule(1, 1, 0.5, 0.7) == 0.7


def test_cosine_schedule_is_monotone_both_ways():
    up = [cosine_schedule(s, 20, 0.99, 1.0) for s in range(21)]
    down = [cosine_schedule(s, 20, 1.0, 0.0) for s in range(21)]
    assert up == sorted(up) and down == sorted(down, reverse=True)
    assert cosine_schedule(3, 9, 0.7, 0.7) == pytest.approx(0.7)


@pytest.mark.parametrize("step,max_steps,start,end", [
    (0, 0, 0.9, 1.0), (1, 0, 0.9, 1.0), (-1, 10, 0.9, 1.0), (11, 10, 0.9, 1.0), (0, 10, float("nan"), 1.0),
    (0, 10, 0.9, float("inf")),
])
def test_cosine_schedule_bad_inputs_raise(step, max_steps, start, end):
    with pytest.raises(ValueError):
        cosine_schedule(step, max_steps, start, end)
