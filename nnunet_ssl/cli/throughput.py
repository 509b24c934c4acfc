"""nnUNetv2_ssl_throughput: pretraining samples/s against nnU-Net's supervised step, in one run."""
import argparse

from nnunet_ssl.cli import run_cli
from nnunet_ssl.integration.device import DEVICES


def throughput_entry() -> None:
    from nnunet_ssl.benchmark import throughput as module
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_throughput", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-m", dest="methods", nargs="+", default=["pcl"])
    parser.add_argument("-device", default="cuda", choices=DEVICES)
    parser.add_argument("--batch-size", type=int, help="default: the plans' batch size")
    parser.add_argument("--patch-size", type=int, nargs="+", help="default: the method's pretraining patch")
    parser.add_argument("--iterations", type=int, default=20, help="timed steps per side (default 20)")
    parser.add_argument("-o", dest="output", help="also write the rows to this JSON file")
    args = parser.parse_args()

    def main():
        from nnunet_ssl.atomic_io import atomic_save_json, output_file_problem
        from nnunet_ssl.errors import SSLUserError
        from nnunet_ssl.integration.device import select_device
        if args.output and output_file_problem(args.output):  # before minutes of measuring, not after
            raise SSLUserError(f"-o: {output_file_problem(args.output)}.", "pass -o a JSON file name")
        rows = module.throughput(args.dataset, args.methods, select_device(args.device), args.configuration,
                                 args.plans, args.batch_size, args.patch_size, args.iterations)
        if args.output:
            atomic_save_json(rows, args.output)

    run_cli(main)
