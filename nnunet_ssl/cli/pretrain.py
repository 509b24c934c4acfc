"""nnUNetv2_ssl_pretrain: pretrain the planned network (encoder, or the whole U-Net for reconstruction methods) of a dataset, self-supervised."""
import argparse
import contextlib
import os

from nnunet_ssl.atomic_io import remove_leftover_temp_files
from nnunet_ssl.cli import parse_assignments, run_cli
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.device import select_device
from nnunet_ssl.methods import get_method, list_methods, require_methods
from nnunet_ssl.methods.recipes import load_recipe


def pretrain(dataset: str, configuration: str = "3d_fullres", plans: str = "nnUNetPlans", method: str = "pcl",
             device: str = "cuda", resume: bool = False, recipe: str | None = None,
             method_overrides: dict | None = None, schedule_overrides: dict | None = None,
             unlabeled_folders: list[str] = (), include_images_ts: bool = False,
             allow_missing_cases: bool = False) -> str:
    """Pretrain and return the path of checkpoint_final.pth. All errors a user can fix are SSLUserError.

    ``unlabeled_folders`` (raw images named like nnU-Net's) and, with ``include_images_ts``, the
    dataset's imagesTs are preprocessed with the same plans and pretrained on with the labeled cases;
    the checkpoint's ``case_ids`` lists them as ``unlabeled__<folder name>__<case>``. Preprocessed cases
    missing against the dataset are refused unless ``allow_missing_cases``."""
    from nnunet_ssl.blocks.distributed import rank
    from nnunet_ssl.integration import locations
    from nnunet_ssl.integration.checkpoint import finished_checkpoint
    from nnunet_ssl.integration.dataset import open_preprocessed, resolve_dataset_name, with_unlabeled
    from nnunet_ssl.integration.folder_lock import FolderLock
    from nnunet_ssl.integration.pretrainer import (Pretrainer, PretrainSchedule, check_patch_request,
                                                   continuation_conflict)

    require_methods([method])
    recipe_values = load_recipe(recipe) if recipe else {}
    if recipe_values.get("method", method) != method:
        raise SSLUserError(f"recipe {recipe!r} is for method {recipe_values['method']!r}, not {method!r}.",
                           f"pass -m {recipe_values['method']}")
    method_config = {**recipe_values.get("method_config", {}), **(method_overrides or {})}
    # the method's own starting point (e.g. nnU-Net's optimiser for reconstruction), then recipe, then options
    schedule_values = {**get_method(method).schedule_defaults, **recipe_values.get("schedule", {}),
                       **(schedule_overrides or {})}
    try:  # both validate themselves when built (SSLUserError): before any data is opened
        schedule = PretrainSchedule.from_dict(schedule_values)
        method_values = get_method(method).config_class.from_dict(method_config).to_dict()
    except (TypeError, ValueError) as e:
        raise SSLUserError(str(e), "fix the options (--set, the schedule options or the recipe)") from None
    torch_device = select_device(device)
    name = resolve_dataset_name(dataset)
    folder = locations.pretraining_folder(name, method, plans, configuration)
    # one writer per folder; only the main process writes under torchrun
    with FolderLock(folder, "nnUNetv2_ssl_pretrain") if rank() == 0 else contextlib.nullcontext():
        removed = remove_leftover_temp_files(folder) if rank() == 0 else []
        if removed:
            print(f"removed {len(removed)} temporary file(s) an interrupted write left in {folder}: {removed}")
        # checked before opening the data, so a refused run does not preprocess unlabeled cases first
        final = os.path.join(folder, locations.FINAL)
        finished = finished_checkpoint(final, folder, resume) if os.path.isfile(final) else None
        if finished is not None and not resume:
            raise SSLUserError(f"a finished pretraining already exists: {final}. Nothing was overwritten.",
                               "use it (nnUNetv2_train ... -tr SSLInitTrainer), or move that folder away to "
                               "pretrain again")
        if finished is None and os.path.isfile(os.path.join(folder, locations.LATEST)) and not resume:
            raise SSLUserError(f"an unfinished pretraining exists in {folder}.",
                               "add --c to continue it, or move that folder away to start over")
        data = open_preprocessed(name, configuration, plans, allow_missing_cases=allow_missing_cases,
                                 allow_missing_option=True)  # the labeled cases: nothing written yet
        if finished is not None:
            # --c with other settings is refused as for an unfinished run: "already finished" would claim them
            asked = with_unlabeled(data, unlabeled_folders, include_images_ts, preprocess=False)
            conflict = continuation_conflict(finished.to_dict(), {"method": method_values,
                                                                  "schedule": schedule.to_dict()},
                                             asked.case_ids, folder, parts=("method", "schedule"))
            if conflict is not None:
                raise conflict
            print(f"already finished: {final}")
            return final
        check_patch_request(data, schedule.patch_size)  # what the plans alone refuse: before unlabeled cases are made
        data = with_unlabeled(data, unlabeled_folders, include_images_ts)
        trainer = Pretrainer(data, method, method_config, schedule, torch_device, folder)
        if resume:
            trainer.resume()
        return trainer.run()


