"""CPU-sized plans: patch shrinking and the plans rewrite."""
import copy
import json
import math
import os
import sys

import numpy as np
import pytest

from nnunet_ssl.integration.cpu_plans import CPU_PLANS_SUFFIX, make_cpu_plans, shrink_patch

BUDGET_3D = 32 * 48 * 32
BUDGET_2D = int(round(BUDGET_3D ** (2 / 3)))  # 1342


# --- shrink_patch ----------------------------------------------------------------------------------------------

def test_shrink_patch_hippocampus_example():
    assert shrink_patch([40, 56, 40], [8, 8, 8], 32 * 48 * 32) == [32, 48, 32]


@pytest.mark.parametrize("patch,divisors,budget,expected", [
    ([48, 64, 48], [8, 8, 8], BUDGET_3D, [32, 48, 32]),  # factor (1/3)^(1/3): 33.3, 44.4, 33.3 -> nearest multiples
    ([56, 40], [8, 8], BUDGET_2D, [40, 32]),
    ([20, 320, 256], [4, 32, 32], BUDGET_3D, [8, 96, 64]),
    ([32, 48, 32], [8, 8, 8], BUDGET_3D, [32, 48, 32]),  # already within budget: unchanged
    ([16, 16, 16], [8, 8, 8], BUDGET_3D, [16, 16, 16]),
])
def test_shrink_patch_hand_computed(patch, divisors, budget, expected):
    assert shrink_patch(patch, divisors, budget) == expected


@pytest.mark.parametrize("patch,divisors,budget", [
    ([128, 128, 128], [32, 32, 32], BUDGET_3D),
    ([80, 192, 160], [16, 32, 32], BUDGET_3D),
    ([64, 128, 128], [4, 32, 32], BUDGET_3D),
    ([28, 256, 256], [4, 64, 64], 200_000),
    ([512, 512], [64, 64], 64 * 64 * 2),
    ([320, 256], [32, 32], BUDGET_2D),
    ([40, 56, 40], [8, 8, 8], 8 * 8 * 8),  # budget exactly one divisor cube
    ([96, 8, 96], [8, 8, 8], 10_000),
])
def test_shrink_patch_respects_budget_and_divisors(patch, divisors, budget):
    original = list(patch)
    size = shrink_patch(patch, divisors, budget)
    assert patch == original  # not mutated
    assert len(size) == len(patch)
    assert math.prod(size) <= budget
    for s, p, d in zip(size, patch, divisors):
        assert isinstance(s, int)
        assert s % d == 0
        assert d <= s <= p


def test_shrink_patch_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ndim = int(rng.integers(2, 4))
        divisors = [int(d) for d in rng.choice([1, 2, 4, 8, 16, 32], size=ndim)]
        patch = [int(d * rng.integers(1, 12)) for d in divisors]
        budget = int(math.prod(divisors) * rng.integers(1, 200))
        size = shrink_patch(patch, divisors, budget)
        assert math.prod(size) <= budget
        assert all(s % d == 0 and d <= s <= p for s, p, d in zip(size, patch, divisors))
        if math.prod(patch) <= budget:
            assert size == patch


def test_shrink_patch_never_goes_below_the_divisor():
    # the budget cannot be met: the smallest legal patch is returned
    assert shrink_patch([512, 512], [64, 64], BUDGET_2D) == [64, 64]


# --- make_cpu_plans --------------------------------------------------------------------------------------------

def arch(features, strides, conv="torch.nn.modules.conv.Conv3d"):
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": len(features), "features_per_stage": list(features), "conv_op": conv,
                        "kernel_sizes": [[3] * len(strides[0])] * len(features), "strides": strides,
                        "n_conv_per_stage": [2] * len(features), "n_conv_per_stage_decoder": [2] * (len(features) - 1),
                        "conv_bias": True},
        "_kw_requires_import": ["conv_op"],
    }


STRIDES_3D = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
STRIDES_2D = [[1, 1], [2, 2], [2, 2], [2, 2]]


