"""UniMatch and BCP through the stock nnU-Net commands on the synthetic dataset (a label-budget fold, so
unlabeled cases exist): nnUNetv2_train in 3d and 2d, nnUNetv2_predict with the saved teacher, and an exact
resume (teacher, student, the warm-start/self-training phase) in-process."""
import os
import shutil
import subprocess

import pytest
import torch
from conftest import DATASET_ID, PLANS, run_command, script
from test_mean_teacher_e2e import _budget_fold, _trainer, assert_export_holds_the_teacher

pytestmark = pytest.mark.slow


def _train_and_predict(pretrained, tmp_path, trainer: str, configuration: str, fold: int) -> tuple[str, str]:
    """Stock nnUNetv2_train, then stock nnUNetv2_predict on one raw image; returns (fold folder, its log)."""
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # discovery must find the trainer
    train = subprocess.run([script("nnUNetv2_train"), str(DATASET_ID), configuration, str(fold), "-p", PLANS,
                            "-tr", trainer, "-device", "cpu"], env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    model = os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"], f"{trainer}__{PLANS}__{configuration}")
    fold_folder = os.path.join(model, f"fold_{fold}")
    assert os.path.isfile(os.path.join(fold_folder, "validation", "summary.json"))
    checkpoint = torch.load(os.path.join(fold_folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    teacher, student = checkpoint["network_weights"], checkpoint["nnunet_ssl_mean_teacher"]["student_weights"]
    assert teacher.keys() == student.keys() and any(not torch.equal(teacher[k], student[k]) for k in teacher)

    images, out = tmp_path / f"in_{configuration}", tmp_path / f"out_{configuration}"
    images.mkdir()
    raw = os.path.join(pretrained["env"]["nnUNet_raw"], pretrained["name"], "imagesTr", "case_000_0000.nii.gz")
    shutil.copy(raw, images / "case_000_0000.nii.gz")
    run_command([script("nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", str(DATASET_ID), "-c",
                 configuration, "-f", str(fold), "-p", PLANS, "-tr", trainer, "-chk", "checkpoint_final.pth",
                 "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"])
    assert os.path.isfile(out / "case_000.nii.gz")
    log = "".join(open(os.path.join(fold_folder, f)).read() for f in os.listdir(fold_folder)
                  if f.startswith("training_log"))
    return fold_folder, log


@pytest.fixture(scope="module")
def preprocessed_2d(pretrained):
    run_command([script("nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-plans_name", PLANS, "-np", "1"])
    return pretrained


def test_unimatch_3d_stock_train_logs_health_and_predicts(pretrained, tmp_path):
    fold, split = _budget_fold(pretrained)
    fold_folder, log = _train_and_predict(pretrained, tmp_path, "SSLUniMatchTrainer_tiny", "3d_fullres", fold)
    assert f"unimatch cases of fold {fold}: 2 labeled, {len(split['val'])} validation (never used for training)" in log
    assert "pseudo-labels the weak view where its largest probability >= 0.95" in log
    assert log.count("unimatch: strong-view loss") == 2  # one health line per epoch
    assert "per class 0: " in log and "student-teacher agreement" in log

    teacher = torch.load(os.path.join(fold_folder, "checkpoint_final.pth"), weights_only=False)["network_weights"]
    assert_export_holds_the_teacher("SSLUniMatchTrainer_tiny", fold, teacher, tmp_path)


def test_fixmatch_2d_with_warm_start_stock_train_and_predict(preprocessed_2d, tmp_path):
    fold, _ = _budget_fold(preprocessed_2d)
    _, log = _train_and_predict(preprocessed_2d, tmp_path, "SSLUniMatchTrainer_fixMatch_warmStart_tiny", "2d", fold)
    assert "the student learns them on 1 strong view(s)" in log and "feature dropout" not in log
    assert "supervised warm start for 1 iterations, then EMA teacher" in log
    assert "unimatch: warm start done after 1 iterations; the teacher is now a copy of the student" in log
    assert log.count("unimatch: strong-view loss") == 2  # the first epoch mixes warm start and pseudo-labels


def test_unimatch_warm_start_is_supervised_then_pseudo_labels_from_the_students_copy(pretrained):
    from nnunet_ssl.integration.encoder_loader import unwrap
    fold, _ = _budget_fold(pretrained)
    trainer = _trainer("SSLUniMatchTrainer_fixMatch_warmStart_tiny", fold)  # 4 iterations: 1 warm start
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    warm = trainer.train_step(next(trainer.dataloader_train))
    assert float(warm["warm_start"]) == 1.0 and float(warm["teacher_seconds"]) == 0.0
    assert float(warm["strong_loss"]) == 0.0 and float(warm["ramp"]) == 0.0
    trainer.teacher.load_state_dict({k: torch.zeros_like(v) for k, v in trainer.teacher.state_dict().items()})
    assert not trainer.in_warm_start(1)  # the first step after the warm start: the teacher becomes the student
    student = unwrap(trainer.network).state_dict()
    assert all(torch.equal(student[k], v) for k, v in trainer.teacher.state_dict().items())
    first = trainer.train_step(next(trainer.dataloader_train))
    # pseudo-labels now, at full weight at once (FixMatch has no ramp), and the EMA starts over from the copy
    assert float(first["warm_start"]) == 0.0 and float(first["ramp"]) == 1.0 and float(first["ema_decay"]) == 0.0
    assert float(first["teacher_seconds"]) > 0.0
    trainer.on_train_end()


def test_bcp_2d_stock_train_and_predict(preprocessed_2d, tmp_path):
    fold, _ = _budget_fold(preprocessed_2d)
    _, log = _train_and_predict(preprocessed_2d, tmp_path, "SSLBCPTrainer_tiny", "2d", fold)
    assert "supervised copy-paste warm start for 1 of 4 iterations" in log
    assert "bcp: warm start done after 1 iterations" in log and "bcp: pseudo-label loss" in log


def test_bcp_resume_continues_teacher_student_and_phase(pretrained, tmp_path):
    from nnunet_ssl.integration.encoder_loader import unwrap
    fold, _ = _budget_fold(pretrained)
    trainer = _trainer("SSLInitBCPTrainer_pcl_tiny", fold)  # 4 iterations: 1 warm start, then self-training
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(2)]
    assert [float(o["warm_start"]) for o in outputs] == [1.0, 0.0] and float(outputs[1]["ema_decay"]) == 0.0
    trainer.on_train_epoch_end(outputs)
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    trainer.on_train_end()

    resumed = _trainer("SSLInitBCPTrainer_pcl_tiny", fold)
    resumed.load_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    for mine, theirs in ((unwrap(resumed.network), unwrap(trainer.network)), (resumed.teacher, trainer.teacher)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
    resumed.on_train_start()
    assert all(torch.equal(a, b) for a, b in zip(resumed.teacher.state_dict().values(),
                                                 trainer.teacher.state_dict().values()))  # not reset on start
    resumed.on_train_epoch_start()
    assert resumed._iteration == trainer._iteration == 2  # the schedule (warm start, EMA decay) goes on from here
    out = resumed.train_step(next(resumed.dataloader_train))
    # the EMA counts from the teacher's copy at iteration 1: 1 - 1/(2 - 1 + 1)
    assert float(out["warm_start"]) == 0.0 and float(out["ema_decay"]) == 0.5
    resumed.on_train_end()


def test_cost_tool_times_each_trainer_against_plain(pretrained):
    from nnunet_ssl.benchmark.mean_teacher_cost import semi_supervised_cost
    from nnunet_ssl.errors import SSLUserError
    fold, _ = _budget_fold(pretrained)
    result = semi_supervised_cost(str(DATASET_ID), fold, torch.device("cpu"), plans=PLANS, iterations=2, block=1,
                                  warmup=0, trainers=("SSLUniMatchTrainer_fixMatch", "SSLBCPTrainer"))
    rows = result["trainers"]
    assert list(rows) == ["SSLScratchTrainer", "SSLUniMatchTrainer_fixMatch", "SSLBCPTrainer"]
    assert rows["SSLScratchTrainer"]["ratio_median"] == 1.0 and "teacher_seconds_median" not in rows["SSLScratchTrainer"]
    assert all(rows[n]["median_s"] > 0 and rows[n]["teacher_seconds_median"] > 0 for n in list(rows)[1:])
    assert result["cases"]["labeled"] == 2
    with pytest.raises(SSLUserError, match="no trainer"):
        semi_supervised_cost(str(DATASET_ID), fold, torch.device("cpu"), plans=PLANS, iterations=1,
                             trainers=("SSLNoSuchTrainer",))


def test_stacked_mean_teacher_recipes_through_stock_train(pretrained, tmp_path):
    """A name with stacked recipes is found by nnU-Net, trains with the strong view and logs the share."""
    fold, _ = _budget_fold(pretrained)
    _, log = _train_and_predict(pretrained, tmp_path, "SSLMeanTeacherTrainer_weight10_shortRampup_strongView_tiny",
                                "3d_fullres", fold)
    assert "weight up to 10.0 by a sigmoid ramp over 1 of 4 iterations" in log
    assert "the student sees a strong intensity view" in log and log.count("(share of the loss ") == 2
