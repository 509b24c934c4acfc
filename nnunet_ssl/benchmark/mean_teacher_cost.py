"""Extra cost per iteration of mean-teacher fine-tuning against plain fine-tuning, in one process.

Both trainers are built for the same dataset, plans, configuration and fold (SSLScratchTrainer and
SSLMeanTeacherTrainer: same network, batch, patch and schedule) and run nnU-Net's whole training
step, data loading included, in interleaved blocks so that a shared machine's load hits both alike:

    python -m nnunet_ssl.benchmark.mean_teacher_cost -d 501 -p nnUNetPlans_cpu -f 6 --iterations 40 -device cpu

Model folders go to a temporary nnUNet_results, so nothing is left behind.
"""
import argparse
import contextlib
import json
import os
import tempfile
import time

import numpy as np
import torch

from nnunet_ssl.benchmark.throughput import _results_root
from nnunet_ssl.errors import SSLUserError


def _trainer(cls, data, fold: int, device: torch.device):
    plans = {**data.plans_manager.plans, "continue_training": False}  # nnunetv2 2.8's constructor pops it
    trainer = cls(plans, data.configuration_name, fold, data.dataset_json, device)
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    return trainer


def _steps(trainer, n: int, parts: list[dict]) -> list[float]:
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        out = trainer.train_step(next(trainer.dataloader_train))
        seconds.append(time.perf_counter() - start)
        parts.append({k: float(v) for k, v in out.items() if k.endswith("_seconds")})
    return seconds


def mean_teacher_cost(dataset: str, fold: int, device: torch.device, configuration: str = "3d_fullres",
                      plans: str = "nnUNetPlans", iterations: int = 40, block: int = 10, warmup: int = 3) -> dict:
    from nnunet_ssl.integration.dataset import open_preprocessed
    from nnunet_ssl.integration.trainers import SSLScratchTrainer
    from nnunet_ssl.integration.trainers.mean_teacher import SSLMeanTeacherTrainer

    if iterations < 1 or block < 1 or warmup < 0:
        raise SSLUserError(f"need --iterations >= 1, --block >= 1 and --warmup >= 0, got {iterations}, {block}, "
                           f"{warmup}.", "e.g. --iterations 40")
    data = open_preprocessed(dataset, configuration, plans)
    times = {"plain": [], "mean_teacher": []}
    parts = {"plain": [], "mean_teacher": []}  # the mean teacher's own timings of its extra work
    with tempfile.TemporaryDirectory() as scratch, _results_root(scratch), \
            open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        trainers = {"plain": _trainer(SSLScratchTrainer, data, fold, device),
                    "mean_teacher": _trainer(SSLMeanTeacherTrainer, data, fold, device)}
        with open(os.path.join(trainers["mean_teacher"].output_folder, "mean_teacher_cases.json")) as f:
            counts = json.load(f)["counts"]
        for trainer in trainers.values():
            _steps(trainer, warmup, [])
        while len(times["plain"]) < iterations:
            n = min(block, iterations - len(times["plain"]))
            for name, trainer in trainers.items():
                times[name] += _steps(trainer, n, parts[name])
        for trainer in trainers.values():
            for loader in (trainer.dataloader_train, trainer.dataloader_val, getattr(trainer, "dataloader_unlabeled", None)):
                if hasattr(loader, "_finish"):
                    loader._finish()
    plain, teacher = np.median(times["plain"]), np.median(times["mean_teacher"])
    return {"dataset": data.dataset_name, "plans": plans, "configuration": configuration, "fold": fold,
            "cases": counts, "batch_size": int(data.configuration.batch_size),
            "patch_size": [int(s) for s in data.configuration.patch_size], "device": str(device),
            "threads": torch.get_num_threads(), "iterations_each": iterations,
            "plain_median_s": round(float(plain), 4), "mean_teacher_median_s": round(float(teacher), 4),
            "plain_mean_s": round(float(np.mean(times["plain"])), 4),
            "mean_teacher_mean_s": round(float(np.mean(times["mean_teacher"])), 4),
            "ratio_median": round(float(teacher / plain), 3),
            **{f"mean_teacher_{k}_median": round(float(np.median([p[k] for p in parts["mean_teacher"]])), 4)
               for k in ("unlabeled_wait_seconds", "teacher_seconds", "ema_seconds")}}


def main() -> None:
    from nnunet_ssl.cli import run_cli
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-f", dest="fold", type=int, required=True, help="a fold that leaves unlabeled cases")
    parser.add_argument("--iterations", type=int, default=40, help="timed steps per trainer")
    parser.add_argument("--block", type=int, default=10, help="steps per trainer before switching")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda", "mps"])
    args = parser.parse_args()
    run_cli(lambda: print(json.dumps(mean_teacher_cost(args.dataset, args.fold, torch.device(args.device),
                                                       args.configuration, args.plans, args.iterations, args.block,
                                                       args.warmup), indent=1)))


if __name__ == "__main__":
    main()
