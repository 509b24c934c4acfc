"""Mean teacher: EMA arithmetic, ramp-up values, consistency loss, the fold's unlabeled cases (pure, fast)."""
import math

import pytest
import torch
from torch import nn

from nnunet_ssl.blocks.consistency import consistency_weight, probability_mse, sigmoid_rampup, teacher_input_noise
from nnunet_ssl.blocks.momentum import make_momentum_copy, mean_teacher_decay, update_momentum
from nnunet_ssl.data.unlabeled_split import fold_cases


def test_decay_is_the_true_average_first_then_the_configured_decay():
    assert [mean_teacher_decay(s, 0.99) for s in (0, 1, 3)] == [0.0, 0.5, 0.75]  # 1 - 1/(step+1)
    assert mean_teacher_decay(99, 0.99) == pytest.approx(0.99)
    assert mean_teacher_decay(10_000, 0.99) == 0.99
    # Tarvainen & Valpola: 0.99 during the ramp-up, 0.999 after
    assert mean_teacher_decay(499, 0.99, 0.999, rampup_steps=500) == 0.99
    assert mean_teacher_decay(500, 0.99, 0.999, rampup_steps=500) == pytest.approx(1 - 1 / 501)
    assert mean_teacher_decay(5000, 0.99, 0.999, rampup_steps=500) == 0.999
    with pytest.raises(ValueError):
        mean_teacher_decay(0, 1.5)


def test_ema_of_a_network_follows_the_running_average():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv3d(1, 2, 3), nn.InstanceNorm3d(2, affine=True))
    teacher = make_momentum_copy(student)
    snapshots = []
    for step in range(3):  # steps 0, 1, 2: decays 0, 1/2, 2/3 -> the plain mean of the students
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append([p.clone() for p in student.parameters()])
        update_momentum(student, teacher, mean_teacher_decay(step, 0.99))
    for t, *history in zip(teacher.parameters(), *snapshots):
        assert torch.allclose(t, (history[0] + history[1] + history[2]) / 3, atol=1e-6)
    before = [p.clone() for p in teacher.parameters()]
    update_momentum(student, teacher, 0.99)
    for t, old, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.99 * old + 0.01 * s, atol=1e-6)


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))  # 0.0067
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))  # 0.2865
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(250, 100) == 1.0
    assert sigmoid_rampup(-3, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(7, 0) == 1.0
    assert consistency_weight(50, 0.1, 100) == pytest.approx(0.1 * 0.2865048, rel=1e-6)
    values = [sigmoid_rampup(s, 100) for s in range(101)]
    assert values == sorted(values)


def test_probability_mse_and_no_gradient_into_the_teacher():
    student_logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]]).permute(2, 0, 1)[None]  # (1, C=2, 2, 1)
    teacher_logits = torch.zeros_like(student_logits, requires_grad=True)
    student_logits.requires_grad_(True)
    loss = probability_mse(torch.softmax(student_logits, 1), torch.softmax(teacher_logits, 1))
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)  # first voxel: (0.881, 0.119) against (0.5, 0.5)
    expected = ((p[0] - 0.5) ** 2 + (p[1] - 0.5) ** 2) / 4  # mean over 2 classes x 2 voxels
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert teacher_logits.grad is None and student_logits.grad.abs().sum() > 0
    assert probability_mse(torch.softmax(teacher_logits, 1), torch.softmax(teacher_logits, 1)).item() == 0


def test_teacher_noise_is_clipped():
    torch.manual_seed(0)
    images = torch.zeros(2, 1, 8, 8, 8)
    noisy = teacher_input_noise(images, std=0.1, clip=0.2)
    assert noisy.abs().max() <= 0.2 and 0.08 < noisy.std() < 0.12


def test_no_validation_case_is_unlabeled_on_nnunet_and_label_budget_splits():
    """nnU-Net's own 5-fold split (generate_crossval_split, as nnUNetTrainer.do_split makes it) plus the
    label-budget folds of nnUNetv2_ssl_splits, on 260 hippocampus-like case ids."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    from nnunet_ssl.data.folds import label_budget_folds
    cases = [f"hippocampus_{i:03d}" for i in range(260)]
    splits = generate_crossval_split(cases, seed=12345, n_splits=5)
    splits, _ = label_budget_folds(splits, [0, 1, 2], [2, 5, 10], seed=0)
    extra = ["unlabeled__imagesTs__hippocampus_900", "unlabeled__scans__a"]
    for fold in splits:
        split = fold_cases(cases, fold["train"], fold["val"], extra)
        assert not set(split.unlabeled) & set(fold["val"])
        assert not set(split.unlabeled) & set(fold["train"])
        assert set(split.unlabeled_from_dataset) | set(fold["train"]) | set(fold["val"]) == set(cases)
        assert split.unlabeled_extra == sorted(extra)
    budget = fold_cases(cases, splits[6]["train"], splits[6]["val"])  # 5 labeled of base fold 0
    assert budget.counts() == {"labeled": 5, "validation": 52, "unlabeled_from_dataset": 203, "unlabeled_extra": 0,
                               "unlabeled": 203}
    assert fold_cases(cases, splits[0]["train"], splits[0]["val"]).unlabeled == []
    with pytest.raises(ValueError, match="has the id of a training or validation case"):
        fold_cases(cases, ["a"], ["b"], ["b"])


def test_trainer_names_and_benchmark_arms():
    from nnunet_ssl.benchmark.run import plan_cells, trainer_name
    from nnunet_ssl.errors import SSLUserError
    from nnunet_ssl.integration.trainers import registry
    from nnunet_ssl.integration.trainers.mean_teacher import MeanTeacherMixin, SSLInitMeanTeacherTrainer_lowEncoderLR
    assert registry.parse_name("SSLInitMeanTeacherTrainer_pcl_cpu2000it") == \
        ("SSLInitMeanTeacherTrainer", "pcl", "default", "cpu2000it")
    assert registry.parse_name("SSLMeanTeacherTrainer_pcl") is None  # the scratch arm pins no method
    cls = registry.trainer_class("SSLInitMeanTeacherTrainer_mlsscl_lowEncoderLR_cpu500it")
    assert issubclass(cls, SSLInitMeanTeacherTrainer_lowEncoderLR) and cls.PRETRAINING_METHOD == "mlsscl"
    assert cls.ENCODER_LR_SCALE == 0.1 and cls.NUM_EPOCHS * cls.ITERATIONS_PER_EPOCH == 500
    assert issubclass(registry.trainer_class("SSLMeanTeacherTrainer_tiny"), MeanTeacherMixin)
    rows = [{"labeled": 5, "base_fold": 0, "fold": 6}]
    cells = plan_cells(["scratch", "pcl"], rows, "cpu500it", ("default", "meanTeacher"))
    assert [(c.arm, c.trainer) for c in cells] == [
        ("scratch", "SSLScratchTrainer_cpu500it"), ("scratch+meanTeacher", "SSLMeanTeacherTrainer_cpu500it"),
        ("pcl", "SSLInitTrainer_pcl_cpu500it"), ("pcl+meanTeacher", "SSLInitMeanTeacherTrainer_pcl_cpu500it")]
    assert [c.arm for c in plan_cells(["scratch", "nnunet"], rows, "tiny", ("lowEncoderLR",))] == ["scratch", "nnunet"]
    with pytest.raises(SSLUserError, match="no 'nnunet' arm"):
        trainer_name("nnunet", "tiny", "meanTeacher")
