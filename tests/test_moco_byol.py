"""MoCo v2 and BYOL: what reaches which branch, the queue, the momentum update, the loss."""
import pytest
import torch
import torch.nn.functional as F
from test_methods_contract import build, synthetic_batch

from nnunet_ssl.blocks.health import learning_verdict
from nnunet_ssl.blocks.infonce import symmetric_retrieval_top1
from nnunet_ssl.blocks.similarity import normalized_mse

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_normalized_mse_hand_computed():
    p = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0]])
    z = torch.tensor([[0.0, 5.0], [6.0, 8.0], [0.0, -1.0]])  # orthogonal, aligned, opposite: 2, 0, 4
    assert normalized_mse(p, z).item() == pytest.approx((2 + 0 + 4) / 3)


@pytest.mark.parametrize("name,online", [("moco", ("encoder.", "projector.")),
                                         ("byol", ("encoder.", "projector.", "predictor."))])
def test_gradients_reach_the_online_branch_and_never_the_target(name, online):
    method = build(name)
    method.train()
    loss, _ = method.training_step(synthetic_batch(method=method))
    loss.backward()
    # the pre-norm readout reads the last conv before its norm: that norm's affine parameters are outside the loss
    last_norm = "encoder." + method.readout.conv_paths[0].removesuffix(".conv") + ".norm."
    for param_name, param in method.named_parameters():
        if param_name.startswith(online) and not param_name.startswith(last_norm):
            assert param.grad is not None and param.grad.abs().sum() > 0, param_name
    target = list(method.target.parameters())
    assert target and all(not p.requires_grad and p.grad is None for p in target)


@pytest.mark.parametrize("name", ["moco", "byol"])
def test_momentum_update_moves_the_target_towards_the_online_weights(name):
    method = build(name)
    online = method.encoder.stages[0][0].convs[0].conv.weight
    target = method.target["encoder"].stages[0][0].convs[0].conv.weight
    with torch.no_grad():
        online.add_(1.0)  # as if an optimizer step had moved it
    before = target.clone()
    method.after_optimizer_step(step=0, total_steps=10)
    m = method.config.momentum if name == "moco" else method.config.base_momentum  # BYOL: tau at step 0
    assert torch.allclose(target, m * before + (1 - m) * online)
    if name == "byol":  # cosine schedule to 1 at the end: the target stops moving
        method.after_optimizer_step(step=10, total_steps=10)
        assert method.current_momentum == pytest.approx(1.0)


def test_moco_enqueues_the_target_keys_of_the_second_view():
    method = build("moco", queue_size=6)
    method.train()
    batch = synthetic_batch(method=method)
    with torch.no_grad():
        target = {k: v.clone() for k, v in method.target.state_dict().items()}
        method.training_step(batch)  # 4 keys into an empty queue of 6
        assert int(method.queue.num_filled) == 4
        keys, _ = method.queue.contents()
        method.target.load_state_dict(target)
        # the pre-norm readout of the target encoder: its last conv's output, pooled before the norm
        conv = method.target["encoder"].get_submodule(method.readout.conv_paths[0])
        captured = []
        handle = conv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        method.target["encoder"](batch["view2"])
        handle.remove()
        expected = F.normalize(method.target["projector"](captured[0].flatten(2).mean(2)), dim=1)
        assert torch.allclose(keys, expected, atol=1e-5)
        method.training_step(batch)  # 4 more: wraps around, the queue stays at its size
        assert int(method.queue.num_filled) == 6


def test_moco_uses_the_queue_as_negatives():
    method = build("moco", queue_size=64)
    method.eval()  # BatchNorm with running statistics: the same batch gives the same embeddings
    batch = synthetic_batch(method=method)
    with torch.no_grad():
        _, first = method.training_step(batch)
        _, second = method.training_step(batch)
    assert first["top1_chance"] == pytest.approx(1 / 4)  # in-batch negatives while the queue is empty
    assert second["top1_chance"] == pytest.approx(1 / 5)  # 4 queued keys + the positive


def test_symmetric_retrieval_averages_both_directions():
    keys = torch.eye(3)
    swapped = keys[[1, 0, 2]]  # rows 0 and 1 retrieve each other's key: 1 of 3 right
    assert symmetric_retrieval_top1(keys, keys, keys, keys) == pytest.approx(1.0)
    assert symmetric_retrieval_top1(keys, swapped, keys, keys) == pytest.approx((1 + 1 / 3) / 2)


def test_byol_reports_retrieval_against_chance():
    method = build("byol")
    method.eval()
    batch = synthetic_batch(method=method)
    batch["view2"] = batch["view1"].clone()  # each patch's two readout vectors are then equal
    with torch.no_grad():
        _, metrics = method.training_step(batch)
    assert metrics["top1_chance"] == pytest.approx(1 / 4)
    assert metrics["top1_feature_retrieval"] == pytest.approx(1.0)  # identical views, distinct patches
    assert 0.0 <= metrics["top1_retrieval"] <= 1.0


def test_a_loss_without_collapse_value_is_judged_by_retrieval_alone():
    learned = learning_verdict(0.2, None, top1=0.55, chance=0.25)  # gain (0.55 - 0.25) / 0.75 = 0.4
    assert learned["verdict"] == "learned" and learned["loss_ratio"] is None
    assert "collapse" not in learned["reason"] and "gain 0.400" in learned["reason"]
    assert learning_verdict(0.01, None, top1=0.25, chance=0.25)["verdict"] == "no_learning"  # a low loss is no proof
    with pytest.raises(ValueError):
        learning_verdict(0.2, None, None, None)


@pytest.mark.parametrize("name", ["moco", "byol", "mlsscl"])
def test_a_loaded_encoder_restarts_the_momentum_target(name):
    method = build(name)
    pretrained = build(name, seed=5).encoder.state_dict()
    method.encoder.load_state_dict(pretrained)
    target = method.target["encoder"].state_dict()
    assert not all(torch.equal(target[k], v) for k, v in pretrained.items())  # still the random init
    method.encoder_loaded()
    target = method.target["encoder"].state_dict()
    assert all(torch.equal(target[k], v) for k, v in pretrained.items())
    assert all(not p.requires_grad for p in method.target.parameters())
