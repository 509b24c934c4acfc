"""nnUNetv2_ssl_health: label-free health of a contrastive method on a dataset's preprocessed data."""
import argparse

from nnunet_ssl.cli import parse_assignments, run_cli
from nnunet_ssl.integration.device import DEVICES


def health_entry() -> None:
    from nnunet_ssl.integration import health_probe as module
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_health", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-m", dest="method", default="pcl")
    parser.add_argument("-device", default="cpu", choices=DEVICES, help="default cpu")
    parser.add_argument("--checkpoint", help="a checkpoint_final.pth to compare with the random init")
    parser.add_argument("--batches", type=int, default=8, help="batches averaged per setting (default 8)")
    parser.add_argument("--batch-size", type=int, help="default 16 (the pretraining default)")
    parser.add_argument("--patch-size", type=int, nargs="+", help="default: the checkpoint's, else the method's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. --set readout=prenorm (default: the checkpoint's options)")
    parser.add_argument("-o", dest="output", help="also write the result to this JSON file")
    args = parser.parse_args()

    def main():
        import os

        from nnunet_ssl.atomic_io import atomic_save_json, output_file_problem
        from nnunet_ssl.errors import SSLUserError
        from nnunet_ssl.integration.device import select_device
        if args.checkpoint and os.path.isdir(args.checkpoint):
            raise SSLUserError(f"--checkpoint {args.checkpoint} is a folder.",
                               "pass the checkpoint file, e.g. --checkpoint "
                               + os.path.join(args.checkpoint, "checkpoint_final.pth"))
        if args.output and output_file_problem(args.output):  # before minutes of probing, not after
            raise SSLUserError(f"-o: {output_file_problem(args.output)}.", "pass -o a JSON file name")
        result = module.probe(args.dataset, args.method, args.configuration, args.plans, args.checkpoint,
                              parse_assignments(args.set), args.batches, args.batch_size, args.patch_size,
                              select_device(args.device), args.seed)
        print(module.format_table(result))
        if args.output:
            atomic_save_json(result, args.output, indent=1)

    run_cli(main)