def pretrain_entry() -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_ssl_pretrain",
        description="Pretrain the encoder nnU-Net planned for a dataset, on its preprocessed data. The result "
                    "goes to $nnUNet_results/DatasetXXX/SSLPretrain_<method>__<plans>__<configuration>/.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name, e.g. 501")
    parser.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-m", dest="method", default="pcl", help=f"method, one of {list_methods()} (default pcl)")
    parser.add_argument("-device", default="cuda", choices=["cpu", "cuda", "mps"], help="default cuda")
    parser.add_argument("--c", dest="resume", action="store_true", help="continue from checkpoint_latest.pth")
    parser.add_argument("--recipe", help="named recipe from pretraining/recipes, or a JSON file")
    parser.add_argument("--epochs", type=int, dest="num_epochs")
    parser.add_argument("--iterations-per-epoch", type=int, dest="iterations_per_epoch")
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--lr", type=float, dest="initial_lr")
    parser.add_argument("--patch-size", type=int, nargs="+", dest="patch_size")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--conv-weight-scale", dest="conv_weight_scale", choices=["free", "he"],
                        help="he: keep every encoder conv that feeds InstanceNorm at nnU-Net's He-init std after each "
                             "step (same function, no weight growth); free: plain SGD")
    parser.add_argument("--unlabeled", action="append", default=[], metavar="DIR",
                        help="also pretrain on the raw images in DIR, named like nnU-Net raw images "
                             "(CASE_0000.nii.gz, one file per channel); preprocessed with the same plans into "
                             "$nnUNet_preprocessed/DatasetXXX/nnunet_ssl_unlabeled/ (repeatable)")
    parser.add_argument("--imagesTs", dest="images_ts", action="store_true",
                        help="also pretrain on the dataset's $nnUNet_raw/DatasetXXX/imagesTs (unlabeled)")
    parser.add_argument("--allow-missing-cases", action="store_true",
                        help="pretrain on the complete preprocessed cases when some of the dataset's cases lack "
                             "theirs (refused otherwise: re-run preprocessing)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a method hyperparameter, e.g. --set theta=0.05 (repeatable)")
    args = parser.parse_args()
    schedule = {k: getattr(args, k) for k in ("num_epochs", "iterations_per_epoch", "batch_size", "initial_lr",
                                              "patch_size", "seed", "conv_weight_scale")
                if getattr(args, k) is not None}
    run_cli(lambda: pretrain(args.dataset, args.configuration, args.plans, args.method, args.device, args.resume,
                             args.recipe, parse_assignments(args.set), schedule,
                             unlabeled_folders=args.unlabeled, include_images_ts=args.images_ts,
                             allow_missing_cases=args.allow_missing_cases))
