"""A CPU-sized variant of nnU-Net plans: fewer features, small batch, small patch, same data.

The variant keeps every configuration's ``data_identifier``, so it trains on the data nnU-Net
already preprocessed and needs no re-preprocessing; select it with nnU-Net's ``-p`` flag.
Measured on the hippocampus data (2 CPU cores): features 8-16-32-64, batch 4, patch 32x48x32
take about 0.25 s per training iteration, against about 10 s for the stock plans.

Every configuration, 2d included, gets the same voxel budget (default 32*48*32 = 49152): a 2d
patch with the 3d edge length instead (about 1342 voxels) gave 256x216 slices a 32x32 patch, too
little context to segment anything [assumption: equal voxels per patch is a fair CPU budget; a 2d
convolution costs about a third of a 3d one per voxel, so a 2d step stays cheaper].
"""
import copy
import math

import numpy as np

from nnunet_ssl.data.positions import MIN_BOTTLENECK_VOXELS, bottleneck_shape, too_small_patch_problem

CPU_PLANS_SUFFIX = "_cpu"


def shrink_patch(patch_size: list[int], divisors: list[int], max_voxels: int) -> list[int]:
    """Scale the patch down isotropically to about ``max_voxels``, each axis a multiple of its
    divisor (rounded to nearest), then shorten the longest axis until the budget holds. Never
    grows an axis beyond the given patch, never goes below one divisor; where rounding left one
    divisor on every axis and the budget allows, one axis gets a second (the network cannot train on
    a one-voxel bottleneck: data/positions.py MIN_BOTTLENECK_VOXELS)."""
    factor = min(1.0, (max_voxels / math.prod(patch_size)) ** (1 / len(patch_size)))
    size = [max(d, int(round(p * factor / d)) * d) for p, d in zip(patch_size, divisors)]
    while math.prod(size) > max_voxels:
        candidates = [i for i in range(len(size)) if size[i] > divisors[i]]
        if not candidates:
            break
        i = max(candidates, key=lambda j: size[j])
        size[i] -= divisors[i]
    if math.prod(bottleneck_shape(size, divisors)) < MIN_BOTTLENECK_VOXELS:
        room = [i for i in range(len(size)) if size[i] + divisors[i] <= patch_size[i]
                and math.prod(size) // size[i] * (size[i] + divisors[i]) <= max_voxels]
        if room:
            i = max(room, key=lambda j: patch_size[j])
            size[i] += divisors[i]
    return size


def too_small_patches(plans: dict) -> list[tuple[str, list[int], list[int], str]]:
    """(configuration, patch, total strides, why) for each configuration of ``plans`` whose network cannot train on its
    patch (data/positions.py too_small_patch_problem)."""
    found = []
    for name, config in plans["configurations"].items():
        if "patch_size" in config:
            divisors = pooling_divisors((config.get("architecture") or _inherited_arch(plans, config))
                                        ["arch_kwargs"]["strides"])
            problem = too_small_patch_problem(config["patch_size"], divisors)
            if problem:
                found.append((name, list(config["patch_size"]), divisors, problem))
    return found


def make_cpu_plans(plans: dict, plans_name: str, features_divisor: int = 4, batch_size: int = 4,
                   max_patch_voxels: int = 32 * 48 * 32) -> dict:
    """Return a copy of ``plans`` named ``plans_name`` with CPU-sized architectures."""
    new = copy.deepcopy(plans)
    new["plans_name"] = plans_name
    for name, config in new["configurations"].items():
        arch = config.get("architecture")
        if arch is not None:
            kwargs = arch["arch_kwargs"]
            kwargs["features_per_stage"] = [max(4, f // features_divisor) for f in kwargs["features_per_stage"]]
        if "patch_size" in config:
            strides = (arch or _inherited_arch(new, config))["arch_kwargs"]["strides"]
            config["patch_size"] = shrink_patch(list(config["patch_size"]), pooling_divisors(strides),
                                                max_patch_voxels)
        if "batch_size" in config:
            config["batch_size"] = batch_size
    return new


def pooling_divisors(strides: list[list[int]] | list[int]) -> list[int]:
    """What each patch axis must be divisible by: the product of the network's strides along it
    (nnU-Net's ``shape_must_be_divisible_by``, 2^poolings on an axis pooled by 2 every stage)."""
    return [int(d) for d in np.prod(np.atleast_2d(strides), axis=0)]


def _inherited_arch(plans: dict, config: dict) -> dict:
    while "architecture" not in config:
        config = plans["configurations"][config["inherits_from"]]
    return config["architecture"]
