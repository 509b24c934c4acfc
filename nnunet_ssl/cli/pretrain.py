"""nnUNetv2_ssl_pretrain: pretrain the planned network (encoder, or the whole U-Net for reconstruction methods) of a dataset, self-supervised."""
import argparse
import json
import os
from importlib import resources

from nnunet_ssl.cli import run_cli
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.device import select_device
from nnunet_ssl.methods import get_method, list_methods, require_methods


def load_recipe(name_or_path: str) -> dict:
    """A recipe from pretraining/recipes (by name) or a JSON file path."""
    if os.path.isfile(name_or_path):
        with open(name_or_path) as f:
            return json.load(f)
    folder = resources.files("nnunet_ssl.recipes") / "recipes"
    candidate = folder / f"{name_or_path}.json"
    if not candidate.is_file():
        names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
        raise SSLUserError(f"unknown recipe {name_or_path!r}.", f"use one of {names} or a path to a JSON file")
    return json.loads(candidate.read_text())


def _parse_assignments(items: list[str]) -> dict:
    values = {}
    for item in items:
        if "=" not in item:
            raise SSLUserError(f"--set expects key=value, got {item!r}.", "for example --set theta=0.05")
        key, raw = item.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def pretrain(dataset: str, configuration: str = "3d_fullres", plans: str = "nnUNetPlans", method: str = "pcl",
             device: str = "cuda", resume: bool = False, recipe: str | None = None,
             method_overrides: dict | None = None, schedule_overrides: dict | None = None,
             unlabeled_folders: list[str] = (), include_images_ts: bool = False) -> str:
    """Pretrain and return the path of checkpoint_final.pth. All errors a user can fix are SSLUserError.

    ``unlabeled_folders`` (raw images named like nnU-Net's) and, with ``include_images_ts``, the
    dataset's imagesTs are preprocessed with the same plans and pretrained on with the labeled cases;
    the checkpoint's ``case_ids`` lists them as ``unlabeled__<folder name>__<case>``."""
    from nnunet_ssl.integration import locations
    from nnunet_ssl.integration.dataset import open_preprocessed, resolve_dataset_name
    from nnunet_ssl.integration.pretrainer import Pretrainer, PretrainSchedule

    require_methods([method])
    recipe_values = load_recipe(recipe) if recipe else {}
    if recipe_values.get("method", method) != method:
        raise SSLUserError(f"recipe {recipe!r} is for method {recipe_values['method']!r}, not {method!r}.",
                           f"pass -m {recipe_values['method']}")
    method_config = {**recipe_values.get("method_config", {}), **(method_overrides or {})}
    # the method's own starting point (e.g. nnU-Net's optimiser for reconstruction), then recipe, then options
    schedule_values = {**get_method(method).schedule_defaults, **recipe_values.get("schedule", {}),
                       **(schedule_overrides or {})}
    try:
        schedule = PretrainSchedule.from_dict(schedule_values)
    except (TypeError, ValueError) as e:
        raise SSLUserError(str(e), "fix the schedule options") from None
    torch_device = select_device(device)
    name = resolve_dataset_name(dataset)
    folder = locations.pretraining_folder(name, method, plans, configuration)
    final = os.path.join(folder, locations.FINAL)
    # checked before opening the data, so a refused run does not preprocess unlabeled cases first
    if os.path.isfile(final) and not resume:
        raise SSLUserError(f"a finished pretraining already exists: {final}. Nothing was overwritten.",
                           "use it (nnUNetv2_train ... -tr SSLInitTrainer), or move that folder away to pretrain again")
    if os.path.isfile(os.path.join(folder, locations.LATEST)) and not resume:
        raise SSLUserError(f"an unfinished pretraining exists in {folder}.",
                           "add --c to continue it, or move that folder away to start over")
    data = open_preprocessed(name, configuration, plans, list(unlabeled_folders or ()), include_images_ts)
    trainer = Pretrainer(data, method, method_config, schedule, torch_device, folder)
    if resume:
        if os.path.isfile(final):
            print(f"already finished: {final}")
            return final
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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a method hyperparameter, e.g. --set theta=0.05 (repeatable)")
    args = parser.parse_args()
    schedule = {k: getattr(args, k) for k in ("num_epochs", "iterations_per_epoch", "batch_size", "initial_lr",
                                              "patch_size", "seed", "conv_weight_scale")
                if getattr(args, k) is not None}
    run_cli(lambda: pretrain(args.dataset, args.configuration, args.plans, args.method, args.device, args.resume,
                             args.recipe, _parse_assignments(args.set), schedule,
                             unlabeled_folders=args.unlabeled, include_images_ts=args.images_ts))