def hand_written_plans() -> dict:
    return {
        "dataset_name": "Dataset004_Hippocampus",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "batch_size": 366,
                "patch_size": [56, 40],
                "architecture": arch([32, 64, 128, 256], STRIDES_2D, "torch.nn.modules.conv.Conv2d"),
            },
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "batch_size": 9,
                "patch_size": [40, 56, 40],
                "spacing": [1.0, 1.0, 1.0],
                "architecture": arch([32, 64, 128, 8], STRIDES_3D),
            },
            "3d_lowres": {
                "inherits_from": "3d_fullres",
                "data_identifier": "nnUNetPlans_3d_lowres",
                "batch_size": 2,
                "patch_size": [48, 64, 48],
                "spacing": [2.0, 2.0, 2.0],
            },
            "3d_cascade_fullres": {
                "inherits_from": "3d_fullres",
                "previous_stage": "3d_lowres",
            },
        },
    }


def test_make_cpu_plans_rewrites_architecture_patch_and_batch():
    plans = hand_written_plans()
    new = make_cpu_plans(plans, "nnUNetPlans" + CPU_PLANS_SUFFIX)
    assert new["plans_name"] == "nnUNetPlans_cpu"
    assert new["dataset_name"] == plans["dataset_name"]
    assert set(new["configurations"]) == set(plans["configurations"])

    full = new["configurations"]["3d_fullres"]
    assert full["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 4]  # 8 // 4 = 2 -> min 4
    assert full["patch_size"] == [32, 48, 32]
    assert full["batch_size"] == 4
    assert full["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert full["spacing"] == [1.0, 1.0, 1.0]
    # everything else in the architecture is kept
    for key, value in plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].items():
        if key != "features_per_stage":
            assert full["architecture"]["arch_kwargs"][key] == value
    assert full["architecture"]["network_class_name"].endswith("PlainConvUNet")

    flat = new["configurations"]["2d"]
    assert flat["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64]
    assert flat["patch_size"] == [56, 40]  # 2240 voxels: within the budget, nnU-Net's own patch stays
    assert flat["batch_size"] == 4
    assert flat["data_identifier"] == "nnUNetPlans_2d"

    low = new["configurations"]["3d_lowres"]
    assert "architecture" not in low  # still inherits the (now CPU-sized) 3d_fullres architecture
    assert low["inherits_from"] == "3d_fullres"
    assert low["patch_size"] == [32, 48, 32]  # multiples of the inherited total stride 8
    assert low["batch_size"] == 4
    assert low["data_identifier"] == "nnUNetPlans_3d_lowres"
    assert low["spacing"] == [2.0, 2.0, 2.0]

    cascade = new["configurations"]["3d_cascade_fullres"]
    assert cascade == plans["configurations"]["3d_cascade_fullres"]


def test_make_cpu_plans_does_not_mutate_its_input():
    plans = hand_written_plans()
    snapshot = copy.deepcopy(plans)
    new = make_cpu_plans(plans, "nnUNetPlans_cpu")
    assert plans == snapshot
    # and shares no mutable state with it
    new["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"][0][0] = 99
    assert plans == snapshot


def test_make_cpu_plans_options():
    new = make_cpu_plans(hand_written_plans(), "small", features_divisor=2, batch_size=1,
                         max_patch_voxels=16 * 16 * 16)
    full = new["configurations"]["3d_fullres"]
    assert full["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64, 4]
    assert full["batch_size"] == 1
    assert math.prod(full["patch_size"]) <= 16 * 16 * 16
    assert all(s % 8 == 0 for s in full["patch_size"])
    two_d = new["configurations"]["2d"]
    assert two_d["patch_size"] == [56, 40]  # 2240 voxels, within the budget of 4096
    tiny = make_cpu_plans(hand_written_plans(), "smaller", max_patch_voxels=1000)["configurations"]["2d"]
    assert tiny["patch_size"] == [40, 24]  # factor (1000/2240)^(1/2): 37.4, 26.7 -> nearest multiples of 8


def test_make_cpu_plans_inherited_strides_set_the_divisors():
    plans = hand_written_plans()
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"] = [
        [1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # divisors [4, 8, 8]
    plans["configurations"]["3d_lowres"]["patch_size"] = [20, 64, 64]
    low = make_cpu_plans(plans, "p")["configurations"]["3d_lowres"]
    assert low["patch_size"][0] % 4 == 0 and low["patch_size"][1] % 8 == 0 and low["patch_size"][2] % 8 == 0
    assert math.prod(low["patch_size"]) <= BUDGET_3D


# --- 2d gets the 3d voxel budget (issue 14, item 5) ---------------------------------------------------------------

SLICES_PLANS = os.path.join(os.path.dirname(__file__), "data", "nnUNetPlans_256x216.json")


def slices_plans() -> dict:
    """What nnU-Net 2.8.1's ExperimentPlanner writes for a cine-like fingerprint: 20 cases of
    10x256x216 voxels at 10x1.5625x1.5625 mm (2d: patch 256x224, five 2x2 poolings)."""
    with open(SLICES_PLANS) as f:
        return json.load(f)


def test_2d_on_256x216_slices_gets_about_the_3d_voxel_budget_not_the_3d_edge_length():
    plans = slices_plans()
    assert plans["configurations"]["2d"]["patch_size"] == [256, 224]
    new = make_cpu_plans(plans, "nnUNetPlans_cpu")["configurations"]
    flat, full = new["2d"], new["3d_fullres"]
    # before: the budget 1342 (= 49152^(2/3)) gave 32x32; now the same voxel budget as 3d
    assert flat["patch_size"] == [224, 192]
    assert BUDGET_3D * 0.75 <= math.prod(flat["patch_size"]) <= BUDGET_3D
    assert [s % 32 for s in flat["patch_size"]] == [0, 0]  # 2^5 poolings per axis
    assert full["patch_size"] == [4, 128, 96]
    assert math.prod(full["patch_size"]) <= BUDGET_3D
    assert [s % d for s, d in zip(full["patch_size"], [2, 32, 32])] == [0, 0, 0]


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_the_cpu_patch_passes_through_the_planned_network(configuration, single_torch_thread):
    """nnU-Net's own network from the CPU plans accepts the patch: every pooling divides it."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plans_manager = PlansManager(make_cpu_plans(slices_plans(), "nnUNetPlans_cpu"))
    config = plans_manager.get_configuration(configuration)
    network = nnUNetTrainer.build_network_architecture(plans_manager, config, 1, 4, enable_deep_supervision=False)
    with torch.no_grad():
        out = network(torch.zeros(1, 1, *config.patch_size))
    assert tuple(out.shape) == (1, 4, *config.patch_size)


def test_plan_cpu_command_writes_the_2d_patch_and_refuses_to_overwrite_older_plans(nnunet_env, monkeypatch, capsys):
    from nnunet_ssl.cli.plan_cpu import plan_cpu_entry
    folder = os.path.join(nnunet_env["nnUNet_preprocessed"], "Dataset777_Slices")
    os.makedirs(folder)
    with open(os.path.join(folder, "nnUNetPlans.json"), "w") as f:
        json.dump(slices_plans(), f)

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["nnUNetv2_ssl_plan_cpu", "-d", "Dataset777_Slices", *args])
        try:
            plan_cpu_entry()
            code = 0
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = run()
    assert code == 0, out
    with open(os.path.join(folder, "nnUNetPlans_cpu.json")) as f:
        written = json.load(f)
    assert written["configurations"]["2d"]["patch_size"] == [224, 192]
    assert "2d: patch [224, 192]" in out
    # plans an older version wrote (2d 32x32) are the user's: kept, with the way out named
    written["configurations"]["2d"]["patch_size"] = [32, 32]
    with open(os.path.join(folder, "nnUNetPlans_cpu.json"), "w") as f:
        json.dump(written, f)
    code, out = run()
    assert code == 2 and "was not overwritten" in out and "--overwrite" in out and "Traceback" not in out
    with open(os.path.join(folder, "nnUNetPlans_cpu.json")) as f:
        assert json.load(f)["configurations"]["2d"]["patch_size"] == [32, 32]
    code, out = run("--max-patch-voxels", "0")
    assert code == 2 and "--max-patch-voxels" in out and "Traceback" not in out
