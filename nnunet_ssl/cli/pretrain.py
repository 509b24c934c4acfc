"""nnUNetv2_ssl_pretrain: pretrain the planned network (encoder, or the whole U-Net for reconstruction methods) of a dataset, self-supervised."""
import argparse

from nnunet_ssl.cli import parse_assignments, run_cli
from nnunet_ssl.integration.device import DEVICES
from nnunet_ssl.integration.pretraining import PretrainSpec, pretrain
from nnunet_ssl.methods import list_methods


def pretrain_entry() -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_ssl_pretrain",
        description="Pretrain the encoder nnU-Net planned for a dataset, on its preprocessed data. The result "
                    "goes to $nnUNet_results/DatasetXXX/SSLPretrain_<method>__<plans>__<configuration>/.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name, e.g. 501")
    parser.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-m", dest="method", default="pcl", help=f"method, one of {list_methods()} (default pcl)")
    parser.add_argument("-device", default="cuda", choices=DEVICES, help="default cuda")
    parser.add_argument("--c", dest="resume", action="store_true", help="continue from checkpoint_latest.pth")
    parser.add_argument("--recipe", help="named recipe from pretraining/recipes, or a JSON file")
    parser.add_argument("--epochs", type=int, dest="num_epochs")
    parser.add_argument("--iterations-per-epoch", type=int, dest="iterations_per_epoch")
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--lr", type=float, dest="initial_lr")
    parser.add_argument("--patch-size", type=int, nargs="+", dest="patch_size")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--conv-weight-scale", dest="conv_weight_scale", metavar="{he,free}",
                        help="he (default): keep every encoder conv that feeds InstanceNorm at nnU-Net's He-init std "
                             "after each step (same function, no weight growth); free: plain SGD")
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
    run_cli(lambda: pretrain(PretrainSpec(
        args.dataset, args.configuration, args.plans, args.method, args.device, args.resume, args.recipe,
        parse_assignments(args.set), schedule, tuple(args.unlabeled), args.images_ts, args.allow_missing_cases)))
