"""Bad input gets a clear message with a fix and no traceback, and nothing is overwritten."""
import os
import shutil

import pytest
from conftest import DATASET_ID, PLANS, fails_cleanly, script, write_synthetic_dataset


def test_unknown_dataset(nnunet_env):
    fails_cleanly([script("nnUNetv2_ssl_pretrain"), "-d", "555", "-device", "cpu"],
                   "dataset '555' was not found", "Fix:")


def test_not_preprocessed_names_the_command(nnunet_env):
    write_synthetic_dataset(nnunet_env["nnUNet_raw"], 321, n_cases=2)
    fails_cleanly([script("nnUNetv2_ssl_pretrain"), "-d", "321", "-device", "cpu"],
                   "no plans 'nnUNetPlans' for Dataset321_Synthetic", "nnUNetv2_plan_and_preprocess -d 321")


def test_unknown_method(nnunet_env):
    fails_cleanly([script("nnUNetv2_ssl_pretrain"), "-d", "1", "-m", "no_such_method", "-device", "cpu"],
                   "unknown method(s) ['no_such_method']", "pcl")


def test_throughput_refuses_unknown_dataset_and_method(nnunet_env):
    fails_cleanly([script("nnUNetv2_ssl_throughput"), "-d", "555", "-device", "cpu"],
                   "dataset '555' was not found", "Fix:")
    fails_cleanly([script("nnUNetv2_ssl_throughput"), "-d", "1", "-m", "no_such_method", "-device", "cpu"],
                   "unknown method(s) ['no_such_method']", "pcl")
    fails_cleanly([script("nnUNetv2_ssl_throughput"), "-d", "1", "--iterations", "0", "-device", "cpu"],
                   "need at least 1 timed iteration", "--iterations 20")


def test_unknown_plans_lists_available(pretrained):
    fails_cleanly([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", "nnUNetPlans_gpu",
                    "-device", "cpu"], "no plans 'nnUNetPlans_gpu'", "nnUNetPlans_cpu")


def test_existing_pretraining_is_not_overwritten(pretrained):
    final = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    before = os.path.getmtime(final)
    fails_cleanly([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu"],
                   "a finished pretraining already exists", "Nothing was overwritten")
    assert os.path.getmtime(final) == before


def _train(trainer: str, plans: str, extra_env: dict | None = None) -> list:
    return [script("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-p", plans, "-tr", trainer,
            "-device", "cpu"], {**os.environ, **(extra_env or {})}


def test_ssl_init_without_pretraining_says_how_to_make_one(pretrained):
    args, env = _train("SSLInitTrainer_tiny", "nnUNetPlans")  # only nnUNetPlans_cpu was pretrained
    fails_cleanly(args, "no pretrained encoder for Dataset987_Synthetic / nnUNetPlans / 3d_fullres",
                   "nnUNetv2_ssl_pretrain -d Dataset987_Synthetic -c 3d_fullres -p nnUNetPlans", env=env)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_bad_checkpoint_file(pretrained, tmp_path, damage):
    path = tmp_path / "checkpoint_final.pth"
    if damage == "truncated":
        shutil.copy(os.path.join(pretrained["folder"], "checkpoint_final.pth"), path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    args, env = _train("SSLInitTrainer_tiny", PLANS, {"nnUNet_ssl_weights": str(path)})
    expected = "no pretrained checkpoint at" if damage == "missing" else "is not a readable checkpoint"
    fails_cleanly(args, expected, f"nnUNet_ssl_weights={path}", "Fix: point nnUNet_ssl_weights at", env=env)


def test_architecture_mismatch_lists_offending_keys(pretrained):
    weights = os.path.join(pretrained["folder"], "checkpoint_final.pth")  # CPU plans: a quarter of the features
    args, env = _train("SSLInitTrainer_tiny", "nnUNetPlans", {"nnUNet_ssl_weights": weights})
    # refused on the metadata, before nnU-Net writes anything: the weights' shapes are not needed to tell
    fails_cleanly(args, "pretrained with another architecture", "features_per_stage: [8, 16, 32, 64] -> [32, 64, "
                  "128, 256]", env=env)


def test_ssl_init_refuses_a_pretraining_without_learning_and_names_the_override(pretrained, tmp_path):
    import torch
    checkpoint = torch.load(os.path.join(pretrained["folder"], "checkpoint_final.pth"), weights_only=True)
    checkpoint["meta"]["health"] = {"verdict": "no_learning", "reason": "loss 4.880 = 0.995 x its collapse value 4.906"}
    path = tmp_path / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    args, env = _train("SSLInitTrainer_tiny", PLANS, {"nnUNet_ssl_weights": str(path)})
    env.pop("nnUNet_ssl_allow_unhealthy", None)  # the session fixture allows its 6-step pretraining
    fails_cleanly(args, "shows no learning: loss 4.880 = 0.995 x its collapse value 4.906",
                  "nnUNet_ssl_allow_unhealthy=1", env=env)


def test_health_probe_refuses_a_checkpoint_of_another_method(pretrained):
    import sys
    health = [sys.executable, "-c", "from nnunet_ssl.cli.health import health_entry; health_entry()"]
    weights = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    fails_cleanly([*health, "-d", str(DATASET_ID), "-p", PLANS, "-m", "simclr",
                   "--checkpoint", weights], "was pretrained with 'pcl', not 'simclr'", "pass -m pcl")
