"""python -m nnunet_ssl.cli.semi_supervised_cost: semi-supervised trainers' time per iteration and peak memory
against plain fine-tuning (benchmark/mean_teacher_cost.py)."""
import argparse
import json

from nnunet_ssl.cli import run_cli
from nnunet_ssl.integration.device import DEVICES


def semi_supervised_cost_entry() -> None:
    import torch

    from nnunet_ssl.benchmark import mean_teacher_cost as module
    parser = argparse.ArgumentParser(prog="python -m nnunet_ssl.cli.semi_supervised_cost", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-f", dest="fold", type=int, required=True, help="a fold that leaves unlabeled cases")
    parser.add_argument("--trainers", nargs="+", default=["SSLMeanTeacherTrainer"], metavar="NAME",
                        help="semi-supervised trainers to compare with SSLScratchTrainer (registry names without a "
                             "length)")
    parser.add_argument("--iterations", type=int, default=40, help="timed steps per trainer")
    parser.add_argument("--block", type=int, default=10, help="steps per trainer before switching")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("-device", default="cpu", choices=DEVICES)
    args = parser.parse_args()
    run_cli(lambda: print(json.dumps(module.semi_supervised_cost(
        args.dataset, args.fold, torch.device(args.device), args.configuration, args.plans, args.iterations,
        args.block, args.warmup, tuple(args.trainers)), indent=1)))


if __name__ == "__main__":
    semi_supervised_cost_entry()
