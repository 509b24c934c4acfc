"""CPU-sized plans: patch shrinking and the plans rewrite."""
import copy
import math

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
    assert flat["patch_size"] == [40, 32]
    assert math.prod(flat["patch_size"]) <= BUDGET_2D
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
    assert math.prod(two_d["patch_size"]) <= int(round((16 * 16 * 16) ** (2 / 3)))


def test_make_cpu_plans_inherited_strides_set_the_divisors():
    plans = hand_written_plans()
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"] = [
        [1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # divisors [4, 8, 8]
    plans["configurations"]["3d_lowres"]["patch_size"] = [20, 64, 64]
    low = make_cpu_plans(plans, "p")["configurations"]["3d_lowres"]
    assert low["patch_size"][0] % 4 == 0 and low["patch_size"][1] % 8 == 0 and low["patch_size"][2] % 8 == 0
    assert math.prod(low["patch_size"]) <= BUDGET_3D
