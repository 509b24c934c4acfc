"""nnUNetv2_ssl_export: copy a fine-tuned model for stock nnU-Net (integration/export.py)."""
import argparse

from nnunet_ssl.cli import run_cli


def export_entry() -> None:
    from nnunet_ssl.integration import export as module
    parser = argparse.ArgumentParser(prog="nnUNetv2_ssl_export", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-tr", dest="trainer", default="SSLInitTrainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-f", dest="folds", nargs="+", help="folds to export (default: every finished fold)")
    parser.add_argument("-o", dest="output", required=True, help="results folder to export into (an nnUNet_results)")
    args = parser.parse_args()
    run_cli(lambda: module.export(args.dataset, args.configuration, args.trainer, args.plans, args.output, args.folds))
