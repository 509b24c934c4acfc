"""Extra cost per iteration of semi-supervised fine-tuning (mean teacher, UniMatch, FixMatch, BCP) against
plain fine-tuning, in one process, plus each trainer's peak memory.

All trainers are built for the same dataset, plans, configuration and fold (SSLScratchTrainer and the
semi-supervised trainers named with --trainers: same network, batch, patch and schedule) and run nnU-Net's
whole training step, data loading included, in interleaved blocks so that a shared machine's load hits
them alike:

    python -m nnunet_ssl.cli.semi_supervised_cost -d 501 -p nnUNetPlans_cpu -f 6 --iterations 40 -device cpu \\
        --trainers SSLMeanTeacherTrainer SSLUniMatchTrainer SSLUniMatchTrainer_fixMatch SSLBCPTrainer

Peak memory during each trainer's own steps: on CUDA the peak of allocated GPU memory
(``torch.cuda.max_memory_allocated``, reset before each block); on Linux CPUs the process's peak resident
memory (VmHWM, reset before each block through /proc/self/clear_refs). The CPU number includes everything
the process holds (every trainer built for the comparison, Python, torch): read the differences between
trainers, not the values. BCP's steps are timed in its self-training phase (the warm start is plain
copy-paste supervised training). Model folders go to a temporary nnUNet_results, so nothing is left behind.
"""
import contextlib
import json
import os
import tempfile
import time

import numpy as np
import torch

from nnunet_ssl.benchmark.throughput import _results_root
from nnunet_ssl.errors import SSLUserError

PLAIN = "SSLScratchTrainer"
PARTS = ("unlabeled_wait_seconds", "teacher_seconds", "ema_seconds")  # what the trainers time of their extra work


def _trainer(name: str, data, fold: int, device: torch.device):
    from nnunet_ssl.integration.trainers import trainer_class
    cls = trainer_class(name)
    if cls is None:
        raise SSLUserError(f"no trainer {name!r}.", "name one of nnunet_ssl/integration/trainers/registry.py, "
                                                    "e.g. SSLMeanTeacherTrainer or SSLUniMatchTrainer_fixMatch")
    plans = {**data.plans_manager.plans, "continue_training": False}  # nnunetv2 2.8's constructor pops it
    trainer = cls(plans, data.configuration_name, fold, data.dataset_json, device)
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    if hasattr(trainer, "warm_start_iterations"):  # BCP: time the self-training phase
        trainer._iteration = trainer.warm_start_iterations()
    return trainer


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (Linux: '5' to /proc/self/clear_refs); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """The process's peak resident memory in bytes since the last reset (VmHWM of /proc/self/status)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _steps(trainer, n: int, parts: list[dict]) -> tuple[list[float], int]:
    """n training steps: their seconds and the peak memory in bytes during them (CUDA: allocated GPU memory;
    CPU: the process's resident memory; 0 where it cannot be measured)."""
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
    rss = not cuda and _reset_peak_rss()
    seconds = []
    for _ in range(n):
        start = time.perf_counter()
        out = trainer.train_step(next(trainer.dataloader_train))
        if cuda:
            torch.cuda.synchronize(trainer.device)
        seconds.append(time.perf_counter() - start)
        parts.append({k: float(v) for k, v in out.items() if k in PARTS})
    return seconds, torch.cuda.max_memory_allocated(trainer.device) if cuda else _peak_rss() if rss else 0


def _finish(trainer) -> None:
    for loader in (trainer.dataloader_train, trainer.dataloader_val, getattr(trainer, "dataloader_unlabeled", None)):
        if hasattr(loader, "_finish"):
            loader._finish()


def semi_supervised_cost(dataset: str, fold: int, device: torch.device, configuration: str = "3d_fullres",
                         plans: str = "nnUNetPlans", iterations: int = 40, block: int = 10, warmup: int = 3,
                         trainers: tuple[str, ...] = ("SSLMeanTeacherTrainer",)) -> dict:
    from nnunet_ssl.integration.dataset import open_preprocessed

    if iterations < 1 or block < 1 or warmup < 0:
        raise SSLUserError(f"need --iterations >= 1, --block >= 1 and --warmup >= 0, got {iterations}, {block}, "
                           f"{warmup}.", "e.g. --iterations 40")
    data = open_preprocessed(dataset, configuration, plans)
    names = (PLAIN, *dict.fromkeys(t for t in trainers if t != PLAIN))
    times = {name: [] for name in names}
    parts = {name: [] for name in names}
    peaks = {name: 0 for name in names}
    with tempfile.TemporaryDirectory() as scratch, _results_root(scratch), \
            open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        built = {name: _trainer(name, data, fold, device) for name in names}
        cases = next((json.load(open(os.path.join(t.output_folder, t.CASES_FILE)))["counts"]
                      for t in built.values() if hasattr(t, "CASES_FILE")), None)
        for trainer in built.values():
            _steps(trainer, warmup, [])
        while len(times[PLAIN]) < iterations:
            n = min(block, iterations - len(times[PLAIN]))
            for name, trainer in built.items():
                seconds, peak = _steps(trainer, n, parts[name])
                times[name] += seconds
                peaks[name] = max(peaks[name], peak)
        for trainer in built.values():
            _finish(trainer)
    plain = float(np.median(times[PLAIN]))
    result = {"dataset": data.dataset_name, "plans": plans, "configuration": configuration, "fold": fold,
              "cases": cases, "batch_size": int(data.configuration.batch_size),
              "patch_size": [int(s) for s in data.configuration.patch_size], "device": str(device),
              "threads": torch.get_num_threads(), "iterations_each": iterations, "trainers": {}}
    for name in names:
        row = {"median_s": round(float(np.median(times[name])), 4), "mean_s": round(float(np.mean(times[name])), 4),
               "ratio_median": round(float(np.median(times[name])) / plain, 3)}
        if parts[name] and parts[name][0]:
            row.update({f"{k}_median": round(float(np.median([p[k] for p in parts[name]])), 4) for k in PARTS})
        if peaks[name]:
            row["cuda_peak_allocated_mib" if device.type == "cuda" else "process_peak_rss_mib"] = \
                round(peaks[name] / 2 ** 20, 1)
        result["trainers"][name] = row
    return result
