"""Mean teacher through the stock nnUNetv2_train on the synthetic dataset (a label-budget fold, so the
fold leaves unlabeled cases), and in-process: the EMA update after real steps, no gradient into the
teacher, and resume (--c) of teacher and student."""
import json
import os
import subprocess

import pytest
import torch
from conftest import DATASET_ID, PLANS, run_command, script
from test_unlabeled import _write_images

pytestmark = pytest.mark.slow


def _budget_fold(pretrained) -> tuple[int, dict]:
    """The 2-labeled fold of base fold 0 (added if missing) and its entry of splits_final.json."""
    run_command([script("nnUNetv2_ssl_splits"), "-d", str(DATASET_ID), "--labeled", "2", "--base-folds", "0"])
    folder = os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"])
    mapping = json.load(open(os.path.join(folder, "label_budget_folds.json")))["folds"]
    fold = next(r["fold"] for r in mapping if r["labeled"] == 2 and r["base_fold"] == 0 and r["seed"] == 0)
    return fold, json.load(open(os.path.join(folder, "splits_final.json")))[fold]


def _trainer(name: str, fold: int):
    import nnunet_ssl.integration.trainers as trainers
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    folder = os.path.join(str(nnUNet_preprocessed), f"Dataset{DATASET_ID}_Synthetic")
    plans = {**load_json(os.path.join(folder, f"{PLANS}.json")), "continue_training": False}
    return getattr(trainers, name)(plans, "3d_fullres", fold, load_json(os.path.join(folder, "dataset.json")),
                                   torch.device("cpu"))


def test_stock_train_validates_and_saves_the_teacher(pretrained, tmp_path):
    from nnunet_ssl.integration.dataset import open_preprocessed
    extra = tmp_path / "mt_scans"
    _write_images(extra, ["scan_x_0000", "scan_y_0000"])
    open_preprocessed(DATASET_ID, "3d_fullres", PLANS, [str(extra)])  # into the plugin's unlabeled folder
    fold, split = _budget_fold(pretrained)

    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # discovery must find the trainer
    train = subprocess.run([script("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", str(fold), "-p", PLANS,
                            "-tr", "SSLMeanTeacherTrainer_tiny", "-device", "cpu"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    model = os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"],
                         f"SSLMeanTeacherTrainer_tiny__{PLANS}__3d_fullres")
    fold_folder = os.path.join(model, f"fold_{fold}")

    cases = json.load(open(os.path.join(fold_folder, "mean_teacher_cases.json")))
    assert cases["labeled"] == split["train"] and cases["validation"] == split["val"]
    unlabeled = cases["unlabeled_from_dataset"] + cases["unlabeled_extra"]
    assert not set(unlabeled) & set(split["val"]) and not set(unlabeled) & set(split["train"])
    assert sorted(cases["unlabeled_from_dataset"] + split["train"] + split["val"]) == [f"case_{i:03d}" for i in range(8)]
    assert {"unlabeled__mt_scans__scan_x", "unlabeled__mt_scans__scan_y"} <= set(cases["unlabeled_extra"])
    assert cases["counts"]["unlabeled"] == len(unlabeled) >= 6

    log = "".join(open(os.path.join(fold_folder, f)).read() for f in os.listdir(fold_folder)
                  if f.startswith("training_log"))
    assert (f"2 labeled, {len(split['val'])} validation (never used for training), {len(unlabeled)} unlabeled"
            in log)
    assert log.count("mean teacher: consistency") == 2  # one cost line per epoch
    assert os.path.isfile(os.path.join(fold_folder, "validation", "summary.json"))

    checkpoint = torch.load(os.path.join(fold_folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    teacher, student = checkpoint["network_weights"], checkpoint["nnunet_ssl_mean_teacher"]["student_weights"]
    assert teacher.keys() == student.keys() and not any(k.startswith(("module.", "_orig_mod.")) for k in teacher)
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)  # the EMA lags the student

    # inference loads the teacher, with the plain network class
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, (fold,), "checkpoint_final.pth")
    assert all(torch.equal(predictor.list_of_parameters[0][k], v) for k, v in teacher.items())

    assert_export_holds_the_teacher("SSLMeanTeacherTrainer_tiny", fold, teacher, tmp_path)


def assert_export_holds_the_teacher(trainer: str, fold: int, teacher: dict, tmp_path) -> None:
    """nnUNetv2_ssl_export of a semi-supervised model: a stock nnU-Net folder with the teacher, no student state."""
    from nnunet_ssl.integration.export import export
    target = export(str(DATASET_ID), "3d_fullres", trainer, PLANS, str(tmp_path / "shared"), [str(fold)])
    exported = torch.load(os.path.join(target, f"fold_{fold}", "checkpoint_final.pth"), weights_only=False)
    assert "nnunet_ssl_mean_teacher" not in exported and exported["trainer_name"] == "nnUNetTrainer"
    assert all(torch.equal(exported["network_weights"][k], v) for k, v in teacher.items())


def test_ema_update_no_teacher_gradient_and_resume(pretrained, tmp_path):
    from nnunet_ssl.integration.encoder_loader import unwrap
    fold, _ = _budget_fold(pretrained)
    trainer = _trainer("SSLInitMeanTeacherTrainer_pcl_tiny", fold)  # pretrained encoder: the teacher starts from it
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    student = unwrap(trainer.network)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), trainer.teacher.state_dict().values()))
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in trainer.teacher.parameters()}
    for step, decay in enumerate((0.0, 0.5)):  # 1 - 1/(step + 1): a copy, then the mean
        before = [p.detach().clone() for p in trainer.teacher.parameters()]
        out = trainer.train_step(next(trainer.dataloader_train))
        assert float(out["ema_decay"]) == decay and float(out["consistency"]) >= 0
        assert 0 < float(out["consistency_weight"]) < 0.1  # still ramping up
        for t, old, s in zip(trainer.teacher.parameters(), before, student.parameters()):
            assert t.grad is None and not t.requires_grad
            assert torch.allclose(t, decay * old + (1 - decay) * s.detach(), atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), trainer.teacher.parameters()))

    trainer.on_train_epoch_end([out, out])  # nnU-Net logs numpy scalars: --c must still load the checkpoint
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    saved = torch.load(tmp_path / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert all(torch.equal(saved["network_weights"][k], v) for k, v in trainer.teacher.state_dict().items())
    resumed = _trainer("SSLInitMeanTeacherTrainer_pcl_tiny", fold)
    resumed.load_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    for mine, theirs in ((unwrap(resumed.network), student), (resumed.teacher, trainer.teacher)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
