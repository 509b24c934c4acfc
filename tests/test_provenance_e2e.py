"""Through nnUNetv2_train: a fine-tuning loads the pretraining it should, compares it with its plans, records
which file it loaded, and --c / --val use that record instead of a new lookup (issue 37)."""
import json
import os
import shutil
import subprocess

import pytest
from conftest import DATASET_ID, PLANS, fails_cleanly, script

from nnunet_ssl.integration.provenance import RECORD, file_sha256


def _derived_plans(pretrained, name: str, change) -> str:
    """A copy of the pretrained plans named ``name``, changed by ``change(configuration)``, with the pcl
    pretraining copied to where the lookup finds it for those plans (as if pretrained before the change)."""
    folder = os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"])
    with open(os.path.join(folder, PLANS + ".json")) as f:
        plans = json.load(f)
    plans["plans_name"] = name
    change(plans["configurations"]["3d_fullres"])
    with open(os.path.join(folder, name + ".json"), "w") as f:
        json.dump(plans, f)
    target = os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"], f"SSLPretrain_pcl__{name}__3d_fullres")
    os.makedirs(target)
    shutil.copy(os.path.join(pretrained["folder"], "checkpoint_final.pth"), target)
    return target


def _remove_plans(pretrained, name: str) -> None:
    os.remove(os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"], name + ".json"))


def _train(trainer: str, plans: str, *extra: str, env: dict | None = None):
    return [script("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-p", plans, "-tr", trainer,
            "-device", "cpu", *extra], {**os.environ, **(env or {})}


def _model(pretrained, trainer: str, plans: str) -> str:
    return os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"], f"{trainer}__{plans}__3d_fullres")


def _set_normalisation(configuration):
    configuration["normalization_schemes"] = ["CTNormalization"]


WEIGHTS = "pcl_checkpoint"  # placeholder for the session's pcl checkpoint in the table below


# every case fails in SSLInitTrainer.__init__, before nnU-Net makes the fold folder: nothing is written
@pytest.mark.parametrize("trainer, plans_change, env, expected", [
    ("SSLInitTrainer_tiny", _set_normalisation, {},
     ["pretrained with another architecture, normalisation or input channels",
      "normalization_schemes: ['ZScoreNormalization'] -> ['CTNormalization']", "nnUNet_ssl_allow_plans_change=1"]),
    ("SSLInitTrainer_simclr_tiny", None, {"nnUNet_ssl_weights": WEIGHTS},
     ["pinned to the 'simclr' pretraining, and nnUNet_ssl_weights=", "holds a 'pcl' pretraining",
      "unset nnUNet_ssl_weights"]),
    ("SSLInitTrainer_simclr_tiny", None, {"nnUNet_ssl_method": "pcl"},
     ["pinned to the 'simclr' pretraining, and nnUNet_ssl_method=pcl asks for another", "unset nnUNet_ssl_method"]),
])
def test_a_wrong_pretraining_is_refused_before_anything_is_written(pretrained, trainer, plans_change, env, expected):
    plans = "nnUNetPlans_cpuChanged" if plans_change else PLANS
    pretraining = _derived_plans(pretrained, plans, plans_change) if plans_change else None
    weights = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    try:
        args, full_env = _train(trainer, plans, env={k: weights if v == WEIGHTS else v for k, v in env.items()})
        fails_cleanly(args, *expected, env=full_env)
        assert not os.path.exists(_model(pretrained, trainer, plans))
    finally:
        if pretraining:
            shutil.rmtree(pretraining)
            _remove_plans(pretrained, plans)


def test_scale_change_warns_the_record_names_the_file_and_c_val_use_the_record(pretrained, tmp_path):
    plans = "nnUNetPlans_cpu2mm"  # the pretraining's plans at 2 mm: the same data, another scale

    def double_spacing(configuration):
        configuration["spacing"] = [2 * s for s in configuration["spacing"]]

    pretraining = _derived_plans(pretrained, plans, double_spacing)
    moved = str(tmp_path / "moved_pretraining")
    try:
        args, env = _train("SSLInitTrainer_pcl_tiny", plans)
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        fold = os.path.join(_model(pretrained, "SSLInitTrainer_pcl_tiny", plans), "fold_0")
        log = "".join(open(os.path.join(fold, f)).read() for f in os.listdir(fold) if f.startswith("training_log"))
        warning = "was trained at another scale"
        for text in (out.stdout, log):  # the console and the training log
            assert warning in text and "spacing: [1.0, 1.0, 1.0] -> [2.0, 2.0, 2.0]" in text
        checkpoint = os.path.join(pretraining, "checkpoint_final.pth")
        with open(os.path.join(fold, RECORD)) as f:
            record = json.load(f)
        assert (record["path"], record["method"], record["sha256"], record["found_by"]) == (
            checkpoint, "pcl", file_sha256(checkpoint), "the trainer's pinned method")
        assert f"sha256 {record['sha256']}" in log

        shutil.move(pretraining, moved)  # the pretraining is gone: --val needs none
        out = subprocess.run([*args, "--val"], env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "weights from checkpoint_final.pth; no pretraining loaded" in out.stdout
        assert f"The run started from pretrained encoder: {checkpoint}" in out.stdout

        # an unfinished run (checkpoint_latest only) continued with --c: no lookup, and the missing file is said
        os.rename(os.path.join(fold, "checkpoint_final.pth"), os.path.join(fold, "checkpoint_latest.pth"))
        out = subprocess.run([*args, "--c"], env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert (f"WARNING: the pretraining this run started from is no longer as {RECORD} records it: {checkpoint} "
                "is gone. Training continues from checkpoint_latest.pth") in out.stdout
        with open(os.path.join(fold, RECORD)) as f:
            assert json.load(f) == record  # the record of the start is kept as it was
    finally:
        shutil.rmtree(pretraining, ignore_errors=True)
        shutil.rmtree(moved, ignore_errors=True)
        _remove_plans(pretrained, plans)
