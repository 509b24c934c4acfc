"""nnUNetv2_ssl_demo: argument parsing for the demo (nnunet_ssl/benchmark/demo.py runs it)."""
import argparse
import sys

from nnunet_ssl.benchmark import demo
from nnunet_ssl.cli import run_cli
from nnunet_ssl.integration.device import DEVICES


def demo_entry() -> None:
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_demo", description=demo.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help=f"working folder (default: the nnUNet_* folders if all three are set, "
                                          f"else {demo.DEFAULT_WORKDIR})")
    parser.add_argument("-device", default="cpu", choices=DEVICES)
    args = parser.parse_args()
    spec = demo.DemoSpec(args.workdir, args.device)
    run_cli(lambda: demo.run_demo(spec))
    sys.exit(0)
