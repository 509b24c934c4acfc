"""nnUNetv2_ssl_plan_cpu: write a CPU-sized plans variant next to existing nnU-Net plans."""
import argparse
import math
from os.path import isfile, join

from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_ssl.atomic_io import atomic_save_json
from nnunet_ssl.cli import run_cli
from nnunet_ssl.errors import SSLUserError


def plan_cpu(dataset: str, source_plans: str = "nnUNetPlans", target_plans: str | None = None,
             features_divisor: int = 4, batch_size: int = 4, max_patch_voxels: int = 32 * 48 * 32,
             overwrite: bool = False) -> str:
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_ssl.data.positions import smallest_trainable_patch
    from nnunet_ssl.integration.cpu_plans import CPU_PLANS_SUFFIX, make_cpu_plans, too_small_patches
    from nnunet_ssl.integration.dataset import resolve_dataset_name

    for option, value in (("--features-divisor", features_divisor), ("--batch-size", batch_size),
                          ("--max-patch-voxels", max_patch_voxels)):
        if value < 1:
            raise SSLUserError(f"{option} {value} is not a positive number.", f"pass {option} of at least 1")
    name = resolve_dataset_name(dataset)
    source = join(str(nnUNet_preprocessed), name, source_plans + ".json")
    if not isfile(source):
        raise SSLUserError(f"no plans {source} to derive from.", f"nnUNetv2_plan_and_preprocess -d {dataset}")
    target_plans = target_plans or source_plans + CPU_PLANS_SUFFIX
    if target_plans == source_plans:  # --overwrite would replace the plans it derives from
        raise SSLUserError(f"-o {target_plans} names the plans it is derived from (-p {source_plans}).",
                           f"pass -o another name, e.g. {source_plans}{CPU_PLANS_SUFFIX}")
    target = join(str(nnUNet_preprocessed), name, target_plans + ".json")
    plans = make_cpu_plans(load_json(source), target_plans, features_divisor, batch_size, max_patch_voxels)
    too_small = too_small_patches(plans)
    if too_small:  # before anything is written: nnUNetv2_train and pretraining would crash on the first step
        config, _patch, _divisors, problem = too_small[0]
        needed = max(math.prod(smallest_trainable_patch(divisors)) for _, _, divisors, _ in too_small)
        raise SSLUserError(f"--max-patch-voxels {max_patch_voxels} gives {config} a patch the network cannot train on: "
                           f"{problem}; nothing was written.",
                           f"pass --max-patch-voxels {needed} or more")
    if isfile(target) and not overwrite:
        if load_json(target) == plans:
            print(f"{target} is up to date")
            return target
        raise SSLUserError(f"{target} exists and differs from what these options give; it was not overwritten.",
                           "pass --overwrite, or -o another plans name")
    atomic_save_json(plans, target)
    for c, cfg in plans["configurations"].items():
        if "patch_size" in cfg:
            feats = cfg.get("architecture", {}).get("arch_kwargs", {}).get("features_per_stage", "inherited")
            print(f"{target_plans} {c}: patch {cfg['patch_size']}, batch {cfg.get('batch_size')}, features {feats}")
    print(f"wrote {target}\nuse it with: nnUNetv2_train {dataset} 3d_fullres FOLD -p {target_plans} -device cpu")
    return target


def plan_cpu_entry() -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_plan_cpu",
                                     description="Derive CPU-sized plans (same preprocessed data) from nnU-Net plans.")
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-p", dest="source_plans", default="nnUNetPlans")
    parser.add_argument("-o", dest="target_plans", help="name of the new plans (default <source>_cpu)")
    parser.add_argument("--features-divisor", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-patch-voxels", type=int, default=32 * 48 * 32,
                        help="voxels per patch, for 2d and 3d alike (default 32*48*32 = 49152)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    run_cli(lambda: plan_cpu(args.dataset, args.source_plans, args.target_plans, args.features_divisor,
                             args.batch_size, args.max_patch_voxels, args.overwrite))
